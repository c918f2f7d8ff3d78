/* internal.h — what the store's own files share; nothing outside store/ includes it.
 *
 * Connections: each db_t is one SQLite connection with its prepared statements. Readers
 * borrow one from a small pool (db_get/db_put); all writes go through the single writer
 * connection under write_lock (the commit thread, delete, repair), so a process never
 * contends with itself for SQLite's write lock. */
#ifndef DICOMFS_INTERNAL_H
#define DICOMFS_INTERNAL_H

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "dcm.h"
#include "store.h"
#include "tags.h"

/* ---- Statements ----------------------------------------------------------------- */

typedef enum {
    ST_PARTITION_GET,
    ST_PARTITION_ADD,
    ST_PARTITION_NAME,
    ST_STUDY_GET,
    ST_STUDY_ADD,
    ST_STUDY_UPDATE,
    ST_SERIES_GET,
    ST_SERIES_ADD,
    ST_SERIES_UPDATE,
    ST_INSTANCE_EXISTS,
    ST_INSTANCE_ADD,
    ST_METADATA_ADD,
    ST_IX_TEXT_ADD,
    ST_IX_WORD_ADD,
    ST_IX_INT_ADD,
    ST_IX_REAL_ADD,
    ST_IX_TEXT_DEL,
    ST_IX_WORD_DEL,
    ST_IX_INT_DEL,
    ST_IX_REAL_DEL,
    ST_CHANGE_ADD,
    ST_INSTANCE_LIST,
    ST_INSTANCE_ONE,
    ST_METADATA_LIST,
    ST_METADATA_ONE,
    ST_CHILDREN_STUDIES,
    ST_CHILDREN_SERIES,
    ST_CHILDREN_INSTANCES,
    ST_STUDY_EXISTS,
    ST_FRAMES,
    ST_DRESS_ATTRS,
    ST_DRESS_META,
    ST_DRESS_STUDY,
    ST_DRESS_SERIES,
    ST_DRESS_INSTANCE,
    ST_DRESS_MODALITIES,
    ST_SERIES_EXISTS,
    ST_XQT_GEN,
    ST_FEED_LAST_TIME,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_COUNT
} stmt_id;

typedef struct {
    sqlite3 *h;
    sqlite3_stmt *stmt[ST_COUNT];
    atomic_int wal_frames; /* the WAL's length after this connection's last commit (checkpoint.c) */
} db_t;

/* The prepared statement ID, reset and unbound, ready to bind. NULL on error. */
sqlite3_stmt *db_stmt(db_t *db, stmt_id id);
/* READONLY: the archive's disk or folder cannot be written (archive.c decides). */
db_t *db_open(const char *path, bool create, bool readonly, store_err *err);
void db_close(db_t *db);
int db_exec(db_t *db, const char *sql, store_err *err); /* SQLITE_OK or an error, err filled */
/* The store status of an SQLite error: busy, a full disk (SQLITE_FULL), or I/O. */
static inline store_status db_status(int rc)
{
    return (rc & 0xff) == SQLITE_BUSY ? STORE_EBUSY : (rc & 0xff) == SQLITE_FULL ? STORE_ENOSPC : STORE_EIO;
}
int db_run(db_t *db, stmt_id id); /* steps a cached statement without bindings once (SAVEPOINT …) */
int schema_create(db_t *db, store_err *err);
/* Turns SQLite's automatic checkpoint off on DB (db_open does, for every writable
 * connection): the store checkpoints itself, holding the write lock (checkpoint.c). */
void db_no_autocheckpoint(db_t *db);
int schema_check(db_t *db, store_err *err); /* a read-only archive: its schema version only */

/* ---- The store -------------------------------------------------------------------- */

#define POOL_MAX 16

/* Tags indexed at ingest: the core set now, extended query tags later. */
typedef struct {
    uint32_t tag;
    char vr[3];
    store_level level;
    char creator[65];  /* private extended query tags: the private creator; "" otherwise */
} index_tag;

struct store {
    char *dir;
    int dirfd;
    int lockfd;
    char open_mark[32]; /* tmp/<id>.open once this process changes objects/ */
    bool keep_open_mark; /* objects may be orphans (a failed COMMIT): repair at next open */
    bool readonly;       /* opened from a read-only disk or folder: reads only (archive.c) */

    pthread_mutex_t pool_lock;
    db_t *idle[POOL_MAX];
    int n_idle;

    pthread_mutex_t write_lock; /* guards writer and checkpointer */
    db_t *writer;
    db_t *checkpointer;     /* checkpoints while the writer holds the write lock (checkpoint.c) */
    unsigned long checkpoints; /* checkpoints tried (for tests) */

    index_tag *index_tags;
    size_t n_index_tags;
    uint32_t *value_tags;   /* first values dcm_parse returns: index tags, Modality, InstanceNumber */
    size_t n_value_tags;
    uint32_t *attr_tags;    /* attributes copied into each instance's attrs JSON, ascending */
    size_t n_attr_tags;

