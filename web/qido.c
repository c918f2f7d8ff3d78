/* qido.c — QIDO-RS: the six search routes over store_find(). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    store_param *v;
    size_t n, cap;
    bool hostile;
} params;

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    params *p = cls;
    if (strchr(key, '<') || (value && strchr(value, '<'))) p->hostile = true;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->v = realloc(p->v, p->cap * sizeof *p->v);
        if (!p->v) abort();
    }
    p->v[p->n++] = (store_param){key, value ? value : ""};
    return MHD_YES;
}

enum MHD_Result qido_handle(web_request *rq)
{
    const route *r = &rq->route;
    if (!web_accepts(rq, "application/dicom+json"))
        return web_send_text(rq, MHD_HTTP_NOT_ACCEPTABLE,
                             "The request headers are not acceptable: search results are application/dicom+json.");
    if (r->bad_uid)
        return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "The %s UID in the URL is not a valid UID.",
                             r->series[0] ? "series" : "study");
    params p = {0};
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, collect, &p);
    if (p.hostile) {
        free(p.v);
        return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "The query string contains a character that is not allowed ('<').");
    }
    store_query q = {.level = r->level,
                     .study_uid = r->study[0] ? r->study : NULL,
                     .series_uid = r->series[0] ? r->series : NULL,
                     .api_version = r->version,
                     .with_counts = !rq->srv->strict,
                     .params = p.v,
                     .n_params = p.n};
    store_find_result res;
    store_err err = {0};
    store_status st = store_find(rq->srv->store, &q, &res, &err);
    free(p.v);
    if (st != STORE_OK) return web_send_text(rq, web_http_status(st), "%s", err.msg);
    struct MHD_Response *resp;
    unsigned status = MHD_HTTP_OK;
    if (res.count == 0 && rq->srv->strict) {
        /* The reference (and PS3.18 before CP-2473): 204 without a body. Orthanc's
         * DICOMweb client cannot parse an empty body, so by default no match is 200 with
         * an empty array, as CP-2473 and RFC 9110 have it. */
        status = MHD_HTTP_NO_CONTENT;
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        rq->resp_bytes = strlen(res.json);
        resp = MHD_create_response_from_buffer(strlen(res.json), res.json, MHD_RESPMEM_MUST_FREE);
        if (resp) {
            res.json = NULL; /* the response owns it now */
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/dicom+json");
        }
    }
    /* The query used extended query tags with indexing errors: its results may miss
     * instances whose values could not be indexed. */
    if (resp && res.erroneous[0]) MHD_add_response_header(resp, "erroneous-dicom-attributes", res.erroneous);
    store_find_result_clear(&res);
    return web_send(rq, status, resp);
}
