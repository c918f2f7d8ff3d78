/* schema.c — the SQLite index: tables, connections and prepared statements.
 *
 * Index design (docs/ARCHITECTURE.md has the full story):
 * - study, series, instance: the hierarchy. A study's and a series' attributes are those
 *   of its newest instance ("latest wins", as the reference): column rep names it.
 * - ix_text / ix_word / ix_int / ix_real: searchable values, one row per (tag, key,
 *   value). KEY is study.key, series.key or instance.watermark, by the tag's level. Any
 *   attribute becomes searchable by adding rows; the schema never changes for it.
 * - changefeed: AUTOINCREMENT, so a sequence is never reused, even after deletes.
 * - metadata: the precomputed DICOM JSON, apart from instance so scans stay small. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define SCHEMA_VERSION "1"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS partition("
    "  key INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_us INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS study("
    "  key INTEGER PRIMARY KEY, partition INTEGER NOT NULL, uid TEXT NOT NULL,"
    "  rep INTEGER NOT NULL, ix TEXT NOT NULL,"
    "  series_count INTEGER NOT NULL DEFAULT 0, instance_count INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE(partition, uid));"
    "CREATE INDEX IF NOT EXISTS study_recent ON study(partition, rep);"
    "CREATE TABLE IF NOT EXISTS series("
    "  key INTEGER PRIMARY KEY, partition INTEGER NOT NULL, study INTEGER NOT NULL,"
    "  uid TEXT NOT NULL, rep INTEGER NOT NULL, ix TEXT NOT NULL, modality TEXT,"
    "  instance_count INTEGER NOT NULL DEFAULT 0, UNIQUE(study, uid));"
    "CREATE INDEX IF NOT EXISTS series_recent ON series(partition, rep);"
    "CREATE INDEX IF NOT EXISTS series_of_study ON series(study, rep);"
    "CREATE TABLE IF NOT EXISTS instance("
    "  watermark INTEGER PRIMARY KEY AUTOINCREMENT, partition INTEGER NOT NULL,"
    "  study INTEGER NOT NULL, series INTEGER NOT NULL, uid TEXT NOT NULL,"
    "  sop_class TEXT NOT NULL, instance_number INTEGER, transfer_syntax TEXT NOT NULL,"
    "  object TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, frame_count INTEGER NOT NULL,"
    "  frames BLOB, created_us INTEGER NOT NULL, attrs TEXT NOT NULL, crc32 INTEGER,"
    "  UNIQUE(series, uid));"
    "CREATE INDEX IF NOT EXISTS instance_recent ON instance(partition, watermark);"
    "CREATE INDEX IF NOT EXISTS instance_of_study ON instance(study, watermark);"
    "CREATE INDEX IF NOT EXISTS instance_number ON instance(series, instance_number);"
    "CREATE TABLE IF NOT EXISTS metadata(watermark INTEGER PRIMARY KEY, json TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ix_text(tag INTEGER NOT NULL, key INTEGER NOT NULL,"
    "  value TEXT NOT NULL, PRIMARY KEY(tag, key, value)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS ix_text_value ON ix_text(tag, value);"
    "CREATE TABLE IF NOT EXISTS ix_word(tag INTEGER NOT NULL, key INTEGER NOT NULL,"
    "  value TEXT NOT NULL, PRIMARY KEY(tag, key, value)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS ix_word_value ON ix_word(tag, value);"
    "CREATE TABLE IF NOT EXISTS ix_int(tag INTEGER NOT NULL, key INTEGER NOT NULL,"
    "  value INTEGER NOT NULL, PRIMARY KEY(tag, key, value)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS ix_int_value ON ix_int(tag, value);"
    "CREATE TABLE IF NOT EXISTS ix_real(tag INTEGER NOT NULL, key INTEGER NOT NULL,"
    "  value REAL NOT NULL, PRIMARY KEY(tag, key, value)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS ix_real_value ON ix_real(tag, value);"
    "CREATE TABLE IF NOT EXISTS changefeed("
    "  sequence INTEGER PRIMARY KEY AUTOINCREMENT, timestamp_us INTEGER NOT NULL,"
    "  action TEXT NOT NULL, partition INTEGER NOT NULL, study_uid TEXT NOT NULL,"
    "  series_uid TEXT NOT NULL, sop_uid TEXT NOT NULL, watermark INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS changefeed_time ON changefeed(timestamp_us, sequence);"
    /* Extended query tags (xqt.c): the registry, indexing errors, reindex operations.
     * meta 'xqt_gen' changes with each of their changes, so readers know to reload. */
    "CREATE TABLE IF NOT EXISTS xqt(tag INTEGER PRIMARY KEY, vr TEXT NOT NULL, private_creator TEXT,"
    "  level INTEGER NOT NULL, status INTEGER NOT NULL, query_enabled INTEGER NOT NULL,"
    "  error_count INTEGER NOT NULL DEFAULT 0, operation TEXT, created_us INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS xqt_error(tag INTEGER NOT NULL, watermark INTEGER NOT NULL,"
    "  study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_uid TEXT NOT NULL,"
    "  created_us INTEGER NOT NULL, message TEXT NOT NULL, PRIMARY KEY(tag, watermark));"
    "CREATE TABLE IF NOT EXISTS operation(id TEXT PRIMARY KEY, type TEXT NOT NULL, status INTEGER NOT NULL,"
    "  created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL, cursor INTEGER NOT NULL,"
    "  last INTEGER NOT NULL, done INTEGER NOT NULL, total INTEGER NOT NULL, tags TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('xqt_gen', '0');"
    "INSERT OR IGNORE INTO meta VALUES('format', 'dicomfs-archive');"
    "INSERT OR IGNORE INTO meta VALUES('schema', '" SCHEMA_VERSION "');";

