/* status.c — texts of the store's status codes. */
#include "status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

static const char *const texts[STORE_STATUS_COUNT] = {
    [STORE_OK] = "success",
    [STORE_EINVAL] = "invalid argument",
    [STORE_ENOTFOUND] = "not found",
    [STORE_EEXIST] = "already exists",
    [STORE_EREJECTED] = "instance rejected",
    [STORE_ETOOLARGE] = "too large",
    [STORE_EUNSUPPORTED] = "not supported",
    [STORE_EIO] = "input/output error in the archive",
    [STORE_ENOMEM] = "out of memory",
    [STORE_EBUSY] = "archive busy",
    [STORE_ECORRUPT] = "archive inconsistent",
    [STORE_ENOSPC] = "the archive's disk is full",
    [STORE_EREADONLY] = "the archive is read-only",
};

store_status store_errno_status(int e) { return e == ENOSPC || e == EDQUOT ? STORE_ENOSPC : STORE_EIO; }

const char *store_strerror(store_status status)
{
    if ((unsigned)status >= STORE_STATUS_COUNT) return "unknown status";
    return texts[status];
}

store_status store_seterr(store_err *err, store_status status, const char *fmt, ...)
{
    if (!err) return status;
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return status;
}
