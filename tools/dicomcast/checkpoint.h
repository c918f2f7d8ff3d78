/* checkpoint.h — the durable position in the change feed: the highest sequence whose entry
 * is done (synced, skipped or logged as failed). Everything at or below it is never
 * processed again; everything above it is (replays are idempotent, see sync.h).
 *
 * The state file is JSON, {"syncedSequence": N, "dicomweb": URL, "fhir": URL}, written as
 * the reference's SyncStateTable row is: after every entry. Writes are atomic: a temp file
 * beside it, fsync, rename, fsync of the directory, so that kill -9 or a power cut leaves
 * either the old or the new position, never a torn file. */
#ifndef DICOMCAST_CHECKPOINT_H
#define DICOMCAST_CHECKPOINT_H

#include <stddef.h>

/* Reads PATH into *seq (0 when PATH does not exist). Returns 0, or -1 with ERR filled
 * (unreadable, not JSON, no syncedSequence, or written for other DICOMWEB/FHIR URLs: a
 * state file must not silently move to another pair of servers). */
int checkpoint_load(const char *path, const char *dicomweb, const char *fhir, long long *seq,
                    char *err, size_t errlen);

/* Writes SEQ to PATH atomically. Returns 0, or -1 with ERR filled. */
int checkpoint_save(const char *path, const char *dicomweb, const char *fhir, long long seq,
                    char *err, size_t errlen);

#endif