    /* The commit queue (commit.c). */
    pthread_mutex_t q_lock;
    pthread_cond_t q_cond;  /* work arrived, or stop */
    pthread_cond_t q_space; /* the queue has room again */
    store_item *q_head, *q_tail;
    size_t q_len;
    atomic_int uploads_open; /* uploads begun and not yet finished: may join a group */
    atomic_long expected;    /* items announced by store_expect() and not yet queued */
    bool q_stop, q_running;
    pthread_t q_thread;

    /* Parse threads for store_upload_finish_async (parse_pool.c), started on first use. */
    pthread_mutex_t pool_start_lock;
    struct parse_pool *pool;

    /* Extended query tags (xqt.c): the registry as last read from the index, and the
     * background reindex. */
    pthread_mutex_t xqt_lock;
    int64_t xqt_gen;        /* meta 'xqt_gen' when the registry was read; -1: never */
    struct xqt_entry *xqt;  /* STORE_XQT_MAX entries */
    size_t n_xqt;
    pthread_mutex_t reindex_lock;
    pthread_cond_t reindex_cond;
    bool reindex_running, reindex_stop, reindex_thread_started;
    bool reindex_kick;      /* an operation was added while the thread was running */
    pthread_t reindex_thread;
    int reindex_fd;         /* flock of ARCHIVE/reindex.lock: one process reindexes */

    /* store_on_change(): told after each committed change. */
    pthread_mutex_t change_lock;
    store_change_fn change_fn;
    void *change_ctx;
};

/* ---- Extended query tags (xqt.c) -------------------------------------------------- */

enum { XQT_ADDING = 0, XQT_READY = 1, XQT_DELETING = 2 };

typedef struct xqt_entry {
    index_tag t;            /* tag, VR, level */
    char path[9];
    char private_creator[65];
    int status;             /* XQT_* */
    bool query_enabled;
    int64_t error_count;
    char operation[33];     /* the reindex adding it, "" when none */
} xqt_entry;

/* Reads the registry again when the index says it changed. Call inside a transaction of
 * DB (or with no transaction open) so that the registry is what DB sees. */
void xqt_refresh(store_t *s, db_t *db);
/* The tags values are indexed on (adding or ready), as last read: OUT has room for
 * STORE_XQT_MAX. */
size_t xqt_indexed(const store_t *s, index_tag *out);
/* The whole registry, as last read (OUT: STORE_XQT_MAX entries). */
size_t xqt_entries(const store_t *s, xqt_entry *out);
/* Adds the values ITEM has for the extended query tags (from its metadata JSON) to its
 * value lists: at commit, inside the group's transaction, so that a tag added meanwhile
 * is either indexed here or by its reindex, never neither. */
void xqt_index_item(store_t *s, db_t *db, store_item *item);
/* Starts the reindex thread when an operation is unfinished and no other process runs
 * it; stops it (between batches). */
void xqt_resume(store_t *s);
void xqt_stop(store_t *s);

/* Checkpoints the WAL when it has grown past SQLite's usual size (FORCE: in any case),
 * holding the write lock so that no writer can race it; after a write transaction ends,
 * with the write lock free. */
void store_checkpoint(store_t *s, bool force);

/* Tells the change listener, if any (after a COMMIT that changed something). */
void store_notify_change(store_t *s);

db_t *db_get(store_t *s, store_err *err);
void db_put(store_t *s, db_t *db);
void db_idle(db_t *db); /* resets every statement: no read snapshot stays open */

/* Path of an archive-relative name. */
void store_path(const store_t *s, const char *rel, char out[PATH_MAX]);

/* Microseconds since the epoch, UTC. */
int64_t store_now_us(void);
/* The timestamp of a new change-feed row (inside the writer's transaction): now, but
 * never before the feed's last one, so that timestamp order is sequence order even when
 * the clock steps back (v2 pages rely on it). */
int64_t feed_time(db_t *db);
/* "2020-03-04T01:03:08.483412+00:00" */
void store_format_time(int64_t us, char out[40]);

/* Partition key for NAME; creates it when CREATE (writer only). 0 when missing. */
int64_t partition_key(db_t *db, const char *name, bool create);

/* ---- Items: an instance between upload and commit (ingest.c, commit.c, index.c) --- */

typedef enum { IX_TEXT, IX_WORD, IX_INT, IX_REAL } ix_table;

typedef struct {
    uint32_t tag;
    ix_table table;
    char *text;
    int64_t i;
    double r;
} ix_value;

typedef struct {
    ix_value *v;
    size_t n, cap;
} ix_list;

