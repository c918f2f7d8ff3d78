/* ops.c — the FUSE operations: each path is classified, then answered from the store or
 * handed to the module that owns that part of the tree (internal.h lists them).
 * libfuse's high-level, multi-threaded loop runs in a thread of its own, so a process
 * can serve HTTP and the mount at once. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

typedef enum {
    N_ROOT, N_INBOX, N_STUDIES, N_STUDY, N_STUDY_META, N_SERIES_DIR, N_SERIES, N_SERIES_META, N_INSTANCES,
    N_INSTANCE, N_CHANGES, N_CHANGES_LATEST, N_CHANGES_FEED, N_CHANGE, N_PATIENTS, N_SEARCH, N_SEARCH_LEVEL,
    N_SEARCH_QUERY, N_SEARCH_ERROR, N_SEARCH_LINK, N_XQT, N_XQT_FILE, N_OPS, N_OP, N_DROP, N_NONE
} node_kind;

#define MAX_SEGMENTS 8 /* the deepest archive path has 6 (studies/.../instances/x.dcm) */

typedef struct {
    node_kind kind;
    char study[STORE_UID_MAX + 1], series[STORE_UID_MAX + 1], sop[STORE_UID_MAX + 1];
    long long seq;
    const char *seg[MAX_SEGMENTS]; /* the path's segments (not terminated: see len) */
    size_t len[MAX_SEGMENTS], count;
} node;

fs_mount *fs_self(void) { return fuse_get_context()->private_data; }
#define self fs_self

/* A copy of segment I of N, NUL-terminated; malloc'd. */
static char *segment(const node *n, size_t i)
{
    char *s = strndup(n->seg[i], n->len[i]);
    if (!s) abort();
    return s;
}

static bool take_uid(char *dst, const char *seg, size_t len)
{
    if (len == 0 || len > STORE_UID_MAX) return false;
    memcpy(dst, seg, len);
    dst[len] = 0;
    return store_valid_uid(dst);
}

/* The names of the root's own folders; every other name at the root is a drop. */
static bool reserved(const char *seg, size_t len)
{
    static const char *const names[] = {"inbox", "studies", "patients", "search", "changes", "extended-query-tags",
                                        "operations"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (len == strlen(names[i]) && strncmp(seg, names[i], len) == 0) return true;
    return false;
}

/* Classifies PATH; N_DROP for anything under /inbox and under unknown names at the root. */
static node classify(const char *path)
{
    node n;
    memset(&n, 0, sizeof n);
    n.kind = N_NONE;
    if (!path) return n; /* an open file removed meanwhile (hard_remove): nothing by name */
    const char **seg = n.seg;
    size_t *len = n.len, count = 0;
    for (const char *p = path; *p;) {
        while (*p == '/') p++;
        if (!*p) break;
        if (count == MAX_SEGMENTS) { /* deeper than any archive node: only drops nest */
            bool inbox = len[0] == 5 && strncmp(seg[0], "inbox", 5) == 0;
            if (inbox || !reserved(seg[0], len[0])) n.kind = N_DROP;
            return n;
        }
        seg[count] = p;
        len[count] = strcspn(p, "/");
        p += len[count++];
    }
    n.count = count;
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
    } else if (IS(0, "patients")) {
        n.kind = N_PATIENTS; /* resolved by patients.c */
    } else if (IS(0, "extended-query-tags")) {
        n.kind = count == 1 ? N_XQT : count == 2 ? N_XQT_FILE : N_NONE; /* tags.c */
    } else if (IS(0, "operations")) {
        n.kind = count == 1 ? N_OPS : count == 2 ? N_OP : N_NONE;
    } else if (IS(0, "search")) {
        n.kind = count == 1 ? N_SEARCH : count == 2 ? N_SEARCH_LEVEL : count == 3 ? N_SEARCH_QUERY
               : count == 4 ? N_SEARCH_LINK : N_NONE;
    } else if (!reserved(seg[0], len[0])) {
        n.kind = N_DROP; /* a drop at the root, or in a folder dropped there */
    }
#undef IS
    return n;
}

