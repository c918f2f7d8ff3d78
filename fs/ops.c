/* ops.c — the FUSE operations: paths of the archive tree answered from the store, and
 * drops handed to the inbox. libfuse's high-level, multi-threaded loop runs in a thread
 * of its own, so a process can serve HTTP and the mount at once. */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "inbox.h"

/* changes/feed.jsonl: one immutable line per change, so the file only grows and tail -f
 * follows it. The mount keeps where each line starts (16 bytes per change) and asks the
 * store only for changes it has not seen; reads regenerate just the lines they cover. */
typedef struct {
    pthread_mutex_t lock;
    int64_t last;      /* the last sequence indexed */
    int64_t *seq;      /* sequence of line i */
    uint64_t *start;   /* byte offset of line i */
    size_t n, cap;
    uint64_t size;
} feed_index;

struct fs_mount {
    store_t *store;
    inbox *inbox;
    struct fuse *fuse;
    pthread_t thread;
    char *mountpoint;
    volatile bool stopping;
    int64_t started_us; /* the time of the fixed folders */
    pthread_mutex_t files_lock;
    struct open_file *files;
    feed_index feed;
};

typedef enum {
    N_ROOT, N_INBOX, N_STUDIES, N_STUDY, N_STUDY_META, N_SERIES_DIR, N_SERIES, N_SERIES_META, N_INSTANCES,
    N_INSTANCE, N_CHANGES, N_CHANGES_LATEST, N_CHANGES_FEED, N_CHANGE, N_DROP, N_NONE
} node_kind;



typedef struct {
    node_kind kind;
    char study[STORE_UID_MAX + 1], series[STORE_UID_MAX + 1], sop[STORE_UID_MAX + 1];
    long long seq;
} node;

static fs_mount *self(void) { return fuse_get_context()->private_data; }

static bool take_uid(char *dst, const char *seg, size_t len)
{
    if (len == 0 || len > STORE_UID_MAX) return false;
    memcpy(dst, seg, len);
    dst[len] = 0;
    return store_valid_uid(dst);
}

/* Classifies PATH; N_DROP for anything under /inbox and unknown names at the root. */
static node classify(const char *path)
{
    node n;
    memset(&n, 0, sizeof n);
    n.kind = N_NONE;
    const char *seg[8];
    size_t len[8], count = 0;
    for (const char *p = path; *p && count < 8;) {
        while (*p == '/') p++;
        if (!*p) break;
        seg[count] = p;
        len[count] = strcspn(p, "/");
        p += len[count++];
    }
#define IS(i, word) (len[i] == strlen(word) && strncmp(seg[i], word, len[i]) == 0)
    if (count == 0) n.kind = N_ROOT;
    else if (IS(0, "inbox")) n.kind = count == 1 ? N_INBOX : N_DROP;
    else if (IS(0, "changes")) {
        if (count == 1) n.kind = N_CHANGES;
        else if (count == 2 && IS(1, "latest.json")) n.kind = N_CHANGES_LATEST;
        else if (count == 2 && IS(1, "feed.jsonl")) n.kind = N_CHANGES_FEED;
        else if (count == 2 && len[1] > 5 && strncmp(seg[1] + len[1] - 5, ".json", 5) == 0) {
            char num[32];
            if (len[1] - 5 < sizeof num) {
                memcpy(num, seg[1], len[1] - 5);
                num[len[1] - 5] = 0;
                char *end;
                n.seq = strtoll(num, &end, 10);
                if (!*end && n.seq > 0) n.kind = N_CHANGE;
            }
        }
    } else if (IS(0, "studies")) {
        if (count == 1) n.kind = N_STUDIES;
        else if (take_uid(n.study, seg[1], len[1])) {
            if (count == 2) n.kind = N_STUDY;
            else if (count == 3 && IS(2, "metadata.json")) n.kind = N_STUDY_META;
            else if (IS(2, "series")) {
                if (count == 3) n.kind = N_SERIES_DIR;
                else if (take_uid(n.series, seg[3], len[3])) {
                    if (count == 4) n.kind = N_SERIES;
                    else if (count == 5 && IS(4, "metadata.json")) n.kind = N_SERIES_META;
                    else if (IS(4, "instances")) {
                        if (count == 5) n.kind = N_INSTANCES;
                        else if (count == 6 && len[5] > 4 && strncmp(seg[5] + len[5] - 4, ".dcm", 4) == 0 &&
                                 take_uid(n.sop, seg[5], len[5] - 4))
                            n.kind = N_INSTANCE;
                    }
                }
            }
        }
    } else if (count == 1) {
        n.kind = N_DROP; /* a drop at the root */
    }
#undef IS
    return n;
}

