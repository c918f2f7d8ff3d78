/* store.h — the archive: one directory, an SQLite index and immutable object files.
 *
 * Every face (web/, fs/, tools/) goes through this API; none touches SQLite, DCMTK or the
 * object files' names directly. The on-disk format is described in docs/ARCHITECTURE.md.
 *
 * Threads: one store_t may be shared by all threads of a process. Several processes may
 * open the same archive at once (SQLite WAL + an flock on ARCHIVE/lock).
 *
 * Durability: an instance is acknowledged when store_commit() (or the callback of
 * store_commit_async()) reports STORE_OK for it. By then its object file and directory
 * entry are synced and its index rows and change-feed row are committed in one SQLite
 * transaction. A crash at any moment leaves the whole instance or nothing.
 *
 * Memory: strings and arrays handed out are malloc'd and owned by the caller (free()),
 * unless a comment says otherwise. Results and items have their own free functions.
 *
 * Errors: functions return a store_status; when they take a store_err*, they also put a
 * human-readable message there (never NULL-terminated garbage, always a C string). */
#ifndef DICOMFS_STORE_H
#define DICOMFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct store store_t;
typedef struct store_upload store_upload;
typedef struct store_item store_item;

#define STORE_UID_MAX 64 /* DICOM UIDs are at most 64 characters */
#define STORE_DEFAULT_PARTITION "Microsoft.Default"

/* The reference's UID rule: ^[0-9.]*[0-9]$, at most 64 characters. Faces check URL and
 * path segments with it too, so every face refuses the same UIDs. */
bool store_valid_uid(const char *uid);

/* ---- Opening ---------------------------------------------------------------------- */

enum { STORE_OPEN_CREATE = 1 }; /* create the archive if DIR is missing or empty */

/* Opens (and with STORE_OPEN_CREATE creates) the archive in DIR. An archive is created
 * only in a missing or empty folder (STORE_EEXIST for a folder with other files: a
 * swapped command line must not fill a CD's folder). When no other process has the
 * archive open, repairs what a crash left half-done (orphan temp and object files).
 * Returns NULL and fills err on failure. */
store_t *store_open(const char *dir, int flags, store_err *err);

/* Waits for pending commits, then closes. NULL is a no-op. */
void store_close(store_t *store);

const char *store_dir(const store_t *store);

/* ---- Ingest ----------------------------------------------------------------------- */

typedef struct {
    int api_version;                /* 1 or 2 (0 means 2): which validation rules apply */
    const char *expected_study_uid; /* non-NULL: the instance must belong to this study */
    const char *partition;          /* NULL: STORE_DEFAULT_PARTITION */
    bool identical_ok;              /* the same instance already stored with the same bytes
                                       is a success (already_stored), not failure 45070 */
} store_ingest_opts;

/* Reference failure and warning codes (FailureReason / WarningReason). */
enum {
    STORE_FAIL_PROCESSING = 272,     /* unreadable, not DICOM, or a store error */
    STORE_FAIL_VALIDATION = 43264,   /* a required attribute is missing or invalid */
    STORE_FAIL_EXISTS = 45070,       /* same study/series/SOP instance already stored */
    STORE_FAIL_PENDING = 45071,      /* the same instance is being stored right now */
    STORE_WARN_ATTRIBUTES = 1,       /* v2: invalid attributes left out of index/metadata */
    STORE_WARN_NOT_SOP_CLASS = 45063 /* dataset does not match SOP class (implicit VR) */
};

typedef struct {
    store_status status;  /* STORE_OK: stored (maybe with warnings); otherwise rejected */
    int failure_reason;   /* 0 or STORE_FAIL_* */
    int warning_reason;   /* 0 or STORE_WARN_* (45063 wins over 1 when both apply) */
    bool dicomdir;        /* rejected because it is a DICOMDIR (faces skip it quietly) */
    bool multiple_values; /* an indexed attribute had several values; the first was used */
    bool already_stored;  /* identical_ok: these exact bytes were stored before; nothing changed */
    char message[512];    /* why it failed, or a summary of the warnings */
    char sop_class_uid[STORE_UID_MAX + 1]; /* filled whenever the file was parsable */
    char sop_instance_uid[STORE_UID_MAX + 1];
    char study_uid[STORE_UID_MAX + 1];
    char series_uid[STORE_UID_MAX + 1];
    char *failed_attributes; /* NULL, or ErrorComment texts separated by '\n' */
    int64_t watermark;       /* the stored version's number, when stored */
} store_ingest_result;

