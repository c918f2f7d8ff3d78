/* cmd_misc.c — the small subcommands: metadata, delete, changes, fsck. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_metadata(int argc, char **argv)
{
    if (cli_wants_help(argc, argv) || argc < 3 || argc > 5) {
        fputs("usage: dicomfs metadata ARCHIVE STUDY [SERIES [SOP]]\n\n"
              "Prints the DICOM JSON metadata (one object per instance) as WADO-RS does.\n",
              cli_wants_help(argc, argv) ? stdout : stderr);
        return cli_wants_help(argc, argv) ? 0 : 2;
    }
    store_t *s = cli_open("metadata", argv[1], false);
    if (!s) return 2;
    char *json = NULL, etag[64];
    size_t len;
    store_err err = {0};
    store_status st = store_metadata(s, NULL, argv[2], argc > 3 ? argv[3] : NULL, argc > 4 ? argv[4] : NULL, &json, &len,
                                     etag, &err);
    if (st == STORE_OK) {
        fwrite(json, 1, len, stdout);
        putchar('\n');
    } else {
        fprintf(stderr, "dicomfs metadata: %s\n", err.msg);
    }
    free(json);
    store_close(s);
    return st == STORE_OK ? 0 : 1;
}

int cmd_delete(int argc, char **argv)
{
    if (cli_wants_help(argc, argv) || argc < 3 || argc > 5) {
        fputs("usage: dicomfs delete ARCHIVE STUDY [SERIES [SOP]]\n\n"
              "Deletes a study, series or instance, and prints how many instances went.\n",
              cli_wants_help(argc, argv) ? stdout : stderr);
        return cli_wants_help(argc, argv) ? 0 : 2;
    }
    store_t *s = cli_open("delete", argv[1], false);
    if (!s) return 2;
    size_t n = 0;
    store_err err = {0};
    store_status st = store_delete(s, NULL, argv[2], argc > 3 ? argv[3] : NULL, argc > 4 ? argv[4] : NULL, &n, &err);
    if (st == STORE_OK) printf("%zu\n", n);
    else fprintf(stderr, "dicomfs delete: %s\n", err.msg);
    store_close(s);
    return st == STORE_OK ? 0 : 1;
}

int cmd_changes(int argc, char **argv)
{
    static const struct option opts[] = {{"offset", required_argument, NULL, 'o'}, {"limit", required_argument, NULL, 'l'},
                                         {"no-metadata", no_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    store_changefeed_query q = {.api_version = 1, .limit = 10, .include_metadata = true};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': q.offset = atoll(optarg); break;
        case 'l': q.limit = atoi(optarg); break;
        case 'n': q.include_metadata = false; break;
        case 'h':
            fputs("usage: dicomfs changes ARCHIVE [--offset N] [--limit N] [--no-metadata]\n\n"
                  "Prints change-feed entries with offset < sequence <= offset+limit (limit 1..100,\n"
                  "default 10), as /v1/changefeed does.\n", stdout);
            return 0;
        default: return 2;
        }
    }
    if (optind >= argc) {
        fputs("usage: dicomfs changes ARCHIVE [--offset N] [--limit N] [--no-metadata]\n", stderr);
        return 2;
    }
    store_t *s = cli_open("changes", argv[optind], false);
    if (!s) return 2;
    char *json = NULL;
    store_err err = {0};
    store_status st = store_changefeed(s, &q, &json, &err);
    if (st == STORE_OK) printf("%s\n", json);
    else fprintf(stderr, "dicomfs changes: %s\n", err.msg);
    free(json);
    store_close(s);
    return st == STORE_OK ? 0 : 1;
}

static void print_line(const char *line, void *ctx)
{
    (void)ctx;
    printf("%s\n", line);
}

int cmd_fsck(int argc, char **argv)
{
    bool repair = false;
    const char *archive = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repair") == 0) repair = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs("usage: dicomfs fsck ARCHIVE [--repair]\n\n"
                  "Checks the index against the object files and against itself; one line per\n"
                  "problem. --repair removes orphan objects and leftover temp files.\n"
                  "Exit status: 0 consistent, 1 problems found, 2 cannot open.\n", stdout);
            return 0;
        } else archive = argv[i];
    }
    if (!archive) {
        fputs("usage: dicomfs fsck ARCHIVE [--repair]\n", stderr);
        return 2;
    }
    store_t *s = cli_open("fsck", archive, false);
    if (!s) return 2;
    store_fsck_report r;
    store_err err = {0};
    store_status st = store_fsck(s, repair, print_line, NULL, &r, &err);
    if (st != STORE_OK && err.msg[0]) fprintf(stderr, "dicomfs fsck: %s\n", err.msg);
    printf("fsck: %zu instances, %zu objects, %zu missing, %zu orphans, %zu index errors%s\n", r.instances, r.objects,
           r.missing, r.orphans, r.bad_index, repair ? (r.repaired ? ", repaired" : "") : "");
    store_close(s);
    return st == STORE_OK ? 0 : 1;
}
