/* route.h — from method and path to what the request asks for, with the reference's
 * route table (KnownRoutes): versions v1.0-prerelease, v1 and v2; studies, series,
 * instances, metadata, frames, rendered; change feed, extended query tags, operations;
 * health. Pure; thread-safe. */
#ifndef DICOMFS_WEB_ROUTE_H
#define DICOMFS_WEB_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

typedef enum {
    ROUTE_HEALTH,
    ROUTE_STOW,      /* POST /studies[/{study}] */
    ROUTE_QIDO,      /* GET  /studies, /series, /instances and the scoped forms */
    ROUTE_RETRIEVE,  /* GET  /studies/{study}[/series/{series}[/instances/{sop}]] */
    ROUTE_METADATA,  /* GET  .../metadata */
    ROUTE_FRAMES,    /* GET  .../instances/{sop}/frames/{list} */
    ROUTE_RENDERED,  /* GET  .../instances/{sop}[/frames/{n}]/rendered */
    ROUTE_DELETE,    /* DELETE /studies/{study}[/series/{series}[/instances/{sop}]] */
    ROUTE_CHANGEFEED,        /* GET /changefeed */
    ROUTE_CHANGEFEED_LATEST, /* GET /changefeed/latest */
    ROUTE_XQT_ADD,           /* POST   /extendedquerytags (JSON body) */
    ROUTE_XQT_LIST,          /* GET    /extendedquerytags */
    ROUTE_XQT_GET,           /* GET    /extendedquerytags/{tagPath} */
    ROUTE_XQT_UPDATE,        /* PATCH  /extendedquerytags/{tagPath} (JSON body) */
    ROUTE_XQT_DELETE,        /* DELETE /extendedquerytags/{tagPath} */
    ROUTE_XQT_ERRORS,        /* GET    /extendedquerytags/{tagPath}/errors */
    ROUTE_OPERATION,         /* GET    /operations/{operationId} */
    ROUTE_PREFLIGHT  /* OPTIONS on any known path (CORS) */
} route_kind;

typedef struct {
    route_kind kind;
    int version;          /* 1 or 2 (v1.0-prerelease behaves as 1) */
    char version_seg[20]; /* the version as the path has it ("v1.0-prerelease"), for hrefs */
    store_level level;    /* QIDO: level returned; others: the deepest UID given */
    char study[STORE_UID_MAX + 1];
    char series[STORE_UID_MAX + 1];
    char sop[STORE_UID_MAX + 1];
    bool bad_uid;         /* a UID segment is not a valid UID (400 when handled) */
    char frames[4096];    /* the raw frame list of ROUTE_FRAMES / frame of ROUTE_RENDERED */
    char name[128];       /* the tagPath of ROUTE_XQT_* / operationId of ROUTE_OPERATION */
    char allow[32];       /* methods the path accepts, for 405 and preflight */
} route;

/* Fills R. Returns 0 when matched; otherwise the HTTP status to answer (400, 404, 405)
 * with the reason in MSG. */
int route_parse(const char *method, const char *path, route *r, char *msg, size_t len);

/* Does the route take a small JSON request body (held in memory, not streamed)? */
bool route_takes_json(route_kind kind);

#endif
