/* parse_pool.c — store_upload_finish() on the store's own threads, so that a face which
 * receives many instances in one stream (a STOW-RS request of many parts) parses them on
 * every core while it goes on receiving the rest. One thread per CPU, started at the
 * first use. The queue is short on purpose: each queued upload holds its descriptor,
 * and when the threads are behind the submitter parses the upload itself (the same work,
 * done where a core is free, and natural back-pressure on the sender). */
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define POOL_THREADS_MAX 16
#define QUEUE_PER_THREAD 2

typedef struct job {
    store_upload *up;
    const store_ingest_opts *opts;
    store_finished_fn done;
    void *ctx;
    struct job *next;
} job;

struct parse_pool {
    pthread_mutex_t lock;
    pthread_cond_t work;
    job *head, *tail;
    size_t queued, max_queued;
    bool stop;
    int n_threads;
    pthread_t threads[POOL_THREADS_MAX];
};

static void *pool_thread(void *arg)
{
    parse_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stop) pthread_cond_wait(&p->work, &p->lock);
        job *j = p->head;
        if (!j) break; /* stopping, and nothing left */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);
        j->done(store_upload_finish(j->up, j->opts), j->ctx);
        free(j);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* The pool, started on first use (store->pool_once); NULL when no thread could start. */
static parse_pool *pool_of(store_t *s)
{
    pthread_mutex_lock(&s->pool_start_lock);
    if (!s->pool) {
        parse_pool *p = calloc(1, sizeof *p);
        if (!p) abort();
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->work, NULL);
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int want = cpus < 1 ? 1 : cpus > POOL_THREADS_MAX ? POOL_THREADS_MAX : (int)cpus;
        while (p->n_threads < want && pthread_create(&p->threads[p->n_threads], NULL, pool_thread, p) == 0)
            p->n_threads++;
        p->max_queued = (size_t)p->n_threads * QUEUE_PER_THREAD;
        s->pool = p;
    }
    pthread_mutex_unlock(&s->pool_start_lock);
    return s->pool->n_threads ? s->pool : NULL;
}

void store_upload_finish_async(store_upload *up, const store_ingest_opts *opts, store_finished_fn done, void *ctx)
{
    parse_pool *p = pool_of(up->store);
    if (p) {
        pthread_mutex_lock(&p->lock);
        if (!p->stop && p->queued < p->max_queued) {
            job *j = malloc(sizeof *j);
            if (!j) abort();
            *j = (job){up, opts, done, ctx, NULL};
            if (p->tail) p->tail->next = j;
            else p->head = j;
            p->tail = j;
            p->queued++;
            pthread_cond_signal(&p->work);
            pthread_mutex_unlock(&p->lock);
            return;
        }
        pthread_mutex_unlock(&p->lock);
    }
    done(store_upload_finish(up, opts), ctx); /* the threads are busy: do it here */
}

void parse_pool_stop(store_t *s)
{
    parse_pool *p = s->pool;
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = true; /* the threads finish what is queued, then end */
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work);
    free(p);
    s->pool = NULL;
}
