/* mapping.c — DICOM JSON to FHIR (mapping.h). Tags by number, as DICOM JSON names them. */
#include "mapping.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_PATIENT_NAME "00100010"
#define TAG_PATIENT_ID "00100020"
#define TAG_ISSUER "00100021"
#define TAG_BIRTH_DATE "00100030"
#define TAG_SEX "00100040"
#define TAG_STUDY_DATE "00080020"
#define TAG_SERIES_DATE "00080021"
#define TAG_STUDY_TIME "00080030"
#define TAG_SERIES_TIME "00080031"
#define TAG_ACCESSION "00080050"
#define TAG_MODALITY "00080060"
#define TAG_MODALITIES "00080061"
#define TAG_TZ_OFFSET "00080201"
#define TAG_STUDY_DESC "00081030"
#define TAG_SERIES_DESC "0008103E"
#define TAG_SOP_CLASS "00080016"
#define TAG_SOP_INSTANCE "00080018"
#define TAG_STUDY_UID "0020000D"
#define TAG_SERIES_UID "0020000E"
#define TAG_SERIES_NUMBER "00200011"
#define TAG_INSTANCE_NUMBER "00200013"

void map_ctx_init(map_ctx_t *ctx)
{
    ctx->problems = json_array();
    ctx->error[0] = '\0';
    ctx->error_tag[0] = '\0';
}

void map_ctx_clear(map_ctx_t *ctx)
{
    json_decref(ctx->problems);
    ctx->problems = NULL;
}

static void problem(map_ctx_t *ctx, const char *tag, const char *value, const char *why)
{
    json_t *p = json_pack("{s:s,s:s?,s:s}", "tag", tag, "value", value, "error", why);
    if (p)
        json_array_append_new(ctx->problems, p);
}

static cast_status_t required(map_ctx_t *ctx, const char *tag, const char *why)
{
    snprintf(ctx->error, sizeof ctx->error, "%s", why);
    snprintf(ctx->error_tag, sizeof ctx->error_tag, "%s", tag);
    return CAST_DICOM_ERROR;
}

const char *map_value(json_t *md, const char *tag, char *buf, size_t len)
{
    json_t *v = json_array_get(json_object_get(json_object_get(md, tag), "Value"), 0);
    buf[0] = '\0';
    if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, len, "%.17g", json_real_value(v));
    else if (json_is_object(v) && json_is_string(json_object_get(v, "Alphabetic")))
        snprintf(buf, len, "%s", json_string_value(json_object_get(v, "Alphabetic")));
    /* DICOM pads to even length; JSON values should be trimmed already, be sure. */
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == ' ' || buf[n - 1] == '\0'))
        buf[--n] = '\0';
    size_t lead = strspn(buf, " ");
    if (lead)
        memmove(buf, buf + lead, n - lead + 1);
    return buf;
}

const char *map_patient_system(json_t *md, const char *system, bool issuer_as_system)
{
    static char issuer[256];
    if (issuer_as_system && *map_value(md, TAG_ISSUER, issuer, sizeof issuer))
        return issuer;
    return system ? system : "";
}

/* ---- dates and times -------------------------------------------------------------- */

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

bool map_date(const char *da, char *out, size_t len)
{
    out[0] = '\0';
    if (strlen(da) != 8 || !digits(da, 8))
        return false;
    int y = num(da, 4), m = num(da + 4, 2), d = num(da + 6, 2);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] || (m == 2 && d == 29 && !leap))
        return false;
    snprintf(out, len, "%.4s-%.2s-%.2s", da, da + 4, da + 6);
    return true;
}

