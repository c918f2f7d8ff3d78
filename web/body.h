/* body.h — a response body made of segments (memory blocks and file ranges), streamed to
 * the client by libmicrohttpd with 256 KiB reads, so a multi-GB study is never held in
 * memory. Used for multipart WADO responses and frame lists. Not thread-safe; one body
 * per response, which owns the descriptors and buffers given to it. */
#ifndef DICOMFS_WEB_BODY_H
#define DICOMFS_WEB_BODY_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

typedef struct web_body web_body;

web_body *web_body_new(void);
/* Copies TEXT (a part header, a delimiter). */
void web_body_text(web_body *b, const char *text);
/* Takes ownership of DATA (malloc'd). */
void web_body_take(web_body *b, void *data, size_t len);
/* Bytes [OFFSET, OFFSET+LEN) of the file at PATH, opened only while its bytes are sent
 * (a study of 10,000 instances holds one descriptor at a time). */
void web_body_file(web_body *b, const char *path, uint64_t offset, uint64_t len);
uint64_t web_body_size(const web_body *b);
/* The MHD response streaming the body (which it then owns). */
struct MHD_Response *web_body_response(web_body *b);
void web_body_free(web_body *b);

#endif
