/* inbox.c — dropped files (see inbox.h). A list of entries (for listing) with a hash
 * index on the path (for lookups, so a copy of 100,000 files stays linear), under one
 * mutex; the commit, which may take milliseconds, runs outside the lock.
 *
 * A file is checked at its first flush (parse, validation, a duplicate of other bytes):
 * that verdict is close()'s. Its commit is then queued, so that the files of a folder
 * copy share their syncs (group commit) while cp goes on with the next file, as a disk
 * file system's close() does not wait for the disk either. A drop whose UIDs are those
 * of another drop still being committed (MR_small.dcm and MR_small_RLE.dcm of one folder
 * copy) waits for that commit at its check and is checked again: the duplicate's verdict
 * is then close()'s too, never a surprise of the commit. fsync() of the file waits for
 * its commit and returns its verdict; fsync() of a folder (`sync DIR`) waits for every
 * queued commit and fails (EIO) when a file under it failed after its close() said it
 * would be stored (a disk error, another process storing the same UIDs meanwhile); the
 * file's fsync() and NAME.error say so too. Each late failure is reported once.
 *
 * Stored files are forgotten KEEP seconds after they were stored (they are in studies/
 * and patients/ by then), and emptied folders with them; failures stay until removed.
 * NAME and NAME.error are removed one at a time, as two files (rm -r removes both). */
#include "inbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

typedef struct entry {
    char *path;
    bool dir;
    mode_t mode;
    struct timespec mtime;
    uint64_t size;
    store_upload *up;   /* while written */
    bool done;          /* flushed: the verdict below is final (once not committing) */
    unsigned commits;   /* commits queued for it and not finished: the verdict may change */
    bool orphan;        /* unlinked while commits were queued: the last callback frees it */
    bool hidden;        /* unlinked while NAME.error stays: only that is visible */
    bool late;          /* failed at commit after close() said 0; not yet told by an fsync */
    unsigned gen;       /* counts re-creations, so a late commit knows its entry is gone */
    int verdict;        /* 0 or -errno */
    char *error;        /* why, when the verdict is an error */
    store_ref *ref;     /* what it was stored as (reads of the name read that) */
    time_t settled;     /* when the verdict came (CLOCK_MONOTONIC seconds) */
    unsigned children;  /* scratch for the sweep */
    struct entry *next, *prev; /* the list */
    struct entry *hnext; /* the hash chain */
} entry;

#define BUCKETS 65536
#define FLIGHT_BUCKETS 1024 /* divides BUCKETS: hash() % FLIGHT_BUCKETS spreads as well */

typedef struct commit_ticket commit_ticket;

struct inbox {
    store_t *store;
    unsigned keep;      /* seconds a stored file stays listed */
    bool sync_close;    /* close() waits for the commit, as fsync() does */
    time_t swept;       /* last sweep (CLOCK_MONOTONIC seconds) */
    pthread_mutex_t lock;
    pthread_cond_t committed; /* a queued commit finished */
    size_t pending;     /* commits queued and not finished */
    unsigned long commits_done; /* commits finished so far (hold_back: did one end meanwhile?) */
    entry *head;
    entry *bucket[BUCKETS];
    commit_ticket *flight[FLIGHT_BUCKETS]; /* queued commits by SOP Instance UID */
};

static unsigned hash(const char *path)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

static void index_add(inbox *ib, entry *e)
{
    unsigned b = hash(e->path);
    e->hnext = ib->bucket[b];
    ib->bucket[b] = e;
}

static void index_del(inbox *ib, entry *e)
{
    for (entry **p = &ib->bucket[hash(e->path)]; *p; p = &(*p)->hnext)
        if (*p == e) {
            *p = e->hnext;
            return;
        }
}

inbox *inbox_new(store_t *store, unsigned keep_seconds, bool sync_close)
{
    inbox *ib = calloc(1, sizeof *ib);
    if (!ib) abort();
    ib->store = store;
    ib->keep = keep_seconds;
    ib->sync_close = sync_close;
    pthread_mutex_init(&ib->lock, NULL);
    pthread_cond_init(&ib->committed, NULL);
    return ib;
}

static void entry_free(entry *e)
{
    store_upload_abort(e->up);
    free(e->ref);
    free(e->path);
    free(e->error);
    free(e);
}

