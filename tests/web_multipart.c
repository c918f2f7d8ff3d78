/* web_multipart.c — the multipart/related parser's rules (web/multipart.h): the grammar it
 * accepts, what counts as a delimiter, that the result never depends on how the body is
 * cut into chunks, its limits and errors, and that large parts stream through whole. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"
#include "testlib.h"

/* What the callbacks saw. */
#define MAX_PARTS 16
typedef struct {
    bool has_ct;
    char ct[256];
    char *body;
    size_t len, cap;
    bool ended;
} part_seen;

typedef struct {
    size_t n_parts;
    part_seen part[MAX_PARTS];
    size_t data_calls;
    bool order_broken; /* a callback came out of begin, data*, end order */
    long abort_on_call; /* the nth callback (1-based) returns non-zero; 0: never */
    long calls;
    int rc; /* first failing feed, else finish */
    char error[256];
} parsed;

static int stop_here(parsed *r)
{
    return ++r->calls == r->abort_on_call;
}

static int on_begin(void *ctx, const char *ct)
{
    parsed *r = ctx;
    if (r->n_parts == MAX_PARTS || (r->n_parts > 0 && !r->part[r->n_parts - 1].ended)) {
        r->order_broken = true;
        return 1;
    }
    r->part[r->n_parts].has_ct = ct != NULL;
    snprintf(r->part[r->n_parts].ct, sizeof r->part[0].ct, "%s", ct ? ct : "");
    r->n_parts++;
    return stop_here(r);
}

static int on_data(void *ctx, const char *data, size_t len)
{
    parsed *r = ctx;
    if (r->n_parts == 0 || r->part[r->n_parts - 1].ended || len == 0) {
        r->order_broken = true;
        return 1;
    }
    r->data_calls++;
    part_seen *p = &r->part[r->n_parts - 1];
    if (p->len + len > p->cap) {
        p->cap = (p->len + len) * 2;
        p->body = realloc(p->body, p->cap);
    }
    memcpy(p->body + p->len, data, len);
    p->len += len;
    return stop_here(r);
}

static int on_end(void *ctx)
{
    parsed *r = ctx;
    if (r->n_parts == 0 || r->part[r->n_parts - 1].ended) {
        r->order_broken = true;
        return 1;
    }
    r->part[r->n_parts - 1].ended = true;
    return stop_here(r);
}

static const web_multipart_callbacks callbacks = {on_begin, on_data, on_end};

static void parsed_clear(parsed *r)
{
    for (size_t i = 0; i < MAX_PARTS; i++) free(r->part[i].body);
    memset(r, 0, sizeof *r);
}

/* Parses BODY fed in pieces that end at each of CUTS (ascending offsets), then finishes. */
static void parse_cut(const char *boundary, const char *body, size_t len, const size_t *cuts, size_t n_cuts,
                      long abort_on_call, parsed *r)
{
    memset(r, 0, sizeof *r);
    r->abort_on_call = abort_on_call;
    web_multipart *mp = web_multipart_new(boundary, &callbacks, r);
    if (!mp) {
        r->rc = -2;
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i <= n_cuts && r->rc == 0; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        r->rc = web_multipart_feed(mp, body + at, to - at);
        at = to;
    }
    if (r->rc == 0) r->rc = web_multipart_finish(mp);
    snprintf(r->error, sizeof r->error, "%s", web_multipart_error(mp));
    web_multipart_free(mp);
}

static void parse_all(const char *boundary, const char *body, size_t len, parsed *r)
{
    parse_cut(boundary, body, len, NULL, 0, 0, r);
}

static void parse_str(const char *boundary, const char *body, parsed *r)
{
    parse_all(boundary, body, strlen(body), r);
}

