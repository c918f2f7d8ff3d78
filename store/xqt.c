/* xqt.c — extended query tags (store.h): the registry and its rules, the JSON the
 * reference writes for tags, errors and operations, and the reindex that indexes the
 * instances stored before a tag was added.
 *
 * The registry lives in table xqt; meta 'xqt_gen' changes with every change of it, so
 * each connection reloads its copy only when needed (xqt_refresh). Values come from each
 * instance's stored DICOM JSON, as at ingest: new instances get them at commit
 * (xqt_index_item, inside the group's transaction), older ones from the reindex, which
 * walks watermarks up to the last one stored when the tags were added, BATCH instances
 * per transaction, keeping its cursor in the same transaction. A crash loses at most the
 * batch in progress; whichever process next opens the archive (any command: a short one
 * does a batch or two before it exits, between batches) or asks for the operation
 * resumes it. One process reindexes at a time (reindex.lock). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define BATCH 256
#define LIST_MAX 200

enum { OP_NOT_STARTED, OP_RUNNING, OP_SUCCEEDED, OP_FAILED };

static const char *const level_names[] = {"study", "series", "instance"};
static const char *const status_names[] = {"adding", "ready", "deleting"};

/* ---- Small SQL helpers (the writer or a reader connection) ------------------------ */

static int64_t scalar(db_t *db, const char *sql, const char *text, int64_t a)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) == SQLITE_OK) {
        if (text) sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
        else sqlite3_bind_int64(st, 1, a);
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

static int exec1(db_t *db, const char *sql, int64_t a, const char *text)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(st, 1, a);
    if (text) sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int exec_text(db_t *db, const char *sql, const char *text)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int bump_gen(db_t *db)
{
    return db_exec(db, "UPDATE meta SET value=CAST(value AS INTEGER)+1 WHERE key='xqt_gen'", NULL);
}

static store_status index_error(db_t *db, store_err *err)
{
    int rc = sqlite3_errcode(db->h);
    return store_seterr(err, db_status(rc), "index: %s", sqlite3_errmsg(db->h));
}

/* ---- The registry ------------------------------------------------------------------ */

/* The registry's generation as DB sees it (a cached statement: this runs per commit
 * group and per query). */
static int64_t read_gen(db_t *db)
{
    sqlite3_stmt *st = db_stmt(db, ST_XQT_GEN);
    int64_t gen = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    if (st) sqlite3_reset(st);
    return gen;
}

void xqt_refresh(store_t *s, db_t *db)
{
    int64_t gen = read_gen(db);
    pthread_mutex_lock(&s->xqt_lock);
    if (gen != s->xqt_gen) {
        sqlite3_stmt *st = NULL;
        size_t n = 0;
        if (sqlite3_prepare_v2(db->h, "SELECT tag, vr, private_creator, level, status, query_enabled, error_count,"
                                      " operation FROM xqt ORDER BY tag", -1, &st, NULL) == SQLITE_OK) {
            while (n < STORE_XQT_MAX && sqlite3_step(st) == SQLITE_ROW) {
                xqt_entry *e = &s->xqt[n++];
                memset(e, 0, sizeof *e);
                e->t.tag = (uint32_t)sqlite3_column_int64(st, 0);
                snprintf(e->t.vr, sizeof e->t.vr, "%s", (const char *)sqlite3_column_text(st, 1));
                tags_hex(e->t.tag, e->path);
                const unsigned char *pc = sqlite3_column_text(st, 2);
                snprintf(e->private_creator, sizeof e->private_creator, "%s", pc ? (const char *)pc : "");
                memcpy(e->t.creator, e->private_creator, sizeof e->t.creator);
                e->t.level = (store_level)sqlite3_column_int(st, 3);
                e->status = sqlite3_column_int(st, 4);
                e->query_enabled = sqlite3_column_int(st, 5) != 0;
                e->error_count = sqlite3_column_int64(st, 6);
                const unsigned char *op = sqlite3_column_text(st, 7);
                snprintf(e->operation, sizeof e->operation, "%s", op ? (const char *)op : "");
            }
            s->n_xqt = n;
            s->xqt_gen = gen;
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->xqt_lock);
}

size_t xqt_entries(const store_t *cs, xqt_entry *out)
{
    store_t *s = (store_t *)cs; /* the lock is not part of the store's state */
    pthread_mutex_lock(&s->xqt_lock);
    size_t n = s->n_xqt;
    memcpy(out, s->xqt, n * sizeof *out);
    pthread_mutex_unlock(&s->xqt_lock);
    return n;
}

size_t xqt_indexed(const store_t *cs, index_tag *out)
{
    store_t *s = (store_t *)cs;
    size_t n = 0;
    pthread_mutex_lock(&s->xqt_lock);
    for (size_t i = 0; i < s->n_xqt; i++)
        if (s->xqt[i].status != XQT_DELETING) out[n++] = s->xqt[i].t;
    pthread_mutex_unlock(&s->xqt_lock);
    return n;
}

int64_t store_xqt_generation(store_t *s)
{
    store_err err = {0};
    db_t *db = db_get(s, &err);
    if (!db) return -1;
    int64_t gen = read_gen(db);
    db_put(s, db);
    return gen;
}

void xqt_index_item(store_t *s, db_t *db, store_item *item)
{
    xqt_refresh(s, db);
    index_tag tags[STORE_XQT_MAX];
    size_t n = xqt_indexed(s, tags);
    if (!n || !item->metadata) return;
    json_t *meta = json_loads(item->metadata, 0, NULL);
    bool level_changed[2] = {false, false};
    for (size_t i = 0; i < n; i++) {
        char *text = index_value_from_json(meta, tags[i].tag, tags[i].creator, NULL);
        /* A value that cannot be indexed is left out, as v2 leaves out invalid values. */
        if (text && index_add_value(&item->ix[tags[i].level], &tags[i], text) && tags[i].level < 2)
            level_changed[tags[i].level] = true;
        free(text);
    }
    json_decref(meta);
    for (int l = 0; l < 2; l++)
        if (level_changed[l]) {
            free(item->ix_key[l]);
            item->ix_key[l] = ix_list_serialize(&item->ix[l]);
        }
}

/* ---- Paths and JSON --------------------------------------------------------------- */

/* A tag path: 8 hex digits or a keyword (no nested paths). */
static store_status parse_path(const char *path, uint32_t *tag, char vr[3], store_err *err)
{
    if (!path || !*path || strchr(path, '.') || tags_parse(path, tag, vr) != 0)
        return store_seterr(err, STORE_EINVAL, "The extended query tag path '%s' is not a tag (8 hex digits) or a keyword.",
                            path ? path : "");
    return STORE_OK;
}

/* Member NAME of OBJ, its case ignored as the reference parses names. Two members that
 * differ only in case ("queryStatus" and "QUERYSTATUS") are ambiguous: none is taken
 * (jansson's order would decide otherwise), so the request is refused as lacking it. */
static json_t *member(json_t *obj, const char *name)
{
    const char *k;
    json_t *v, *found = NULL;
    json_object_foreach(obj, k, v) if (strcasecmp(k, name) == 0) {
        if (found) return NULL;
        found = v;
    }
    return found;
}

static char *dump(json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) abort();
    return text;
}

static json_t *tag_json(sqlite3_stmt *row, const char *base)
{
    uint32_t tag = (uint32_t)sqlite3_column_int64(row, 0);
    char path[9], href[600];
    tags_hex(tag, path);
    json_t *j = json_pack("{s:s, s:s}", "path", path, "vr", (const char *)sqlite3_column_text(row, 1));
    if (sqlite3_column_type(row, 2) != SQLITE_NULL)
        json_object_set_new(j, "privateCreator", json_string((const char *)sqlite3_column_text(row, 2)));
    int level = sqlite3_column_int(row, 3), status = sqlite3_column_int(row, 4);
    json_object_set_new(j, "level", json_string(level_names[level < 0 || level > 2 ? 2 : level]));
    json_object_set_new(j, "status", json_string(status_names[status < 0 || status > 2 ? 0 : status]));
    json_object_set_new(j, "queryStatus", json_string(sqlite3_column_int(row, 5) ? "enabled" : "disabled"));
    int64_t errors = sqlite3_column_int64(row, 6);
    if (errors > 0) {
        snprintf(href, sizeof href, "%s/extendedquerytags/%s/errors", base, path);
        json_object_set_new(j, "errors", json_pack("{s:I, s:s}", "count", (json_int_t)errors, "href", href));
    }
    if (sqlite3_column_type(row, 7) != SQLITE_NULL && status == XQT_ADDING) {
        const char *op = (const char *)sqlite3_column_text(row, 7);
        snprintf(href, sizeof href, "%s/operations/%s", base, op);
        json_object_set_new(j, "operation", json_pack("{s:s, s:s}", "id", op, "href", href));
    }
    return j;
}

#define TAG_COLUMNS "tag, vr, private_creator, level, status, query_enabled, error_count, operation"

static store_status check_page(int64_t offset, int limit, store_err *err)
{
    if (limit < 1 || limit > LIST_MAX)
        return store_seterr(err, STORE_EINVAL, "limit must be from 1 to %d, not %d.", LIST_MAX, limit);
    if (offset < 0) return store_seterr(err, STORE_EINVAL, "offset must be 0 or more, not %lld.", (long long)offset);
    return STORE_OK;
}

/* The end of a listing: the statement and connection given back, the array as text. */
static store_status finish_list(store_t *s, db_t *db, sqlite3_stmt *q, store_status st, json_t *out, char **json)
{
    sqlite3_finalize(q);
    db_put(s, db);
    if (st == STORE_OK) *json = dump(out);
    else json_decref(out);
    return st;
}

store_status store_xqt_list(store_t *s, int64_t offset, int limit, const char *base, char **json, store_err *err)
{
    store_status st = check_page(offset, limit, err);
    if (st != STORE_OK) return st;
    db_t *db = db_get(s, err);
    if (!db) return err ? err->status : STORE_EIO;
    sqlite3_stmt *q = NULL;
    json_t *out = json_array();
    if (sqlite3_prepare_v2(db->h, "SELECT " TAG_COLUMNS " FROM xqt ORDER BY tag LIMIT ?1 OFFSET ?2", -1, &q, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_int(q, 1, limit);
        sqlite3_bind_int64(q, 2, offset);
        while (sqlite3_step(q) == SQLITE_ROW) json_array_append_new(out, tag_json(q, base ? base : ""));
    } else {
        st = index_error(db, err);
    }
    return finish_list(s, db, q, st, out, json);
}

/* The tag's JSON from DB, or STORE_ENOTFOUND. */
static store_status get_tag(db_t *db, uint32_t tag, const char *path, const char *base, char **json, store_err *err)
{
    sqlite3_stmt *q = NULL;
    store_status st = STORE_OK;
    if (sqlite3_prepare_v2(db->h, "SELECT " TAG_COLUMNS " FROM xqt WHERE tag=?1", -1, &q, NULL) != SQLITE_OK)
        return index_error(db, err);
    sqlite3_bind_int64(q, 1, tag);
    if (sqlite3_step(q) == SQLITE_ROW) *json = dump(tag_json(q, base ? base : ""));
    else st = store_seterr(err, STORE_ENOTFOUND, "The extended query tag '%s' does not exist.", path);
    sqlite3_finalize(q);
    return st;
}

store_status store_xqt_get(store_t *s, const char *path, const char *base, char **json, store_err *err)
{
    uint32_t tag;
    char vr[3];
    store_status st = parse_path(path, &tag, vr, err);
    if (st != STORE_OK) return st;
    db_t *db = db_get(s, err);
    if (!db) return err ? err->status : STORE_EIO;
    st = get_tag(db, tag, path, base, json, err);
    db_idle(db);
    db_put(s, db);
    return st;
}

store_status store_xqt_errors(store_t *s, const char *path, int64_t offset, int limit, char **json, store_err *err)
{
    uint32_t tag;
    char vr[3];
    store_status st = parse_path(path, &tag, vr, err);
    if (st == STORE_OK) st = check_page(offset, limit, err);
    if (st != STORE_OK) return st;
    db_t *db = db_get(s, err);
    if (!db) return err ? err->status : STORE_EIO;
    if (!scalar(db, "SELECT count(*) FROM xqt WHERE tag=?1", NULL, tag)) {
        db_idle(db);
        db_put(s, db);
        return store_seterr(err, STORE_ENOTFOUND, "The extended query tag '%s' does not exist.", path);
    }
    sqlite3_stmt *q = NULL;
    json_t *out = json_array();
    if (sqlite3_prepare_v2(db->h, "SELECT study_uid, series_uid, sop_uid, created_us, message FROM xqt_error"
                                  " WHERE tag=?1 ORDER BY created_us, watermark LIMIT ?2 OFFSET ?3", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, tag);
        sqlite3_bind_int(q, 2, limit);
        sqlite3_bind_int64(q, 3, offset);
        while (sqlite3_step(q) == SQLITE_ROW) {
            char when[40];
            store_format_time(sqlite3_column_int64(q, 3), when);
            json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s}", "studyInstanceUid",
                                                 (const char *)sqlite3_column_text(q, 0), "seriesInstanceUid",
                                                 (const char *)sqlite3_column_text(q, 1), "sopInstanceUid",
                                                 (const char *)sqlite3_column_text(q, 2), "createdTime", when,
                                                 "errorMessage", (const char *)sqlite3_column_text(q, 4)));
        }
    } else {
        st = index_error(db, err);
    }
    return finish_list(s, db, q, st, out, json);
}

