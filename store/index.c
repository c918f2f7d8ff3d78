/* index.c — what an instance puts into the index: searchable values (normalised, per
 * level), the returned-attributes JSON, the frame table, and the rows themselves.
 * Values are taken from the instance's DICOM JSON, after validation, so an attribute
 * left out of the metadata is left out of the index too (the reference's v2 rule). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "normalize.h"

/* ---- Value lists ------------------------------------------------------------------ */

static void ix_add(ix_list *l, uint32_t tag, ix_table table, char *text, int64_t i, double r)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    l->v[l->n++] = (ix_value){tag, table, text, i, r};
}

void ix_list_free(ix_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].text);
    free(l->v);
    memset(l, 0, sizeof *l);
}

char *ix_list_serialize(const ix_list *l)
{
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    if (!out) abort();
    out[0] = 0;
    for (size_t i = 0; i < l->n; i++) {
        const ix_value *v = &l->v[i];
        char num[64] = "";
        if (v->table == IX_INT) snprintf(num, sizeof num, "%lld", (long long)v->i);
        if (v->table == IX_REAL) snprintf(num, sizeof num, "%.17g", v->r);
        const char *val = v->text ? v->text : num;
        size_t need = len + strlen(val) + 32;
        if (need > cap) {
            cap = need * 2;
            out = realloc(out, cap);
            if (!out) abort();
        }
        len += (size_t)sprintf(out + len, "%08X %d %s\n", v->tag, (int)v->table, val);
    }
    return out;
}

/* ---- Extraction ------------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) abort();
    return p;
}

/* A person name "Alphabetic=Ideographic=Phonetic": each group folded, as words too. */
static void add_person_name(ix_list *l, uint32_t tag, const char *text)
{
    char *copy = xstrdup(text), *save = NULL;
    size_t groups = 0;
    for (char *g = strtok_r(copy, "=", &save); g; g = strtok_r(NULL, "=", &save)) {
        char *norm = norm_person_name(g);
        if (!*norm) {
            free(norm);
            continue;
        }
        groups++;
        char **words, *storage;
        size_t n = norm_words(norm, &words, &storage);
        for (size_t i = 0; i < n; i++) ix_add(l, tag, IX_WORD, xstrdup(words[i]), 0, 0);
        free(words);
        free(storage);
        ix_add(l, tag, IX_TEXT, norm, 0, 0);
    }
    free(copy);
    /* Also the whole value, so "Yamada^Tarou=山田^太郎" matches exactly as written. */
    if (groups > 1) ix_add(l, tag, IX_TEXT, norm_person_name(text), 0, 0);
}

bool index_add_value(ix_list *l, const index_tag *t, const char *s)
{
    char buf[32], *end;
    bool zone;
    switch (tag_vr_class(t->vr)) {
    case VRC_PN: add_person_name(l, t->tag, s); return true;
    case VRC_TEXT: ix_add(l, t->tag, IX_TEXT, norm_fold(s), 0, 0); return true;
    case VRC_UID: ix_add(l, t->tag, IX_TEXT, xstrdup(s), 0, 0); return true;
    case VRC_DATE:
        if (!norm_date(s, buf)) return false;
        ix_add(l, t->tag, IX_TEXT, xstrdup(buf), 0, 0);
        return true;
    case VRC_TIME:
        if (!norm_time(s, buf)) return false;
        ix_add(l, t->tag, IX_TEXT, xstrdup(buf), 0, 0);
        return true;
    case VRC_DATETIME:
        if (!norm_datetime(s, buf, &zone)) return false;
        ix_add(l, t->tag, IX_TEXT, xstrdup(buf), 0, 0);
        return true;
    case VRC_INT: {
        long long v = strtoll(s, &end, 10);
        while (*end == ' ') end++;
        if (end == s || *end) return false;
        ix_add(l, t->tag, IX_INT, NULL, v, 0);
        return true;
    }
    case VRC_REAL: {
        double v = strtod(s, &end);
        while (*end == ' ') end++;
        if (end == s || *end || !isfinite(v)) return false;
        ix_add(l, t->tag, IX_REAL, NULL, 0, v);
        return true;
    }
    case VRC_NONE: break;
    }
    return false;
}

