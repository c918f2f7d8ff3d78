/* body.c — segmented, streamed response bodies (see body.h). */
#include "body.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *mem;      /* owned block, or NULL for a file range */
    char *path;     /* owned: the file of a range */
    uint64_t offset, len;
} segment;

struct web_body {
    segment *seg;
    size_t n, cap;
    uint64_t size;
    size_t cur;     /* segment holding position cur_start */
    uint64_t cur_start;
    int fd;         /* open on fd_path while its ranges are read */
    const char *fd_path;
};

web_body *web_body_new(void)
{
    web_body *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->fd = -1;
    return b;
}

static segment *add(web_body *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->seg = realloc(b->seg, b->cap * sizeof *b->seg);
        if (!b->seg) abort();
    }
    segment *s = &b->seg[b->n++];
    memset(s, 0, sizeof *s);
    return s;
}

void web_body_take(web_body *b, void *data, size_t len)
{
    segment *s = add(b);
    s->mem = data;
    s->len = len;
    b->size += len;
}

void web_body_text(web_body *b, const char *text)
{
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!copy) abort();
    memcpy(copy, text, len + 1);
    web_body_take(b, copy, len);
}

void web_body_file(web_body *b, const char *path, uint64_t offset, uint64_t len)
{
    segment *s = add(b);
    s->path = strdup(path);
    if (!s->path) abort();
    s->offset = offset;
    s->len = len;
    b->size += len;
}

uint64_t web_body_size(const web_body *b) { return b->size; }

void web_body_free(web_body *b)
{
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) {
        free(b->seg[i].mem);
        free(b->seg[i].path);
    }
    if (b->fd >= 0) close(b->fd);
    free(b->seg);
    free(b);
}

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    web_body *b = cls;
    if (pos >= b->size) return MHD_CONTENT_READER_END_OF_STREAM;
    /* MHD reads in order; rewind only if it ever does not. */
    if (pos < b->cur_start) {
        b->cur = 0;
        b->cur_start = 0;
    }
    while (b->cur < b->n && pos >= b->cur_start + b->seg[b->cur].len) b->cur_start += b->seg[b->cur++].len;
    if (b->cur >= b->n) return MHD_CONTENT_READER_END_WITH_ERROR;
    segment *s = &b->seg[b->cur];
    uint64_t within = pos - b->cur_start, left = s->len - within;
    size_t n = left < max ? (size_t)left : max;
    if (s->mem) {
        memcpy(buf, s->mem + within, n);
        return (ssize_t)n;
    }
    if (!b->fd_path || strcmp(b->fd_path, s->path) != 0) {
        if (b->fd >= 0) close(b->fd);
        b->fd = open(s->path, O_RDONLY | O_CLOEXEC);
        b->fd_path = s->path;
        if (b->fd < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    ssize_t r;
    do r = pread(b->fd, buf, n, (off_t)(s->offset + within));
    while (r < 0 && errno == EINTR);
    /* A short file here means it changed under us: end the response as an error
     * rather than send a body shorter than its Content-Length. */
    return r > 0 ? r : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void free_body(void *cls) { web_body_free(cls); }

struct MHD_Response *web_body_response(web_body *b)
{
    struct MHD_Response *r = MHD_create_response_from_callback(b->size, 256 * 1024, read_body, b, free_body);
    if (!r) web_body_free(b);
    return r;
}
