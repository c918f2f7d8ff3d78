/* server.c — the libmicrohttpd daemon and the request life cycle:
 *
 *   first call   route the path; with access control, check the bearer token and the
 *                route's data action (401/403, auth.c); for STOW and the JSON-body routes
 *                check the headers (415/406/413 before any body)
 *   body calls   stream each chunk to the STOW parser, or keep it (a small JSON body, at
 *                most WEB_JSON_MAX), or drain it after an early error
 *   last call    run the route's handler, which queues the response
 *
 * An error found before the body is answered at once when the client waits for
 * "100 Continue" (it then sends no body); otherwise the body is read and discarded
 * first, so the client sees the status rather than a reset connection. */
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define DEFAULT_MAX_BODY 2147483647ull /* the reference's MaxAllowedDicomFileSize */

static enum MHD_Result health(web_request *rq)
{
    int64_t head = store_changefeed_head(rq->srv->store);
    bool ok = head >= 0;
    char *body = NULL;
    int n = asprintf(&body,
                     "{\"overallStatus\":\"%s\",\"details\":[{\"name\":\"DicomDataStoreHealthCheck\",\"status\":\"%s\","
                     "\"description\":\"%s\"}]}",
                     ok ? "Healthy" : "Unhealthy", ok ? "Healthy" : "Unhealthy",
                     ok ? "The archive's index answers." : "The archive's index does not answer.");
    if (n < 0) return MHD_NO;
    return web_send_body(rq, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, body, (size_t)n, "application/json");
}

static enum MHD_Result preflight(web_request *rq)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    char methods[64];
    snprintf(methods, sizeof methods, "%s, OPTIONS", rq->route.allow);
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", methods);
    const char *asked = web_header(rq, "Access-Control-Request-Headers");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            asked ? asked : "Accept, Authorization, Content-Type, If-None-Match");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    return web_send(rq, MHD_HTTP_NO_CONTENT, resp);
}

/* An error decided before the body: plain text, with the one header some statuses need
 * (the challenge of a 401, Retry-After of a 429, Allow of a 405). */