/* TM: HH, HHMM, HHMMSS, HHMMSS.F{1,6} (and the old HH:MM:SS form) to hh:mm:ss[.f]. */
static bool map_time(const char *tm, char *out, size_t len)
{
    char d[16] = "";
    size_t n = 0;
    const char *p = tm;
    for (; *p && *p != '.'; p++) {
        if (*p == ':')
            continue;
        if (n >= 6 || !isdigit((unsigned char)*p))
            return false;
        d[n++] = *p;
    }
    if (n != 2 && n != 4 && n != 6)
        return false;
    const char *frac = *p == '.' ? p + 1 : NULL;
    if (frac && (n != 6 || !*frac || strlen(frac) > 6 || !digits(frac, strlen(frac))))
        return false;
    while (n < 6)
        d[n++] = '0';
    if (num(d, 2) > 23 || num(d + 2, 2) > 59 || num(d + 4, 2) > 60)
        return false;
    snprintf(out, len, "%.2s:%.2s:%.2s%s%s", d, d + 2, d + 4, frac ? "." : "", frac ? frac : "");
    return true;
}

/* TimezoneOffsetFromUTC: +HHMM / -HHMM, -12:00 .. +14:00, to +hh:mm. */
static bool map_offset(const char *tz, char *out, size_t len)
{
    if (strlen(tz) != 5 || (tz[0] != '+' && tz[0] != '-') || !digits(tz + 1, 4))
        return false;
    int minutes = num(tz + 1, 2) * 60 + num(tz + 3, 2);
    if (num(tz + 3, 2) > 59 || (tz[0] == '+' ? minutes > 14 * 60 : minutes > 12 * 60))
        return false;
    snprintf(out, len, "%c%.2s:%.2s", tz[0], tz + 1, tz + 3);
    return true;
}

static const char WHY_DATE[] = "not a valid DICOM date (DA, YYYYMMDD)";
static const char WHY_TIME[] = "not a valid DICOM time (TM, HHMMSS.FFFFFF)";
static const char WHY_TZ[] = "not a valid TimezoneOffsetFromUTC (+HHMM, -1200..+1400)";

bool map_datetime(const char *da, const char *tm, const char *tz, char *out, size_t len, const char **why)
{
    char date[16], time[32], off[8] = "";
    *why = NULL;
    out[0] = '\0';
    if (!map_date(da, date, sizeof date)) {
        *why = WHY_DATE;
        return false;
    }
    if (!*tm || !map_time(tm, time, sizeof time)) {
        if (*tm)
            *why = WHY_TIME;
        snprintf(out, len, "%s", date);
        return *why == NULL;
    }
    /* FHIR requires a zone with a time. Without TimezoneOffsetFromUTC the time is taken as
     * UTC, as the reference does (its offset defaults to zero). */
    if (*tz && !map_offset(tz, off, sizeof off)) {
        *why = WHY_TZ;
        return false;
    }
    snprintf(out, len, "%sT%s%s", date, time, *off ? off : "Z");
    return true;
}

/* ---- Patient ---------------------------------------------------------------------- */

static json_t *split_words(const char *s)
{
    json_t *a = json_array();
    char *copy = strdup(s), *save = NULL;
    for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
        json_array_append_new(a, json_string(w));
    free(copy);
    return a;
}

/* PN "Family^Given^Middle^Prefix^Suffix" to a HumanName (use usual); NULL when empty. */
static json_t *map_name(const char *pn)
{
    char comp[5][256] = {{0}};
    const char *p = pn;
    for (int i = 0; i < 5 && p; i++) {
        const char *end = strchr(p, '^');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        snprintf(comp[i], sizeof comp[i], "%.*s", (int)n, p);
        p = end ? end + 1 : NULL;
    }
    json_t *name = json_object();
    if (*comp[0])
        json_object_set_new(name, "family", json_string(comp[0]));
    json_t *given = split_words(comp[1]);
    json_t *middle = split_words(comp[2]);
    json_array_extend(given, middle);
    json_decref(middle);
    if (json_array_size(given))
        json_object_set_new(name, "given", given);
    else
        json_decref(given);
    if (*comp[3])
        json_object_set_new(name, "prefix", json_pack("[s]", comp[3]));
    if (*comp[4])
        json_object_set_new(name, "suffix", json_pack("[s]", comp[4]));
    if (json_object_size(name) == 0) {
        json_decref(name);
        return NULL;
    }
    json_object_set_new(name, "use", json_string("usual"));
    return name;
}