void fs_dir_stat(struct stat *st, int64_t us)
{
    memset(st, 0, sizeof *st);
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 1; /* the number of subfolders is not known cheaply; 1 says so (as btrfs) */
    st->st_mtim.tv_sec = us / 1000000;
    st->st_mtim.tv_nsec = (long)(us % 1000000) * 1000;
    st->st_ctim = st->st_atim = st->st_mtim;
}

void fs_file_stat(struct stat *st, uint64_t size, int64_t us)
{
    fs_dir_stat(st, us);
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    st->st_blksize = 65536;
}

void fs_link_stat(struct stat *st, size_t target_len, int64_t us)
{
    fs_dir_stat(st, us);
    st->st_mode = S_IFLNK | 0777;
    st->st_nlink = 1;
    st->st_size = (off_t)target_len;
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

/* A search folder, or "<bad query>.error" (N becomes N_SEARCH_ERROR, *WHY its text). */
static int search_query(node *n, char **why)
{
    char *level = segment(n, 1), *query = segment(n, 2);
    int rc = search_check(self(), level, query, NULL);
    size_t len = strlen(query);
    if (rc == -EINVAL && len > 6 && strcmp(query + len - 6, ".error") == 0) {
        query[len - 6] = 0;
        if (search_check(self(), level, query, why) == -EINVAL) {
            n->kind = N_SEARCH_ERROR;
            rc = 0;
        }
    }
    free(level);
    free(query);
    return rc;
}

/* Resolves a /patients path (segments after "patients"). */
static int patients_of(const node *n, patients_node *out)
{
    return patients_resolve(self()->store, n->seg + 1, n->len + 1, n->count - 1, out);
}

/* The newest change of a series (from its study's list of series); -ENOENT if none. */
static int series_time(const node *n, int64_t *us)
{
    store_entry *e = NULL;
    size_t cnt = 0;
    if (store_children(self()->store, NULL, n->study, NULL, &e, &cnt, NULL) != STORE_OK) return -ENOENT;
    int rc = -ENOENT;
    for (size_t i = 0; i < cnt && rc; i++)
        if (strcmp(e[i].uid, n->series) == 0) {
            *us = e[i].updated_us;
            rc = 0;
        }
    free(e);
    return rc;
}

static int getattr_node(node *np, const char *path, struct stat *st);

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    node n = classify(path);
    return getattr_node(&n, path, st);
}

