/* multipart.c — streaming multipart/related parser (see multipart.h).
 *
 * The body is scanned for the delimiter CRLF "--" boundary with memmem, so part data goes
 * to part_data in the caller's own chunks, cut only where a delimiter starts. Because a
 * boundary may not contain CR, a delimiter can only start at a CR: a chunk that ends in a
 * prefix of the delimiter holds back just that prefix, and the held bytes are always
 * delim[0..match), so they are replayed from the delimiter string itself and need no
 * buffer. Only the part header block is copied (bounded by WEB_MULTIPART_MAX_HEADERS). */
#include "multipart.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 2046 recommends at most 70 characters; clients send more (Orthanc 73) and the
 * reference sets no limit, so any boundary a media-type parameter can carry is taken. */
#define BOUNDARY_MAX 255
#define PADDING_MAX 64  /* transport padding (spaces/tabs) allowed after a delimiter */

typedef enum {
    SCAN,      /* preamble or part body: looking for the delimiter */
    TAIL,      /* delimiter matched: padding, then CRLF (next part) or "--" (the end) */
    TAIL_DASH, /* delimiter and one '-' seen */
    TAIL_CR,   /* delimiter, padding and CR seen */
    HEADERS,   /* collecting a part's header block */
    EPILOGUE,  /* closing delimiter seen: the rest is ignored */
    FAILED,
} parse_state;

struct web_multipart {
    web_multipart_callbacks cb;
    void *ctx;
    char delim[4 + BOUNDARY_MAX]; /* CR LF '-' '-' boundary, not NUL-terminated */
    size_t delim_len;
    parse_state state;
    bool in_body;   /* false in the preamble: scanned data is dropped, not a part's */
    bool finished;  /* web_multipart_finish was called */
    size_t match;   /* how many delimiter bytes the last chunk ended with (held back) */
    size_t virtual_len; /* of those, how many stand for a CRLF that is not data (see body_start) */
    char padding[PADDING_MAX];
    size_t padding_len;
    size_t parts;
    size_t hdr_len;        /* bytes of the current header block in hdr */
    size_t hdr_line_start; /* where the line being collected starts in hdr */
    char error[192];
    char hdr[WEB_MULTIPART_MAX_HEADERS + 1];
};

static int fail(web_multipart *mp, const char *fmt, ...)
{
    if (mp->state == FAILED) return -1; /* keep the first reason */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mp->error, sizeof mp->error, fmt, ap);
    va_end(ap);
    mp->state = FAILED;
    return -1;
}

web_multipart *web_multipart_new(const char *boundary, const web_multipart_callbacks *cb, void *ctx)
{
    if (!boundary) return NULL;
    size_t len = strlen(boundary);
    if (len == 0 || len > BOUNDARY_MAX) return NULL;
    /* A CR or LF in the boundary would break the "delimiters start only at CR" rule the
     * scanner relies on, and no valid boundary (RFC 2046 bchars) has one. */
    if (strpbrk(boundary, "\r\n")) return NULL;
    web_multipart *mp = calloc(1, sizeof *mp);
    if (!mp) return NULL;
    if (cb) mp->cb = *cb;
    mp->ctx = ctx;
    memcpy(mp->delim, "\r\n--", 4);
    memcpy(mp->delim + 4, boundary, len);
    mp->delim_len = 4 + len;
    /* The first delimiter may open the body without a CRLF before it. */
    mp->state = SCAN;
    mp->match = mp->virtual_len = 2;
    return mp;
}

void web_multipart_free(web_multipart *mp)
{
    free(mp);
}

const char *web_multipart_error(const web_multipart *mp)
{
    return mp && mp->error[0] ? mp->error : "no error";
}

size_t web_multipart_parts(const web_multipart *mp)
{
    return mp ? mp->parts : 0;
}

/* Hands LEN bytes of part body to part_data; the preamble is dropped. */
static int emit(web_multipart *mp, const char *data, size_t len)
{
    if (!mp->in_body || len == 0 || !mp->cb.part_data) return 0;
    if (mp->cb.part_data(mp->ctx, data, len) != 0) return fail(mp, "aborted");
    return 0;
}

/* The held-back delimiter prefix turned out to be data: replay it, minus the virtual CRLF. */
static int emit_held(web_multipart *mp)
{
    size_t virt = mp->virtual_len, match = mp->match;
    mp->match = mp->virtual_len = 0;
    return match > virt ? emit(mp, mp->delim + virt, match - virt) : 0;
}

/* A part body begins. The CRLF that ended the header block also counts as the CRLF of
 * the next delimiter (RFC 2046: body-part := headers [CRLF *OCTET]), so a part with an
 * empty body may be followed directly by "--boundary": start with those two bytes
 * matched but marked virtual, never to be replayed as data. */