void store_ingest_result_clear(store_ingest_result *result);

/* An upload is an instance being received: bytes go to a private temp file in the
 * archive, never into the index, until store_upload_finish() parses and checks them.
 * One upload belongs to one thread at a time. */
store_upload *store_upload_begin(store_t *store, store_err *err);
store_status store_upload_write(store_upload *up, const void *buf, size_t len);
store_status store_upload_pwrite(store_upload *up, const void *buf, size_t len, uint64_t offset);
store_status store_upload_truncate(store_upload *up, uint64_t size);
uint64_t store_upload_size(const store_upload *up);
/* Appends everything readable from FD (from its current offset). */
store_status store_upload_copy_fd(store_upload *up, int fd);
/* Reads back what was written (for faces that must show a file while it is written). */
long store_upload_pread(store_upload *up, void *buf, size_t len, uint64_t offset);
void store_upload_abort(store_upload *up); /* deletes the temp file */

/* Parses, validates and precomputes everything the index needs, in the caller's thread.
 * Consumes the upload. Never returns NULL (out of memory aborts). The item's result is
 * already final if parsing or validation failed; otherwise commit it. */
store_item *store_upload_finish(store_upload *up, const store_ingest_opts *opts);

/* The same on one of the store's parse threads (one per CPU), so that the caller can go
 * on receiving: DONE(item, CTX) runs on that thread once the item is ready, or in the
 * caller's thread before this returns when the threads are all busy. OPTS must stay
 * valid until DONE has run. */
typedef void (*store_finished_fn)(store_item *item, void *ctx);
void store_upload_finish_async(store_upload *up, const store_ingest_opts *opts, store_finished_fn done, void *ctx);

/* identical_ok once more, against what is stored now: for a face that held an item back
 * while another with the same UIDs was being committed (the mount's inbox). The item is
 * then already stored (the same bytes), failed 45070 (other bytes), or still to commit. */
void store_item_settle(store_t *store, store_item *item);

const store_ingest_result *store_item_result(const store_item *item);
void store_item_free(store_item *item);

/* Commits items as one group: their fsyncs and their SQLite transaction are shared with
 * every other item committed at the same moment, from any thread. Blocks until each
 * item's result is final. Items that already failed are left as they are. */
void store_commit(store_t *store, store_item **items, size_t n);

/* The same without waiting: DONE runs once the item's result is final, on the store's
 * commit thread (or at once in the caller's thread for an item that already failed);
 * it must not call store_commit(). Items queued at once are committed together, in
 * the order queued, so a caller that streams many files gets large groups. */
typedef void (*store_done_fn)(store_item *item, void *ctx);
void store_commit_async(store_t *store, store_item *item, store_done_fn done, void *ctx);

/* Announces N items that will be committed soon (a folder being ingested): the commit
 * thread then waits briefly to gather them into larger groups. Each item handed to
 * store_commit_async() afterwards counts one down; store_expect(store, 0) cancels. */
void store_expect(store_t *store, long n);

/* Conveniences: upload all of FD (from its current offset) or of PATH, finish, commit.
 * The result must be cleared with store_ingest_result_clear(). */
store_status store_ingest_fd(store_t *store, int fd, const store_ingest_opts *opts,
                             store_ingest_result *result);
store_status store_ingest_path(store_t *store, const char *path, const store_ingest_opts *opts,
                               store_ingest_result *result);

/* ---- Query (QIDO-RS semantics) ----------------------------------------------------- */

typedef enum { STORE_LEVEL_STUDY = 0, STORE_LEVEL_SERIES = 1, STORE_LEVEL_INSTANCE = 2 } store_level;

typedef struct {
    const char *key;   /* as in a QIDO query string, already percent-decoded */
    const char *value;
} store_param;

typedef struct {
    store_level level;        /* the level of the returned entries */
    const char *study_uid;    /* scope from the URL: /studies/{study}/... or NULL */
    const char *series_uid;   /* scope: /studies/{study}/series/{series}/instances */
    const char *partition;    /* NULL: STORE_DEFAULT_PARTITION */
    int api_version;          /* 1 or 2 (0 means 2): default attributes differ */
    bool with_counts;         /* study and series results carry their computed attributes
                                 (ModalitiesInStudy, NumberOfStudyRelatedSeries/-Instances,
                                 NumberOfSeriesRelatedInstances) as PS3.18 lists them; the
                                 reference returns them only when includefield names them */
    const store_param *params;
    size_t n_params;
} store_query;

