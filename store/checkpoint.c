/* checkpoint.c — copying the WAL back into index.db without racing other writers.
 *
 * SQLite up to 3.51.2 (Debian 12 ships 3.40.1) has the WAL-reset bug
 * (https://sqlite.org/wal.html#walresetbug): a checkpoint that runs while another
 * connection's commit starts the WAL over can record frames as copied that were not; a
 * later checkpoint then skips them, and committed transactions are lost. The race needs
 * a checkpoint that does not hold the write lock, which is what SQLite's automatic
 * checkpoint after a commit is. The server, the mount and the CLI all write one index,
 * so none of their connections checkpoints by itself (db_open replaces the automatic
 * checkpoint with a WAL hook that only notes the WAL's length), and the store does:
 *
 *   BEGIN IMMEDIATE on the writer  -- the write lock: no connection of any process can
 *                                     start the WAL over until the ROLLBACK
 *   PASSIVE checkpoint through a second connection (s->checkpointer)
 *   ROLLBACK
 *
 * as dqlite does (it checkpoints holding the write lock). When another process holds
 * the write lock, or runs its own checkpoint, this one is left for the next commit.
 * SQLite's checkpoint when the last connection closes is safe: it holds an exclusive
 * lock on the file, so no one else is there. */
#include "internal.h"

#define CHECKPOINT_FRAMES 1000 /* SQLite's default size for its automatic checkpoint */

static int note_wal_size(void *ctx, sqlite3 *h, const char *name, int frames)
{
    (void)h;
    (void)name;
    ((db_t *)ctx)->wal_frames = frames;
    return SQLITE_OK;
}

void db_no_autocheckpoint(db_t *db)
{
    sqlite3_wal_hook(db->h, note_wal_size, db);
}

/* Write lock held. */
static void checkpoint_locked(store_t *s)
{
    if (!s->checkpointer) {
        char path[PATH_MAX];
        store_path(s, "index.db", path);
        if (!(s->checkpointer = db_open(path, false, false, NULL))) return;
    }
    if (db_exec(s->writer, "BEGIN IMMEDIATE", NULL) != SQLITE_OK) return; /* the next commit tries again */
    int frames = -1, copied = -1;
    int rc = sqlite3_wal_checkpoint_v2(s->checkpointer->h, "main", SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
    db_exec(s->writer, "ROLLBACK", NULL);
    /* Copied or not (readers on older snapshots hold frames back), the next commit's
     * hook says how long the WAL is then. */
    if (rc == SQLITE_OK && frames >= 0 && copied == frames) s->writer->wal_frames = 0;
    s->checkpoints++;
}

void store_checkpoint(store_t *s, bool force)
{
    if (s->readonly || !s->writer) return;
    /* Read without the lock: most commits leave the WAL short, and then none is needed. */
    if (!force && atomic_load(&s->writer->wal_frames) < CHECKPOINT_FRAMES) return;
    pthread_mutex_lock(&s->write_lock);
    if (force || s->writer->wal_frames >= CHECKPOINT_FRAMES) checkpoint_locked(s);
    pthread_mutex_unlock(&s->write_lock);
}
