/* stow.c — STOW-RS: POST /studies[/{study}] with multipart/related parts of
 * application/dicom (or one bare application/dicom body).
 *
 * Each part streams from the network into its own store upload (a temp file in the
 * archive) and is parsed when it ends; nothing is committed until the whole body has
 * arrived intact. Then all parts are committed as one group (shared syncs) and the
 * response lists each part's result as the reference does. A truncated or malformed
 * body stores nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include <pthread.h>

#include "dcm.h"
#include "internal.h"
#include "mediatype.h"
#include "multipart.h"

/* Parts of one request: each is held (a few KB) until the whole body has arrived, so
 * a body of many tiny parts must not grow the server without end. */
#define MAX_PARTS 10000

typedef struct {
    web_request *rq;
    web_multipart *mp;      /* NULL for a single application/dicom body */
    char root_type[128];    /* the multipart type parameter, for parts without a Content-Type */
    bool xml;               /* answer in DICOM XML (PS3.19 native model), not JSON */
    store_ingest_opts opts;
    store_upload *up;       /* the part being received */
    store_item **items;     /* in part order; a slot is NULL while its part is parsed */
    size_t n_items, cap;
    pthread_mutex_t lock;   /* items and parsing, shared with the store's parse threads */
    pthread_cond_t parsed;
    size_t parsing;         /* parts handed to store_upload_finish_async, not back yet */
} stow_state;

typedef struct {
    stow_state *s;
    size_t slot;
} part_slot;

/* A full disk is the archive's state, not the instance's fault: the request gets 507 as
 * a whole (nothing of it is stored), with this text. */
#define FULL "The archive's disk is full (no space left on device): nothing of this request was stored."

static void reject(web_request *rq, int status, const char *fmt, const char *arg)
{
    if (rq->status) return;
    rq->status = status;
    snprintf(rq->msg, sizeof rq->msg, fmt, arg);
}

static int begin_upload(stow_state *s)
{
    if (s->n_items >= MAX_PARTS) {
        reject(s->rq, MHD_HTTP_CONTENT_TOO_LARGE, "A request may store at most %s instances; send the rest in another.",
               "10,000");
        return -1;
    }
    store_err err = {0};
    s->up = store_upload_begin(s->rq->srv->store, &err);
    if (!s->up) {
        reject(s->rq, (int)web_http_status(err.status), "%s", err.status == STORE_ENOSPC ? FULL : err.msg);
        return -1;
    }
    return 0;
}

static void on_parsed(store_item *item, void *ctx)
{
    part_slot *p = ctx;
    stow_state *s = p->s;
    pthread_mutex_lock(&s->lock);
    s->items[p->slot] = item;
    if (--s->parsing == 0) pthread_cond_signal(&s->parsed);
    pthread_mutex_unlock(&s->lock);
    free(p);
}

/* A part is parsed on the store's threads while the next ones arrive (every core works
 * on one request); the commit waits for all of them (wait_parsed). */
static int end_upload(stow_state *s)
{
    if (!s->up) return 0;
    part_slot *p = malloc(sizeof *p);
    if (!p) abort();
    pthread_mutex_lock(&s->lock);
    if (s->n_items == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->items = realloc(s->items, s->cap * sizeof *s->items);
        if (!s->items) abort();
    }
    *p = (part_slot){s, s->n_items};
    s->items[s->n_items++] = NULL;
    s->parsing++;
    pthread_mutex_unlock(&s->lock);
    store_upload *up = s->up;
    s->up = NULL;
    store_upload_finish_async(up, &s->opts, on_parsed, p);
    return 0;
}

