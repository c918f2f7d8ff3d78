/* fuzz_xqt.c — extended query tags' JSON: the add-tags body (store_xqt_add: JSON, then
 * every rule of the reference before anything changes) and the PATCH body
 * (store_xqt_update), on a small archive so that a reindex has instances to index.
 *
 * Input: the POST body. Runs must not leak state: tags that were added are deleted again
 * (after their reindex ends), and the archive is made afresh every RESET additions (each
 * leaves an operation row). Checks:
 *   - a refusal changes nothing: the list of tags stays empty;
 *   - an addition lists as many tags as the body names, each readable by its path, the
 *     reindex finishes, and the tags can be disabled, enabled and deleted;
 *   - a reindexed tag can be searched at its level without a 400 or an I/O error. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"

#define RESET 300

static store_t *archive;
static unsigned added;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    archive = fuzz_archive("xqt", true);
    return 0;
}

static json_t *list(void)
{
    char *json = NULL;
    store_err err = {0};
    store_status st = store_xqt_list(archive, 0, 200, "", &json, &err);
    FUZZ_ASSERT(st == STORE_OK, "list: %s", err.msg);
    json_t *arr = json_loads(json, 0, NULL);
    FUZZ_ASSERT(json_is_array(arr), "list is not a JSON array");
    free(json);
    return arr;
}

/* Tag PATH ("00101010") of level LEVEL: patch it both ways, search with it, delete it. */
static void exercise(const char *path, const char *level)
{
    store_err err = {0};
    char *json = NULL;
    static const char *const bodies[] = {"{\"queryStatus\": \"disabled\"}", "{\"QueryStatus\": \"Enabled\"}"};
    for (int i = 0; i < 2; i++) {
        store_status st = store_xqt_update(archive, path, bodies[i], strlen(bodies[i]), "", &json, &err);
        FUZZ_ASSERT(st == STORE_OK, "update %s: %s", path, err.msg);
        free(json);
        json = NULL;
    }
    store_param p = {path, "1"};
    store_query q = {.level = strcmp(level, "study") == 0 ? STORE_LEVEL_STUDY : strcmp(level, "series") == 0
                                                                                     ? STORE_LEVEL_SERIES
                                                                                     : STORE_LEVEL_INSTANCE,
                     .params = &p, .n_params = 1};
    store_find_result r;
    store_status st = store_find(archive, &q, &r, &err);
    FUZZ_ASSERT(st == STORE_OK || st == STORE_EINVAL, "search on %s: %d %s", path, (int)st, err.msg);
    if (st == STORE_OK) store_find_result_clear(&r);
    st = store_xqt_delete(archive, path, &err);
    FUZZ_ASSERT(st == STORE_OK, "delete %s: %s", path, err.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) return 0;
    char id[33];
    store_err err = {0};
    store_status st = store_xqt_add(archive, (const char *)data, size, id, &err);
    json_t *tags = list();
    if (st != STORE_OK) {
        FUZZ_ASSERT(st == STORE_EINVAL, "add: status %d: %s", (int)st, err.msg);
        FUZZ_ASSERT(err.msg[0], "a refusal without a message");
        FUZZ_ASSERT(json_array_size(tags) == 0, "a refused add left %zu tags", json_array_size(tags));
        json_decref(tags);
        return 0;
    }
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    FUZZ_ASSERT(json_array_size(tags) == json_array_size(body), "%zu tags added for %zu in the body",
                json_array_size(tags), json_array_size(body));
    json_decref(body);
    FUZZ_ASSERT(strlen(id) == 32, "operation id '%s'", id);
    st = store_operations_wait(archive, 30000, &err);
    FUZZ_ASSERT(st == STORE_OK, "reindex did not finish: %s", err.msg);
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        const char *path = json_string_value(json_object_get(t, "path"));
        const char *level = json_string_value(json_object_get(t, "level"));
        FUZZ_ASSERT(path && level, "tag %zu without path or level", i);
        char *one = NULL;
        st = store_xqt_get(archive, path, "", &one, &err);
        FUZZ_ASSERT(st == STORE_OK, "get %s: %s", path, err.msg);
        free(one);
        exercise(path, level);
    }
    json_decref(tags);
    tags = list();
    FUZZ_ASSERT(json_array_size(tags) == 0, "%zu tags left after deleting", json_array_size(tags));
    json_decref(tags);
    if (++added % RESET == 0) {
        store_close(archive);
        archive = fuzz_archive("xqt", true);
    }
    return 0;
}
