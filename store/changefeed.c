/* changefeed.c — the change feed as the reference serves it. Rows are immutable; the
 * state of an entry (current / replaced / deleted) and its metadata are derived on read
 * from the instance that now holds the entry's UIDs. HTTP and the mount both use this. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define COLUMNS \
    "SELECT c.sequence, c.timestamp_us, c.action, p.name, c.study_uid, c.series_uid, c.sop_uid, c.watermark," \
    " (SELECT i.watermark FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key" \
    "   WHERE st.partition=c.partition AND st.uid=c.study_uid AND se.uid=c.series_uid AND i.uid=c.sop_uid)" \
    " FROM changefeed c JOIN partition p ON p.key=c.partition"

/* The immutable fields of a change (columns 0-6 of COLUMNS and of the lines' query). */
static json_t *change_fields(sqlite3_stmt *row)
{
    char ts[40];
    store_format_time(sqlite3_column_int64(row, 1), ts);
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "sequence", (json_int_t)sqlite3_column_int64(row, 0),
                     "partitionName", (const char *)sqlite3_column_text(row, 3), "studyInstanceUid",
                     (const char *)sqlite3_column_text(row, 4), "seriesInstanceUid",
                     (const char *)sqlite3_column_text(row, 5), "sopInstanceUid",
                     (const char *)sqlite3_column_text(row, 6), "action", (const char *)sqlite3_column_text(row, 2),
                     "timestamp", ts);
}

static json_t *entry(sqlite3_stmt *row, sqlite3_stmt *meta, bool include_metadata)
{
    int64_t wm = sqlite3_column_int64(row, 7);
    bool live = sqlite3_column_type(row, 8) != SQLITE_NULL;
    int64_t now_wm = live ? sqlite3_column_int64(row, 8) : 0;
    json_t *e = change_fields(row);
    json_object_set_new(e, "state", json_string(!live ? "deleted" : now_wm == wm ? "current" : "replaced"));
    if (include_metadata && live) {
        sqlite3_reset(meta);
        sqlite3_bind_int64(meta, 1, now_wm);
        if (sqlite3_step(meta) == SQLITE_ROW) {
            json_t *m = json_loads((const char *)sqlite3_column_text(meta, 0), 0, NULL);
            if (m) json_object_set_new(e, "metadata", m);
        }
    }
    return e;
}

static store_status run_feed(store_t *s, const char *sql, const int64_t *args, int nargs, bool include_metadata,
                             json_t *out, store_err *err)
{
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    sqlite3_stmt *st = NULL, *meta = NULL;
    store_status rc = STORE_OK;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->h, "SELECT json FROM metadata WHERE watermark=?", -1, &meta, NULL) != SQLITE_OK) {
        rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    } else {
        for (int i = 0; i < nargs; i++) sqlite3_bind_int64(st, i + 1, args[i]);
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) json_array_append_new(out, entry(st, meta, include_metadata));
        if (r != SQLITE_DONE) rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errstr(r));
    }
    sqlite3_finalize(st);
    sqlite3_finalize(meta);
    db_put(s, db);
    return rc;
}

int64_t feed_time(db_t *db)
{
    int64_t now = store_now_us(), last = 0;
    sqlite3_stmt *st = db_stmt(db, ST_FEED_LAST_TIME);
    if (st && sqlite3_step(st) == SQLITE_ROW) last = sqlite3_column_int64(st, 0);
    if (st) sqlite3_reset(st);
    return now > last ? now : last;
}

