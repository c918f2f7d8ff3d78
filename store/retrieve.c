/* retrieve.c — reading what ingest stored: the instances of a study/series, their
 * object files, the precomputed metadata (with the reference's ETag), frame ranges. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static store_status check_uids(const char *study, const char *series, const char *sop, store_err *err)
{
    if (!store_valid_uid(study)) return store_seterr(err, STORE_EINVAL, "'%s' is not a valid StudyInstanceUID", study ? study : "");
    if (series && !store_valid_uid(series)) return store_seterr(err, STORE_EINVAL, "'%s' is not a valid SeriesInstanceUID", series);
    if (sop && !store_valid_uid(sop)) return store_seterr(err, STORE_EINVAL, "'%s' is not a valid SOPInstanceUID", sop);
    if (sop && !series) return store_seterr(err, STORE_EINVAL, "an instance needs its series");
    return STORE_OK;
}

/* A cached retrieval statement (schema.c) bound to a study, series or instance. */
static sqlite3_stmt *scoped(db_t *db, stmt_id id, int64_t part, const char *study, const char *series, const char *sop)
{
    sqlite3_stmt *st = db_stmt(db, id);
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_text(st, 2, study, -1, SQLITE_STATIC);
    if (series) sqlite3_bind_text(st, 3, series, -1, SQLITE_STATIC);
    if (sop) sqlite3_bind_text(st, 4, sop, -1, SQLITE_STATIC);
    return st;
}

static const char *what(const char *series, const char *sop)
{
    return sop ? "instance" : series ? "series" : "study";
}

store_status store_instances(store_t *s, const char *partition, const char *study, const char *series,
                             const char *sop, store_instance **out, size_t *n, store_err *err)
{
    *out = NULL;
    *n = 0;
    store_status rc = check_uids(study, series, sop, err);
    if (rc != STORE_OK) return rc;
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    int64_t part = partition_key(db, partition ? partition : STORE_DEFAULT_PARTITION, false);
    sqlite3_stmt *st = scoped(db, sop ? ST_INSTANCE_ONE : ST_INSTANCE_LIST, part, study, series, sop);
    if (!st) {
        rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
        db_put(s, db);
        return rc;
    }
    size_t cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = realloc(*out, cap * sizeof **out);
            if (!*out) abort();
        }
        store_instance *in = &(*out)[(*n)++];
        memset(in, 0, sizeof *in);
        in->watermark = sqlite3_column_int64(st, 0);
        snprintf(in->study_uid, sizeof in->study_uid, "%s", sqlite3_column_text(st, 1));
        snprintf(in->series_uid, sizeof in->series_uid, "%s", sqlite3_column_text(st, 2));
        snprintf(in->sop_instance_uid, sizeof in->sop_instance_uid, "%s", sqlite3_column_text(st, 3));
        snprintf(in->sop_class_uid, sizeof in->sop_class_uid, "%s", sqlite3_column_text(st, 4));
        snprintf(in->transfer_syntax, sizeof in->transfer_syntax, "%s", sqlite3_column_text(st, 5));
        snprintf(in->object, sizeof in->object, "%s", sqlite3_column_text(st, 6));
        in->size = (uint64_t)sqlite3_column_int64(st, 7);
        in->frames = (uint32_t)sqlite3_column_int64(st, 8);
        in->created_us = sqlite3_column_int64(st, 9);
    }
    db_put(s, db);
    if (*n == 0) return store_seterr(err, STORE_ENOTFOUND, "the requested %s was not found", what(series, sop));
    return STORE_OK;
}

int store_open_object(store_t *s, const store_instance *inst)
{
    return openat(s->dirfd, inst->object, O_RDONLY | O_CLOEXEC);
}

store_status store_metadata(store_t *s, const char *partition, const char *study, const char *series,
                            const char *sop, char **json, size_t *len, char etag[64], store_err *err)
{
    *json = NULL;
    *len = 0;
    store_status rc = check_uids(study, series, sop, err);
    if (rc != STORE_OK) return rc;
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    int64_t part = partition_key(db, partition ? partition : STORE_DEFAULT_PARTITION, false);
    sqlite3_stmt *st = scoped(db, sop ? ST_METADATA_ONE : ST_METADATA_LIST, part, study, series, sop);
    if (!st) {
        rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
        db_put(s, db);
        return rc;
    }
    size_t cap = 4096, used = 1, count = 0;
    int64_t max_wm = 0;
    char *buf = malloc(cap);
    if (!buf) abort();
    buf[0] = '[';
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t wm = sqlite3_column_int64(st, 0);
        if (wm > max_wm) max_wm = wm;
        const char *j = (const char *)sqlite3_column_text(st, 1);
        size_t jl = (size_t)sqlite3_column_bytes(st, 1);
        if (!j) continue;
        if (used + jl + 3 > cap) {
            cap = (used + jl + 3) * 2;
            buf = realloc(buf, cap);
            if (!buf) abort();
        }
        if (count++) buf[used++] = ',';
        memcpy(buf + used, j, jl);
        used += jl;
    }
    db_put(s, db);
    if (count == 0) {
        free(buf);
        return store_seterr(err, STORE_ENOTFOUND, "the requested %s was not found", what(series, sop));
    }
    buf[used++] = ']';
    buf[used] = 0;
    *json = buf;
    *len = used;
    /* The reference's ETag: the watermark for an instance, maxWatermark-count above. */
    if (sop)
        snprintf(etag, 64, "%lld", (long long)max_wm);
    else
        snprintf(etag, 64, "%lld-%zu", (long long)max_wm, count);
    return STORE_OK;
}

