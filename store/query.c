/* query.c — QIDO-RS search over the index.
 *
 * A query is parsed into filters (each: tag, level, how to match) and a set of
 * attributes to return, with the reference's rules and 400 messages. Filters become
 * "key IN (SELECT key FROM ix_* WHERE tag=? AND value ...)" clauses on the level's key,
 * so every search is index lookups and one ordered scan of the result level; the rows
 * returned are then dressed from the precomputed attrs JSON of each level's newest
 * instance ("latest wins"), with computed attributes from the counters. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "normalize.h"

#define LIMIT_DEFAULT 100
#define LIMIT_MAX 200
#define MAX_FILTERS 64
#define MAX_INCLUDE 256

typedef enum { M_EXACT, M_LIST, M_RANGE, M_WILDCARD, M_FUZZY } match_kind;

typedef struct {
    uint32_t tag;
    store_level level;
    ix_table table;
    match_kind kind;
    char **values;   /* exact/list values, wildcard pattern, fuzzy words; range: lo, hi (NULL = open) */
    size_t n_values;
    int64_t number;  /* IX_INT exact */
    double real;     /* IX_REAL exact */
    bool person_name; /* PN: matched by finish_filters() once fuzzymatching is known */
} filter;

typedef struct {
    filter f[MAX_FILTERS];
    size_t n_filters;
    uint32_t include[MAX_INCLUDE];
    size_t n_include;
    bool include_all;
    bool fuzzy;
    long limit, offset;
    bool limit_given;
    xqt_entry xqt[STORE_XQT_MAX]; /* the extended query tags, as the registry has them */
    size_t n_xqt;
    char erroneous[sizeof ((store_find_result *)0)->erroneous];
} parsed_query;

/* ---- Parsing ---------------------------------------------------------------------- */

static void free_query(parsed_query *q)
{
    for (size_t i = 0; i < q->n_filters; i++) {
        for (size_t k = 0; k < q->f[i].n_values; k++) free(q->f[i].values[k]);
        free(q->f[i].values);
    }
}

static void add_value(filter *f, char *v)
{
    f->values = realloc(f->values, (f->n_values + 1) * sizeof *f->values);
    if (!f->values) abort();
    f->values[f->n_values++] = v;
}

/* Which levels a resource may filter on (the reference's QueryLimit table). */
static bool level_allowed(const store_query *q, store_level level)
{
    if (q->series_uid) return level == STORE_LEVEL_INSTANCE;
    if (q->study_uid) return level > STORE_LEVEL_STUDY && level <= q->level;
    return level <= q->level;
}

