/* wado.c — WADO-RS: retrieve (study, series, instance), metadata, frames, rendered.
 *
 * Stored bytes go out as they are (from the object files, streamed) unless the client
 * asks for another transfer syntax, which the reference allows only for one instance
 * at a time. Metadata is the JSON precomputed at ingest, with the reference's ETag;
 * frames come from the frame offsets computed at ingest, decoded only when the client
 * wants native pixels of a compressed instance. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "body.h"
#include "dcm.h"
#include "internal.h"
#include "mediatype.h"

#define EXPLICIT_LE "1.2.840.10008.1.2.1"
#define JPEG2000 "1.2.840.10008.1.2.4.90"
#define MAX_TRANSCODE (100ull * 1024 * 1024) /* RetrieveConfiguration.MaxDicomFileSize */
#define MAX_FRAMES 4096

typedef struct {
    bool multipart;
    char ts[65]; /* "*": as stored */
} choice;

/* ---- Accept negotiation (the reference's AcceptHeaderHandler) ----------------------- */

static int by_preference(const void *a, const void *b)
{
    const web_media_type *x = a, *y = b;
    if (x->q != y->q) return x->q > y->q ? -1 : 1;
    const char *tx = web_media_type_param(x, "transfer-syntax"), *ty = web_media_type_param(y, "transfer-syntax");
    bool sx = tx && strcmp(tx, "*") == 0, sy = ty && strcmp(ty, "*") == 0;
    return sx == sy ? 0 : sx ? -1 : 1; /* transfer-syntax=* wins ties */
}

/* FRAMES: the frame routes' media types; SINGLE: whether one part may be asked for. */
static bool negotiate(web_request *rq, bool frames, bool single, choice *out, char *msg, size_t len)
{
    const char *accept = web_header(rq, MHD_HTTP_HEADER_ACCEPT);
    web_media_type list[32];
    bool given = accept && *accept;
    int n = given ? web_accept_parse(accept, rq->srv->strict, list, sizeof list / sizeof list[0]) : 0;
    if (n < 0 || (given && n == 0)) {
        snprintf(msg, len, "The Accept header is malformed.");
        return false;
    }
    if (n == 0) { /* no Accept header: as if it said any type */
        web_media_type_parse("*/*", true, &list[0]);
        n = 1;
    }
    /* Stable sort: insertion keeps the client's order among equals. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && by_preference(&list[j - 1], &list[j]) > 0; j--) {
            web_media_type t = list[j];
            list[j] = list[j - 1];
            list[j - 1] = t;
        }
    const char *part = frames ? "application/octet-stream" : "application/dicom";
    for (int i = 0; i < n; i++) {
        const web_media_type *m = &list[i];
        if (m->q <= 0) continue;
        const char *ts = web_media_type_param(m, "transfer-syntax");
        if (strcmp(m->type, "*/*") == 0) {
            *out = (choice){true, "*"};
            return true;
        }
        bool multipart = strcmp(m->type, "multipart/related") == 0;
        if (multipart) {
            const char *type = web_media_type_param(m, "type");
            if (type && strcasecmp(type, part) != 0) continue;
        } else if (strcmp(m->type, part) != 0 || !single) {
            continue;
        }
        if (!ts) ts = EXPLICIT_LE;
        if (strcmp(ts, "*") != 0 && strcmp(ts, EXPLICIT_LE) != 0 && strcmp(ts, JPEG2000) != 0) continue;
        out->multipart = multipart;
        snprintf(out->ts, sizeof out->ts, "%s", ts);
        return true;
    }
    snprintf(msg, len, "The requested media type or transfer syntax is not acceptable. Ask for %s%s with "
             "transfer-syntax=* (as stored) or " EXPLICIT_LE ".",
             single ? "" : "multipart/related; type=", part);
    return false;
}

/* Transfer syntaxes the reference transcodes from. */
static bool transcodable_from(const char *ts)
{
    static const char *const ok[] = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                                     "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                                     "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(ts, ok[i]) == 0) return true;
    return false;
}

static void new_boundary(char out[40])
{
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) memset(r, 0x5a, sizeof r);
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", r[i]);
}

static void object_path(web_request *rq, const store_instance *in, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", store_dir(rq->srv->store), in->object);
}

