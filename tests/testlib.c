/* testlib.c — the unit tests' harness (see testlib.h). */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int test_failures, test_checks;
static char scratch[1024];

int test_summary(void)
{
    printf("%d passed, %d failed\n", test_checks - test_failures, test_failures);
    return test_failures ? 1 : 0;
}

const char *test_scratch(void)
{
    if (scratch[0]) return scratch;
    const char *env = getenv("SCRATCH");
    snprintf(scratch, sizeof scratch, "%s", env && *env ? env : "/tmp/dicomfs-unit");
    char cmd[2100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", scratch, scratch);
    if (system(cmd) != 0) abort();
    return scratch;
}

const char *test_path(const char *name)
{
    static char p[2048];
    snprintf(p, sizeof p, "%s/%s", test_scratch(), name);
    return p;
}

const char *test_make(const char *src, const char *dst, const char *args)
{
    static char out[2048];
    snprintf(out, sizeof out, "%s/%s", test_scratch(), dst);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp '%s/%s' '%s'", CORPUS, src, out);
    if (system(cmd) != 0) return NULL;
    if (args) {
        snprintf(cmd, sizeof cmd, "dcmodify -q -nb -imt %s '%s'", args, out);
        if (system(cmd) != 0) return NULL;
    }
    return out;
}

const char *test_write(const char *name, const void *data, size_t len)
{
    const char *p = test_path(name);
    FILE *f = fopen(p, "wb");
    if (!f) return NULL;
    fwrite(data, 1, len, f);
    fclose(f);
    return p;
}

store_t *test_archive(const char *name)
{
    store_err err = {0};
    store_t *s = store_open(test_path(name), STORE_OPEN_CREATE, &err);
    if (!s) printf("cannot open archive: %s\n", err.msg);
    return s;
}

store_ingest_result test_ingest(store_t *s, const char *path, const store_ingest_opts *opts)
{
    store_ingest_result r;
    store_ingest_path(s, path, opts, &r);
    return r;
}

long test_find_count(store_t *s, store_level level, const char *key, const char *value)
{
    store_param p = {key, value};
    store_query q = {.level = level, .params = key ? &p : NULL, .n_params = key ? 1 : 0};
    store_find_result r;
    store_err err;
    if (store_find(s, &q, &r, &err) != STORE_OK) return -1;
    long n = (long)r.count;
    store_find_result_clear(&r);
    return n;
}