/* ---- Adding tags ------------------------------------------------------------------ */

typedef struct {
    uint32_t tag;
    char path[9];
    char vr[3];
    char creator[65];
    store_level level;
} new_tag;

static bool vr_allowed(const char *vr)
{
    static const char *const ok[] = {"AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS",
                                     "LO", "PN", "SH", "SL", "SS", "TM", "UI", "UL", "US"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(vr, ok[i]) == 0) return true;
    return false;
}

/* One entry of the POST body, checked against every rule that needs no index. */
static store_status parse_entry(json_t *e, size_t i, new_tag *out, store_err *err)
{
    memset(out, 0, sizeof *out);
    json_t *path = member(e, "path"), *vr = member(e, "vr"), *creator = member(e, "privateCreator"),
           *level = member(e, "level");
    if (!json_is_object(e) || !json_is_string(path))
        return store_seterr(err, STORE_EINVAL, "Extended query tag %zu has no path.", i + 1);
    const char *p = json_string_value(path);
    char dict_vr[3] = "";
    store_status st = parse_path(p, &out->tag, dict_vr, err);
    if (st != STORE_OK) return st;
    tags_hex(out->tag, out->path);
    if (tags_core(out->tag)) return store_seterr(err, STORE_EINVAL, "The query tag '%s' is already supported.", p);
    uint16_t group = (uint16_t)(out->tag >> 16), elem = (uint16_t)out->tag;
    if (group <= 0x0002 || group == 0xFFFE)
        return store_seterr(err, STORE_EINVAL, "The tag '%s' is not an attribute of a dataset.", p);
    bool private_tag = group & 1;
    if (private_tag && group <= 0x0007)
        return store_seterr(err, STORE_EINVAL, "The group of '%s' is neither standard nor private.", p);
    if (private_tag && elem >= 0x0010 && elem <= 0x00FF)
        return store_seterr(err, STORE_EINVAL, "The private creator element '%s' cannot be an extended query tag.", p);
    if (private_tag && elem < 0x0010)
        return store_seterr(err, STORE_EINVAL, "'%s' is not a private data element (gggg,xxee with xx from 10 to FF).", p);
    if (vr && !json_is_null(vr) && !json_is_string(vr))
        return store_seterr(err, STORE_EINVAL, "The vr of '%s' must be a string.", p);
    const char *given = json_is_string(vr) ? json_string_value(vr) : "";
    char want[3] = "";
    for (int k = 0; k < 2 && given[k]; k++) want[k] = (char)toupper((unsigned char)given[k]);
    if (strlen(given) > 2) return store_seterr(err, STORE_EINVAL, "The vr '%s' of '%s' is not a VR.", given, p);
    if (private_tag) {
        if (!json_is_string(creator) || !*json_string_value(creator))
            return store_seterr(err, STORE_EINVAL, "The private tag '%s' needs a privateCreator.", p);
        if (strlen(json_string_value(creator)) > 64)
            return store_seterr(err, STORE_EINVAL, "The privateCreator of '%s' is longer than 64 characters.", p);
        if (!want[0]) return store_seterr(err, STORE_EINVAL, "The private tag '%s' needs a vr.", p);
        snprintf(out->creator, sizeof out->creator, "%s", json_string_value(creator));
    } else {
        if (creator && !json_is_null(creator))
            return store_seterr(err, STORE_EINVAL, "The standard tag '%s' cannot have a privateCreator.", p);
        if (strcmp(dict_vr, "UN") == 0) return store_seterr(err, STORE_EINVAL, "The tag '%s' is not in the DICOM dictionary.", p);
        if (strcmp(dict_vr, "SQ") == 0)
            return store_seterr(err, STORE_EINVAL, "'%s' is a sequence; sequences cannot be extended query tags.", p);
        /* Lower-case dictionary VRs ("xs", "ox") stand for several: the given one decides. */
        bool several = islower((unsigned char)dict_vr[0]);
        if (want[0] && !several && strcmp(want, dict_vr) != 0)
            return store_seterr(err, STORE_EINVAL, "The vr '%s' of '%s' does not match the dictionary's %s.", given, p,
                                dict_vr);
        if (!want[0]) {
            if (several) return store_seterr(err, STORE_EINVAL, "The tag '%s' has several possible VRs; give its vr.", p);
            snprintf(want, sizeof want, "%s", dict_vr);
        }
    }
    if (strcmp(want, "SQ") == 0)
        return store_seterr(err, STORE_EINVAL, "'%s' is a sequence; sequences cannot be extended query tags.", p);
    if (!vr_allowed(want))
        return store_seterr(err, STORE_EINVAL, "The VR '%s' of '%s' is not allowed for extended query tags (allowed: "
                            "AE AS CS DA DS DT FD FL IS LO PN SH SL SS TM UI UL US).", want, p);
    snprintf(out->vr, sizeof out->vr, "%s", want);
    const char *lv = json_is_string(level) ? json_string_value(level) : "";
    int l = strcasecmp(lv, "study") == 0 ? 0 : strcasecmp(lv, "series") == 0 ? 1 : strcasecmp(lv, "instance") == 0 ? 2 : -1;
    if (l < 0) return store_seterr(err, STORE_EINVAL, "The extended query tag '%s' needs a level: study, series or instance.", p);
    out->level = (store_level)l;
    return STORE_OK;
}

