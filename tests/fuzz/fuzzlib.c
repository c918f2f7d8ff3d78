/* fuzzlib.c — see fuzzlib.h. */
#include "fuzzlib.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: invariant broken: %s: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static char scratch[256];

static void remove_scratch(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", scratch);
}

const char *fuzz_scratch(void)
{
    if (scratch[0]) return scratch;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(scratch, sizeof scratch, "%s/dicomfs-fuzz-%ld", base, (long)getpid());
    if (mkdir(scratch, 0700) != 0) {
        perror(scratch);
        abort();
    }
    atexit(remove_scratch);
    return scratch;
}

/* Copies CORPUS/SRC to DIR/DST and runs dcmodify ARGS on it; the new path (static). */
static const char *make(const char *src, const char *dst, const char *args)
{
    static char out[512];
    snprintf(out, sizeof out, "%s/%s", fuzz_scratch(), dst);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp '%s/%s' '%s' && dcmodify -q -nb -imt %s '%s'", FUZZ_CORPUS, src, out, args, out);
    if (system(cmd) != 0) {
        fprintf(stderr, "fuzz: cannot make %s: %s\n", dst, cmd);
        abort();
    }
    return out;
}

#define UIDS(study, series, sop) \
    "-m '(0020,000D)=" study "' -m '(0020,000E)=" series "' -m '(0008,0018)=" sop "'"

/* The instances: what QIDO can tell apart (names with accents and components, dates,
 * modalities, numbers, a multi-frame encapsulated image). */
static const struct {
    const char *src, *args;
} instances[] = {
    {"CT_small.dcm", UIDS(FUZZ_STUDY1, FUZZ_SERIES1, "1.2.826.0.1.3680043.8.498.1.1.1")
     " -m '(0010,0010)=Doe^John' -m '(0010,0020)=P1' -m '(0008,0020)=20200101' -m '(0008,0050)=A1'"
     " -m '(0020,0013)=1' -m '(0008,1030)=Chest' -m '(0010,0030)=19700101'"},
    {"CT_small.dcm", UIDS(FUZZ_STUDY1, FUZZ_SERIES1, "1.2.826.0.1.3680043.8.498.1.1.2")
     " -m '(0010,0010)=Doe^John' -m '(0010,0020)=P1' -m '(0008,0020)=20200101' -m '(0020,0013)=2'"},
    {"MR_small.dcm", UIDS(FUZZ_STUDY2, "1.2.826.0.1.3680043.8.498.2.1", "1.2.826.0.1.3680043.8.498.2.1.1")
     " -i '(0008,0005)=ISO_IR 192' -m '(0010,0010)=Müller^Ängela^M' -m '(0010,0020)=P2'"
     " -m '(0008,0020)=20210615' -m '(0008,0030)=101500' -m '(0008,0090)=Smith^Ref'"},
    {"SC_rgb_rle_2frame.dcm", UIDS("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.3.1",
                                   "1.2.826.0.1.3680043.8.498.3.1.1")
     " -i '(0010,0010)=Roe^Jane' -i '(0010,0020)=P3' -i '(0008,0020)=19991231' -i '(0008,0060)=OT'"},
    {"JPEG-lossy.dcm", UIDS("1.2.826.0.1.3680043.8.498.4", "1.2.826.0.1.3680043.8.498.4.1",
                            "1.2.826.0.1.3680043.8.498.4.1.1")
     " -i '(0010,0010)=Doe^John' -i '(0010,0020)=P1' -i '(0008,0020)=20221010' -i '(0008,0061)=MG'"},
};

store_t *fuzz_archive(const char *name, bool with_instances)
{
    char dir[512], cmd[600];
    snprintf(dir, sizeof dir, "%s/%s", fuzz_scratch(), name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) abort();
    store_err err = {0};
    store_t *s = store_open(dir, STORE_OPEN_CREATE, &err);
    if (!s) {
        fprintf(stderr, "fuzz: cannot open archive %s: %s\n", dir, err.msg);
        abort();
    }
    for (size_t i = 0; with_instances && i < sizeof instances / sizeof instances[0]; i++) {
        char file[32];
        snprintf(file, sizeof file, "seed%zu.dcm", i);
        store_ingest_result r;
        store_ingest_path(s, make(instances[i].src, file, instances[i].args), NULL, &r);
        if (r.status != STORE_OK) {
            fprintf(stderr, "fuzz: seed instance %zu refused: %s\n", i, r.message);
            abort();
        }
        store_ingest_result_clear(&r);
    }
    return s;
}

char *fuzz_strndup(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);
    if (!s) abort();
    memcpy(s, data, len);
    s[len] = 0;
    return s;
}

static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '+') *o++ = ' ';
        else if (*p == '%' && hex(p[1]) >= 0 && hex(p[2]) >= 0) {
            *o++ = (char)(hex(p[1]) * 16 + hex(p[2]));
            p += 2;
        } else *o++ = *p;
    }
    *o = 0;
}

size_t fuzz_query_split(char *text, store_param *out, size_t max, bool null_values)
{
    size_t n = 0;
    for (char *save = NULL, *pair = strtok_r(text, "&", &save); pair && n < max; pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (eq) *eq++ = 0;
        decode(pair);
        if (eq) decode(eq);
        out[n].key = pair;
        out[n].value = eq ? eq : null_values ? NULL : "";
        n++;
    }
    return n;
}
