/* inbox.h — files and folders dropped into the mount, and what became of them.
 *
 * A dropped file is an upload while it is written; on its first flush (close) it is
 * checked and its commit queued (durable at fsync, see inbox.c), and the verdict (0, or
 * an errno with a reason) is kept so that
 * every later flush of the same file answers the same, the name stays visible with its
 * size and bytes (the copying program sees success), and NAME.error explains a failure
 * (a file of its own: it stays when NAME is removed, until it is removed too).
 * Stored files are forgotten KEEP_SECONDS after they were stored; failures stay until
 * they are removed.
 * Thread-safe: one mutex guards the table. */
#ifndef DICOMFS_FS_INBOX_H
#define DICOMFS_FS_INBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "store.h"

typedef struct inbox inbox;

/* SYNC_CLOSE: close() waits for durability and reports late failures, as fsync() does. */
inbox *inbox_new(store_t *store, unsigned keep_seconds, bool sync_close);
void inbox_free(inbox *ib);

/* Entries are keyed by their path in the mount ("/inbox/cd/IM0001", "/x.dcm"). */
int inbox_create(inbox *ib, const char *path, mode_t mode);   /* 0 or -errno */
int inbox_mkdir(inbox *ib, const char *path, mode_t mode);
int inbox_write(inbox *ib, const char *path, const char *buf, size_t len, off_t off);
int inbox_truncate(inbox *ib, const char *path, off_t size);
int inbox_read(inbox *ib, const char *path, char *buf, size_t len, off_t off);
/* Checks the file and queues its commit if not done yet; the verdict, every time. */
int inbox_flush(inbox *ib, const char *path);
/* After the last close: finishes a file no flush finished (one left empty). */
void inbox_release(inbox *ib, const char *path);
/* Finishes the file, then waits until it is committed (durable): its final verdict. */
int inbox_fsync(inbox *ib, const char *path);
/* Waits until every queued commit has finished: 0, or -EIO when a file under DIR ("/"
 * for all) failed after close() said it would be stored and no fsync told so yet. */
int inbox_sync(inbox *ib, const char *dir);
int inbox_unlink(inbox *ib, const char *path);
int inbox_rmdir(inbox *ib, const char *path);
int inbox_rename(inbox *ib, const char *from, const char *to);
int inbox_setmode(inbox *ib, const char *path, mode_t mode);
int inbox_settime(inbox *ib, const char *path, const struct timespec tv[2]);

/* 0 and ST filled when PATH is an entry (or "NAME.error" of a failed one), -ENOENT. */
int inbox_stat(inbox *ib, const char *path, struct stat *st);
/* The text of a NAME.error file; malloc'd, NULL when none. */
char *inbox_error_text(inbox *ib, const char *path);
/* Calls FILL for each child name of directory DIR ("/inbox", "/"). */
void inbox_list(inbox *ib, const char *dir, void (*fill)(void *ctx, const char *name, const struct stat *st), void *ctx);

#endif