static bool parse_long(const char *s, long *out)
{
    if (!*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static bool has_wildcard(const char *v) { return strchr(v, '*') || strchr(v, '?'); }

/* Escapes GLOB's '[' and ']' so that only '*' and '?' stay special. */
static char *glob_pattern(const char *folded)
{
    size_t n = strlen(folded);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) abort();
    for (const char *p = folded; *p; p++) {
        if (*p == '[' || *p == ']') {
            *o++ = '[';
            *o++ = *p;
            *o++ = ']';
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

/* Normalises a query value; false when it is not one, WHY then says what is wrong when
 * the form is right but the calendar or the clock has no such value (else ""). */
typedef bool (*norm_fn)(const char *in, char *out, char *why, size_t n);

static bool norm_da(const char *in, char *out, char *why, size_t n)
{
    *why = 0;
    return norm_date(in, out) && norm_date_exists(out, why, n);
}

static bool norm_tm(const char *in, char *out, char *why, size_t n)
{
    *why = 0;
    return norm_time(in, out) && norm_time_exists(out, why, n);
}

static bool norm_dt(const char *in, char *out, char *why, size_t n)
{
    bool zone;
    *why = 0;
    return norm_datetime(in, out, &zone) && !zone && norm_date_exists(out, why, n) && norm_time_exists(out + 8, why, n);
}

/* The 400 of a value that is not a WHAT: "'V' is not a valid date (YYYYMMDD): there is no month 13". */
static store_status bad_value(store_err *err, const char *v, const char *what, bool range, const char *why)
{
    return store_seterr(err, STORE_EINVAL, "'%s' is not a valid %s%s%s%s", v, what, range ? " range" : "",
                        *why ? ": " : "", why);
}

static store_status parse_range(filter *f, const char *v, norm_fn norm, const char *what, store_err *err)
{
    char why[128] = "";
    const char *dash = strchr(v, '-');
    if (f->tag && dash && strchr(dash + 1, '-')) dash = NULL; /* more than one '-' */
    if (!dash) {
        char buf[32];
        if (!norm(v, buf, why, sizeof why)) return bad_value(err, v, what, false, why);
        f->kind = M_EXACT;
        add_value(f, strdup(buf));
        return STORE_OK;
    }
    if (dash == v && !dash[1]) return store_seterr(err, STORE_EINVAL, "'-' alone is not a valid %s range", what);
    f->kind = M_RANGE;
    for (int side = 0; side < 2; side++) {
        char part[64];
        const char *from = side ? dash + 1 : v;
        size_t len = side ? strlen(dash + 1) : (size_t)(dash - v);
        if (len >= sizeof part) return bad_value(err, v, what, true, "");
        memcpy(part, from, len);
        part[len] = 0;
        char buf[32];
        if (!len) {
            add_value(f, NULL);
        } else if (norm(part, buf, why, sizeof why)) {
            add_value(f, strdup(buf));
        } else {
            return bad_value(err, v, what, true, why);
        }
    }
    if (f->values[0] && f->values[1] && strcmp(f->values[0], f->values[1]) > 0)
        return store_seterr(err, STORE_EINVAL, "the range '%s' ends before it starts", v);
    return STORE_OK;
}

/* An extended query tag that queries may use (ready and enabled) as a tag_def in OUT;
 * one with indexing errors is noted for the erroneous-dicom-attributes header. */
static const tag_def *searchable_xqt(parsed_query *pq, uint32_t tag, tag_def *out)
{
    for (size_t i = 0; i < pq->n_xqt; i++) {
        const xqt_entry *e = &pq->xqt[i];
        if (e->t.tag != tag || e->status != XQT_READY || !e->query_enabled) continue;
        if (e->error_count > 0) {
            size_t len = strlen(pq->erroneous);
            if (len + 10 < sizeof pq->erroneous)
                snprintf(pq->erroneous + len, sizeof pq->erroneous - len, "%s%s", len ? "," : "", e->path);
        }
        *out = (tag_def){e->t.tag, NULL, e->t.vr, e->t.level};
        return out;
    }
    return NULL;
}

static store_status parse_filter(const store_query *q, parsed_query *pq, const char *key, const char *value,
                                 store_err *err)
{
    uint32_t tag;
    char vr[3];
    if (tags_parse(key, &tag, vr) != 0)
        return store_seterr(err, STORE_EINVAL, "unknown query parameter '%s'", key);
    const tag_def *def = tags_core(tag);
    tag_def extended;
    if (!def && (def = searchable_xqt(pq, tag, &extended)) == NULL)
        return store_seterr(err, STORE_EINVAL, "the attribute '%s' is not supported for querying", key);
    if ((q->study_uid && tag == TAG_StudyInstanceUID) || (q->series_uid && tag == TAG_SeriesInstanceUID))
        return store_seterr(err, STORE_EINVAL, "the attribute '%s' is already given in the URL", key);
    if (!level_allowed(q, def->level))
        return store_seterr(err, STORE_EINVAL, "the attribute '%s' cannot be queried on this resource", key);
    if (!*value) return store_seterr(err, STORE_EINVAL, "the query parameter '%s' has an empty value", key);
    for (size_t i = 0; i < pq->n_filters; i++)
        if (pq->f[i].tag == tag) return store_seterr(err, STORE_EINVAL, "the attribute '%s' is given more than once", key);
    if (pq->n_filters == MAX_FILTERS) return store_seterr(err, STORE_EINVAL, "too many query parameters");

    filter *f = &pq->f[pq->n_filters++];
    memset(f, 0, sizeof *f);
    f->tag = tag;
    f->level = def->level;
    f->table = IX_TEXT;
    switch (tag_vr_class(def->vr)) {
    case VRC_UID: {
        f->kind = M_LIST;
        char *copy = strdup(value), *save = NULL;
        for (char *t = strtok_r(copy, ",\\", &save); t; t = strtok_r(NULL, ",\\", &save)) {
            if (!store_valid_uid(t)) {
                store_seterr(err, STORE_EINVAL, "'%s' is not a valid UID for '%s'", t, key); /* t lives in copy */
                free(copy);
                return STORE_EINVAL;
            }
            add_value(f, strdup(t));
        }
        free(copy);
        if (!f->n_values) return store_seterr(err, STORE_EINVAL, "the query parameter '%s' has an empty value", key);
        return STORE_OK;
    }
    case VRC_DATE: return parse_range(f, value, norm_da, "date (YYYYMMDD)", err);
    case VRC_TIME: return parse_range(f, value, norm_tm, "time (HHMMSS.FFFFFF)", err);
    case VRC_DATETIME: return parse_range(f, value, norm_dt, "date-time without a time zone", err);
    case VRC_PN:
        /* fuzzymatching may come after the attribute: decided in finish_filters(). */
        f->person_name = true;
        add_value(f, strdup(value));
        return STORE_OK;
    case VRC_INT:
        f->table = IX_INT;
        f->kind = M_EXACT;
        if (!parse_long(value, (long *)&f->number))
            return store_seterr(err, STORE_EINVAL, "'%s' is not an integer for '%s'", value, key);
        return STORE_OK;
    case VRC_REAL: {
        f->table = IX_REAL;
        f->kind = M_EXACT;
        char *end;
        f->real = strtod(value, &end);
        if (*end || end == value) return store_seterr(err, STORE_EINVAL, "'%s' is not a number for '%s'", value, key);
        return STORE_OK;
    }
    default: {
        char *folded = norm_fold(value);
        f->kind = has_wildcard(folded) ? M_WILDCARD : M_EXACT;
        add_value(f, f->kind == M_WILDCARD ? glob_pattern(folded) : strdup(folded));
        free(folded);
        return STORE_OK;
    }
    }
}

/* Person names: fuzzy word prefixes, wildcard or exact, once fuzzymatching is known. */
static store_status finish_filters(parsed_query *pq, store_err *err)
{
    for (size_t i = 0; i < pq->n_filters; i++) {
        filter *f = &pq->f[i];
        if (f->table != IX_TEXT || f->kind != M_EXACT || !f->person_name) continue;
        char *raw = f->values[0];
        char *norm = norm_person_name(raw);
        if (pq->fuzzy) {
            if (strchr(raw, '"')) {
                free(norm);
                return store_seterr(err, STORE_EINVAL, "a fuzzy person-name query cannot contain '\"'");
            }
            char **words, *storage;
            size_t n = norm_words(norm, &words, &storage);
            f->kind = M_FUZZY;
            f->table = IX_WORD;
            f->n_values = 0;
            for (size_t k = 0; k < n; k++) {
                char *pat = glob_pattern(words[k]);
                size_t len = strlen(pat);
                pat = realloc(pat, len + 2);
                strcpy(pat + len, "*");
                add_value(f, pat);
            }
            free(words);
            free(storage);
            if (!f->n_values) add_value(f, strdup("*"));
        } else if (has_wildcard(norm)) {
            f->kind = M_WILDCARD;
            f->values[0] = glob_pattern(norm);
        } else {
            f->values[0] = strdup(norm);
        }
        free(raw);
        free(norm);
    }
    return STORE_OK;
}

static store_status parse_include(parsed_query *pq, const char *value, store_err *err)
{
    char *copy = strdup(value), *save = NULL;
    store_status st = STORE_OK;
    for (char *t = strtok_r(copy, ",", &save); t && st == STORE_OK; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        if (strcasecmp(t, "all") == 0) {
            pq->include_all = true;
            continue;
        }
        uint32_t tag;
        char vr[3];
        if (tags_parse(t, &tag, vr) != 0)
            st = store_seterr(err, STORE_EINVAL, "unknown attribute '%s' in includefield", t);
        else if (pq->n_include < MAX_INCLUDE)
            pq->include[pq->n_include++] = tag;
    }
    free(copy);
    if (st == STORE_OK && pq->include_all && pq->n_include)
        st = store_seterr(err, STORE_EINVAL, "cannot specify included fields in addition to 'all'");
    return st;
}

/* PQ comes zeroed, with the registry of extended query tags filled in (match_keys). */
static store_status parse_query(const store_query *q, parsed_query *pq, store_err *err)
{
    pq->limit = LIMIT_DEFAULT;
    bool seen_limit = false, seen_offset = false, seen_fuzzy = false;
    for (size_t i = 0; i < q->n_params; i++) {
        const char *k = q->params[i].key, *v = q->params[i].value ? q->params[i].value : "";
        store_status st = STORE_OK;
        if (strcasecmp(k, "includefield") == 0) {
            st = parse_include(pq, v, err);
        } else if (strcasecmp(k, "limit") == 0) {
            if (seen_limit) return store_seterr(err, STORE_EINVAL, "limit is given more than once");
            seen_limit = pq->limit_given = true;
            if (!parse_long(v, &pq->limit) || pq->limit < 1 || pq->limit > LIMIT_MAX)
                return store_seterr(err, STORE_EINVAL, "limit must be an integer from 1 to %d, not '%s'", LIMIT_MAX, v);
        } else if (strcasecmp(k, "offset") == 0) {
            if (seen_offset) return store_seterr(err, STORE_EINVAL, "offset is given more than once");
            seen_offset = true;
            if (!parse_long(v, &pq->offset) || pq->offset < 0)
                return store_seterr(err, STORE_EINVAL, "offset must be an integer of 0 or more, not '%s'", v);
        } else if (strcasecmp(k, "fuzzymatching") == 0) {
            if (seen_fuzzy) return store_seterr(err, STORE_EINVAL, "fuzzymatching is given more than once");
            seen_fuzzy = true;
            if (strcasecmp(v, "true") == 0) pq->fuzzy = true;
            else if (strcasecmp(v, "false") != 0)
                return store_seterr(err, STORE_EINVAL, "fuzzymatching must be true or false, not '%s'", v);
        } else {
            st = parse_filter(q, pq, k, v, err);
        }
        if (st != STORE_OK) return st;
    }
    return finish_filters(pq, err);
}

/* ---- SQL -------------------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s) abort();
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static const char *const ix_name[] = {"ix_text", "ix_word", "ix_int", "ix_real"};

/* The value condition of a filter (on ix_*.value); its values are bound by bind_filter. */
static void value_sql(sbuf *b, const filter *f)
{
    switch (f->kind) {
    case M_LIST:
        sb_add(b, "value IN (");
        for (size_t k = 0; k < f->n_values; k++) sb_add(b, k ? ",?" : "?");
        sb_add(b, ")");
        break;
    case M_RANGE:
        if (f->values[0] && f->values[1]) sb_add(b, "value BETWEEN ? AND ?");
        else if (f->values[0]) sb_add(b, "value >= ?");
        else sb_add(b, "value <= ?");
        break;
    case M_WILDCARD:
    case M_FUZZY:
        sb_add(b, "value GLOB ?");
        break;
    default:
        sb_add(b, "value = ?");
    }
}

static void bind_values(sqlite3_stmt *st, int *i, const filter *f, size_t from, size_t to)
{
    if (f->table == IX_INT && f->kind == M_EXACT) {
        sqlite3_bind_int64(st, (*i)++, f->number);
        return;
    }
    if (f->table == IX_REAL && f->kind == M_EXACT) {
        sqlite3_bind_double(st, (*i)++, f->real);
        return;
    }
    for (size_t k = from; k < to; k++)
        if (f->values[k]) sqlite3_bind_text(st, (*i)++, f->values[k], -1, SQLITE_STATIC);
}

/* How few rows a filter is likely to match: the most selective one drives the query. */
static int selectivity(const filter *f)
{
    switch (f->kind) {
    case M_LIST: return 0;
    case M_EXACT: return f->table == IX_TEXT ? 1 : 2;
    case M_FUZZY: return 3;
    case M_WILDCARD: return f->values[0][0] == '*' || f->values[0][0] == '?' ? 6 : 4;
    default: return 5;
    }
}

/* Keys of the matching entries, newest first, one page.
 *
 * The most selective filter drives: its matching keys are joined to the result level's
 * table (CROSS JOIN keeps that order), and every other filter is a correlated EXISTS on
 * the (tag, key) primary key. So the work grows with the matches, not with the archive;
 * without filters, the recency index gives the first page directly. */
static store_status find_keys(db_t *db, const store_query *q, const parsed_query *pq, int64_t part,
                              int64_t study, int64_t series, int64_t **keys, size_t *n, store_err *err)
{
    static const char *const table[] = {"study st", "series se", "instance i"};
    static const char *const key[] = {"st.key", "se.key", "i.watermark"};
    static const char *const prefix[] = {"st", "se", "i"};
    static const char *const col[3][3] = {
        {"st.key", NULL, NULL},
        {"se.study", "se.key", NULL},
        {"i.study", "i.series", "i.watermark"},
    };
    static const char *const order[] = {" ORDER BY st.rep DESC", " ORDER BY se.rep DESC", " ORDER BY i.watermark DESC"};
    const filter *drive = NULL;
    for (size_t i = 0; i < pq->n_filters; i++)
        if (!drive || selectivity(&pq->f[i]) < selectivity(drive)) drive = &pq->f[i];

    sbuf b = {0};
    sb_add(&b, "SELECT %s FROM ", key[q->level]);
    if (drive) {
        /* INDEXED BY: with DISTINCT, SQLite would otherwise walk the (tag, key) primary key,
         * i.e. every value of the tag, for ranges and patterns. */
        sb_add(&b, "(SELECT DISTINCT key FROM %s INDEXED BY %s_value WHERE tag=%u AND ", ix_name[drive->table],
               ix_name[drive->table], drive->tag);
        value_sql(&b, drive);
        sb_add(&b, ") f CROSS JOIN %s ON %s=f.key", table[q->level], col[q->level][drive->level]);
    } else {
        sb_add(&b, "%s", table[q->level]);
    }
    sb_add(&b, " WHERE %s.partition=?", prefix[q->level]);
    if (study) sb_add(&b, " AND %s=%lld", col[q->level][0], (long long)study);
    if (series) sb_add(&b, " AND %s=%lld", col[q->level][1], (long long)series);
    for (size_t i = 0; i < pq->n_filters; i++) {
        const filter *f = &pq->f[i];
        /* A fuzzy filter is one EXISTS per word; the driving one covers its first word. */
        for (size_t w = (f == drive ? 1 : 0); w < (f->kind == M_FUZZY ? f->n_values : (f == drive ? 0 : 1)); w++) {
            sb_add(&b, " AND EXISTS (SELECT 1 FROM %s x WHERE x.tag=%u AND x.key=%s AND ", ix_name[f->table], f->tag,
                   col[q->level][f->level]);
            value_sql(&b, f);
            sb_add(&b, ")");
        }
    }
    sb_add(&b, "%s LIMIT %ld OFFSET %ld", order[q->level], pq->limit, pq->offset);

    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, b.s, -1, &st, NULL) != SQLITE_OK) {
        store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
        free(b.s);
        return STORE_EIO;
    }
    free(b.s);
    int bi = 1;
    if (drive) bind_values(st, &bi, drive, 0, drive->kind == M_FUZZY ? 1 : drive->n_values);
    sqlite3_bind_int64(st, bi++, part);
    for (size_t i = 0; i < pq->n_filters; i++) {
        const filter *f = &pq->f[i];
        if (f->kind == M_FUZZY)
            bind_values(st, &bi, f, f == drive ? 1 : 0, f->n_values);
        else if (f != drive)
            bind_values(st, &bi, f, 0, f->n_values);
    }
    *keys = malloc((size_t)pq->limit * sizeof **keys);
    if (!*keys) abort();
    *n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) (*keys)[(*n)++] = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return store_seterr(err, STORE_EIO, "index: %s", sqlite3_errstr(rc));
    return STORE_OK;
}

/* ---- Dressing the results --------------------------------------------------------- */

typedef struct {
    sqlite3_stmt *attrs;  /* attrs of a watermark */
    sqlite3_stmt *meta;   /* full metadata of a watermark */
    sqlite3_stmt *study;  /* rep, counts of a study */
    sqlite3_stmt *series; /* rep, study, count of a series */
    sqlite3_stmt *inst;   /* study, series of an instance */
    sqlite3_stmt *mods;   /* modalities of a study */
} dresser;

static int64_t one_int(sqlite3_stmt *st, int64_t key, int col)
{
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, key);
    return sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, col) : 0;
}