static bool same_result(const parsed *a, const parsed *b)
{
    if (a->rc != b->rc || a->n_parts != b->n_parts || a->order_broken != b->order_broken ||
        strcmp(a->error, b->error) != 0)
        return false;
    for (size_t i = 0; i < a->n_parts; i++)
        if (a->part[i].has_ct != b->part[i].has_ct || strcmp(a->part[i].ct, b->part[i].ct) != 0 ||
            a->part[i].ended != b->part[i].ended || a->part[i].len != b->part[i].len ||
            (a->part[i].len && memcmp(a->part[i].body, b->part[i].body, a->part[i].len) != 0))
            return false;
    return true;
}

static bool body_is(const parsed *r, size_t i, const char *expected)
{
    size_t n = strlen(expected);
    return i < r->n_parts && r->part[i].len == n && (n == 0 || memcmp(r->part[i].body, expected, n) == 0);
}

static bool ct_is(const parsed *r, size_t i, const char *expected)
{
    return i < r->n_parts && r->part[i].has_ct && strcmp(r->part[i].ct, expected) == 0;
}

#define SIMPLE                                  \
    "--XyZ\r\n"                                 \
    "Content-Type: application/dicom\r\n"       \
    "\r\n"                                      \
    "first body\r\n"                            \
    "--XyZ\r\n"                                 \
    "Content-Type: application/dicom+json\r\n"  \
    "\r\n"                                      \
    "{\"second\":1}\r\n"                        \
    "--XyZ--\r\n"

static void two_parts_come_out_with_their_types_and_bodies(void)
{
    parsed r;
    parse_str("XyZ", SIMPLE, &r);
    CHECK(r.rc == 0, "a simple body parses: %s", r.error);
    CHECK(r.n_parts == 2 && !r.order_broken, "two parts, callbacks in order (%zu)", r.n_parts);
    CHECK(ct_is(&r, 0, "application/dicom") && ct_is(&r, 1, "application/dicom+json"), "each part has its Content-Type");
    CHECK(body_is(&r, 0, "first body") && body_is(&r, 1, "{\"second\":1}"),
          "bodies stop before the CRLF of the delimiter");
    CHECK(r.part[0].ended && r.part[1].ended, "both parts end");
    parsed_clear(&r);

    web_multipart *mp = web_multipart_new("XyZ", &callbacks, &r);
    CHECK(web_multipart_parts(mp) == 0, "no parts before any input");
    web_multipart_feed(mp, SIMPLE, 60);
    CHECK(web_multipart_parts(mp) == 1, "parts counts the parts begun");
    web_multipart_feed(mp, SIMPLE + 60, strlen(SIMPLE) - 60);
    CHECK(web_multipart_parts(mp) == 2 && web_multipart_finish(mp) == 0, "both parts counted");
    CHECK(web_multipart_finish(mp) == 0, "finish may be called again");
    CHECK(web_multipart_feed(mp, "x", 1) == -1, "input after finish is an error");
    web_multipart_free(mp);
    parsed_clear(&r);
}

/* Every delimiter look-alike the scanner has to see through, a delimiter line with
 * transport padding, LF-only headers, empty parts both ways, preamble and epilogue. */
static const char tricky[] =
    "preamble --b0und not at line start\r\n--b0undX still preamble\r\n"
    "--b0und  \t\r\n"
    "Content-Type: application/dicom\r\n"
    "X-Other: a\r\n"
    "\r\n"
    "A\r\n--b0un\r\n--b0undX\r\n--b0und-x\r\n--b0und \tx\r\n--b0und\rX\r\n--b0und\r\r\n--b0und\n"
    "content-type:   text/plain; charset=\"a;b\"  \n"
    "\n"
    "B\r\n--b0und\r\n"
    "Content-Type: x/empty\r\n"
    "\r\n"
    "--b0und\r\n"
    "\r\n"
    "\r\n--b0und--\r\n"
    "epilogue\r\n--b0und\r\n junk";

