/* archive.c — opening an archive directory: layout, locking, connections, crash repair.
 *
 * Layout: index.db (SQLite, WAL), objects/xx/<32 hex>.dcm (immutable), tmp/ (uploads in
 * progress, <id>.part, and one <id>.open file per process that changes objects/), lock.
 *
 * Repair rule: an object file that no index row names was never acknowledged (a crash
 * between its rename and the COMMIT) or was deleted (a crash between the COMMIT and the
 * unlink). Such files can only exist after a process ended without store_close. So a
 * process creates tmp/<id>.open, synced with its directory, before its first rename into
 * or unlink from objects/, and removes it when it closes the archive (unless a COMMIT
 * failed in a way that may leave orphans, commit.c). When an exclusive
 * open finds one left behind, repair compares objects/ with the index and removes the
 * files no row names. Nothing here relies on the file system's ordering of metadata (a
 * journal): the .open file is durable before anything it covers happens, and a lost
 * removal only costs one needless scan. Per object this costs nothing (no marker files:
 * one inode per stored instance). Repair runs only when no other process has the archive
 * open (exclusive flock), since another process's objects may be mid-commit. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

void store_path(const store_t *s, const char *rel, char out[PATH_MAX])
{
    snprintf(out, PATH_MAX, "%s/%s", s->dir, rel);
}

const char *store_dir(const store_t *s) { return s->dir; }

bool store_valid_uid(const char *v)
{
    size_t n = v ? strlen(v) : 0;
    return n > 0 && n <= STORE_UID_MAX && v[n - 1] != '.' && strspn(v, "0123456789.") == n;
}

int64_t store_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void store_format_time(int64_t us, char out[40])
{
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%.19s.%06d+00:00", date, (int)(us % 1000000));
}

/* Names need uniqueness, not secrecy: a per-thread xorshift generator seeded from
 * getrandom once saves a system call per name (two per stored instance). O_EXCL on the
 * upload and the 128 bits of a name keep collisions out of reach. */
static uint64_t next_random(void)
{
    static _Thread_local uint64_t st[2];
    if (!st[0] && !st[1]) {
        if (getrandom(st, sizeof st, 0) != (ssize_t)sizeof st || (!st[0] && !st[1])) {
            st[0] = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&st;
            st[1] = (uint64_t)clock() ^ 0x9e3779b97f4a7c15ull;
        }
    }
    uint64_t x = st[0], y = st[1]; /* xorshift128+ */
    st[0] = y;
    x ^= x << 23;
    st[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return st[1] + y;
}

void store_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t r = 0;
    for (size_t i = 0; i < nbytes; i++) {
        if (i % 8 == 0) r = next_random();
        unsigned b = (unsigned)(r & 0xff);
        r >>= 8;
        out[2 * i] = hex[b >> 4];
        out[2 * i + 1] = hex[b & 15];
    }
    out[2 * nbytes] = 0;
}

int64_t partition_key(db_t *db, const char *name, bool create)
{
    sqlite3_stmt *st = db_stmt(db, ST_PARTITION_GET);
    if (!st) return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) return sqlite3_column_int64(st, 0);
    if (!create) return 0;
    st = db_stmt(db, ST_PARTITION_ADD);
    if (!st) return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, store_now_us());
    if (sqlite3_step(st) != SQLITE_DONE) return 0;
    return sqlite3_last_insert_rowid(db->h);
}

/* ---- Connections ------------------------------------------------------------------ */

db_t *db_get(store_t *s, store_err *err)
{
    pthread_mutex_lock(&s->pool_lock);
    db_t *db = s->n_idle > 0 ? s->idle[--s->n_idle] : NULL;
    pthread_mutex_unlock(&s->pool_lock);
    if (db) return db;
    char path[PATH_MAX];
    store_path(s, "index.db", path);
    return db_open(path, false, s->readonly, err);
}

void db_idle(db_t *db)
{
    /* A statement left on a row keeps its read snapshot open; a later BEGIN IMMEDIATE
     * on that snapshot would fail at once with "database is locked" when another
     * process has written since. */
    sqlite3_stmt *st = NULL;
    while ((st = sqlite3_next_stmt(db->h, st)) != NULL) sqlite3_reset(st);
}

void db_put(store_t *s, db_t *db)
{
    if (!db) return;
    db_idle(db);
    pthread_mutex_lock(&s->pool_lock);
    if (s->n_idle < POOL_MAX) {
        s->idle[s->n_idle++] = db;
        db = NULL;
    }
    pthread_mutex_unlock(&s->pool_lock);
    db_close(db);
}

/* ---- Layout and repair ------------------------------------------------------------ */

/* Whether DIR holds nothing but what an archive's creation makes before index.db (a
 * creation cut short, or under way in another process), or a file system's lost+found. */
