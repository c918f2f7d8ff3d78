/* commit.c — group commit. One thread per store takes every item queued at that moment
 * and makes them durable together:
 *
 *   BEGIN IMMEDIATE; insert each item's rows (a savepoint each: a duplicate fails alone,
 *                    or is already stored when identical_ok finds the same bytes)
 *   (once per process: tmp/<id>.open, which tells repair to look; archive.c)
 *   rename tmp -> objects/xx/<name>.dcm
 *   sync data and renames (fdatasync + directory fsync per file for 1-2 items, else
 *                          one syncfs for the whole group)
 *   COMMIT                (SQLite syncs the WAL)  ==> acknowledged
 *
 * So N instances that arrive together cost two syncs, not 2N. Nothing reads an object
 * before its row commits, so renaming before the sync is safe; a crash before COMMIT
 * leaves objects that no row names, which repair removes (archive.c).
 *
 * While other uploads are still being received, or a caller announced more items
 * (store_expect), the thread waits a moment (at most GATHER_US) for them to join the
 * group; one client's lone upload is never delayed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define QUEUE_MAX 512  /* items waiting; submitters block beyond this (back-pressure) */
#define GROUP_MAX 1000 /* items in one transaction */
#define FEW 2          /* up to this many items, per-file syncs beat syncfs */
#define GATHER_US 2000 /* longest wait for uploads in progress to join a group */
#define GATHER_MIN 64  /* a group this large goes at once */

static void reject_all(store_item **v, size_t n, store_status st, const char *msg)
{
    for (size_t i = 0; i < n; i++)
        item_reject(v[i], st, STORE_FAIL_PROCESSING, "the archive could not store the instance: %s", msg);
}

/* fsync of a file (or directory) by name, relative to the archive. */
static int sync_path(store_t *s, const char *rel, int flags)
{
    int fd = openat(s->dirfd, rel, O_RDONLY | O_CLOEXEC | flags);
    int rc = fd < 0 ? -1 : fsync(fd);
    if (fd >= 0) close(fd);
    return rc;
}

static int sync_group(store_t *s, store_item **v, size_t n)
{
    if (n > FEW) return syncfs(s->dirfd);
    for (size_t i = 0; i < n; i++) {
        char dir[16];
        snprintf(dir, sizeof dir, "%.10s", v[i]->object); /* objects/xx */
        if (sync_path(s, v[i]->object, 0) != 0 || sync_path(s, dir, O_DIRECTORY) != 0) return -1;
    }
    return 0;
}

static void unlink_objects(store_t *s, store_item **v, size_t n)
{
    for (size_t i = 0; i < n; i++) unlinkat(s->dirfd, v[i]->object, 0);
}

/* Makes the survivors (rows already inserted, transaction open) durable. */
static void make_durable(store_t *s, db_t *db, store_item **v, size_t n)
{
    const char *failed = NULL;
    store_status status = STORE_EIO; /* of the failure: STORE_ENOSPC when the disk is full */
    size_t renamed = 0;
    if (store_mark_unclean(s) != 0) failed = strerror(errno), status = store_errno_status(errno);
    for (; !failed && renamed < n; renamed++) {
        char to[PATH_MAX];
        store_path(s, v[renamed]->object, to);
        if (rename(v[renamed]->tmp, to) != 0) failed = strerror(errno), status = store_errno_status(errno);
        else v[renamed]->tmp[0] = 0;
    }
    if (!failed && sync_group(s, v, n) != 0) failed = strerror(errno), status = store_errno_status(errno);
    store_err err;
    /* No statement may stay on a row past COMMIT: its read snapshot would hold the WAL's
     * frames back from the checkpoint (checkpoint.c), and the WAL would grow without end. */
    db_idle(db);
    bool commit_failed = false;
    if (!failed && db_exec(db, "COMMIT", &err) != SQLITE_OK)
        failed = err.msg, status = err.status, commit_failed = true;
    if (failed) {
        db_exec(db, "ROLLBACK", NULL);
        /* A COMMIT that failed in its WAL sync may have written its commit frame, which
         * WAL recovery would then find: the rows could come back, so their objects stay
         * and the next exclusive open removes those no row names (the .open mark is kept).
         * A full disk fails before the commit frame is written: nothing can come back. */
        if (commit_failed && status != STORE_ENOSPC && status != STORE_EBUSY) s->keep_open_mark = true;
        else unlink_objects(s, v, renamed);
        reject_all(v, n, status, failed);
    } else {
        for (size_t i = 0; i < n; i++) {
            v[i]->final = true;
            v[i]->result.status = STORE_OK;
        }
        store_notify_change(s);
    }
}

