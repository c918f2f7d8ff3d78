/* tags.c — extended query tags and operations as files:
 *
 *   /extended-query-tags/<path>.json        the tag (GET /extendedquerytags/{path}); writing
 *                                           {"queryStatus": "enabled"|"disabled"} to it
 *                                           updates it (PATCH); rm deletes it (--allow-delete)
 *   /extended-query-tags/<name>.json        a new name: writing a JSON array of tags (the
 *                                           POST body) adds them and starts their reindex
 *   /extended-query-tags/<name>.json.error  why the last write to NAME was refused
 *   /operations/<id>.json                   an operation (GET /operations/{id}): progress
 *
 * Like a dropped file, a write is judged at the first flush (close) that has data, and
 * that verdict is close()'s errno, every time: EINVAL (bad JSON, a rule of the reference),
 * EEXIST (a tag exists, or another reindex is running), ENOENT (the tag went away), EIO.
 * NAME.error then says why, until it is removed or a later write to NAME succeeds. The
 * name of a new file stays visible while it is open. Read-only opens generate the JSON
 * at open (direct I/O: a tag's status changes while the reindex runs).
 *
 * Nothing of the archive is kept here: only the bytes being written, the error texts and
 * the ids of the operations started through the mount (to list them). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WRITE_MAX (4u << 20) /* bytes of one written file: 128 tags take a few KB */
#define RECENT_OPS 64

struct xqt_file {
    char *name;      /* "new.json" */
    char *buf;       /* what was written */
    size_t len, cap;
    unsigned opens;  /* descriptors open on it for writing */
    bool dirty;      /* written or truncated since opened */
    bool judged;     /* the verdict is final */
    bool gone;       /* unlinked while open: the last release frees it, nothing is judged */
    int verdict;     /* 0 or -errno */
    char *error;     /* NAME.error, NULL when none */
    xqt_file *next;
};

struct xqt_state {
    pthread_mutex_t lock;
    xqt_file *files;
    char ops[RECENT_OPS][33]; /* a ring of operation ids */
    size_t n_ops;
};

xqt_state *xqt_new(void)
{
    xqt_state *x = calloc(1, sizeof *x);
    if (!x) abort();
    pthread_mutex_init(&x->lock, NULL);
    return x;
}

static void file_free(xqt_file *f)
{
    free(f->name);
    free(f->buf);
    free(f->error);
    free(f);
}

void xqt_free(xqt_state *x)
{
    if (!x) return;
    for (xqt_file *f = x->files, *next; f; f = next) {
        next = f->next;
        file_free(f);
    }
    pthread_mutex_destroy(&x->lock);
    free(x);
}

