/* fuzz_qido.c — QIDO-RS query strings through store_find and store_find_refs
 * (store/query.c: parsing of the parameters, the SQL built from them, dressing results)
 * on a small archive made once per process (fuzzlib.c: five instances, three patients).
 *
 * Input: a flags byte (level, API version, scope, computed attributes), then a query
 * string ("PatientName=doe*&limit=2"), split and percent-decoded as a URL's.
 * Queries only read, so runs share the archive and leave nothing behind. Checks:
 *   - a success is a JSON array of exactly COUNT objects, never more than the archive
 *     holds at that level, and every entry lies within the URL's scope;
 *   - store_find_refs takes the same filters and 400s: same verdict, same matches;
 *   - a refusal is STORE_EINVAL with a message (the reference's 400), never another. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"

static store_t *archive;
static const size_t at_level[] = {4, 4, 5}; /* studies, series, instances in the archive */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    archive = fuzz_archive("qido", true);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    unsigned flags = data[0];
    char *text = fuzz_strndup(data + 1, size - 1);
    store_param params[64];
    size_t n = fuzz_query_split(text, params, 64, false);

    store_query q = {.level = (store_level)(flags % 3), .api_version = flags & 4 ? 1 : 2, .with_counts = flags & 8,
                     .params = params, .n_params = n};
    int scope = (flags >> 4) % 4; /* none, study 1, study 1 + series 1, an unknown study */
    if (scope == 1 || scope == 2) q.study_uid = FUZZ_STUDY1;
    if (scope == 2 && q.level == STORE_LEVEL_INSTANCE) q.series_uid = FUZZ_SERIES1;
    if (scope == 3) q.study_uid = "1.2.3.4.5.6.7";
    if (q.study_uid && q.level == STORE_LEVEL_STUDY) q.study_uid = NULL; /* no such route */

    store_find_result res;
    store_err err = {0};
    store_status st = store_find(archive, &q, &res, &err);
    FUZZ_ASSERT(st == STORE_OK || st == STORE_EINVAL, "status %d: %s", (int)st, err.msg);
    store_ref *refs = NULL;
    size_t nrefs = 0;
    store_err err2 = {0};
    store_status st2 = store_find_refs(archive, &q, 1000, &refs, &nrefs, &err2);
    FUZZ_ASSERT(st2 == st, "store_find %d (%s) but store_find_refs %d (%s)", (int)st, err.msg, (int)st2, err2.msg);
    if (st == STORE_OK) {
        json_error_t jerr;
        json_t *arr = json_loads(res.json, 0, &jerr);
        FUZZ_ASSERT(json_is_array(arr), "result is not a JSON array: %s", jerr.text);
        FUZZ_ASSERT(json_array_size(arr) == res.count, "%zu entries, count %zu", json_array_size(arr), res.count);
        FUZZ_ASSERT(res.count <= at_level[q.level], "%zu matches at level %d", res.count, (int)q.level);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) FUZZ_ASSERT(json_is_object(e), "entry %zu is not an object", i);
        json_decref(arr);
        FUZZ_ASSERT(nrefs == res.count, "store_find %zu matches, store_find_refs %zu", res.count, nrefs);
        for (i = 0; i < nrefs; i++) {
            FUZZ_ASSERT(store_valid_uid(refs[i].study_uid), "ref %zu: study UID '%s'", i, refs[i].study_uid);
            if (q.study_uid) FUZZ_ASSERT(strcmp(refs[i].study_uid, q.study_uid) == 0, "a match outside the study");
            if (q.series_uid) FUZZ_ASSERT(strcmp(refs[i].series_uid, q.series_uid) == 0, "a match outside the series");
        }
        FUZZ_ASSERT(memchr(res.erroneous, 0, sizeof res.erroneous), "erroneous not terminated");
        store_find_result_clear(&res);
    } else {
        FUZZ_ASSERT(err.msg[0], "a 400 without a reason");
    }
    free(refs);
    free(text);
    return 0;
}