static json_t *load_json(sqlite3_stmt *st, int64_t wm)
{
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, wm);
    if (sqlite3_step(st) != SQLITE_ROW) return json_object();
    json_t *j = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
    return j ? j : json_object();
}

static json_t *is_value(int64_t v)
{
    return json_pack("{s:s, s:[I]}", "vr", "IS", "Value", (json_int_t)v);
}

static json_t *modalities(dresser *d, int64_t study)
{
    sqlite3_reset(d->mods);
    sqlite3_bind_int64(d->mods, 1, study);
    json_t *values = json_array();
    while (sqlite3_step(d->mods) == SQLITE_ROW)
        json_array_append_new(values, json_string((const char *)sqlite3_column_text(d->mods, 0)));
    if (json_array_size(values) == 0) {
        json_decref(values);
        return json_pack("{s:s}", "vr", "CS");
    }
    return json_pack("{s:s, s:o}", "vr", "CS", "Value", values);
}

static bool wanted(const uint32_t *set, size_t n, uint32_t tag)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == tag) return true;
    return false;
}

/* Collects the tags to return for this resource. */
static size_t return_set(const store_query *q, const parsed_query *pq, uint32_t *out, size_t cap)
{
    size_t n = 0;
    store_level lowest = q->series_uid ? STORE_LEVEL_INSTANCE : q->study_uid ? STORE_LEVEL_SERIES : STORE_LEVEL_STUDY;
    if (q->level < lowest) lowest = q->level;
    for (int l = lowest; l <= (int)q->level; l++) {
        size_t k;
        const uint32_t *d = tags_default((store_level)l, q->api_version, &k);
        for (size_t i = 0; i < k && n < cap; i++)
            if (!wanted(out, n, d[i])) out[n++] = d[i];
        if (q->with_counts && l == (int)q->level) { /* the counts of what is listed */
            d = tags_computed((store_level)l, &k);
            for (size_t i = 0; i < k && n < cap; i++)
                if (!wanted(out, n, d[i])) out[n++] = d[i];
        }
        if (!pq->include_all) continue;
        d = tags_default((store_level)l, 1, &k); /* "all" = the v1 defaults plus extras */
        for (size_t i = 0; i < k && n < cap; i++)
            if (!wanted(out, n, d[i])) out[n++] = d[i];
        d = tags_all((store_level)l, &k);
        for (size_t i = 0; i < k && n < cap; i++)
            if (!wanted(out, n, d[i])) out[n++] = d[i];
        /* v2's computed study/series results are part of "all" too. */
        static const uint32_t computed[3][2] = {{TAG_ModalitiesInStudy, TAG_NumberOfStudyRelatedInstances},
                                                {TAG_NumberOfSeriesRelatedInstances, 0},
                                                {0, 0}};
        for (int i = 0; i < 2 && n < cap; i++)
            if (computed[l][i] && !wanted(out, n, computed[l][i])) out[n++] = computed[l][i];
    }
    for (size_t i = 0; i < pq->n_include && n < cap; i++)
        if (!wanted(out, n, pq->include[i])) out[n++] = pq->include[i];
    for (size_t i = 0; i < pq->n_filters && n < cap; i++)
        if (!wanted(out, n, pq->f[i].tag)) out[n++] = pq->f[i].tag;
    return n;
}