struct store_item {
    store_ingest_result result;
    bool final;                /* result decided (rejected before commit, or committed) */
    bool identical_ok;         /* the same bytes stored before are a success (store_ingest_opts) */
    char partition[65];
    char tmp[PATH_MAX];        /* the upload's temp file; "" once renamed or removed */
    char object[64];           /* "objects/xx/<32 hex>.dcm" */
    uint64_t size;
    char transfer_syntax[65];
    bool has_instance_number;
    int64_t instance_number;
    char modality[17];
    char *metadata;            /* the DICOM JSON object */
    char *attrs;               /* returnable attributes, DICOM JSON object */
    ix_list ix[3];             /* index values per level */
    char *ix_key[3];           /* the study's and series' values serialised, to compare */
    uint32_t frame_count;
    void *frames;              /* frames blob (see index.c) */
    size_t frames_len;
    uint32_t crc32;         /* of the object's bytes (zlib's CRC-32), for fsck */

    store_done_fn done;        /* commit.c */
    void *ctx;
    store_item *next;
};

void item_reject(store_item *item, store_status st, int reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A duplicate found at commit (SQLITE_CONSTRAINT): FIRST is the item of the same group
 * that holds the UIDs (its file still in tmp/), or NULL when a committed instance does.
 * With identical_ok the same bytes are already stored; otherwise the item fails 45070. */
void item_settle_duplicate(store_t *s, store_item *item, const store_item *first);

/* index.c: turn parsed values into index values; write and remove rows. */
void index_request(const store_t *s, dcm_request *req);
void index_extract(const store_t *s, const dcm_value *values, size_t n, store_item *item);
/* The same for the extended query tags, when VALUES came from stored JSON
 * (index_values_from_json: re-deriving a level); at ingest xqt_index_item does it. */
void index_extract_xqt(const store_t *s, const dcm_value *values, size_t n, store_item *item);
/* Adds the index values of one attribute's first value S (DICOM text) to L; false when S
 * cannot be indexed as T's VR says (not a date, not a number...). */
bool index_add_value(ix_list *l, const index_tag *t, const char *s);
/* The first value of TAG in DICOM JSON META as DICOM text (a person name as A=I=P),
 * malloc'd; NULL when absent or empty. *MULTIPLE: it had more than one value. With a
 * CREATOR (a private tag), TAG's element is looked for in the block that creator
 * reserved in this dataset, wherever that is. */
char *index_value_from_json(json_t *meta, uint32_t tag, const char *creator, bool *multiple);
size_t index_values_from_json(const store_t *s, json_t *meta, dcm_value **out);
void ix_list_free(ix_list *l);
char *ix_list_serialize(const ix_list *l);
void *frames_encode(const dcm_frames *f, size_t *len);
int frames_decode(const void *blob, size_t len, uint32_t frame, store_range **ranges, size_t *n);
/* Inserts all rows of ITEM inside the caller's transaction. SQLITE_CONSTRAINT when the
 * instance exists. */
int index_insert(store_t *s, db_t *db, store_item *item, store_err *err);
/* Writes level values for KEY, replacing what was there. */
int index_write_level(db_t *db, int64_t key, const ix_list *l);
int index_clear_level(db_t *db, int64_t key, store_level level, const store_t *s);
/* Removes TAG's values of level key KEY. */
int index_clear_tag(db_t *db, int64_t key, uint32_t tag);

/* Starts the commit thread if needed (commit.c); drains and stops it (store_close). */
void commit_stop(store_t *s);

/* archive.c: temp-file names and crash repair (the rule is at the top of archive.c). */
void store_random_hex(char *out, size_t nbytes); /* 2*nbytes hex digits + NUL */
size_t store_repair(store_t *s); /* applies the repair rule; returns files removed */
/* Before this process's first rename into or unlink from objects/ (write_lock held):
 * creates and syncs tmp/<id>.open, removed by store_close. 0, or -1 with errno. */
int store_mark_unclean(store_t *s);
/* Every write's refusal on a read-only archive: STORE_EREADONLY with a message. */
store_status store_readonly(const store_t *s, store_err *err);

/* fsck.c: removes object files that no index row names; returns how many. */
size_t fsck_remove_orphans(store_t *s, db_t *db);

/* parse_pool.c: finishes what is queued, stops the threads (store_close). */
typedef struct parse_pool parse_pool;
void parse_pool_stop(store_t *s);

/* upload.c */
void upload_done(store_t *s); /* an upload was finished or aborted */
struct store_upload {
    store_t *store;
    int fd;
    char path[PATH_MAX];
    uint64_t size;
    store_status failed; /* a write failed: STORE_ENOSPC (disk full) or STORE_EIO */
    /* The CRC-32 of bytes 0..crc_len, kept while the bytes come in order (STOW, cp into
     * the mount): ingest then needs no second pass over them. */
    uint32_t crc;
    uint64_t crc_len;
    bool crc_lost;       /* written out of order, truncated or copied by the kernel */
};
/* The upload's CRC-32 when it was kept over all its bytes (false: read them back). */
bool upload_crc(const store_upload *up, uint32_t *crc);

#endif