/* The attributes of the classified node N (PATH: its path). */
static int getattr_node(node *np, const char *path, struct stat *st)
{
    node n = *np;
    fs_mount *m = self();
    int rc = 0;
    switch (n.kind) {
    case N_ROOT: case N_STUDIES: case N_CHANGES: case N_SEARCH: case N_OPS:
        fs_dir_stat(st, m->started_us);
        break;
    case N_INBOX: case N_XQT:
        fs_dir_stat(st, m->started_us);
        st->st_mode = S_IFDIR | 0777;
        break;
    case N_XQT_FILE: {
        char *name = segment(&n, 1);
        rc = xqt_stat(m, name, st);
        free(name);
        break;
    }
    case N_OP: {
        char *name = segment(&n, 1), *text = NULL;
        rc = xqt_op_text(m, name, &text);
        if (!rc) fs_file_stat(st, strlen(text), m->started_us);
        free(name);
        free(text);
        break;
    }
    case N_STUDY: case N_SERIES_DIR: {
        store_entry *e = NULL;
        size_t cnt = 0;
        rc = store_children(m->store, NULL, n.study, NULL, &e, &cnt, NULL) == STORE_OK ? 0 : -ENOENT;
        int64_t newest = 0;
        for (size_t i = 0; i < cnt; i++) newest = e[i].updated_us > newest ? e[i].updated_us : newest;
        if (!rc) fs_dir_stat(st, newest);
        free(e);
        break;
    }
    case N_SERIES: case N_INSTANCES: {
        int64_t us = 0;
        rc = series_time(&n, &us);
        if (!rc) fs_dir_stat(st, us);
        break;
    }
    case N_INSTANCE: {
        store_instance in;
        rc = instance_of(&n, &in);
        if (!rc) fs_file_stat(st, in.size, in.created_us);
        break;
    }
    case N_CHANGES_FEED: {
        uint64_t size = 0;
        rc = feed_size(m, &size);
        if (!rc) fs_file_stat(st, size, m->started_us);
        break;
    }
    case N_STUDY_META: case N_SERIES_META: {
        uint64_t size = 0;
        char etag[64];
        int64_t us = 0;
        store_status ss = store_metadata_size(m->store, NULL, n.study, n.kind == N_SERIES_META ? n.series : NULL,
                                              &size, etag, NULL);
        rc = ss == STORE_OK ? 0 : ss == STORE_ENOTFOUND ? -ENOENT : -EIO;
        if (!rc) rc = n.kind == N_SERIES_META ? series_time(&n, &us) : 0;
        if (!rc) fs_file_stat(st, size, us ? us : m->started_us);
        break;
    }
    case N_CHANGES_LATEST: case N_CHANGE: {
        char *text;
        size_t len;
        rc = generate(&n, &text, &len);
        if (!rc) fs_file_stat(st, len, m->started_us);
        free(text);
        break;
    }
    case N_PATIENTS: {
        patients_node p;
        rc = patients_of(&n, &p);
        if (!rc && p.depth == 0) fs_dir_stat(st, m->started_us);
        else if (!rc) patients_stat(&p, st);
        break;
    }
    case N_SEARCH_LEVEL: {
        char *level = segment(&n, 1);
        rc = strcmp(level, "studies") && strcmp(level, "series") && strcmp(level, "instances") ? -ENOENT : 0;
        free(level);
        if (!rc) fs_dir_stat(st, m->started_us);
        break;
    }
    case N_SEARCH_QUERY: {
        char *why = NULL;
        rc = search_query(&n, &why);
        if (!rc) fs_dir_stat(st, m->started_us);
        if (n.kind == N_SEARCH_ERROR) fs_file_stat(st, strlen(why), m->started_us);
        free(why);
        break;
    }
    case N_SEARCH_LINK: {
        char *level = segment(&n, 1), *query = segment(&n, 2), *name = segment(&n, 3), *target = NULL;
        rc = search_link(m, level, query, name, &target);
        if (!rc) fs_link_stat(st, strlen(target), m->started_us);
        free(level);
        free(query);
        free(name);
        free(target);
        break;
    }
    case N_DROP:
        rc = inbox_stat(m->inbox, path, st);
        break;
    default:
        rc = -ENOENT;
    }
    if (rc == -ENOENT && (n.kind == N_STUDY || n.kind == N_SERIES_DIR || n.kind == N_SERIES || n.kind == N_INSTANCES ||
                          n.kind == N_PATIENTS) && tombs_has(m->tombs, path))
        fs_dir_stat(st, m->started_us); /* emptied by rm -r, still to be removed */
    else if (rc)
        return rc;
    return 0;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
    node n = classify(path);
    if (n.kind != N_SEARCH_LINK) return -EINVAL;
    char *level = segment(&n, 1), *query = segment(&n, 2), *name = segment(&n, 3), *target = NULL;
    int rc = search_link(self(), level, query, name, &target);
    if (!rc) snprintf(buf, size, "%s", target);
    free(level);
    free(query);
    free(name);
    free(target);
    return rc;
}

/* A folder's listing, taken when it is read from the start (opendir, rewinddir) and kept
 * in the open folder's handle: the kernel reads it in pieces at offsets (entry I is at
 * offset I + 1), and with offsets libfuse hands the attributes of READDIRPLUS to the
 * kernel (without them it tells the kernel to ignore them, and every name is looked up
 * again). Entries with full attributes go out as "plus"; the others (fixed names, whose
 * attributes cost a query of their own) carry only their type, for ls and find. */
typedef struct {
    char *name;
    struct stat st;
    bool full; /* st is the entry's getattr (else only st_mode's type is set) */
} dir_entry;