/* An item found identical to one committed in the same group (identical_ok). */
typedef struct {
    store_item *item;
    const store_item *first;
} twin;

/* The item among the first N of V that already took ITEM's UIDs in this transaction. */
static const store_item *holder(store_item **v, size_t n, const store_item *item)
{
    const store_ingest_result *r = &item->result;
    for (size_t i = 0; i < n; i++) {
        const store_ingest_result *o = &v[i]->result;
        if (strcmp(o->sop_instance_uid, r->sop_instance_uid) == 0 && strcmp(o->series_uid, r->series_uid) == 0 &&
            strcmp(o->study_uid, r->study_uid) == 0 && strcmp(v[i]->partition, item->partition) == 0)
            return v[i];
    }
    return NULL;
}

static void commit_group(store_t *s, store_item **v, size_t n)
{
    pthread_mutex_lock(&s->write_lock);
    db_t *db = s->writer;
    store_err err;
    if (db_exec(db, "BEGIN IMMEDIATE", &err) != SQLITE_OK) {
        reject_all(v, n, err.status, err.msg);
        pthread_mutex_unlock(&s->write_lock);
        return;
    }
    size_t kept = 0, n_twins = 0;
    twin *twins = NULL;
    for (size_t i = 0; i < n; i++) {
        store_item *item = v[i];
        db_run(db, ST_SAVEPOINT);
        int rc = index_insert(s, db, item, &err);
        if (rc != SQLITE_OK) db_run(db, ST_ROLLBACK_TO);
        db_run(db, ST_RELEASE);
        if (rc == SQLITE_CONSTRAINT) {
            const store_item *first = holder(v, kept, item);
            item_settle_duplicate(s, item, first);
            if (first && item->result.already_stored) {
                if (!twins && !(twins = calloc(n, sizeof *twins))) abort();
                twins[n_twins++] = (twin){item, first};
            }
        } else if (rc != SQLITE_OK) {
            item_reject(item, err.status, STORE_FAIL_PROCESSING, "%s", err.msg);
        } else {
            v[kept++] = item;
        }
    }
    if (kept)
        make_durable(s, db, v, kept);
    else
        db_exec(db, "ROLLBACK", NULL);
    /* A copy is stored only when the first of the group really was. */
    for (size_t i = 0; i < n_twins; i++)
        if (twins[i].first->result.status != STORE_OK) {
            twins[i].item->result.already_stored = false;
            item_reject(twins[i].item, twins[i].first->result.status, twins[i].first->result.failure_reason, "%s",
                        twins[i].first->result.message);
        }
    free(twins);
    db_idle(db);
    pthread_mutex_unlock(&s->write_lock);
}

/* Waits (q_lock held) while uploads in progress may still join the group. */
static void gather(store_t *s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += GATHER_US * 1000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!s->q_stop && s->q_len < GATHER_MIN && (atomic_load(&s->uploads_open) > 0 || atomic_load(&s->expected) > 0))
        if (pthread_cond_timedwait(&s->q_cond, &s->q_lock, &until) != 0) break;
}

