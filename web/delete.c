/* delete.c — DELETE of a study, series or instance (the reference's extension). */
#include "internal.h"

enum MHD_Result delete_handle(web_request *rq)
{
    const route *r = &rq->route;
    if (r->bad_uid) return web_send_text(rq, MHD_HTTP_BAD_REQUEST, "A UID in the URL is not a valid UID.");
    store_err err = {0};
    store_status st = store_delete(rq->srv->store, NULL, r->study, r->series[0] ? r->series : NULL,
                                   r->sop[0] ? r->sop : NULL, NULL, &err);
    if (st != STORE_OK) return web_send_text(rq, web_http_status(st), "%s", err.msg);
    return web_send_empty(rq, MHD_HTTP_NO_CONTENT);
}