typedef struct {
    dir_entry *v;
    size_t n, cap;
} dir_list;

static void dir_clear(dir_list *d)
{
    for (size_t i = 0; i < d->n; i++) free(d->v[i].name);
    d->n = 0;
}

static void dir_add(dir_list *d, const char *name, const struct stat *st, mode_t type)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        if (!(d->v = realloc(d->v, d->cap * sizeof *d->v))) abort();
    }
    dir_entry *e = &d->v[d->n++];
    if (!(e->name = strdup(name))) abort();
    e->full = st != NULL;
    if (st) e->st = *st;
    else {
        memset(&e->st, 0, sizeof e->st);
        e->st.st_mode = type;
    }
}

static void fill_one(void *ctx, const char *name, const struct stat *st)
{
    dir_add(ctx, name, st, 0);
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    (void)path; /* libfuse 3.14's high-level opendir passes neither keep_cache nor cache_readdir on */
    dir_list *d = calloc(1, sizeof *d);
    if (!d) abort();
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    dir_list *d = (dir_list *)(uintptr_t)fi->fh;
    if (d) {
        dir_clear(d);
        free(d->v);
        free(d);
    }
    return 0;
}

static int list_dir(const char *path, dir_list *l);

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    dir_list *d = (dir_list *)(uintptr_t)fi->fh, tmp = {0};
    if (!d) d = &tmp; /* not opened by opendir (cannot happen with libfuse): one shot */
    if (off == 0 || d == &tmp) {
        dir_clear(d);
        int rc = list_dir(path, d);
        if (rc) {
            dir_clear(d);
            free(tmp.v);
            return rc;
        }
    }
    enum fuse_fill_dir_flags plus = (flags & FUSE_READDIR_PLUS) ? FUSE_FILL_DIR_PLUS : 0;
    for (size_t i = (size_t)off; i < d->n; i++)
        if (filler(buf, d->v[i].name, &d->v[i].st, (off_t)(i + 1), d->v[i].full ? plus : 0)) break;
    if (d == &tmp) {
        dir_clear(d);
        free(tmp.v);
    }
    return 0;
}

