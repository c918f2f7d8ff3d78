/* fuzz_params.c — the change feed's query parameters (web/params.c: integers, booleans,
 * ISO 8601 times with a zone, names case-insensitive, a name given twice refused) and
 * the store_changefeed query they make (store/changefeed.c), on a small archive made
 * once per process.
 *
 * Input: a flags byte (API version 1 or 2, strict, /changefeed/latest, includeMetadata's
 * default: the handler's is true, but parsing every instance's metadata JSON makes runs
 * ten times slower), then a query string. libmicrohttpd's MHD_get_connection_values is replaced by this file's (the
 * executable's definition wins over the shared library's), which hands the fuzzed pairs
 * to params.c as the server would. web/changefeed.c's handler is mirrored here (it
 * answers through libmicrohttpd). Checks:
 *   - an accepted integer lies in its range; a name given twice (in any case) is refused;
 *   - an accepted time formats back (UTC, microseconds) to text that parses to itself;
 *   - a refusal always has a message;
 *   - the feed is a JSON array of at most LIMIT entries, and in v1 each sequence lies in
 *     the window (offset, offset + limit]. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fuzzlib.h"
#include "internal.h" /* web/: web_request, web_param_* */

typedef struct {
    store_param *v;
    size_t n;
} pairs;

int MHD_get_connection_values(struct MHD_Connection *connection, enum MHD_ValueKind kind, MHD_KeyValueIterator it,
                              void *cls)
{
    const pairs *p = (const pairs *)connection;
    if (!p) return -1;
    FUZZ_ASSERT(kind == MHD_GET_ARGUMENT_KIND, "params.c asked for kind %d", (int)kind);
    size_t i = 0;
    for (; i < p->n; i++)
        if (it && it(cls, kind, p->v[i].key, p->v[i].value) != MHD_YES) break;
    return (int)i;
}

static store_t *archive;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    archive = fuzz_archive("params", true);
    return 0;
}

static size_t count_name(const pairs *p, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) n += strcasecmp(p->v[i].key, name) == 0;
    return n;
}

static bool get_int(web_request *rq, const pairs *p, const char *name, int64_t min, int64_t max, int64_t *out)
{
    char msg[300] = "";
    int64_t before = *out;
    bool ok = web_param_int(rq, name, min, max, out, msg, sizeof msg);
    size_t given = count_name(p, name);
    if (given > 1) FUZZ_ASSERT(!ok, "%s given %zu times accepted", name, given);
    if (ok && !given) FUZZ_ASSERT(*out == before, "%s changed while absent", name);
    if (ok) FUZZ_ASSERT(*out >= min && *out <= max, "%s = %lld outside its range", name, (long long)*out);
    else FUZZ_ASSERT(msg[0], "%s refused without a message", name);
    return ok;
}

/* US formatted as ISO 8601 UTC must parse back to US. */
static void round_trip(web_request *rq, const char *name, int64_t us)
{
    int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    long frac = (long)(us - secs * 1000000);
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999) return;
    char text[64];
    snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    store_param one = {name, text};
    pairs p = {&one, 1};
    struct MHD_Connection *saved = rq->conn;
    rq->conn = (struct MHD_Connection *)&p;
    int64_t again = 0;
    char msg[300];
    bool ok = web_param_time(rq, name, &again, msg, sizeof msg);
    rq->conn = saved;
    FUZZ_ASSERT(ok && again == us, "%s: %lld -> '%s' -> %lld (%s)", name, (long long)us, text, (long long)again,
                ok ? "" : msg);
}

static bool get_time(web_request *rq, const pairs *p, const char *name, int64_t *us)
{
    char msg[300] = "";
    int64_t before = *us;
    bool ok = web_param_time(rq, name, us, msg, sizeof msg);
    if (count_name(p, name) > 1) FUZZ_ASSERT(!ok, "%s given twice accepted", name);
    if (!ok) FUZZ_ASSERT(msg[0], "%s refused without a message", name);
    if (ok && *us != before) round_trip(rq, name, *us);
    return ok;
}

static void check_feed(const char *json, const store_changefeed_query *q)
{
    json_error_t e;
    json_t *arr = json_loads(json, 0, &e);
    FUZZ_ASSERT(json_is_array(arr), "feed is not a JSON array: %s", e.text);
    FUZZ_ASSERT(json_array_size(arr) <= (size_t)q->limit, "%zu entries for limit %d", json_array_size(arr), q->limit);
    size_t i;
    json_t *entry;
    json_array_foreach(arr, i, entry)
    {
        json_t *seq = json_object_get(entry, "sequence");
        FUZZ_ASSERT(json_is_integer(seq), "entry %zu has no sequence", i);
        if (q->api_version == 1)
            FUZZ_ASSERT(json_integer_value(seq) > q->offset && json_integer_value(seq) <= q->offset + q->limit,
                        "sequence %lld outside (%lld, +%d]", (long long)json_integer_value(seq), (long long)q->offset,
                        q->limit);
    }
    json_decref(arr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    unsigned flags = data[0];
    char *text = fuzz_strndup(data + 1, size - 1);
    store_param v[64];
    pairs p = {v, fuzz_query_split(text, v, 64, true)};
    web_server srv = {.store = archive, .strict = flags & 2};
    web_request rq = {.srv = &srv, .conn = (struct MHD_Connection *)&p};

    bool v1 = flags & 1;
    store_changefeed_query q = {.api_version = v1 ? 1 : 2, .limit = v1 ? 10 : 100, .start_us = INT64_MIN,
                                .end_us = INT64_MAX, .include_metadata = flags & 8};
    char msg[300];
    bool ok = web_param_bool(&rq, "includeMetadata", &q.include_metadata, msg, sizeof msg);
    char *json = NULL;
    store_err err = {0};
    if (ok && (flags & 4)) { /* /changefeed/latest takes includeMetadata only */
        store_status st = store_changefeed_latest(archive, q.api_version, q.include_metadata, &json, &err);
        FUZZ_ASSERT(st == STORE_OK, "latest: %s", err.msg);
        json_t *o = json_loads(json, 0, NULL);
        FUZZ_ASSERT(json_is_object(o), "latest is not a JSON object");
        json_decref(o);
        free(json);
        free(text);
        return 0;
    }
    int64_t limit = q.limit;
    ok = ok && get_int(&rq, &p, "offset", 0, INT32_MAX, &q.offset) && get_int(&rq, &p, "limit", 1, v1 ? 100 : 200, &limit);
    q.limit = (int)limit;
    if (ok && !v1)
        ok = get_time(&rq, &p, "startTime", &q.start_us) && get_time(&rq, &p, "endTime", &q.end_us) &&
             q.end_us > q.start_us;
    if (ok) {
        store_status st = store_changefeed(archive, &q, &json, &err);
        FUZZ_ASSERT(st == STORE_OK, "changefeed refused a query the parameters allowed: %s", err.msg);
        check_feed(json, &q);
        free(json);
    }
    free(text);
    return 0;
}
