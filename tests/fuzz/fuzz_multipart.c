/* fuzz_multipart.c — the streaming multipart/related parser (web/multipart.c).
 *
 * Input: one byte that seeds the chunking, the boundary up to the first '\n', then the
 * body. Beyond "no crash, no leak" it checks the header's contract:
 *   - web_multipart_new refuses exactly the boundaries it documents (empty, > 255, CR/LF);
 *   - the body fed whole and fed in pseudo-random chunks (1 byte and up) gives the same
 *     verdict and error, and when complete the same parts: content types and bytes;
 *   - callbacks come in order (begin, data*, end), data only inside a part, and part data
 *     plus headers never exceed the body;
 *   - a callback that stops the parser gets no further calls and the error "aborted". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "multipart.h"

typedef struct {
    uint64_t hash;      /* FNV-1a over every event and byte, in order */
    size_t begun, ended, data_bytes, ct_bytes;
    bool in_part;
    bool stopped;       /* a callback returned non-zero */
    size_t stop_at_end; /* stop at this part_end (1-based; 0: never) */
} events;

static void mix(events *e, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) e->hash = (e->hash ^ b[i]) * 0x100000001b3ull;
}

static int on_begin(void *ctx, const char *ct)
{
    events *e = ctx;
    FUZZ_ASSERT(!e->stopped, "a call after a callback stopped the parser");
    FUZZ_ASSERT(!e->in_part, "part_begin inside a part");
    e->in_part = true;
    e->begun++;
    mix(e, "B", 1);
    if (ct) {
        e->ct_bytes += strlen(ct);
        mix(e, ct, strlen(ct) + 1);
    }
    return 0;
}

static int on_data(void *ctx, const char *data, size_t len)
{
    events *e = ctx;
    FUZZ_ASSERT(!e->stopped, "a call after a callback stopped the parser");
    FUZZ_ASSERT(e->in_part, "part_data outside a part");
    e->data_bytes += len;
    mix(e, data, len); /* no marker: the same bytes may come in other pieces */
    return 0;
}

static int on_end(void *ctx)
{
    events *e = ctx;
    FUZZ_ASSERT(!e->stopped, "a call after a callback stopped the parser");
    FUZZ_ASSERT(e->in_part, "part_end outside a part");
    e->in_part = false;
    e->ended++;
    mix(e, "E", 1);
    if (e->stop_at_end && e->ended == e->stop_at_end) {
        e->stopped = true;
        return 1;
    }
    return 0;
}

static const web_multipart_callbacks cb = {on_begin, on_data, on_end};

typedef struct {
    int feed, finish;
    char error[256];
    size_t parts;
} verdict;

/* Parses BODY in chunks whose sizes come from SEED (0: in one piece). */
static verdict run(const char *boundary, const uint8_t *body, size_t len, unsigned seed, events *e)
{
    verdict v = {0};
    web_multipart *mp = web_multipart_new(boundary, &cb, e);
    FUZZ_ASSERT(mp, "a valid boundary refused");
    uint32_t r = seed * 2654435761u + 1;
    for (size_t at = 0; at < len && v.feed == 0;) {
        size_t n = len - at;
        if (seed) {
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            n = 1 + r % (r & 0x100 ? 8 : 300);
            if (n > len - at) n = len - at;
        }
        v.feed = web_multipart_feed(mp, (const char *)body + at, n);
        at += n;
    }
    if (v.feed != 0 && len) /* after a failure the parser ignores input and stays failed */
        FUZZ_ASSERT(web_multipart_feed(mp, (const char *)body, 1) == -1, "input accepted after a failure");
    v.finish = web_multipart_finish(mp);
    snprintf(v.error, sizeof v.error, "%s", web_multipart_error(mp));
    v.parts = web_multipart_parts(mp);
    FUZZ_ASSERT(v.parts == e->begun, "parts() %zu but %zu part_begin calls", v.parts, e->begun);
    web_multipart_free(mp);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned seed = data[0];
    const uint8_t *nl = memchr(data + 1, '\n', size - 1);
    if (!nl) return 0;
    size_t blen = (size_t)(nl - data - 1);
    char *boundary = fuzz_strndup(data + 1, blen);
    const uint8_t *body = nl + 1;
    size_t len = size - (size_t)(body - data);

    size_t bl = strlen(boundary); /* a NUL ends it early */
    bool valid = bl >= 1 && bl <= 255 && !strchr(boundary, '\r');
    web_multipart *probe = web_multipart_new(boundary, &cb, NULL);
    FUZZ_ASSERT((probe != NULL) == valid, "boundary of %zu bytes: %s", bl, probe ? "accepted" : "refused");
    web_multipart_free(probe);
    if (!valid) {
        free(boundary);
        return 0;
    }

    events whole = {.hash = 0xcbf29ce484222325ull}, chunked = whole, stopping = whole;
    verdict a = run(boundary, body, len, 0, &whole);
    verdict b = run(boundary, body, len, seed | 1, &chunked);
    bool ok = a.feed == 0 && a.finish == 0;
    FUZZ_ASSERT(ok == (b.feed == 0 && b.finish == 0), "verdict depends on chunking: %s / %s", a.error, b.error);
    FUZZ_ASSERT(strcmp(a.error, b.error) == 0, "error depends on chunking: '%s' vs '%s'", a.error, b.error);
    if (ok) {
        FUZZ_ASSERT(whole.hash == chunked.hash && whole.begun == chunked.begun && whole.data_bytes == chunked.data_bytes,
                    "parts depend on chunking: %zu/%zu parts, %zu/%zu bytes", whole.begun, chunked.begun,
                    whole.data_bytes, chunked.data_bytes);
        FUZZ_ASSERT(whole.ended == whole.begun && !whole.in_part, "a complete body left a part open");
    }
    FUZZ_ASSERT(whole.data_bytes + whole.ct_bytes <= len, "more output (%zu) than input (%zu)",
                whole.data_bytes + whole.ct_bytes, len);

    /* Stop at the first part's end: no calls after it, and the reason is "aborted". */
    if (whole.ended >= 1) {
        stopping.stop_at_end = 1;
        verdict c = run(boundary, body, len, seed, &stopping);
        FUZZ_ASSERT(c.feed == -1 && c.finish == -1 && strcmp(c.error, "aborted") == 0,
                    "a stop gave feed %d finish %d '%s'", c.feed, c.finish, c.error);
    }
    free(boundary);
    return 0;
}
