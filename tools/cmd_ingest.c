/* cmd_ingest.c — `dicomfs ingest`: store files and folders.
 *
 * Files are parsed by several worker threads at once, then handed to the store's commit
 * queue strictly in path order (so when two files carry the same UIDs, the first by
 * name wins, every time). The store commits whatever is queued as one group, which is
 * what makes ingest of many small files cheaper than one fsync each. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char usage_text[] =
    "usage: dicomfs ingest [--json] [--v1] [--study UID] [--jobs N] ARCHIVE PATH...\n\n"
    "Stores DICOM files, and every file under the given folders, in ARCHIVE (created when\n"
    "missing or empty). OS junk (.DS_Store, Thumbs.db, desktop.ini, ._*) and DICOMDIR files\n"
    "are skipped. Each file is stored, skipped or failed; failures say why. A file already\n"
    "stored with the same bytes counts as stored (nothing changes).\n\n"
    "  --json      one JSON object per file on stdout, as soon as its result is final\n"
    "  --v1        apply the reference's v1 validation rules (default: v2)\n"
    "  --study UID every instance must belong to this study\n"
    "  --jobs N    files parsed in parallel (default: the number of CPUs)\n\n"
    "Exit status: 0 when no file failed, 1 when some did, 2 on a usage or archive error\n"
    "(a PATH that does not exist, an ARCHIVE that is a folder of other files).\n";

typedef struct {
    char **v;
    size_t n, cap;
} path_list;

typedef struct {
    store_t *store;
    store_ingest_opts opts;
    path_list files;
    bool json, progress;

    atomic_size_t next;          /* next file a worker takes */
    pthread_mutex_t turn_lock;   /* submission in path order */
    pthread_cond_t turn_cond;
    size_t turn;

    pthread_mutex_t out_lock;    /* results */
    pthread_cond_t out_cond;
    size_t finished, stored, already, skipped, failed;
    uint64_t bytes;
    struct timespec last_progress;
} run;

static void add_path(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    l->v[l->n] = strdup(p);
    if (!l->v[l->n]) abort();
    l->n++;
}

/* Depth-first, names sorted, so the order (and so which duplicate wins) is stable. */
static void walk(path_list *l, const char *path, int depth)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode) || depth > 64) {
        add_path(l, path); /* a file, or something that will fail with its reason */
        return;
    }
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        add_path(l, path);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (strcmp(name, ".") && strcmp(name, "..")) {
            char child[PATH_MAX];
            snprintf(child, sizeof child, "%s/%s", path, name);
            struct stat cs;
            /* Follow symlinks to files, never to folders (no loops). */
            if (lstat(child, &cs) == 0 && S_ISLNK(cs.st_mode) && stat(child, &cs) == 0 && S_ISDIR(cs.st_mode)) {
            } else {
                walk(l, child, depth + 1);
            }
        }
        free(names[i]);
    }
    free(names);
}

static bool is_junk(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strcmp(base, ".DS_Store") == 0 || strcasecmp(base, "Thumbs.db") == 0 ||
           strcasecmp(base, "desktop.ini") == 0 || strncmp(base, "._", 2) == 0;
}

/* File names need not be UTF-8; JSON must be. Bad bytes become U+FFFD. */
static json_t *json_utf8(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) abort();
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 && *p >= 0xC2 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 && *p <= 0xF4 ? 4 : 0;
        bool ok = len > 0;
        for (int i = 1; ok && i < len; i++) ok = (p[i] & 0xC0) == 0x80;
        if (ok) {
            memcpy(o, p, (size_t)len);
            o += len;
            p += len;
        } else {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            p++;
        }
    }
    *o = 0;
    json_t *j = json_string(out);
    free(out);
    return j ? j : json_string("?");
}

static void show_progress(run *r, bool last)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double since = (double)(now.tv_sec - r->last_progress.tv_sec) + (now.tv_nsec - r->last_progress.tv_nsec) / 1e9;
    if (!last && since < 0.1) return;
    r->last_progress = now;
    int width = 30, done = r->files.n ? (int)(width * r->finished / r->files.n) : width;
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu files, %.1f MB%s", done, "##############################", width - done, "",
            r->finished, r->files.n, (double)r->bytes / 1e6, last ? "\n" : "");
    fflush(stderr);
}

/* Records and prints one file's result. */
static void report(run *r, const char *path, const char *outcome, const store_ingest_result *res)
{
    pthread_mutex_lock(&r->out_lock);
    if (strcmp(outcome, "stored") == 0) r->stored++;
    else if (strcmp(outcome, "skipped") == 0) r->skipped++;
    else r->failed++;
    if (res && res->already_stored) r->already++;
    if (r->json) {
        json_t *o = json_pack("{s:o, s:s}", "path", json_utf8(path), "result", outcome);
        if (res) {
            if (res->already_stored) json_object_set_new(o, "alreadyStored", json_true());
            if (res->failure_reason) json_object_set_new(o, "failureReason", json_integer(res->failure_reason));
            if (res->warning_reason) json_object_set_new(o, "warningReason", json_integer(res->warning_reason));
            if (res->message[0]) json_object_set_new(o, "message", json_utf8(res->message));
            if (res->failed_attributes) json_object_set_new(o, "failedAttributes", json_utf8(res->failed_attributes));
            const char *keys[] = {"studyInstanceUid", "seriesInstanceUid", "sopInstanceUid", "sopClassUid"};
            const char *vals[] = {res->study_uid, res->series_uid, res->sop_instance_uid, res->sop_class_uid};
            for (int i = 0; i < 4; i++)
                if (vals[i][0]) json_object_set_new(o, keys[i], json_string(vals[i]));
        }
        char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", line);
        fflush(stdout);
        free(line);
        json_decref(o);
    } else if (strcmp(outcome, "stored") != 0 || (res && res->warning_reason)) {
        if (r->progress) fputs("\r\033[K", stderr);
        if (res && res->failure_reason)
            fprintf(stderr, "%s: %s (%d): %s\n", path, outcome, res->failure_reason, res->message);
        else if (res && res->warning_reason)
            fprintf(stderr, "%s: stored with warning (%d): %s\n", path, res->warning_reason, res->message);
        else
            fprintf(stderr, "%s: %s: %s\n", path, outcome, res ? res->message : "");
    }
    r->finished++;
    if (r->progress) show_progress(r, false);
    pthread_cond_broadcast(&r->out_cond);
    pthread_mutex_unlock(&r->out_lock);
}

