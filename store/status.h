/* status.h — the one error model of dicomfs (after curl's CURLcode).
 * Every store call returns a store_status; faces map it to HTTP codes and errnos with
 * the single tables in their own modules. Messages travel in a store_err. */
#ifndef DICOMFS_STATUS_H
#define DICOMFS_STATUS_H

typedef enum {
    STORE_OK = 0,
    STORE_EINVAL,       /* bad argument, bad query, bad UID: the caller's fault (400) */
    STORE_ENOTFOUND,    /* no such study/series/instance/frame (404) */
    STORE_EEXIST,       /* already exists (409) */
    STORE_EREJECTED,    /* an instance was refused; the ingest result says why */
    STORE_ETOOLARGE,    /* over a size limit (413) */
    STORE_EUNSUPPORTED, /* valid, but this archive cannot do it (406/415) */
    STORE_EIO,          /* the disk or the index failed (503) */
    STORE_ENOMEM,
    STORE_EBUSY,        /* another writer held the index too long (503) */
    STORE_ECORRUPT,     /* the archive is inconsistent (fsck) */
    STORE_ENOSPC,       /* the archive's disk (or quota) is full (507; ENOSPC) */
    STORE_EREADONLY,    /* the archive cannot be written (read-only disk or folder): 503; EROFS */
    STORE_STATUS_COUNT
} store_status;

typedef struct {
    store_status status;
    char msg[512];
} store_err;

const char *store_strerror(store_status status);

/* The status of a failed system call: STORE_ENOSPC for a full disk or quota (ENOSPC,
 * EDQUOT), so that every face can say so; STORE_EIO otherwise. */
store_status store_errno_status(int e);

/* Fills ERR (may be NULL) with STATUS and a printf-style message; returns STATUS. */
store_status store_seterr(store_err *err, store_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