static void new_id(char out[33])
{
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        for (int i = 0; i < 16; i++) r[i] = (unsigned char)((ts.tv_nsec >> (i % 4 * 8)) ^ (i * 37) ^ getpid());
    }
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", r[i]);
}

/* Inside the writer's transaction: the checks that need the index, then the rows. */
static store_status add_rows(db_t *db, const new_tag *t, size_t n, char id[33], store_err *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db->h, "SELECT id FROM operation WHERE status IN (0, 1) ORDER BY created_us LIMIT 1", -1, &q,
                           NULL) != SQLITE_OK)
        return index_error(db, err);
    bool running = sqlite3_step(q) == SQLITE_ROW;
    if (running) snprintf(id, 33, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    if (running)
        return store_seterr(err, STORE_EEXIST, "A reindex operation (%s) is already running; wait for it to finish.", id);
    for (size_t i = 0; i < n; i++)
        if (scalar(db, "SELECT count(*) FROM xqt WHERE tag=?1", NULL, t[i].tag))
            return store_seterr(err, STORE_EEXIST, "The extended query tag '%s' already exists.", t[i].path);
    int64_t have = scalar(db, "SELECT count(*) FROM xqt", NULL, 0);
    if (have + (int64_t)n > STORE_XQT_MAX)
        return store_seterr(err, STORE_EINVAL, "At most %d extended query tags may exist; this would make %lld.",
                            STORE_XQT_MAX, (long long)(have + (int64_t)n));
    int64_t now = store_now_us(), last = scalar(db, "SELECT ifnull(max(watermark), 0) FROM instance", NULL, 0);
    int64_t total = scalar(db, "SELECT count(*) FROM instance", NULL, 0);
    char tags[STORE_XQT_MAX * 9 + 1] = "";
    for (size_t i = 0; i < n; i++) snprintf(tags + strlen(tags), sizeof tags - strlen(tags), "%s%s", i ? "," : "", t[i].path);
    new_id(id);
    int rc = sqlite3_prepare_v2(db->h, "INSERT INTO operation(id, type, status, created_us, updated_us, cursor, last,"
                                       " done, total, tags) VALUES(?1, 'reindex', 0, ?2, ?2, 0, ?3, 0, ?4, ?5)", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, now);
        sqlite3_bind_int64(q, 3, last);
        sqlite3_bind_int64(q, 4, total);
        sqlite3_bind_text(q, 5, tags, -1, SQLITE_STATIC);
        rc = sqlite3_step(q) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(q);
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        rc = sqlite3_prepare_v2(db->h, "INSERT INTO xqt(tag, vr, private_creator, level, status, query_enabled, operation,"
                                       " created_us) VALUES(?1, ?2, ?3, ?4, 0, 1, ?5, ?6)", -1, &q, NULL);
        if (rc != SQLITE_OK) break;
        sqlite3_bind_int64(q, 1, t[i].tag);
        sqlite3_bind_text(q, 2, t[i].vr, -1, SQLITE_STATIC);
        if (t[i].creator[0]) sqlite3_bind_text(q, 3, t[i].creator, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 4, (int)t[i].level);
        sqlite3_bind_text(q, 5, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 6, now);
        rc = sqlite3_step(q) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_finalize(q);
    }
    if (rc == SQLITE_OK) rc = bump_gen(db);
    return rc == SQLITE_OK ? STORE_OK : index_error(db, err);
}