typedef struct {
    run *r;
    size_t index;
} done_ctx;

static void on_done(store_item *item, void *ctx)
{
    done_ctx *d = ctx;
    const store_ingest_result *res = store_item_result(item);
    const char *outcome = res->status == STORE_OK ? "stored" : res->dicomdir ? "skipped" : "failed";
    report(d->r, d->r->files.v[d->index], outcome, res);
    store_item_free(item);
    free(d);
}

static void wait_turn(run *r, size_t i)
{
    pthread_mutex_lock(&r->turn_lock);
    while (r->turn != i) pthread_cond_wait(&r->turn_cond, &r->turn_lock);
    pthread_mutex_unlock(&r->turn_lock);
}

static void next_turn(run *r)
{
    pthread_mutex_lock(&r->turn_lock);
    r->turn++;
    pthread_cond_broadcast(&r->turn_cond);
    pthread_mutex_unlock(&r->turn_lock);
}

static void ingest_one(run *r, size_t i)
{
    const char *path = r->files.v[i];
    store_ingest_result res;
    memset(&res, 0, sizeof res);
    if (is_junk(path)) {
        snprintf(res.message, sizeof res.message, "operating-system file, not DICOM");
        wait_turn(r, i);
        report(r, path, "skipped", &res);
        next_turn(r);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    store_err err = {0};
    store_upload *up = fd >= 0 ? store_upload_begin(r->store, &err) : NULL;
    if (!up) {
        res.failure_reason = STORE_FAIL_PROCESSING;
        snprintf(res.message, sizeof res.message, "%s", fd < 0 ? strerror(errno) : err.msg);
        if (fd >= 0) close(fd);
        wait_turn(r, i);
        report(r, path, "failed", &res);
        next_turn(r);
        return;
    }
    store_upload_copy_fd(up, fd);
    close(fd);
    uint64_t size = store_upload_size(up);
    store_item *item = store_upload_finish(up, &r->opts);
    done_ctx *d = malloc(sizeof *d);
    if (!d) abort();
    *d = (done_ctx){r, i};
    wait_turn(r, i);
    pthread_mutex_lock(&r->out_lock);
    r->bytes += size;
    pthread_mutex_unlock(&r->out_lock);
    store_commit_async(r->store, item, on_done, d);
    next_turn(r);
}

static void *worker(void *arg)
{
    run *r = arg;
    size_t i;
    while ((i = atomic_fetch_add(&r->next, 1)) < r->files.n) ingest_one(r, i);
    return NULL;
}

int cmd_ingest(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"v1", no_argument, NULL, '1'},
        {"study", required_argument, NULL, 's'}, {"jobs", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    run r;
    memset(&r, 0, sizeof r);
    long jobs = sysconf(_SC_NPROCESSORS_ONLN);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': r.json = true; break;
        case '1': r.opts.api_version = 1; break;
        case 's': r.opts.expected_study_uid = optarg; break;
        case 'n': jobs = atol(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (argc - optind < 2 || jobs < 1 || jobs > 256) {
        fputs(usage_text, stderr);
        return 2;
    }
    /* Before the archive is touched: a missing input is a typo (or swapped arguments). */
    for (int i = optind + 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "dicomfs ingest: %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
    }
    /* Identical copies (the inbox ingested again, a CD copied twice) are already stored. */
    r.opts.identical_ok = true;
    r.store = cli_open("ingest", argv[optind], true);
    if (!r.store) return 2;
    for (int i = optind + 1; i < argc; i++) walk(&r.files, argv[i], 0);
    r.progress = !r.json && isatty(2);
    store_expect(r.store, (long)r.files.n);
    pthread_mutex_init(&r.turn_lock, NULL);
    pthread_cond_init(&r.turn_cond, NULL);
    pthread_mutex_init(&r.out_lock, NULL);
    pthread_cond_init(&r.out_cond, NULL);

    pthread_t threads[256];
    long started = 0;
    for (; started < jobs && started < (long)r.files.n; started++)
        if (pthread_create(&threads[started], NULL, worker, &r) != 0) break;
    if (started == 0) worker(&r);
    for (long i = 0; i < started; i++) pthread_join(threads[i], NULL);
    pthread_mutex_lock(&r.out_lock);
    while (r.finished < r.files.n) pthread_cond_wait(&r.out_cond, &r.out_lock);
    if (r.progress) show_progress(&r, true);
    pthread_mutex_unlock(&r.out_lock);
    store_close(r.store);

    char already[64] = "";
    if (r.already) snprintf(already, sizeof already, " (%zu already stored)", r.already);
    fprintf(stderr, "ingest: %zu stored%s, %zu skipped, %zu failed\n", r.stored, already, r.skipped, r.failed);
    for (size_t i = 0; i < r.files.n; i++) free(r.files.v[i]);
    free(r.files.v);
    return r.failed ? 1 : 0;
}