static json_t *dress(dresser *d, const store_query *q, int64_t key, const uint32_t *tags, size_t n_tags)
{
    int64_t study, series = 0, wm_study, wm_series = 0, wm_inst = 0;
    if (q->level == STORE_LEVEL_INSTANCE) {
        wm_inst = key;
        study = one_int(d->inst, key, 0);
        series = one_int(d->inst, key, 1);
    } else if (q->level == STORE_LEVEL_SERIES) {
        series = key;
        study = one_int(d->series, key, 1);
    } else {
        study = key;
    }
    wm_study = one_int(d->study, study, 0);
    if (series) wm_series = one_int(d->series, series, 0);
    json_t *src[3] = {NULL, NULL, NULL}, *full = NULL;
    int64_t wm_level[3] = {wm_study, wm_series ? wm_series : wm_study, wm_inst ? wm_inst : wm_series ? wm_series : wm_study};
    json_t *out = json_object();
    for (size_t i = 0; i < n_tags; i++) {
        uint32_t tag = tags[i];
        char hex[9];
        tags_hex(tag, hex);
        store_level level;
        json_t *v = NULL;
        if (tags_is_computed(tag, &level)) {
            if (tag == TAG_ModalitiesInStudy) v = modalities(d, study);
            else if (tag == TAG_NumberOfStudyRelatedSeries) v = is_value(one_int(d->study, study, 1));
            else if (tag == TAG_NumberOfStudyRelatedInstances) v = is_value(one_int(d->study, study, 2));
            else if (series) v = is_value(one_int(d->series, series, 2));
            if (v) json_object_set_new(out, hex, v);
            continue;
        }
        if (tags_returnable(tag, &level) || (tags_core(tag) && (level = tags_core(tag)->level, true))) {
            if (level > q->level) level = q->level;
            if (!src[level]) src[level] = load_json(d->attrs, wm_level[level]);
            v = json_object_get(src[level], hex);
        } else {
            /* Any other attribute: from the full metadata of the entry's instance. */
            if (!full) full = load_json(d->meta, wm_level[q->level]);
            v = json_object_get(full, hex);
        }
        if (v) json_object_set(out, hex, v);
    }
    for (int l = 0; l < 3; l++) json_decref(src[l]);
    json_decref(full);
    return out;
}

