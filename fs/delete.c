/* delete.c — deleting archive content through the mount, only when it was started with
 * --allow-delete (otherwise EACCES, and the archive is untouched).
 *
 * `rm FILE.dcm` deletes that instance (in either view). `rm -r DIR` works as on any
 * filesystem: rm deletes the instances one by one, then removes the emptied folders. As
 * the last instance goes, the study or series stops existing in the store, so the
 * folders rm still has to remove are kept as "tombstones": empty folders that stay
 * visible until removed, or for TOMB_US. rmdir of a folder that still holds instances
 * is ENOTEMPTY; metadata.json goes away with its study, so unlinking it is a no-op. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define TOMB_US (60 * 1000000LL)

typedef struct tomb {
    char *path;
    int64_t until_us;
    struct tomb *next;
} tomb;

struct tombstones {
    pthread_mutex_t lock;
    tomb *head;
};

static int64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

tombstones *tombs_new(void)
{
    tombstones *t = calloc(1, sizeof *t);
    if (!t) abort();
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void tombs_free(tombstones *t)
{
    if (!t) return;
    for (tomb *x = t->head, *next; x; x = next) {
        next = x->next;
        free(x->path);
        free(x);
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* Drops expired tombstones. Caller holds the lock. */
static void sweep(tombstones *t, int64_t now)
{
    for (tomb **p = &t->head; *p;) {
        if ((*p)->until_us < now) {
            tomb *x = *p;
            *p = x->next;
            free(x->path);
            free(x);
        } else {
            p = &(*p)->next;
        }
    }
}

/* Every folder above PATH (not "/" and not the view's own root) becomes a tombstone. */
static void bury_parents(tombstones *t, const char *path)
{
    int64_t now = now_us();
    pthread_mutex_lock(&t->lock);
    sweep(t, now);
    char *p = strdup(path);
    if (!p) abort();
    for (char *slash = strrchr(p, '/'); slash && slash != p; slash = strrchr(p, '/')) {
        *slash = 0;
        if (!strchr(p + 1, '/')) break; /* "/studies", "/patients": always there */
        tomb *x = NULL;
        for (tomb *y = t->head; y && !x; y = y->next)
            if (strcmp(y->path, p) == 0) x = y;
        if (!x) {
            x = calloc(1, sizeof *x);
            if (!x) abort();
            x->path = strdup(p);
            if (!x->path) abort();
            x->next = t->head;
            t->head = x;
        }
        x->until_us = now + TOMB_US;
    }
    free(p);
    pthread_mutex_unlock(&t->lock);
}

bool tombs_has(tombstones *t, const char *path)
{
    pthread_mutex_lock(&t->lock);
    sweep(t, now_us());
    bool found = false;
    for (tomb *x = t->head; x && !found; x = x->next) found = strcmp(x->path, path) == 0;
    pthread_mutex_unlock(&t->lock);
    return found;
}

/* Removes the tombstone PATH and those below it; true when PATH was one. */
static bool unbury(tombstones *t, const char *path)
{
    size_t len = strlen(path);
    bool found = false;
    pthread_mutex_lock(&t->lock);
    for (tomb **p = &t->head; *p;) {
        tomb *x = *p;
        if (strncmp(x->path, path, len) == 0 && (x->path[len] == 0 || x->path[len] == '/')) {
            found |= x->path[len] == 0;
            *p = x->next;
            free(x->path);
            free(x);
        } else {
            p = &x->next;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

int delete_file(fs_mount *m, const char *path, const char *study, const char *series, const char *sop)
{
    if (!m->allow_delete) return -EACCES;
    if (!sop) return 0; /* metadata.json: it goes with its study */
    store_err err = {0};
    store_status st = store_delete(m->store, NULL, study, series, sop, NULL, &err);
    if (st == STORE_ENOTFOUND) return -ENOENT;
    if (st != STORE_OK) return -EIO;
    bury_parents(m->tombs, path);
    return 0;
}

int delete_folder(fs_mount *m, const char *path, bool exists)
{
    if (!m->allow_delete) return -EACCES;
    if (exists) return -ENOTEMPTY; /* still holds instances: rm -r removes them first */
    return unbury(m->tombs, path) ? 0 : -ENOENT;
}