/* Fills L with the entries of the folder PATH. */
static int list_dir(const char *path, dir_list *l)
{
    node n = classify(path);
    fs_mount *m = self();
#define add_dir(name) dir_add(l, name, NULL, S_IFDIR)
#define add_file(name) dir_add(l, name, NULL, S_IFREG)
    add_dir(".");
    add_dir("..");
    switch (n.kind) {
    case N_ROOT:
        for (const char *const *d = (const char *const[]){"inbox", "studies", "patients", "search", "changes",
                                                           "extended-query-tags", "operations", NULL};
             *d; d++)
            add_dir(*d);
        inbox_list(m->inbox, "/", fill_one, l);
        return 0;
    case N_INBOX:
        inbox_list(m->inbox, "/inbox", fill_one, l);
        return 0;
    case N_DROP: {
        struct stat st;
        if (inbox_stat(m->inbox, path, &st) != 0 || !S_ISDIR(st.st_mode)) return -ENOTDIR;
        inbox_list(m->inbox, path, fill_one, l);
        return 0;
    }
    case N_CHANGES: {
        add_file("latest.json");
        add_file("feed.jsonl");
        int64_t head = store_changefeed_head(m->store);
        for (int64_t i = head > 10000 ? head - 10000 + 1 : 1; i <= head; i++) { /* the newest 10,000 */
            char name[32];
            snprintf(name, sizeof name, "%lld.json", (long long)i);
            add_file(name);
        }
        return 0;
    }
    case N_STUDIES: case N_SERIES_DIR: case N_INSTANCES: {
        store_entry *e = NULL;
        size_t cnt = 0;
        if (store_children(m->store, NULL, n.kind == N_STUDIES ? NULL : n.study, n.kind == N_INSTANCES ? n.series : NULL,
                           &e, &cnt, NULL) != STORE_OK)
            return tombs_has(m->tombs, path) ? 0 : -ENOENT;
        for (size_t i = 0; i < cnt; i++) {
            char name[STORE_UID_MAX + 8];
            snprintf(name, sizeof name, "%s%s", e[i].uid, n.kind == N_INSTANCES ? ".dcm" : "");
            struct stat st;
            if (n.kind == N_INSTANCES) fs_file_stat(&st, e[i].size, e[i].updated_us);
            else fs_dir_stat(&st, e[i].updated_us);
            fill_one(l, name, &st);
        }
        free(e);
        return 0;
    }
    case N_STUDY: case N_SERIES: {
        /* The subfolder with its attributes (those getattr gives): find and ls -R descend
         * into it without a lookup. metadata.json's size costs a query of its own. */
        struct stat st;
        add_file("metadata.json");
        node sub = n;
        sub.kind = n.kind == N_STUDY ? N_SERIES_DIR : N_INSTANCES;
        if (getattr_node(&sub, path, &st) == 0) fill_one(l, n.kind == N_STUDY ? "series" : "instances", &st);
        else add_dir(n.kind == N_STUDY ? "series" : "instances");
        return 0;
    }
    case N_PATIENTS: {
        patients_node p;
        int rc = patients_of(&n, &p);
        if (rc == -ENOENT && tombs_has(m->tombs, path)) return 0;
        return rc ? rc : patients_list(m->store, &p, fill_one, l);
    }
    case N_SEARCH:
        add_dir("studies");
        add_dir("series");
        add_dir("instances");
        return 0;
    case N_SEARCH_LEVEL:
        return 0; /* any query may be looked up; none is listed */
    case N_XQT:
        return xqt_list(m, fill_one, l);
    case N_OPS:
        return xqt_op_list(m, fill_one, l);
    case N_SEARCH_QUERY: {
        char *level = segment(&n, 1), *query = segment(&n, 2);
        int rc = search_list(m, level, query, fill_one, l);
        free(level);
        free(query);
        return rc;
    }
    default:
        return -ENOTDIR;
    }
}
#undef add_dir
#undef add_file

/* An open file: an object file's descriptor, or generated text. Open files are also
 * linked to the mount, because an unmount while busy ends the session without their
 * release. */
typedef struct open_file {
    int fd;
    char *text;
    size_t len;
    bool feed;       /* changes/feed.jsonl */
    xqt_file *xqt;   /* an extended query tag file open for writing */
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
    if (f->xqt) xqt_release(m, f->xqt);
    free(f->text);
    free(f);
}

/* Opens TEXT (taken over) as a read-only file of generated text. */
static int open_text(struct fuse_file_info *fi, char *text)
{
    open_file *f = new_open_file();
    f->text = text;
    f->len = strlen(text);
    fi->fh = (uint64_t)(uintptr_t)f;
    fi->direct_io = 1;
    return 0;
}