cast_status_t map_patient(json_t *md, const char *system, json_t **patient, map_ctx_t *ctx)
{
    char id[256], buf[1024];
    *patient = NULL;
    if (!*map_value(md, TAG_PATIENT_ID, id, sizeof id))
        return required(ctx, TAG_PATIENT_ID, "the instance has no PatientID (0010,0020), which the Patient needs");
    json_t *p = json_pack("{s:s}", "resourceType", "Patient");
    json_t *ident = json_pack("{s:s}", "value", id);
    if (*system)
        json_object_set_new(ident, "system", json_string(system));
    json_object_set_new(p, "identifier", json_pack("[o]", ident));
    json_t *name = map_name(map_value(md, TAG_PATIENT_NAME, buf, sizeof buf));
    if (name)
        json_object_set_new(p, "name", json_pack("[o]", name));
    const char *sex = map_value(md, TAG_SEX, buf, sizeof buf);
    const char *gender = !strcmp(sex, "M") ? "male" : !strcmp(sex, "F") ? "female" : !strcmp(sex, "O") ? "other" : NULL;
    if (gender)
        json_object_set_new(p, "gender", json_string(gender));
    else if (*sex)
        problem(ctx, TAG_SEX, sex, "PatientSex is not M, F or O: the Patient's gender is left out");
    char date[16];
    const char *birth = map_value(md, TAG_BIRTH_DATE, buf, sizeof buf);
    if (map_date(birth, date, sizeof date))
        json_object_set_new(p, "birthDate", json_string(date));
    else if (*birth)
        problem(ctx, TAG_BIRTH_DATE, birth, "PatientBirthDate is not a valid date (DA): birthDate is left out");
    *patient = p;
    return CAST_OK;
}

static bool replace_member(json_t *dst, const char *key, json_t *value)
{
    json_t *old = json_object_get(dst, key);
    if (!value) {
        if (!old)
            return false;
        json_object_del(dst, key);
        return true;
    }
    if (old && json_equal(old, value))
        return false;
    json_object_set(dst, key, value);
    return true;
}

bool map_patient_refresh(json_t *existing, json_t *fresh)
{
    bool changed = replace_member(existing, "name", json_object_get(fresh, "name"));
    changed |= replace_member(existing, "gender", json_object_get(fresh, "gender"));
    return changed;
}

/* ---- Endpoint --------------------------------------------------------------------- */

void map_endpoint_name(const char *address, char *buf, size_t len)
{
    snprintf(buf, len, "DICOM WADO-RS endpoint %s", address);
}

json_t *map_endpoint(const char *address)
{
    char name[2048];
    map_endpoint_name(address, name, sizeof name);
    return json_pack("{s:s,s:s,s:s,s:{s:s,s:s},s:[{s:s}],s:[s],s:s}", "resourceType", "Endpoint", "name", name,
                     "status", "active", "connectionType", "system", MAP_ENDPOINT_TYPE_SYSTEM, "code",
                     "dicom-wado-rs", "payloadType", "text", "DICOM WADO-RS", "payloadMimeType",
                     "application/dicom", "address", address);
}

/* ---- ImagingStudy ----------------------------------------------------------------- */

json_t *map_study_new(const char *study_uid, const char *patient_ref, const char *source)
{
    char value[128];
    snprintf(value, sizeof value, "urn:oid:%s", study_uid);
    return json_pack("{s:s,s:{s:s},s:[{s:s,s:s}],s:s,s:{s:s}}", "resourceType", "ImagingStudy", "meta", "source",
                     source, "identifier", "system", "urn:dicom:uid", "value", value, "status", "available",
                     "subject", "reference", patient_ref);
}

static json_t *dcm_coding(const char *code)
{
    return json_pack("{s:s,s:s}", "system", MAP_DCM_SYSTEM, "code", code);
}