static enum MHD_Result uid_error(web_request *rq)
{
    const route *r = &rq->route;
    const char *which = r->sop[0] ? "SOP instance" : r->series[0] ? "series" : "study";
    return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "A %s UID in the URL is not a valid UID.", which);
}

static store_status list_instances(web_request *rq, store_instance **in, size_t *n, store_err *err)
{
    const route *r = &rq->route;
    return store_instances(rq->srv->store, NULL, r->study, r->series[0] ? r->series : NULL, r->sop[0] ? r->sop : NULL,
                           in, n, err);
}

/* ---- Retrieve ------------------------------------------------------------------------ */

static enum MHD_Result retrieve(web_request *rq)
{
    char msg[400];
    choice c;
    bool instance = rq->route.sop[0] != 0;
    if (!negotiate(rq, false, instance, &c, msg, sizeof msg)) return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "%s", msg);
    store_instance *in = NULL;
    size_t n = 0;
    store_err err = {0};
    store_status st = list_instances(rq, &in, &n, &err);
    if (st != STORE_OK) return web_send_text(rq, web_http_status(st), "%s", err.msg);

    bool as_stored = strcmp(c.ts, "*") == 0;
    /* The reference: several instances go out only as stored, even when the syntax asked
     * for happens to be the stored one. Otherwise, as PS3.18 wants, in the syntax asked
     * for (the default of application/dicom is Explicit VR Little Endian, and some clients,
     * dicomweb-client among them, cannot ask for another) as long as what needs
     * transcoding fits the one-instance limit in all: transcoded parts are held in memory. */
    uint64_t to_transcode = 0;
    for (size_t i = 0; i < n && !as_stored; i++)
        if (strcmp(in[i].transfer_syntax, c.ts) != 0) to_transcode += in[i].size;
    if (!as_stored && n > 1 && (rq->srv->strict || to_transcode > MAX_TRANSCODE)) {
        free(in);
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "A study or series with several instances can only be "
                             "retrieved as stored%s; ask for transfer-syntax=* (the requested %s is not available).",
                             rq->srv->strict ? "" : " when more than 100 MB of it would need transcoding", c.ts);
    }
    for (size_t i = 0; i < n && !as_stored; i++) {
        if (strcmp(in[i].transfer_syntax, c.ts) == 0) continue;
        const char *why = in[i].size > MAX_TRANSCODE ? "the instance is larger than 100 MB, the limit for transcoding"
                          : !transcodable_from(in[i].transfer_syntax) ? "the stored transfer syntax cannot be transcoded"
                          : !dcm_can_write(c.ts) ? "the archive cannot write the requested transfer syntax"
                                                 : NULL;
        if (why) {
            free(in);
            return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "The requested transfer syntax %s is not available: %s.", c.ts, why);
        }
    }
    if (!c.multipart && (as_stored || strcmp(in[0].transfer_syntax, c.ts) == 0)) {
        /* One stored file as it is: let the kernel send it (sendfile). */
        int fd = store_open_object(rq->srv->store, &in[0]);
        /* A file whose size is not the row's was damaged behind the archive's back:
         * sendfile would stop short and leave the client waiting for the rest. */
        struct stat sb;
        if (fd >= 0 && (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != in[0].size)) {
            close(fd);
            free(in);
            return web_send_text(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "The instance's object file is damaged (its size "
                                 "is not the stored size); `dicomfs fsck` reports it.");
        }
        struct MHD_Response *resp = fd < 0 ? NULL : MHD_create_response_from_fd64(in[0].size, fd);
        rq->resp_bytes = in[0].size;
        if (!resp) {
            if (fd >= 0) close(fd);
            free(in);
            return web_send_text(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "An object file of the archive cannot be read.");
        }
        char ctype[200];
        snprintf(ctype, sizeof ctype, "application/dicom; transfer-syntax=%s", in[0].transfer_syntax);
        free(in);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
        return web_send(rq, MHD_HTTP_OK, resp);
    }
    web_body *body = web_body_new();
    char boundary[40], header[300];
    new_boundary(boundary);
    for (size_t i = 0; i < n; i++) {
        const char *ts = as_stored ? in[i].transfer_syntax : c.ts;
        if (c.multipart) {
            snprintf(header, sizeof header, "%s--%s\r\nContent-Type: application/dicom; transfer-syntax=%s\r\n\r\n",
                     i ? "\r\n" : "", boundary, ts);
            web_body_text(body, header);
        }
        char path[4200], why[300];
        object_path(rq, &in[i], path, sizeof path);
        if (as_stored || strcmp(in[i].transfer_syntax, c.ts) == 0) {
            if (access(path, R_OK) != 0) {
                web_body_free(body);
                free(in);
                return web_send_text(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "An object file of the archive cannot be read.");
            }
            web_body_file(body, path, 0, in[i].size);
            continue;
        }
        unsigned char *data = NULL;
        size_t len = 0;
        if (dcm_transcode(path, c.ts, &data, &len, why, sizeof why) != 0) {
            web_body_free(body);
            free(in);
            return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "The instance cannot be transcoded: %s.", why);
        }
        web_body_take(body, data, len);
    }
    if (c.multipart) {
        snprintf(header, sizeof header, "\r\n--%s--\r\n", boundary);
        web_body_text(body, header);
    }
    char ctype[200];
    if (c.multipart)
        snprintf(ctype, sizeof ctype, "multipart/related; boundary=%s", boundary);
    else
        snprintf(ctype, sizeof ctype, "application/dicom; transfer-syntax=%s", as_stored ? in[0].transfer_syntax : c.ts);
    free(in);
    rq->resp_bytes = web_body_size(body);
    struct MHD_Response *resp = web_body_response(body);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return web_send(rq, MHD_HTTP_OK, resp);
}

