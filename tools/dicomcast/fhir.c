/* fhir.c — the FHIR client (fhir.h). */
#include "fhir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FHIR_JSON "application/fhir+json"

struct fhir {
    http_client_t *http;
    char *base;
    char *token;
};

fhir_t *fhir_new(http_client_t *http, const char *base, const char *token)
{
    fhir_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->http = http;
    f->base = strdup(base);
    f->token = token ? strdup(token) : NULL;
    return f;
}

void fhir_free(fhir_t *f)
{
    if (!f)
        return;
    free(f->base);
    free(f->token);
    free(f);
}

static void append(char *buf, size_t len, const char *sep, const char *s)
{
    size_t used = strlen(buf);
    if (used + 1 >= len || !s || !*s)
        return;
    snprintf(buf + used, len - used, "%s%s", used ? sep : "", s);
}

void fhir_outcome_text(json_t *outcome, char *buf, size_t len)
{
    buf[0] = '\0';
    size_t i;
    json_t *issue;
    json_array_foreach(json_object_get(outcome, "issue"), i, issue) {
        char one[1024] = "";
        const char *text = json_string_value(json_object_get(json_object_get(issue, "details"), "text"));
        const char *diag = json_string_value(json_object_get(issue, "diagnostics"));
        append(one, sizeof one, " ", text ? text : diag);
        if (text && diag)
            append(one, sizeof one, " ", diag);
        size_t j;
        json_t *x;
        json_array_foreach(json_object_get(issue, "expression"), j, x) {
            char at[512];
            snprintf(at, sizeof at, "(at %s)", json_string_value(x) ? json_string_value(x) : "?");
            append(one, sizeof one, " ", at);
        }
        append(buf, len, "; ", one);
    }
}

/* Fills ERR from a failed response; returns the status class. */
static cast_status_t failure(const char *what, http_response_t *r, fhir_error_t *err)
{
    err->status = r->status;
    if (r->status == 0) {
        snprintf(err->text, sizeof err->text, "%s", r->error);
        return CAST_TRANSIENT;
    }
    json_t *o = json_loadb(r->body, r->len, 0, NULL);
    char text[1536] = "";
    if (json_is_object(o) && json_object_get(o, "issue"))
        fhir_outcome_text(o, text, sizeof text);
    else
        snprintf(text, sizeof text, "%.400s", r->body);
    json_decref(o);
    snprintf(err->text, sizeof err->text, "%s: HTTP %ld: %s", what, r->status, *text ? text : "(no body)");
    long s = r->status;
    if (s >= 500 || s == 408 || s == 429 || s == 412)
        return CAST_TRANSIENT;
    if (s == 401 || s == 403)
        return CAST_FATAL;
    return CAST_FHIR_ERROR;
}

static cast_status_t get_json(fhir_t *f, const char *url, json_t **out, fhir_error_t *err)
{
    http_response_t r;
    *out = NULL;
    if (http_request(f->http, "GET", url, f->token, FHIR_JSON, NULL, NULL, NULL, &r) != 0)
        return failure("GET", &r, err);
    cast_status_t st = CAST_OK;
    if (r.status != 200) {
        char what[1024];
        snprintf(what, sizeof what, "GET %s", url);
        st = failure(what, &r, err);
    } else if (!(*out = json_loadb(r.body, r.len, 0, NULL))) {
        err->status = r.status;
        snprintf(err->text, sizeof err->text, "GET %s: the answer is not JSON: %.200s", url, r.body);
        st = CAST_TRANSIENT;
    }
    http_response_clear(&r);
    return st;
}

cast_status_t fhir_check_metadata(fhir_t *f, fhir_error_t *err)
{
    char url[4096];
    snprintf(url, sizeof url, "%s/metadata", f->base);
    json_t *cs;
    cast_status_t st = get_json(f, url, &cs, err);
    if (st != CAST_OK)
        return CAST_FATAL;
    const char *version = json_string_value(json_object_get(cs, "fhirVersion"));
    int transaction = 0;
    size_t i, j;
    json_t *rest, *in;
    json_array_foreach(json_object_get(cs, "rest"), i, rest) {
        json_array_foreach(json_object_get(rest, "interaction"), j, in) {
            const char *code = json_string_value(json_object_get(in, "code"));
            if (code && strcmp(code, "transaction") == 0)
                transaction = 1;
        }
    }
    st = CAST_OK;
    if (!version || (strcmp(version, "4.0.0") != 0 && strcmp(version, "4.0.1") != 0)) {
        snprintf(err->text, sizeof err->text,
                 "%.1500s: the FHIR server's version is %.100s, dicomcast needs FHIR R4 (4.0.0 or 4.0.1)", url,
                 version ? version : "not given (no fhirVersion in its CapabilityStatement)");
        st = CAST_FATAL;
    } else if (!transaction) {
        snprintf(err->text, sizeof err->text,
                 "%.1500s: the FHIR server does not support transaction Bundles (no \"transaction\" interaction)", url);
        st = CAST_FATAL;
    }
    json_decref(cs);
    return st;
}

cast_status_t fhir_search(fhir_t *f, const char *type, const char *const *params, json_t **resources,
                          fhir_error_t *err)
{
    char url[8192];
    int n = snprintf(url, sizeof url, "%s/%s", f->base, type);
    for (int i = 0; params && params[i] && params[i + 1]; i += 2) {
        char *v = http_escape(params[i + 1]);
        n += snprintf(url + n, sizeof url - n, "%c%s=%s", i ? '&' : '?', params[i], v ? v : "");
        free(v);
    }
    json_t *bundle;
    *resources = NULL;
    cast_status_t st = get_json(f, url, &bundle, err);
    if (st != CAST_OK)
        return st;
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(bundle, "entry"), i, e) {
        const char *mode = json_string_value(json_object_get(json_object_get(e, "search"), "mode"));
        json_t *res = json_object_get(e, "resource");
        if (res && (!mode || strcmp(mode, "match") == 0))
            json_array_append(out, res);
    }
    json_decref(bundle);
    *resources = out;
    return CAST_OK;
}

cast_status_t fhir_transaction(fhir_t *f, json_t *bundle, json_t **response, fhir_error_t *err)
{
    *response = NULL;
    char *body = json_dumps(bundle, JSON_COMPACT);
    if (!body) {
        snprintf(err->text, sizeof err->text, "the Bundle could not be serialised");
        return CAST_FATAL;
    }
    http_response_t r;
    int rc = http_request(f->http, "POST", f->base, f->token, FHIR_JSON, FHIR_JSON, body, NULL, &r);
    free(body);
    if (rc != 0)
        return failure("POST transaction", &r, err);
    cast_status_t st = CAST_OK;
    if (r.status != 200)
        st = failure("POST transaction", &r, err);
    else if (!(*response = json_loadb(r.body, r.len, 0, NULL))) {
        err->status = r.status;
        snprintf(err->text, sizeof err->text, "POST transaction: the answer is not JSON: %.200s", r.body);
        st = CAST_TRANSIENT;
    }
    http_response_clear(&r);
    return st;
}