static const dcm_value *find_value(const dcm_value *v, size_t n, uint32_t tag)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].tag == tag) return &v[i];
    return NULL;
}

void index_extract(const store_t *s, const dcm_value *values, size_t n, store_item *item)
{
    for (size_t i = 0; i < s->n_index_tags; i++) {
        const index_tag *t = &s->index_tags[i];
        const dcm_value *v = find_value(values, n, t->tag);
        if (!v) continue;
        if (v->multiple) item->result.multiple_values = true;
        index_add_value(&item->ix[t->level], t, v->text);
    }

    for (int level = STORE_LEVEL_STUDY; level <= STORE_LEVEL_SERIES; level++)
        item->ix_key[level] = ix_list_serialize(&item->ix[level]);
    const dcm_value *modality = find_value(values, n, TAG_Modality);
    snprintf(item->modality, sizeof item->modality, "%s", modality ? modality->text : "");
    const dcm_value *number = find_value(values, n, TAG_InstanceNumber);
    char *end;
    if (number) {
        item->instance_number = strtoll(number->text, &end, 10);
        item->has_instance_number = end != number->text;
    }
}

void index_extract_xqt(const store_t *s, const dcm_value *values, size_t n, store_item *item)
{
    index_tag xqt[STORE_XQT_MAX];
    size_t nx = xqt_indexed(s, xqt);
    for (size_t i = 0; i < nx; i++) {
        const dcm_value *v = find_value(values, n, xqt[i].tag);
        if (v) index_add_value(&item->ix[xqt[i].level], &xqt[i], v->text);
    }
    for (int level = STORE_LEVEL_STUDY; level <= STORE_LEVEL_SERIES && nx; level++) {
        free(item->ix_key[level]);
        item->ix_key[level] = ix_list_serialize(&item->ix[level]);
    }
}

void index_request(const store_t *s, dcm_request *req)
{
    req->attr_tags = s->attr_tags;
    req->n_attr_tags = s->n_attr_tags;
    req->value_tags = s->value_tags;
    req->n_value_tags = s->n_value_tags;
}

/* The tag of private element TAG in the block CREATOR reserved in META: (gggg,00xx)
 * holds the creator, (gggg,xxee) the element; 0 when it reserved none. */
static uint32_t private_tag(json_t *meta, uint32_t tag, const char *creator)
{
    uint32_t group = tag >> 16;
    for (uint32_t block = 0x10; block <= 0xFF; block++) {
        char hex[9];
        snprintf(hex, sizeof hex, "%04X%04X", group, block);
        const char *v = json_string_value(json_array_get(json_object_get(json_object_get(meta, hex), "Value"), 0));
        if (!v) continue;
        size_t n = strlen(v);
        while (n && v[n - 1] == ' ') n--; /* LO values may be padded */
        if (n == strlen(creator) && strncmp(v, creator, n) == 0) return group << 16 | block << 8 | (tag & 0xFF);
    }
    return 0;
}

char *index_value_from_json(json_t *meta, uint32_t tag, const char *creator, bool *multiple)
{
    if (creator && *creator && (tag >> 16) & 1 && !(tag = private_tag(meta, tag, creator))) return NULL;
    char hex[9];
    tags_hex(tag, hex);
    json_t *values = json_object_get(json_object_get(meta, hex), "Value");
    json_t *first = json_array_get(values, 0);
    char buf[1024] = "";
    if (json_is_string(first)) {
        snprintf(buf, sizeof buf, "%s", json_string_value(first));
    } else if (json_is_integer(first)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(first));
    } else if (json_is_real(first)) {
        snprintf(buf, sizeof buf, "%.17g", json_real_value(first));
    } else if (json_is_object(first)) {
        static const char *const groups[] = {"Alphabetic", "Ideographic", "Phonetic"};
        for (int g = 0; g < 3; g++) {
            const char *part = json_string_value(json_object_get(first, groups[g]));
            size_t len = strlen(buf);
            snprintf(buf + len, sizeof buf - len, "%s%s", g ? "=" : "", part ? part : "");
        }
        size_t len = strlen(buf);
        while (len > 0 && buf[len - 1] == '=') buf[--len] = 0;
    }
    if (multiple) *multiple = json_array_size(values) > 1;
    return buf[0] ? xstrdup(buf) : NULL;
}