static void check_tricky(const parsed *r, const char *how)
{
    CHECK(r->rc == 0, "%s: the tricky body parses: %s", how, r->error);
    CHECK(r->n_parts == 4 && !r->order_broken, "%s: four parts (%zu)", how, r->n_parts);
    CHECK(body_is(r, 0, "A\r\n--b0un\r\n--b0undX\r\n--b0und-x\r\n--b0und \tx\r\n--b0und\rX\r\n--b0und\r"),
          "%s: a delimiter followed by anything but padding+CRLF or \"--\" is body data", how);
    CHECK(ct_is(r, 1, "text/plain; charset=\"a;b\"") && body_is(r, 1, "B"), "%s: LF-only headers, value trimmed", how);
    CHECK(ct_is(r, 2, "x/empty") && body_is(r, 2, ""), "%s: a delimiter right after the headers ends an empty part", how);
    CHECK(r->n_parts == 4 && !r->part[3].has_ct && body_is(r, 3, ""), "%s: a part with no headers and no body", how);
}

static void result_does_not_depend_on_chunking(void)
{
    size_t len = sizeof tricky - 1;
    parsed whole, cut;
    parse_all("b0und", tricky, len, &whole);
    check_tricky(&whole, "whole");

    size_t cuts[sizeof tricky];
    for (size_t i = 0; i < len; i++) cuts[i] = i + 1;
    parse_cut("b0und", tricky, len, cuts, len, 0, &cut);
    check_tricky(&cut, "1 byte at a time");
    CHECK(same_result(&whole, &cut), "1 byte at a time gives the same result");
    parsed_clear(&cut);

    int differing = 0, three_differing = 0;
    for (size_t k = 0; k <= len; k++) {
        parse_cut("b0und", tricky, len, &k, 1, 0, &cut);
        if (!same_result(&whole, &cut)) differing++;
        parsed_clear(&cut);
    }
    CHECK(differing == 0, "every 2-chunk split gives the same result (%d differ)", differing);
    for (size_t a = 0; a <= len; a += 3)
        for (size_t b = a; b <= len; b++) {
            size_t two[2] = {a, b};
            parse_cut("b0und", tricky, len, two, 2, 0, &cut);
            if (!same_result(&whole, &cut)) three_differing++;
            parsed_clear(&cut);
        }
    CHECK(three_differing == 0, "3-chunk splits give the same result (%d differ)", three_differing);
    parsed_clear(&whole);

    /* Bodies that fail must fail the same way however they are cut. */
    static const char *failing[] = {
        "--b0und\r\nContent-Type: a/b\r\n\r\nbody\r\n--b0und",
        "--b0und\r\nContent-Type: a/b\r\n\r\nbody\r\n--b0und-",
        "--b0und\r\nno colon\r\n\r\nbody\r\n--b0und--",
        "--b0und\r\nContent-Type: a/b\r\n\r\nbody\r\n--b0und\r\nContent-Ty",
    };
    for (size_t f = 0; f < sizeof failing / sizeof *failing; f++) {
        size_t flen = strlen(failing[f]);
        parse_all("b0und", failing[f], flen, &whole);
        CHECK(whole.rc == -1, "failing body %zu fails", f);
        differing = 0;
        for (size_t k = 0; k <= flen; k++) {
            parse_cut("b0und", failing[f], flen, &k, 1, 0, &cut);
            if (!same_result(&whole, &cut)) differing++;
            parsed_clear(&cut);
        }
        for (size_t i = 0; i < flen; i++) cuts[i] = i + 1;
        parse_cut("b0und", failing[f], flen, cuts, flen, 0, &cut);
        if (!same_result(&whole, &cut)) differing++;
        parsed_clear(&cut);
        CHECK(differing == 0, "failing body %zu fails the same way in every split (%d differ)", f, differing);
        parsed_clear(&whole);
    }
}

