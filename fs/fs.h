/* fs.h — the archive as a folder (FUSE): drop DICOM files in to store them, browse the
 * archive with ls and cat.
 *
 *   /                      drops are accepted here too
 *   /inbox/...             drop files or whole folders (mkdir works); each file is stored
 *                          when closed, and close() fails with a reason cp reports when it
 *                          is not a valid instance (NAME.error then says why)
 *   /studies/<study>/metadata.json                      = WADO-RS study metadata
 *   /studies/<study>/series/<series>/metadata.json
 *   /studies/<study>/series/<series>/instances/<sop>.dcm the stored bytes
 *   /changes/latest.json, /changes/<sequence>.json      = the change feed
 *   /changes/feed.jsonl     one line per change, only ever grows (tail -f follows it)
 *   /extended-query-tags/<path>.json   an extended query tag (GET); write {"queryStatus":..}
 *                           to update it, rm it (--allow-delete) to delete it; a JSON array
 *                           written to a new NAME.json adds tags (close() gives the verdict,
 *                           NAME.json.error says why it failed)
 *   /operations/<id>.json   a reindex operation's progress
 *
 * One mount serves one store from its own threads (libfuse's multi-threaded loop). */
#ifndef DICOMFS_FS_H
#define DICOMFS_FS_H

#include <stdbool.h>

#include "store.h"

typedef struct fs_mount fs_mount;

#define FS_INBOX_KEEP 600 /* seconds */

typedef struct {
    bool allow_other;  /* let other users in (with default_permissions) */
    bool allow_delete; /* rm and rm -r of archive content delete it from the archive */
    unsigned inbox_keep; /* seconds a stored drop stays listed (0: FS_INBOX_KEEP) */
    bool sync_close;     /* close() of a drop returns once it is durable (else: at fsync) */
} fs_options;

/* Mounts STORE at MOUNTPOINT and serves it from a thread; NULL with ERR on failure.
 * When the mount is taken away from outside (fusermount3 -u, umount), the process gets
 * SIGUSR1, so a program waiting for signals can end too. */
fs_mount *fs_mount_start(store_t *store, const char *mountpoint, const fs_options *opts, store_err *err);
/* Unmounts (lazily when busy) and waits for the serving thread. NULL is a no-op. */
void fs_mount_stop(fs_mount *m);

#endif
