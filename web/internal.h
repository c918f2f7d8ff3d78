/* internal.h — what web/'s files share: the server, a request in progress, and the
 * response helpers. Each route's handler lives in its own file and answers through
 * web_send_*(), which adds the headers every response carries (CORS, API versions). */
#ifndef DICOMFS_WEB_INTERNAL_H
#define DICOMFS_WEB_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "auth.h"
#include "route.h"
#include "store.h"
#include "web.h"

typedef struct web_limiter web_limiter; /* audit.c */

struct web_server {
    struct MHD_Daemon *mhd;
    store_t *store;
    char cors[256];
    uint64_t max_body;
    uint16_t port;
    bool strict;         /* the reference's refusals where it is stricter than the standard */
    const web_auth *auth; /* NULL: no access control (the caller keeps it alive) */
    char *tls_cert, *tls_key; /* HTTPS (copies of the PEM text); NULL: plain HTTP */
    web_audit *audit;    /* NULL: no audit log (the caller keeps it alive) */
    web_limiter *limiter; /* failed authentications per client address (with auth) */
    struct web_watch *watch; /* server.c: the header deadline's watcher; NULL: none */
};

typedef struct web_request {
    web_server *srv;
    struct MHD_Connection *conn;
    const char *method;
    route route;
    int status;          /* non-zero: an error decided before the body; the body is drained */
    char msg[512];
    uint64_t body_bytes;
    void *stow;          /* stow.c's state while a body streams in */
    char *body;          /* the JSON body of route_takes_json() routes (at most WEB_JSON_MAX) */
    size_t body_len;
    web_principal who;   /* with auth: the token's subject and data actions */
    bool routed;         /* route is a matched route (its template goes to the audit log) */
    bool authed;         /* who is a checked token's */
    unsigned retry_after; /* a 429: seconds until the client address may try again */
    bool auth_failed;    /* a 401 for a token (or none) where one is needed */
    unsigned resp_status; /* what web_send queued (0: nothing) */
    uint64_t resp_bytes; /* the body size of what was queued */
    struct timespec t_wall, t_start; /* when the request arrived (realtime, monotonic) */
} web_request;

#define WEB_JSON_MAX (1024 * 1024) /* JSON request bodies (extended query tags) are small */

/* ---- audit.c: the audit log and the failed-authentication limiter ---------------------- */

/* One JSON line for a finished request (time, sub, client, method, route template,
 * status, bytes, ms): never the path's UIDs, the query string, a header or a body. */
void web_audit_request(web_audit *a, web_request *rq, struct MHD_Connection *conn, bool completed);
/* The route template of R ("/v2/studies/{study}/series/{series}"), NULL when the path did
 * not route. */
const char *web_route_template(const route *r, char *out, size_t len);

web_limiter *web_limiter_new(unsigned failures); /* failures per window before a block */
void web_limiter_free(web_limiter *l);
/* Seconds the address of CONN must still wait (0: not limited). */
unsigned web_limiter_blocked(web_limiter *l, struct MHD_Connection *conn);
/* Counts a failed authentication; true when it starts a block (to be logged once). */
bool web_limiter_fail(web_limiter *l, struct MHD_Connection *conn, unsigned *block_seconds);
/* The client address of CONN as text ("?" when unknown). */
void web_client_address(struct MHD_Connection *conn, char *out, size_t len);
void web_audit_event(web_audit *a, const char *event, const char *client, unsigned failures, unsigned seconds);
unsigned web_limiter_failures(const web_limiter *l);

/* Queues RESP (consumed) with STATUS and the common headers. */
enum MHD_Result web_send(web_request *rq, unsigned status, struct MHD_Response *resp);
/* A plain-text body (the reference's error bodies), printf-style. */
enum MHD_Result web_send_text(web_request *rq, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* BODY (malloc'd, consumed) with CONTENT_TYPE. */
enum MHD_Result web_send_body(web_request *rq, unsigned status, char *body, size_t len, const char *content_type);
enum MHD_Result web_send_empty(web_request *rq, unsigned status);
/* The one table from store status to HTTP status. */
unsigned web_http_status(store_status st);
/* A header of the request, or NULL. */
const char *web_header(web_request *rq, const char *name);
/* "http(s)://host:port" as the client addressed us (Host header), for absolute URLs. */
void web_base_url(web_request *rq, char *out, size_t len);
/* Which of MEDIA (in our order of preference) the Accept header prefers: the index,
 * or -1 when none is acceptable. No Accept header takes the first, unless strict. */
int web_accept_choose(web_request *rq, const char *const *media, size_t n_media);
/* Does the Accept header allow MEDIA? */
bool web_accepts(web_request *rq, const char *media);

/* Query parameters of the JSON routes (params.c), by ASP.NET model binding's rules: names
 * case-insensitive, unknown ones ignored. Each leaves *OUT as it is (the default) when the
 * parameter is absent, and returns false with MSG (a 400 reason) when it is given twice
 * or its value does not convert or is out of range. */
bool web_param_int(web_request *rq, const char *name, int64_t min, int64_t max, int64_t *out, char *msg, size_t len);
bool web_param_bool(web_request *rq, const char *name, bool *out, char *msg, size_t len);
/* ISO 8601 with a mandatory zone (Z or an offset) as microseconds since the epoch (UTC);
 * a blank value is as absent. */
bool web_param_time(web_request *rq, const char *name, int64_t *us, char *msg, size_t len);

enum MHD_Result qido_handle(web_request *rq);
enum MHD_Result delete_handle(web_request *rq);
enum MHD_Result wado_handle(web_request *rq);       /* retrieve, metadata, frames, rendered */
void stow_begin(web_request *rq);                   /* checks headers; may set rq->status */
void stow_feed(web_request *rq, const char *data, size_t len);
enum MHD_Result stow_finish(web_request *rq);
void stow_free(web_request *rq);
enum MHD_Result changefeed_handle(web_request *rq); /* /changefeed, /changefeed/latest */
void xqt_begin(web_request *rq);                    /* checks a JSON body's headers; may set rq->status */
enum MHD_Result xqt_handle(web_request *rq);        /* extended query tags and operations */

#endif
