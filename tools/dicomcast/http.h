/* http.h — the one place dicomcast talks HTTP (libcurl).
 *
 * A client keeps one curl easy handle, so consecutive requests to the same server reuse
 * the connection (keep-alive). Not thread-safe: one client per thread (dicomcast has one).
 * Responses are held whole in memory: change-feed pages and FHIR resources are small. */
#ifndef DICOMCAST_HTTP_H
#define DICOMCAST_HTTP_H

#include <stddef.h>

typedef struct http_client http_client_t;

typedef struct {
    long status;      /* HTTP status; 0 when no response arrived (error says why) */
    char *body;       /* NUL-terminated response body (owned; freed by http_response_clear) */
    size_t len;
    char etag[256];   /* the ETag header, "" when none */
    char error[512];  /* transport failure: curl's message and the URL */
} http_response_t;

/* TIMEOUT_S bounds each whole request (connect included). */
http_client_t *http_client_new(long timeout_s);
void http_client_free(http_client_t *c);

/* Sends METHOD URL with an optional bearer TOKEN, BODY of CONTENT_TYPE, an extra header
 * line (e.g. "If-Match: W/\"2\"") and an Accept. Returns 0 when a response arrived (any
 * status), -1 on a transport failure (out->error). out must be cleared afterwards. */
int http_request(http_client_t *c, const char *method, const char *url, const char *token,
                 const char *accept, const char *content_type, const char *body,
                 const char *extra_header, http_response_t *out);
void http_response_clear(http_response_t *r);

/* URL-encodes S (RFC 3986 unreserved kept); the result is malloc'd. */
char *http_escape(const char *s);

#endif
