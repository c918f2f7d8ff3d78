/* fuzzlib.h — what the fuzz targets share: a scratch folder per process (on /dev/shm when
 * there is one, removed at exit), a small archive made from generated DICOM, and
 * helpers to cut an input into fields. Nothing here is fuzzed itself. */
#ifndef DICOMFS_FUZZLIB_H
#define DICOMFS_FUZZLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define FUZZ_CORPUS "/usr/lib/python3/dist-packages/pydicom/data/test_files"

/* Aborts with a message: libFuzzer then saves the input as a crash. */
#define FUZZ_ASSERT(cond, ...)                                                        \
    do {                                                                              \
        if (!(cond)) fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);               \
    } while (0)
void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* This process's scratch folder (created on first use, removed at exit). */
const char *fuzz_scratch(void);

/* A fresh archive in the scratch folder under NAME (an existing one is removed first),
 * with INSTANCES: a few generated instances (three patients, two studies of one,
 * single- and multi-frame, native and encapsulated) when true, empty otherwise. */
store_t *fuzz_archive(const char *name, bool instances);

/* The UIDs of the generated instances, for scoped queries. */
#define FUZZ_STUDY1 "1.2.826.0.1.3680043.8.498.1"
#define FUZZ_SERIES1 "1.2.826.0.1.3680043.8.498.1.1"
#define FUZZ_STUDY2 "1.2.826.0.1.3680043.8.498.2"

/* A NUL-terminated copy of DATA (malloc'd). */
char *fuzz_strndup(const uint8_t *data, size_t len);

/* Splits a QIDO-style query string in place ("a=b&c" -> {a,b},{c,""}), percent-decoding
 * keys and values ('+' is a space, as in a form); at most MAX pairs. NULL_VALUES: a key
 * without '=' gets NULL, as libmicrohttpd hands it over. */
size_t fuzz_query_split(char *text, store_param *out, size_t max, bool null_values);

#endif