static void wait_parsed(stow_state *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->parsing > 0) pthread_cond_wait(&s->parsed, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

static int on_part_begin(void *ctx, const char *content_type)
{
    stow_state *s = ctx;
    /* Strict, as the reference: only the first part may go without a Content-Type (it
     * takes the root type), and a part's type must be exactly application/dicom, without
     * parameters. Otherwise any part without one takes the root type, and parameters
     * (PS3.18's "application/dicom; transfer-syntax=...") are allowed. */
    bool strict = s->rq->srv->strict;
    const char *type = content_type ? content_type : !strict || (s->n_items == 0 && !s->up) ? s->root_type : "";
    web_media_type mt;
    bool dicom = strict ? strcasecmp(type, "application/dicom") == 0
                        : web_media_type_parse(type, false, &mt) == 0 && strcmp(mt.type, "application/dicom") == 0;
    if (!dicom) {
        reject(s->rq, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
               "A part has the media type '%s'; every part must be application/dicom.", type[0] ? type : "(none)");
        return -1;
    }
    return begin_upload(s);
}

static int on_part_data(void *ctx, const char *data, size_t len)
{
    stow_state *s = ctx;
    store_status st = store_upload_write(s->up, data, len);
    if (st != STORE_OK) {
        reject(s->rq, (int)web_http_status(st), "%s", st == STORE_ENOSPC ? FULL : "The archive could not write the upload to its disk.");
        return -1;
    }
    return 0;
}

static int on_part_end(void *ctx) { return end_upload(ctx); }

static const web_multipart_callbacks callbacks = {on_part_begin, on_part_data, on_part_end};

void stow_begin(web_request *rq)
{
    const route *r = &rq->route;
    /* PS3.18 answers STOW in DICOM JSON or XML (dcm4che's stowrs asks for XML); the
     * reference only in JSON. */
    static const char *const answers[] = {"application/dicom+json", "application/dicom+xml"};
    int answer = web_accept_choose(rq, answers, rq->srv->strict ? 1 : 2);
    if (answer < 0)
        return reject(rq, MHD_HTTP_NOT_ACCEPTABLE, "%s",
                      rq->srv->strict ? "The request headers are not acceptable: STOW-RS answers application/dicom+json."
                                      : "The request headers are not acceptable: STOW-RS answers application/dicom+json "
                                        "or application/dicom+xml.");
    if (r->bad_uid) return reject(rq, MHD_HTTP_BAD_REQUEST, "The study UID '%s' in the URL is not a valid UID.", r->study);
    const char *ct = web_header(rq, MHD_HTTP_HEADER_CONTENT_TYPE);
    web_media_type mt;
    if (!ct || web_media_type_parse(ct, rq->srv->strict, &mt) != 0)
        return reject(rq, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "The content type '%s' is not supported; send "
                      "multipart/related; type=\"application/dicom\" or application/dicom.", ct ? ct : "(none)");
    stow_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->rq = rq;
    s->xml = answer == 1;
    s->opts.api_version = r->version;
    s->opts.expected_study_uid = r->study[0] ? r->study : NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->parsed, NULL);
    rq->stow = s;
    if (strcmp(mt.type, "application/dicom") == 0) {
        begin_upload(s);
        return;
    }
    if (strcmp(mt.type, "multipart/related") != 0)
        return reject(rq, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "The content type '%s' is not supported; send "
                      "multipart/related; type=\"application/dicom\" or application/dicom.", mt.type);
    if (web_media_type_param(&mt, "start"))
        return reject(rq, MHD_HTTP_BAD_REQUEST, "%s", "The multipart 'start' parameter is not supported.");
    const char *type = web_media_type_param(&mt, "type");
    /* Without a type parameter a part without a Content-Type is application/dicom: STOW
     * carries nothing else (strict: refused, as the reference). */
    snprintf(s->root_type, sizeof s->root_type, "%s", type ? type : rq->srv->strict ? "" : "application/dicom");
    const char *boundary = web_media_type_param(&mt, "boundary");
    if (!boundary || !(s->mp = web_multipart_new(boundary, &callbacks, s)))
        return reject(rq, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "%s",
                      "The multipart/related content type needs a boundary parameter (1 to 255 characters, no CR or LF).");
}

void stow_feed(web_request *rq, const char *data, size_t len)
{
    stow_state *s = rq->stow;
    if (!s->mp) {
        store_status st = s->up ? store_upload_write(s->up, data, len) : STORE_OK;
        if (st != STORE_OK)
            reject(rq, (int)web_http_status(st), "%s", st == STORE_ENOSPC ? FULL : "The archive could not write the upload to its disk.");
        return;
    }
    if (web_multipart_feed(s->mp, data, len) != 0)
        reject(rq, MHD_HTTP_BAD_REQUEST, "The multipart body is malformed: %s", web_multipart_error(s->mp));
}

/* ---- The response --------------------------------------------------------------- */

static json_t *element(const char *vr, json_t *value)
{
    json_t *e = json_pack("{s:s}", "vr", vr);
    json_object_set_new(e, "Value", value ? json_pack("[o]", value) : json_array());
    return e;
}

static json_t *failed_attributes(const store_ingest_result *res)
{
    json_t *items = json_array();
    if (res->failed_attributes) {
        char *copy = strdup(res->failed_attributes), *save = NULL;
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            json_t *item = json_object();
            json_object_set_new(item, "00000902", element("LO", json_string(line)));
            json_array_append_new(items, item);
        }
        free(copy);
    }
    return json_pack("{s:s, s:o}", "vr", "SQ", "Value", items);
}

static json_t *sop_item(const store_ingest_result *res)
{
    json_t *item = json_object();
    if (res->sop_class_uid[0]) json_object_set_new(item, "00081150", element("UI", json_string(res->sop_class_uid)));
    if (res->sop_instance_uid[0]) json_object_set_new(item, "00081155", element("UI", json_string(res->sop_instance_uid)));
    return item;
}