/* The dresser's statements are the connection's cached ones: reset, never finalized. */
static void dresser_close(dresser *d)
{
    sqlite3_stmt *all[] = {d->attrs, d->meta, d->study, d->series, d->inst, d->mods};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) sqlite3_reset(all[i]);
}

static int dresser_open(dresser *d, db_t *db)
{
    memset(d, 0, sizeof *d);
    if (!(d->attrs = db_stmt(db, ST_DRESS_ATTRS)) || !(d->meta = db_stmt(db, ST_DRESS_META)) ||
        !(d->study = db_stmt(db, ST_DRESS_STUDY)) || !(d->series = db_stmt(db, ST_DRESS_SERIES)) ||
        !(d->inst = db_stmt(db, ST_DRESS_INSTANCE)) || !(d->mods = db_stmt(db, ST_DRESS_MODALITIES)))
        return SQLITE_ERROR;
    return SQLITE_OK;
}

static int cmp_tag(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- Entry point ------------------------------------------------------------------ */

/* Resolves the URL's study/series to keys; 0 when they do not exist (no results). */
static int64_t scope_key(db_t *db, bool series, int64_t parent, const char *uid)
{
    sqlite3_stmt *st = db_stmt(db, series ? ST_SERIES_GET : ST_STUDY_GET);
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, parent);
    sqlite3_bind_text(st, 2, uid, -1, SQLITE_STATIC);
    int64_t key = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return key;
}