/* ---- Metadata ------------------------------------------------------------------------ */

static bool accepts_gzip(web_request *rq)
{
    const char *enc = web_header(rq, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    return enc && strstr(enc, "gzip") && !strstr(enc, "gzip;q=0");
}

/* gzip of DATA in one deflate pass; NULL when zlib fails (then send it plain). */
static char *gzip(const char *data, size_t len, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&z, len);
    char *out = malloc(cap);
    if (!out) abort();
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

static enum MHD_Result metadata(web_request *rq)
{
    if (!web_accepts(rq, "application/dicom+json"))
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE,
                             "The request headers are not acceptable: metadata is application/dicom+json.");
    const route *r = &rq->route;
    char *json = NULL, etag[64];
    size_t len = 0;
    store_err err = {0};
    store_status st = store_metadata(rq->srv->store, NULL, r->study, r->series[0] ? r->series : NULL,
                                     r->sop[0] ? r->sop : NULL, &json, &len, etag, &err);
    if (st != STORE_OK) return web_send_text(rq, web_http_status(st), "%s", err.msg);
    const char *inm = web_header(rq, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && strcasecmp(inm, etag) == 0) {
        free(json);
        return web_send_empty(rq, MHD_HTTP_NOT_MODIFIED);
    }
    size_t zlen = 0;
    char *z = accepts_gzip(rq) ? gzip(json, len, &zlen) : NULL;
    struct MHD_Response *resp;
    if (z) {
        free(json);
        resp = MHD_create_response_from_buffer(zlen, z, MHD_RESPMEM_MUST_FREE);
        rq->resp_bytes = zlen;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    } else {
        resp = MHD_create_response_from_buffer(len, json, MHD_RESPMEM_MUST_FREE);
        rq->resp_bytes = len;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/dicom+json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    return web_send(rq, MHD_HTTP_OK, resp);
}

/* ---- Frames -------------------------------------------------------------------------- */

/* "1,3,5" -> numbers (1-based, each > 0); false on anything else. */
static bool parse_frames(const char *text, uint32_t *out, size_t *n)
{
    *n = 0;
    const char *p = text;
    while (*p) {
        if (!isdigit((unsigned char)*p) || *n == MAX_FRAMES) return false;
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (v == 0 || v > UINT32_MAX) return false;
        out[(*n)++] = (uint32_t)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return false;
    }
    return *n > 0;
}

/* Native little-endian pixels are the same bytes in implicit and explicit VR files. */
static bool native_le(const char *ts)
{
    return strcmp(ts, "1.2.840.10008.1.2") == 0 || strcmp(ts, EXPLICIT_LE) == 0;
}

static enum MHD_Result frames(web_request *rq)
{
    uint32_t *list = malloc(MAX_FRAMES * sizeof *list);
    size_t count = 0;
    if (!list) abort();
    if (!parse_frames(rq->route.frames, list, &count)) {
        free(list);
        return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "The frame list '%s' is invalid: frames are numbers from 1, separated by commas.",
                             rq->route.frames);
    }
    char msg[600];
    choice c;
    if (!negotiate(rq, true, true, &c, msg, sizeof msg)) {
        free(list);
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "%s", msg);
    }
    if (!c.multipart && count > 1) {
        free(list);
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "A single-part response holds one frame; ask for multipart/related; "
                             "type=\"application/octet-stream\" to get %zu frames.", count);
    }
    if (strcmp(c.ts, JPEG2000) == 0) {
        free(list);
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "The archive cannot encode JPEG 2000 frames.");
    }
    store_instance *in = NULL;
    size_t n = 0;
    store_err err = {0};
    store_status st = list_instances(rq, &in, &n, &err);
    if (st != STORE_OK) {
        free(list);
        return web_send_text(rq, web_http_status(st), "%s", err.msg);
    }
    for (size_t i = 0; i < count; i++)
        if (list[i] > in[0].frames) {
            unsigned f = list[i], total = in[0].frames;
            free(list);
            free(in);
            return web_send_text(rq, MHD_HTTP_NOT_FOUND, "Frame %u does not exist; the instance has %u frame(s).", f, total);
        }
    bool as_stored = strcmp(c.ts, "*") == 0 || strcmp(c.ts, in[0].transfer_syntax) == 0 ||
                     (native_le(in[0].transfer_syntax) && strcmp(c.ts, EXPLICIT_LE) == 0);
    char stored_ts[STORE_UID_MAX + 1]; /* a copy: `in` is freed before the headers are written */
    snprintf(stored_ts, sizeof stored_ts, "%s", in[0].transfer_syntax);
    const char *ts = strcmp(c.ts, "*") == 0 ? stored_ts : c.ts;
    web_body *body = web_body_new();
    char boundary[40], header[300], path[4200];
    new_boundary(boundary);
    object_path(rq, &in[0], path, sizeof path);
    bool unreadable = access(path, R_OK) != 0, failed = unreadable;
    unsigned fail_status = MHD_HTTP_SERVICE_UNAVAILABLE;
    for (size_t i = 0; i < count && !failed; i++) {
        store_range *rg = NULL;
        size_t nr = 0;
        st = as_stored ? store_frame_ranges(rq->srv->store, &in[0], list[i], &rg, &nr, &err) : STORE_EUNSUPPORTED;
        const char *part_ts = ts;
        unsigned char *decoded = NULL;
        size_t dlen = 0;
        if (st == STORE_EUNSUPPORTED) { /* decode: compressed source, or offsets unknown */
            char why[300];
            if (dcm_frame_native(path, list[i] - 1, &decoded, &dlen, why, sizeof why) != 0) {
                snprintf(msg, sizeof msg, "Frame %u cannot be decoded: %s.", list[i], why);
                fail_status = MHD_HTTP_NOT_ACCEPTABLE;
                failed = true;
                break;
            }
            part_ts = EXPLICIT_LE;
        } else if (st != STORE_OK) {
            snprintf(msg, sizeof msg, "%s", err.msg);
            fail_status = web_http_status(st);
            failed = true;
            break;
        }
        if (c.multipart) {
            snprintf(header, sizeof header, "%s--%s\r\nContent-Type: application/octet-stream; transfer-syntax=%s\r\n\r\n",
                     i ? "\r\n" : "", boundary, part_ts);
            web_body_text(body, header);
        } else {
            ts = part_ts;
        }
        if (decoded) web_body_take(body, decoded, dlen);
        for (size_t k = 0; k < nr; k++) web_body_file(body, path, rg[k].offset, rg[k].length);
        free(rg);
    }
    free(list);
    free(in);
    if (failed) {
        web_body_free(body);
        return web_send_text(rq, fail_status, "%s", unreadable ? "An object file of the archive cannot be read." : msg);
    }
    char ctype[200];
    if (c.multipart) {
        snprintf(header, sizeof header, "\r\n--%s--\r\n", boundary);
        web_body_text(body, header);
        snprintf(ctype, sizeof ctype, "multipart/related; boundary=%s", boundary);
    } else {
        snprintf(ctype, sizeof ctype, "application/octet-stream; transfer-syntax=%s", ts);
    }
    rq->resp_bytes = web_body_size(body);
    struct MHD_Response *resp = web_body_response(body);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return web_send(rq, MHD_HTTP_OK, resp);
}

