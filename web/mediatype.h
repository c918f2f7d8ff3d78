/* mediatype.h — parsing of HTTP media types (Content-Type) and Accept headers, as the
 * DICOMweb routes need them: type/subtype with parameters (quoted or not, case-insensitive
 * names), and Accept lists with q-values. Pure functions; thread-safe. */
#ifndef DICOMFS_WEB_MEDIATYPE_H
#define DICOMFS_WEB_MEDIATYPE_H

#include <stdbool.h>
#include <stddef.h>

#define WEB_MT_MAX_PARAMS 8

typedef struct {
    char type[128];          /* "multipart/related", lower-cased */
    struct {
        char name[64];       /* lower-cased */
        char value[256];     /* unquoted, backslash escapes resolved, case kept */
    } params[WEB_MT_MAX_PARAMS];
    size_t n_params;
    double q;                /* 1.0 unless a q parameter says otherwise (Accept) */
} web_media_type;

/* Parses one media type ("multipart/related; type=\"application/dicom\"; boundary=abc").
 * 0 on success, -1 when it is not a media type (no '/', bad quoting, too long).
 * STRICT: parameter values are RFC 9110 tokens or quoted-strings only, as the reference
 * service parses them; otherwise an unquoted value may hold any visible character but
 * ';', ',' and '"' (clients send "type=application/octet-stream" unquoted). */
int web_media_type_parse(const char *text, bool strict, web_media_type *out);

/* The value of parameter NAME (case-insensitive), or NULL. */
const char *web_media_type_param(const web_media_type *mt, const char *name);

/* Splits an Accept header at top-level commas (not inside quotes) and parses each
 * entry into OUT (at most MAX); returns how many. STRICT: -1 when any entry is
 * malformed (an invalid q such as "q=abc" included); otherwise malformed entries are
 * skipped, so one odd entry does not spoil a list that names an acceptable type. The q parameter goes to .q, not to params.
 * Entries keep their order; use q to rank them. A web_media_type is ~2.7 KB: keep
 * lists short on the stack. */
int web_accept_parse(const char *header, bool strict, web_media_type *out, size_t max);

#endif