/* Parses Q and finds the keys of its matches, newest first: up to the query's limit, or
 * up to MAX (when non-zero) if the query gives none. *DB stays borrowed on success. */
static store_status match_keys(store_t *s, const store_query *q, size_t max, db_t **dbp, parsed_query *pq,
                               int64_t **keys, size_t *n, store_err *err)
{
    memset(pq, 0, sizeof *pq);
    *keys = NULL;
    *n = 0;
    *dbp = NULL;
    if ((q->study_uid && !store_valid_uid(q->study_uid)) || (q->series_uid && !store_valid_uid(q->series_uid)))
        return store_seterr(err, STORE_EINVAL, "the study or series UID in the URL is not a valid UID");
    if (q->series_uid && !q->study_uid) return store_seterr(err, STORE_EINVAL, "a series scope needs a study");
    db_t *db = db_get(s, err);
    if (!db) return err ? err->status : STORE_EIO;
    xqt_refresh(s, db);
    pq->n_xqt = xqt_entries(s, pq->xqt);
    store_status st = parse_query(q, pq, err);
    if (st != STORE_OK) {
        db_put(s, db);
        return st;
    }
    if (max && !pq->limit_given) pq->limit = (long)max;
    int64_t part = partition_key(db, q->partition ? q->partition : STORE_DEFAULT_PARTITION, false);
    int64_t study = part && q->study_uid ? scope_key(db, false, part, q->study_uid) : 0;
    int64_t series = study && q->series_uid ? scope_key(db, true, study, q->series_uid) : 0;
    bool empty = !part || (q->study_uid && !study) || (q->series_uid && !series);
    if (!empty) st = find_keys(db, q, pq, part, study, series, keys, n, err);
    if (st != STORE_OK) {
        db_put(s, db);
        free(*keys);
        *keys = NULL;
        *n = 0;
        return st;
    }
    *dbp = db;
    return STORE_OK;
}