/* The first value of each wanted attribute of stored DICOM JSON, written as DICOM text
 * (the inverse of what DCMTK's JSON writer did), for re-deriving a level's values: the
 * core tags and the extended query tags. */
size_t index_values_from_json(const store_t *s, json_t *meta, dcm_value **out)
{
    index_tag xqt[STORE_XQT_MAX];
    size_t nx = xqt_indexed(s, xqt), cap = s->n_value_tags + nx;
    dcm_value *v = calloc(cap ? cap : 1, sizeof *v);
    if (!v) abort();
    size_t n = 0;
    for (size_t i = 0; i < cap; i++) {
        bool core = i < s->n_value_tags;
        uint32_t tag = core ? s->value_tags[i] : xqt[i - s->n_value_tags].tag;
        bool multiple = false;
        char *text = index_value_from_json(meta, tag, core ? NULL : xqt[i - s->n_value_tags].creator, &multiple);
        if (!text) continue;
        v[n++] = (dcm_value){.tag = tag, .text = text, .multiple = multiple};
    }
    *out = v;
    return n;
}

/* ---- Frames blob: little-endian u64s ---------------------------------------------- */
/* native:       1, count, offset, frame_size
 * encapsulated: 2, count, n_fragments, first[0..count], (offset, length) * n_fragments */

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void *frames_encode(const dcm_frames *f, size_t *len)
{
    size_t n = f->kind == 1 ? 4 : f->kind == 2 ? 3 + (size_t)f->count + 1 + 2 * (size_t)f->n_fragments : 0;
    *len = n * 8;
    if (!n) return NULL;
    unsigned char *b = malloc(*len), *p = b;
    if (!b) abort();
    put64(p, (uint64_t)f->kind), p += 8;
    put64(p, f->count), p += 8;
    if (f->kind == 1) {
        put64(p, f->offset), p += 8;
        put64(p, f->frame_size);
        return b;
    }
    put64(p, f->n_fragments), p += 8;
    for (uint32_t i = 0; i <= f->count; i++, p += 8) put64(p, f->first[i]);
    for (uint32_t i = 0; i < 2 * f->n_fragments; i++, p += 8) put64(p, f->fragments[i]);
    return b;
}

int frames_decode(const void *blob, size_t len, uint32_t frame, store_range **ranges, size_t *n)
{
    const unsigned char *b = blob;
    if (!b || len < 32 || len % 8) return -1;
    uint64_t kind = get64(b), count = get64(b + 8);
    if (frame < 1 || frame > count) return 1;
    if (kind == 1) {
        uint64_t off = get64(b + 16), size = get64(b + 24);
        *ranges = malloc(sizeof **ranges);
        if (!*ranges) abort();
        (*ranges)[0] = (store_range){off + (frame - 1) * size, size};
        *n = 1;
        return 0;
    }
    uint64_t nfrag = get64(b + 16);
    if (kind != 2 || len != 8 * (3 + count + 1 + 2 * nfrag)) return -1;
    const unsigned char *first = b + 24, *frags = first + 8 * (count + 1);
    uint64_t from = get64(first + 8 * (frame - 1)), to = get64(first + 8 * frame);
    if (from >= to || to > nfrag) return -1;
    *n = (size_t)(to - from);
    *ranges = malloc(*n * sizeof **ranges);
    if (!*ranges) abort();
    for (uint64_t k = from; k < to; k++)
        (*ranges)[k - from] = (store_range){get64(frags + 16 * k), get64(frags + 16 * k + 8)};
    return 0;
}

/* ---- Rows ------------------------------------------------------------------------- */

