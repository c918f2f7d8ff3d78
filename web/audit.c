/* audit.c — the audit log (one JSON line per request) and the limiter of failed
 * authentications per client address.
 *
 * A line has only what says who did what, never what it was done to: the route template
 * (built from the route's kind and version, so no UID of the path), never the query
 * string (patient names and IDs), a header (tokens) or a body. The limiter is a fixed
 * table (WEB_LIMIT_SLOTS addresses; a full one forgets the least recently seen), so that
 * an attacker with many addresses costs no memory. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define WEB_LIMIT_FAILURES 20 /* failed authentications (by default) ... */
#define WEB_LIMIT_WINDOW 60   /* ... within this many seconds ... */
#define WEB_LIMIT_BLOCK 60    /* ... block the address for this long (429) */
#define WEB_LIMIT_SLOTS 1024
#define WEB_LIMIT_PROBE 8

struct web_audit {
    int fd;
    bool own;
    pthread_mutex_t lock;
};

web_audit *web_audit_open(const char *path, char *err, size_t len)
{
    int fd = 2;
    bool own = false;
    if (strcmp(path, "-") != 0) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0) {
            snprintf(err, len, "cannot open the audit log %s: %s", path, strerror(errno));
            return NULL;
        }
        own = true;
    }
    web_audit *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->fd = fd;
    a->own = own;
    pthread_mutex_init(&a->lock, NULL);
    return a;
}

void web_audit_close(web_audit *a)
{
    if (!a) return;
    if (a->own) close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static void put_line(web_audit *a, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(obj);
    if (!text) return;
    size_t n = strlen(text);
    text[n] = '\n'; /* replaces the NUL: written as one line with one write */
    pthread_mutex_lock(&a->lock);
    for (size_t off = 0; off < n + 1;) {
        ssize_t w = write(a->fd, text + off, n + 1 - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* a full disk loses lines, never requests */
        off += (size_t)w;
    }
    pthread_mutex_unlock(&a->lock);
    free(text);
}

/* A value as a JSON string; one that is not valid UTF-8 (a claim cut inside a character)
 * becomes "?" rather than leaving the field out of the line. */
static json_t *text_or_mark(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : json_string("?");
}

static void iso_time(const struct timespec *t, char out[32])
{
    struct tm tm;
    gmtime_r(&t->tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", t->tv_nsec / 1000000);
}

void web_client_address(struct MHD_Connection *conn, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci = conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    snprintf(out, len, "?");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

const char *web_route_template(const route *r, char *out, size_t len)
{
    char pre[32];
    snprintf(pre, sizeof pre, "/%s", r->version_seg);
    const char *uids = r->sop[0] ? "/studies/{study}/series/{series}/instances/{instance}"
                       : r->series[0] ? "/studies/{study}/series/{series}"
                       : r->study[0] ? "/studies/{study}"
                                     : "";
    static const char *const level[] = {"/studies", "/series", "/instances"};
    switch (r->kind) {
    case ROUTE_HEALTH: snprintf(out, len, "/health/check"); break;
    case ROUTE_PREFLIGHT: snprintf(out, len, "%s/*", pre); break;
    case ROUTE_STOW:
    case ROUTE_RETRIEVE:
    case ROUTE_DELETE: snprintf(out, len, "%s%s", pre, *uids ? uids : "/studies"); break;
    case ROUTE_QIDO:
        snprintf(out, len, "%s%s%s", pre, uids, level[r->level <= STORE_LEVEL_INSTANCE ? r->level : 0]);
        break;
    case ROUTE_METADATA: snprintf(out, len, "%s%s/metadata", pre, uids); break;
    case ROUTE_FRAMES: snprintf(out, len, "%s%s/frames/{frames}", pre, uids); break;
    case ROUTE_RENDERED: snprintf(out, len, "%s%s%s/rendered", pre, uids, r->frames[0] ? "/frames/{frame}" : ""); break;
    case ROUTE_CHANGEFEED: snprintf(out, len, "%s/changefeed", pre); break;
    case ROUTE_CHANGEFEED_LATEST: snprintf(out, len, "%s/changefeed/latest", pre); break;
    case ROUTE_XQT_ADD:
    case ROUTE_XQT_LIST: snprintf(out, len, "%s/extendedquerytags", pre); break;
    case ROUTE_XQT_GET:
    case ROUTE_XQT_UPDATE:
    case ROUTE_XQT_DELETE: snprintf(out, len, "%s/extendedquerytags/{tagPath}", pre); break;
    case ROUTE_XQT_ERRORS: snprintf(out, len, "%s/extendedquerytags/{tagPath}/errors", pre); break;
    case ROUTE_OPERATION: snprintf(out, len, "%s/operations/{operationId}", pre); break;
    default: return NULL;
    }
    return out;
}

void web_audit_request(web_audit *a, web_request *rq, struct MHD_Connection *conn, bool completed)
{
    if (!a) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - rq->t_start.tv_sec) * 1e3 + (double)(now.tv_nsec - rq->t_start.tv_nsec) / 1e6;
    char when[32], client[INET6_ADDRSTRLEN + 1], tmpl[128], method[17];
    iso_time(&rq->t_wall, when);
    web_client_address(conn, client, sizeof client);
    /* the method is the client's text: only a token's characters, at most 16 */
    size_t m = 0;
    for (const char *p = rq->method ? rq->method : ""; *p && m < sizeof method - 1; p++)
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '-' || *p == '_') method[m++] = *p;
    method[m] = 0;
    unsigned status = rq->resp_status;
    if (!status) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
        if (ci) status = ci->http_status;
    }
    bool head = rq->method && strcmp(rq->method, "HEAD") == 0;
    const char *route = rq->routed ? web_route_template(&rq->route, tmpl, sizeof tmpl) : NULL;
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(when));
    json_object_set_new(o, "sub", rq->authed ? text_or_mark(rq->who.sub) : json_null());
    json_object_set_new(o, "client", json_string(client));
    json_object_set_new(o, "method", json_string(method));
    json_object_set_new(o, "route", route ? json_string(route) : json_null());
    json_object_set_new(o, "status", status ? json_integer(status) : json_null());
    json_object_set_new(o, "bytes", json_integer(status && !head ? (json_int_t)rq->resp_bytes : 0));
    json_object_set_new(o, "ms", json_real((double)(long long)(ms * 1000) / 1000));
    if (rq->auth_failed) { /* why (never the token: auth.c's reasons name no part of it but its alg) */
        json_object_set_new(o, "authFailed", json_true());
        json_object_set_new(o, "reason", text_or_mark(rq->msg));
    }
    if (!completed) json_object_set_new(o, "completed", json_false());
    put_line(a, o);
}

