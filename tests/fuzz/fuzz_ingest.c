/* fuzz_ingest.c — whole DICOM files through the store's ingest: upload, finish (the DCMTK
 * adapter's parse, the v1/v2 validation, the metadata JSON, index values, frame offsets)
 * and, for what is accepted, commit, read back and delete (store/ingest.c, index.c,
 * commit.c, retrieve.c, delete.c, dcm.cc).
 *
 * Input: the file's bytes. The archive lives in the scratch folder (tmpfs) and starts
 * empty; each stored instance is deleted again, and the archive is made afresh every
 * RESET runs so that its change feed does not grow without bound. Checks:
 *   - every file ends stored or refused with a failure reason and a message;
 *   - v1 is stricter than v2: what v1 accepts, v2 accepts;
 *   - an accepted item has valid UIDs, metadata that is one JSON object and attrs too;
 *   - once committed: one instance of the input's size, every frame range inside the
 *     object file, metadata a JSON array of one object, QIDO finds it by its UID, and
 *     delete removes exactly it. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "internal.h" /* store/: the item's precomputed values */

#define RESET 2000

static store_t *archive;
static unsigned runs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    archive = fuzz_archive("ingest", false);
    return 0;
}

static store_item *finish(const uint8_t *data, size_t size, int api_version)
{
    store_err err = {0};
    store_upload *up = store_upload_begin(archive, &err);
    FUZZ_ASSERT(up, "upload: %s", err.msg);
    FUZZ_ASSERT(store_upload_write(up, data, size) == STORE_OK, "upload write");
    store_ingest_opts o = {.api_version = api_version};
    store_item *item = store_upload_finish(up, &o);
    const store_ingest_result *r = store_item_result(item);
    if (r->status != STORE_OK || item->final) {
        FUZZ_ASSERT(r->status != STORE_OK && r->failure_reason && r->message[0], "refused without reason: %d %d '%s'",
                    (int)r->status, r->failure_reason, r->message);
    }
    return item;
}

static void json_object_text(const char *text, const char *what)
{
    json_error_t e;
    json_t *j = text ? json_loads(text, 0, &e) : NULL;
    size_t at = text && (size_t)e.position > 60 ? (size_t)e.position - 60 : 0;
    FUZZ_ASSERT(json_is_object(j), "%s is not a JSON object: %s, near '%.80s'", what, text ? e.text : "NULL",
                text ? text + at : "");
    json_decref(j);
}

/* The committed instance R: what retrieval, QIDO and delete say of it. */
static void check_stored(const store_ingest_result *r, size_t size)
{
    store_instance *in = NULL;
    size_t n = 0;
    store_err err = {0};
    store_status st = store_instances(archive, NULL, r->study_uid, r->series_uid, r->sop_instance_uid, &in, &n, &err);
    FUZZ_ASSERT(st == STORE_OK && n == 1, "stored instance not found: %s", err.msg);
    FUZZ_ASSERT(in[0].size == size, "object of %llu bytes for %zu", (unsigned long long)in[0].size, size);
    for (uint32_t f = 1; f <= in[0].frames && f <= 16; f++) {
        store_range *rg = NULL;
        size_t nr = 0;
        st = store_frame_ranges(archive, &in[0], f, &rg, &nr, &err);
        FUZZ_ASSERT(st == STORE_OK || st == STORE_EUNSUPPORTED, "frame %u: %d %s", f, (int)st, err.msg);
        for (size_t i = 0; st == STORE_OK && i < nr; i++)
            FUZZ_ASSERT(rg[i].offset <= size && rg[i].length <= size - rg[i].offset,
                        "frame %u range %zu [%llu, +%llu) outside %zu bytes", f, i, (unsigned long long)rg[i].offset,
                        (unsigned long long)rg[i].length, size);
        free(rg);
    }
    free(in);
    char *json = NULL, etag[64];
    size_t len = 0;
    st = store_metadata(archive, NULL, r->study_uid, r->series_uid, r->sop_instance_uid, &json, &len, etag, &err);
    FUZZ_ASSERT(st == STORE_OK, "metadata: %s", err.msg);
    json_error_t je;
    json_t *arr = json_loadb(json, len, 0, &je);
    FUZZ_ASSERT(json_is_array(arr) && json_array_size(arr) == 1 && json_is_object(json_array_get(arr, 0)),
                "metadata is not an array of one object: %s", je.text);
    json_decref(arr);
    free(json);
    store_param p = {"SOPInstanceUID", r->sop_instance_uid};
    store_query q = {.level = STORE_LEVEL_INSTANCE, .params = &p, .n_params = 1};
    store_find_result fr;
    st = store_find(archive, &q, &fr, &err);
    FUZZ_ASSERT(st == STORE_OK && fr.count == 1, "QIDO by SOPInstanceUID: %d, %s", (int)st, err.msg);
    store_find_result_clear(&fr);
    size_t deleted = 0;
    st = store_delete(archive, NULL, r->study_uid, r->series_uid, r->sop_instance_uid, &deleted, &err);
    FUZZ_ASSERT(st == STORE_OK && deleted == 1, "delete: %d, %zu deleted, %s", (int)st, deleted, err.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return 0;
    if (++runs % RESET == 0) {
        store_close(archive);
        archive = fuzz_archive("ingest", false);
    }
    store_item *v1 = finish(data, size, 1);
    store_item *v2 = finish(data, size, 2);
    const store_ingest_result *r1 = store_item_result(v1), *r2 = store_item_result(v2);
    if (r1->status == STORE_OK)
        FUZZ_ASSERT(r2->status == STORE_OK, "v1 accepts what v2 refuses: %d '%s'", r2->failure_reason, r2->message);
    store_item_free(v1);
    if (r2->status == STORE_OK) {
        FUZZ_ASSERT(store_valid_uid(r2->study_uid) && store_valid_uid(r2->series_uid) &&
                        store_valid_uid(r2->sop_instance_uid),
                    "accepted invalid UIDs '%s' '%s' '%s'", r2->study_uid, r2->series_uid, r2->sop_instance_uid);
        json_object_text(v2->metadata, "metadata");
        json_object_text(v2->attrs, "attrs");
        store_commit(archive, &v2, 1);
        r2 = store_item_result(v2);
        FUZZ_ASSERT(r2->status == STORE_OK, "commit refused: %d '%s'", r2->failure_reason, r2->message);
        check_stored(r2, size);
    }
    store_item_free(v2);
    return 0;
}
