/* sync.c — an entry to a transaction (sync.h). */
#include "sync.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mapping.h"

static void uuid_urn(char *buf, size_t len)
{
    unsigned char b[16] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, b, sizeof b) != (ssize_t)sizeof b) {
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)rand();
    }
    if (fd >= 0)
        close(fd);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(buf, len,
             "urn:uuid:%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void add_entry(json_t *bundle, const char *full_url, json_t *resource, const char *method, const char *url,
                      const char *if_none_exist, const char *version)
{
    json_t *req = json_pack("{s:s,s:s}", "method", method, "url", url);
    if (if_none_exist)
        json_object_set_new(req, "ifNoneExist", json_string(if_none_exist));
    if (version) {
        char etag[160];
        snprintf(etag, sizeof etag, "W/\"%s\"", version);
        json_object_set_new(req, "ifMatch", json_string(etag));
    }
    json_t *e = json_object();
    if (full_url)
        json_object_set_new(e, "fullUrl", json_string(full_url));
    if (resource)
        json_object_set(e, "resource", resource);
    json_object_set_new(e, "request", req);
    json_array_append_new(json_object_get(bundle, "entry"), e);
}

static const char *version_of(json_t *res)
{
    return json_string_value(json_object_get(json_object_get(res, "meta"), "versionId"));
}

/* "name=v1&name2=v2" for ifNoneExist, values encoded. */
static void query(char *buf, size_t len, const char *const *params)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; params[i] && params[i + 1]; i += 2) {
        char *v = http_escape(params[i + 1]);
        n += snprintf(buf + n, n < len ? len - n : 0, "%s%s=%s", i ? "&" : "", params[i], v ? v : "");
        free(v);
    }
}

static cast_status_t fail(sync_result_t *res, cast_status_t st, const char *text)
{
    res->fhir.status = 0;
    snprintf(res->fhir.text, sizeof res->fhir.text, "%s", text);
    return st;
}

/* The Patient step: adds its entry when needed; REF gets the reference the study uses. */
static cast_status_t patient_step(sync_t *s, json_t *md, json_t *bundle, char *ref, size_t reflen,
                                  map_ctx_t *ctx, sync_result_t *res)
{
    const char *system = map_patient_system(md, s->patient_system, s->issuer_as_system);
    json_t *fresh;
    cast_status_t st = map_patient(md, system, &fresh, ctx);
    if (st != CAST_OK)
        return st;
    const char *pid = str(json_array_get(json_object_get(fresh, "identifier"), 0), "value");
    char token[1024];
    snprintf(token, sizeof token, "%s%s%s", system, *system ? "|" : "", pid);
    const char *params[] = {"identifier", token, NULL};
    json_t *found;
    st = fhir_search(s->fhir, "Patient", params, &found, &res->fhir);
    if (st != CAST_OK) {
        json_decref(fresh);
        return st;
    }
    /* Without a system the search matches the value in any system: keep those without. */
    if (!*system) {
        for (size_t i = json_array_size(found); i-- > 0;) {
            bool keep = false;
            size_t j;
            json_t *id;
            json_array_foreach(json_object_get(json_array_get(found, i), "identifier"), j, id)
                keep |= !json_object_get(id, "system") && !strcmp(str(id, "value"), pid);
            if (!keep)
                json_array_remove(found, i);
        }
    }
    if (json_array_size(found) > 1) {
        char why[1200];
        snprintf(why, sizeof why, "%zu Patients have the identifier %s: dicomcast cannot choose one",
                 json_array_size(found), token);
        json_decref(found);
        json_decref(fresh);
        return fail(res, CAST_FHIR_ERROR, why);
    }
    json_t *existing = json_array_get(found, 0);
    char ine[1200];
    query(ine, sizeof ine, params);
    if (!existing) {
        uuid_urn(ref, reflen);
        add_entry(bundle, ref, fresh, "POST", "Patient", ine, NULL);
    } else {
        snprintf(ref, reflen, "Patient/%s", str(existing, "id"));
        if (map_patient_refresh(existing, fresh)) {
            char url[256];
            snprintf(url, sizeof url, "Patient/%s", str(existing, "id"));
            add_entry(bundle, NULL, existing, "PUT", url, NULL, version_of(existing));
        }
    }
    json_decref(found);
    json_decref(fresh);
    return CAST_OK;
}