store_status store_metadata_size(store_t *s, const char *partition, const char *study, const char *series,
                                 uint64_t *size, char etag[64], store_err *err)
{
    *size = 0;
    store_status rc = check_uids(study, series, NULL, err);
    if (rc != STORE_OK) return rc;
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    int64_t part = partition_key(db, partition ? partition : STORE_DEFAULT_PARTITION, false);
    /* Blobs' lengths come from the record header; rows written as text before are cast. */
    sqlite3_stmt *st = NULL;
    int prc = sqlite3_prepare_v2(
        db->h,
        "SELECT count(*), max(i.watermark),"
        " sum(iif(typeof(m.json)='blob', length(m.json), length(CAST(m.json AS BLOB))))"
        " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key"
        " JOIN metadata m ON m.watermark=i.watermark"
        " WHERE st.partition=?1 AND st.uid=?2 AND (?3 IS NULL OR se.uid=?3)",
        -1, &st, NULL);
    int64_t count = 0, max_wm = 0, bytes = 0;
    if (prc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, part);
        sqlite3_bind_text(st, 2, study, -1, SQLITE_STATIC);
        if (series) sqlite3_bind_text(st, 3, series, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            count = sqlite3_column_int64(st, 0);
            max_wm = sqlite3_column_int64(st, 1);
            bytes = sqlite3_column_int64(st, 2);
        } else {
            prc = SQLITE_ERROR;
        }
    }
    if (prc != SQLITE_OK) rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    sqlite3_finalize(st);
    db_put(s, db);
    if (rc != STORE_OK) return rc;
    if (count == 0) return store_seterr(err, STORE_ENOTFOUND, "the requested %s was not found", what(series, NULL));
    *size = (uint64_t)(2 + bytes + count - 1); /* "[" a "," b ... "]" */
    snprintf(etag, 64, "%lld-%lld", (long long)max_wm, (long long)count);
    return STORE_OK;
}

store_status store_frame_ranges(store_t *s, const store_instance *inst, uint32_t frame, store_range **ranges,
                                size_t *n, store_err *err)
{
    *ranges = NULL;
    *n = 0;
    if (frame < 1 || frame > inst->frames)
        return store_seterr(err, STORE_ENOTFOUND, "frame %u does not exist; the instance has %u frame(s)", frame,
                            inst->frames);
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    /* A cached statement: a request for many frames asks once per frame. */
    sqlite3_stmt *st = db_stmt(db, ST_FRAMES);
    store_status rc = STORE_OK;
    if (!st) {
        rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    } else {
        sqlite3_bind_int64(st, 1, inst->watermark);
        if (sqlite3_step(st) != SQLITE_ROW) {
            rc = store_seterr(err, STORE_ENOTFOUND, "the instance was not found");
        } else {
            int r = frames_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), frame, ranges, n);
            if (r == 1) rc = store_seterr(err, STORE_ENOTFOUND, "frame %u does not exist", frame);
            else if (r != 0) rc = store_seterr(err, STORE_EUNSUPPORTED, "the frame offsets of this instance are not known; decode it");
            /* Never hand out a range outside the object file, whatever the index says. */
            for (size_t i = 0; rc == STORE_OK && i < *n; i++)
                if ((*ranges)[i].offset > inst->size || (*ranges)[i].length > inst->size - (*ranges)[i].offset)
                    rc = store_seterr(err, STORE_EUNSUPPORTED, "the frame offsets of this instance are not usable; decode it");
            if (rc != STORE_OK) {
                free(*ranges);
                *ranges = NULL;
                *n = 0;
            }
        }
        sqlite3_reset(st);
    }
    db_put(s, db);
    return rc;
}

store_status store_children(store_t *s, const char *partition, const char *study, const char *series,
                            store_entry **out, size_t *n, store_err *err)
{
    *out = NULL;
    *n = 0;
    if ((study && !store_valid_uid(study)) || (series && (!study || !store_valid_uid(series))))
        return store_seterr(err, STORE_EINVAL, "not a valid UID");
    static const stmt_id which[] = {ST_CHILDREN_STUDIES, ST_CHILDREN_SERIES, ST_CHILDREN_INSTANCES};
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    int64_t part = partition_key(db, partition ? partition : STORE_DEFAULT_PARTITION, false);
    sqlite3_stmt *st = db_stmt(db, which[series ? 2 : study ? 1 : 0]);
    store_status rc = STORE_OK;
    if (!st) {
        rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    } else {
        sqlite3_bind_int64(st, 1, part);
        if (study) sqlite3_bind_text(st, 2, study, -1, SQLITE_STATIC);
        if (series) sqlite3_bind_text(st, 3, series, -1, SQLITE_STATIC);
        size_t cap = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 64;
                *out = realloc(*out, cap * sizeof **out);
                if (!*out) abort();
            }
            store_entry *e = &(*out)[(*n)++];
            snprintf(e->uid, sizeof e->uid, "%s", sqlite3_column_text(st, 0));
            e->updated_us = sqlite3_column_int64(st, 1);
            e->size = (uint64_t)sqlite3_column_int64(st, 2);
            e->count = (uint32_t)sqlite3_column_int64(st, 3);
        }
        sqlite3_reset(st);
    }
    /* An empty list of a study's series means the study is not there. */
    if (rc == STORE_OK && *n == 0 && study) {
        sqlite3_stmt *q = db_stmt(db, series ? ST_SERIES_EXISTS : ST_STUDY_EXISTS);
        if (q) {
            sqlite3_bind_int64(q, 1, part);
            sqlite3_bind_text(q, 2, study, -1, SQLITE_STATIC);
            if (series) sqlite3_bind_text(q, 3, series, -1, SQLITE_STATIC);
        }
        if (!q || sqlite3_step(q) != SQLITE_ROW) rc = store_seterr(err, STORE_ENOTFOUND, "not found");
        if (q) sqlite3_reset(q);
    }
    db_put(s, db);
    return rc;
}