static void dir_stat(struct stat *st, int64_t us)
{
    memset(st, 0, sizeof *st);
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
    st->st_mtim.tv_sec = us / 1000000;
    st->st_mtim.tv_nsec = (long)(us % 1000000) * 1000;
    st->st_ctim = st->st_atim = st->st_mtim;
}

static void file_stat(struct stat *st, uint64_t size, int64_t us)
{
    dir_stat(st, us);
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    st->st_blksize = 65536;
}

/* Indexes the changes stored since the last call; 0 or -EIO. Caller holds feed->lock. */
static int feed_refresh(feed_index *f)
{
    for (;;) {
        char *text = NULL;
        size_t len = 0;
        int64_t last = f->last;
        if (store_changefeed_lines(self()->store, f->last, 1000, &text, &len, &last, NULL) != STORE_OK) {
            free(text);
            return -EIO;
        }
        for (char *line = text; line < text + len;) {
            char *nl = memchr(line, '\n', (size_t)(text + len - line));
            if (!nl) break;
            if (f->n == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 1024;
                f->seq = realloc(f->seq, f->cap * sizeof *f->seq);
                f->start = realloc(f->start, f->cap * sizeof *f->start);
                if (!f->seq || !f->start) abort();
            }
            f->seq[f->n] = strtoll(line + strlen("{\"sequence\":"), NULL, 10);
            f->start[f->n++] = f->size;
            f->size += (uint64_t)(nl + 1 - line);
            line = nl + 1;
        }
        free(text);
        bool more = last != f->last && len > 0;
        f->last = last;
        if (!more) return 0;
    }
}

static int feed_size(uint64_t *size)
{
    feed_index *f = &self()->feed;
    pthread_mutex_lock(&f->lock);
    int rc = feed_refresh(f);
    *size = f->size;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int feed_read(char *buf, size_t size, off_t off)
{
    feed_index *f = &self()->feed;
    pthread_mutex_lock(&f->lock);
    int rc = feed_refresh(f);
    if (rc || (uint64_t)off >= f->size || f->n == 0) {
        pthread_mutex_unlock(&f->lock);
        return rc;
    }
    size_t lo = 0, hi = f->n - 1; /* the last line starting at or before off */
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        if (f->start[mid] <= (uint64_t)off) lo = mid;
        else hi = mid - 1;
    }
    size_t lines = 0;
    while (lo + lines < f->n && f->start[lo + lines] < (uint64_t)off + size) lines++;
    int64_t after = f->seq[lo] - 1;
    uint64_t first = f->start[lo];
    pthread_mutex_unlock(&f->lock);

    char *text = NULL;
    size_t len = 0;
    int64_t last;
    if (store_changefeed_lines(self()->store, after, (int)lines, &text, &len, &last, NULL) != STORE_OK) {
        free(text);
        return -EIO;
    }
    size_t skip = (size_t)((uint64_t)off - first), n = 0;
    if (skip < len) {
        n = len - skip < size ? len - skip : size;
        memcpy(buf, text + skip, n);
    }
    free(text);
    return (int)n;
}

/* The generated text of a metadata or change-feed file; malloc'd; -errno on failure. */
static int generate(const node *n, char **text, size_t *len)
{
    store_t *s = self()->store;
    store_err err = {0};
    char etag[64];
    store_status st;
    *text = NULL;
    *len = 0;
    switch (n->kind) {
    case N_STUDY_META:
        st = store_metadata(s, NULL, n->study, NULL, NULL, text, len, etag, &err);
        break;
    case N_SERIES_META:
        st = store_metadata(s, NULL, n->study, n->series, NULL, text, len, etag, &err);
        break;
    case N_CHANGES_LATEST:
        st = store_changefeed_latest(s, 1, true, text, &err);
        break;
    case N_CHANGE: {
        store_changefeed_query q = {.api_version = 1, .offset = n->seq - 1, .limit = 1, .include_metadata = true};
        st = store_changefeed(s, &q, text, &err);
        if (st == STORE_OK && strcmp(*text, "[]") == 0) st = STORE_ENOTFOUND;
        if (st == STORE_OK) { /* one entry: the object, not a one-element array */
            size_t l = strlen(*text);
            memmove(*text, *text + 1, l - 2);
            (*text)[l - 2] = 0;
        }
        break;
    }
    default:
        return -ENOENT;
    }
    if (st != STORE_OK) return st == STORE_ENOTFOUND ? -ENOENT : -EIO;
    *len = strlen(*text);
    return 0;
}

