/* fs_inbox.c — unit tests of the mount's inbox (fs/inbox.c) without FUSE: close() gives
 * the verdict, also for a drop whose UIDs another drop is committing at that moment;
 * a failure after close() reaches fsync() of the file and of its folder, once; NAME and
 * NAME.error are removed as two files. The store's commit thread is held at a gate (its
 * change listener) so that "at that moment" is certain, not a race. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inbox.h"
#include "testlib.h"

/* ---- The gate: the commit thread stops after its next commit until opened ---------- */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_closed, gate_holding;

static void gate(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&gate_lock);
    gate_holding = gate_closed;
    pthread_cond_broadcast(&gate_cond);
    while (gate_closed) pthread_cond_wait(&gate_cond, &gate_lock);
    gate_holding = false;
    pthread_mutex_unlock(&gate_lock);
}

static void gate_set(bool closed)
{
    pthread_mutex_lock(&gate_lock);
    gate_closed = closed;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

/* Waits until the commit thread is held at the gate. */
static void gate_wait_holding(void)
{
    pthread_mutex_lock(&gate_lock);
    while (!gate_holding) pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

/* ---- Drops ------------------------------------------------------------------------ */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    char *buf = malloc(*len + 1);
    if (!buf || fread(buf, 1, *len, f) != *len) abort();
    fclose(f);
    return buf;
}

/* cp FILE inbox/NAME: create, write, close; close()'s result. */
static int drop(inbox *ib, const char *name, const char *file)
{
    size_t len;
    char *data = slurp(file, &len);
    int rc = inbox_create(ib, name, 0644);
    for (size_t off = 0; !rc && off < len; off += 65536) {
        size_t n = len - off < 65536 ? len - off : 65536;
        int w = inbox_write(ib, name, data + off, n, (off_t)off);
        if (w < 0) rc = w;
    }
    free(data);
    if (!rc) rc = inbox_flush(ib, name);
    inbox_release(ib, name);
    return rc;
}

typedef struct {
    inbox *ib;
    const char *name, *file;
    int rc;
    pthread_t thread;
} dropper;

static void *drop_thread(void *arg)
{
    dropper *d = arg;
    d->rc = drop(d->ib, d->name, d->file);
    return NULL;
}

static char *copy_of(const char *path)
{
    char *c = strdup(path);
    if (!c) abort();
    return c;
}

/* A CT_small with SOP Instance UID SOP, other bytes when OTHER. */
static char *make(const char *name, const char *sop, bool other)
{
    char args[300];
    snprintf(args, sizeof args, "-m '(0008,0018)=%s' -m '(0020,000D)=1.2.3.55' -m '(0020,000E)=1.2.3.55.1'%s", sop,
             other ? " -m '(0010,0010)=Other^Bytes'" : "");
    return copy_of(test_make("CT_small.dcm", name, args));
}

static bool stored(store_t *s, const char *sop)
{
    store_instance *in = NULL;
    size_t n = 0;
    bool found = store_instances(s, NULL, "1.2.3.55", "1.2.3.55.1", sop, &in, &n, NULL) == STORE_OK && n == 1;
    free(in);
    return found;
}

static bool error_says(inbox *ib, const char *path, const char *words)
{
    char *text = inbox_error_text(ib, path);
    bool says = text && strstr(text, words);
    if (!says) printf("     %s: %s", path, text ? text : "(no error text)\n");
    free(text);
    return says;
}

/* ---- Rules ------------------------------------------------------------------------ */

static void same_uids_as_a_drop_being_committed_fail_at_close(store_t *s, inbox *ib)
{
    char *held = make("held.dcm", "1.2.3.55.1.1", false), *a = make("a.dcm", "1.2.3.55.1.2", false),
         *b = make("b.dcm", "1.2.3.55.1.2", true);
    gate_set(true);
    CHECK(drop(ib, "/inbox/held.dcm", held) == 0, "a drop is stored; its commit holds the commit thread");
    gate_wait_holding();
    CHECK(drop(ib, "/inbox/a.dcm", a) == 0, "a.dcm passes its check: queued behind the held commit");
    /* MR_small.dcm and MR_small_RLE.dcm of one cp -r: b.dcm (other bytes) and a second
     * a.dcm come while a.dcm is still being committed. */
    dropper other = {ib, "/inbox/b.dcm", b, 0, 0}, same = {ib, "/inbox/a-again.dcm", a, 0, 0};
    pthread_create(&other.thread, NULL, drop_thread, &other);
    pthread_create(&same.thread, NULL, drop_thread, &same);
    usleep(200 * 1000); /* lets both reach their check while a.dcm is queued (either way the verdicts hold) */
    gate_set(false);
    pthread_join(other.thread, NULL);
    pthread_join(same.thread, NULL);
    CHECK(other.rc == -EEXIST, "close() of b.dcm (same UIDs, other bytes) fails with EEXIST: %d", other.rc);
    CHECK(error_says(ib, "/inbox/b.dcm.error", "same UIDs") && error_says(ib, "/inbox/b.dcm.error", "other bytes"),
          "b.dcm.error says another file with the same UIDs but other bytes was stored");
    CHECK(same.rc == 0, "close() of a second a.dcm (the same bytes) succeeds: %d", same.rc);
    CHECK(inbox_error_text(ib, "/inbox/a-again.dcm.error") == NULL, "and it has no .error");
    CHECK(inbox_sync(ib, "/inbox") == 0, "sync of the inbox then succeeds: no failure came after a close() said 0");
    CHECK(inbox_fsync(ib, "/inbox/a.dcm") == 0 && stored(s, "1.2.3.55.1.2"), "a.dcm is stored");
    free(held);
    free(a);
    free(b);
}

static void a_late_failure_reaches_fsync_and_sync_once(store_t *s, inbox *ib)
{
    char *held = make("held2.dcm", "1.2.3.55.1.3", false), *c = make("c.dcm", "1.2.3.55.1.4", false),
         *d = make("d.dcm", "1.2.3.55.1.4", true);
    store_err err = {0};
    store_t *other = store_open(store_dir(s), 0, &err); /* another process, as far as the inbox knows */
    CHECK(other != NULL, "the archive opens a second time: %s", err.msg);
    if (!other) return;
    gate_set(true);
    CHECK(inbox_mkdir(ib, "/inbox/late", 0755) == 0, "mkdir inbox/late");
    CHECK(drop(ib, "/inbox/held2.dcm", held) == 0, "a drop holds the commit thread");
    gate_wait_holding();
    CHECK(drop(ib, "/inbox/late/c.dcm", c) == 0, "c.dcm passes its check: queued behind the held commit");
    store_ingest_result r;
    store_ingest_path(other, d, NULL, &r);
    CHECK(r.status == STORE_OK, "meanwhile another process stores the same UIDs with other bytes: %s", r.message);
    store_ingest_result_clear(&r);
    gate_set(false);
    CHECK(inbox_sync(ib, "/inbox/late") == -EIO, "sync of c.dcm's folder fails with EIO: c.dcm failed after its close()");
    CHECK(inbox_sync(ib, "/inbox/late") == 0, "a second sync succeeds: a late failure is told once");
    CHECK(inbox_fsync(ib, "/inbox/late/c.dcm") == -EEXIST, "fsync of c.dcm gives its verdict, EEXIST");
    CHECK(error_says(ib, "/inbox/late/c.dcm.error", "other bytes"), "c.dcm.error says the stored one has other bytes");
    store_close(other);
    free(held);
    free(c);
    free(d);
}

static void error_files_are_removed_as_files_of_their_own(store_t *s, inbox *ib)
{
    (void)s;
    const char *text = test_write("notes.txt", "these are notes, not DICOM\n", 27);
    char *notes = copy_of(text);
    struct stat st;
    CHECK(inbox_mkdir(ib, "/inbox/cd", 0755) == 0, "mkdir inbox/cd");
    CHECK(drop(ib, "/inbox/cd/README", notes) == -EBADMSG, "a README fails at close with EBADMSG");
    /* rm -r: NAME first, then NAME.error, then the folder. */
    CHECK(inbox_unlink(ib, "/inbox/cd/README") == 0, "rm NAME succeeds");
    CHECK(inbox_stat(ib, "/inbox/cd/README", &st) == -ENOENT, "NAME is gone");
    CHECK(inbox_stat(ib, "/inbox/cd/README.error", &st) == 0, "NAME.error stays, as a file of its own");
    CHECK(inbox_rmdir(ib, "/inbox/cd") == -ENOTEMPTY, "so the folder is not empty yet");
    CHECK(inbox_unlink(ib, "/inbox/cd/README.error") == 0, "rm NAME.error then succeeds");
    CHECK(inbox_stat(ib, "/inbox/cd/README.error", &st) == -ENOENT, "and it is gone");
    CHECK(inbox_rmdir(ib, "/inbox/cd") == 0, "and the folder can be removed");
    /* rm NAME.error first, then NAME */
    CHECK(drop(ib, "/inbox/README", notes) == -EBADMSG, "another README fails");
    CHECK(inbox_unlink(ib, "/inbox/README.error") == 0 && inbox_unlink(ib, "/inbox/README") == 0,
          "rm NAME.error, then rm NAME, succeed");
    CHECK(inbox_stat(ib, "/inbox/README", &st) == -ENOENT && inbox_stat(ib, "/inbox/README.error", &st) == -ENOENT,
          "and both are gone");
    free(notes);
}

static void error_text_says_the_reason_once(store_t *s, inbox *ib)
{
    (void)s;
    char *nopid = copy_of(test_make("CT_small.dcm", "nopid.dcm", "-ea '(0010,0020)' -m '(0008,0018)=1.2.3.55.9'"));
    CHECK(drop(ib, "/inbox/nopid.dcm", nopid) == -EINVAL, "an instance without PatientID fails with EINVAL");
    char *text = inbox_error_text(ib, "/inbox/nopid.dcm.error");
    const char *line = "PatientID is missing";
    char *first = text ? strstr(text, line) : NULL;
    CHECK(first && !strstr(first + 1, line), "nopid.dcm.error says 'PatientID is missing' once: %s", text ? text : "");
    free(text);
    free(nopid);
}

int main(void)
{
    store_t *s = test_archive("a");
    if (!s) return 1;
    store_on_change(s, gate, NULL);
    inbox *ib = inbox_new(s, 600, false);
    same_uids_as_a_drop_being_committed_fail_at_close(s, ib);
    a_late_failure_reaches_fsync_and_sync_once(s, ib);
    error_files_are_removed_as_files_of_their_own(s, ib);
    error_text_says_the_reason_once(s, ib);
    inbox_free(ib);
    store_on_change(s, NULL, NULL);
    store_close(s);
    return test_summary();
}