/* The Endpoint step: REF gets "Endpoint/<id>", or a urn:uuid when it is created here. */
static cast_status_t endpoint_step(sync_t *s, json_t *bundle, char *ref, size_t reflen, bool *creating,
                                   sync_result_t *res)
{
    *creating = false;
    if (*s->endpoint_id) {
        snprintf(ref, reflen, "Endpoint/%s", s->endpoint_id);
        return CAST_OK;
    }
    char name[2048];
    map_endpoint_name(s->endpoint_address, name, sizeof name);
    const char *params[] = {"name", name, "connection-type", MAP_ENDPOINT_TYPE_SYSTEM "|dicom-wado-rs", NULL};
    json_t *found;
    cast_status_t st = fhir_search(s->fhir, "Endpoint", params, &found, &res->fhir);
    if (st != CAST_OK)
        return st;
    json_t *e = json_array_get(found, 0);
    if (e && strcmp(str(e, "address"), s->endpoint_address) != 0) {
        char why[2048];
        snprintf(why, sizeof why, "the FHIR server's Endpoint/%.100s named \"%.700s\" has the address %.500s, not %.500s",
                 str(e, "id"), name, str(e, "address"), s->endpoint_address);
        json_decref(found);
        return fail(res, CAST_FHIR_ERROR, why);
    }
    if (e) {
        snprintf(s->endpoint_id, sizeof s->endpoint_id, "%s", str(e, "id"));
        snprintf(ref, reflen, "Endpoint/%s", s->endpoint_id);
    } else {
        char ine[4096];
        query(ine, sizeof ine, params);
        uuid_urn(ref, reflen);
        json_t *ep = map_endpoint(s->endpoint_address);
        add_entry(bundle, ref, ep, "POST", "Endpoint", ine, NULL);
        json_decref(ep);
        *creating = true;
    }
    json_decref(found);
    return CAST_OK;
}

static cast_status_t find_study(sync_t *s, const char *uid, json_t **study, char *ine, size_t inelen,
                                sync_result_t *res)
{
    char value[128];
    snprintf(value, sizeof value, "urn:dicom:uid|urn:oid:%s", uid);
    const char *params[] = {"identifier", value, NULL};
    json_t *found;
    *study = NULL;
    query(ine, inelen, params);
    cast_status_t st = fhir_search(s->fhir, "ImagingStudy", params, &found, &res->fhir);
    if (st != CAST_OK)
        return st;
    if (json_array_size(found) > 1) {
        json_decref(found);
        return fail(res, CAST_FHIR_ERROR, "more than one ImagingStudy has this study's identifier");
    }
    *study = json_incref(json_array_get(found, 0));
    json_decref(found);
    return CAST_OK;
}

/* Commits BUNDLE; a conditional create answered 200 (someone created it since the search)
 * is retried, as the reference does, so that the next attempt reads what is there. */
static cast_status_t commit(sync_t *s, json_t *bundle, bool endpoint_created, sync_result_t *res)
{
    json_t *resp;
    cast_status_t st = fhir_transaction(s->fhir, bundle, &resp, &res->fhir);
    if (st != CAST_OK)
        return st;
    json_t *sent = json_object_get(bundle, "entry");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(resp, "entry"), i, e) {
        json_t *req = json_object_get(json_array_get(sent, i), "request");
        const char *status = str(json_object_get(e, "response"), "status");
        const char *location = str(json_object_get(e, "response"), "location");
        if (!strcmp(str(req, "method"), "POST") && !strncmp(status, "200", 3)) {
            json_decref(resp);
            return fail(res, CAST_TRANSIENT, "a conditional create found a resource created since the search");
        }
        if (endpoint_created && !strcmp(str(req, "url"), "Endpoint") && !strncmp(location, "Endpoint/", 9)) {
            const char *id = location + 9;
            snprintf(s->endpoint_id, sizeof s->endpoint_id, "%.*s", (int)strcspn(id, "/"), id);
        }
    }
    json_decref(resp);
    res->wrote = true;
    return CAST_OK;
}