/* The first sequence at or after START_US (0: none). */
static int64_t first_at(store_t *s, int64_t start_us, store_err *err)
{
    db_t *db = db_get(s, err);
    if (!db) return -1;
    sqlite3_stmt *st = NULL;
    int64_t seq = 0;
    if (sqlite3_prepare_v2(db->h, "SELECT sequence FROM changefeed WHERE timestamp_us>=?1"
                                  " ORDER BY timestamp_us, sequence LIMIT 1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, start_us);
        if (sqlite3_step(st) == SQLITE_ROW) seq = sqlite3_column_int64(st, 0);
    } else {
        seq = -1;
        store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    }
    sqlite3_finalize(st);
    db_put(s, db);
    return seq;
}

store_status store_changefeed(store_t *s, const store_changefeed_query *q, char **json, store_err *err)
{
    *json = NULL;
    bool v1 = q->api_version == 1;
    int max = v1 ? 100 : 200;
    if (q->limit < 1 || q->limit > max)
        return store_seterr(err, STORE_EINVAL, "limit must be from 1 to %d", max);
    if (q->offset < 0) return store_seterr(err, STORE_EINVAL, "offset must be 0 or more");
    if (!v1 && q->end_us <= q->start_us) return store_seterr(err, STORE_EINVAL, "endTime must be after startTime");
    json_t *out = json_array();
    store_status rc;
    if (v1) {
        int64_t args[2] = {q->offset, q->offset + q->limit};
        rc = run_feed(s, COLUMNS " WHERE c.sequence > ?1 AND c.sequence <= ?2 ORDER BY c.sequence", args, 2,
                      q->include_metadata, out, err);
    } else {
        /* Feed rows are never removed, sequences have no gaps (AUTOINCREMENT rolls back
         * with its transaction) and timestamps follow sequences (feed_time): the window's
         * row OFFSET is sequence first+OFFSET, so a page is an index lookup, not a walk
         * over the rows before it. */
        int64_t first = first_at(s, q->start_us, err);
        if (first < 0) {
            json_decref(out);
            return err ? err->status : STORE_EIO;
        }
        int64_t from = !first || q->offset > INT64_MAX - first ? INT64_MAX : first + q->offset;
        int64_t args[3] = {from, q->end_us, q->limit};
        rc = run_feed(s, COLUMNS " WHERE c.sequence >= ?1 AND c.timestamp_us < ?2 ORDER BY c.sequence LIMIT ?3",
                      args, 3, q->include_metadata, out, err);
    }
    if (rc == STORE_OK) {
        *json = json_dumps(out, JSON_COMPACT);
        if (!*json) abort();
    }
    json_decref(out);
    return rc;
}

store_status store_changefeed_latest(store_t *s, int api_version, bool include_metadata, char **json, store_err *err)
{
    *json = NULL;
    json_t *out = json_array();
    store_status rc = run_feed(s, api_version == 1 ? COLUMNS " ORDER BY c.sequence DESC LIMIT 1"
                                                   : COLUMNS " ORDER BY c.timestamp_us DESC, c.sequence DESC LIMIT 1",
                               NULL, 0, include_metadata, out, err);
    if (rc == STORE_OK && json_array_size(out) == 0) rc = store_seterr(err, STORE_ENOTFOUND, "the change feed is empty");
    if (rc == STORE_OK) {
        *json = json_dumps(json_array_get(out, 0), JSON_COMPACT);
        if (!*json) abort();
    }
    json_decref(out);
    return rc;
}

int64_t store_changefeed_head(store_t *s)
{
    db_t *db = db_get(s, NULL);
    if (!db) return 0;
    sqlite3_stmt *st = NULL;
    int64_t head = 0;
    if (sqlite3_prepare_v2(db->h, "SELECT max(sequence) FROM changefeed", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        head = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    db_put(s, db);
    return head;
}

store_status store_changefeed_lines(store_t *s, int64_t after, int max, char **text, size_t *len, int64_t *last,
                                    store_err *err)
{
    *text = NULL;
    *len = 0;
    *last = after;
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    sqlite3_stmt *st = NULL;
    store_status rc = STORE_OK;
    if (sqlite3_prepare_v2(db->h,
                           "SELECT c.sequence, c.timestamp_us, c.action, p.name, c.study_uid, c.series_uid, c.sop_uid"
                           " FROM changefeed c JOIN partition p ON p.key=c.partition WHERE c.sequence > ?1"
                           " ORDER BY c.sequence LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    } else {
        sqlite3_bind_int64(st, 1, after);
        sqlite3_bind_int(st, 2, max);
        size_t cap = 4096, used = 0;
        char *buf = malloc(cap);
        if (!buf) abort();
        while (sqlite3_step(st) == SQLITE_ROW) {
            json_t *e = change_fields(st);
            char *line = json_dumps(e, JSON_COMPACT);
            json_decref(e);
            if (!line) abort();
            size_t l = strlen(line);
            if (used + l + 2 > cap) {
                cap = (used + l + 2) * 2;
                buf = realloc(buf, cap);
                if (!buf) abort();
            }
            memcpy(buf + used, line, l);
            used += l;
            buf[used++] = '\n';
            free(line);
            *last = sqlite3_column_int64(st, 0);
        }
        buf[used] = 0;
        *text = buf;
        *len = used;
    }
    sqlite3_finalize(st);
    db_put(s, db);
    return rc;
}