typedef struct {
    char *json;      /* a DICOM JSON array, "[]" when nothing matched */
    size_t count;    /* entries in json */
    char erroneous[1200]; /* extended query tags the query used that have indexing errors
                             ("00101010,0040A123"): the erroneous-dicom-attributes header */
} store_find_result;

/* STORE_EINVAL with a message for every query the reference answers with 400. */
store_status store_find(store_t *store, const store_query *query, store_find_result *result,
                        store_err *err);
void store_find_result_clear(store_find_result *result);

/* The UIDs of one match, for faces that list matches rather than describe them. */
typedef struct {
    char study_uid[STORE_UID_MAX + 1];
    char series_uid[STORE_UID_MAX + 1];       /* series and instance levels */
    char sop_instance_uid[STORE_UID_MAX + 1]; /* instance level */
} store_ref;

/* What store_find() would match, as UIDs (the mount's search folders): the same filters
 * and 400 errors, newest first, but without the default limit of 100: all matches up to
 * MAX, or up to the query's own limit when it gives one. includefield is accepted and
 * has no effect. */
store_status store_find_refs(store_t *store, const store_query *query, size_t max, store_ref **out, size_t *n,
                             store_err *err);

/* ---- Browse: the archive by patient ------------------------------------------------ */

typedef enum {
    STORE_BROWSE_PATIENTS,  /* one entry per (PatientID, PatientName) as recorded */
    STORE_BROWSE_STUDIES,   /* the studies of one patient */
    STORE_BROWSE_SERIES,    /* the series of a study */
    STORE_BROWSE_INSTANCES  /* the instances of a series */
} store_browse_level;

typedef struct {
    store_browse_level level;
    const char *partition;    /* NULL: STORE_DEFAULT_PARTITION */
    const char *patient_id;   /* patients: only this PatientID (NULL: all); studies: required */
    const char *patient_name; /* studies: required, as store_browse_entry.text of the patient */
    const char *study;        /* series and instances */
    const char *series;       /* instances */
    bool by_number;           /* instances: only those whose InstanceNumber is NUMBER */
    int64_t number;
} store_browse_query;

/* An entry and the values that name it: UTF-8 as stored, "" when absent. Values come
 * from each level's newest instance, as QIDO's do. */
typedef struct {
    char uid[STORE_UID_MAX + 1]; /* studies, series, instances */
    char patient_id[260];        /* patients */
    char text[260];              /* patients: PatientName (first non-empty component group);
                                    studies: StudyDescription; series: SeriesDescription */
    char date[20];               /* studies: StudyDate */
    char modality[20];           /* series */
    bool has_number;             /* series: SeriesNumber; instances: InstanceNumber */
    int64_t number;
    int64_t arrival;             /* entries come in this order: first arrival first */
    int64_t updated_us;          /* when the newest instance of it was stored */
    uint64_t size;               /* instances: bytes of the object file */
    uint32_t count;              /* patients: studies; studies and series: instances */
} store_browse_entry;

/* The entries of one level, in arrival order, so a name derived from them stays stable
 * as more arrive. A study or series that does not exist has no entries (STORE_OK, 0). */
store_status store_browse(store_t *store, const store_browse_query *query, store_browse_entry **out, size_t *n,
                          store_err *err);

/* ---- Retrieve ---------------------------------------------------------------------- */

typedef struct {
    int64_t watermark;
    char study_uid[STORE_UID_MAX + 1];
    char series_uid[STORE_UID_MAX + 1];
    char sop_instance_uid[STORE_UID_MAX + 1];
    char sop_class_uid[STORE_UID_MAX + 1];
    char transfer_syntax[STORE_UID_MAX + 1];
    char object[64];          /* object file, relative to the archive directory */
    uint64_t size;            /* bytes of the object file */
    uint32_t frames;          /* NumberOfFrames (1 for single-frame images, 0 without pixels) */
    int64_t created_us;       /* when it was stored, microseconds since the epoch (UTC) */
} store_instance;

/* The instances of a study, a series (SERIES non-NULL) or one instance (SOP non-NULL),
 * ordered by series then InstanceNumber. STORE_ENOTFOUND when there are none. */
store_status store_instances(store_t *store, const char *partition, const char *study,
                             const char *series, const char *sop, store_instance **out,
                             size_t *n, store_err *err);