void inbox_free(inbox *ib)
{
    if (!ib) return;
    pthread_mutex_lock(&ib->lock); /* the commit callbacks still to come touch entries */
    while (ib->pending) pthread_cond_wait(&ib->committed, &ib->lock);
    pthread_mutex_unlock(&ib->lock);
    for (entry *e = ib->head, *next; e; e = next) {
        next = e->next;
        entry_free(e);
    }
    pthread_cond_destroy(&ib->committed);
    pthread_mutex_destroy(&ib->lock);
    free(ib);
}

static time_t now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec;
}

static entry *find(inbox *ib, const char *path);
static void unlink_entry(inbox *ib, entry *victim);
static entry *wait_committed(inbox *ib, const char *path);

/* Forgets stored files older than KEEP, then folders left empty and older than KEEP
 * (deepest first, one level per pass). At most every KEEP/4 seconds; caller holds the
 * lock. */
static void sweep(inbox *ib)
{
    time_t now = now_s();
    if (now - ib->swept < (time_t)(ib->keep / 4 + 1)) return;
    ib->swept = now;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    for (entry *e = ib->head, *next; e; e = next) {
        next = e->next;
        if (!e->dir && e->done && !e->commits && e->verdict == 0 && !e->error && now - e->settled >= (time_t)ib->keep)
            unlink_entry(ib, e);
    }
    for (bool removed = true; removed;) {
        removed = false;
        for (entry *e = ib->head; e; e = e->next) e->children = 0;
        for (entry *e = ib->head; e; e = e->next) {
            char *slash = strrchr(e->path, '/');
            if (slash == e->path) continue;
            *slash = 0;
            entry *parent = find(ib, e->path);
            *slash = '/';
            if (parent) parent->children++;
        }
        for (entry *e = ib->head, *next; e; e = next) {
            next = e->next;
            if (e->dir && e->children == 0 && wall.tv_sec - e->mtime.tv_sec >= (time_t)ib->keep) {
                unlink_entry(ib, e);
                removed = true;
            }
        }
    }
}

static entry *find(inbox *ib, const char *path)
{
    for (entry *e = ib->bucket[hash(path)]; e; e = e->hnext)
        if (strcmp(e->path, path) == 0) return e;
    return NULL;
}

