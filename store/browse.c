/* browse.c — the archive by patient: patients, their studies, a study's series and a
 * series' instances, with the values that name them (the mount's /patients view).
 *
 * Values come from the precomputed attrs JSON of each level's newest instance ("latest
 * wins", like QIDO), read with SQLite's json_extract so that no JSON reaches C. A patient
 * is a (PatientID, PatientName) pair as recorded; candidates for one PatientID come from
 * the ix_text index, so looking up one patient never scans the archive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "normalize.h"

#define PID "coalesce(json_extract(i.attrs, '$.\"00100020\".Value[0]'), '')"
#define PNAME                                                                                                   \
    "coalesce(json_extract(i.attrs, '$.\"00100010\".Value[0].Alphabetic'),"                                    \
    " json_extract(i.attrs, '$.\"00100010\".Value[0].Ideographic'),"                                           \
    " json_extract(i.attrs, '$.\"00100010\".Value[0].Phonetic'), '')"
#define VALUE(tag) "json_extract(i.attrs, '$.\"" tag "\".Value[0]')"

static void copy(char *dst, size_t cap, const unsigned char *src)
{
    snprintf(dst, cap, "%s", src ? (const char *)src : "");
}

/* The SQL of a query; the patient filter picks candidates from ix_text when it can. */
static char *browse_sql(const store_browse_query *q, bool use_index)
{
    char *sql = NULL;
    const char *pid_filter = use_index ? " AND st.key IN (SELECT key FROM ix_text WHERE tag=1048608 AND value=?2)"
                                       : "";
    int rc = -1;
    switch (q->level) {
    case STORE_BROWSE_PATIENTS:
        rc = asprintf(&sql,
                      "SELECT " PID ", " PNAME ", min(st.key), max(i.created_us), count(*)"
                      " FROM study st JOIN instance i ON i.watermark=st.rep WHERE st.partition=?1%s%s"
                      " GROUP BY 1, 2 ORDER BY 3",
                      pid_filter, q->patient_id ? " AND " PID "=?3" : "");
        break;
    case STORE_BROWSE_STUDIES:
        rc = asprintf(&sql,
                      "SELECT st.uid, coalesce(" VALUE("00080020") ", ''), coalesce(" VALUE("00081030") ", ''),"
                      " st.key, i.created_us, st.instance_count"
                      " FROM study st JOIN instance i ON i.watermark=st.rep WHERE st.partition=?1%s"
                      " AND " PID "=?3 AND " PNAME "=?4 ORDER BY st.key",
                      pid_filter);
        break;
    case STORE_BROWSE_SERIES:
        rc = asprintf(&sql, "%s",
                      "SELECT se.uid, coalesce(se.modality, ''), " VALUE("00200011") ", coalesce(" VALUE("0008103E") ", ''),"
                      " se.key, i.created_us, se.instance_count"
                      " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.watermark=se.rep"
                      " WHERE st.partition=?1 AND st.uid=?5 ORDER BY se.key");
        break;
    case STORE_BROWSE_INSTANCES:
        rc = asprintf(&sql,
                      "SELECT i.uid, i.instance_number, i.watermark, i.created_us, i.size"
                      " FROM study st JOIN series se ON se.study=st.key JOIN instance i ON i.series=se.key"
                      " WHERE st.partition=?1 AND st.uid=?5 AND se.uid=?6%s ORDER BY i.watermark",
                      q->by_number ? " AND i.instance_number=?7" : "");
        break;
    }
    if (rc < 0) abort();
    return sql;
}