/* A boundary of dashes overlaps the "--" of the delimiter and of the closing delimiter. */
static void dash_boundary_is_no_special_case(void)
{
    static const char body[] = "---\r\n\r\n\r\n--\r\n---x\r\n----x\r\n---\r\nContent-Type: a/b\r\n\r\n--\r\n-----";
    size_t len = sizeof body - 1;
    parsed whole, cut;
    parse_all("-", body, len, &whole);
    CHECK(whole.rc == 0 && whole.n_parts == 2, "boundary \"-\" parses: %s", whole.error);
    CHECK(body_is(&whole, 0, "\r\n--\r\n---x\r\n----x"), "dashes that are no delimiter are data");
    CHECK(body_is(&whole, 1, "--") && ct_is(&whole, 1, "a/b"), "second part body is \"--\"");
    int differing = 0;
    for (size_t k = 0; k <= len; k++) {
        parse_cut("-", body, len, &k, 1, 0, &cut);
        if (!same_result(&whole, &cut)) differing++;
        parsed_clear(&cut);
    }
    CHECK(differing == 0, "every 2-chunk split gives the same result (%d differ)", differing);
    parsed_clear(&whole);
}

static void crlf_and_lf_header_lines_are_both_accepted(void)
{
    parsed r;
    parse_str("b", "--b\nContent-Type: a/lf\nX: y\n\nlf body\r\n--b\r\nContent-Type: a/crlf\r\n\r\ncrlf\r\n--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 2, "LF and CRLF header blocks parse: %s", r.error);
    CHECK(ct_is(&r, 0, "a/lf") && body_is(&r, 0, "lf body"), "LF-only headers give the type");
    CHECK(ct_is(&r, 1, "a/crlf") && body_is(&r, 1, "crlf"), "CRLF headers give the type");
    parsed_clear(&r);

    parse_str("b", "--b\r\nContent-Type: a/b\r\nX: 1\n\r\nmixed\r\n--b--", &r);
    CHECK(r.rc == 0 && ct_is(&r, 0, "a/b") && body_is(&r, 0, "mixed"), "mixed line ends parse: %s", r.error);
    parsed_clear(&r);

    parse_str("b", "--b\r\nContent-Type: a/b\r\n\r\nx\n--b\r\nstill body\r\n--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 1 && body_is(&r, 0, "x\n--b\r\nstill body"),
          "in a body only CRLF--boundary delimits, not LF--boundary: %s", r.error);
    parsed_clear(&r);
}

static void part_without_content_type_gets_null(void)
{
    parsed r;
    parse_str("b", "--b\r\nContent-Length: 3\r\n\r\nabc\r\n--b\r\n\r\ndef\r\n--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 2, "parts without Content-Type parse: %s", r.error);
    CHECK(!r.part[0].has_ct && !r.part[1].has_ct, "content_type is NULL when absent");
    CHECK(body_is(&r, 0, "abc") && body_is(&r, 1, "def"), "bodies intact");
    parsed_clear(&r);
}

static void header_names_match_case_insensitively_and_values_are_trimmed(void)
{
    parsed r;
    parse_str("b", "--b\r\nCONTENT-type:\t application/dicom \t\r\n\r\nx\r\n--b--", &r);
    CHECK(r.rc == 0 && ct_is(&r, 0, "application/dicom"), "CONTENT-type found and trimmed: [%s]", r.part[0].ct);
    parsed_clear(&r);

    parse_str("b", "--b\r\nContent-Type : a/b\r\n\r\nx\r\n--b--", &r);
    CHECK(r.rc == 0 && ct_is(&r, 0, "a/b"), "space before the colon tolerated: %s", r.error);
    parsed_clear(&r);

    parse_str("b", "--b\r\nContent-Type:\r\n\r\nx\r\n--b--", &r);
    CHECK(r.rc == 0 && ct_is(&r, 0, ""), "an empty Content-Type is given as \"\", not NULL");
    parsed_clear(&r);

    parse_str("b", "--b\r\nContent-Type: multipart/related;\r\n type=\"application/dicom\"\r\n\r\nx\r\n--b--", &r);
    CHECK(r.rc == 0 && ct_is(&r, 0, "multipart/related;   type=\"application/dicom\""),
          "a folded Content-Type is joined: [%s]", r.part[0].ct);
    parsed_clear(&r);
}

static void quoted_header_values_pass_through_verbatim(void)
{
    parsed r;
    parse_str("b",
              "--b\r\nContent-Type: application/dicom; transfer-syntax=\"1.2.840.10008.1.2.1\"; x=\"a;b,\\\"c\\\"\"\r\n"
              "Content-Disposition: attachment; filename=\"a:b.dcm\"\r\n\r\nx\r\n--b--",
              &r);
    CHECK(r.rc == 0 && ct_is(&r, 0, "application/dicom; transfer-syntax=\"1.2.840.10008.1.2.1\"; x=\"a;b,\\\"c\\\"\""),
          "quoted parameters are left for the media-type parser: [%s] %s", r.part[0].ct, r.error);
    parsed_clear(&r);
}

static void preamble_and_epilogue_are_ignored(void)
{
    parsed r;
    parse_str("b",
              "This is a preamble.\r\n--b is not at line start here: xx--b\r\n"
              "\r\n--b\r\nContent-Type: a/b\r\n\r\nbody\r\n--b--\r\nThis is an epilogue.\r\n--b\r\n\r\nnot a part\r\n--b--",
              &r);
    CHECK(r.rc == 0 && r.n_parts == 1 && body_is(&r, 0, "body"), "preamble and epilogue dropped: %zu %s", r.n_parts,
          r.error);
    parsed_clear(&r);

    parse_str("b", "\r\n--b\r\nContent-Type: a/b\r\n\r\nbody\r\n--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 1 && body_is(&r, 0, "body"), "a leading CRLF before the first delimiter: %s", r.error);
    parsed_clear(&r);

    parse_str("b", "--b\r\nContent-Type: a/b\r\n\r\nbody\r\n--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 1, "no epilogue at all, not even CRLF: %s", r.error);
    parsed_clear(&r);
}

static void missing_closing_delimiter_fails_at_finish(void)
{
    static const struct {
        const char *body, *why;
        size_t parts_ended; /* parts whose closing delimiter line was complete */
    } cases[] = {
        {"--b\r\nContent-Type: a/b\r\n\r\nbody", "body cut short", 0},
        {"--b\r\nContent-Type: a/b\r\n\r\nbody\r\n", "cut in the CRLF", 0},
        {"--b\r\nContent-Type: a/b\r\n\r\nbody\r\n--b", "cut after the boundary", 0},
        {"--b\r\nContent-Type: a/b\r\n\r\nbody\r\n--b-", "cut after one dash", 0},
        {"--b\r\nContent-Type: a/b\r\n\r\nbody\r\n--b\r\n", "cut after a delimiter line", 1},
        {"--b\r\nContent-Type: a/b\r\n", "cut in the headers", 0},
        {"--b", "only a delimiter", 0},
        {"no delimiter at all\r\n", "only a preamble", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        parsed r;
        parse_str("b", cases[i].body, &r);
        CHECK(r.rc == -1 && strstr(r.error, "truncated"), "%s: finish fails as truncated: %d %s", cases[i].why, r.rc,
              r.error);
        size_t ended = 0;
        for (size_t p = 0; p < r.n_parts; p++) ended += r.part[p].ended;
        CHECK(ended == cases[i].parts_ended && !r.order_broken, "%s: a part cut short gets no part_end", cases[i].why);
        parsed_clear(&r);
    }
}

static void headers_over_the_limit_fail(void)
{
    size_t cap = WEB_MULTIPART_MAX_HEADERS + 256;
    char *body = malloc(cap + 64);
    /* A header block of exactly the limit, blank line included, is accepted... */
    size_t n = (size_t)sprintf(body, "--b\r\n");
    size_t block_start = n;
    n += (size_t)sprintf(body + n, "X-Pad: ");
    size_t pad = WEB_MULTIPART_MAX_HEADERS - (n - block_start) - 4;
    memset(body + n, 'a', pad);
    n += pad;
    n += (size_t)sprintf(body + n, "\r\n\r\nx\r\n--b--");
    parsed r;
    parse_all("b", body, n, &r);
    CHECK(r.rc == 0 && body_is(&r, 0, "x"), "a header block of exactly the limit parses: %s", r.error);
    parsed_clear(&r);

    /* ...one byte more is not. */
    memmove(body + block_start + 1, body + block_start, n - block_start);
    body[block_start] = 'Y';
    parse_all("b", body, n + 1, &r);
    CHECK(r.rc == -1 && strstr(r.error, "too long") && r.n_parts == 0, "one byte over the limit fails: %s", r.error);
    parsed_clear(&r);

    /* Endless header lines without a blank line fail as soon as the limit passes. */
    web_multipart *mp = web_multipart_new("b", &callbacks, &r);
    int rc = web_multipart_feed(mp, "--b\r\n", 5);
    memset(body, 'h', cap);
    for (int i = 0; i < 8 && rc == 0; i++) rc = web_multipart_feed(mp, body, cap / 4);
    CHECK(rc == -1 && strstr(web_multipart_error(mp), "too long"), "a header line without end fails: %s",
          web_multipart_error(mp));
    web_multipart_free(mp);
    parsed_clear(&r);
    free(body);
}

static void malformed_headers_fail(void)
{
    static const struct {
        const char *body, *why, *error;
    } cases[] = {
        {"--b\r\nno colon here\r\n\r\nx\r\n--b--", "a line without ':'", "malformed"},
        {"--b\r\n: no name\r\n\r\nx\r\n--b--", "an empty name", "malformed"},
        {"--b\r\nBad Name: x\r\n\r\nx\r\n--b--", "a name with a space", "malformed"},
        {"--b\r\n continued\r\n\r\nx\r\n--b--", "a continuation first", "continuation"},
        {"--b\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\nx\r\n--b--", "two Content-Types", "more than one"},
        {"--b\r\nContent-Type: a/b\rX: c\r\n\r\nx\r\n--b--", "a stray CR", "stray CR"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        parsed r;
        parse_str("b", cases[i].body, &r);
        CHECK(r.rc == -1 && strstr(r.error, cases[i].error) && r.n_parts == 0, "%s fails: %s", cases[i].why, r.error);
        parsed_clear(&r);
    }
    parsed r;
    static const char nul[] = "--b\r\nContent-Type: a/b\0c\r\n\r\nx\r\n--b--";
    parse_all("b", nul, sizeof nul - 1, &r);
    CHECK(r.rc == -1 && strstr(r.error, "NUL"), "a NUL in the headers fails: %s", r.error);
    parsed_clear(&r);
}

static void transport_padding_is_bounded(void)
{
    char body[512];
    parsed r;
    snprintf(body, sizeof body, "--b%64s\r\n\r\nx\r\n--b \t \r\n\r\ny\r\n--b--", "");
    parse_str("b", body, &r);
    CHECK(r.rc == 0 && r.n_parts == 2 && body_is(&r, 1, "y"), "64 bytes of padding are accepted: %s", r.error);
    parsed_clear(&r);
    snprintf(body, sizeof body, "--b%65s\r\n\r\nx\r\n--b--", "");
    parse_str("b", body, &r);
    CHECK(r.rc == -1 && strstr(r.error, "padding"), "65 bytes of padding fail: %s", r.error);
    parsed_clear(&r);
}

/* An empty body is truncated; a body of only the closing delimiter is complete with zero
 * parts (STOW answers it with 204, as the reference). */
static void empty_body_fails_zero_parts_complete(void)
{
    parsed r;
    parse_str("b", "", &r);
    CHECK(r.rc == -1 && r.n_parts == 0 && strstr(r.error, "truncated"), "an empty body fails: %s", r.error);
    parsed_clear(&r);

    parse_str("b", "--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 0, "only a closing delimiter is a complete body of no parts: %s", r.error);
    parsed_clear(&r);

    parse_str("b", "preamble\r\n--b--\r\nepilogue", &r);
    CHECK(r.rc == 0 && r.n_parts == 0, "zero parts with preamble and epilogue is complete: %s", r.error);
    parsed_clear(&r);
}

static void zero_length_parts_are_parts(void)
{
    parsed r;
    parse_str("b", "--b\r\nContent-Type: a/b\r\n\r\n\r\n--b\r\nContent-Type: c/d\r\n\r\n--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 2, "two empty parts: %s", r.error);
    CHECK(body_is(&r, 0, "") && body_is(&r, 1, "") && r.data_calls == 0, "empty parts get no part_data");
    CHECK(r.part[0].ended && r.part[1].ended, "empty parts end");
    parsed_clear(&r);

    parse_str("b", "--b\r\n\r\n--b--", &r);
    CHECK(r.rc == 0 && r.n_parts == 1 && !r.part[0].has_ct && body_is(&r, 0, ""), "no headers, no body: %s", r.error);
    parsed_clear(&r);
}

static void callback_returning_nonzero_aborts(void)
{
    /* SIMPLE's callbacks: begin, data, end, begin, data, end. */
    for (long call = 1; call <= 6; call++) {
        parsed r;
        parse_cut("XyZ", SIMPLE, strlen(SIMPLE), NULL, 0, call, &r);
        CHECK(r.rc == -1 && strcmp(r.error, "aborted") == 0, "callback %ld stops the parse: %d %s", call, r.rc, r.error);
        CHECK(r.calls == call, "no callback after the one that stopped (%ld, %ld)", call, r.calls);
        parsed_clear(&r);
    }
    parsed r = {.abort_on_call = 1};
    web_multipart *mp = web_multipart_new("XyZ", &callbacks, &r);
    CHECK(web_multipart_feed(mp, SIMPLE, 60) == -1, "the feed that aborts returns -1");
    CHECK(web_multipart_feed(mp, SIMPLE + 60, strlen(SIMPLE) - 60) == -1 && r.calls == 1,
          "further input is ignored and fails");
    CHECK(web_multipart_finish(mp) == -1 && strcmp(web_multipart_error(mp), "aborted") == 0, "finish fails, still aborted");
    web_multipart_free(mp);
    parsed_clear(&r);
}

/* RFC 2046 recommends 1 to 70 characters; Orthanc sends 73 and the reference has no
 * limit, so every length a media-type parameter holds (255) works. */
static void boundary_may_be_longer_than_70_characters(void)
{
    char b[257];
    memset(b, 'x', 256);
    b[256] = '\0';
    web_multipart *mp = web_multipart_new(b, &callbacks, NULL);
    CHECK(mp == NULL, "256 characters are more than a parameter holds");
    b[255] = '\0';
    mp = web_multipart_new(b, &callbacks, NULL);
    CHECK(mp != NULL, "255 characters are fine");
    web_multipart_free(mp);
    b[70] = '\0';
    mp = web_multipart_new(b, &callbacks, NULL);
    CHECK(mp != NULL, "70 characters are fine");
    web_multipart_free(mp);

    char orthanc[74], body[512];
    memset(orthanc, 'o', 73);
    orthanc[73] = '\0';
    snprintf(body, sizeof body, "--%s\r\nContent-Type: application/dicom\r\n\r\npart one\r\n--%s\r\n\r\ntwo\r\n--%s--\r\n",
             orthanc, orthanc, orthanc);
    parsed r;
    parse_str(orthanc, body, &r);
    CHECK(r.rc == 0 && r.n_parts == 2 && body_is(&r, 0, "part one") && body_is(&r, 1, "two"),
          "a 73-character boundary (Orthanc's) frames two parts: %s", r.error);
    parsed_clear(&r);
    CHECK(web_multipart_new("", &callbacks, NULL) == NULL, "an empty boundary is refused");
    CHECK(web_multipart_new("a\r\nb", &callbacks, NULL) == NULL, "a boundary with CR/LF is refused");
    web_multipart_free(NULL);

    memset(b, 'y', 255);
    b[255] = '\0';
    char big[700];
    snprintf(big, sizeof big, "--%s\r\n\r\nx\r\n--%s--", b, b);
    parse_str(b, big, &r);
    CHECK(r.rc == 0 && body_is(&r, 0, "x"), "a 255-character boundary works: %s", r.error);
    parsed_clear(&r);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void large_parts_stream_through_intact(void)
{
    const char *boundary = "4f1c6a7e-2b3d-4c5e-8f90-a1b2c3d4e5f6";
    size_t part_len = 10u << 20, chunk = 64u << 10;
    char *p1 = malloc(part_len), *p2 = malloc(part_len);
    for (size_t i = 0; i < part_len; i += 8) {
        uint64_t v = next_random();
        memcpy(p1 + i, &v, 8);
        v = next_random();
        memcpy(p2 + i, &v, 8);
    }
    char head1[128], head2[128];
    size_t h1 = (size_t)snprintf(head1, sizeof head1, "--%s\r\nContent-Type: application/dicom\r\n\r\n", boundary);
    size_t h2 = (size_t)snprintf(head2, sizeof head2, "\r\n--%s\r\nContent-Type: application/dicom\r\n\r\n", boundary);
    /* Near-delimiters and CRs placed across chunk ends make the scanner hold back and
     * replay: a CR as the last byte of every 5th chunk of part 1, a delimiter missing its
     * last 14 bytes across every 3rd chunk end of part 2. */
    for (size_t end = chunk; end < h1 + part_len; end += 5 * chunk) p1[end - 1 - h1] = '\r';
    size_t p2_at = h1 + part_len + h2;
    for (size_t end = (p2_at / chunk + 1) * chunk; end + 64 < p2_at + part_len; end += 3 * chunk)
        memcpy(p2 + (end - 7 - p2_at), "\r\n--4f1c6a7e-2b3d-4c5e-", 23);

    size_t cap = 2 * part_len + 1024, n = 0;
    char *body = malloc(cap);
    memcpy(body + n, head1, h1);
    n += h1;
    memcpy(body + n, p1, part_len);
    n += part_len;
    memcpy(body + n, head2, h2);
    n += h2;
    memcpy(body + n, p2, part_len);
    n += part_len;
    n += (size_t)sprintf(body + n, "\r\n--%s--\r\n", boundary);

    parsed r = {0};
    web_multipart *mp = web_multipart_new(boundary, &callbacks, &r);
    int rc = 0;
    size_t feeds = 0;
    for (size_t at = 0; at < n && rc == 0; at += chunk, feeds++) rc = web_multipart_feed(mp, body + at, n - at < chunk ? n - at : chunk);
    if (rc == 0) rc = web_multipart_finish(mp);
    CHECK(rc == 0 && r.n_parts == 2, "two 10 MB parts parse: %s", web_multipart_error(mp));
    CHECK(r.part[0].len == part_len && memcmp(r.part[0].body, p1, part_len) == 0, "part 1 is byte-identical");
    CHECK(r.n_parts == 2 && r.part[1].len == part_len && memcmp(r.part[1].body, p2, part_len) == 0,
          "part 2 (with near-delimiters) is byte-identical");
    CHECK(r.data_calls <= feeds + feeds / 2, "few part_data calls: %zu for %zu feeds", r.data_calls, feeds);
    web_multipart_free(mp);
    parsed_clear(&r);
    free(body);
    free(p1);
    free(p2);
}

int main(void)
{
    two_parts_come_out_with_their_types_and_bodies();
    result_does_not_depend_on_chunking();
    dash_boundary_is_no_special_case();
    crlf_and_lf_header_lines_are_both_accepted();
    part_without_content_type_gets_null();
    header_names_match_case_insensitively_and_values_are_trimmed();
    quoted_header_values_pass_through_verbatim();
    preamble_and_epilogue_are_ignored();
    missing_closing_delimiter_fails_at_finish();
    headers_over_the_limit_fail();
    malformed_headers_fail();
    transport_padding_is_bounded();
    empty_body_fails_zero_parts_complete();
    zero_length_parts_are_parts();
    callback_returning_nonzero_aborts();
    boundary_may_be_longer_than_70_characters();
    large_parts_stream_through_intact();
    return test_summary();
}