/* A file of /extended-query-tags: generated text for reading, a write to judge at close. */
static int open_xqt(const node *n, bool create, struct fuse_file_info *fi)
{
    fs_mount *m = self();
    char *name = segment(n, 1), *text = NULL;
    int rc;
    if (!create && (fi->flags & O_ACCMODE) == O_RDONLY) {
        rc = xqt_text(m, name, &text);
        free(name);
        return rc ? rc : open_text(fi, text);
    }
    xqt_file *x = NULL;
    rc = xqt_open(m, name, create, (fi->flags & O_TRUNC) != 0, &x);
    free(name);
    if (rc) return rc;
    open_file *f = new_open_file();
    f->xqt = x;
    fi->fh = (uint64_t)(uintptr_t)f;
    fi->direct_io = 1;
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    node n = classify(path);
    if (n.kind == N_DROP) {
        char *why = inbox_error_text(self()->inbox, path);
        return why ? open_text(fi, why) : 0; /* reads of drops go to the inbox */
    }
    if (n.kind == N_XQT_FILE) return open_xqt(&n, false, fi);
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EACCES;
    if (n.kind == N_OP) {
        char *name = segment(&n, 1), *text = NULL;
        int rc = xqt_op_text(self(), name, &text);
        free(name);
        return rc ? rc : open_text(fi, text);
    }
    if (n.kind == N_CHANGES_FEED) {
        open_file *f = new_open_file();
        f->feed = true;
        fi->fh = (uint64_t)(uintptr_t)f;
        fi->direct_io = 1; /* it grows: every read asks us */
        return 0;
    }
    if (n.kind == N_SEARCH_QUERY) { /* "<bad query>.error" */
        char *why = NULL;
        int rc = search_query(&n, &why);
        if (rc || n.kind != N_SEARCH_ERROR) {
            free(why);
            return rc ? rc : -EISDIR;
        }
        return open_text(fi, why);
    }
    if (n.kind == N_PATIENTS) { /* an instance file of the patients view */
        patients_node p;
        int prc = patients_of(&n, &p);
        if (prc) return prc;
        if (p.depth != 4) return -EISDIR;
        n.kind = N_INSTANCE;
        memcpy(n.study, p.study, sizeof n.study);
        memcpy(n.series, p.series, sizeof n.series);
        memcpy(n.sop, p.sop, sizeof n.sop);
    }
    open_file *f = new_open_file();
    int rc = 0;
    if (n.kind == N_INSTANCE) {
        store_instance in;
        rc = instance_of(&n, &in);
        if (!rc && (f->fd = store_open_object(self()->store, &in)) < 0) rc = -errno;
        /* An object file shorter or longer than its row says was damaged behind the
         * archive's back: EIO, rather than reads that end early as if it were whole. */
        struct stat sb;
        if (!rc && (fstat(f->fd, &sb) != 0 || (uint64_t)sb.st_size != in.size)) rc = -EIO;
        /* A stored instance never changes: its pages stay cached across opens. Deleted,
         * its name is gone at the next lookup (at most entry_timeout later, at once for
         * studies/ paths, which notify.c invalidates with their pages); stored again, it
         * has a new mtime, and the kernel drops pages whose file's mtime or size changed. */
        fi->keep_cache = 1;
        fi->noflush = 1; /* read-only, nothing to report at close(): no FLUSH round trip */
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
    if (!f) return path ? inbox_read(self()->inbox, path, buf, size, off) : -ENOENT;
    if (f->feed) return feed_read(self(), buf, size, off);
    if (f->xqt) return xqt_read(self(), f->xqt, buf, size, off);
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
    else if (classify(path).kind == N_DROP) inbox_release(self()->inbox, path);
    return 0;
}

static int drop_only(const char *path)
{
    node n = classify(path);
    return n.kind == N_DROP ? 0 : n.kind == N_NONE ? -ENOENT : -EROFS;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    node n = classify(path);
    if (n.kind == N_XQT_FILE) return open_xqt(&n, true, fi);
    int rc = drop_only(path);
    fi->fh = 0;
    return rc ? (rc == -ENOENT ? -EACCES : rc) : inbox_create(self()->inbox, path, mode);
}

static int op_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    open_file *f = fi ? (open_file *)(uintptr_t)fi->fh : NULL;
    if (f && f->xqt) return xqt_write(self(), f->xqt, buf, size, off);
    if (f) return -EBADF; /* read-only */
    /* NULL: the file was removed while open (hard_remove), and with it the drop */
    return path ? inbox_write(self()->inbox, path, buf, size, off) : -ENOENT;
}

/* Only flush's result reaches close(): the verdict of the ingest goes here, every time. */
static int op_flush(const char *path, struct fuse_file_info *fi)
{
    open_file *f = (open_file *)(uintptr_t)fi->fh;
    if (f && f->xqt) return xqt_flush(self(), f->xqt); /* the verdict of a tag file's write */
    if (f) return 0; /* a file of the archive, read-only */
    return classify(path).kind == N_DROP ? inbox_flush(self()->inbox, path) : 0;
}

/* fsync() of a dropped file: durable when it returns, with the final verdict. */
static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    open_file *f = fi ? (open_file *)(uintptr_t)fi->fh : NULL;
    if (f && f->xqt) return xqt_flush(self(), f->xqt); /* the store's calls are durable when they return */
    if (f) return 0;
    return classify(path).kind == N_DROP ? inbox_fsync(self()->inbox, path) : 0;
}

