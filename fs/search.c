/* search.c — search folders: /search/<level>/<query>/, where QUERY is a QIDO-RS query
 * string ("PatientName=DOE*&StudyDate=20200101-20201231") and the entries are symbolic
 * links to the matching studies, series or instances under /studies.
 *
 * A bad query is EINVAL (ls: "Invalid argument"); "<query>.error" beside it then says
 * why. A query folder lists every match up to SEARCH_MAX, or the query's own limit. Results
 * are kept for the few most recent queries and reused while the change feed's head has
 * not moved and no extended query tag changed (store_xqt_generation: a tag added, made
 * ready, disabled or removed changes what a query may use and what it matches), so
 * `ls -l` (one lookup per entry) runs the query once. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SEARCH_MAX 100000 /* entries of one query folder */
#define CACHE_SLOTS 8

typedef struct {
    char *name;   /* "<uid>" or "<sop>.dcm" */
    char *target; /* "../../../studies/..." */
} search_entry;

typedef struct {
    char *key;   /* "<level>/<query>" */
    int64_t head; /* the change feed's head when computed */
    int64_t xqt;  /* and the extended query tags' generation */
    uint64_t used; /* for eviction: the least recently used slot goes */
    search_entry *e;
    size_t n;
    size_t *sorted; /* indexes of e by name */
} search_result;

struct search_cache {
    pthread_mutex_t lock;
    search_result slot[CACHE_SLOTS];
    uint64_t clock;
};

search_cache *search_new(void)
{
    search_cache *c = calloc(1, sizeof *c);
    if (!c) abort();
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

static void result_clear(search_result *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->e[i].name);
        free(r->e[i].target);
    }
    free(r->e);
    free(r->sorted);
    free(r->key);
    memset(r, 0, sizeof *r);
}

void search_free(search_cache *c)
{
    if (!c) return;
    for (int i = 0; i < CACHE_SLOTS; i++) result_clear(&c->slot[i]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static bool parse_level(const char *level, store_level *out)
{
    if (strcmp(level, "studies") == 0) *out = STORE_LEVEL_STUDY;
    else if (strcmp(level, "series") == 0) *out = STORE_LEVEL_SERIES;
    else if (strcmp(level, "instances") == 0) *out = STORE_LEVEL_INSTANCE;
    else return false;
    return true;
}

/* Percent-decodes S in place ('+' stays: it is a valid character in DICOM values). */
static void decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
}

/* Runs QUERY; fills R (entries in QIDO's order: newest first). */
static int run(fs_mount *m, store_level level, const char *query, search_result *r, store_err *err)
{
    char *copy = strdup(query);
    if (!copy) abort();
    store_param params[64];
    size_t np = 0;
    for (char *save = NULL, *pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
        if (np == 64) {
            free(copy);
            store_seterr(err, STORE_EINVAL, "too many query parameters (at most 64)");
            return -EINVAL;
        }
        char *eq = strchr(pair, '=');
        if (eq) *eq = 0;
        decode(pair);
        if (eq) decode(eq + 1);
        params[np++] = (store_param){pair, eq ? eq + 1 : ""};
    }
    store_query q = {.level = level, .params = params, .n_params = np};
    store_ref *refs = NULL;
    size_t n = 0;
    store_status st = store_find_refs(m->store, &q, SEARCH_MAX, &refs, &n, err);
    free(copy);
    if (st != STORE_OK) return st == STORE_EINVAL ? -EINVAL : -EIO;
    r->e = calloc(n ? n : 1, sizeof *r->e);
    r->sorted = calloc(n ? n : 1, sizeof *r->sorted);
    if (!r->e || !r->sorted) abort();
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        const store_ref *f = &refs[i];
        int a, b;
        if (level == STORE_LEVEL_STUDY) {
            a = asprintf(&r->e[i].name, "%s", f->study_uid);
            b = asprintf(&r->e[i].target, "../../../studies/%s", f->study_uid);
        } else if (level == STORE_LEVEL_SERIES) {
            a = asprintf(&r->e[i].name, "%s", f->series_uid);
            b = asprintf(&r->e[i].target, "../../../studies/%s/series/%s", f->study_uid, f->series_uid);
        } else {
            a = asprintf(&r->e[i].name, "%s.dcm", f->sop_instance_uid);
            b = asprintf(&r->e[i].target, "../../../studies/%s/series/%s/instances/%s.dcm", f->study_uid,
                         f->series_uid, f->sop_instance_uid);
        }
        if (a < 0 || b < 0) abort();
        r->sorted[i] = i;
    }
    free(refs);
    return 0;
}