static void body_start(web_multipart *mp)
{
    mp->in_body = true;
    mp->state = SCAN;
    mp->match = mp->virtual_len = 2;
}

/* SCAN: passes data up to the next delimiter (or up to a delimiter prefix at the end of
 * the chunk) to part_data in one piece. Returns the new offset into P. */
static size_t scan(web_multipart *mp, const char *p, size_t n, size_t i)
{
    const char *delim = mp->delim;
    size_t dlen = mp->delim_len;

    if (mp->match > 0) { /* continue the prefix the last chunk ended with */
        while (i < n && mp->match < dlen && p[i] == delim[mp->match]) {
            i++;
            mp->match++;
        }
        if (mp->match == dlen) {
            mp->state = TAIL;
            mp->padding_len = 0;
            return i;
        }
        if (i == n) return n;
        /* Mismatch at p[i]: the held bytes were data. They hold no CR after the first
         * byte, so no delimiter can start inside them; rescan from p[i]. */
        if (emit_held(mp) != 0) return n;
    }

    size_t start = i;
    const char *hit = memmem(p + start, n - start, delim, dlen);
    if (hit) {
        size_t at = (size_t)(hit - p);
        if (emit(mp, p + start, at - start) != 0) return n;
        mp->match = dlen;
        mp->virtual_len = 0;
        mp->state = TAIL;
        mp->padding_len = 0;
        return at + dlen;
    }
    /* No whole delimiter: hold back a delimiter prefix at the very end, if any. */
    size_t tail_from = n - start > dlen - 1 ? n - (dlen - 1) : start;
    for (const char *cr = memchr(p + tail_from, '\r', n - tail_from); cr;
         cr = memchr(cr + 1, '\r', (size_t)(p + n - (cr + 1)))) {
        size_t at = (size_t)(cr - p);
        if (memcmp(cr, delim, n - at) == 0) {
            if (emit(mp, p + start, at - start) != 0) return n;
            mp->match = n - at;
            mp->virtual_len = 0;
            return n;
        }
        if (cr + 1 == p + n) break;
    }
    emit(mp, p + start, n - start);
    return n;
}

/* The bytes after a delimiter showed it was none (RFC 2046: a delimiter is followed by
 * padding and CRLF, or by "--"): the delimiter and padding were data. */