store_status store_find(store_t *s, const store_query *q, store_find_result *res, store_err *err)
{
    memset(res, 0, sizeof *res);
    parsed_query pq;
    db_t *db;
    int64_t *keys;
    size_t n;
    store_status st = match_keys(s, q, 0, &db, &pq, &keys, &n, err);
    if (st != STORE_OK) {
        free_query(&pq);
        return st;
    }
    json_t *array = json_array();
    if (n > 0) {
        uint32_t tags[512];
        size_t n_tags = return_set(q, &pq, tags, 512);
        /* Insert in tag order, so the output is ordered without sorting nested keys. */
        qsort(tags, n_tags, sizeof tags[0], cmp_tag);
        dresser d;
        if (dresser_open(&d, db) != SQLITE_OK) {
            st = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
        } else {
            for (size_t i = 0; i < n; i++) json_array_append_new(array, dress(&d, q, keys[i], tags, n_tags));
        }
        dresser_close(&d);
    }
    db_put(s, db);
    free(keys);
    free_query(&pq);
    if (st == STORE_OK) {
        snprintf(res->erroneous, sizeof res->erroneous, "%s", pq.erroneous);
        res->count = json_array_size(array);
        res->json = json_dumps(array, JSON_COMPACT);
        if (!res->json) abort();
    }
    json_decref(array);
    return st;
}