static int instance_of(const node *n, store_instance *out)
{
    store_instance *in = NULL;
    size_t cnt = 0;
    store_status st = store_instances(self()->store, NULL, n->study, n->series, n->sop, &in, &cnt, NULL);
    if (st == STORE_OK) *out = in[0];
    free(in);
    return st == STORE_OK ? 0 : st == STORE_ENOTFOUND || st == STORE_EINVAL ? -ENOENT : -EIO;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    node n = classify(path);
    store_entry *e = NULL;
    size_t cnt = 0;
    int rc = 0;
    switch (n.kind) {
    case N_ROOT: case N_STUDIES: case N_CHANGES:
        dir_stat(st, self()->started_us);
        break;
    case N_INBOX:
        dir_stat(st, self()->started_us);
        st->st_mode = S_IFDIR | 0777;
        break;
    case N_STUDY: case N_SERIES_DIR: case N_SERIES: case N_INSTANCES:
        rc = store_children(self()->store, NULL, n.study, n.kind >= N_SERIES ? n.series : NULL, &e, &cnt, NULL) == STORE_OK ? 0 : -ENOENT;
        if (!rc) {
            int64_t newest = 0;
            for (size_t i = 0; i < cnt; i++) newest = e[i].updated_us > newest ? e[i].updated_us : newest;
            dir_stat(st, newest);
        }
        break;
    case N_INSTANCE: {
        store_instance in;
        rc = instance_of(&n, &in);
        if (!rc) file_stat(st, in.size, in.created_us);
        break;
    }
    case N_CHANGES_FEED: {
        uint64_t size = 0;
        rc = feed_size(&size);
        if (!rc) file_stat(st, size, self()->started_us);
        break;
    }
    case N_STUDY_META: case N_SERIES_META: case N_CHANGES_LATEST: case N_CHANGE: {
        char *text;
        size_t len;
        rc = generate(&n, &text, &len);
        if (!rc) file_stat(st, len, self()->started_us);
        free(text);
        break;
    }
    case N_DROP:
        rc = inbox_stat(self()->inbox, path, st);
        break;
    default:
        rc = -ENOENT;
    }
    free(e);
    return rc;
}

typedef struct {
    void *buf;
    fuse_fill_dir_t filler;
} lister;

static void fill_one(void *ctx, const char *name, const struct stat *st)
{
    lister *l = ctx;
    l->filler(l->buf, name, st, 0, 0);
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    (void)off;
    (void)fi;
    (void)flags;
    node n = classify(path);
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    lister l = {buf, filler};
    store_entry *e = NULL;
    size_t cnt = 0;
    switch (n.kind) {
    case N_ROOT:
        filler(buf, "inbox", NULL, 0, 0);
        filler(buf, "studies", NULL, 0, 0);
        filler(buf, "changes", NULL, 0, 0);
        inbox_list(self()->inbox, "/", fill_one, &l);
        return 0;
    case N_INBOX:
        inbox_list(self()->inbox, "/inbox", fill_one, &l);
        return 0;
    case N_DROP: {
        struct stat st;
        if (inbox_stat(self()->inbox, path, &st) != 0 || !S_ISDIR(st.st_mode)) return -ENOTDIR;
        inbox_list(self()->inbox, path, fill_one, &l);
        return 0;
    }
    case N_CHANGES: {
        filler(buf, "latest.json", NULL, 0, 0);
        filler(buf, "feed.jsonl", NULL, 0, 0);
        int64_t head = store_changefeed_head(self()->store);
        for (int64_t i = head > 10000 ? head - 10000 + 1 : 1; i <= head; i++) { /* the newest 10,000 */
            char name[32];
            snprintf(name, sizeof name, "%lld.json", (long long)i);
            filler(buf, name, NULL, 0, 0);
        }
        return 0;
    }
    case N_STUDIES: case N_SERIES_DIR: case N_INSTANCES:
        if (store_children(self()->store, NULL, n.kind == N_STUDIES ? NULL : n.study, n.kind == N_INSTANCES ? n.series : NULL,
                           &e, &cnt, NULL) != STORE_OK)
            return -ENOENT;
        for (size_t i = 0; i < cnt; i++) {
            char name[STORE_UID_MAX + 8];
            snprintf(name, sizeof name, "%s%s", e[i].uid, n.kind == N_INSTANCES ? ".dcm" : "");
            struct stat st;
            if (n.kind == N_INSTANCES) file_stat(&st, e[i].size, e[i].updated_us);
            else dir_stat(&st, e[i].updated_us);
            filler(buf, name, &st, 0, 0);
        }
        free(e);
        return 0;
    case N_STUDY:
        filler(buf, "metadata.json", NULL, 0, 0);
        filler(buf, "series", NULL, 0, 0);
        return 0;
    case N_SERIES:
        filler(buf, "metadata.json", NULL, 0, 0);
        filler(buf, "instances", NULL, 0, 0);
        return 0;
    default:
        return -ENOTDIR;
    }
}