static enum MHD_Result answer_error(web_request *rq)
{
    char secs[16];
    const char *name = NULL, *value = NULL;
    switch (rq->status) {
    case MHD_HTTP_UNAUTHORIZED:
        name = MHD_HTTP_HEADER_WWW_AUTHENTICATE, value = web_auth_challenge(rq->srv->auth);
        break;
    case MHD_HTTP_TOO_MANY_REQUESTS:
        snprintf(secs, sizeof secs, "%u", rq->retry_after);
        name = MHD_HTTP_HEADER_RETRY_AFTER, value = secs;
        break;
    case MHD_HTTP_METHOD_NOT_ALLOWED:
        name = MHD_HTTP_HEADER_ALLOW, value = rq->route.allow;
        break;
    default: return web_send_text(rq, (unsigned)rq->status, "%s", rq->msg);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(rq->msg), rq->msg, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    rq->resp_bytes = strlen(rq->msg);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(resp, name, value);
    return web_send(rq, (unsigned)rq->status, resp);
}

static enum MHD_Result dispatch(web_request *rq)
{
    if (rq->status) return answer_error(rq);
    switch (rq->route.kind) {
    case ROUTE_HEALTH: return health(rq);
    case ROUTE_PREFLIGHT: return preflight(rq);
    case ROUTE_STOW: return stow_finish(rq);
    case ROUTE_QIDO: return qido_handle(rq);
    case ROUTE_DELETE: return delete_handle(rq);
    case ROUTE_CHANGEFEED:
    case ROUTE_CHANGEFEED_LATEST: return changefeed_handle(rq);
    case ROUTE_XQT_ADD:
    case ROUTE_XQT_LIST:
    case ROUTE_XQT_GET:
    case ROUTE_XQT_UPDATE:
    case ROUTE_XQT_DELETE:
    case ROUTE_XQT_ERRORS:
    case ROUTE_OPERATION: return xqt_handle(rq);
    default: return wado_handle(rq);
    }
}

/* Keeps a chunk of a JSON body; past WEB_JSON_MAX the request is refused (413) and
 * the rest drained. */
static void keep_json(web_request *rq, const char *data, size_t len)
{
    if (rq->body_len + len > WEB_JSON_MAX) {
        rq->status = MHD_HTTP_CONTENT_TOO_LARGE;
        snprintf(rq->msg, sizeof rq->msg, "The request body is larger than the limit of %d bytes.", WEB_JSON_MAX);
        free(rq->body);
        rq->body = NULL;
        rq->body_len = 0;
        return;
    }
    char *b = realloc(rq->body, rq->body_len + len + 1);
    if (!b) abort();
    memcpy(b + rq->body_len, data, len);
    rq->body = b;
    rq->body_len += len;
    b[rq->body_len] = 0;
}

/* Access control, on the first call, before anything else is looked at: only a routed
 * /health/check and CORS preflight are open; any other request (a path that did not route
 * included: ROUTE_STATUS) needs a valid token (401), and a routed one the data action of
 * its kind (403). Sets rq->status, so that the request is answered without its body
 * being used. */
static void authorize(web_request *rq, int route_status)
{
    unsigned need = auth_route_action(rq->route.kind);
    if (!route_status && need == AUTH_OPEN) return;
    /* an address with too many failed authentications waits, its tokens unread */
    unsigned wait = web_limiter_blocked(rq->srv->limiter, rq->conn);
    if (wait) {
        rq->status = MHD_HTTP_TOO_MANY_REQUESTS;
        rq->retry_after = wait;
        snprintf(rq->msg, sizeof rq->msg, "Too many failed authentications from this address: try again in %u s.",
                 wait);
        return;
    }
    char why[256];
    const char *authorization = web_header(rq, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!web_auth_check(rq->srv->auth, authorization, &rq->who, why, sizeof why)) {
        rq->status = MHD_HTTP_UNAUTHORIZED;
        rq->auth_failed = true;
        snprintf(rq->msg, sizeof rq->msg, "Unauthorized: %s.", why);
        unsigned block = 0;
        /* a guess presents credentials: a request without any (a browser before its login)
         * is no failed authentication */
        if (authorization && web_limiter_fail(rq->srv->limiter, rq->conn, &block)) {
            char client[64];
            web_client_address(rq->conn, client, sizeof client);
            if (rq->srv->audit)
                web_audit_event(rq->srv->audit, "authRateLimited", client, web_limiter_failures(rq->srv->limiter),
                                block);
            else
                fprintf(stderr, "dicomfs serve: %s: too many failed authentications; answering 429 for %u s\n", client,
                        block);
        }
        return;
    }
    rq->authed = true;
    if (route_status) return; /* a valid token: the route's own 400/404/405 */
    if (need == AUTH_REFUSED) {
        rq->status = MHD_HTTP_FORBIDDEN;
        snprintf(rq->msg, sizeof rq->msg, "This request has no data action; it is refused.");
    } else if (!(rq->who.actions & need)) {
        rq->status = MHD_HTTP_FORBIDDEN;
        snprintf(rq->msg, sizeof rq->msg, "Forbidden: the principal '%.100s' does not have the data action '%s' "
                 "this request needs.", rq->who.sub, auth_action_name(need));
    }
}

/* The header deadline (web_options.header_timeout). MHD's own timeout is an idle one that
 * every byte resets, so a client sending its headers a byte at a time would keep its
 * connection (and, one thread per connection, a thread) as long as it liked. A watcher
 * thread shuts down the socket of a connection whose request headers are not complete
 * HEADER_TIMEOUT seconds after it opened or its previous request ended; MHD then sees the
 * client gone and closes the connection as usual (closing the fd itself makes MHD abort).
 * The body and the answer are left to the idle timeout: a slow but steady upload or
 * download is a client's right. */
typedef struct watched {
    struct watched *prev, *next;
    int fd;
    int64_t deadline; /* CLOCK_MONOTONIC ms; 0: none (a request is being read or answered) */
} watched;

struct web_watch {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_t thread;
    bool stop;
    int64_t timeout_ms;
    watched list; /* the open connections (a ring; this one is no connection) */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *watch_main(void *arg)
{
    struct web_watch *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        int64_t now = now_ms();
        for (watched *c = w->list.next; c != &w->list; c = c->next)
            if (c->deadline && c->deadline <= now) {
                shutdown(c->fd, SHUT_RDWR);
                c->deadline = 0;
            }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 1; /* deadlines are seconds: a second's lateness is no matter */
        pthread_cond_timedwait(&w->wake, &w->mu, &until);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static struct web_watch *watch_start(unsigned timeout_s)
{
    struct web_watch *w = calloc(1, sizeof *w);
    if (!w) abort();
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    w->timeout_ms = (int64_t)timeout_s * 1000;
    w->list.next = w->list.prev = &w->list;
    if (pthread_create(&w->thread, NULL, watch_main, w)) abort();
    return w;
}

static void watch_stop(struct web_watch *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* MHD_OPTION_NOTIFY_CONNECTION: every connection is watched from its opening to its closing.
 * MHD (0.9.75) tells CLOSED before it closes the socket, on every path, and the watcher
 * shuts sockets down holding the same mutex: the descriptor it shuts down is never one
 * that was closed and handed to another connection meanwhile. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct web_watch *w = ((web_server *)cls)->watch;
    if (!w) return;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        watched *c = calloc(1, sizeof *c);
        if (!c || !ci) {
            free(c);
            return;
        }
        c->fd = ci->connect_fd;
        pthread_mutex_lock(&w->mu);
        c->deadline = now_ms() + w->timeout_ms;
        c->next = w->list.next;
        c->prev = &w->list;
        c->next->prev = c;
        w->list.next = c;
        pthread_mutex_unlock(&w->mu);
        *socket_context = c;
    } else if (*socket_context) {
        watched *c = *socket_context;
        pthread_mutex_lock(&w->mu);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        pthread_mutex_unlock(&w->mu);
        free(c);
        *socket_context = NULL;
    }
}

/* A request's headers are complete (ON false) or its answer is sent (ON true): the watch
 * of its connection's deadline ends or begins again. */
static void watch_headers(web_server *srv, struct MHD_Connection *conn, bool on)
{
    if (!srv->watch) return;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    watched *c = ci ? ci->socket_context : NULL;
    if (!c) return;
    pthread_mutex_lock(&srv->watch->mu);
    c->deadline = on ? now_ms() + srv->watch->timeout_ms : 0;
    pthread_mutex_unlock(&srv->watch->mu);
}

static bool expects_continue(web_request *rq)
{
    const char *e = web_header(rq, MHD_HTTP_HEADER_EXPECT);
    return e && strcasecmp(e, "100-continue") == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **state)
{
    (void)version;
    web_server *srv = cls;
    web_request *rq = *state;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        rq->srv = srv;
        rq->conn = conn;
        rq->method = method;
        watch_headers(srv, conn, false);
        clock_gettime(CLOCK_REALTIME, &rq->t_wall);
        clock_gettime(CLOCK_MONOTONIC, &rq->t_start);
        *state = rq;
        int st = route_parse(method, url, &rq->route, rq->msg, sizeof rq->msg);
        if (st) rq->status = st;
        rq->routed = !st;
        if (srv->auth) authorize(rq, st);
        const char *cl = web_header(rq, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!rq->status && cl && strtoull(cl, NULL, 10) > srv->max_body) {
            rq->status = MHD_HTTP_CONTENT_TOO_LARGE;
            snprintf(rq->msg, sizeof rq->msg, "The request body is larger than the limit of %llu bytes.",
                     (unsigned long long)srv->max_body);
        }
        if (!rq->status && rq->route.kind == ROUTE_STOW) stow_begin(rq);
        if (!rq->status && route_takes_json(rq->route.kind)) xqt_begin(rq);
        if (rq->status && expects_continue(rq)) return answer_error(rq);
        return MHD_YES;
    }
    if (*size) {
        rq->body_bytes += *size;
        if (!rq->status && rq->body_bytes > srv->max_body) {
            rq->status = MHD_HTTP_CONTENT_TOO_LARGE;
            snprintf(rq->msg, sizeof rq->msg, "The request body is larger than the limit of %llu bytes.",
                     (unsigned long long)srv->max_body);
        }
        if (!rq->status && rq->route.kind == ROUTE_STOW) stow_feed(rq, data, *size);
        if (!rq->status && route_takes_json(rq->route.kind)) keep_json(rq, data, *size);
        *size = 0;
        return MHD_YES;
    }
    return dispatch(rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **state, enum MHD_RequestTerminationCode code)
{
    web_server *srv = cls;
    web_request *rq = *state;
    if (!rq) return;
    web_audit_request(srv->audit, rq, conn, code == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    watch_headers(srv, conn, true); /* keep-alive: the next request's headers */
    stow_free(rq); /* an upload cut short is aborted here: nothing of it is stored */
    free(rq->body);
    free(rq);
    *state = NULL;
}

/* Does GnuTLS take CERT and KEY as a pair? (MHD would only fail to start, saying nothing.) */
bool web_tls_check(const char *cert, const char *key, store_err *err)
{
    if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
        store_seterr(err, STORE_EINVAL, "this libmicrohttpd is built without TLS");
        return false;
    }
    gnutls_certificate_credentials_t cred;
    if (gnutls_certificate_allocate_credentials(&cred) < 0) abort();
    gnutls_datum_t c = {(unsigned char *)cert, (unsigned)strlen(cert)}, k = {(unsigned char *)key, (unsigned)strlen(key)};
    int r = gnutls_certificate_set_x509_key_mem2(cred, &c, &k, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_certificate_free_credentials(cred);
    if (r < 0) {
        store_seterr(err, STORE_EINVAL, "the TLS certificate and key cannot be used: %s", gnutls_strerror(r));
        return false;
    }
    return true;
}

static void server_free(web_server *srv)
{
    if (srv->tls_key) {
        gnutls_memset(srv->tls_key, 0, strlen(srv->tls_key));
        free(srv->tls_key);
    }
    free(srv->tls_cert);
    watch_stop(srv->watch); /* after MHD_stop_daemon: no connection is left to watch */
    web_limiter_free(srv->limiter);
    free(srv);
}

web_server *web_server_start(store_t *store, const web_options *o, store_err *err)
{
    web_server *srv = calloc(1, sizeof *srv);
    if (!srv) abort();
    srv->store = store;
    snprintf(srv->cors, sizeof srv->cors, "%s", o && o->cors_origin ? o->cors_origin : "*");
    srv->max_body = o && o->max_body ? o->max_body : DEFAULT_MAX_BODY;
    srv->strict = o && o->strict;
    srv->auth = o ? o->auth : NULL;
    srv->audit = o ? o->audit : NULL;
    unsigned limit = o && o->auth_failures ? o->auth_failures : 20;
    if (srv->auth && limit != UINT_MAX) srv->limiter = web_limiter_new(limit);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(o ? o->port : 0)};
    const char *host = o && o->host ? o->host : "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        store_seterr(err, STORE_EINVAL, "'%s' is not a numeric IPv4 address", host);
        server_free(srv);
        return NULL;
    }
    /* poll(), not select(): a socket numbered past FD_SETSIZE (1024 descriptors: a busy
     * archive's open files count too) would otherwise be refused */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     (MHD_is_feature_supported(MHD_FEATURE_POLL) ? MHD_USE_POLL : 0);
    /* The limits (docs/CLI.md, serve, says why these defaults). */
    unsigned idle = o && o->connection_timeout ? o->connection_timeout : 60;
    unsigned header = o && o->header_timeout ? o->header_timeout : 30;
    unsigned conns = o && o->max_connections ? o->max_connections : 256;
    unsigned per_ip = o && o->max_connections_per_ip ? o->max_connections_per_ip : 64;
    if (idle == UINT_MAX) idle = 0;    /* MHD: 0 is none */
    if (per_ip == UINT_MAX) per_ip = 0;
    if (conns == UINT_MAX) conns = 65536;
    if (header != UINT_MAX) srv->watch = watch_start(header);
    if (o && (o->tls_cert || o->tls_key)) {
        if (!o->tls_cert || !o->tls_key) {
            store_seterr(err, STORE_EINVAL, "HTTPS needs both a certificate and its key");
            server_free(srv);
            return NULL;
        }
        if (!web_tls_check(o->tls_cert, o->tls_key, err)) {
            server_free(srv);
            return NULL;
        }
        srv->tls_cert = strdup(o->tls_cert);
        srv->tls_key = strdup(o->tls_key);
        if (!srv->tls_cert || !srv->tls_key) abort();
        flags |= MHD_USE_TLS;
    }
    /* Without TLS the certificate options are not given at all (MHD refuses them then). */
    srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                /* 256 KiB per connection: uploads arrive in 128 KiB chunks (3x faster than
                                 * the 32 KiB default) */
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)256 * 1024,
                                MHD_OPTION_CONNECTION_TIMEOUT, idle,
                                MHD_OPTION_CONNECTION_LIMIT, conns,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                                MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                                srv->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, srv->tls_cert,
                                MHD_OPTION_HTTPS_MEM_KEY, srv->tls_key, MHD_OPTION_END);
    if (!srv->mhd) {
        store_seterr(err, STORE_EIO, "cannot listen on %s:%u (in use, or not an address of this machine)", host,
                     o ? o->port : 0);
        server_free(srv);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : (o ? o->port : 0);
    return srv;
}

uint16_t web_server_port(const web_server *srv) { return srv->port; }

void web_server_stop(web_server *srv)
{
    if (!srv) return;
    MHD_stop_daemon(srv->mhd);
    server_free(srv);
}