store_status store_find_refs(store_t *s, const store_query *q, size_t max, store_ref **out, size_t *n,
                             store_err *err)
{
    *out = NULL;
    *n = 0;
    parsed_query pq;
    db_t *db;
    int64_t *keys;
    size_t nk;
    store_status st = match_keys(s, q, max ? max : 1, &db, &pq, &keys, &nk, err);
    free_query(&pq);
    if (st != STORE_OK) return st;
    static const char *const sql[] = {
        "SELECT uid, NULL, NULL FROM study WHERE key=?1",
        "SELECT st.uid, se.uid, NULL FROM series se JOIN study st ON st.key=se.study WHERE se.key=?1",
        "SELECT st.uid, se.uid, i.uid FROM instance i JOIN series se ON se.key=i.series"
        " JOIN study st ON st.key=i.study WHERE i.watermark=?1",
    };
    sqlite3_stmt *u = NULL;
    if (nk && sqlite3_prepare_v2(db->h, sql[q->level], -1, &u, NULL) != SQLITE_OK)
        st = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    if (st == STORE_OK && nk) {
        *out = calloc(nk, sizeof **out);
        if (!*out) abort();
        for (size_t i = 0; i < nk; i++) {
            sqlite3_reset(u);
            sqlite3_bind_int64(u, 1, keys[i]);
            if (sqlite3_step(u) != SQLITE_ROW) continue;
            store_ref *r = &(*out)[(*n)++];
            snprintf(r->study_uid, sizeof r->study_uid, "%s", (const char *)sqlite3_column_text(u, 0));
            if (sqlite3_column_type(u, 1) != SQLITE_NULL)
                snprintf(r->series_uid, sizeof r->series_uid, "%s", (const char *)sqlite3_column_text(u, 1));
            if (sqlite3_column_type(u, 2) != SQLITE_NULL)
                snprintf(r->sop_instance_uid, sizeof r->sop_instance_uid, "%s", (const char *)sqlite3_column_text(u, 2));
        }
    }
    sqlite3_finalize(u);
    db_put(s, db);
    free(keys);
    return st;
}

void store_find_result_clear(store_find_result *r)
{
    free(r->json);
    r->json = NULL;
    r->count = 0;
}