/* An open file: an object file's descriptor, or generated text. Open files are also
 * linked to the mount, because an unmount while busy ends the session without their
 * release. */
typedef struct open_file {
    int fd;
    char *text;
    size_t len;
    bool feed;       /* changes/feed.jsonl */
    struct open_file *prev, *next;
} open_file;

static open_file *new_open_file(void)
{
    open_file *f = calloc(1, sizeof *f);
    if (!f) abort();
    f->fd = -1;
    fs_mount *m = self();
    pthread_mutex_lock(&m->files_lock);
    f->next = m->files;
    if (m->files) m->files->prev = f;
    m->files = f;
    pthread_mutex_unlock(&m->files_lock);
    return f;
}

static void free_open_file(fs_mount *m, open_file *f)
{
    pthread_mutex_lock(&m->files_lock);
    if (f->prev) f->prev->next = f->next;
    else m->files = f->next;
    if (f->next) f->next->prev = f->prev;
    pthread_mutex_unlock(&m->files_lock);
    if (f->fd >= 0) close(f->fd);
    free(f->text);
    free(f);
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    node n = classify(path);
    if (n.kind == N_DROP) {
        char *why = inbox_error_text(self()->inbox, path);
        if (!why) return 0; /* reads of drops go to the inbox */
        open_file *f = new_open_file();
        f->text = why;
        f->len = strlen(why);
        fi->fh = (uint64_t)(uintptr_t)f;
        fi->direct_io = 1;
        return 0;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EACCES;
    if (n.kind == N_CHANGES_FEED) {
        open_file *f = new_open_file();
        f->feed = true;
        fi->fh = (uint64_t)(uintptr_t)f;
        fi->direct_io = 1; /* it grows: every read asks us */
        return 0;
    }
    open_file *f = new_open_file();
    int rc = 0;
    if (n.kind == N_INSTANCE) {
        store_instance in;
        rc = instance_of(&n, &in);
        if (!rc && (f->fd = store_open_object(self()->store, &in)) < 0) rc = -errno;
        fi->keep_cache = 1; /* objects never change */
    } else {
        rc = generate(&n, &f->text, &f->len);
        fi->direct_io = 1; /* generated text may differ from the size getattr saw */
    }
    if (rc) {
        free_open_file(self(), f);
        return rc;
    }
    fi->fh = (uint64_t)(uintptr_t)f;
    return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    open_file *f = (open_file *)(uintptr_t)fi->fh;
    if (!f) return inbox_read(self()->inbox, path, buf, size, off);
    if (f->feed) return feed_read(buf, size, off);
    if (f->fd >= 0) {
        ssize_t n = pread(f->fd, buf, size, off);
        return n < 0 ? -errno : (int)n;
    }
    if ((size_t)off >= f->len) return 0;
    size_t n = f->len - (size_t)off < size ? f->len - (size_t)off : size;
    memcpy(buf, f->text + off, n);
    return (int)n;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    open_file *f = (open_file *)(uintptr_t)fi->fh;
    if (f) free_open_file(self(), f);
    return 0;
}

static int drop_only(const char *path)
{
    node n = classify(path);
    return n.kind == N_DROP ? 0 : n.kind == N_NONE ? -ENOENT : -EROFS;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int rc = drop_only(path);
    fi->fh = 0;
    return rc ? (rc == -ENOENT ? -EACCES : rc) : inbox_create(self()->inbox, path, mode);
}

static int op_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    return inbox_write(self()->inbox, path, buf, size, off);
}

/* Only flush's result reaches close(): the verdict of the ingest goes here, every time. */
static int op_flush(const char *path, struct fuse_file_info *fi)
{
    if (fi->fh) return 0; /* a file of the archive, read-only */
    return classify(path).kind == N_DROP ? inbox_flush(self()->inbox, path) : 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    return op_flush(path, fi);
}

