/* respond.c — building responses: common headers, plain-text errors, status mapping. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mediatype.h"

unsigned web_http_status(store_status st)
{
    switch (st) {
    case STORE_OK: return MHD_HTTP_OK;
    case STORE_EINVAL: return MHD_HTTP_BAD_REQUEST;
    case STORE_ENOTFOUND: return MHD_HTTP_NOT_FOUND;
    case STORE_EEXIST: return MHD_HTTP_CONFLICT;
    case STORE_EREJECTED: return MHD_HTTP_CONFLICT;
    case STORE_ETOOLARGE: return MHD_HTTP_CONTENT_TOO_LARGE;
    case STORE_EUNSUPPORTED: return MHD_HTTP_NOT_ACCEPTABLE;
    case STORE_EIO:
    case STORE_EBUSY:
    case STORE_ECORRUPT:
    case STORE_EREADONLY: return MHD_HTTP_SERVICE_UNAVAILABLE;
    case STORE_ENOSPC: return MHD_HTTP_INSUFFICIENT_STORAGE;
    default: return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

enum MHD_Result web_send(web_request *rq, unsigned status, struct MHD_Response *resp)
{
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", rq->srv->cors);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "ETag, Location, Warning, WWW-Authenticate, api-supported-versions, erroneous-dicom-attributes");
    MHD_add_response_header(resp, "api-supported-versions", "1.0-prerelease, 1, 2");
    enum MHD_Result r = MHD_queue_response(rq->conn, status, resp);
    if (r == MHD_YES) rq->resp_status = status; /* for the audit log */
    MHD_destroy_response(resp);
    return r;
}

enum MHD_Result web_send_body(web_request *rq, unsigned status, char *body, size_t len, const char *content_type)
{
    rq->resp_bytes = len;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return web_send(rq, status, resp);
}

enum MHD_Result web_send_text(web_request *rq, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) return MHD_NO;
    return web_send_body(rq, status, text, (size_t)n, "text/plain; charset=utf-8");
}

enum MHD_Result web_send_empty(web_request *rq, unsigned status)
{
    rq->resp_bytes = 0;
    return web_send(rq, status, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

const char *web_header(web_request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

void web_base_url(web_request *rq, char *out, size_t len)
{
    const char *host = web_header(rq, MHD_HTTP_HEADER_HOST);
    /* A Host header is the client's text: keep only characters a host:port can have. */
    char safe[256];
    size_t n = 0;
    for (const char *p = host ? host : ""; *p && n + 1 < sizeof safe; p++)
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]_", *p)) safe[n++] = *p;
    safe[n] = 0;
    if (!n) snprintf(safe, sizeof safe, "127.0.0.1:%u", rq->srv->port);
    snprintf(out, len, "%s://%s", rq->srv->tls_cert ? "https" : "http", safe);
}

/* How specifically RANGE (an Accept entry) matches MEDIA: 3 exactly, 2 by a subtype
 * wildcard ("image/" "*"), 1 by the full wildcard, 0 not at all. Unless strict, application/json names DICOM JSON too
 * (older clients and generic HTTP libraries ask for it). */
static int match_rank(const char *range, const char *media, bool strict)
{
    if (strcasecmp(range, media) == 0) return 3;
    if (!strict && strcasecmp(range, "application/json") == 0 && strcasecmp(media, "application/dicom+json") == 0)
        return 3;
    const char *slash = strchr(media, '/');
    size_t major = slash ? (size_t)(slash - media) : 0;
    if (major && strncasecmp(range, media, major) == 0 && strcmp(range + major, "/*") == 0) return 2;
    return strcmp(range, "*/*") == 0 ? 1 : 0;
}

int web_accept_choose(web_request *rq, const char *const *media, size_t n_media)
{
    bool strict = rq->srv->strict;
    const char *accept = web_header(rq, MHD_HTTP_HEADER_ACCEPT);
    /* No Accept header: any type (RFC 9110 12.5.1); the reference refuses (406). */
    if (!accept || !*accept) return strict ? -1 : 0;
    web_media_type list[32];
    int n = web_accept_parse(accept, strict, list, sizeof list / sizeof list[0]);
    int best = -1;
    double best_q = 0;
    for (size_t m = 0; m < n_media; m++) {
        /* The most specific matching range decides the media type's q (RFC 9110 12.5.1). */
        int rank = 0;
        double q = 0;
        for (int i = 0; i < n; i++) {
            int r = match_rank(list[i].type, media[m], strict);
            if (r > rank) rank = r, q = list[i].q;
        }
        if (rank && q > best_q) best = (int)m, best_q = q;
    }
    return best;
}

bool web_accepts(web_request *rq, const char *media)
{
    return web_accept_choose(rq, &media, 1) == 0;
}
