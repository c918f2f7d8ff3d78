/* internal.h — what the mount's files share; nothing outside fs/ includes it.
 *
 * ops.c answers FUSE's calls by classifying the path and handing it to the module that
 * owns that part of the tree: inbox.c (drops), feed.c (changes/feed.jsonl), patients.c
 * (/patients), search.c (/search), tags.c (/extended-query-tags and /operations),
 * notify.c (keeping the kernel's caches honest). */
#ifndef DICOMFS_FS_INTERNAL_H
#define DICOMFS_FS_INTERNAL_H

/* 312: fuse_loop_mt() then takes the fuse_loop_config of fuse_loop_cfg_create(); with an
 * older version it reads that config as the old struct (a thread per request). */
#define FUSE_USE_VERSION 312

#include <fuse.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs.h"
#include "inbox.h"

/* changes/feed.jsonl: where each line starts, so reads regenerate only what they cover. */
typedef struct {
    pthread_mutex_t lock;
    int64_t last;    /* the last sequence indexed */
    int64_t *seq;    /* sequence of line i */
    uint64_t *start; /* byte offset of line i */
    size_t n, cap;
    uint64_t size;
} feed_index;

typedef struct search_cache search_cache;
typedef struct notifier notifier;
typedef struct tombstones tombstones;
typedef struct xqt_state xqt_state;

struct fs_mount {
    store_t *store;
    inbox *inbox;
    struct fuse *fuse;
    pthread_t thread;
    char *mountpoint;
    bool allow_delete;
    volatile bool stopping;
    int64_t started_us; /* the time of the fixed folders */
    pthread_mutex_t files_lock;
    struct open_file *files;
    feed_index feed;
    search_cache *search;
    notifier *notify;
    tombstones *tombs;
    xqt_state *xqt;
};

/* The mount whose call this thread is answering. */
fs_mount *fs_self(void);

void fs_dir_stat(struct stat *st, int64_t us);
void fs_file_stat(struct stat *st, uint64_t size, int64_t us);
void fs_link_stat(struct stat *st, size_t target_len, int64_t us);

typedef void (*fs_fill_fn)(void *ctx, const char *name, const struct stat *st);

/* ---- feed.c: changes/feed.jsonl ---- */
int feed_size(fs_mount *m, uint64_t *size);
int feed_read(fs_mount *m, char *buf, size_t size, off_t off);
void feed_free(feed_index *f);

/* ---- patients.c: /patients/<patient>/<study>/<series>/<instance>.dcm ---- */
typedef struct {
    int depth; /* 0 /patients, 1 a patient, 2 a study, 3 a series, 4 an instance */
    char patient_id[260], patient_name[260];
    char study[STORE_UID_MAX + 1], series[STORE_UID_MAX + 1], sop[STORE_UID_MAX + 1];
    store_browse_entry entry; /* the entry the path names (depth >= 1) */
} patients_node;

/* SEG[0..COUNT) are the path's segments after "patients". 0, -ENOENT or -EIO. */
int patients_resolve(store_t *s, const char *const *seg, const size_t *len, size_t count, patients_node *out);
int patients_list(store_t *s, const patients_node *dir, fs_fill_fn fill, void *ctx);
void patients_stat(const patients_node *n, struct stat *st);

/* ---- search.c: /search/<level>/<query>/ ---- */
search_cache *search_new(void);
void search_free(search_cache *c);
/* The query folder: 0 when LEVEL and QUERY make a valid search, -EINVAL when the query
 * is bad (WHY, if not NULL, gets the reason, malloc'd), -ENOENT for an unknown level. */
int search_check(fs_mount *m, const char *level, const char *query, char **why);
int search_list(fs_mount *m, const char *level, const char *query, fs_fill_fn fill, void *ctx);
/* The target of the link NAME in a query folder (malloc'd), or NULL: -ENOENT. */
int search_link(fs_mount *m, const char *level, const char *query, const char *name, char **target);

/* ---- delete.c: rm and rm -r with --allow-delete ---- */
tombstones *tombs_new(void);
void tombs_free(tombstones *t);
/* PATH is a folder emptied by deletes through the mount, not yet removed. */
bool tombs_has(tombstones *t, const char *path);
/* unlink of an instance file at PATH (SOP NULL: a metadata.json). 0 or -errno. */
int delete_file(fs_mount *m, const char *path, const char *study, const char *series, const char *sop);
/* rmdir of an archive folder at PATH; EXISTS: the store still has instances under it. */
int delete_folder(fs_mount *m, const char *path, bool exists);

/* ---- tags.c: /extended-query-tags/ and /operations/ ----
 * NAME is the segment below the folder ("00101010.json", "new.json", "x.json.error").
 * Writes are kept per name (xqt_file: shared by the descriptors open on it) and judged
 * at the first flush that has data: a JSON array adds tags, anything else written to an
 * existing tag's file updates it. The verdict is close()'s errno; NAME.error says why. */
typedef struct xqt_file xqt_file;
xqt_state *xqt_new(void);
void xqt_free(xqt_state *x);
int xqt_stat(fs_mount *m, const char *name, struct stat *st);
int xqt_list(fs_mount *m, fs_fill_fn fill, void *ctx);
/* The text a read-only open of NAME reads (malloc'd). */
int xqt_text(fs_mount *m, const char *name, char **text);
/* An open for writing (CREATE: a new name; TRUNC: O_TRUNC). */
int xqt_open(fs_mount *m, const char *name, bool create, bool trunc, xqt_file **out);
int xqt_write(fs_mount *m, xqt_file *f, const char *buf, size_t size, off_t off);
int xqt_read(fs_mount *m, xqt_file *f, char *buf, size_t size, off_t off);
int xqt_truncate(fs_mount *m, xqt_file *f, off_t size);
/* truncate(2) by name: a file open for writing, else EACCES/ENOENT. */
int xqt_truncate_name(fs_mount *m, const char *name, off_t size);
/* The verdict (0 or -errno): judged now when data was written and not judged yet. */
int xqt_flush(fs_mount *m, xqt_file *f);
void xqt_release(fs_mount *m, xqt_file *f);
/* chmod, chown, utimens: accepted (and ignored) while NAME is open for writing. */
int xqt_setattr(fs_mount *m, const char *name);
/* rm NAME.error forgets it; rm <path>.json deletes the tag (--allow-delete, else EACCES). */
int xqt_unlink(fs_mount *m, const char *name);
/* /operations/<id>.json: the operation's JSON; the listing holds the operations started
 * through this mount and those the tags refer to. */
int xqt_op_text(fs_mount *m, const char *name, char **text);
int xqt_op_list(fs_mount *m, fs_fill_fn fill, void *ctx);

/* ---- notify.c: invalidating what the kernel cached when the archive changes ---- */
notifier *notify_start(fs_mount *m);
void notify_stop(notifier *n);

#endif