static enum MHD_Result respond(stow_state *s)
{
    web_request *rq = s->rq;
    char base[300];
    web_base_url(rq, base, sizeof base);
    json_t *stored = json_array(), *failed = json_array();
    bool warnings = false, multiple = false;
    for (size_t i = 0; i < s->n_items; i++) {
        const store_ingest_result *res = store_item_result(s->items[i]);
        json_t *item = sop_item(res);
        if (res->status == STORE_OK) {
            char url[600];
            snprintf(url, sizeof url, "%s/v%d/studies/%s/series/%s/instances/%s", base, rq->route.version, res->study_uid,
                     res->series_uid, res->sop_instance_uid);
            json_object_set_new(item, "00081190", element("UR", json_string(url)));
            if (res->warning_reason) {
                warnings = true;
                json_object_set_new(item, "00081196", element("US", json_integer(res->warning_reason)));
            }
            if (rq->route.version >= 2) json_object_set_new(item, "00741048", failed_attributes(res));
            multiple |= res->multiple_values;
            json_array_append_new(stored, item);
        } else {
            json_object_set_new(item, "00081197", element("US", json_integer(res->failure_reason)));
            if (res->failure_reason == STORE_FAIL_VALIDATION) json_object_set_new(item, "00741048", failed_attributes(res));
            json_array_append_new(failed, item);
        }
    }
    size_t n_ok = json_array_size(stored), n_failed = json_array_size(failed);
    json_t *body = json_object();
    if (rq->route.study[0] && n_ok) {
        char url[400];
        snprintf(url, sizeof url, "%s/v%d/studies/%s", base, rq->route.version, rq->route.study);
        json_object_set_new(body, "00081190", element("UR", json_string(url)));
    }
    if (n_failed) json_object_set_new(body, "00081198", json_pack("{s:s, s:o}", "vr", "SQ", "Value", failed));
    else json_decref(failed);
    if (n_ok) json_object_set_new(body, "00081199", json_pack("{s:s, s:o}", "vr", "SQ", "Value", stored));
    else json_decref(stored);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (s->xml) {
        /* The same dataset, written by DCMTK's XML writer. */
        char why[200];
        char *xml = dcm_json_to_xml(text, why, sizeof why);
        free(text);
        if (!xml) return web_send_text(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "The response could not be written as XML: %s.", why);
        text = xml;
    }
    /* StoreResponseBuilder: 200 all stored (v2: and no warnings), 202 mixed, 409 none. */
    unsigned status = n_ok == 0 ? MHD_HTTP_CONFLICT
                      : n_failed || (warnings && rq->route.version >= 2) ? MHD_HTTP_ACCEPTED
                                                                         : MHD_HTTP_OK;
    rq->resp_bytes = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, s->xml ? "application/dicom+xml" : "application/dicom+json");
    if (multiple) {
        char warn[400];
        snprintf(warn, sizeof warn, "299 %s \"One or more indexed Dicom tag(s) have multiple values, only first value is indexed.\"",
                 base + 7);
        MHD_add_response_header(resp, "Warning", warn);
    }
    return web_send(rq, status, resp);
}

enum MHD_Result stow_finish(web_request *rq)
{
    stow_state *s = rq->stow;
    if (s->mp && web_multipart_finish(s->mp) != 0)
        reject(rq, MHD_HTTP_BAD_REQUEST, "The multipart body is incomplete or malformed: %s", web_multipart_error(s->mp));
    if (!s->mp && s->up && store_upload_size(s->up) == 0) {
        store_upload_abort(s->up);
        s->up = NULL;
    }
    if (!s->mp) end_upload(s);
    wait_parsed(s);
    if (rq->status) return web_send_text(rq, (unsigned)rq->status, "%s", rq->msg);
    if (s->n_items == 0) return web_send_empty(rq, MHD_HTTP_NO_CONTENT);
    store_commit(rq->srv->store, s->items, s->n_items);
    /* Nothing stored because the disk is full: say so for the request (507), not as a
     * per-instance 272 the client would take for a bad instance. */
    size_t n_ok = 0, n_full = 0;
    for (size_t i = 0; i < s->n_items; i++) {
        const store_ingest_result *res = store_item_result(s->items[i]);
        n_ok += res->status == STORE_OK;
        n_full += res->status == STORE_ENOSPC;
    }
    if (n_ok == 0 && n_full > 0) return web_send_text(rq, MHD_HTTP_INSUFFICIENT_STORAGE, "%s", FULL);
    return respond(s);
}

void stow_free(web_request *rq)
{
    stow_state *s = rq->stow;
    if (!s) return;
    store_upload_abort(s->up);
    wait_parsed(s);
    for (size_t i = 0; i < s->n_items; i++) store_item_free(s->items[i]);
    free(s->items);
    web_multipart_free(s->mp);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->parsed);
    free(s);
    rq->stow = NULL;
}