/* Appends the modality CODE to the study's list unless it is there. */
static void add_modality(json_t *study, const char *code)
{
    json_t *list = json_object_get(study, "modality");
    if (!list) {
        list = json_array();
        json_object_set_new(study, "modality", list);
    }
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        const char *have = json_string_value(json_object_get(c, "code"));
        if (have && !strcmp(have, code))
            return;
    }
    json_array_append_new(list, dcm_coding(code));
}

/* The element of ARRAY (in OBJ[KEY], created when missing) whose "uid" is UID. */
static json_t *by_uid(json_t *obj, const char *key, const char *uid, bool create)
{
    json_t *list = json_object_get(obj, key);
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *have = json_string_value(json_object_get(e, "uid"));
        if (have && !strcmp(have, uid))
            return e;
    }
    if (!create)
        return NULL;
    if (!list) {
        list = json_array();
        json_object_set_new(obj, key, list);
    }
    e = json_pack("{s:s}", "uid", uid);
    json_array_append_new(list, e);
    return e;
}

/* An unsignedInt from IS text; false when it is not one. */
static bool unsigned_int(const char *s, json_int_t *out)
{
    char *end;
    if (!*s)
        return false;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 0 || v > 2147483647LL)
        return false;
    *out = v;
    return true;
}

static void set_number(json_t *obj, const char *key, json_t *md, const char *tag, map_ctx_t *ctx)
{
    char buf[64];
    json_int_t n;
    const char *s = map_value(md, tag, buf, sizeof buf);
    if (unsigned_int(s, &n))
        json_object_set_new(obj, key, json_integer(n));
    else if (*s)
        problem(ctx, tag, s, "not an unsigned integer: left out");
}

static void set_started(json_t *obj, json_t *md, const char *date_tag, const char *time_tag, map_ctx_t *ctx)
{
    char da[64], tm[64], tz[64], out[64];
    const char *why;
    map_value(md, date_tag, da, sizeof da);
    map_value(md, time_tag, tm, sizeof tm);
    map_value(md, TAG_TZ_OFFSET, tz, sizeof tz);
    if (!*da)
        return;
    bool ok = map_datetime(da, tm, tz, out, sizeof out, &why);
    if (*out)
        json_object_set_new(obj, "started", json_string(out));
    if (!ok) {
        const char *tag = why == WHY_DATE ? date_tag : why == WHY_TZ ? TAG_TZ_OFFSET : time_tag;
        const char *value = tag == date_tag ? da : tag == time_tag ? tm : tz;
        char text[256];
        snprintf(text, sizeof text, "%s: started %s", why, *out ? "has the date only" : "is left out");
        problem(ctx, tag, value, text);
    }
}

static void count(json_t *study)
{
    size_t total = 0, i;
    json_t *s;
    json_array_foreach(json_object_get(study, "series"), i, s) {
        size_t n = json_array_size(json_object_get(s, "instance"));
        json_object_set_new(s, "numberOfInstances", json_integer((json_int_t)n));
        total += n;
    }
    json_object_set_new(study, "numberOfSeries", json_integer((json_int_t)json_array_size(json_object_get(study, "series"))));
    json_object_set_new(study, "numberOfInstances", json_integer((json_int_t)total));
}

