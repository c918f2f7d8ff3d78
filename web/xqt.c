/* xqt.c — extended query tags (/extendedquerytags[/{tagPath}[/errors]]) and the
 * operations that add them (/operations/{id}), unpartitioned, over store_xqt_*() and
 * store_operation(). The store checks the reference's rules and writes the JSON; this
 * file checks what the reference's ASP.NET layer checks before its handlers run (the
 * content type, that the body is JSON of the right shape, query parameters) and picks
 * the status codes and Location headers. Like the change feed, these routes answer
 * application/json whatever the Accept header says. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "internal.h"
#include "mediatype.h"

#define JSON "application/json; charset=utf-8"

/* POST has [Consumes("application/json")]; PATCH takes any type the JSON input formatter
 * reads (application/json, text/json, application/ *+json). */
static bool json_media(const char *type, bool post)
{
    if (strcmp(type, "application/json") == 0) return true;
    if (post) return false;
    size_t n = strlen(type);
    return strcmp(type, "text/json") == 0 ||
           (strncmp(type, "application/", 12) == 0 && n > 17 && strcmp(type + n - 5, "+json") == 0);
}

void xqt_begin(web_request *rq)
{
    const char *ct = web_header(rq, MHD_HTTP_HEADER_CONTENT_TYPE);
    web_media_type mt;
    if (!ct || web_media_type_parse(ct, rq->srv->strict, &mt) != 0 ||
        !json_media(mt.type, rq->route.kind == ROUTE_XQT_ADD)) {
        rq->status = MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
        snprintf(rq->msg, sizeof rq->msg, "The content type '%.200s' is not supported; send application/json.",
                 ct ? ct : "(none)");
        return;
    }
    const char *cl = web_header(rq, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > WEB_JSON_MAX) {
        rq->status = MHD_HTTP_CONTENT_TOO_LARGE;
        snprintf(rq->msg, sizeof rq->msg, "The request body is larger than the limit of %d bytes.", WEB_JSON_MAX);
    }
}

/* ---- Responses ---------------------------------------------------------------------- */

static enum MHD_Result send_located(web_request *rq, unsigned status, char *body, const char *type,
                                    const char *location)
{
    rq->resp_bytes = strlen(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (location) MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
    return web_send(rq, status, resp);
}

static enum MHD_Result send_json(web_request *rq, unsigned status, char *json)
{
    return web_send_body(rq, status, json, strlen(json), JSON);
}

static enum MHD_Result store_error(web_request *rq, store_status st, const store_err *err)
{
    /* An archive without extended query tags says so, rather than 406 (web_http_status). */
    unsigned code = st == STORE_EUNSUPPORTED ? MHD_HTTP_NOT_IMPLEMENTED : web_http_status(st);
    return web_send_text(rq, code, "%s", err->msg);
}

/* "http://host:port/v2": what the hrefs in the JSON start with (the request's version). */
static void base_of(web_request *rq, char *out, size_t len)
{
    char host[300];
    web_base_url(rq, host, sizeof host);
    snprintf(out, len, "%s/%s", host, rq->route.version_seg);
}

/* The body must be JSON of the type the handler binds (an array for POST, an object for
 * PATCH), as the reference's input formatter requires before the rules are checked. */
static bool body_ok(web_request *rq, json_type want, char *msg, size_t len)
{
    if (!rq->body_len) {
        snprintf(msg, len, "The request body is empty; send a JSON %s.", want == JSON_ARRAY ? "array" : "object");
        return false;
    }
    json_error_t e;
    json_t *doc = json_loadb(rq->body, rq->body_len, 0, &e);
    bool ok = doc && json_typeof(doc) == want;
    if (!doc)
        snprintf(msg, len, "The request body is not valid JSON: %s (line %d, column %d).", e.text, e.line, e.column);
    else if (!ok)
        snprintf(msg, len, "The request body must be a JSON %s.", want == JSON_ARRAY ? "array" : "object");
    json_decref(doc);
    return ok;
}

/* ---- Extended query tags ----------------------------------------------------------------- */

static enum MHD_Result add(web_request *rq, const char *base)
{
    char msg[300];
    if (!body_ok(rq, JSON_ARRAY, msg, sizeof msg)) return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "%s", msg);
    char id[33] = "", href[512];
    store_err err = {0};
    store_status st = store_xqt_add(rq->srv->store, rq->body, rq->body_len, id, &err);
    snprintf(href, sizeof href, "%s/operations/%s", base, id);
    if (st == STORE_EEXIST) { /* Location: the operation that holds the tags (when there is one) */
        char *text = strdup(err.msg);
        if (!text) abort();
        return send_located(rq, MHD_HTTP_CONFLICT, text, "text/plain; charset=utf-8", id[0] ? href : NULL);
    }
    if (st != STORE_OK) return store_error(rq, st, &err);
    json_t *o = json_pack("{s:s, s:s}", "id", id, "href", href);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body) abort();
    return send_located(rq, MHD_HTTP_ACCEPTED, body, JSON, href);
}