static int errno_of(store_status st)
{
    switch (st) {
    case STORE_OK: return 0;
    case STORE_EINVAL: return -EINVAL;
    case STORE_ENOTFOUND: return -ENOENT;
    case STORE_EEXIST: return -EEXIST;
    case STORE_ETOOLARGE: return -EFBIG;
    case STORE_EUNSUPPORTED: return -EOPNOTSUPP;
    case STORE_ENOMEM: return -ENOMEM;
    default: return -EIO;
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a > b && strcmp(s + a - b, suffix) == 0;
}

/* "00101010.json" -> "00101010" (malloc'd), NULL for names that are no tag file. */
static char *tag_path(const char *name)
{
    if (!ends_with(name, ".json")) return NULL;
    char *p = strndup(name, strlen(name) - 5);
    if (!p) abort();
    return p;
}

/* The GET JSON of the tag NAME names: 0, -ENOENT when it is no tag, -EIO. */
static int tag_json(fs_mount *m, const char *name, char **json)
{
    *json = NULL;
    char *path = tag_path(name);
    if (!path) return -ENOENT;
    store_status st = store_xqt_get(m->store, path, "", json, NULL);
    free(path);
    if (st == STORE_OK) return 0;
    free(*json);
    *json = NULL;
    return st == STORE_EIO || st == STORE_EBUSY || st == STORE_ENOMEM ? -EIO : -ENOENT;
}

/* Caller holds the lock. */
static xqt_file *find(xqt_state *x, const char *name)
{
    for (xqt_file *f = x->files; f; f = f->next)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

/* "x.json.error" -> the file "x.json" it explains. Caller holds the lock. */
static xqt_file *error_owner(xqt_state *x, const char *name)
{
    if (!ends_with(name, ".json.error")) return NULL;
    char *owner = strndup(name, strlen(name) - 6);
    if (!owner) abort();
    xqt_file *f = find(x, owner);
    free(owner);
    return f && f->error ? f : NULL;
}

static void detach(xqt_state *x, xqt_file *f)
{
    for (xqt_file **p = &x->files; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            return;
        }
}

static void remember_op(xqt_state *x, const char *id)
{
    for (size_t i = 0; i < x->n_ops && i < RECENT_OPS; i++)
        if (strcmp(x->ops[i], id) == 0) return;
    snprintf(x->ops[x->n_ops++ % RECENT_OPS], 33, "%s", id);
}

int xqt_stat(fs_mount *m, const char *name, struct stat *st)
{
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    xqt_file *f = find(x, name), *owner = f ? NULL : error_owner(x, name);
    int rc = -ENOENT;
    if (f && f->opens) {
        fs_file_stat(st, f->len, m->started_us);
        st->st_mode = S_IFREG | 0666;
        rc = 0;
    } else if (owner) {
        fs_file_stat(st, strlen(owner->error), m->started_us);
        rc = 0;
    }
    pthread_mutex_unlock(&x->lock);
    if (rc == 0) return 0;
    char *json = NULL;
    rc = tag_json(m, name, &json);
    if (!rc) {
        fs_file_stat(st, strlen(json), m->started_us);
        st->st_mode = S_IFREG | 0666; /* writable: an update is a write */
    }
    free(json);
    return rc;
}

/* Every tag's JSON object, in the store's order (a JSON array, to json_decref), or NULL
 * and *RC. */
static json_t *all_tags(fs_mount *m, int *rc)
{
    json_t *all = json_array();
    for (int64_t offset = 0;; offset += 200) {
        char *text = NULL;
        store_status st = store_xqt_list(m->store, offset, 200, "", &text, NULL);
        json_t *page = st == STORE_OK ? json_loads(text, 0, NULL) : NULL;
        free(text);
        if (!json_is_array(page)) {
            json_decref(page);
            json_decref(all);
            *rc = st == STORE_OK ? -EIO : errno_of(st);
            return NULL;
        }
        size_t n = json_array_size(page);
        json_array_extend(all, page);
        json_decref(page);
        if (n < 200) break;
    }
    *rc = 0;
    return all;
}

int xqt_list(fs_mount *m, fs_fill_fn fill, void *ctx)
{
    int rc;
    json_t *tags = all_tags(m, &rc);
    if (!tags) return rc;
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        const char *path = json_string_value(json_object_get(t, "path"));
        if (!path) continue;
        char name[300];
        snprintf(name, sizeof name, "%s.json", path);
        fill(ctx, name, NULL); /* no attributes: the lookup computes the size cat reads */
    }
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    for (xqt_file *f = x->files; f; f = f->next) {
        bool listed = false;
        json_array_foreach(tags, i, t) {
            const char *path = json_string_value(json_object_get(t, "path"));
            size_t pl = path ? strlen(path) : 0;
            listed |= path && strncmp(f->name, path, pl) == 0 && strcmp(f->name + pl, ".json") == 0;
        }
        if (f->opens && !listed) fill(ctx, f->name, NULL);
        if (f->error) {
            char name[600];
            snprintf(name, sizeof name, "%s.error", f->name);
            fill(ctx, name, NULL);
        }
    }
    pthread_mutex_unlock(&x->lock);
    json_decref(tags);
    return 0;
}

int xqt_text(fs_mount *m, const char *name, char **text)
{
    xqt_state *x = m->xqt;
    *text = NULL;
    pthread_mutex_lock(&x->lock);
    xqt_file *f = find(x, name), *owner = f ? NULL : error_owner(x, name);
    if (owner) *text = strdup(owner->error);
    else if (f && f->opens) *text = strndup(f->buf ? f->buf : "", f->len);
    pthread_mutex_unlock(&x->lock);
    if (*text) return 0;
    return tag_json(m, name, text);
}

int xqt_open(fs_mount *m, const char *name, bool create, bool trunc, xqt_file **out)
{
    if (!ends_with(name, ".json")) return -EACCES; /* only NAME.json files are written here */
    if (strlen(name) > 255) return -ENAMETOOLONG;
    xqt_state *x = m->xqt;
    char *current = NULL;
    bool is_tag = tag_json(m, name, &current) == 0;
    pthread_mutex_lock(&x->lock);
    xqt_file *f = find(x, name);
    if (!f && !create && !is_tag) {
        pthread_mutex_unlock(&x->lock);
        return -ENOENT;
    }
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f || !(f->name = strdup(name))) abort();
        f->next = x->files;
        x->files = f;
    }
    if (f->opens == 0 || trunc) { /* a new write (an old NAME.error stays until it is judged) */
        f->len = 0;
        f->dirty = trunc;
        f->judged = false;
        f->verdict = 0;
        if (!trunc && !create && current) { /* O_RDWR, O_APPEND...: it holds the tag's JSON */
            free(f->buf);
            f->buf = current;
            f->len = f->cap = strlen(current);
            current = NULL;
        }
    }
    f->opens++;
    pthread_mutex_unlock(&x->lock);
    free(current);
    *out = f;
    return 0;
}

