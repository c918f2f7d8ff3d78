/* fsck.c — proves the archive consistent: SQLite's own check, every index row against
 * its object file (present, its size, its bytes' CRC-32), every object file against the index, and the derived columns
 * (counters, representatives, metadata rows) against the rows they summarise. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

typedef struct {
    void (*log)(const char *line, void *ctx);
    void *ctx;
} logger;

static void say(const logger *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t check_objects(store_t *s, db_t *db, const logger *l, bool repair, store_fsck_report *r);
static void say(const logger *l, const char *fmt, ...)
{
    if (!l->log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    l->log(line, l->ctx);
}

size_t fsck_remove_orphans(store_t *s, db_t *db)
{
    logger quiet = {NULL, NULL};
    store_fsck_report r;
    memset(&r, 0, sizeof r);
    return check_objects(s, db, &quiet, true, &r);
}

/* Runs a query whose rows are problems; logs each with PREFIX and returns the count. */
static size_t problems(db_t *db, const logger *l, const char *sql, const char *prefix)
{
    sqlite3_stmt *st = NULL;
    size_t n = 0;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        say(l, "index: cannot check (%s): %s", prefix, sqlite3_errmsg(db->h));
        return 1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        n++;
        say(l, "%s: %s", prefix, sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return n;
}

/* The CRC-32 of an object file (as ingest.c records it); 0, or -1 when unreadable. */
static int file_crc32(store_t *s, const char *obj, uint32_t *crc)
{
    int fd = openat(s->dirfd, obj, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    unsigned char buf[65536];
    uLong c = crc32(0L, Z_NULL, 0);
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) c = crc32(c, buf, (uInt)n);
    close(fd);
    *crc = (uint32_t)c;
    return n < 0 ? -1 : 0;
}

static void check_rows(store_t *s, db_t *db, const logger *l, store_fsck_report *r)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, "SELECT object, size, uid, crc32 FROM instance", -1, &st, NULL) != SQLITE_OK) return;
    while (sqlite3_step(st) == SQLITE_ROW) {
        r->instances++;
        const char *obj = (const char *)sqlite3_column_text(st, 0);
        struct stat sb;
        if (fstatat(s->dirfd, obj, &sb, 0) != 0) {
            r->missing++;
            say(l, "missing object: %s (instance %s)", obj, sqlite3_column_text(st, 2));
        } else if ((int64_t)sb.st_size != sqlite3_column_int64(st, 1)) {
            r->missing++;
            say(l, "object has the wrong size: %s (%lld bytes, index says %lld)", obj, (long long)sb.st_size,
                (long long)sqlite3_column_int64(st, 1));
        } else if (sqlite3_column_type(st, 3) != SQLITE_NULL) { /* NULL: stored before checksums */
            uint32_t want = (uint32_t)sqlite3_column_int64(st, 3), got = 0;
            int rc = file_crc32(s, obj, &got);
            if (rc != 0 || got != want) {
                r->missing++;
                say(l, rc != 0 ? "object cannot be read: %s (instance %s)"
                               : "object's bytes changed since they were stored (checksum): %s (instance %s)",
                    obj, sqlite3_column_text(st, 2));
            }
        }
    }
    sqlite3_finalize(st);
}

static size_t check_objects(store_t *s, db_t *db, const logger *l, bool repair, store_fsck_report *r)
{
    sqlite3_stmt *st = NULL;
    size_t removed = 0;
    if (sqlite3_prepare_v2(db->h, "SELECT 1 FROM instance WHERE object=?", -1, &st, NULL) != SQLITE_OK) return 0;
    for (int i = 0; i < 256; i++) {
        char rel[32], path[PATH_MAX];
        snprintf(rel, sizeof rel, "objects/%02x", i);
        store_path(s, rel, path);
        DIR *d = opendir(path);
        if (!d) {
            r->bad_index++;
            say(l, "missing directory: %s", rel);
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            r->objects++;
            char name[PATH_MAX];
            snprintf(name, sizeof name, "%s/%s", rel, e->d_name);
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) continue;
            if (rc != SQLITE_DONE) { /* an unanswered lookup is no proof of an orphan: keep it */
                r->bad_index++;
                say(l, "index: cannot look up %s: %s", name, sqlite3_errmsg(db->h));
                continue;
            }
            r->orphans++;
            if (repair && unlinkat(s->dirfd, name, 0) == 0) {
                r->repaired++;
                removed++;
                say(l, "orphan object removed: %s", name);
            } else {
                say(l, "orphan object (no index row): %s", name);
            }
        }
        closedir(d);
    }
    sqlite3_finalize(st);
    return removed;
}