/* PATH as the copying program sees it: a hidden entry is only its NAME.error. */
static entry *visible(inbox *ib, const char *path)
{
    entry *e = find(ib, path);
    return e && !e->hidden ? e : NULL;
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* OS junk: accepted and thrown away. */
static bool is_junk(const char *path)
{
    const char *b = base_name(path);
    return strcmp(b, ".DS_Store") == 0 || strcasecmp(b, "Thumbs.db") == 0 || strcasecmp(b, "desktop.ini") == 0 ||
           strncmp(b, "._", 2) == 0;
}

/* The parent of PATH must be the root, /inbox or a folder made in the inbox. */
static bool parent_ok(inbox *ib, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = (size_t)(slash - path);
    if (len == 0 || (len == 6 && strncmp(path, "/inbox", 6) == 0)) return true;
    char parent[4096];
    if (len >= sizeof parent) return false;
    memcpy(parent, path, len);
    parent[len] = 0;
    entry *e = find(ib, parent);
    return e && e->dir;
}

static entry *add(inbox *ib, const char *path, bool dir, mode_t mode)
{
    entry *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->path = strdup(path);
    if (!e->path) abort();
    e->dir = dir;
    e->mode = mode & 07777;
    clock_gettime(CLOCK_REALTIME, &e->mtime);
    e->next = ib->head;
    if (ib->head) ib->head->prev = e;
    ib->head = e;
    index_add(ib, e);
    return e;
}

int inbox_create(inbox *ib, const char *path, mode_t mode)
{
    if (strlen(base_name(path)) > 255) return -ENAMETOOLONG;
    pthread_mutex_lock(&ib->lock);
    sweep(ib);
    int rc = 0;
    entry *e = find(ib, path);
    if (!parent_ok(ib, path)) {
        rc = -ENOENT;
    } else if (e && e->dir) {
        rc = -EISDIR;
    } else {
        /* Creating a name again (an overwrite) starts a new upload in its place. */
        if (!e) e = add(ib, path, false, mode);
        store_upload_abort(e->up);
        e->hidden = false;
        e->late = false;
        free(e->error);
        e->error = NULL;
        free(e->ref);
        e->ref = NULL;
        e->up = NULL;
        e->done = false;
        e->gen++; /* a commit still queued for the old content no longer speaks for it */
        e->verdict = 0;
        e->size = 0;
        store_err err = {0};
        if (!is_junk(path) && !(e->up = store_upload_begin(ib->store, &err))) rc = err.status == STORE_ENOSPC ? -ENOSPC : err.status == STORE_EREADONLY ? -EROFS : -EIO;
        clock_gettime(CLOCK_REALTIME, &e->mtime);
    }
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

int inbox_mkdir(inbox *ib, const char *path, mode_t mode)
{
    pthread_mutex_lock(&ib->lock);
    int rc = visible(ib, path) ? -EEXIST : !parent_ok(ib, path) ? -ENOENT : 0;
    entry *gone = rc ? NULL : find(ib, path);
    if (gone) unlink_entry(ib, gone); /* a removed file's NAME.error goes with its name */
    if (!rc) add(ib, path, true, mode);
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

/* Looks PATH up as a file being written; NULL (and *RC) otherwise. */
static store_upload *writable(inbox *ib, const char *path, int *rc, entry **out)
{
    entry *e = visible(ib, path);
    *out = e;
    if (!e) *rc = -ENOENT;
    else if (e->dir) *rc = -EISDIR;
    else if (e->done) *rc = -EBADF; /* already stored: write a new copy under a new name */
    else *rc = 0;
    return e && !*rc ? e->up : NULL;
}

int inbox_write(inbox *ib, const char *path, const char *buf, size_t len, off_t off)
{
    pthread_mutex_lock(&ib->lock);
    int rc;
    entry *e;
    store_upload *up = writable(ib, path, &rc, &e);
    if (!rc) {
        store_status st = up ? store_upload_pwrite(up, buf, len, (uint64_t)off) : STORE_OK;
        if (st != STORE_OK) rc = st == STORE_ENOSPC ? -ENOSPC : -EIO;
        if (!rc && (uint64_t)off + len > e->size) e->size = (uint64_t)off + len;
        clock_gettime(CLOCK_REALTIME, &e->mtime);
    }
    pthread_mutex_unlock(&ib->lock);
    return rc ? rc : (int)len;
}

int inbox_truncate(inbox *ib, const char *path, off_t size)
{
    pthread_mutex_lock(&ib->lock);
    int rc;
    entry *e;
    store_upload *up = writable(ib, path, &rc, &e);
    if (!rc) {
        store_status st = up ? store_upload_truncate(up, (uint64_t)size) : STORE_OK;
        if (st != STORE_OK) rc = st == STORE_ENOSPC ? -ENOSPC : -EIO;
        else e->size = (uint64_t)size;
    }
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

int inbox_read(inbox *ib, const char *path, char *buf, size_t len, off_t off)
{
    pthread_mutex_lock(&ib->lock);
    entry *e = visible(ib, path);
    int rc = !e ? -ENOENT : e->dir ? -EISDIR : 0;
    store_ref ref;
    memset(&ref, 0, sizeof ref);
    if (!rc && e->up) {
        long n = store_upload_pread(e->up, buf, len, (uint64_t)off);
        rc = n < 0 ? -EIO : (int)n;
    } else if (!rc && e->done) {
        e = wait_committed(ib, path); /* its bytes are in the archive once committed */
        if (e && e->ref) ref = *e->ref;
    }
    pthread_mutex_unlock(&ib->lock);
    if (!ref.study_uid[0]) return rc;
    /* Stored: the name reads as the stored instance (a copier that verifies sees its
     * bytes), or as nothing once it was deleted from the archive. */
    store_instance *in = NULL;
    size_t n = 0;
    if (store_instances(ib->store, NULL, ref.study_uid, ref.series_uid, ref.sop_instance_uid, &in, &n, NULL) == STORE_OK) {
        int fd = store_open_object(ib->store, &in[0]);
        ssize_t got = fd >= 0 ? pread(fd, buf, len, off) : -1;
        rc = got < 0 ? -EIO : (int)got;
        if (fd >= 0) close(fd);
    }
    free(in);
    return rc;
}

/* The errno a copying program shows for each kind of failure. */
static int errno_for(const store_ingest_result *r)
{
    switch (r->failure_reason) {
    case STORE_FAIL_EXISTS: return -EEXIST;
    case STORE_FAIL_VALIDATION: return -EINVAL;
    case STORE_FAIL_PROCESSING:
        return r->status == STORE_ENOSPC ? -ENOSPC : r->status == STORE_EIO || r->status == STORE_EBUSY ? -EIO : -EBADMSG;
    default: return -EIO;
    }
}

/* A queued commit for one entry, and the entry's generation when it was queued. While
 * queued it is in the flight index under the UIDs it will be stored as. */
struct commit_ticket {
    inbox *ib;
    entry *e;
    unsigned gen;
    char *name;
    store_ref uids;
    commit_ticket *fnext; /* the flight index's chain */
};

static bool same_uids(const store_ref *a, const store_ref *b)
{
    return strcmp(a->sop_instance_uid, b->sop_instance_uid) == 0 && strcmp(a->series_uid, b->series_uid) == 0 &&
           strcmp(a->study_uid, b->study_uid) == 0;
}

static commit_ticket **flight_chain(inbox *ib, const store_ref *uids)
{
    return &ib->flight[hash(uids->sop_instance_uid) % FLIGHT_BUCKETS];
}

static commit_ticket *flight_find(inbox *ib, const store_ref *uids)
{
    for (commit_ticket *t = *flight_chain(ib, uids); t; t = t->fnext)
        if (same_uids(&t->uids, uids)) return t;
    return NULL;
}

static void flight_add(inbox *ib, commit_ticket *t)
{
    commit_ticket **chain = flight_chain(ib, &t->uids);
    t->fnext = *chain;
    *chain = t;
}

static void flight_del(inbox *ib, commit_ticket *t)
{
    for (commit_ticket **p = flight_chain(ib, &t->uids); *p; p = &(*p)->fnext)
        if (*p == t) {
            *p = t->fnext;
            return;
        }
}

/* NAME.error: the reason, and the failed attributes unless they only repeat it. FIRST
 * names the drop with the same UIDs this one waited for (NULL: none). */
static char *failure_text(const char *name, const store_ingest_result *r, const char *first)
{
    char *text = NULL, *why = NULL;
    if (first && r->failure_reason == STORE_FAIL_EXISTS) {
        if (asprintf(&why, "another file with the same UIDs but other bytes, %s, was stored first (the instance %s of "
                     "series %s in study %s); delete it to store this one", first, r->sop_instance_uid, r->series_uid,
                     r->study_uid) < 0)
            return NULL;
    }
    const char *attrs = r->failed_attributes && strcmp(r->failed_attributes, r->message) != 0 ? r->failed_attributes : NULL;
    int n = asprintf(&text, "%s: not stored (FailureReason %d): %s\n%s%s", name, r->failure_reason, why ? why : r->message,
                     attrs ? attrs : "", attrs ? "\n" : "");
    free(why);
    return n < 0 ? NULL : text;
}

/* The commit thread's word on a queued file: a late failure becomes its verdict. */
static void on_committed(store_item *item, void *ctx)
{
    commit_ticket *t = ctx;
    const store_ingest_result *r = store_item_result(item);
    char *error = r->status == STORE_OK ? NULL : failure_text(t->name, r, NULL);
    inbox *ib = t->ib;
    pthread_mutex_lock(&ib->lock);
    flight_del(ib, t);
    entry *e = t->e;
    e->commits--;
    if (e->gen == t->gen && r->status != STORE_OK) {
        e->verdict = errno_for(r);
        e->late = true; /* close() said 0: the next fsync of it or of a folder tells */
        free(e->error);
        e->error = error;
        error = NULL;
        free(e->ref);
        e->ref = NULL;
    }
    if (e->orphan && e->commits == 0) entry_free(e);
    ib->pending--;
    ib->commits_done++;
    pthread_cond_broadcast(&ib->committed);
    pthread_mutex_unlock(&ib->lock);
    free(error);
    free(t->name);
    free(t);
    store_item_free(item);
}

static bool to_commit(const store_item *item)
{
    const store_ingest_result *r = store_item_result(item);
    return r->status == STORE_OK && !r->already_stored;
}

static store_ref uids_of(const store_ingest_result *r)
{
    store_ref u;
    memcpy(u.study_uid, r->study_uid, sizeof u.study_uid);
    memcpy(u.series_uid, r->series_uid, sizeof u.series_uid);
    memcpy(u.sop_instance_uid, r->sop_instance_uid, sizeof u.sop_instance_uid);
    return u;
}

/* ITEM passed its checks, but a drop with the same UIDs may be committing right now,
 * which the check could not see: its commit would fail this one after close() said 0.
 * So wait for that commit and check again against what is stored (lock held, released
 * while waiting). A commit may also have ended between the check (SEEN: commits_done
 * before it) and now, already out of flight: then check again too. Returns the name of
 * the drop waited for (malloc'd), or NULL. */
static char *hold_back(inbox *ib, store_item *item, unsigned long seen)
{
    store_ref uids = uids_of(store_item_result(item));
    char *first = NULL;
    commit_ticket *t;
    while (to_commit(item)) {
        if ((t = flight_find(ib, &uids))) {
            free(first);
            if (!(first = strdup(t->name))) abort();
            while (flight_find(ib, &uids)) pthread_cond_wait(&ib->committed, &ib->lock);
        } else if (ib->commits_done == seen) {
            break;
        }
        seen = ib->commits_done;
        pthread_mutex_unlock(&ib->lock);
        store_item_settle(ib->store, item);
        pthread_mutex_lock(&ib->lock);
    }
    return first;
}

/* The verdict of a checked file (0 or -errno), its NAME.error text and what it is stored as. */
static int judge(const char *path, const store_ingest_result *r, const char *first, char **error, store_ref **ref)
{
    *error = NULL;
    *ref = NULL;
    if (r->status != STORE_OK && !r->dicomdir) {
        *error = failure_text(base_name(path), r, first);
        return errno_for(r);
    }
    if (r->status == STORE_OK) {
        if (!(*ref = malloc(sizeof **ref))) abort();
        **ref = uids_of(r);
    }
    return 0;
}

static int finish_entry(inbox *ib, const char *path, bool last);

/* Every close() of a descriptor flushes, also the close after a dup2 (dd, a shell's
 * "> FILE"): a flush of a file with nothing written yet waits for one that has data,
 * or for the release after the last close. */
int inbox_flush(inbox *ib, const char *path)
{
    int rc = finish_entry(ib, path, false);
    if (rc || !ib->sync_close) return rc;
    pthread_mutex_lock(&ib->lock);
    entry *e = wait_committed(ib, path);
    rc = e && !e->dir ? e->verdict : 0;
    if (e) e->late = false; /* close() tells it */
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

void inbox_release(inbox *ib, const char *path)
{
    finish_entry(ib, path, true);
}

static int finish_entry(inbox *ib, const char *path, bool last)
{
    pthread_mutex_lock(&ib->lock);
    entry *e = find(ib, path);
    if (!e || e->dir || e->done || (!last && e->size == 0)) {
        int rc = e && !e->dir ? e->verdict : 0;
        pthread_mutex_unlock(&ib->lock);
        return rc;
    }
    store_upload *up = e->up;
    e->up = NULL;
    e->done = true; /* claimed: a concurrent flush of a dup'd fd waits for nothing */
    e->commits++;   /* and the entry stays allocated until we are done with it */
    unsigned gen = e->gen;
    unsigned long seen = ib->commits_done; /* before the check: hold_back looks again if one ends */
    pthread_mutex_unlock(&ib->lock);

    /* Copying the same CD twice succeeds: identical instances count as stored. */
    store_ingest_opts opts = {.identical_ok = true};
    store_item *item = up ? store_upload_finish(up, &opts) : NULL;
    pthread_mutex_lock(&ib->lock);
    char *first = item ? hold_back(ib, item, seen) : NULL, *error = NULL;
    store_ref *ref = NULL;
    int verdict = item ? judge(path, store_item_result(item), first, &error, &ref) : 0;
    if (e->gen == gen) { /* not re-created meanwhile */
        e->verdict = verdict;
        free(e->error);
        e->error = error;
        error = NULL;
        free(e->ref);
        e->ref = ref;
        ref = NULL;
        e->settled = now_s();
    }
    commit_ticket *t = NULL;
    if (item && to_commit(item)) { /* the flush's hold passes to the queued commit */
        t = calloc(1, sizeof *t);
        if (!t || !(t->name = strdup(base_name(path)))) abort();
        t->ib = ib;
        t->e = e;
        t->gen = gen;
        t->uids = uids_of(store_item_result(item));
        flight_add(ib, t); /* in the same hold of the lock as hold_back's look: no race */
        ib->pending++;
    } else {
        store_item_free(item);
        e->commits--;
        if (e->orphan && e->commits == 0) entry_free(e);
        pthread_cond_broadcast(&ib->committed); /* an fsync may wait for this hold */
    }
    pthread_mutex_unlock(&ib->lock);
    free(first);
    free(error);
    free(ref);
    if (t) store_commit_async(ib->store, item, on_committed, t);
    return verdict;
}

/* Waits (lock held) until the commits queued for PATH's entry, or if it is gone, all
 * queued commits, have finished. Returns the entry, or NULL when it is gone. */
static entry *wait_committed(inbox *ib, const char *path)
{
    entry *e;
    while ((e = find(ib, path)) && e->commits) pthread_cond_wait(&ib->committed, &ib->lock);
    if (!e)
        while (ib->pending) pthread_cond_wait(&ib->committed, &ib->lock);
    return e;
}

int inbox_fsync(inbox *ib, const char *path)
{
    int rc = finish_entry(ib, path, true);
    if (rc) return rc;
    pthread_mutex_lock(&ib->lock);
    entry *e = wait_committed(ib, path);
    rc = e && !e->dir ? e->verdict : 0;
    if (e) e->late = false;
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

/* PATH is DIR or lies under it ("/" holds everything). */
static bool under(const char *path, const char *dir)
{
    size_t len = strcmp(dir, "/") == 0 ? 0 : strlen(dir);
    return strncmp(path, dir, len) == 0 && (path[len] == '/' || path[len] == 0);
}

int inbox_sync(inbox *ib, const char *dir)
{
    pthread_mutex_lock(&ib->lock);
    while (ib->pending) pthread_cond_wait(&ib->committed, &ib->lock);
    int rc = 0;
    for (entry *e = ib->head; e; e = e->next)
        if (e->late && under(e->path, dir)) {
            e->late = false;
            rc = -EIO;
        }
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

static void unlink_entry(inbox *ib, entry *victim)
{
    index_del(ib, victim);
    if (victim->prev) victim->prev->next = victim->next;
    else ib->head = victim->next;
    if (victim->next) victim->next->prev = victim->prev;
    if (victim->commits) victim->orphan = true; /* freed by on_committed */
    else entry_free(victim);
}

/* "x.error" -> the entry "x" it explains, when it failed. */
static entry *error_owner(inbox *ib, const char *path)
{
    size_t len = strlen(path);
    if (len < 7 || strcmp(path + len - 6, ".error") != 0) return NULL;
    char owner[4096];
    if (len - 6 >= sizeof owner) return NULL;
    memcpy(owner, path, len - 6);
    owner[len - 6] = 0;
    entry *e = find(ib, owner);
    return e && e->done && e->error ? e : NULL;
}

int inbox_unlink(inbox *ib, const char *path)
{
    pthread_mutex_lock(&ib->lock);
    entry *e = visible(ib, path), *owner = e ? NULL : error_owner(ib, path);
    int rc = 0;
    if (owner && owner->hidden) {
        unlink_entry(ib, owner); /* the last of the two names */
    } else if (owner) {
        free(owner->error); /* removing NAME.error forgets the reason */
        owner->error = NULL;
    } else if (!e) {
        rc = -ENOENT;
    } else if (e->dir) {
        rc = -EISDIR;
    } else if (e->done && e->error && !e->commits) {
        /* NAME.error stays until it is removed too, as a second file would (rm -r, which
         * removes NAME first, still finds it). */
        e->hidden = true;
        e->late = false;
    } else {
        /* Forgets the dropped name (and aborts an unfinished upload); a stored instance
         * stays in the archive. */
        unlink_entry(ib, e);
    }
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

int inbox_rmdir(inbox *ib, const char *path)
{
    pthread_mutex_lock(&ib->lock);
    entry *e = find(ib, path);
    int rc = !e ? -ENOENT : !e->dir ? -ENOTDIR : 0;
    size_t len = strlen(path);
    for (entry *c = ib->head; !rc && c; c = c->next)
        if (strncmp(c->path, path, len) == 0 && c->path[len] == '/') rc = -ENOTEMPTY;
    if (!rc) unlink_entry(ib, e);
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

int inbox_rename(inbox *ib, const char *from, const char *to)
{
    pthread_mutex_lock(&ib->lock);
    entry *e = visible(ib, from), *target = find(ib, to);
    int rc = !e ? -ENOENT : !parent_ok(ib, to) ? -ENOENT : target && target->dir ? -EISDIR : 0;
    if (!rc && e->dir) {
        /* A folder moves with everything in it. */
        size_t flen = strlen(from);
        for (entry *c = ib->head; c; c = c->next)
            if (c != e && strncmp(c->path, from, flen) == 0 && c->path[flen] == '/') {
                char *moved = NULL;
                if (asprintf(&moved, "%s%s", to, c->path + flen) < 0) abort();
                index_del(ib, c);
                free(c->path);
                c->path = moved;
                index_add(ib, c);
            }
    }
    if (!rc) {
        if (target && target != e) unlink_entry(ib, target);
        char *copy = strdup(to);
        if (!copy) abort();
        index_del(ib, e);
        free(e->path);
        e->path = copy;
        index_add(ib, e);
    }
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

int inbox_setmode(inbox *ib, const char *path, mode_t mode)
{
    pthread_mutex_lock(&ib->lock);
    entry *e = visible(ib, path);
    if (e) e->mode = mode & 07777;
    pthread_mutex_unlock(&ib->lock);
    return e ? 0 : -ENOENT;
}

int inbox_settime(inbox *ib, const char *path, const struct timespec tv[2])
{
    pthread_mutex_lock(&ib->lock);
    entry *e = visible(ib, path);
    if (e && tv) {
        if (tv[1].tv_nsec == UTIME_NOW) clock_gettime(CLOCK_REALTIME, &e->mtime);
        else if (tv[1].tv_nsec != UTIME_OMIT) e->mtime = tv[1];
    }
    pthread_mutex_unlock(&ib->lock);
    return e ? 0 : -ENOENT;
}

static void fill_stat(const entry *e, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_mode = (e->dir ? S_IFDIR : S_IFREG) | e->mode;
    st->st_nlink = 1; /* folders too: 1 tells find not to count subfolders by links */
    st->st_size = (off_t)e->size;
    st->st_mtim = st->st_ctim = st->st_atim = e->mtime;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((e->size + 511) / 512);
}

int inbox_stat(inbox *ib, const char *path, struct stat *st)
{
    pthread_mutex_lock(&ib->lock);
    entry *e = visible(ib, path), *owner = e ? NULL : error_owner(ib, path);
    int rc = 0;
    if (e) {
        fill_stat(e, st);
    } else if (owner) {
        fill_stat(owner, st);
        st->st_mode = S_IFREG | 0444;
        st->st_size = (off_t)strlen(owner->error);
    } else {
        rc = -ENOENT;
    }
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

char *inbox_error_text(inbox *ib, const char *path)
{
    pthread_mutex_lock(&ib->lock);
    entry *owner = error_owner(ib, path);
    char *text = owner ? strdup(owner->error) : NULL;
    pthread_mutex_unlock(&ib->lock);
    return text;
}

void inbox_list(inbox *ib, const char *dir, void (*fill)(void *ctx, const char *name, const struct stat *st), void *ctx)
{
    size_t len = strcmp(dir, "/") == 0 ? 0 : strlen(dir);
    pthread_mutex_lock(&ib->lock);
    sweep(ib);
    for (entry *e = ib->head; e; e = e->next) {
        if (strncmp(e->path, dir, len) != 0 || e->path[len] != '/' || strchr(e->path + len + 1, '/')) continue;
        struct stat st;
        fill_stat(e, &st);
        if (!e->hidden) fill(ctx, e->path + len + 1, &st);
        if (e->done && e->error) {
            char name[512];
            snprintf(name, sizeof name, "%s.error", e->path + len + 1);
            st.st_mode = S_IFREG | 0444;
            st.st_size = (off_t)strlen(e->error);
            fill(ctx, name, &st);
        }
    }
    pthread_mutex_unlock(&ib->lock);
}
