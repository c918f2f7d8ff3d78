/* delete.c — removing a study, series or instance.
 *
 * One transaction removes the instances' rows and index values, writes a "delete"
 * change-feed row each, and brings the parents up to date: an emptied series or study
 * goes; otherwise its newest remaining instance becomes its representative ("latest
 * wins" again) and its counters and searchable values are recomputed. The object files
 * go after the commit; the process's tmp/<id>.open exists first, so a crash in between
 * leaves nothing that repair would not remove (archive.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

typedef struct {
    int64_t wm, study, series;
    char object[64];
    char study_uid[STORE_UID_MAX + 1], series_uid[STORE_UID_MAX + 1], sop_uid[STORE_UID_MAX + 1];
} victim;

static int run(db_t *db, const char *sql, int64_t a, int64_t b)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, a);
        sqlite3_bind_int64(st, 2, b);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static int64_t scalar(db_t *db, const char *sql, int64_t a)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, a);
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

/* Re-derives a study's or series' searchable values from instance REP. */
static int relevel(const store_t *s, db_t *db, int64_t key, store_level level, int64_t rep)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, "SELECT json FROM metadata WHERE watermark=?", -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(st, 1, rep);
    json_t *meta = sqlite3_step(st) == SQLITE_ROW ? json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL) : NULL;
    sqlite3_finalize(st);
    store_item tmp;
    memset(&tmp, 0, sizeof tmp);
    dcm_value *values = NULL;
    size_t n = meta ? index_values_from_json(s, meta, &values) : 0;
    index_extract(s, values, n, &tmp);
    index_extract_xqt(s, values, n, &tmp);
    for (size_t i = 0; i < n; i++) free(values[i].text);
    free(values);
    json_decref(meta);
    rc = index_clear_level(db, key, level, s);
    if (rc == SQLITE_OK) rc = index_write_level(db, key, &tmp.ix[level]);
    if (rc == SQLITE_OK) {
        const char *sql = level == STORE_LEVEL_STUDY ? "UPDATE study SET rep=?2, ix=?3 WHERE key=?1"
                                                     : "UPDATE series SET rep=?2, ix=?3, modality=?4 WHERE key=?1";
        rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, key);
            sqlite3_bind_int64(st, 2, rep);
            sqlite3_bind_text(st, 3, tmp.ix_key[level] ? tmp.ix_key[level] : "", -1, SQLITE_STATIC);
            if (level == STORE_LEVEL_SERIES) sqlite3_bind_text(st, 4, tmp.modality, -1, SQLITE_STATIC);
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
            sqlite3_finalize(st);
        }
    }
    for (int i = 0; i < 3; i++) {
        ix_list_free(&tmp.ix[i]);
        free(tmp.ix_key[i]);
    }
    free(tmp.attrs);
    return rc;
}

/* Brings a series (SERIES true) or study up to date after some of its instances went. */
static int settle(const store_t *s, db_t *db, int64_t key, bool series)
{
    int64_t count = scalar(db, series ? "SELECT count(*) FROM instance WHERE series=?" : "SELECT count(*) FROM instance WHERE study=?", key);
    store_level level = series ? STORE_LEVEL_SERIES : STORE_LEVEL_STUDY;
    int rc;
    if (count == 0) {
        rc = index_clear_level(db, key, level, s);
        if (rc == SQLITE_OK && !series) rc = run(db, "DELETE FROM ix_text WHERE tag=?1 AND key=?2", TAG_ModalitiesInStudy, key);
        if (rc == SQLITE_OK) rc = run(db, series ? "DELETE FROM series WHERE key=?1" : "DELETE FROM study WHERE key=?1", key, 0);
        return rc;
    }
    int64_t rep = scalar(db, series ? "SELECT max(watermark) FROM instance WHERE series=?" : "SELECT max(watermark) FROM instance WHERE study=?", key);
    int64_t old = scalar(db, series ? "SELECT rep FROM series WHERE key=?" : "SELECT rep FROM study WHERE key=?", key);
    rc = rep != old ? relevel(s, db, key, level, rep) : SQLITE_OK;
    if (rc != SQLITE_OK) return rc;
    if (series) return run(db, "UPDATE series SET instance_count=?2 WHERE key=?1", key, count);
    rc = run(db, "UPDATE study SET instance_count=?2, series_count=(SELECT count(*) FROM series WHERE study=?1) WHERE key=?1", key, count);
    if (rc == SQLITE_OK) rc = run(db, "DELETE FROM ix_text WHERE tag=?1 AND key=?2", TAG_ModalitiesInStudy, key);
    if (rc == SQLITE_OK)
        rc = run(db, "INSERT OR IGNORE INTO ix_text(tag, key, value) SELECT ?1, ?2, lower(modality)"
                     " FROM series WHERE study=?2 AND modality<>''", TAG_ModalitiesInStudy, key);
    return rc;
}

