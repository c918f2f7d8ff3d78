/* notify.c — keeps the kernel's caches honest. The kernel keeps entries and attributes
 * for a second; when the archive changes (through this mount, over HTTP in this process,
 * or by another process) this thread tells it to forget what the change made stale:
 * the study's and series' folders and metadata.json, the instance file (page cache
 * too: a deleted instance may be stored again with other bytes), and the change files;
 * and when an extended query tag changes (store_xqt_generation), the tag files.
 *
 * It wakes when this process commits a change (store_on_change) and otherwise polls
 * the change feed's head every POLL_MS for other processes' changes. Invalidation runs
 * here, never in a FUSE call: the kernel may hold the locks it needs for it there. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define POLL_MS 50
#define BATCH 1000

struct notifier {
    fs_mount *m;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool changed, stop;
    int64_t seen; /* the last sequence handled */
    int64_t xqt;  /* the extended query tags' generation handled */
};

static void on_change(void *ctx)
{
    notifier *n = ctx;
    pthread_mutex_lock(&n->lock);
    n->changed = true;
    pthread_cond_signal(&n->wake);
    pthread_mutex_unlock(&n->lock);
}

static void forget(fs_mount *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void forget(fs_mount *m, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    fuse_invalidate_path(m->fuse, path); /* -ENOENT: nothing cached, nothing to do */
}

/* Handles the changes after N->seen; false when there was nothing new. */
static bool handle_new(notifier *n)
{
    fs_mount *m = n->m;
    if (store_changefeed_head(m->store) <= n->seen) return false;
    char *text = NULL;
    size_t len = 0;
    int64_t last = n->seen;
    if (store_changefeed_lines(m->store, n->seen, BATCH, &text, &len, &last, NULL) != STORE_OK) {
        free(text);
        return false;
    }
    char prev_study[STORE_UID_MAX + 1] = "", prev_series[STORE_UID_MAX + 1] = "";
    for (char *line = text; line && line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        json_t *e = json_loadb(line, nl ? (size_t)(nl - line) : (size_t)(text + len - line), 0, NULL);
        const char *st = json_string_value(json_object_get(e, "studyInstanceUid"));
        const char *se = json_string_value(json_object_get(e, "seriesInstanceUid"));
        const char *sop = json_string_value(json_object_get(e, "sopInstanceUid"));
        if (st && se && sop) {
            forget(m, "/studies/%s/series/%s/instances/%s.dcm", st, se, sop);
            /* consecutive changes are mostly in one series: its folders once per run */
            if (strcmp(st, prev_study) != 0 || strcmp(se, prev_series) != 0) {
                forget(m, "/studies/%s", st);
                forget(m, "/studies/%s/metadata.json", st);
                forget(m, "/studies/%s/series", st);
                forget(m, "/studies/%s/series/%s", st, se);
                forget(m, "/studies/%s/series/%s/metadata.json", st, se);
                forget(m, "/studies/%s/series/%s/instances", st, se);
                snprintf(prev_study, sizeof prev_study, "%s", st);
                snprintf(prev_series, sizeof prev_series, "%s", se);
            }
        }
        json_decref(e);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    forget(m, "/changes/latest.json");
    forget(m, "/changes/feed.jsonl");
    forget(m, "/changes");
    n->seen = last;
    return true;
}

/* A tag was added, changed or removed, or a reindex moved on: its file's size and the
 * folder's listing changed. False when nothing did. */
static bool handle_xqt(notifier *n)
{
    fs_mount *m = n->m;
    int64_t gen = store_xqt_generation(m->store);
    if (gen == n->xqt) return false;
    n->xqt = gen;
    char *text = NULL;
    if (store_xqt_list(m->store, 0, 200, "", &text, NULL) == STORE_OK) {
        json_t *tags = json_loads(text, 0, NULL);
        size_t i;
        json_t *t;
        json_array_foreach(tags, i, t) {
            const char *path = json_string_value(json_object_get(t, "path"));
            if (path) forget(m, "/extended-query-tags/%s.json", path);
        }
        json_decref(tags);
    }
    free(text);
    forget(m, "/extended-query-tags");
    forget(m, "/operations");
    return true;
}

static void *notify_main(void *arg)
{
    notifier *n = arg;
    pthread_mutex_lock(&n->lock);
    while (!n->stop) {
        if (!n->changed) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += POLL_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&n->wake, &n->lock, &until);
        }
        if (n->stop) break;
        n->changed = false;
        pthread_mutex_unlock(&n->lock);
        while (handle_new(n)) {} /* until caught up, a batch at a time */
        handle_xqt(n);
        pthread_mutex_lock(&n->lock);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

notifier *notify_start(fs_mount *m)
{
    notifier *n = calloc(1, sizeof *n);
    if (!n) abort();
    n->m = m;
    n->seen = store_changefeed_head(m->store);
    n->xqt = store_xqt_generation(m->store);
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->wake, NULL);
    if (pthread_create(&n->thread, NULL, notify_main, n) != 0) {
        pthread_mutex_destroy(&n->lock);
        pthread_cond_destroy(&n->wake);
        free(n);
        return NULL;
    }
    store_on_change(m->store, on_change, n);
    return n;
}

void notify_stop(notifier *n)
{
    if (!n) return;
    store_on_change(n->m->store, NULL, NULL);
    pthread_mutex_lock(&n->lock);
    n->stop = true;
    pthread_cond_signal(&n->wake);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->thread, NULL);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->wake);
    free(n);
}