static void read_row(const store_browse_query *q, sqlite3_stmt *st, store_browse_entry *e)
{
    memset(e, 0, sizeof *e);
    switch (q->level) {
    case STORE_BROWSE_PATIENTS:
        copy(e->patient_id, sizeof e->patient_id, sqlite3_column_text(st, 0));
        copy(e->text, sizeof e->text, sqlite3_column_text(st, 1));
        e->arrival = sqlite3_column_int64(st, 2);
        e->updated_us = sqlite3_column_int64(st, 3);
        e->count = (uint32_t)sqlite3_column_int64(st, 4);
        break;
    case STORE_BROWSE_STUDIES:
        copy(e->uid, sizeof e->uid, sqlite3_column_text(st, 0));
        copy(e->date, sizeof e->date, sqlite3_column_text(st, 1));
        copy(e->text, sizeof e->text, sqlite3_column_text(st, 2));
        e->arrival = sqlite3_column_int64(st, 3);
        e->updated_us = sqlite3_column_int64(st, 4);
        e->count = (uint32_t)sqlite3_column_int64(st, 5);
        break;
    case STORE_BROWSE_SERIES:
        copy(e->uid, sizeof e->uid, sqlite3_column_text(st, 0));
        copy(e->modality, sizeof e->modality, sqlite3_column_text(st, 1));
        e->has_number = sqlite3_column_type(st, 2) == SQLITE_INTEGER;
        e->number = e->has_number ? sqlite3_column_int64(st, 2) : 0;
        copy(e->text, sizeof e->text, sqlite3_column_text(st, 3));
        e->arrival = sqlite3_column_int64(st, 4);
        e->updated_us = sqlite3_column_int64(st, 5);
        e->count = (uint32_t)sqlite3_column_int64(st, 6);
        break;
    case STORE_BROWSE_INSTANCES:
        copy(e->uid, sizeof e->uid, sqlite3_column_text(st, 0));
        e->has_number = sqlite3_column_type(st, 1) == SQLITE_INTEGER;
        e->number = e->has_number ? sqlite3_column_int64(st, 1) : 0;
        e->arrival = sqlite3_column_int64(st, 2);
        e->updated_us = sqlite3_column_int64(st, 3);
        e->size = (uint64_t)sqlite3_column_int64(st, 4);
        e->count = 1;
        break;
    }
}

store_status store_browse(store_t *s, const store_browse_query *q, store_browse_entry **out, size_t *n,
                          store_err *err)
{
    *out = NULL;
    *n = 0;
    if (q->level == STORE_BROWSE_STUDIES && (!q->patient_id || !q->patient_name))
        return store_seterr(err, STORE_EINVAL, "the studies of a patient need its PatientID and PatientName");
    if (q->level >= STORE_BROWSE_SERIES && !store_valid_uid(q->study))
        return store_seterr(err, STORE_EINVAL, "'%s' is not a valid StudyInstanceUID", q->study ? q->study : "");
    if (q->level == STORE_BROWSE_INSTANCES && !store_valid_uid(q->series))
        return store_seterr(err, STORE_EINVAL, "'%s' is not a valid SeriesInstanceUID", q->series ? q->series : "");

    /* ix_text holds folded, non-empty values; an empty PatientID has no index rows. */
    char *folded = q->patient_id && q->level <= STORE_BROWSE_STUDIES ? norm_fold(q->patient_id) : NULL;
    bool use_index = folded && *folded;
    char *sql = browse_sql(q, use_index);

    db_t *db = db_get(s, err);
    if (!db) {
        free(sql);
        free(folded);
        return STORE_EIO;
    }
    store_status rc = STORE_OK;
    int64_t part = partition_key(db, q->partition ? q->partition : STORE_DEFAULT_PARTITION, false);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errmsg(db->h));
    } else {
        sqlite3_bind_int64(st, 1, part);
        if (use_index) sqlite3_bind_text(st, 2, folded, -1, SQLITE_STATIC);
        if (q->patient_id) sqlite3_bind_text(st, 3, q->patient_id, -1, SQLITE_STATIC);
        if (q->patient_name) sqlite3_bind_text(st, 4, q->patient_name, -1, SQLITE_STATIC);
        if (q->study) sqlite3_bind_text(st, 5, q->study, -1, SQLITE_STATIC);
        if (q->series) sqlite3_bind_text(st, 6, q->series, -1, SQLITE_STATIC);
        if (q->by_number) sqlite3_bind_int64(st, 7, q->number);
        size_t cap = 0;
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = realloc(*out, cap * sizeof **out);
                if (!*out) abort();
            }
            read_row(q, st, &(*out)[(*n)++]);
        }
        if (step != SQLITE_DONE) rc = store_seterr(err, STORE_EIO, "index: %s", sqlite3_errstr(step));
    }
    sqlite3_finalize(st);
    db_put(s, db);
    free(sql);
    free(folded);
    if (rc != STORE_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}