static int remove_rows(const store_t *s, db_t *db, int64_t part, const victim *v, size_t n)
{
    int64_t now = feed_time(db);
    int rc = SQLITE_OK;
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        rc = run(db, "DELETE FROM instance WHERE watermark=?1", v[i].wm, 0);
        if (rc == SQLITE_OK) rc = run(db, "DELETE FROM metadata WHERE watermark=?1", v[i].wm, 0);
        if (rc == SQLITE_OK) rc = index_clear_level(db, v[i].wm, STORE_LEVEL_INSTANCE, s);
        if (rc != SQLITE_OK) break;
        sqlite3_stmt *st = db_stmt(db, ST_CHANGE_ADD);
        if (!st) return SQLITE_ERROR;
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_text(st, 2, "delete", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, part);
        sqlite3_bind_text(st, 4, v[i].study_uid, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, v[i].series_uid, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, v[i].sop_uid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, v[i].wm);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    /* Parents: each distinct series, then each distinct study (victims are ordered). */
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++)
        if (i == 0 || v[i].series != v[i - 1].series) rc = settle(s, db, v[i].series, true);
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++)
        if (i == 0 || v[i].study != v[i - 1].study) rc = settle(s, db, v[i].study, false);
    return rc;
}

static victim *find_victims(db_t *db, int64_t part, const char *study, const char *series, const char *sop, size_t *n)
{
    sqlite3_stmt *st = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(db->h,
                           "SELECT i.watermark, i.study, i.series, i.object, st.uid, se.uid, i.uid"
                           " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key"
                           " WHERE st.partition=?1 AND st.uid=?2 AND (?3 IS NULL OR se.uid=?3) AND (?4 IS NULL OR i.uid=?4)"
                           " ORDER BY i.study, i.series",
                           -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_text(st, 2, study, -1, SQLITE_STATIC);
    if (series) sqlite3_bind_text(st, 3, series, -1, SQLITE_STATIC);
    if (sop) sqlite3_bind_text(st, 4, sop, -1, SQLITE_STATIC);
    victim *v = NULL;
    size_t cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            v = realloc(v, cap * sizeof *v);
            if (!v) abort();
        }
        victim *x = &v[(*n)++];
        x->wm = sqlite3_column_int64(st, 0);
        x->study = sqlite3_column_int64(st, 1);
        x->series = sqlite3_column_int64(st, 2);
        snprintf(x->object, sizeof x->object, "%s", sqlite3_column_text(st, 3));
        snprintf(x->study_uid, sizeof x->study_uid, "%s", sqlite3_column_text(st, 4));
        snprintf(x->series_uid, sizeof x->series_uid, "%s", sqlite3_column_text(st, 5));
        snprintf(x->sop_uid, sizeof x->sop_uid, "%s", sqlite3_column_text(st, 6));
    }
    sqlite3_finalize(st);
    return v;
}

store_status store_delete(store_t *s, const char *partition, const char *study, const char *series,
                          const char *sop, size_t *deleted, store_err *err)
{
    if (deleted) *deleted = 0;
    if (!store_valid_uid(study) || (series && !store_valid_uid(series)) || (sop && !store_valid_uid(sop)) || (sop && !series))
        return store_seterr(err, STORE_EINVAL, "the study, series or instance UID is not a valid UID");
    if (s->readonly) return store_readonly(s, err);
    pthread_mutex_lock(&s->write_lock);
    db_t *db = s->writer;
    store_status status = STORE_OK;
    if (db_exec(db, "BEGIN IMMEDIATE", err) != SQLITE_OK) {
        pthread_mutex_unlock(&s->write_lock);
        return err ? err->status : STORE_EIO;
    }
    /* The extended query tags as this transaction sees them (another process may have
     * added or removed one): the levels re-derived below must clear and write them all. */
    xqt_refresh(s, db);
    size_t n = 0;
    int64_t part = partition_key(db, partition ? partition : STORE_DEFAULT_PARTITION, false);
    victim *v = part ? find_victims(db, part, study, series, sop, &n) : NULL;
    if (n == 0) {
        db_exec(db, "ROLLBACK", NULL);
        db_idle(db);
        pthread_mutex_unlock(&s->write_lock);
        free(v);
        return store_seterr(err, STORE_ENOTFOUND, "the %s to delete was not found", sop ? "instance" : series ? "series" : "study");
    }
    int rc = store_mark_unclean(s) != 0 ? SQLITE_IOERR : remove_rows(s, db, part, v, n);
    db_idle(db); /* see commit.c: active statements would block the checkpoint */
    if (rc == SQLITE_OK) rc = db_exec(db, "COMMIT", err);
    if (rc != SQLITE_OK) {
        status = store_seterr(err, db_status(sqlite3_errcode(db->h)), "delete failed: %s", sqlite3_errmsg(db->h));
        db_exec(db, "ROLLBACK", NULL);
    } else {
        for (size_t i = 0; i < n; i++) unlinkat(s->dirfd, v[i].object, 0);
        if (deleted) *deleted = n;
        store_notify_change(s);
    }
    db_idle(db);
    pthread_mutex_unlock(&s->write_lock);
    free(v);
    store_checkpoint(s, false);
    return status;
}