/* Runs FN inside one write transaction of the writer connection. */
static store_status in_write(store_t *s, store_status (*fn)(db_t *, void *, store_err *), void *ctx, store_err *err)
{
    pthread_mutex_lock(&s->write_lock);
    db_t *db = s->writer;
    store_status st;
    if (db_exec(db, "BEGIN IMMEDIATE", err) != SQLITE_OK) {
        st = err ? err->status : STORE_EBUSY;
    } else {
        st = fn(db, ctx, err);
        if (st == STORE_OK && db_exec(db, "COMMIT", err) != SQLITE_OK) st = err ? err->status : STORE_EIO;
        if (st != STORE_OK) db_exec(db, "ROLLBACK", NULL);
    }
    if (st == STORE_OK) xqt_refresh(s, db);
    db_idle(db);
    pthread_mutex_unlock(&s->write_lock);
    store_checkpoint(s, false);
    return st;
}

typedef struct {
    const new_tag *tags;
    size_t n;
    char *id;
} add_ctx;

static store_status add_fn(db_t *db, void *ctx, store_err *err)
{
    add_ctx *a = ctx;
    return add_rows(db, a->tags, a->n, a->id, err);
}

store_status store_xqt_add(store_t *s, const char *json, size_t len, char operation_id[33], store_err *err)
{
    operation_id[0] = 0;
    if (s->readonly) return store_readonly(s, err);
    json_error_t jerr;
    json_t *root = json ? json_loadb(json, len, 0, &jerr) : NULL;
    if (!root) return store_seterr(err, STORE_EINVAL, "The request body is not valid JSON: %s.", json ? jerr.text : "none");
    store_status st = STORE_OK;
    size_t n = json_array_size(root);
    if (!json_is_array(root)) st = store_seterr(err, STORE_EINVAL, "The request body must be a JSON array of extended query tags.");
    else if (n == 0) st = store_seterr(err, STORE_EINVAL, "The request body has no extended query tags.");
    else if (n > STORE_XQT_MAX)
        st = store_seterr(err, STORE_EINVAL, "At most %d extended query tags may exist; the request has %zu.", STORE_XQT_MAX, n);
    new_tag *tags = st == STORE_OK ? calloc(n, sizeof *tags) : NULL;
    for (size_t i = 0; st == STORE_OK && i < n; i++) {
        st = parse_entry(json_array_get(root, i), i, &tags[i], err);
        for (size_t k = 0; st == STORE_OK && k < i; k++)
            if (tags[k].tag == tags[i].tag)
                st = store_seterr(err, STORE_EINVAL, "The extended query tag '%s' is given more than once.", tags[i].path);
    }
    json_decref(root);
    if (st == STORE_OK) {
        add_ctx a = {tags, n, operation_id};
        st = in_write(s, add_fn, &a, err);
    }
    free(tags);
    if (st == STORE_OK) xqt_resume(s);
    return st;
}

