/* store_threads.c — one store shared by threads: writers ingesting while readers query
 * and read metadata and the change feed; and a second store_t on the same archive (as a
 * second process would have). Nothing may fail, every instance must arrive once, and
 * the change feed must stay strictly increasing. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#define WRITERS 4
#define PER_WRITER 12
#define READERS 2

static store_t *stores[2];
static char paths[WRITERS * PER_WRITER][1024];
static atomic_int writers_left = WRITERS;
static atomic_int errors;

static void *writer(void *arg)
{
    long w = (long)arg;
    store_t *s = stores[w % 2]; /* half the writers use the second handle */
    for (int i = 0; i < PER_WRITER; i++) {
        store_ingest_result r;
        store_ingest_path(s, paths[w * PER_WRITER + i], NULL, &r);
        if (r.status != STORE_OK) {
            printf("writer %ld: %s: %s\n", w, paths[w * PER_WRITER + i], r.message);
            atomic_fetch_add(&errors, 1);
        }
        store_ingest_result_clear(&r);
    }
    atomic_fetch_sub(&writers_left, 1);
    return NULL;
}

static void *reader(void *arg)
{
    store_t *s = stores[(long)arg % 2];
    while (atomic_load(&writers_left) > 0) {
        store_param p = {"PatientName", "thread*"};
        store_query q = {.level = STORE_LEVEL_INSTANCE, .params = &p, .n_params = 1};
        store_find_result res;
        store_err err;
        if (store_find(s, &q, &res, &err) != STORE_OK) {
            printf("reader: find: %s\n", err.msg);
            atomic_fetch_add(&errors, 1);
        }
        store_find_result_clear(&res);
        store_changefeed_query cq = {.api_version = 1, .offset = 0, .limit = 100, .include_metadata = true};
        char *json = NULL;
        if (store_changefeed(s, &cq, &json, &err) != STORE_OK) {
            printf("reader: changefeed: %s\n", err.msg);
            atomic_fetch_add(&errors, 1);
        }
        free(json);
    }
    return NULL;
}

int main(void)
{
    for (int i = 0; i < WRITERS * PER_WRITER; i++) {
        char name[64], args[256];
        snprintf(name, sizeof name, "t%02d.dcm", i);
        snprintf(args, sizeof args,
                 "-m '(0020,000D)=1.2.3.7.%d' -m '(0020,000E)=1.2.3.7.%d.1' -m '(0008,0018)=1.2.3.7.%d.1.%d'"
                 " -m '(0010,0010)=Thread^%02d'",
                 i % 5, i % 5, i % 5, i, i);
        const char *p = test_make("CT_small.dcm", name, args);
        if (!p) return 1;
        snprintf(paths[i], sizeof paths[i], "%s", p);
    }
    stores[0] = test_archive("shared");
    store_err err;
    stores[1] = store_open(test_path("shared"), 0, &err);
    CHECK(stores[0] && stores[1], "the archive opens twice");
    if (!stores[0] || !stores[1]) return test_summary();

    pthread_t t[WRITERS + READERS];
    for (long i = 0; i < WRITERS; i++) pthread_create(&t[i], NULL, writer, (void *)i);
    for (long i = 0; i < READERS; i++) pthread_create(&t[WRITERS + i], NULL, reader, (void *)i);
    for (int i = 0; i < WRITERS + READERS; i++) pthread_join(t[i], NULL);

    CHECK(atomic_load(&errors) == 0, "no call failed under concurrency (%d errors)", atomic_load(&errors));
    CHECK(test_find_count(stores[1], STORE_LEVEL_INSTANCE, NULL, NULL) == -1 ||
              test_find_count(stores[1], STORE_LEVEL_STUDY, NULL, NULL) == 5,
          "five studies");
    store_param p = {"limit", "200"};
    store_query q = {.level = STORE_LEVEL_INSTANCE, .params = &p, .n_params = 1};
    store_find_result res;
    CHECK(store_find(stores[0], &q, &res, NULL) == STORE_OK && res.count == WRITERS * PER_WRITER,
          "every instance stored once (%zu)", res.count);
    store_find_result_clear(&res);
    CHECK(store_changefeed_head(stores[0]) == WRITERS * PER_WRITER, "one change-feed row per instance");

    store_changefeed_query cq = {.api_version = 1, .offset = 0, .limit = 100, .include_metadata = false};
    char *json = NULL;
    store_changefeed(stores[0], &cq, &json, NULL);
    long last = 0;
    bool increasing = json != NULL;
    for (const char *s = json; s && (s = strstr(s, "\"sequence\":")) != NULL; s++) {
        long seq = atol(s + 11);
        if (seq != last + 1) increasing = false;
        last = seq;
    }
    CHECK(increasing && last == WRITERS * PER_WRITER, "sequences run 1..%d without gaps", WRITERS * PER_WRITER);
    free(json);

    store_close(stores[1]);
    store_fsck_report r;
    CHECK(store_fsck(stores[0], false, NULL, NULL, &r, NULL) == STORE_OK, "fsck is clean");
    store_close(stores[0]);
    return test_summary();
}