void web_audit_event(web_audit *a, const char *event, const char *client, unsigned failures, unsigned seconds)
{
    if (!a) return;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    char when[32];
    iso_time(&t, when);
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(when));
    json_object_set_new(o, "event", json_string(event));
    json_object_set_new(o, "client", json_string(client));
    json_object_set_new(o, "failures", json_integer(failures));
    json_object_set_new(o, "windowSeconds", json_integer(WEB_LIMIT_WINDOW));
    json_object_set_new(o, "blockSeconds", json_integer(seconds));
    put_line(a, o);
}

/* ---- the limiter ------------------------------------------------------------------------ */

typedef struct {
    unsigned char addr[16]; /* IPv4 in the first 4 bytes */
    bool used;
    time_t window_start, last_seen, blocked_until;
    unsigned failures;
} limit_slot;

struct web_limiter {
    pthread_mutex_t lock;
    unsigned failures;
    limit_slot slot[WEB_LIMIT_SLOTS];
};

web_limiter *web_limiter_new(unsigned failures)
{
    web_limiter *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->failures = failures;
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

void web_limiter_free(web_limiter *l)
{
    if (!l) return;
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static bool address_of(struct MHD_Connection *conn, unsigned char out[16])
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    memset(out, 0, 16);
    if (sa && sa->sa_family == AF_INET) memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa && sa->sa_family == AF_INET6) memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    else return false;
    return true;
}

/* The slot of ADDR; with CREATE a new one (replacing the least recently seen of its probe
 * range) when it has none. Called with the lock held. */
static limit_slot *find(web_limiter *l, const unsigned char addr[16], bool create, time_t now)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++) h = (h ^ addr[i]) * 16777619u;
    limit_slot *victim = NULL;
    for (unsigned i = 0; i < WEB_LIMIT_PROBE; i++) {
        limit_slot *s = &l->slot[(h + i) % WEB_LIMIT_SLOTS];
        if (s->used && memcmp(s->addr, addr, 16) == 0) return s;
        if (!victim || !s->used || (victim->used && s->last_seen < victim->last_seen)) victim = s;
    }
    if (!create) return NULL;
    memset(victim, 0, sizeof *victim);
    memcpy(victim->addr, addr, 16);
    victim->used = true;
    victim->window_start = now;
    return victim;
}

unsigned web_limiter_blocked(web_limiter *l, struct MHD_Connection *conn)
{
    unsigned char addr[16];
    if (!l || !address_of(conn, addr)) return 0;
    time_t now = time(NULL);
    pthread_mutex_lock(&l->lock);
    limit_slot *s = find(l, addr, false, now);
    unsigned left = s && s->blocked_until > now ? (unsigned)(s->blocked_until - now) : 0;
    pthread_mutex_unlock(&l->lock);
    return left;
}

bool web_limiter_fail(web_limiter *l, struct MHD_Connection *conn, unsigned *block_seconds)
{
    unsigned char addr[16];
    if (!l || !address_of(conn, addr)) return false;
    time_t now = time(NULL);
    bool starts = false;
    pthread_mutex_lock(&l->lock);
    limit_slot *s = find(l, addr, true, now);
    s->last_seen = now;
    if (now - s->window_start >= WEB_LIMIT_WINDOW) {
        s->window_start = now;
        s->failures = 0;
    }
    if (++s->failures >= l->failures && s->blocked_until <= now) {
        s->blocked_until = now + WEB_LIMIT_BLOCK;
        s->failures = 0;
        s->window_start = now + WEB_LIMIT_BLOCK;
        starts = true;
        if (block_seconds) *block_seconds = WEB_LIMIT_BLOCK;
    }
    pthread_mutex_unlock(&l->lock);
    return starts;
}

unsigned web_limiter_failures(const web_limiter *l) { return l->failures; }