static int by_name(const void *a, const void *b, void *entries)
{
    const search_entry *e = entries;
    return strcmp(e[*(const size_t *)a].name, e[*(const size_t *)b].name);
}

/* The same UID can name two series (in different studies) or two instances: the later
 * ones get " ~2", " ~3"... so that every entry has a name of its own. */
static void sort_and_dedupe(search_result *r)
{
    qsort_r(r->sorted, r->n, sizeof *r->sorted, by_name, r->e);
    for (size_t g = 0; g < r->n;) {
        size_t h = g + 1;
        while (h < r->n && strcmp(r->e[r->sorted[g]].name, r->e[r->sorted[h]].name) == 0) h++;
        for (size_t k = g + 1; k < h; k++) {
            search_entry *e = &r->e[r->sorted[k]];
            char *dot = strstr(e->name, ".dcm");
            char *renamed;
            if (asprintf(&renamed, "%.*s ~%zu%s", (int)(dot ? dot - e->name : (long)strlen(e->name)), e->name,
                         k - g + 1, dot ? ".dcm" : "") < 0)
                abort();
            free(e->name);
            e->name = renamed;
        }
        g = h;
    }
    qsort_r(r->sorted, r->n, sizeof *r->sorted, by_name, r->e);
}

/* The current result of LEVEL/QUERY, computed or cached; returns the slot with the
 * cache lock held (release with pthread_mutex_unlock), or NULL and -errno in *RC. */
static search_result *lookup(fs_mount *m, const char *level, const char *query, int *rc, char **why)
{
    store_level lv;
    if (!parse_level(level, &lv)) {
        *rc = -ENOENT;
        return NULL;
    }
    search_cache *c = m->search;
    char *key;
    if (asprintf(&key, "%s/%s", level, query) < 0) abort();
    int64_t head = store_changefeed_head(m->store), xqt = store_xqt_generation(m->store);
    pthread_mutex_lock(&c->lock);
    search_result *r = NULL;
    for (int i = 0; i < CACHE_SLOTS && !r; i++)
        if (c->slot[i].key && c->slot[i].head == head && c->slot[i].xqt == xqt && strcmp(c->slot[i].key, key) == 0)
            r = &c->slot[i];
    if (!r) {
        r = &c->slot[0];
        for (int i = 1; i < CACHE_SLOTS; i++)
            if (c->slot[i].used < r->used) r = &c->slot[i];
        result_clear(r);
        store_err err = {0};
        *rc = run(m, lv, query, r, &err);
        if (*rc) {
            if (*rc == -EINVAL && why) {
                *why = NULL;
                if (asprintf(why, "%s\n", err.msg) < 0) abort();
            }
            result_clear(r);
            pthread_mutex_unlock(&c->lock);
            free(key);
            return NULL;
        }
        sort_and_dedupe(r);
        r->key = key;
        r->head = head;
        r->xqt = xqt;
        key = NULL;
    }
    free(key);
    r->used = ++c->clock;
    *rc = 0;
    return r;
}

int search_check(fs_mount *m, const char *level, const char *query, char **why)
{
    int rc;
    search_result *r = lookup(m, level, query, &rc, why);
    if (r) pthread_mutex_unlock(&m->search->lock);
    return rc;
}

int search_list(fs_mount *m, const char *level, const char *query, fs_fill_fn fill, void *ctx)
{
    int rc;
    search_result *r = lookup(m, level, query, &rc, NULL);
    if (!r) return rc;
    for (size_t i = 0; i < r->n; i++) {
        struct stat st;
        fs_link_stat(&st, strlen(r->e[i].target), m->started_us);
        fill(ctx, r->e[i].name, &st);
    }
    pthread_mutex_unlock(&m->search->lock);
    return 0;
}

int search_link(fs_mount *m, const char *level, const char *query, const char *name, char **target)
{
    int rc;
    search_result *r = lookup(m, level, query, &rc, NULL);
    if (!r) return rc;
    size_t lo = 0, hi = r->n;
    rc = -ENOENT;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->e[r->sorted[mid]].name, name);
        if (c == 0) {
            *target = strdup(r->e[r->sorted[mid]].target);
            if (!*target) abort();
            rc = 0;
            break;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    pthread_mutex_unlock(&m->search->lock);
    return rc;
}