static const stmt_id add_stmt[] = {ST_IX_TEXT_ADD, ST_IX_WORD_ADD, ST_IX_INT_ADD, ST_IX_REAL_ADD};
static const stmt_id del_stmt[] = {ST_IX_TEXT_DEL, ST_IX_WORD_DEL, ST_IX_INT_DEL, ST_IX_REAL_DEL};

int index_write_level(db_t *db, int64_t key, const ix_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const ix_value *v = &l->v[i];
        sqlite3_stmt *st = db_stmt(db, add_stmt[v->table]);
        if (!st) return SQLITE_ERROR;
        sqlite3_bind_int64(st, 1, v->tag);
        sqlite3_bind_int64(st, 2, key);
        if (v->table == IX_INT) sqlite3_bind_int64(st, 3, v->i);
        else if (v->table == IX_REAL) sqlite3_bind_double(st, 3, v->r);
        else sqlite3_bind_text(st, 3, v->text, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) return rc;
    }
    return SQLITE_OK;
}

int index_clear_tag(db_t *db, int64_t key, uint32_t tag)
{
    for (int t = 0; t < 4; t++) {
        sqlite3_stmt *st = db_stmt(db, del_stmt[t]);
        if (!st) return SQLITE_ERROR;
        sqlite3_bind_int64(st, 1, tag);
        sqlite3_bind_int64(st, 2, key);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) return rc;
    }
    return SQLITE_OK;
}

int index_clear_level(db_t *db, int64_t key, store_level level, const store_t *s)
{
    int rc = SQLITE_OK;
    for (size_t i = 0; i < s->n_index_tags && rc == SQLITE_OK; i++)
        if (s->index_tags[i].level == level) rc = index_clear_tag(db, key, s->index_tags[i].tag);
    index_tag xqt[STORE_XQT_MAX];
    size_t nx = xqt_indexed(s, xqt);
    for (size_t i = 0; i < nx && rc == SQLITE_OK; i++)
        if (xqt[i].level == level) rc = index_clear_tag(db, key, xqt[i].tag);
    return rc;
}

static int step_done(sqlite3_stmt *st)
{
    if (!st) return SQLITE_ERROR;
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Finds or creates the row of a study (series when PARENT > 0); *CREATED tells which,
 * and *OLD_IX gets the stored values' serialisation (malloc'd). */
static int64_t find_or_add(db_t *db, bool series, int64_t partition, int64_t parent, const char *uid,
                           bool *created, char **old_ix)
{
    sqlite3_stmt *st = db_stmt(db, series ? ST_SERIES_GET : ST_STUDY_GET);
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, series ? parent : partition);
    sqlite3_bind_text(st, 2, uid, -1, SQLITE_STATIC);
    *created = false;
    *old_ix = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *old_ix = xstrdup((const char *)sqlite3_column_text(st, 1));
        return sqlite3_column_int64(st, 0);
    }
    st = db_stmt(db, series ? ST_SERIES_ADD : ST_STUDY_ADD);
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, partition);
    if (series) {
        sqlite3_bind_int64(st, 2, parent);
        sqlite3_bind_text(st, 3, uid, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_text(st, 2, uid, -1, SQLITE_STATIC);
    }
    if (sqlite3_step(st) != SQLITE_DONE) return 0;
    *created = true;
    return sqlite3_last_insert_rowid(db->h);
}

/* Rewrites a study's or series' searchable values when they differ from the stored
 * ones: in a study all instances usually agree, and then nothing is written. */
static int refresh_level(db_t *db, const store_t *s, int64_t key, store_level level, const store_item *item,
                         const char *old_ix)
{
    if (old_ix && strcmp(old_ix, item->ix_key[level]) == 0) return SQLITE_OK;
    int rc = old_ix ? index_clear_level(db, key, level, s) : SQLITE_OK;
    return rc == SQLITE_OK ? index_write_level(db, key, &item->ix[level]) : rc;
}