cast_status_t map_study_add(json_t *study, json_t *md, const char *endpoint_ref, map_ctx_t *ctx)
{
    char series_uid[128], sop_uid[128], sop_class[128], modality[64], buf[1024];
    if (!*map_value(md, TAG_SERIES_UID, series_uid, sizeof series_uid))
        return required(ctx, TAG_SERIES_UID, "the instance has no SeriesInstanceUID");
    if (!*map_value(md, TAG_SOP_INSTANCE, sop_uid, sizeof sop_uid))
        return required(ctx, TAG_SOP_INSTANCE, "the instance has no SOPInstanceUID");
    if (!*map_value(md, TAG_SOP_CLASS, sop_class, sizeof sop_class))
        return required(ctx, TAG_SOP_CLASS, "the instance has no SOPClassUID, which ImagingStudy.series.instance.sopClass needs");
    if (!*map_value(md, TAG_MODALITY, modality, sizeof modality))
        return required(ctx, TAG_MODALITY, "the instance has no Modality, which ImagingStudy.series.modality needs");

    /* Study level. */
    json_t *endpoints = json_object_get(study, "endpoint");
    bool have = false;
    size_t i;
    json_t *e;
    json_array_foreach(endpoints, i, e)
        have |= json_is_string(json_object_get(e, "reference")) &&
                !strcmp(json_string_value(json_object_get(e, "reference")), endpoint_ref);
    if (!have) {
        if (!endpoints) {
            endpoints = json_array();
            json_object_set_new(study, "endpoint", endpoints);
        }
        json_array_append_new(endpoints, json_pack("{s:s}", "reference", endpoint_ref));
    }
    set_started(study, md, TAG_STUDY_DATE, TAG_STUDY_TIME, ctx);
    json_t *mods = json_object_get(json_object_get(md, TAG_MODALITIES), "Value");
    json_array_foreach(mods, i, e)
        if (json_is_string(e) && *json_string_value(e))
            add_modality(study, json_string_value(e));
    add_modality(study, modality);
    const char *desc = map_value(md, TAG_STUDY_DESC, buf, sizeof buf);
    if (*desc)
        json_object_set_new(study, "note", json_pack("[{s:s}]", "text", desc));
    const char *acc = map_value(md, TAG_ACCESSION, buf, sizeof buf);
    if (*acc) {
        json_t *ids = json_object_get(study, "identifier");
        for (size_t k = json_array_size(ids); k-- > 0;) {
            json_t *coding = json_array_get(json_object_get(json_object_get(json_array_get(ids, k), "type"), "coding"), 0);
            const char *code = json_string_value(json_object_get(coding, "code"));
            if (code && !strcmp(code, "ACSN"))
                json_array_remove(ids, k);
        }
        json_array_append_new(ids, json_pack("{s:{s:[{s:s,s:s}]},s:s}", "type", "coding", "system",
                                             "http://terminology.hl7.org/CodeSystem/v2-0203", "code", "ACSN",
                                             "value", acc));
    }

    /* Series and instance. */
    json_t *series = by_uid(study, "series", series_uid, true);
    set_number(series, "number", md, TAG_SERIES_NUMBER, ctx);
    json_object_set_new(series, "modality", dcm_coding(modality));
    const char *sdesc = map_value(md, TAG_SERIES_DESC, buf, sizeof buf);
    if (*sdesc)
        json_object_set_new(series, "description", json_string(sdesc));
    set_started(series, md, TAG_SERIES_DATE, TAG_SERIES_TIME, ctx);
    json_t *inst = by_uid(series, "instance", sop_uid, true);
    /* The reference's Coding carries the SOP Class UID as the code, with no system. */
    json_object_set_new(inst, "sopClass", json_pack("{s:s}", "code", sop_class));
    set_number(inst, "number", md, TAG_INSTANCE_NUMBER, ctx);
    count(study);
    return CAST_OK;
}

bool map_study_remove(json_t *study, const char *series_uid, const char *sop_uid)
{
    json_t *list = json_object_get(study, "series");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *s = json_array_get(list, i);
        const char *uid = json_string_value(json_object_get(s, "uid"));
        if (!uid || strcmp(uid, series_uid))
            continue;
        json_t *insts = json_object_get(s, "instance");
        for (size_t j = 0; j < json_array_size(insts); j++) {
            const char *iuid = json_string_value(json_object_get(json_array_get(insts, j), "uid"));
            if (!iuid || strcmp(iuid, sop_uid))
                continue;
            json_array_remove(insts, j);
            if (json_array_size(insts) == 0)
                json_array_remove(list, i);
            if (json_array_size(list) == 0)
                json_object_del(study, "series");
            count(study);
            return true;
        }
    }
    return false;
}

size_t map_study_series_count(json_t *study)
{
    return json_array_size(json_object_get(study, "series"));
}
