/* multipart.h — streaming parser of multipart/related request bodies (RFC 2046, RFC 2387)
 * for STOW-RS. Bytes arrive in chunks of any size (down to 1 byte); the parser calls
 * back with each part's headers, its body in pieces, and its end, so no part is ever
 * held whole in memory. Memory use is bounded by the boundary length plus the largest
 * part header block (at most WEB_MULTIPART_MAX_HEADERS bytes).
 *
 * Not thread-safe: one parser per request. Callbacks return 0 to go on, non-zero to stop
 * (web_multipart_feed then returns -1 and web_multipart_error() says "aborted").
 *
 * Grammar accepted: an optional preamble, then "--boundary" (with or without a leading
 * CRLF), optional transport padding (spaces/tabs), CRLF, header lines (CRLF or bare LF
 * tolerated), an empty line, the body up to CRLF"--boundary", and finally
 * "--boundary--" followed by anything (the epilogue is ignored). */
#ifndef DICOMFS_WEB_MULTIPART_H
#define DICOMFS_WEB_MULTIPART_H

#include <stddef.h>

#define WEB_MULTIPART_MAX_HEADERS 16384

typedef struct web_multipart web_multipart;

typedef struct {
    /* A part starts. CONTENT_TYPE is its Content-Type header value (whitespace trimmed),
     * or NULL when the part has none. Header names are matched case-insensitively. */
    int (*part_begin)(void *ctx, const char *content_type);
    int (*part_data)(void *ctx, const char *data, size_t len);
    int (*part_end)(void *ctx);
} web_multipart_callbacks;

/* BOUNDARY is the boundary parameter's value, unquoted (1..255 characters, no CR or LF:
 * the scanner relies on a delimiter starting at a CR). Returns NULL otherwise.
 * Body delimiters must use CRLF (a bare LF is tolerated in header lines and after the
 * delimiter); at most 64 bytes of transport padding; a second Content-Type in one part is
 * an error. The content_type passed to part_begin is valid during that call only. */
web_multipart *web_multipart_new(const char *boundary, const web_multipart_callbacks *cb, void *ctx);

/* Feeds the next LEN bytes. 0 on success; -1 on a syntax error or when a callback
 * stopped it (the parser then ignores further input). */
int web_multipart_feed(web_multipart *mp, const char *data, size_t len);

/* Call at the end of the body: 0 when the body was complete (closing delimiter seen;
 * there may have been no parts), -1 otherwise (truncated). A part cut short gets no
 * part_end. */
int web_multipart_finish(web_multipart *mp);

/* Why it failed, for the 400 body ("truncated body: ...", "part headers too long", ...). */
const char *web_multipart_error(const web_multipart *mp);

/* How many parts were begun so far. */
size_t web_multipart_parts(const web_multipart *mp);

void web_multipart_free(web_multipart *mp);

#endif