static const char *const sql[ST_COUNT] = {
    [ST_PARTITION_GET] = "SELECT key FROM partition WHERE name=?1",
    [ST_PARTITION_ADD] = "INSERT INTO partition(name, created_us) VALUES(?1, ?2)",
    [ST_PARTITION_NAME] = "SELECT name FROM partition WHERE key=?1",
    [ST_STUDY_GET] = "SELECT key, ix FROM study WHERE partition=?1 AND uid=?2",
    [ST_STUDY_ADD] = "INSERT INTO study(partition, uid, rep, ix) VALUES(?1, ?2, 0, '')",
    [ST_STUDY_UPDATE] = "UPDATE study SET rep=?2, ix=?3, series_count=series_count+?4,"
                        " instance_count=instance_count+1 WHERE key=?1",
    [ST_SERIES_GET] = "SELECT key, ix FROM series WHERE study=?1 AND uid=?2",
    [ST_SERIES_ADD] = "INSERT INTO series(partition, study, uid, rep, ix) VALUES(?1, ?2, ?3, 0, '')",
    [ST_SERIES_UPDATE] = "UPDATE series SET rep=?2, ix=?3, modality=?4,"
                         " instance_count=instance_count+1 WHERE key=?1",
    [ST_INSTANCE_EXISTS] = "SELECT 1 FROM instance WHERE series=?1 AND uid=?2",
    [ST_INSTANCE_ADD] =
        "INSERT INTO instance(partition, study, series, uid, sop_class, instance_number,"
        " transfer_syntax, object, size, frame_count, frames, created_us, attrs, crc32)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [ST_METADATA_ADD] = "INSERT INTO metadata(watermark, json) VALUES(?1, ?2)",
    [ST_IX_TEXT_ADD] = "INSERT OR IGNORE INTO ix_text(tag, key, value) VALUES(?1, ?2, ?3)",
    [ST_IX_WORD_ADD] = "INSERT OR IGNORE INTO ix_word(tag, key, value) VALUES(?1, ?2, ?3)",
    [ST_IX_INT_ADD] = "INSERT OR IGNORE INTO ix_int(tag, key, value) VALUES(?1, ?2, ?3)",
    [ST_IX_REAL_ADD] = "INSERT OR IGNORE INTO ix_real(tag, key, value) VALUES(?1, ?2, ?3)",
    [ST_IX_TEXT_DEL] = "DELETE FROM ix_text WHERE tag=?1 AND key=?2",
    [ST_IX_WORD_DEL] = "DELETE FROM ix_word WHERE tag=?1 AND key=?2",
    [ST_IX_INT_DEL] = "DELETE FROM ix_int WHERE tag=?1 AND key=?2",
    [ST_IX_REAL_DEL] = "DELETE FROM ix_real WHERE tag=?1 AND key=?2",
    [ST_CHANGE_ADD] = "INSERT INTO changefeed(timestamp_us, action, partition, study_uid,"
                      " series_uid, sop_uid, watermark) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* Retrieval of a study, series (?3) or instance (?3, ?4): NULL matches any. */
    [ST_INSTANCE_LIST] =
        "SELECT i.watermark, st.uid, se.uid, i.uid, i.sop_class, i.transfer_syntax, i.object, i.size,"
        " i.frame_count, i.created_us"
        " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key"
        " WHERE st.partition=?1 AND st.uid=?2 AND (?3 IS NULL OR se.uid=?3) AND (?4 IS NULL OR i.uid=?4)"
        " ORDER BY se.key, i.instance_number, i.watermark",
    /* One instance: its own statement, so that SQLite uses UNIQUE(series, uid) (the
     * optional terms of ST_INSTANCE_LIST make it walk the whole series). */
    [ST_INSTANCE_ONE] =
        "SELECT i.watermark, st.uid, se.uid, i.uid, i.sop_class, i.transfer_syntax, i.object, i.size,"
        " i.frame_count, i.created_us"
        " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key"
        " WHERE st.partition=?1 AND st.uid=?2 AND se.uid=?3 AND i.uid=?4",
    [ST_METADATA_LIST] =
        "SELECT i.watermark, (SELECT json FROM metadata m WHERE m.watermark=i.watermark)"
        " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key"
        " WHERE st.partition=?1 AND st.uid=?2 AND (?3 IS NULL OR se.uid=?3) AND (?4 IS NULL OR i.uid=?4)"
        " ORDER BY se.key, i.instance_number, i.watermark",
    /* Listings (store_children): studies, a study's series, a series' instances. */
    [ST_CHILDREN_STUDIES] = "SELECT st.uid, i.created_us, 0, st.instance_count FROM study st"
                            " JOIN instance i ON i.watermark=st.rep WHERE st.partition=?1 ORDER BY st.uid",
    [ST_CHILDREN_SERIES] = "SELECT se.uid, i.created_us, 0, se.instance_count FROM study st JOIN series se ON se.study=st.key"
                           " JOIN instance i ON i.watermark=se.rep WHERE st.partition=?1 AND st.uid=?2 ORDER BY se.uid",
    [ST_CHILDREN_INSTANCES] = "SELECT i.uid, i.created_us, i.size, 1 FROM study st JOIN series se ON se.study=st.key"
                              " JOIN instance i ON i.series=se.key WHERE st.partition=?1 AND st.uid=?2 AND se.uid=?3"
                              " ORDER BY i.uid",
    [ST_FRAMES] = "SELECT frames FROM instance WHERE watermark=?1",
    /* Dressing QIDO results (query.c). */
    [ST_DRESS_ATTRS] = "SELECT attrs FROM instance WHERE watermark=?1",
    [ST_DRESS_META] = "SELECT json FROM metadata WHERE watermark=?1",
    [ST_DRESS_STUDY] = "SELECT rep, series_count, instance_count FROM study WHERE key=?1",
    [ST_DRESS_SERIES] = "SELECT rep, study, instance_count FROM series WHERE key=?1",
    [ST_DRESS_INSTANCE] = "SELECT study, series FROM instance WHERE watermark=?1",
    [ST_DRESS_MODALITIES] = "SELECT DISTINCT modality FROM series WHERE study=?1 AND modality<>'' ORDER BY modality",
    [ST_STUDY_EXISTS] = "SELECT 1 FROM study WHERE partition=?1 AND uid=?2",
    [ST_SERIES_EXISTS] = "SELECT 1 FROM study st JOIN series se ON se.study=st.key WHERE st.partition=?1"
                         " AND st.uid=?2 AND se.uid=?3",
    [ST_FEED_LAST_TIME] = "SELECT max(timestamp_us) FROM changefeed",
    /* commit.c's savepoint per item, prepared once (sqlite3_exec parses it each time) */
    [ST_SAVEPOINT] = "SAVEPOINT item",
    [ST_RELEASE] = "RELEASE item",
    [ST_ROLLBACK_TO] = "ROLLBACK TO item",
    [ST_XQT_GEN] = "SELECT CAST(value AS INTEGER) FROM meta WHERE key='xqt_gen'",
    [ST_METADATA_ONE] =
        "SELECT i.watermark, (SELECT json FROM metadata m WHERE m.watermark=i.watermark)"
        " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key"
        " WHERE st.partition=?1 AND st.uid=?2 AND se.uid=?3 AND i.uid=?4",
};