/* ---- Rendered ------------------------------------------------------------------------ */

/* JPEG or PNG? Strict, as the reference: exactly one media type (or none: JPEG), which
 * must be image/jpeg, image/png or a wildcard. Otherwise the usual negotiation, so that
 * a browser's <img> Accept list (image/avif, image/webp, wildcards with q=0.8) works. */
static bool rendered_type(web_request *rq, bool *png)
{
    static const char *const images[] = {"image/jpeg", "image/png"};
    if (!rq->srv->strict) {
        int pick = web_accept_choose(rq, images, 2);
        *png = pick == 1;
        return pick >= 0;
    }
    const char *accept = web_header(rq, MHD_HTTP_HEADER_ACCEPT);
    web_media_type list[2];
    int n = accept && *accept ? web_accept_parse(accept, true, list, 2) : 0;
    if (n < 0 || n > 1) return false;
    *png = n == 1 && strcmp(list[0].type, "image/png") == 0;
    return n == 0 || *png || strcmp(list[0].type, "image/jpeg") == 0 || strcmp(list[0].type, "*/*") == 0 ||
           strcmp(list[0].type, "image/*") == 0;
}

static enum MHD_Result rendered(web_request *rq)
{
    bool png;
    if (!rendered_type(rq, &png))
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "%s",
                             rq->srv->strict ? "Rendered images take exactly one media type in Accept: image/jpeg or image/png."
                                             : "The Accept header allows neither image/jpeg nor image/png.");
    int quality = 100;
    const char *q = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "quality");
    if (q) {
        char *end;
        long v = strtol(q, &end, 10);
        if (!*q || *end || v < 1 || v > 100)
            return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "quality must be a number from 1 to 100, not '%s'.", q);
        quality = (int)v;
    }
    uint32_t frame = 1;
    if (rq->route.frames[0]) {
        char *end;
        unsigned long v = strtoul(rq->route.frames, &end, 10);
        if (!isdigit((unsigned char)rq->route.frames[0]) || *end || v == 0 || v > UINT32_MAX)
            return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "The frame '%s' is invalid: a frame is a number from 1.", rq->route.frames);
        frame = (uint32_t)v;
    }
    store_instance *in = NULL;
    size_t ni = 0;
    store_err err = {0};
    store_status st = list_instances(rq, &in, &ni, &err);
    if (st != STORE_OK) return web_send_text(rq, web_http_status(st), "%s", err.msg);
    store_instance inst = in[0];
    free(in);
    if (inst.frames == 0) return web_send_text(rq, MHD_HTTP_NOT_FOUND, "The instance has no pixel data to render.");
    if (frame > inst.frames)
        return web_send_text(rq, MHD_HTTP_NOT_FOUND, "Frame %u does not exist; the instance has %u frame(s).", frame, inst.frames);
    if (inst.size > MAX_TRANSCODE)
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "The instance is larger than 100 MB, the limit for rendering.");
    char path[4200], why[300];
    object_path(rq, &inst, path, sizeof path);
    unsigned char *img = NULL;
    size_t len = 0;
    int rc = dcm_render(path, frame - 1, png, quality, &img, &len, why, sizeof why);
    if (rc == 1) return web_send_text(rq, MHD_HTTP_NOT_FOUND, "The instance has no pixel data to render.");
    if (rc != 0) return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE, "The instance cannot be rendered: %s.", why);
    return web_send_body(rq, MHD_HTTP_OK, (char *)img, len, png ? "image/png" : "image/jpeg");
}

enum MHD_Result wado_handle(web_request *rq)
{
    if (rq->route.bad_uid) return uid_error(rq);
    switch (rq->route.kind) {
    case ROUTE_RETRIEVE: return retrieve(rq);
    case ROUTE_METADATA: return metadata(rq);
    case ROUTE_FRAMES: return frames(rq);
    default: return rendered(rq);
    }
}