static cast_status_t sync_create(sync_t *s, json_t *entry, json_t *md, sync_result_t *res)
{
    map_ctx_t ctx;
    map_ctx_init(&ctx);
    json_t *bundle = json_pack("{s:s,s:s,s:[]}", "resourceType", "Bundle", "type", "transaction", "entry");
    json_t *study = NULL, *before = NULL;
    char patient_ref[256], endpoint_ref[256], ine[512];
    bool endpoint_created = false;
    const char *study_uid = str(entry, "studyInstanceUid");
    cast_status_t st = patient_step(s, md, bundle, patient_ref, sizeof patient_ref, &ctx, res);
    if (st == CAST_OK)
        st = endpoint_step(s, bundle, endpoint_ref, sizeof endpoint_ref, &endpoint_created, res);
    if (st == CAST_OK)
        st = find_study(s, study_uid, &study, ine, sizeof ine, res);
    if (st == CAST_OK) {
        if (!study)
            study = map_study_new(study_uid, patient_ref, s->endpoint_address);
        else
            before = json_deep_copy(study);
        st = map_study_add(study, md, endpoint_ref, &ctx);
    }
    if (st == CAST_OK) {
        if (!before)
            add_entry(bundle, NULL, study, "POST", "ImagingStudy", ine, NULL);
        else if (!json_equal(before, study)) {
            char url[256];
            snprintf(url, sizeof url, "ImagingStudy/%s", str(study, "id"));
            add_entry(bundle, NULL, study, "PUT", url, NULL, version_of(study));
        }
        if (json_array_size(json_object_get(bundle, "entry")))
            st = commit(s, bundle, endpoint_created, res);
    } else if (st == CAST_DICOM_ERROR) {
        snprintf(res->fhir.text, sizeof res->fhir.text, "%s", ctx.error);
        snprintf(res->error_tag, sizeof res->error_tag, "%s", ctx.error_tag);
    }
    res->problems = json_incref(ctx.problems);
    map_ctx_clear(&ctx);
    json_decref(study);
    json_decref(before);
    json_decref(bundle);
    return st;
}

static cast_status_t sync_delete(sync_t *s, json_t *entry, sync_result_t *res)
{
    json_t *study;
    char ine[512];
    cast_status_t st = find_study(s, str(entry, "studyInstanceUid"), &study, ine, sizeof ine, res);
    if (st != CAST_OK)
        return st;
    if (!study || !map_study_remove(study, str(entry, "seriesInstanceUid"), str(entry, "sopInstanceUid"))) {
        res->skipped = true; /* nothing of it is in the FHIR server */
        json_decref(study);
        return CAST_OK;
    }
    json_t *bundle = json_pack("{s:s,s:s,s:[]}", "resourceType", "Bundle", "type", "transaction", "entry");
    char url[256];
    snprintf(url, sizeof url, "ImagingStudy/%s", str(study, "id"));
    const char *source = str(json_object_get(study, "meta"), "source");
    if (map_study_series_count(study) == 0 && !strcmp(source, s->endpoint_address))
        add_entry(bundle, NULL, NULL, "DELETE", url, NULL, NULL);
    else
        add_entry(bundle, NULL, study, "PUT", url, NULL, version_of(study));
    st = commit(s, bundle, false, res);
    json_decref(bundle);
    json_decref(study);
    return st;
}

cast_status_t sync_entry(sync_t *s, json_t *entry, sync_result_t *res)
{
    memset(res, 0, sizeof *res);
    const char *action = str(entry, "action");
    const char *state = str(entry, "state");
    if (!strcmp(action, "delete"))
        return sync_delete(s, entry, res);
    if (strcmp(action, "create") && strcmp(action, "update"))
        return fail(res, CAST_DICOM_ERROR, "unknown change-feed action");
    if (!strcmp(state, "deleted")) {
        res->skipped = true; /* the instance is gone: its delete entry follows */
        return CAST_OK;
    }
    json_t *md = json_object_get(entry, "metadata");
    if (!json_is_object(md))
        return fail(res, CAST_DICOM_ERROR, "the entry has no metadata (the instance's DICOM JSON)");
    return sync_create(s, entry, md, res);
}
