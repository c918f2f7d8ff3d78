/* changefeed.c — GET /changefeed and /changefeed/latest (unpartitioned), over
 * store_changefeed(). v1 (and v1.0-prerelease): offset/limit are a window of sequence
 * numbers; v2: startTime/endTime are a time window and offset counts rows in it. The
 * reference answers application/json whatever the Accept header says, so it is not
 * checked, in either mode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define JSON "application/json; charset=utf-8"

static enum MHD_Result bad(web_request *rq, const char *msg)
{
    return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "%s", msg);
}

static enum MHD_Result latest(web_request *rq, bool include_metadata)
{
    char *json = NULL;
    store_err err = {0};
    store_status st = store_changefeed_latest(rq->srv->store, rq->route.version, include_metadata, &json, &err);
    if (st == STORE_ENOTFOUND) return web_send_empty(rq, MHD_HTTP_NO_CONTENT); /* the action returns null */
    if (st != STORE_OK) return web_send_text(rq, web_http_status(st), "%s", err.msg);
    return web_send_body(rq, MHD_HTTP_OK, json, strlen(json), JSON);
}

enum MHD_Result changefeed_handle(web_request *rq)
{
    char msg[300];
    bool v1 = rq->route.version == 1;
    store_changefeed_query q = {.api_version = v1 ? 1 : 2,
                                .limit = v1 ? 10 : 100,
                                .start_us = INT64_MIN,
                                .end_us = INT64_MAX,
                                .include_metadata = true};
    if (!web_param_bool(rq, "includeMetadata", &q.include_metadata, msg, sizeof msg)) return bad(rq, msg);
    if (rq->route.kind == ROUTE_CHANGEFEED_LATEST) return latest(rq, q.include_metadata);
    int64_t limit = q.limit;
    /* offset: 0..int.MaxValue, as the reference's [Range] has it (in v1 too, where it is a long). */
    if (!web_param_int(rq, "offset", 0, INT32_MAX, &q.offset, msg, sizeof msg) ||
        !web_param_int(rq, "limit", 1, v1 ? 100 : 200, &limit, msg, sizeof msg))
        return bad(rq, msg);
    q.limit = (int)limit;
    if (!v1) {
        if (!web_param_time(rq, "startTime", &q.start_us, msg, sizeof msg) ||
            !web_param_time(rq, "endTime", &q.end_us, msg, sizeof msg))
            return bad(rq, msg);
        if (q.end_us <= q.start_us) return bad(rq, "The time range is invalid: endTime must be after startTime.");
    }
    char *json = NULL;
    store_err err = {0};
    store_status st = store_changefeed(rq->srv->store, &q, &json, &err);
    if (st != STORE_OK) return web_send_text(rq, web_http_status(st), "%s", err.msg);
    return web_send_body(rq, MHD_HTTP_OK, json, strlen(json), JSON);
}