static bool empty_enough(const char *dir)
{
    static const char *const allowed[] = {".", "..", "objects", "tmp", "lock", "index.db-journal", "index.db-wal",
                                          "index.db-shm", "lost+found"};
    DIR *d = opendir(dir);
    if (!d) return false;
    bool empty = true;
    for (struct dirent *e; empty && (e = readdir(d)) != NULL;) {
        bool ours = false;
        for (size_t i = 0; i < sizeof allowed / sizeof allowed[0] && !ours; i++) ours = strcmp(e->d_name, allowed[i]) == 0;
        empty = ours;
    }
    closedir(d);
    return empty;
}

/* An archive is created only in a missing or empty folder: swapped arguments must not
 * turn a CD's folder into an archive. */
static int make_layout(const char *dir, bool create, store_err *err)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (!create || errno != ENOENT)
            return store_seterr(err, STORE_ENOTFOUND, "%s: %s", dir, strerror(errno));
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return store_seterr(err, STORE_EIO, "cannot create %s: %s", dir, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        return store_seterr(err, STORE_EINVAL, "%s is not a directory", dir);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/index.db", dir);
    bool exists = access(path, F_OK) == 0;
    if (!exists && !create)
        return store_seterr(err, STORE_ENOTFOUND, "%s is not a dicomfs archive (no index.db)", dir);
    if (!exists && !empty_enough(dir))
        return store_seterr(err, STORE_EEXIST,
                            "%s is not a dicomfs archive (no index.db) and not empty; an archive is created only in "
                            "a new or empty folder", dir);
    snprintf(path, sizeof path, "%s/objects/ff", dir);
    if (access(path, F_OK) == 0) return STORE_OK;
    const char *subdirs[] = {"objects", "tmp"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subdirs[i]);
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return store_seterr(err, STORE_EIO, "cannot create %s: %s", path, strerror(errno));
    }
    for (int i = 0; i < 256; i++) {
        snprintf(path, sizeof path, "%s/objects/%02x", dir, i);
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return store_seterr(err, STORE_EIO, "cannot create %s: %s", path, strerror(errno));
    }
    return STORE_OK;
}

size_t store_repair(store_t *s)
{
    char tmp[PATH_MAX];
    store_path(s, "tmp", tmp);
    DIR *d = opendir(tmp);
    if (!d) return 0;
    size_t repaired = 0;
    bool unclean = false;
    struct dirent *e;
    pthread_mutex_lock(&s->write_lock);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
        size_t len = strlen(e->d_name);
        /* .pending: the per-object markers of earlier versions mean the same */
        if ((len > 5 && strcmp(e->d_name + len - 5, ".open") == 0) ||
            (len > 8 && strcmp(e->d_name + len - 8, ".pending") == 0))
            unclean = true;
        if (unlink(path) == 0) repaired++;
    }
    closedir(d);
    if (unclean) repaired += fsck_remove_orphans(s, s->writer);
    pthread_mutex_unlock(&s->write_lock);
    if (repaired) syncfs(s->dirfd); /* only then: a read-only open must not flush the disk */
    return repaired;
}

/* What ingest extracts: the core searchable tags now; extended query tags join later. */
static void load_index_tags(store_t *s)
{
    size_t n;
    const tag_def *core = tags_core_list(&n);
    s->index_tags = calloc(n, sizeof *s->index_tags);
    s->value_tags = calloc(n + 2, sizeof *s->value_tags);
    s->attr_tags = calloc(128, sizeof *s->attr_tags);
    if (!s->index_tags || !s->value_tags || !s->attr_tags) abort();
    for (size_t i = 0; i < n; i++) {
        if (core[i].tag == TAG_ModalitiesInStudy) continue; /* computed from the series */
        index_tag *t = &s->index_tags[s->n_index_tags++];
        t->tag = core[i].tag;
        snprintf(t->vr, sizeof t->vr, "%s", core[i].vr);
        t->level = core[i].level;
        s->value_tags[s->n_value_tags++] = t->tag;
    }
    s->value_tags[s->n_value_tags++] = TAG_Modality;
    s->value_tags[s->n_value_tags++] = TAG_InstanceNumber;
    s->n_attr_tags = tags_returnable_list(s->attr_tags, 128);
}