static int not_a_delimiter(web_multipart *mp)
{
    if (emit_held(mp) != 0) return -1;
    if (emit(mp, mp->padding, mp->padding_len) != 0) return -1;
    mp->padding_len = 0;
    mp->state = SCAN;
    return 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* A delimiter line ended: the current part (if any) ends and the next one's headers follow. */
static int next_part(web_multipart *mp)
{
    if (mp->in_body && mp->cb.part_end && mp->cb.part_end(mp->ctx) != 0) return fail(mp, "aborted");
    mp->in_body = false;
    mp->match = mp->virtual_len = 0;
    mp->state = HEADERS;
    mp->hdr_len = mp->hdr_line_start = 0;
    return 0;
}

/* TAIL, TAIL_DASH, TAIL_CR: one byte after a delimiter. Returns how many bytes it used
 * (0 when the byte must be scanned again as data). */
static size_t tail(web_multipart *mp, char c)
{
    switch (mp->state) {
    case TAIL:
        if (c == '-' && mp->padding_len == 0) {
            mp->state = TAIL_DASH;
        } else if (is_space(c)) {
            if (mp->padding_len == PADDING_MAX) {
                fail(mp, "more than %d bytes of transport padding after a boundary delimiter", PADDING_MAX);
                return 1;
            }
            mp->padding[mp->padding_len++] = c;
        } else if (c == '\r') {
            mp->state = TAIL_CR;
        } else if (c == '\n') { /* bare LF tolerated, as in the headers */
            next_part(mp);
        } else {
            not_a_delimiter(mp);
            return 0;
        }
        return 1;
    case TAIL_DASH:
        if (c == '-') { /* the closing delimiter */
            if (mp->in_body && mp->cb.part_end && mp->cb.part_end(mp->ctx) != 0) {
                fail(mp, "aborted");
                return 1;
            }
            mp->in_body = false;
            mp->state = EPILOGUE;
            return 1;
        }
        if (not_a_delimiter(mp) == 0) emit(mp, "-", 1);
        return 0;
    case TAIL_CR:
        if (c == '\n') {
            next_part(mp);
            return 1;
        }
        /* The CR may begin a real delimiter: it becomes the held prefix. */
        if (not_a_delimiter(mp) == 0) mp->match = 1;
        return 0;
    default:
        return 1;
    }
}

/* Finds the Content-Type in the complete header block hdr[0..end) (lines ending in LF),
 * NUL-terminates its value in place and returns it, or NULL when there is none.
 * Folded (continued) lines are joined. Sets the error on a malformed block. */
static const char *header_content_type(web_multipart *mp, size_t end, bool *bad)
{
    char *b = mp->hdr;
    size_t part = mp->parts + 1;
    *bad = true;
    if (memchr(b, '\0', end)) return fail(mp, "part %zu: NUL byte in part headers", part), NULL;
    char *ct = NULL, *ct_end = NULL;
    bool have_header = false, current_is_ct = false;
    for (size_t pos = 0; pos < end;) {
        char *line = b + pos;
        char *nl = memchr(line, '\n', end - pos);
        char *line_end = nl > line && nl[-1] == '\r' ? nl - 1 : nl;
        pos = (size_t)(nl - b) + 1;
        if (memchr(line, '\r', (size_t)(line_end - line)))
            return fail(mp, "part %zu: stray CR in part headers", part), NULL;
        if (is_space(line[0])) { /* obsolete line folding: continues the previous header */
            if (!have_header) return fail(mp, "part %zu: part headers start with a continuation line", part), NULL;
            if (current_is_ct) ct_end = line_end;
            continue;
        }
        char *colon = memchr(line, ':', (size_t)(line_end - line));
        char *name_end = colon;
        while (name_end && name_end > line && is_space(name_end[-1])) name_end--;
        if (!colon || name_end == line) return fail(mp, "part %zu: malformed part header line (no name or no ':')", part), NULL;
        for (char *q = line; q < name_end; q++)
            if ((unsigned char)*q <= ' ' || *q == 0x7f)
                return fail(mp, "part %zu: malformed part header name", part), NULL;
        have_header = true;
        current_is_ct = (size_t)(name_end - line) == 12 && strncasecmp(line, "content-type", 12) == 0;
        if (current_is_ct) {
            if (ct) return fail(mp, "part %zu: more than one Content-Type header", part), NULL;
            ct = colon + 1;
            ct_end = line_end;
        }
    }
    *bad = false;
    if (!ct) return NULL;
    for (char *q = ct; q < ct_end; q++)
        if (*q == '\r' || *q == '\n') *q = ' '; /* the line breaks of folded lines */
    while (ct < ct_end && is_space(*ct)) ct++;
    while (ct_end > ct && is_space(ct_end[-1])) ct_end--;
    *ct_end = '\0'; /* within the block: ct_end is at most the block's last LF */
    return ct;
}

/* HEADERS: collects header lines until the empty line, then begins the part. Returns the
 * new offset into P. */
static size_t headers(web_multipart *mp, const char *p, size_t n, size_t i)
{
    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t take = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
        if (take > WEB_MULTIPART_MAX_HEADERS - mp->hdr_len) {
            fail(mp, "part %zu: part headers too long (over %d bytes)", mp->parts + 1, WEB_MULTIPART_MAX_HEADERS);
            return n;
        }
        memcpy(mp->hdr + mp->hdr_len, p + i, take);
        mp->hdr_len += take;
        i += take;
        if (!nl) break;
        size_t line_len = mp->hdr_len - mp->hdr_line_start;
        if (line_len == 1 || (line_len == 2 && mp->hdr[mp->hdr_line_start] == '\r')) {
            bool bad;
            const char *ct = header_content_type(mp, mp->hdr_line_start, &bad);
            if (bad) return n;
            mp->parts++;
            if (mp->cb.part_begin && mp->cb.part_begin(mp->ctx, ct) != 0) {
                fail(mp, "aborted");
                return n;
            }
            body_start(mp);
            return i;
        }
        mp->hdr_line_start = mp->hdr_len;
    }
    return i;
}

int web_multipart_feed(web_multipart *mp, const char *data, size_t len)
{
    if (!mp) return -1;
    if (mp->state == FAILED) return -1;
    if (mp->finished) return fail(mp, "data fed after the end of the body");
    if (len == 0) return 0;
    if (!data) return fail(mp, "no data");
    size_t i = 0;
    while (i < len && mp->state != FAILED) {
        switch (mp->state) {
        case SCAN:
            i = scan(mp, data, len, i);
            break;
        case TAIL:
        case TAIL_DASH:
        case TAIL_CR:
            i += tail(mp, data[i]);
            break;
        case HEADERS:
            i = headers(mp, data, len, i);
            break;
        case EPILOGUE:
            i = len;
            break;
        case FAILED:
            break;
        }
    }
    return mp->state == FAILED ? -1 : 0;
}

int web_multipart_finish(web_multipart *mp)
{
    if (!mp) return -1;
    if (mp->state == FAILED) return -1;
    mp->finished = true;
    if (mp->state == EPILOGUE) return 0; /* complete, possibly with no parts (STOW: 204) */
    if (mp->state == HEADERS) return fail(mp, "truncated body: part %zu ends within its headers", mp->parts + 1);
    if (!mp->in_body) return fail(mp, "truncated body: no boundary delimiter found");
    return fail(mp, "truncated body: part %zu has no closing boundary delimiter", mp->parts);
}