/* fsync() of a folder (`sync DIR`): every file dropped so far is durable, and a file
 * under it that failed after its close() fails this too (EIO, once). */
static int op_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    (void)fi;
    return inbox_sync(self()->inbox, path ? path : "/");
}

static int op_mkdir(const char *path, mode_t mode)
{
    int rc = drop_only(path);
    return rc ? (rc == -ENOENT ? -EACCES : rc) : inbox_mkdir(self()->inbox, path, mode);
}

static int op_unlink(const char *path)
{
    node n = classify(path);
    switch (n.kind) {
    case N_DROP:
        return inbox_unlink(self()->inbox, path);
    case N_INSTANCE:
        return delete_file(self(), path, n.study, n.series, n.sop);
    case N_STUDY_META: case N_SERIES_META:
        return delete_file(self(), path, n.study, NULL, NULL);
    case N_XQT_FILE: {
        char *name = segment(&n, 1);
        int rc = xqt_unlink(self(), name);
        free(name);
        return rc;
    }
    case N_PATIENTS: {
        patients_node p;
        int rc = patients_of(&n, &p);
        if (rc) return rc;
        return p.depth == 4 ? delete_file(self(), path, p.study, p.series, p.sop) : -EISDIR;
    }
    case N_NONE:
        return -ENOENT;
    default:
        return -EROFS;
    }
}

static int op_rmdir(const char *path)
{
    node n = classify(path);
    fs_mount *m = self();
    store_entry *e = NULL;
    size_t cnt = 0;
    int64_t us;
    switch (n.kind) {
    case N_DROP:
        return inbox_rmdir(m->inbox, path);
    case N_STUDY: case N_SERIES_DIR:
        store_children(m->store, NULL, n.study, NULL, &e, &cnt, NULL);
        free(e);
        return delete_folder(m, path, cnt > 0);
    case N_SERIES: case N_INSTANCES:
        return delete_folder(m, path, series_time(&n, &us) == 0);
    case N_PATIENTS: {
        patients_node p;
        int rc = patients_of(&n, &p);
        if (p.depth == 0 || p.depth == 4) return rc ? rc : p.depth == 0 ? -EACCES : -ENOTDIR;
        return rc == -EIO ? rc : delete_folder(m, path, rc == 0);
    }
    case N_NONE:
        return -ENOENT;
    default:
        return -EROFS;
    }
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

/* The name below /extended-query-tags of PATH (malloc'd), or NULL. */
static char *xqt_name(const char *path)
{
    node n = classify(path);
    return n.kind == N_XQT_FILE ? segment(&n, 1) : NULL;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    open_file *f = fi ? (open_file *)(uintptr_t)fi->fh : NULL;
    if (f && f->xqt) return xqt_truncate(self(), f->xqt, size);
    char *name = xqt_name(path);
    if (name) {
        int rc = xqt_truncate_name(self(), name, size);
        free(name);
        return rc;
    }
    int rc = drop_only(path);
    return rc ? rc : inbox_truncate(self()->inbox, path, size);
}

/* chmod, chown, utimens of a tag file: accepted while it is being written (cp -p). */
static int xqt_attr(const char *path, int *rc)
{
    char *name = xqt_name(path);
    if (!name) return 0;
    *rc = xqt_setattr(self(), name);
    free(name);
    return 1;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)fi;
    int rc;
    if (xqt_attr(path, &rc)) return rc;
    rc = drop_only(path);
    return rc ? rc : inbox_setmode(self()->inbox, path, mode);
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    (void)uid;
    (void)gid;
    (void)fi;
    int rc;
    if (xqt_attr(path, &rc)) return rc;
    return drop_only(path); /* accepted for drops (tar, cp -p), meaningless for the archive */
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    (void)fi;
    int rc;
    if (xqt_attr(path, &rc)) return rc;
    rc = drop_only(path);
    return rc ? rc : inbox_settime(self()->inbox, path, tv);
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    /* keep_cache relies on it (libfuse's default, made explicit): when a lookup or getattr
     * shows a file's mtime or size changed, the kernel drops its cached pages. */
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    /* Short caches: instances stored over HTTP or by another process must show soon. */
    cfg->entry_timeout = 1;
    cfg->attr_timeout = 1;
    cfg->negative_timeout = 0;
    cfg->use_ino = 0;
    /* Instance files keep their page cache (keep_cache at their open, see op_open); drops
     * and generated files do not. No auto_cache: its getattr at every open is not needed
     * for files that never change. */
    cfg->auto_cache = 0;
    /* rm of an open file removes it (no .fuse_hidden rename): an open drop is then
     * cancelled, and an open instance can be deleted with --allow-delete. */
    cfg->hard_remove = 1;
    /* max_write is libfuse's default, 1 MiB (fuse-and-http-notes: no option needed). */
    return fuse_get_context()->private_data;
}