/* ---- Updating and deleting -------------------------------------------------------- */

typedef struct {
    uint32_t tag;
    const char *path;
    int enabled; /* update: 0/1 */
} tag_ctx;

static store_status update_fn(db_t *db, void *ctx, store_err *err)
{
    tag_ctx *t = ctx;
    if (!scalar(db, "SELECT count(*) FROM xqt WHERE tag=?1", NULL, t->tag))
        return store_seterr(err, STORE_ENOTFOUND, "The extended query tag '%s' does not exist.", t->path);
    int rc = exec1(db, t->enabled ? "UPDATE xqt SET query_enabled=1 WHERE tag=?1" : "UPDATE xqt SET query_enabled=0 WHERE tag=?1",
                   t->tag, NULL);
    if (rc == SQLITE_OK) rc = bump_gen(db);
    return rc == SQLITE_OK ? STORE_OK : index_error(db, err);
}

store_status store_xqt_update(store_t *s, const char *path, const char *json, size_t len, const char *base,
                              char **json_out, store_err *err)
{
    if (s->readonly) return store_readonly(s, err);
    tag_ctx t = {0, path, 0};
    char vr[3];
    store_status st = parse_path(path, &t.tag, vr, err);
    if (st != STORE_OK) return st;
    json_t *root = json ? json_loadb(json, len, 0, NULL) : NULL;
    json_t *qs = json_is_object(root) ? member(root, "queryStatus") : NULL;
    const char *v = json_is_string(qs) ? json_string_value(qs) : "";
    t.enabled = strcasecmp(v, "enabled") == 0 ? 1 : strcasecmp(v, "disabled") == 0 ? 0 : -1;
    json_decref(root);
    if (t.enabled < 0)
        return store_seterr(err, STORE_EINVAL, "The request body must be {\"queryStatus\": \"enabled\"} or "
                                               "{\"queryStatus\": \"disabled\"}.");
    st = in_write(s, update_fn, &t, err);
    return st == STORE_OK ? store_xqt_get(s, path, base, json_out, err) : st;
}