/* One child of the hierarchy, for listings (the mount's directories). */
typedef struct {
    char uid[STORE_UID_MAX + 1];
    int64_t updated_us;  /* when its newest instance was stored */
    uint64_t size;       /* instances: bytes of the object; others: 0 */
    uint32_t count;      /* studies and series: instances in it; instances: 1 */
} store_entry;

/* The studies of the archive (STUDY NULL), the series of a study (SERIES NULL), or the
 * instances of a series, ordered by UID. An empty list is STORE_OK; a study or series
 * that does not exist is STORE_ENOTFOUND. */
store_status store_children(store_t *store, const char *partition, const char *study, const char *series,
                            store_entry **out, size_t *n, store_err *err);

/* Opens the instance's object file read-only; -1 with errno on failure. */
int store_open_object(store_t *store, const store_instance *inst);

/* The metadata of a study, series or instance: a JSON array with one DICOM JSON object
 * per instance, the same bytes every time, and the reference's ETag for it. */
store_status store_metadata(store_t *store, const char *partition, const char *study,
                            const char *series, const char *sop, char **json, size_t *len,
                            char etag[64], store_err *err);

/* The length in bytes of what store_metadata() returns for a study or series, and its
 * ETag, without building it (the mount's metadata.json sizes). */
store_status store_metadata_size(store_t *store, const char *partition, const char *study, const char *series,
                                 uint64_t *size, char etag[64], store_err *err);

/* Where frame FRAME (1-based) of an instance lies in its object file: one range for
 * native pixel data, one per fragment for encapsulated data. STORE_ENOTFOUND when the
 * frame does not exist; STORE_EUNSUPPORTED when the offsets are unknown (deflated or
 * fragments without an offset table), in which case the frame must be decoded. */
typedef struct {
    uint64_t offset;
    uint64_t length;
} store_range;
store_status store_frame_ranges(store_t *store, const store_instance *inst, uint32_t frame,
                                store_range **ranges, size_t *n, store_err *err);

/* ---- Delete ------------------------------------------------------------------------ */

/* Deletes a study, series or instance: index rows at once (one transaction, with a
 * change-feed "delete" row per instance), object files right after the commit.
 * DELETED (may be NULL) gets the number of instances removed. */
store_status store_delete(store_t *store, const char *partition, const char *study,
                          const char *series, const char *sop, size_t *deleted, store_err *err);

/* ---- Change feed ------------------------------------------------------------------- */

typedef struct {
    int api_version;        /* 1: offset/limit are a sequence window; 2: time window + row offset */
    int64_t offset;         /* v1: entries with offset < sequence <= offset+limit; v2: rows to skip */
    int limit;              /* v1: 1..100 (default 10), v2: 1..200 (default 100) */
    int64_t start_us;       /* v2: inclusive, microseconds since the epoch; INT64_MIN for none */
    int64_t end_us;         /* v2: exclusive; INT64_MAX for none */
    bool include_metadata;  /* add the current version's DICOM JSON to live entries */
} store_changefeed_query;

/* A JSON array of change-feed entries as the reference writes them (camelCase). */
store_status store_changefeed(store_t *store, const store_changefeed_query *query, char **json,
                              store_err *err);
/* The newest entry as a JSON object; STORE_ENOTFOUND when the feed is empty. */
store_status store_changefeed_latest(store_t *store, int api_version, bool include_metadata,
                                     char **json, store_err *err);
/* Change-feed entries with sequence > AFTER (at most MAX) as JSON lines of only their
 * immutable fields (no state, no metadata), so that a log of them never changes once
 * written: the mount's changes/feed.jsonl. *LAST gets the last sequence included (AFTER
 * when none). */
store_status store_changefeed_lines(store_t *store, int64_t after, int max, char **text, size_t *len, int64_t *last,
                                    store_err *err);

/* The highest sequence number so far (0 when none). */
int64_t store_changefeed_head(store_t *store);

/* Calls FN(CTX) after each change this process commits (stores and deletes), from the
 * committing thread, once the change is durable; NULL removes it. One listener per
 * store. FN must be quick and must not call the store: faces use it to wake a thread
 * that reads the change feed (other processes' changes are seen by reading the head). */
typedef void (*store_change_fn)(void *ctx);
void store_on_change(store_t *store, store_change_fn fn, void *ctx);

