/* web.h — the DICOMweb HTTP endpoint: the archive as the Azure DICOM service answers.
 *
 * One server serves one store on one address, with libmicrohttpd's thread-per-connection
 * model (handlers block on the store; a slow client holds only its own thread). Routes,
 * status codes, headers and JSON follow docs/ARCHITECTURE.md's notes on the reference
 * service. Request and response bodies are streamed, never held whole in memory, except
 * the small JSON bodies (QIDO, STOW results, metadata, change feed, extended query tags;
 * JSON request bodies at most 1 MiB). */
#ifndef DICOMFS_WEB_H
#define DICOMFS_WEB_H

#include <stdint.h>

#include "store.h"

typedef struct web_server web_server;
typedef struct web_auth web_auth; /* auth.h */
typedef struct web_audit web_audit;

typedef struct {
    const char *host;        /* numeric address to listen on, "127.0.0.1" by default */
    uint16_t port;           /* 0: any free port (web_server_port tells which) */
    const char *cors_origin; /* Access-Control-Allow-Origin; NULL: "*" */
    uint64_t max_body;       /* STOW limit in bytes; 0: 2 GiB - 1, as the reference */
    bool strict;             /* refuse what the reference refuses even where the standard and
                                real clients allow it (docs/CLI.md lists each difference) */
    const web_auth *auth;    /* bearer tokens and roles (auth.h; it must outlive the server);
                                NULL: every request is served, as without access control */
    unsigned auth_failures;  /* with auth: failed authentications per client address and minute
                                before 429 (0: the default, 20; UINT_MAX: no limit) */
    web_audit *audit;        /* the audit log (web_audit_open; it must outlive the server), or NULL */
    const char *tls_cert;    /* HTTPS: the certificate (chain) and its private key, PEM text */
    const char *tls_key;     /* (NUL-terminated; copied); both NULL: plain HTTP */
    /* Connection limits: with one thread per connection, what one client may hold. For each,
     * 0 is the default (docs/CLI.md says why) and UINT_MAX none. */
    unsigned connection_timeout; /* idle: seconds a connection may pass with nothing received or sent
                                    before it is closed (default 60) */
    unsigned header_timeout; /* seconds from a connection's opening, or its previous request's
                                end, to the end of its request headers (default 30) */
    unsigned max_connections;        /* open at once, in all (default 256) */
    unsigned max_connections_per_ip; /* open at once from one client address (default 64);
                                        past either limit a new connection is closed at once,
                                        unanswered (libmicrohttpd) */
} web_options;

/* Starts serving STORE (which must outlive the server). NULL with ERR filled on failure
 * (address in use, bad address, a certificate or key GnuTLS cannot use, or a key that is
 * not the certificate's). */
web_server *web_server_start(store_t *store, const web_options *opts, store_err *err);
uint16_t web_server_port(const web_server *srv);
/* Can HTTPS serve with CERT and KEY (PEM text)? false with the reason in ERR. */
bool web_tls_check(const char *cert, const char *key, store_err *err);
/* Stops accepting, finishes the requests in progress, frees. NULL is a no-op. */
void web_server_stop(web_server *srv);

/* The audit log: PATH appended to (created 0600), or "-" for stderr. NULL with a reason
 * in ERR. Lines are written whole, one per request, from any thread. */
web_audit *web_audit_open(const char *path, char *err, size_t len);
void web_audit_close(web_audit *a);

#endif