int index_insert(store_t *s, db_t *db, store_item *item, store_err *err)
{
    xqt_index_item(s, db, item);
    const store_ingest_result *r = &item->result;
    int rc = SQLITE_ERROR;
    char *study_ix = NULL, *series_ix = NULL;
    bool new_study, new_series;
    int64_t part = partition_key(db, item->partition, true);
    int64_t study = part ? find_or_add(db, false, part, 0, r->study_uid, &new_study, &study_ix) : 0;
    int64_t series = study ? find_or_add(db, true, part, study, r->series_uid, &new_series, &series_ix) : 0;
    if (!series) goto out;
    if (!new_series) {
        sqlite3_stmt *st = db_stmt(db, ST_INSTANCE_EXISTS);
        if (!st) goto out;
        sqlite3_bind_int64(st, 1, series);
        sqlite3_bind_text(st, 2, r->sop_instance_uid, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            rc = SQLITE_CONSTRAINT;
            goto out;
        }
    }
    int64_t now = feed_time(db);
    sqlite3_stmt *st = db_stmt(db, ST_INSTANCE_ADD);
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_int64(st, 2, study);
    sqlite3_bind_int64(st, 3, series);
    sqlite3_bind_text(st, 4, r->sop_instance_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->sop_class_uid, -1, SQLITE_STATIC);
    if (item->has_instance_number) sqlite3_bind_int64(st, 6, item->instance_number);
    sqlite3_bind_text(st, 7, item->transfer_syntax, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, item->object, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, (int64_t)item->size);
    sqlite3_bind_int64(st, 10, item->frame_count);
    if (item->frames) sqlite3_bind_blob(st, 11, item->frames, (int)item->frames_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 12, now);
    sqlite3_bind_text(st, 13, item->attrs, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 14, item->crc32);
    if ((rc = step_done(st)) != SQLITE_OK) goto out;
    int64_t wm = sqlite3_last_insert_rowid(db->h);
    item->result.watermark = wm;

    st = db_stmt(db, ST_METADATA_ADD);
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, wm);
    /* A blob, so that length() is known without reading it (store_metadata_size). */
    sqlite3_bind_blob(st, 2, item->metadata, (int)strlen(item->metadata), SQLITE_STATIC);
    if ((rc = step_done(st)) != SQLITE_OK) goto out;
    if ((rc = index_write_level(db, wm, &item->ix[STORE_LEVEL_INSTANCE])) != SQLITE_OK) goto out;

    if ((rc = refresh_level(db, s, study, STORE_LEVEL_STUDY, item, study_ix)) != SQLITE_OK) goto out;
    if ((rc = refresh_level(db, s, series, STORE_LEVEL_SERIES, item, series_ix)) != SQLITE_OK) goto out;

    st = db_stmt(db, ST_STUDY_UPDATE);
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, study);
    sqlite3_bind_int64(st, 2, wm);
    sqlite3_bind_text(st, 3, item->ix_key[STORE_LEVEL_STUDY], -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, new_series ? 1 : 0);
    if ((rc = step_done(st)) != SQLITE_OK) goto out;
    st = db_stmt(db, ST_SERIES_UPDATE);
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, series);
    sqlite3_bind_int64(st, 2, wm);
    sqlite3_bind_text(st, 3, item->ix_key[STORE_LEVEL_SERIES], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, item->modality, -1, SQLITE_STATIC);
    if ((rc = step_done(st)) != SQLITE_OK) goto out;

    if (item->modality[0]) {
        char *m = norm_fold(item->modality);
        st = db_stmt(db, ST_IX_TEXT_ADD);
        if (st) {
            sqlite3_bind_int64(st, 1, TAG_ModalitiesInStudy);
            sqlite3_bind_int64(st, 2, study);
            sqlite3_bind_text(st, 3, m, -1, SQLITE_STATIC);
        }
        rc = step_done(st);
        free(m);
        if (rc != SQLITE_OK) goto out;
    }

    st = db_stmt(db, ST_CHANGE_ADD);
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_text(st, 2, "create", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, part);
    sqlite3_bind_text(st, 4, r->study_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->series_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->sop_instance_uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, wm);
    rc = step_done(st);
out:
    if (rc != SQLITE_OK && rc != SQLITE_CONSTRAINT)
        store_seterr(err, db_status(rc), "index: %s", sqlite3_errmsg(db->h));
    free(study_ix);
    free(series_ix);
    return rc;
}