static void *commit_thread(void *arg)
{
    store_t *s = arg;
    /* On this thread's stack (16 KB of a few MB): nothing to allocate, and nothing that a
     * leak check run beside the thread (libFuzzer's, between inputs) could think lost. */
    store_item *group[GROUP_MAX], *done[GROUP_MAX];
    pthread_mutex_lock(&s->q_lock);
    for (;;) {
        while (!s->q_head && !s->q_stop) pthread_cond_wait(&s->q_cond, &s->q_lock);
        if (!s->q_head) break;
        gather(s);
        size_t n = 0;
        while (s->q_head && n < GROUP_MAX) {
            group[n++] = s->q_head;
            s->q_head = s->q_head->next;
        }
        if (!s->q_head) s->q_tail = NULL;
        s->q_len -= n;
        pthread_cond_broadcast(&s->q_space);
        pthread_mutex_unlock(&s->q_lock);

        memcpy(done, group, n * sizeof *group); /* commit_group reorders group */
        commit_group(s, group, n);
        for (size_t i = 0; i < n; i++) done[i]->done(done[i], done[i]->ctx);
        store_checkpoint(s, false); /* after the acknowledgements, not before */

        pthread_mutex_lock(&s->q_lock);
    }
    pthread_mutex_unlock(&s->q_lock);
    return NULL;
}

/* Queues N items (none final) at once, so they land in one group; DONE with CTX each. */
static void enqueue(store_t *s, store_item **items, size_t n, store_done_fn done, void *ctx)
{
    pthread_mutex_lock(&s->q_lock);
    if (!s->q_running) {
        if (pthread_create(&s->q_thread, NULL, commit_thread, s) != 0) {
            pthread_mutex_unlock(&s->q_lock);
            for (size_t i = 0; i < n; i++) {
                item_reject(items[i], STORE_EIO, STORE_FAIL_PROCESSING, "cannot start the commit thread");
                done(items[i], ctx);
            }
            return;
        }
        s->q_running = true;
    }
    for (size_t i = 0; i < n; i++) {
        store_item *item = items[i];
        item->done = done;
        item->ctx = ctx;
        item->next = NULL;
        while (s->q_len >= QUEUE_MAX) {
            pthread_cond_signal(&s->q_cond); /* let the thread drain what is there */
            pthread_cond_wait(&s->q_space, &s->q_lock);
        }
        if (s->q_tail)
            s->q_tail->next = item;
        else
            s->q_head = item;
        s->q_tail = item;
        s->q_len++;
    }
    pthread_cond_signal(&s->q_cond);
    pthread_mutex_unlock(&s->q_lock);
}

static void count_down_expected(store_t *s)
{
    long left = atomic_load(&s->expected);
    while (left > 0 && !atomic_compare_exchange_weak(&s->expected, &left, left - 1)) {
    }
}

void store_commit_async(store_t *s, store_item *item, store_done_fn done, void *ctx)
{
    count_down_expected(s);
    if (item->final) { /* rejected before commit: nothing to wait for */
        item->done = done;
        item->ctx = ctx;
        done(item, ctx);
        return;
    }
    enqueue(s, &item, 1, done, ctx);
}

void store_expect(store_t *s, long n)
{
    atomic_store(&s->expected, n > 0 ? n : 0);
    pthread_mutex_lock(&s->q_lock);
    pthread_cond_signal(&s->q_cond);
    pthread_mutex_unlock(&s->q_lock);
}

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    size_t left;
} waiter;

static void wake(store_item *item, void *ctx)
{
    waiter *w = ctx;
    pthread_mutex_lock(&w->m);
    w->left--;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

void store_commit(store_t *s, store_item **items, size_t n)
{
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    store_item **live = malloc((n ? n : 1) * sizeof *live);
    if (!live) abort();
    for (size_t i = 0; i < n; i++)
        if (!items[i]->final) live[w.left++] = items[i];
    if (w.left) enqueue(s, live, w.left, wake, &w); /* at once: one group, not 1 + (n-1) */
    pthread_mutex_lock(&w.m);
    while (w.left > 0) pthread_cond_wait(&w.c, &w.m);
    pthread_mutex_unlock(&w.m);
    pthread_mutex_destroy(&w.m);
    pthread_cond_destroy(&w.c);
    free(live);
}

void commit_stop(store_t *s)
{
    pthread_mutex_lock(&s->q_lock);
    bool running = s->q_running;
    s->q_stop = true;
    pthread_cond_broadcast(&s->q_cond);
    pthread_mutex_unlock(&s->q_lock);
    if (running) pthread_join(s->q_thread, NULL);
}