/* Makes room for SIZE bytes (zero-filled beyond len). Caller holds the lock. */
static int reserve(xqt_file *f, size_t size)
{
    if (size > WRITE_MAX) return -EFBIG;
    if (size > f->cap) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap < size) cap *= 2;
        if (!(f->buf = realloc(f->buf, cap))) abort();
        f->cap = cap;
    }
    if (size > f->len) memset(f->buf + f->len, 0, size - f->len);
    return 0;
}

int xqt_write(fs_mount *m, xqt_file *f, const char *buf, size_t size, off_t off)
{
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    int rc = f->judged ? -EBADF : off < 0 ? -EINVAL : reserve(f, (size_t)off + size);
    if (!rc) {
        memcpy(f->buf + off, buf, size);
        if ((size_t)off + size > f->len) f->len = (size_t)off + size;
        f->dirty = true;
    }
    pthread_mutex_unlock(&x->lock);
    return rc ? rc : (int)size;
}

int xqt_read(fs_mount *m, xqt_file *f, char *buf, size_t size, off_t off)
{
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    size_t n = 0;
    if (off >= 0 && (size_t)off < f->len) {
        n = f->len - (size_t)off < size ? f->len - (size_t)off : size;
        memcpy(buf, f->buf + off, n);
    }
    pthread_mutex_unlock(&x->lock);
    return (int)n;
}

/* Caller holds the lock. */
static int truncate_locked(xqt_file *f, off_t size)
{
    if (f->judged) return -EBADF;
    if (size < 0) return -EINVAL;
    int rc = reserve(f, (size_t)size);
    if (!rc) {
        f->len = (size_t)size;
        f->dirty = true;
    }
    return rc;
}

int xqt_truncate(fs_mount *m, xqt_file *f, off_t size)
{
    pthread_mutex_lock(&m->xqt->lock);
    int rc = truncate_locked(f, size);
    pthread_mutex_unlock(&m->xqt->lock);
    return rc;
}

int xqt_truncate_name(fs_mount *m, const char *name, off_t size)
{
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    xqt_file *f = find(x, name);
    int rc = f && f->opens ? truncate_locked(f, size) : 1;
    pthread_mutex_unlock(&x->lock);
    if (rc != 1) return rc;
    char *json = NULL;
    rc = tag_json(m, name, &json); /* a tag's file changes only by what is written to it */
    free(json);
    return rc ? rc : -EACCES;
}

int xqt_setattr(fs_mount *m, const char *name)
{
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    xqt_file *f = find(x, name);
    bool open = f && f->opens;
    pthread_mutex_unlock(&x->lock);
    if (open) return 0; /* cp -p, tar: meaningless here, and harmless */
    char *json = NULL;
    int rc = tag_json(m, name, &json);
    free(json);
    return rc ? rc : -EROFS;
}

/* What a write of TEXT to NAME does: its verdict, *ERROR (malloc'd) when refused, and
 * ID the operation an add started. */