static const struct fuse_operations ops = {
    .init = op_init,
    .getattr = op_getattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .readlink = op_readlink,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .create = op_create,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .fsyncdir = op_fsyncdir,
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

static void release_parts(fs_mount *m)
{
    feed_free(&m->feed);
    search_free(m->search);
    tombs_free(m->tombs);
    xqt_free(m->xqt);
    inbox_free(m->inbox);
    pthread_mutex_destroy(&m->files_lock);
    free(m->mountpoint);
    free(m);
}

fs_mount *fs_mount_start(store_t *store, const char *mountpoint, const fs_options *o, store_err *err)
{
    fs_mount *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->store = store;
    m->allow_delete = o && o->allow_delete;
    m->inbox = inbox_new(store, o && o->inbox_keep ? o->inbox_keep : FS_INBOX_KEEP, o && o->sync_close);
    m->search = search_new();
    m->tombs = tombs_new();
    m->xqt = xqt_new();
    pthread_mutex_init(&m->files_lock, NULL);
    pthread_mutex_init(&m->feed.lock, NULL);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    m->started_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    m->mountpoint = strdup(mountpoint);
    char *argv[] = {"dicomfs", "-o", "fsname=dicomfs,subtype=dicomfs", NULL, NULL, NULL, NULL};
    int argc = 3;
    if (o && o->allow_other) {
        argv[argc++] = "-o";
        argv[argc++] = "allow_other,default_permissions";
    }
    /* DICOMFS_FUSE_DEBUG=1: libfuse prints every request and reply on stderr (-d), to
     * count the round trips of a workload. */
    const char *dbg = getenv("DICOMFS_FUSE_DEBUG");
    if (dbg && *dbg && strcmp(dbg, "0") != 0) argv[argc++] = "-d";
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    m->fuse = fuse_new(&args, &ops, sizeof ops, m);
    fuse_opt_free_args(&args);
    if (!m->fuse || fuse_mount(m->fuse, mountpoint) != 0) {
        store_seterr(err, STORE_EIO, "cannot mount on %s (does it exist, is it empty, is /dev/fuse there?)", mountpoint);
        if (m->fuse) fuse_destroy(m->fuse);
        release_parts(m);
        return NULL;
    }
    if (pthread_create(&m->thread, NULL, serve, m) != 0) {
        store_seterr(err, STORE_EIO, "cannot start the mount's thread");
        fuse_unmount(m->fuse);
        fuse_destroy(m->fuse);
        release_parts(m);
        return NULL;
    }
    m->notify = notify_start(m); /* NULL (no thread): caches then only expire, after 1 s */
    return m;
}

void fs_mount_stop(fs_mount *m)
{
    if (!m) return;
    m->stopping = true;
    notify_stop(m->notify); /* it calls into m->fuse */
    fuse_exit(m->fuse);
    fuse_unmount(m->fuse); /* ends the session: the loop returns */
    pthread_join(m->thread, NULL);
    fuse_destroy(m->fuse);
    while (m->files) free_open_file(m, m->files); /* still open at a lazy unmount */
    release_parts(m);
}