static int op_mkdir(const char *path, mode_t mode)
{
    int rc = drop_only(path);
    return rc ? (rc == -ENOENT ? -EACCES : rc) : inbox_mkdir(self()->inbox, path, mode);
}

static int op_unlink(const char *path)
{
    int rc = drop_only(path);
    return rc ? rc : inbox_unlink(self()->inbox, path);
}

static int op_rmdir(const char *path)
{
    int rc = drop_only(path);
    return rc ? rc : inbox_rmdir(self()->inbox, path);
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
    if (flags & RENAME_EXCHANGE) return -EINVAL;
    int rc = drop_only(from);
    if (!rc) rc = drop_only(to);
    if (rc) return rc == -ENOENT ? -EXDEV : rc;
    if (flags & RENAME_NOREPLACE) {
        struct stat st;
        if (inbox_stat(self()->inbox, to, &st) == 0) return -EEXIST;
    }
    return inbox_rename(self()->inbox, from, to);
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    (void)fi;
    int rc = drop_only(path);
    return rc ? rc : inbox_truncate(self()->inbox, path, size);
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)fi;
    int rc = drop_only(path);
    return rc ? rc : inbox_setmode(self()->inbox, path, mode);
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    (void)uid;
    (void)gid;
    (void)fi;
    return drop_only(path); /* accepted for drops (tar, cp -p), meaningless for the archive */
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    (void)fi;
    int rc = drop_only(path);
    return rc ? rc : inbox_settime(self()->inbox, path, tv);
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    /* Short caches: instances stored over HTTP or by another process must show soon. */
    cfg->entry_timeout = 1;
    cfg->attr_timeout = 1;
    cfg->negative_timeout = 0;
    cfg->use_ino = 0;
    return fuse_get_context()->private_data;
}

static const struct fuse_operations ops = {
    .init = op_init,
    .getattr = op_getattr,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .create = op_create,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .truncate = op_truncate,
    .chmod = op_chmod,
    .chown = op_chown,
    .utimens = op_utimens,
};

static void *serve(void *arg)
{
    fs_mount *m = arg;
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, 16);
    fuse_loop_mt(m->fuse, cfg);
    fuse_loop_cfg_destroy(cfg);
    /* Unmounted from outside (fusermount3 -u): tell the process, which waits for it. */
    if (!m->stopping) kill(getpid(), SIGUSR1);
    return NULL;
}

fs_mount *fs_mount_start(store_t *store, const char *mountpoint, const fs_options *o, store_err *err)
{
    fs_mount *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->store = store;
    m->inbox = inbox_new(store);
    pthread_mutex_init(&m->files_lock, NULL);
    pthread_mutex_init(&m->feed.lock, NULL);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    m->started_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    m->mountpoint = strdup(mountpoint);
    char *argv[] = {"dicomfs", "-o", "fsname=dicomfs,subtype=dicomfs", "-o", "allow_other,default_permissions", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(o && o->allow_other ? 5 : 3, argv);
    m->fuse = fuse_new(&args, &ops, sizeof ops, m);
    fuse_opt_free_args(&args);
    if (!m->fuse || fuse_mount(m->fuse, mountpoint) != 0) {
        store_seterr(err, STORE_EIO, "cannot mount on %s (does it exist, is it empty, is /dev/fuse there?)", mountpoint);
        if (m->fuse) fuse_destroy(m->fuse);
        inbox_free(m->inbox);
        free(m->mountpoint);
        free(m);
        return NULL;
    }
    if (pthread_create(&m->thread, NULL, serve, m) != 0) {
        store_seterr(err, STORE_EIO, "cannot start the mount's thread");
        fuse_unmount(m->fuse);
        fuse_destroy(m->fuse);
        inbox_free(m->inbox);
        free(m->mountpoint);
        free(m);
        return NULL;
    }
    return m;
}

void fs_mount_stop(fs_mount *m)
{
    if (!m) return;
    m->stopping = true;
    fuse_exit(m->fuse);
    fuse_unmount(m->fuse); /* ends the session: the loop returns */
    pthread_join(m->thread, NULL);
    fuse_destroy(m->fuse);
    while (m->files) free_open_file(m, m->files); /* still open at a lazy unmount */
    free(m->feed.seq);
    free(m->feed.start);
    pthread_mutex_destroy(&m->feed.lock);
    inbox_free(m->inbox);
    free(m->mountpoint);
    free(m);
}