static store_status delete_fn(db_t *db, void *ctx, store_err *err)
{
    tag_ctx *t = ctx;
    if (!scalar(db, "SELECT count(*) FROM xqt WHERE tag=?1", NULL, t->tag))
        return store_seterr(err, STORE_ENOTFOUND, "The extended query tag '%s' does not exist.", t->path);
    /* Status deleting, then everything of it, in one transaction: no reader sees a tag
     * half gone, and a reindex using it simply finds it missing at its next batch. The
     * studies and series that had a value of it lose their summary of values ('*', as
     * reindex_row does): it still lists the value, and an instance stored after the tag
     * is added again would find its own values equal to it and write none, while the
     * reindex leaves a level to its newest instance — the value would then be missing. */
    static const char *const steps[] = {"UPDATE xqt SET status=2 WHERE tag=?1",
                                        "UPDATE study SET ix='*' WHERE key IN (SELECT key FROM ix_text WHERE tag=?1 UNION "
                                        "SELECT key FROM ix_word WHERE tag=?1 UNION SELECT key FROM ix_int WHERE tag=?1 UNION "
                                        "SELECT key FROM ix_real WHERE tag=?1) "
                                        "AND (SELECT level FROM xqt WHERE tag=?1)=0",
                                        "UPDATE series SET ix='*' WHERE key IN (SELECT key FROM ix_text WHERE tag=?1 UNION "
                                        "SELECT key FROM ix_word WHERE tag=?1 UNION SELECT key FROM ix_int WHERE tag=?1 UNION "
                                        "SELECT key FROM ix_real WHERE tag=?1) "
                                        "AND (SELECT level FROM xqt WHERE tag=?1)=1",
                                        "DELETE FROM ix_text WHERE tag=?1",
                                        "DELETE FROM ix_word WHERE tag=?1",      "DELETE FROM ix_int WHERE tag=?1",
                                        "DELETE FROM ix_real WHERE tag=?1",      "DELETE FROM xqt_error WHERE tag=?1",
                                        "DELETE FROM xqt WHERE tag=?1"};
    int rc = SQLITE_OK;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0] && rc == SQLITE_OK; i++) rc = exec1(db, steps[i], t->tag, NULL);
    if (rc == SQLITE_OK) rc = bump_gen(db);
    return rc == SQLITE_OK ? STORE_OK : index_error(db, err);
}

store_status store_xqt_delete(store_t *s, const char *path, store_err *err)
{
    if (s->readonly) return store_readonly(s, err);
    tag_ctx t = {0, path, 0};
    char vr[3];
    store_status st = parse_path(path, &t.tag, vr, err);
    return st == STORE_OK ? in_write(s, delete_fn, &t, err) : st;
}

/* ---- Operations ------------------------------------------------------------------- */

store_status store_operation(store_t *s, const char *id, int api_version, const char *base, char **json,
                             bool *finished, store_err *err)
{
    char norm[33];
    size_t n = 0;
    for (const char *p = id ? id : ""; *p; p++) {
        if (*p == '-') continue;
        if (!isxdigit((unsigned char)*p) || n == 32) { n = 99; break; }
        norm[n++] = (char)tolower((unsigned char)*p);
    }
    if (n != 32) return store_seterr(err, STORE_EINVAL, "'%s' is not an operation id (32 hexadecimal digits).", id ? id : "");
    norm[32] = 0;
    db_t *db = db_get(s, err);
    if (!db) return err ? err->status : STORE_EIO;
    sqlite3_stmt *q = NULL;
    store_status st = STORE_OK;
    bool resume = false;
    if (sqlite3_prepare_v2(db->h, "SELECT type, status, created_us, updated_us, done, total, tags FROM operation WHERE id=?1",
                           -1, &q, NULL) != SQLITE_OK) {
        st = index_error(db, err);
    } else {
        sqlite3_bind_text(q, 1, norm, -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_ROW) {
            st = store_seterr(err, STORE_ENOTFOUND, "The operation '%s' does not exist.", id);
        } else {
            int status = sqlite3_column_int(q, 1);
            int64_t done = sqlite3_column_int64(q, 4), total = sqlite3_column_int64(q, 5);
            static const char *const names[] = {"notStarted", "running", "succeeded", "failed"};
            const char *name = status == OP_SUCCEEDED && api_version == 1 ? "completed" : names[status & 3];
            char created[40], updated[40];
            store_format_time(sqlite3_column_int64(q, 2), created);
            store_format_time(sqlite3_column_int64(q, 3), updated);
            int percent = status == OP_SUCCEEDED || total <= 0 ? (status == OP_SUCCEEDED ? 100 : 0)
                                                               : (int)(done * 100 / total);
            if (percent > 100) percent = 100;
            json_t *resources = json_array();
            char *tags = strdup((const char *)sqlite3_column_text(q, 6)), *save = NULL;
            for (char *t = strtok_r(tags, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                char href[600];
                snprintf(href, sizeof href, "%s/extendedquerytags/%s", base ? base : "", t);
                json_array_append_new(resources, json_string(href));
            }
            free(tags);
            /* Nobody may be running it (the process that held reindex.lock is gone): whoever
             * watches it takes it up. */
            if (status < OP_SUCCEEDED) resume = true;
            json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:o}", "operationId", norm, "type",
                                  (const char *)sqlite3_column_text(q, 0), "createdTime", created, "lastUpdatedTime",
                                  updated, "status", name, "percentComplete", percent, "resources", resources);
            *json = dump(j);
            if (finished) *finished = status >= OP_SUCCEEDED;
        }
    }
    sqlite3_finalize(q);
    db_idle(db);
    db_put(s, db);
    if (resume) xqt_resume(s);
    return st;
}

/* ---- The reindex ------------------------------------------------------------------ */

/* Records that the value of TAG in instance WM cannot be indexed, and disables the tag's
 * queries (the reference's rule); an error already recorded is not counted twice. */