store_t *store_open(const char *dir, int flags, store_err *err)
{
    bool create = flags & STORE_OPEN_CREATE;
    if (make_layout(dir, create, err) != STORE_OK) return NULL;

    store_t *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->dir = realpath(dir, NULL);
    s->dirfd = -1;
    s->lockfd = -1;
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_mutex_init(&s->q_lock, NULL);
    pthread_mutex_init(&s->pool_start_lock, NULL);
    pthread_mutex_init(&s->change_lock, NULL);
    pthread_mutex_init(&s->xqt_lock, NULL);
    pthread_mutex_init(&s->reindex_lock, NULL);
    pthread_cond_init(&s->reindex_cond, NULL);
    s->xqt_gen = -1;
    s->reindex_fd = -1;
    s->xqt = calloc(STORE_XQT_MAX, sizeof *s->xqt);
    if (!s->xqt) abort();
    pthread_cond_init(&s->q_cond, NULL);
    pthread_cond_init(&s->q_space, NULL);
    if (!s->dir) {
        store_seterr(err, STORE_EIO, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    s->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char path[PATH_MAX];
    store_path(s, "lock", path);
    s->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lockfd < 0 && (errno == EROFS || errno == EACCES)) {
        /* A read-only disk (or a folder we may only read): serve reads, refuse writes. */
        s->lockfd = open(path, O_RDONLY | O_CLOEXEC);
        s->readonly = s->lockfd >= 0;
    }
    if (s->dirfd < 0 || s->lockfd < 0) {
        store_seterr(err, STORE_EIO, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    bool alone = flock(s->lockfd, LOCK_EX | LOCK_NB) == 0;
    if (!alone && flock(s->lockfd, LOCK_SH) != 0) {
        store_seterr(err, STORE_EIO, "cannot lock %s: %s", path, strerror(errno));
        goto fail;
    }
    store_path(s, "index.db", path);
    if (create) { /* private from the start: SQLite's default is 0644 (its -wal and -shm take this mode) */
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) close(fd);
    }
    s->writer = db_open(path, create, s->readonly, err);
    if (!s->writer || (s->readonly ? schema_check(s->writer, err) : schema_create(s->writer, err)) != SQLITE_OK) goto fail;
    load_index_tags(s);
    xqt_refresh(s, s->writer);
    if (s->readonly) return s; /* nothing to repair or resume: nothing can change */
    if (alone) {
        store_repair(s);
        flock(s->lockfd, LOCK_SH);
    }
    /* A reindex that a stopped process left unfinished goes on here. */
    xqt_resume(s);
    return s;
fail:
    store_close(s);
    return NULL;
}

void store_close(store_t *s)
{
    if (!s) return;
    if (s->xqt) xqt_stop(s); /* between two batches */
    parse_pool_stop(s); /* before the commit thread: a parsed item may still be committed */
    commit_stop(s);
    /* Every rename and unlink of this process is settled: nothing left to repair. */
    if (s->open_mark[0] && !s->keep_open_mark) unlinkat(s->dirfd, s->open_mark, 0);
    store_checkpoint(s, true); /* beside other processes' writes (checkpoint.c) */
    for (int i = 0; i < s->n_idle; i++) db_close(s->idle[i]);
    db_close(s->checkpointer);
    /* The writer last: when no other process has the index open, its close folds the WAL
     * back (SQLite, under an exclusive lock), so the archive is one file again. */
    db_close(s->writer);
    if (s->lockfd >= 0) close(s->lockfd);
    if (s->dirfd >= 0) close(s->dirfd);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->write_lock);
    pthread_mutex_destroy(&s->q_lock);
    pthread_mutex_destroy(&s->pool_start_lock);
    pthread_mutex_destroy(&s->change_lock);
    pthread_mutex_destroy(&s->xqt_lock);
    pthread_mutex_destroy(&s->reindex_lock);
    pthread_cond_destroy(&s->reindex_cond);
    free(s->xqt);
    pthread_cond_destroy(&s->q_cond);
    pthread_cond_destroy(&s->q_space);
    free(s->index_tags);
    free(s->value_tags);
    free(s->attr_tags);
    free(s->dir);
    free(s);
}

store_status store_readonly(const store_t *s, store_err *err)
{
    return store_seterr(err, STORE_EREADONLY, "the archive %s is read-only (its disk or folder cannot be written): "
                        "nothing was changed", s->dir);
}

int store_mark_unclean(store_t *s)
{
    if (s->open_mark[0]) return 0;
    char id[17], rel[32];
    store_random_hex(id, 8);
    snprintf(rel, sizeof rel, "tmp/%s.open", id);
    int fd = openat(s->dirfd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    int dfd = openat(s->dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fsync(fd) == 0 && dfd >= 0 && fsync(dfd) == 0 ? 0 : -1;
    int saved = errno;
    close(fd);
    if (dfd >= 0) close(dfd);
    if (rc != 0) {
        unlinkat(s->dirfd, rel, 0);
        errno = saved;
        return -1;
    }
    snprintf(s->open_mark, sizeof s->open_mark, "%s", rel);
    return 0;
}

void store_on_change(store_t *s, store_change_fn fn, void *ctx)
{
    pthread_mutex_lock(&s->change_lock);
    s->change_fn = fn;
    s->change_ctx = ctx;
    pthread_mutex_unlock(&s->change_lock);
}

void store_notify_change(store_t *s)
{
    pthread_mutex_lock(&s->change_lock);
    if (s->change_fn) s->change_fn(s->change_ctx);
    pthread_mutex_unlock(&s->change_lock);
}
