/* route.c — the reference's routes (see route.h). */
#include "route.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_SEGMENTS 12

/* Copies a UID segment; over-long or malformed ones only set bad_uid, so that the
 * handler answers 400 with the reference's wording rather than 404. */
static void take_uid(route *r, char *dst, const char *seg)
{
    if (!store_valid_uid(seg)) r->bad_uid = true;
    snprintf(dst, STORE_UID_MAX + 1, "%s", seg);
}

static int split(char *path, char *seg[MAX_SEGMENTS])
{
    int n = 0;
    for (char *save = NULL, *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == MAX_SEGMENTS) return -1;
        seg[n++] = t;
    }
    return n;
}

static bool is(const char *seg, const char *word) { return strcasecmp(seg, word) == 0; }

/* Which methods a resource path accepts. */
typedef enum { P_QIDO_ROOT, P_QIDO, P_STUDY, P_DELETABLE, P_READ } path_kind;

static int method_for(const char *method, path_kind pk, route *r, char *msg, size_t len)
{
    static const char *const allow[] = {"GET, POST", "GET", "GET, POST, DELETE", "GET, DELETE", "GET"};
    snprintf(r->allow, sizeof r->allow, "%s", allow[pk]);
    if (strcmp(method, "OPTIONS") == 0) {
        r->kind = ROUTE_PREFLIGHT;
        return 0;
    }
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (get) return 0; /* the caller picked the GET kind already */
    if (strcmp(method, "POST") == 0 && (pk == P_QIDO_ROOT || pk == P_STUDY)) {
        r->kind = ROUTE_STOW;
        return 0;
    }
    if (strcmp(method, "DELETE") == 0 && (pk == P_STUDY || pk == P_DELETABLE)) {
        r->kind = ROUTE_DELETE;
        return 0;
    }
    snprintf(msg, len, "The method %s is not allowed on this resource; allowed: %s.", method, r->allow);
    return 405;
}

/* A method of the change feed, extended query tag and operation resources, and the kind
 * of route it asks for: each method has a kind of its own there. */
typedef struct {
    const char *method;
    route_kind kind;
} verb;

static int pick_verb(const char *method, const verb *verbs, size_t n, route *r, char *msg, size_t len)
{
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof r->allow; i++)
        used += (size_t)snprintf(r->allow + used, sizeof r->allow - used, "%s%s", i ? ", " : "", verbs[i].method);
    if (strcmp(method, "OPTIONS") == 0) {
        r->kind = ROUTE_PREFLIGHT;
        return 0;
    }
    bool head = strcmp(method, "HEAD") == 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(method, verbs[i].method) == 0 || (head && strcmp(verbs[i].method, "GET") == 0)) {
            r->kind = verbs[i].kind;
            return 0;
        }
    snprintf(msg, len, "The method %s is not allowed on this resource; allowed: %s.", method, r->allow);
    return 405;
}

#define PICK(verbs) pick_verb(method, verbs, sizeof verbs / sizeof verbs[0], r, msg, len)

/* The unpartitioned JSON resources: /changefeed[/latest], /extendedquerytags[/{tagPath}
 * [/errors]], /operations/{id}. -1 when S is none of them. */
static int json_resource(const char *method, char **s, int n, route *r, char *msg, size_t len)
{
    static const verb feed[] = {{"GET", ROUTE_CHANGEFEED}}, latest[] = {{"GET", ROUTE_CHANGEFEED_LATEST}};
    static const verb tags[] = {{"GET", ROUTE_XQT_LIST}, {"POST", ROUTE_XQT_ADD}};
    static const verb tag[] = {{"GET", ROUTE_XQT_GET}, {"PATCH", ROUTE_XQT_UPDATE}, {"DELETE", ROUTE_XQT_DELETE}};
    static const verb errors[] = {{"GET", ROUTE_XQT_ERRORS}}, operation[] = {{"GET", ROUTE_OPERATION}};
    if (is(s[0], "changefeed")) {
        if (n == 1) return PICK(feed);
        if (n == 2 && is(s[1], "latest")) return PICK(latest);
        return -1;
    }
    bool xqt = is(s[0], "extendedquerytags");
    if (!xqt && !is(s[0], "operations")) return -1;
    if (xqt && n == 1) return PICK(tags);
    if (n < 2 || n > (xqt ? 3 : 2) || (n == 3 && !is(s[2], "errors"))) return -1;
    if (strlen(s[1]) >= sizeof r->name) { /* never cut: a cut name is another tag */
        snprintf(msg, len, "The %s '%.32s...' is too long.", xqt ? "tag path" : "operation id", s[1]);
        return xqt ? 400 : 404;
    }
    snprintf(r->name, sizeof r->name, "%s", s[1]);
    if (!xqt) return PICK(operation);
    return n == 2 ? PICK(tag) : PICK(errors);
}