static int record_error(db_t *db, uint32_t tag, int64_t wm, sqlite3_stmt *row, const char *vr, const char *value)
{
    char path[9], msg[400], shown[120];
    tags_hex(tag, path);
    dcm_printable(value, strlen(value), 64, shown, sizeof shown);
    snprintf(msg, sizeof msg, "The value '%s' of %s cannot be indexed as %s.", shown, path, vr);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db->h, "INSERT OR IGNORE INTO xqt_error(tag, watermark, study_uid, series_uid, sop_uid,"
                                       " created_us, message) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &q, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(q, 1, tag);
    sqlite3_bind_int64(q, 2, wm);
    for (int i = 0; i < 3; i++) sqlite3_bind_text(q, 3 + i, (const char *)sqlite3_column_text(row, 3 + i), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 6, store_now_us());
    sqlite3_bind_text(q, 7, msg, -1, SQLITE_STATIC);
    rc = sqlite3_step(q) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_finalize(q);
    if (rc == SQLITE_OK && sqlite3_changes(db->h) > 0)
        rc = exec1(db, "UPDATE xqt SET error_count=error_count+1, query_enabled=0 WHERE tag=?1", tag, NULL);
    return rc;
}

/* Indexes the tags of one instance ROW (watermark, study, series, uids, json, reps). */
static int reindex_row(db_t *db, sqlite3_stmt *row, const xqt_entry *tags, size_t n, bool *errors)
{
    int64_t wm = sqlite3_column_int64(row, 0), study = sqlite3_column_int64(row, 1),
            series = sqlite3_column_int64(row, 2);
    bool study_rep = sqlite3_column_int64(row, 7) == wm, series_rep = sqlite3_column_int64(row, 8) == wm;
    json_t *meta = json_loads((const char *)sqlite3_column_text(row, 6), 0, NULL);
    int rc = SQLITE_OK;
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        char *text = index_value_from_json(meta, tags[i].t.tag, tags[i].t.creator, NULL);
        if (!text) continue;
        ix_list l = {0};
        if (!index_add_value(&l, &tags[i].t, text)) {
            rc = record_error(db, tags[i].t.tag, wm, row, tags[i].t.vr, text);
            *errors = true;
        } else if (tags[i].t.level == STORE_LEVEL_INSTANCE) {
            rc = index_write_level(db, wm, &l);
        } else if (tags[i].t.level == STORE_LEVEL_SERIES ? series_rep : study_rep) {
            /* A level's values are its newest instance's ("latest wins"). */
            int64_t key = tags[i].t.level == STORE_LEVEL_SERIES ? series : study;
            rc = index_clear_tag(db, key, tags[i].t.tag);
            if (rc == SQLITE_OK) rc = index_write_level(db, key, &l);
            /* The level's summary no longer lists all its values: make the next newer
             * instance rewrite them, even when its values equal the old summary ('*' is
             * never a summary: those lines start with 8 hex digits). */
            if (rc == SQLITE_OK)
                rc = exec1(db, tags[i].t.level == STORE_LEVEL_SERIES ? "UPDATE series SET ix='*' WHERE key=?1"
                                                                     : "UPDATE study SET ix='*' WHERE key=?1", key, NULL);
        }
        ix_list_free(&l);
        free(text);
    }
    json_decref(meta);
    return rc;
}

/* One batch of the oldest unfinished operation, in one transaction. 1: more to do, 0:
 * nothing left, -1: the index failed (tried again later). */