/* ---- Extended query tags and operations --------------------------------------------- *
 * An extended query tag makes one more attribute searchable at a level, as the reference
 * service does (docs/ARCHITECTURE.md, "Extended query tags"). Adding tags starts a
 * reindex operation that indexes every instance stored before it, in the background and
 * in batches that each commit durably (it resumes after a crash or restart, in whichever
 * process opens the archive next); instances stored meanwhile are indexed when they are
 * committed. A tag is searchable once its status is ready and its queryStatus enabled.
 * Values of instances stored before the tag that cannot be indexed (text in a private
 * element declared SS, say) are recorded as errors and disable the tag's queries;
 * re-enabling them makes searches report the tag as erroneous. An instance stored later
 * with such a value is stored without it in the index, as v2 leaves out invalid values.
 *
 * The JSON in and out is the reference's (camelCase, null members left out). BASE is
 * prefixed to the hrefs it contains: "http://host:port/v2" over HTTP, "" elsewhere. */

#define STORE_XQT_MAX 128   /* ExtendedQueryTag:MaxAllowedCount */

/* Adds the tags of JSON, the reference's POST body: an array of {"path", "vr",
 * "privateCreator", "level"}. Every rule is checked before anything changes (STORE_EINVAL
 * with the reference's message: unknown tag or keyword, a core searchable tag, a VR that
 * is not allowed or does not match the dictionary, privateCreator missing or not allowed,
 * a sequence, duplicates, an empty array, more than STORE_XQT_MAX in all). STORE_EEXIST
 * when a tag exists already or another reindex is running (OPERATION_ID then names the
 * running one). On success OPERATION_ID (33 bytes) names the new reindex operation. */
store_status store_xqt_add(store_t *store, const char *json, size_t len, char operation_id[33], store_err *err);

/* The tags as a JSON array (limit 1..200, offset >= 0, as GET /extendedquerytags). */
store_status store_xqt_list(store_t *store, int64_t offset, int limit, const char *base, char **json,
                            store_err *err);
/* One tag by PATH: 8 hex digits or a keyword. STORE_EINVAL for a path that is neither,
 * STORE_ENOTFOUND for a tag that is not an extended query tag. */
store_status store_xqt_get(store_t *store, const char *path, const char *base, char **json, store_err *err);
/* PATCH: JSON is {"queryStatus": "enabled"|"disabled"}; *JSON_OUT the updated tag. */
store_status store_xqt_update(store_t *store, const char *path, const char *json, size_t len, const char *base,
                              char **json_out, store_err *err);
/* Removes the tag and its index values (status deleting while that runs). */
store_status store_xqt_delete(store_t *store, const char *path, store_err *err);
/* The tag's indexing errors as a JSON array: {"studyInstanceUid", "seriesInstanceUid",
 * "sopInstanceUid", "createdTime", "errorMessage"}, oldest first. */
store_status store_xqt_errors(store_t *store, const char *path, int64_t offset, int limit, char **json,
                              store_err *err);

/* An operation as JSON (asking for an unfinished one also takes it up when no process
 * runs it) ({"operationId", "type", "createdTime", "lastUpdatedTime",
 * "status", "percentComplete", "resources"}): API_VERSION 1 says "completed" where 2 says
 * "succeeded". *FINISHED tells whether it has ended (200) or not (202). STORE_ENOTFOUND
 * for an unknown id, STORE_EINVAL for an id that is not 32 hex digits (hyphens allowed). */
store_status store_operation(store_t *store, const char *id, int api_version, const char *base, char **json,
                             bool *finished, store_err *err);

/* Changes whenever a tag is added, updated or removed or a reindex makes progress, so
 * that caches of search results (the mount's /search) know when to forget them. */
int64_t store_xqt_generation(store_t *store);

/* Waits until no reindex is running or TIMEOUT_MS passed (tests, the CLI's --wait). */
store_status store_operations_wait(store_t *store, int timeout_ms, store_err *err);

/* ---- Consistency ------------------------------------------------------------------- */

typedef struct {
    size_t instances;      /* index rows checked */
    size_t objects;        /* object files found */
    size_t missing;        /* index rows whose object is missing or has the wrong size */
    size_t orphans;        /* object files no index row refers to */
    size_t bad_index;      /* study/series rows, counters or feed rows that disagree */
    size_t repaired;       /* problems fixed (with repair) */
} store_fsck_report;

/* Checks index against objects and the index against itself; LOG (may be NULL) gets one
 * line per problem. With REPAIR, deletes orphans and stale temp files. STORE_OK when
 * consistent (after repair), STORE_ECORRUPT otherwise. */
store_status store_fsck(store_t *store, bool repair, void (*log)(const char *line, void *ctx),
                        void *ctx, store_fsck_report *report, store_err *err);

#endif