static int version_of(const char *seg)
{
    if (strcmp(seg, "v1") == 0 || strcmp(seg, "v1.0-prerelease") == 0 || strcmp(seg, "v1.0") == 0) return 1;
    if (strcmp(seg, "v2") == 0) return 2;
    return 0;
}

int route_parse(const char *method, const char *path, route *r, char *msg, size_t len)
{
    memset(r, 0, sizeof *r);
    char copy[2048];
    if (strlen(path) >= sizeof copy) {
        snprintf(msg, len, "The request path is too long.");
        return 404;
    }
    snprintf(copy, sizeof copy, "%s", path);
    char *seg[MAX_SEGMENTS];
    int n = split(copy, seg);
    if (n == 2 && is(seg[0], "health") && is(seg[1], "check")) {
        r->kind = ROUTE_HEALTH;
        snprintf(r->allow, sizeof r->allow, "GET");
        return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ? 0 : method_for(method, P_READ, r, msg, len);
    }
    if (n < 2 || !(r->version = version_of(seg[0]))) {
        snprintf(msg, len, "The resource '%s' was not found. Routes start with a version: /v1/ or /v2/.", path);
        return 404;
    }
    snprintf(r->version_seg, sizeof r->version_seg, "%s", seg[0]);
    char **s = seg + 1;
    n--;
    if (is(s[0], "partitions")) {
        snprintf(msg, len, "Data partitions feature is disabled.");
        return 400;
    }
    int st = json_resource(method, s, n, r, msg, len);
    if (st >= 0) return st;
    r->kind = ROUTE_QIDO;
    if (n == 1 && (is(s[0], "studies") || is(s[0], "series") || is(s[0], "instances"))) {
        r->level = is(s[0], "studies") ? STORE_LEVEL_STUDY : is(s[0], "series") ? STORE_LEVEL_SERIES : STORE_LEVEL_INSTANCE;
        return method_for(method, r->level == STORE_LEVEL_STUDY ? P_QIDO_ROOT : P_QIDO, r, msg, len);
    }
    if (!is(s[0], "studies") || n < 2) goto not_found;
    take_uid(r, r->study, s[1]);
    if (n == 2) {
        r->kind = ROUTE_RETRIEVE;
        r->level = STORE_LEVEL_STUDY;
        return method_for(method, P_STUDY, r, msg, len);
    }
    if (n == 3 && is(s[2], "metadata")) {
        r->kind = ROUTE_METADATA;
        r->level = STORE_LEVEL_STUDY;
        return method_for(method, P_READ, r, msg, len);
    }
    if (n == 3 && (is(s[2], "series") || is(s[2], "instances"))) {
        r->level = is(s[2], "series") ? STORE_LEVEL_SERIES : STORE_LEVEL_INSTANCE;
        return method_for(method, P_QIDO, r, msg, len);
    }
    if (!is(s[2], "series") || n < 4) goto not_found;
    take_uid(r, r->series, s[3]);
    r->level = STORE_LEVEL_SERIES;
    if (n == 4) {
        r->kind = ROUTE_RETRIEVE;
        return method_for(method, P_DELETABLE, r, msg, len);
    }
    if (n == 5 && is(s[4], "metadata")) {
        r->kind = ROUTE_METADATA;
        return method_for(method, P_READ, r, msg, len);
    }
    if (n == 5 && is(s[4], "instances")) {
        r->level = STORE_LEVEL_INSTANCE;
        return method_for(method, P_QIDO, r, msg, len);
    }
    if (!is(s[4], "instances") || n < 6) goto not_found;
    take_uid(r, r->sop, s[5]);
    r->level = STORE_LEVEL_INSTANCE;
    if (n == 6) {
        r->kind = ROUTE_RETRIEVE;
        return method_for(method, P_DELETABLE, r, msg, len);
    }
    if (n == 7 && is(s[6], "metadata")) {
        r->kind = ROUTE_METADATA;
        return method_for(method, P_READ, r, msg, len);
    }
    if (n == 7 && is(s[6], "rendered")) {
        r->kind = ROUTE_RENDERED;
        return method_for(method, P_READ, r, msg, len);
    }
    if (is(s[6], "frames") && (n == 8 || (n == 9 && is(s[8], "rendered")))) {
        r->kind = n == 8 ? ROUTE_FRAMES : ROUTE_RENDERED;
        if (strlen(s[7]) >= sizeof r->frames) { /* never cut: a cut number is another frame */
            snprintf(msg, len, "The frame list is too long (at most %zu characters).", sizeof r->frames - 1);
            return 400;
        }
        snprintf(r->frames, sizeof r->frames, "%s", s[7]);
        return method_for(method, P_READ, r, msg, len);
    }
not_found:
    snprintf(msg, len, "The resource '%s' was not found.", path);
    return 404;
}

bool route_takes_json(route_kind kind) { return kind == ROUTE_XQT_ADD || kind == ROUTE_XQT_UPDATE; }
