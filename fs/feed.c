/* feed.c — changes/feed.jsonl: one immutable line per change, so the file only grows
 * and tail -f follows it. The mount keeps where each line starts (16 bytes per change)
 * and asks the store only for changes it has not seen; reads regenerate just the lines
 * they cover. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Indexes the changes stored since the last call; 0 or -EIO. Caller holds feed->lock. */
static int feed_refresh(fs_mount *m, feed_index *f)
{
    for (;;) {
        char *text = NULL;
        size_t len = 0;
        int64_t last = f->last;
        if (store_changefeed_lines(m->store, f->last, 1000, &text, &len, &last, NULL) != STORE_OK) {
            free(text);
            return -EIO;
        }
        for (char *line = text; line < text + len;) {
            char *nl = memchr(line, '\n', (size_t)(text + len - line));
            if (!nl) break;
            if (f->n == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 1024;
                f->seq = realloc(f->seq, f->cap * sizeof *f->seq);
                f->start = realloc(f->start, f->cap * sizeof *f->start);
                if (!f->seq || !f->start) abort();
            }
            f->seq[f->n] = strtoll(line + strlen("{\"sequence\":"), NULL, 10);
            f->start[f->n++] = f->size;
            f->size += (uint64_t)(nl + 1 - line);
            line = nl + 1;
        }
        free(text);
        bool more = last != f->last && len > 0;
        f->last = last;
        if (!more) return 0;
    }
}

int feed_size(fs_mount *m, uint64_t *size)
{
    feed_index *f = &m->feed;
    pthread_mutex_lock(&f->lock);
    int rc = feed_refresh(m, f);
    *size = f->size;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

int feed_read(fs_mount *m, char *buf, size_t size, off_t off)
{
    feed_index *f = &m->feed;
    pthread_mutex_lock(&f->lock);
    int rc = feed_refresh(m, f);
    if (rc || (uint64_t)off >= f->size || f->n == 0) {
        pthread_mutex_unlock(&f->lock);
        return rc;
    }
    size_t lo = 0, hi = f->n - 1; /* the last line starting at or before off */
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        if (f->start[mid] <= (uint64_t)off) lo = mid;
        else hi = mid - 1;
    }
    size_t lines = 0;
    while (lo + lines < f->n && f->start[lo + lines] < (uint64_t)off + size) lines++;
    int64_t after = f->seq[lo] - 1;
    uint64_t first = f->start[lo];
    pthread_mutex_unlock(&f->lock);

    char *text = NULL;
    size_t len = 0;
    int64_t last;
    if (store_changefeed_lines(m->store, after, (int)lines, &text, &len, &last, NULL) != STORE_OK) {
        free(text);
        return -EIO;
    }
    size_t skip = (size_t)((uint64_t)off - first), n = 0;
    if (skip < len) {
        n = len - skip < size ? len - skip : size;
        memcpy(buf, text + skip, n);
    }
    free(text);
    return (int)n;
}

void feed_free(feed_index *f)
{
    free(f->seq);
    free(f->start);
    pthread_mutex_destroy(&f->lock);
}