sqlite3_stmt *db_stmt(db_t *db, stmt_id id)
{
    sqlite3_stmt *st = db->stmt[id];
    if (!st) {
        if (sqlite3_prepare_v3(db->h, sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
            return NULL;
        db->stmt[id] = st;
    } else {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    return st;
}

int db_run(db_t *db, stmt_id id)
{
    sqlite3_stmt *st = db_stmt(db, id);
    if (!st) return sqlite3_errcode(db->h);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

int db_exec(db_t *db, const char *text, store_err *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db->h, text, NULL, NULL, &msg);
    if (rc != SQLITE_OK) store_seterr(err, db_status(rc), "index: %s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc;
}

db_t *db_open(const char *path, bool create, bool readonly, store_err *err)
{
    db_t *db = calloc(1, sizeof *db);
    if (!db) abort();
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    char uri[3 * PATH_MAX + 32]; /* every byte of the path may take three */
    const char *name = path;
    if (strlen(path) >= PATH_MAX) {
        store_seterr(err, STORE_EINVAL, "cannot open the index %.64s...: its path is longer than %d bytes", path,
                     PATH_MAX - 1);
        free(db);
        return NULL;
    }
    if (readonly) {
        /* Nothing can write a read-only disk. Without a WAL (a clean close folds it back)
         * immutable reads the file without creating a -shm; a WAL left by an unclean end
         * holds committed transactions that immutable would ignore, so then mode=ro,
         * which reads it through the existing -shm. */
        flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
        char wal[PATH_MAX + 8];
        struct stat sb;
        snprintf(wal, sizeof wal, "%s-wal", path);
        bool has_wal = stat(wal, &sb) == 0 && sb.st_size > 0;
        size_t o = (size_t)snprintf(uri, sizeof uri, "file:");
        for (const char *p = path; *p; p++) /* URI-escape ? # % */
            o += *p == '?' || *p == '#' || *p == '%' ? (size_t)snprintf(uri + o, 4, "%%%02X", (unsigned char)*p)
                                                    : (size_t)snprintf(uri + o, 2, "%c", *p);
        snprintf(uri + o, sizeof uri - o, "?%s", has_wal ? "mode=ro" : "immutable=1");
        name = uri;
    }
    int rc = sqlite3_open_v2(name, &db->h, flags, NULL);
    if (rc != SQLITE_OK) {
        store_seterr(err, STORE_EIO, "cannot open the index %s: %s", path,
                     db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
        db_close(db);
        return NULL;
    }
    /* Two processes share the archive: wait for the other's write instead of failing.
     * synchronous=FULL: with WAL, the commit itself is synced, which is what makes
     * "acknowledged" mean durable. */
    sqlite3_busy_timeout(db->h, 30000);
    if (readonly)
        return db_exec(db, "PRAGMA cache_size=-16000; PRAGMA temp_store=MEMORY;", err) == SQLITE_OK ? db : (db_close(db), NULL);
    if (db_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;"
                    "PRAGMA cache_size=-16000; PRAGMA temp_store=MEMORY;", err) != SQLITE_OK) {
        db_close(db);
        return NULL;
    }
    db_no_autocheckpoint(db);
    return db;
}

void db_close(db_t *db)
{
    if (!db) return;
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(db->stmt[i]);
    sqlite3_close_v2(db->h);
    free(db);
}

static bool has_column(db_t *db, const char *table, const char *column)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT 1 FROM pragma_table_info('%s') WHERE name='%s'", table, column);
    sqlite3_stmt *st = NULL;
    bool found = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

int schema_check(db_t *db, store_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, "SELECT value FROM meta WHERE key='schema'", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        store_seterr(err, STORE_EIO, "cannot read the index: %s", sqlite3_errmsg(db->h));
        return rc;
    }
    rc = sqlite3_step(st) == SQLITE_ROW ? SQLITE_OK : SQLITE_CORRUPT;
    if (rc != SQLITE_OK)
        store_seterr(err, STORE_ECORRUPT, "the index has no schema version: not a dicomfs archive");
    else if (strcmp((const char *)sqlite3_column_text(st, 0), SCHEMA_VERSION) != 0) {
        store_seterr(err, STORE_EUNSUPPORTED, "the archive's index has schema version %s; this dicomfs reads %s",
                     sqlite3_column_text(st, 0), SCHEMA_VERSION);
        rc = SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Archives written before dcm_json_mend_decimals hold DS values such as 5. or e-6 in their
 * metadata and QIDO attributes, which JSON parsers refuse: mended once, on the first
 * writable open by a dicomfs that knows (meta 'json_decimals'). The GLOB only narrows the
 * rows to look at: digit, dot, then one of ] , e E; or [ , - then e E. */
static int mend_decimals(db_t *db, store_err *err)
{
    /* metadata.json is a blob (its length known without reading it), instance.attrs text;
     * GLOB matches no blob, hence the casts. */
    static const struct {
        const char *table, *column;
        bool blob;
    } tables[] = {{"metadata", "json", true}, {"instance", "attrs", false}};
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, "SELECT 1 FROM meta WHERE key='json_decimals'", -1, &st, NULL);
    bool done = rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) store_seterr(err, STORE_EIO, "cannot read the index: %s", sqlite3_errmsg(db->h));
    if (rc != SQLITE_OK || done) return rc;
    for (size_t t = 0; t < sizeof tables / sizeof tables[0] && rc == SQLITE_OK; t++) {
        char q[256], u[256];
        const char *c = tables[t].column;
        snprintf(q, sizeof q,
                 "SELECT watermark, %s FROM %s WHERE CAST(%s AS TEXT) GLOB '*[0-9].[],eE]*'"
                 " OR CAST(%s AS TEXT) GLOB '*[[,-][eE]*'", c, tables[t].table, c, c);
        snprintf(u, sizeof u, "UPDATE %s SET %s=?2 WHERE watermark=?1", tables[t].table, c);
        sqlite3_stmt *sel = NULL, *upd = NULL;
        rc = sqlite3_prepare_v2(db->h, q, -1, &sel, NULL);
        if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db->h, u, -1, &upd, NULL);
        /* SQLite keeps the scan's place across an update of the row it is on (its key,
         * the rowid, stays); a row met twice is mended already and left alone. */
        while (rc == SQLITE_OK && sqlite3_step(sel) == SQLITE_ROW) {
            size_t m = 0;
            char *text = dcm_json_mend_decimals((const char *)sqlite3_column_text(sel, 1),
                                                (size_t)sqlite3_column_bytes(sel, 1), &m);
            if (text) {
                sqlite3_bind_int64(upd, 1, sqlite3_column_int64(sel, 0));
                if (tables[t].blob) sqlite3_bind_blob(upd, 2, text, (int)m, SQLITE_TRANSIENT);
                else sqlite3_bind_text(upd, 2, text, (int)m, SQLITE_TRANSIENT);
                if (sqlite3_step(upd) != SQLITE_DONE) rc = sqlite3_errcode(db->h);
                sqlite3_reset(upd);
                free(text);
            }
        }
        if (rc == SQLITE_OK && sqlite3_reset(sel) != SQLITE_OK) rc = sqlite3_errcode(db->h);
        if (rc != SQLITE_OK) store_seterr(err, STORE_EIO, "cannot mend the index's JSON numbers: %s", sqlite3_errmsg(db->h));
        sqlite3_finalize(sel);
        sqlite3_finalize(upd);
    }
    return rc == SQLITE_OK ? db_exec(db, "INSERT INTO meta VALUES('json_decimals', '1')", err) : rc;
}

int schema_create(db_t *db, store_err *err)
{
    int rc = db_exec(db, "BEGIN IMMEDIATE", err);
    if (rc != SQLITE_OK) return rc;
    rc = db_exec(db, schema, err);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(db->h, "SELECT value FROM meta WHERE key='schema'", -1, &st, NULL);
        if (st && sqlite3_step(st) == SQLITE_ROW &&
            strcmp((const char *)sqlite3_column_text(st, 0), SCHEMA_VERSION) != 0) {
            store_seterr(err, STORE_EUNSUPPORTED, "the archive's index has schema version %s; this dicomfs reads %s",
                         sqlite3_column_text(st, 0), SCHEMA_VERSION);
            rc = SQLITE_ERROR;
        }
        sqlite3_finalize(st);
    }
    if (rc == SQLITE_OK && !has_column(db, "instance", "crc32")) /* archives made before checksums */
        rc = db_exec(db, "ALTER TABLE instance ADD COLUMN crc32 INTEGER", err);
    if (rc == SQLITE_OK) rc = mend_decimals(db, err);
    if (rc == SQLITE_OK) {
        rc = db_exec(db, "INSERT OR IGNORE INTO partition(key, name, created_us) VALUES(1, '"
                         STORE_DEFAULT_PARTITION "', CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))", err);
    }
    if (rc == SQLITE_OK) return db_exec(db, "COMMIT", err);
    db_exec(db, "ROLLBACK", NULL);
    return rc;
}
