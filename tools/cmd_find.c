/* cmd_find.c — `dicomfs find`: a QIDO-RS search from the command line. The output is
 * byte for byte the body the HTTP endpoint returns for the same query. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char usage_text[] =
    "usage: dicomfs find ARCHIVE [--level study|series|instance] [--study UID] [--series UID]\n"
    "                    [--v1] [--strict] [--repeat N] [KEY=VALUE...]\n\n"
    "Prints the matching studies, series or instances as a DICOM JSON array, as QIDO-RS\n"
    "does. KEY=VALUE are QIDO query parameters: attribute keywords or 8-hex tags\n"
    "(PatientName=DOE*, StudyDate=20200101-20201231), includefield, limit, offset,\n"
    "fuzzymatching. At most 200 results per call, as QIDO-RS: limit is 1 to 200 (default\n"
    "100); page with offset. --study and --series scope the search like the URL does.\n"
    "Study and series results carry their counts and ModalitiesInStudy, as DICOMweb lists\n"
    "them; --strict (or DICOMFS_STRICT=1) only when includefield names them, as the Azure\n"
    "service does (dicomfs serve --strict answers the same).\n"
    "--repeat N runs the query N times and prints its latency on stderr.\n";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cmd_find(int argc, char **argv)
{
    static const struct option opts[] = {
        {"level", required_argument, NULL, 'l'}, {"study", required_argument, NULL, 's'},
        {"series", required_argument, NULL, 'e'}, {"v1", no_argument, NULL, '1'},
        {"repeat", required_argument, NULL, 'r'}, {"strict", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    store_query q = {.with_counts = !cli_strict_env()};
    long repeat = 1;
    bool level_given = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            level_given = true;
            if (strcmp(optarg, "study") == 0) q.level = STORE_LEVEL_STUDY;
            else if (strcmp(optarg, "series") == 0) q.level = STORE_LEVEL_SERIES;
            else if (strcmp(optarg, "instance") == 0) q.level = STORE_LEVEL_INSTANCE;
            else { fprintf(stderr, "dicomfs find: unknown level '%s'\n", optarg); return 2; }
            break;
        case 's': q.study_uid = optarg; break;
        case 'e': q.series_uid = optarg; break;
        case '1': q.api_version = 1; break;
        case 'S': q.with_counts = false; break;
        case 'r': repeat = atol(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    /* Options may also follow the archive: parse the rest by hand. */
    if (optind >= argc || repeat < 1) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *archive = argv[optind++];
    store_param *params = calloc((size_t)argc, sizeof *params);
    for (; optind < argc; optind++) {
        char *a = argv[optind];
        if (strncmp(a, "--", 2) == 0) {
            /* allow options after the archive too */
            if (strcmp(a, "--v1") == 0) { q.api_version = 1; continue; }
            if (strcmp(a, "--strict") == 0) { q.with_counts = false; continue; }
            if (optind + 1 < argc && strcmp(a, "--level") == 0) {
                const char *v = argv[++optind];
                level_given = true;
                q.level = strcmp(v, "series") == 0 ? STORE_LEVEL_SERIES : strcmp(v, "instance") == 0 ? STORE_LEVEL_INSTANCE : STORE_LEVEL_STUDY;
                continue;
            }
            if (optind + 1 < argc && strcmp(a, "--study") == 0) { q.study_uid = argv[++optind]; continue; }
            if (optind + 1 < argc && strcmp(a, "--series") == 0) { q.series_uid = argv[++optind]; continue; }
            if (optind + 1 < argc && strcmp(a, "--repeat") == 0) { repeat = atol(argv[++optind]); continue; }
            fprintf(stderr, "dicomfs find: unknown option '%s'\n", a);
            free(params);
            return 2;
        }
        char *eq = strchr(a, '=');
        if (!eq) {
            fprintf(stderr, "dicomfs find: '%s' is not KEY=VALUE\n", a);
            free(params);
            return 2;
        }
        *eq = 0;
        params[q.n_params++] = (store_param){a, eq + 1};
    }
    if (!level_given) q.level = q.series_uid ? STORE_LEVEL_INSTANCE : q.study_uid ? STORE_LEVEL_SERIES : STORE_LEVEL_STUDY;
    q.params = params;
    store_t *s = cli_open("find", archive, false);
    if (!s) {
        free(params);
        return 2;
    }
    store_find_result res = {0};
    store_err err = {0};
    store_status st = STORE_OK;
    double *us = calloc((size_t)repeat, sizeof *us);
    /* With --repeat, one untimed run first: the figures are of a warm archive. */
    if (repeat > 1) {
        st = store_find(s, &q, &res, &err);
        store_find_result_clear(&res);
    }
    for (long i = 0; i < repeat && st == STORE_OK; i++) {
        store_find_result_clear(&res);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        st = store_find(s, &q, &res, &err);
        clock_gettime(CLOCK_MONOTONIC, &b);
        us[i] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
    }
    int rc = 0;
    if (st == STORE_OK) {
        printf("%s\n", res.json);
        if (repeat > 1) {
            qsort(us, (size_t)repeat, sizeof *us, cmp_double);
            fprintf(stderr, "find: %ld runs, %zu results, median %.0f us, p95 %.0f us\n", repeat, res.count,
                    us[repeat / 2], us[(size_t)((double)repeat * 0.95) < (size_t)repeat ? (size_t)((double)repeat * 0.95) : (size_t)repeat - 1]);
        }
    } else {
        fprintf(stderr, "dicomfs find: %s\n", err.msg);
        rc = st == STORE_EINVAL ? 1 : 2;
    }
    free(us);
    store_find_result_clear(&res);
    store_close(s);
    free(params);
    return rc;
}