/* limit 1..200 (100) and offset 0..int.MaxValue: the reference's PaginationOptions. */
static bool paging(web_request *rq, int64_t *offset, int *limit, char *msg, size_t len)
{
    int64_t l = 100;
    *offset = 0;
    if (!web_param_int(rq, "offset", 0, INT32_MAX, offset, msg, len) || !web_param_int(rq, "limit", 1, 200, &l, msg, len))
        return false;
    *limit = (int)l;
    return true;
}

static enum MHD_Result list(web_request *rq, const char *base)
{
    char msg[300], *json = NULL;
    int64_t offset;
    int limit;
    if (!paging(rq, &offset, &limit, msg, sizeof msg)) return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "%s", msg);
    store_err err = {0};
    store_status st = store_xqt_list(rq->srv->store, offset, limit, base, &json, &err);
    return st == STORE_OK ? send_json(rq, MHD_HTTP_OK, json) : store_error(rq, st, &err);
}

static enum MHD_Result errors(web_request *rq)
{
    char msg[300], *json = NULL;
    int64_t offset;
    int limit;
    if (!paging(rq, &offset, &limit, msg, sizeof msg)) return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "%s", msg);
    store_err err = {0};
    store_status st = store_xqt_errors(rq->srv->store, rq->route.name, offset, limit, &json, &err);
    return st == STORE_OK ? send_json(rq, MHD_HTTP_OK, json) : store_error(rq, st, &err);
}

static enum MHD_Result get(web_request *rq, const char *base)
{
    char *json = NULL;
    store_err err = {0};
    store_status st = store_xqt_get(rq->srv->store, rq->route.name, base, &json, &err);
    return st == STORE_OK ? send_json(rq, MHD_HTTP_OK, json) : store_error(rq, st, &err);
}

static enum MHD_Result update(web_request *rq, const char *base)
{
    char msg[300], *json = NULL;
    if (!body_ok(rq, JSON_OBJECT, msg, sizeof msg)) return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "%s", msg);
    store_err err = {0};
    store_status st = store_xqt_update(rq->srv->store, rq->route.name, rq->body, rq->body_len, base, &json, &err);
    return st == STORE_OK ? send_json(rq, MHD_HTTP_OK, json) : store_error(rq, st, &err);
}

static enum MHD_Result delete(web_request *rq)
{
    store_err err = {0};
    store_status st = store_xqt_delete(rq->srv->store, rq->route.name, &err);
    return st == STORE_OK ? web_send_empty(rq, MHD_HTTP_NO_CONTENT) : store_error(rq, st, &err);
}

/* ---- Operations ------------------------------------------------------------------------- */

/* 202 with Location (its own URL) while it runs, 200 once it has ended. An id that is not
 * a GUID is as unknown as one that names nothing: 404 (the route takes a Guid). */
static enum MHD_Result operation(web_request *rq, const char *base)
{
    char *json = NULL;
    bool finished = false;
    store_err err = {0};
    store_status st = store_operation(rq->srv->store, rq->route.name, rq->route.version, base, &json, &finished, &err);
    if (st == STORE_EINVAL || st == STORE_ENOTFOUND)
        return web_send_text(rq, MHD_HTTP_NOT_FOUND, "The operation '%s' was not found.", rq->route.name);
    if (st != STORE_OK) return store_error(rq, st, &err);
    if (finished) return send_json(rq, MHD_HTTP_OK, json);
    char id[33], href[512];
    size_t n = 0; /* the id as the hrefs write it: 32 lower-case hex digits */
    for (const char *p = rq->route.name; *p && n < 32; p++)
        if (isxdigit((unsigned char)*p)) id[n++] = (char)tolower((unsigned char)*p);
    id[n] = 0;
    snprintf(href, sizeof href, "%s/operations/%s", base, id);
    return send_located(rq, MHD_HTTP_ACCEPTED, json, JSON, href);
}

enum MHD_Result xqt_handle(web_request *rq)
{
    char base[400];
    base_of(rq, base, sizeof base);
    switch (rq->route.kind) {
    case ROUTE_XQT_ADD: return add(rq, base);
    case ROUTE_XQT_LIST: return list(rq, base);
    case ROUTE_XQT_GET: return get(rq, base);
    case ROUTE_XQT_UPDATE: return update(rq, base);
    case ROUTE_XQT_DELETE: return delete(rq);
    case ROUTE_XQT_ERRORS: return errors(rq);
    default: return operation(rq, base);
    }
}