static void check_derived(db_t *db, const logger *l, store_fsck_report *r)
{
    /* quick_check answers one row "ok" when the file is sound. */
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db->h, "PRAGMA quick_check", -1, &st, NULL);
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(st, 0);
        if (strcmp(row, "ok") == 0) continue;
        r->bad_index++;
        say(l, "index integrity: %s", row);
    }
    sqlite3_finalize(st);
    r->bad_index += problems(db, l,
        "SELECT uid FROM study st WHERE instance_count <> (SELECT count(*) FROM instance WHERE study=st.key)"
        " OR series_count <> (SELECT count(*) FROM series WHERE study=st.key)"
        " OR rep IS NOT (SELECT max(watermark) FROM instance WHERE study=st.key)",
        "study counters or representative wrong");
    r->bad_index += problems(db, l,
        "SELECT uid FROM series se WHERE instance_count <> (SELECT count(*) FROM instance WHERE series=se.key)"
        " OR rep IS NOT (SELECT max(watermark) FROM instance WHERE series=se.key)"
        " OR NOT EXISTS (SELECT 1 FROM study WHERE key=se.study)",
        "series counters, representative or study wrong");
    r->bad_index += problems(db, l,
        "SELECT uid FROM instance i WHERE NOT EXISTS (SELECT 1 FROM metadata m WHERE m.watermark=i.watermark)"
        " OR NOT EXISTS (SELECT 1 FROM series WHERE key=i.series AND study=i.study)",
        "instance without metadata or series");
    r->bad_index += problems(db, l,
        "SELECT watermark FROM metadata m WHERE NOT EXISTS (SELECT 1 FROM instance i WHERE i.watermark=m.watermark)",
        "metadata without instance");
    r->bad_index += problems(db, l,
        /* NOT IN over one scan: changefeed has no index on watermark, and a correlated
         * NOT EXISTS made this check quadratic (minutes at 100k instances). */
        "SELECT uid FROM instance WHERE watermark NOT IN (SELECT watermark FROM changefeed WHERE action='create')",
        "instance without a change-feed entry");
    /* v2 change-feed pages jump to sequence first+offset (changefeed.c): they need a feed
     * without gaps whose timestamps follow its sequences. */
    r->bad_index += problems(db, l,
        "SELECT 'the feed has ' || count(*) || ' rows but its last sequence is ' || max(sequence) FROM changefeed"
        " HAVING count(*) <> ifnull(max(sequence), 0)",
        "change-feed sequences with gaps");
    r->bad_index += problems(db, l,
        "SELECT b.sequence FROM changefeed a JOIN changefeed b ON b.sequence=a.sequence+1"
        " WHERE b.timestamp_us < a.timestamp_us LIMIT 20",
        "change-feed timestamp earlier than its predecessor's");
    r->bad_index += problems(db, l,
        "SELECT printf('%08X', tag) FROM xqt WHERE status=0 AND NOT EXISTS"
        " (SELECT 1 FROM operation o WHERE o.id=xqt.operation AND o.status IN (0, 1))",
        "extended query tag being added without an unfinished reindex");
    r->bad_index += problems(db, l,
        "SELECT printf('%08X', tag) FROM xqt x WHERE error_count <> (SELECT count(*) FROM xqt_error e WHERE e.tag=x.tag)",
        "extended query tag error count wrong");
}

store_status store_fsck(store_t *s, bool repair, void (*log)(const char *line, void *ctx), void *ctx,
                        store_fsck_report *r, store_err *err)
{
    memset(r, 0, sizeof *r);
    logger l = {log, ctx};
    if (repair && s->readonly) return store_readonly(s, err);
    if (repair) {
        /* The repair rule needs the archive to ourselves (see archive.c). */
        if (flock(s->lockfd, LOCK_EX | LOCK_NB) == 0) {
            r->repaired += store_repair(s);
            flock(s->lockfd, LOCK_SH);
        } else {
            say(&l, "another process has the archive open: temp files left alone");
        }
    }
    db_t *db = db_get(s, err);
    if (!db) return STORE_EIO;
    /* One read transaction, so rows and files are compared against one snapshot. */
    db_exec(db, "BEGIN", NULL);
    check_derived(db, &l, r);
    check_rows(s, db, &l, r);
    size_t removed = check_objects(s, db, &l, repair, r);
    db_exec(db, "COMMIT", NULL);
    db_put(s, db);
    size_t left = r->missing + r->bad_index + r->orphans - removed;
    if (left > 0) return store_seterr(err, STORE_ECORRUPT, "the archive has %zu problem(s)", left);
    return STORE_OK;
}
