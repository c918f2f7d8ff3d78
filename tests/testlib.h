/* testlib.h — the unit tests' small harness.
 * CHECK(cond, "the rule") counts and reports a check; test_summary() prints the
 * "N passed, N failed" line CI reads and gives the exit status. The helpers make test
 * data from Debian's pydicom corpus with DCMTK's dcmodify, never from outside. */
#ifndef DICOMFS_TESTLIB_H
#define DICOMFS_TESTLIB_H

#include <stdbool.h>
#include <stdio.h>

#include "store.h"

#define CORPUS "/usr/lib/python3/dist-packages/pydicom/data/test_files"

extern int test_failures, test_checks;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        test_checks++;                                                     \
        if (!(cond)) {                                                     \
            test_failures++;                                               \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

int test_summary(void);

/* A fresh, empty directory for this test ($SCRATCH or /tmp); returns its path. */
const char *test_scratch(void);
/* SCRATCH/NAME as a static buffer (not reentrant: copy it). */
const char *test_path(const char *name);
/* Copies CORPUS/SRC to SCRATCH/DST, then runs `dcmodify -nb ARGS` on it (ARGS may be
 * NULL). Returns the new path (static buffer) or NULL. */
const char *test_make(const char *src, const char *dst, const char *args);
/* Writes LEN bytes of DATA to SCRATCH/NAME. */
const char *test_write(const char *name, const void *data, size_t len);
/* Opens a fresh archive in SCRATCH/NAME. */
store_t *test_archive(const char *name);
/* Ingests PATH with default options; the result must be cleared by the caller. */
store_ingest_result test_ingest(store_t *s, const char *path, const store_ingest_opts *opts);
/* The QIDO result of a one-parameter query (KEY may be NULL), as a count. */
long test_find_count(store_t *s, store_level level, const char *key, const char *value);

#endif