static int judge(fs_mount *m, const char *name, const char *text, size_t len, char **error, char id[33])
{
    const char *p = text;
    while (p < text + len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    char *path = tag_path(name), *json = NULL;
    bool array = p < text + len && *p == '[';
    bool update = !array && store_xqt_get(m->store, path, "", &json, NULL) == STORE_OK;
    free(json);
    json = NULL;
    store_err err = {0};
    store_status st;
    id[0] = 0;
    if (update) st = store_xqt_update(m->store, path, text, len, "", &json, &err);
    else st = store_xqt_add(m->store, text, len, id, &err);
    free(json);
    free(path);
    *error = NULL;
    if (st == STORE_OK) return 0;
    bool running = st == STORE_EEXIST && id[0] && !strstr(err.msg, id);
    if (asprintf(error, "%s: %s: %s%s%s%s\n", name, update ? "not updated" : "not added", err.msg,
                 running ? " (operation " : "", running ? id : "", running ? ")" : "") < 0)
        abort();
    if (st != STORE_EEXIST) id[0] = 0;
    return errno_of(st);
}

/* Judges F if data was written and it was not judged yet. Caller holds the lock. */
static void judge_locked(fs_mount *m, xqt_file *f)
{
    if (f->judged || f->gone || !f->dirty || f->len == 0) return;
    char *error = NULL, id[33];
    f->verdict = judge(m, f->name, f->buf, f->len, &error, id);
    f->judged = true;
    free(f->error);
    f->error = error;
    if (!f->verdict && id[0]) remember_op(m->xqt, id);
}

int xqt_flush(fs_mount *m, xqt_file *f)
{
    xqt_state *x = m->xqt;
    /* The store's calls run under the lock: they are quick, and a second flush of the
     * same file (a dup'd descriptor) must see the verdict, not race it. */
    pthread_mutex_lock(&x->lock);
    judge_locked(m, f);
    int rc = f->judged ? f->verdict : 0;
    pthread_mutex_unlock(&x->lock);
    return rc;
}

void xqt_release(fs_mount *m, xqt_file *f)
{
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    /* Written through a path no flush saw; not when the mount is being taken down with
     * the file still open (its writer may not be done). */
    if (!m->stopping) judge_locked(m, f);
    if (--f->opens == 0) {
        free(f->buf);
        f->buf = NULL;
        f->len = f->cap = 0;
        if (f->gone || !f->error) {
            if (!f->gone) detach(x, f);
            file_free(f);
        }
    }
    pthread_mutex_unlock(&x->lock);
}

int xqt_unlink(fs_mount *m, const char *name)
{
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    xqt_file *owner = error_owner(x, name);
    if (owner) { /* rm NAME.error: forgets why */
        free(owner->error);
        owner->error = NULL;
        if (!owner->opens) {
            detach(x, owner);
            file_free(owner);
        }
        pthread_mutex_unlock(&x->lock);
        return 0;
    }
    xqt_file *f = find(x, name);
    bool writing = f && f->opens;
    pthread_mutex_unlock(&x->lock);
    char *json = NULL;
    int rc = tag_json(m, name, &json);
    free(json);
    if (rc == 0) {
        if (!m->allow_delete) return -EACCES;
        char *path = tag_path(name);
        store_status st = store_xqt_delete(m->store, path, NULL);
        free(path);
        return errno_of(st);
    }
    if (rc != -ENOENT || !writing) return rc;
    pthread_mutex_lock(&x->lock); /* a new file still open: forgotten, never judged */
    rc = -ENOENT;
    if ((f = find(x, name)) && f->opens) {
        detach(x, f);
        f->gone = true;
        free(f->error);
        f->error = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&x->lock);
    return rc;
}

/* ---- /operations ---- */

int xqt_op_text(fs_mount *m, const char *name, char **text)
{
    *text = NULL;
    char *id = tag_path(name);
    if (!id) return -ENOENT;
    bool finished;
    store_status st = store_operation(m->store, id, 2, "", text, &finished, NULL);
    free(id);
    if (st == STORE_OK) return 0;
    free(*text);
    *text = NULL;
    return st == STORE_EINVAL || st == STORE_ENOTFOUND ? -ENOENT : errno_of(st);
}

int xqt_op_list(fs_mount *m, fs_fill_fn fill, void *ctx)
{
    char ids[RECENT_OPS + STORE_XQT_MAX][33];
    size_t n = 0;
    xqt_state *x = m->xqt;
    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < x->n_ops && i < RECENT_OPS; i++) memcpy(ids[n++], x->ops[i], 33);
    pthread_mutex_unlock(&x->lock);
    int rc;
    json_t *tags = all_tags(m, &rc); /* a tag being added names its operation */
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        const char *id = json_string_value(json_object_get(json_object_get(t, "operation"), "id"));
        if (!id || strlen(id) > 32 || n == sizeof ids / sizeof ids[0]) continue;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++) seen = strcmp(ids[k], id) == 0;
        if (!seen) snprintf(ids[n++], 33, "%s", id);
    }
    json_decref(tags);
    for (size_t k = 0; k < n; k++) {
        char name[40];
        snprintf(name, sizeof name, "%.32s.json", ids[k]);
        fill(ctx, name, NULL);
    }
    return 0;
}