static int reindex_batch(store_t *s)
{
    pthread_mutex_lock(&s->write_lock);
    db_t *db = s->writer;
    int result = -1;
    if (db_exec(db, "BEGIN IMMEDIATE", NULL) != SQLITE_OK) goto out;
    xqt_refresh(s, db);
    sqlite3_stmt *op = NULL, *rows = NULL;
    char id[33] = "";
    int64_t cursor = 0, last = 0, done = 0;
    int rc = sqlite3_prepare_v2(db->h, "SELECT id, cursor, last, done FROM operation WHERE status IN (0, 1)"
                                       " ORDER BY created_us LIMIT 1", -1, &op, NULL);
    bool have = rc == SQLITE_OK && sqlite3_step(op) == SQLITE_ROW;
    if (have) {
        snprintf(id, sizeof id, "%s", (const char *)sqlite3_column_text(op, 0));
        cursor = sqlite3_column_int64(op, 1);
        last = sqlite3_column_int64(op, 2);
        done = sqlite3_column_int64(op, 3);
    }
    sqlite3_finalize(op);
    if (rc != SQLITE_OK || !have) {
        result = rc == SQLITE_OK ? 0 : -1;
        db_exec(db, "ROLLBACK", NULL);
        goto out;
    }
    /* The operation's tags that are still being added (a deleted one drops out). */
    xqt_entry all[STORE_XQT_MAX], mine[STORE_XQT_MAX];
    size_t n_all = xqt_entries(s, all), n = 0;
    for (size_t i = 0; i < n_all; i++)
        if (all[i].status == XQT_ADDING && strcmp(all[i].operation, id) == 0) mine[n++] = all[i];
    size_t batch = 0;
    bool errors = false;
    if (n) {
        rc = sqlite3_prepare_v2(db->h,
                                "SELECT i.watermark, i.study, i.series, st.uid, se.uid, i.uid, m.json, st.rep, se.rep"
                                " FROM instance i JOIN study st ON st.key=i.study JOIN series se ON se.key=i.series"
                                " JOIN metadata m ON m.watermark=i.watermark"
                                " WHERE i.watermark>?1 AND i.watermark<=?2 ORDER BY i.watermark LIMIT ?3", -1, &rows, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(rows, 1, cursor);
            sqlite3_bind_int64(rows, 2, last);
            sqlite3_bind_int(rows, 3, BATCH);
            while (rc == SQLITE_OK && sqlite3_step(rows) == SQLITE_ROW) {
                rc = reindex_row(db, rows, mine, n, &errors);
                cursor = sqlite3_column_int64(rows, 0);
                batch++;
            }
        }
        sqlite3_finalize(rows);
    }
    int64_t now = store_now_us();
    if (rc == SQLITE_OK && batch) {
        sqlite3_stmt *u = NULL;
        rc = sqlite3_prepare_v2(db->h, "UPDATE operation SET status=1, cursor=?2, done=?3, updated_us=?4 WHERE id=?1", -1, &u, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(u, 1, id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(u, 2, cursor);
            sqlite3_bind_int64(u, 3, done + (int64_t)batch);
            sqlite3_bind_int64(u, 4, now);
            rc = sqlite3_step(u) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        }
        sqlite3_finalize(u);
        if (rc == SQLITE_OK && errors) rc = bump_gen(db);
    } else if (rc == SQLITE_OK) {
        /* Nothing left below LAST: the tags are ready and the operation done. */
        rc = exec_text(db, "UPDATE xqt SET status=1, operation=NULL WHERE operation=?1 AND status=0", id);
        if (rc == SQLITE_OK)
            rc = exec1(db, "UPDATE operation SET status=2, done=total, updated_us=?1 WHERE id=?2", now, id);
        if (rc == SQLITE_OK) rc = bump_gen(db);
    }
    if (rc == SQLITE_OK && db_exec(db, "COMMIT", NULL) == SQLITE_OK) {
        result = 1; /* after a finished operation, look for the next */
        if (!batch) xqt_refresh(s, db);
    } else {
        db_exec(db, "ROLLBACK", NULL);
    }
out:
    db_idle(db);
    pthread_mutex_unlock(&s->write_lock);
    store_checkpoint(s, false);
    return result;
}

static void *reindex_main(void *arg)
{
    store_t *s = arg;
    int failures = 0;
    for (;;) {
        pthread_mutex_lock(&s->reindex_lock);
        bool stop = s->reindex_stop;
        pthread_mutex_unlock(&s->reindex_lock);
        int r = stop ? 0 : reindex_batch(s);
        if (r < 0 && ++failures <= 50) { /* the index was busy or failed: again a little later */
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (r > 0) {
            failures = 0;
            continue;
        }
        /* Done (or stopped, or given up). An operation added since the last batch looked
         * left a kick (its xqt_resume saw this thread running): then go on. Deciding and
         * clearing reindex_running under one lock loses no kick. */
        pthread_mutex_lock(&s->reindex_lock);
        bool again = r == 0 && s->reindex_kick && !s->reindex_stop;
        s->reindex_kick = false;
        if (!again) {
            s->reindex_running = false;
            flock(s->reindex_fd, LOCK_UN);
            pthread_cond_broadcast(&s->reindex_cond);
        }
        pthread_mutex_unlock(&s->reindex_lock);
        if (!again) return NULL;
    }
}

/* Whether an operation is unfinished (so that opening an archive starts no thread for
 * nothing). */
static bool pending(store_t *s)
{
    db_t *db = db_get(s, NULL);
    if (!db) return false;
    bool open = scalar(db, "SELECT count(*) FROM operation WHERE status IN (0, 1)", NULL, 0) > 0;
    db_idle(db);
    db_put(s, db);
    return open;
}

void xqt_resume(store_t *s)
{
    if (s->readonly || !pending(s)) return; /* a read-only archive's operations wait for a writable one */
    pthread_mutex_lock(&s->reindex_lock);
    if (s->reindex_running) s->reindex_kick = true;
    if (!s->reindex_running && !s->reindex_stop) {
        if (s->reindex_thread_started) {
            pthread_join(s->reindex_thread, NULL);
            s->reindex_thread_started = false;
        }
        if (s->reindex_fd < 0) {
            char path[PATH_MAX];
            store_path(s, "reindex.lock", path);
            s->reindex_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        }
        if (s->reindex_fd >= 0 && flock(s->reindex_fd, LOCK_EX | LOCK_NB) == 0) {
            s->reindex_running = true;
            if (pthread_create(&s->reindex_thread, NULL, reindex_main, s) == 0) {
                s->reindex_thread_started = true;
            } else {
                s->reindex_running = false;
                flock(s->reindex_fd, LOCK_UN);
            }
        }
    }
    pthread_mutex_unlock(&s->reindex_lock);
}

void xqt_stop(store_t *s)
{
    pthread_mutex_lock(&s->reindex_lock);
    s->reindex_stop = true;
    bool started = s->reindex_thread_started;
    s->reindex_thread_started = false;
    pthread_mutex_unlock(&s->reindex_lock);
    if (started) pthread_join(s->reindex_thread, NULL);
    if (s->reindex_fd >= 0) close(s->reindex_fd);
    s->reindex_fd = -1;
}

store_status store_operations_wait(store_t *s, int timeout_ms, store_err *err)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        db_t *db = db_get(s, err);
        if (!db) return err ? err->status : STORE_EIO;
        int64_t open = scalar(db, "SELECT count(*) FROM operation WHERE status IN (0, 1)", NULL, 0);
        db_idle(db);
        db_put(s, db);
        if (!open) return STORE_OK;
        xqt_resume(s); /* nobody may be running it: a process that added it may be gone */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= timeout_ms)
            return store_seterr(err, STORE_EBUSY, "a reindex operation is still running after %d ms", timeout_ms);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
