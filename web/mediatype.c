/* mediatype.c — media types and Accept lists (see mediatype.h), after RFC 9110:
 *   media-type = type "/" subtype *( OWS ";" OWS parameter )
 *   parameter  = token "=" ( token / quoted-string )
 * Leniencies, because clients differ: empty parameters (";;", a trailing ';') are
 * skipped and whitespace around '=' is allowed. Unless STRICT, an unquoted value may
 * also hold characters a token may not ('/', ':', '=', ...: OHIF's
 * "type=application/octet-stream"), up to the next ';' or whitespace; STRICT refuses
 * them as the reference's parser does. The q parameter is not kept in params:
 * it is validated (qvalue = "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3"0" ]) and stored in q. */
#include "mediatype.h"

#include <ctype.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 tchar. */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The text being parsed: [p, end). */
typedef struct {
    const char *p, *end;
} cursor;

static void skip_ows(cursor *c)
{
    while (c->p < c->end && is_ows(*c->p)) c->p++;
}

/* Copies a token, lower-cased, into OUT (SIZE bytes with the NUL). -1 when there is no
 * token or it does not fit. */
static int take_token(cursor *c, char *out, size_t size)
{
    size_t n = 0;
    while (c->p < c->end && is_tchar(*c->p)) {
        if (n + 1 >= size) return -1;
        out[n++] = (char)tolower((unsigned char)*c->p++);
    }
    out[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* A character of an unquoted value when not strict: visible ASCII but the separators
 * that end a parameter (';', and ',' which splits Accept lists) and the quote. */
static bool is_loose_char(char c)
{
    return c > 0x20 && c < 0x7f && c != ';' && c != ',' && c != '"';
}

/* A parameter value: a token (case kept) or a quoted-string with its quoted-pairs
 * resolved. -1 on bad quoting, control characters or when it does not fit. */
static int take_value(cursor *c, bool strict, char *out, size_t size)
{
    size_t n = 0;
    if (c->p < c->end && *c->p == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->end) return -1; /* unterminated */
            unsigned char ch = (unsigned char)*c->p++;
            if (ch == '"') break;
            if (ch == '\\') {
                if (c->p >= c->end) return -1;
                ch = (unsigned char)*c->p++;
            }
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return -1;
            if (n + 1 >= size) return -1;
            out[n++] = (char)ch;
        }
        out[n] = '\0';
        return 0;
    }
    while (c->p < c->end && (strict ? is_tchar(*c->p) : is_loose_char(*c->p))) {
        if (n + 1 >= size) return -1;
        out[n++] = *c->p++;
    }
    out[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* RFC 9110 qvalue; -1 when VALUE is not one. */
static int parse_qvalue(const char *value, double *q)
{
    char first = value[0];
    if (first != '0' && first != '1') return -1;
    double result = first - '0', scale = 0.1;
    const char *p = value + 1;
    if (*p == '.') {
        p++;
        for (int digits = 0; *p; digits++, p++) {
            if (digits == 3 || !isdigit((unsigned char)*p)) return -1;
            if (first == '1' && *p != '0') return -1;
            result += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p) return -1;
    *q = result;
    return 0;
}

/* Parses the media type in [text, end). */
static int parse_span(const char *text, const char *end, bool strict, web_media_type *out)
{
    memset(out, 0, sizeof *out);
    out->q = 1.0;
    cursor c = {text, end};
    skip_ows(&c);

    /* type "/" subtype, both tokens; "*" as type only in "*" "/" "*". */
    char subtype[sizeof out->type];
    if (take_token(&c, out->type, sizeof out->type) != 0) return -1;
    if (c.p >= c.end || *c.p != '/') return -1;
    c.p++;
    if (take_token(&c, subtype, sizeof subtype) != 0) return -1;
    if (strcmp(out->type, "*") == 0 && strcmp(subtype, "*") != 0) return -1;
    size_t type_len = strlen(out->type), subtype_len = strlen(subtype);
    if (type_len + 1 + subtype_len >= sizeof out->type) return -1;
    out->type[type_len] = '/';
    memcpy(out->type + type_len + 1, subtype, subtype_len + 1);

    for (;;) {
        skip_ows(&c);
        if (c.p >= c.end) return 0;
        if (*c.p != ';') return -1;
        c.p++;
        skip_ows(&c);
        if (c.p >= c.end || *c.p == ';') continue; /* empty parameter */

        char name[sizeof out->params[0].name], value[sizeof out->params[0].value];
        if (take_token(&c, name, sizeof name) != 0) return -1;
        skip_ows(&c);
        if (c.p >= c.end || *c.p != '=') return -1;
        c.p++;
        skip_ows(&c);
        if (take_value(&c, strict, value, sizeof value) != 0) return -1;

        if (strcmp(name, "q") == 0) {
            if (parse_qvalue(value, &out->q) != 0) return -1;
            continue;
        }
        if (out->n_params == WEB_MT_MAX_PARAMS) return -1;
        memcpy(out->params[out->n_params].name, name, sizeof name);
        memcpy(out->params[out->n_params].value, value, sizeof value);
        out->n_params++;
    }
}

int web_media_type_parse(const char *text, bool strict, web_media_type *out)
{
    if (!text || !out) return -1;
    return parse_span(text, text + strlen(text), strict, out);
}

const char *web_media_type_param(const web_media_type *mt, const char *name)
{
    if (!mt || !name) return NULL;
    for (size_t i = 0; i < mt->n_params && i < WEB_MT_MAX_PARAMS; i++)
        if (strcasecmp(mt->params[i].name, name) == 0) return mt->params[i].value;
    return NULL;
}

/* The end of the Accept entry starting at P: the next comma outside a quoted-string. */
static const char *entry_end(const char *p)
{
    bool quoted = false;
    for (; *p; p++) {
        if (quoted && *p == '\\' && p[1]) p++;
        else if (*p == '"') quoted = !quoted;
        else if (*p == ',' && !quoted) break;
    }
    return p;
}

int web_accept_parse(const char *header, bool strict, web_media_type *out, size_t max)
{
    if (!header) return -1;
    size_t count = 0;
    web_media_type extra; /* entries past MAX are still checked, then dropped */
    for (const char *p = header;;) {
        const char *end = entry_end(p);
        const char *q = p;
        while (q < end && is_ows(*q)) q++;
        if (q < end) { /* empty list elements are allowed (RFC 9110 §5.6.1) */
            web_media_type *slot = out && count < max ? &out[count] : &extra;
            if (parse_span(q, end, strict, slot) != 0) {
                if (strict) return -1;
            } else if (slot != &extra) {
                count++;
            }
        }
        if (!*end) break;
        p = end + 1;
    }
    return count > INT_MAX ? INT_MAX : (int)count;
}
