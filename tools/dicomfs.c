/* dicomfs.c — the dicomfs program: dispatch to a subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef DICOMFS_VERSION /* CMake sets it from project(VERSION) */
#define DICOMFS_VERSION "unknown"
#endif

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"ingest", cmd_ingest, "store DICOM files and folders in an archive"},
    {"find", cmd_find, "search the archive (QIDO-RS query parameters)"},
    {"metadata", cmd_metadata, "print the DICOM JSON metadata of a study, series or instance"},
    {"delete", cmd_delete, "delete a study, series or instance"},
    {"changes", cmd_changes, "print change-feed entries"},
    {"tags", cmd_tags, "extended query tags: list, add, get, update, delete, errors"},
    {"operations", cmd_operations, "print a reindex operation started by tags add"},
    {"fsck", cmd_fsck, "check (and repair) an archive"},
    {"serve", cmd_serve, "serve the archive over DICOMweb (HTTP)"},
    {"mount", cmd_mount, "mount the archive as a folder (FUSE)"},
    {"keygen", cmd_keygen, "make a key pair and an auth file for serve --auth"},
    {"token", cmd_token, "mint a bearer token for serve --auth"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: dicomfs COMMAND [OPTIONS] ARCHIVE ...\n\n"
                 "dicomfs is a DICOM archive: an SQLite-indexed store of DICOM instances.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-10s %s\n", "version", "print the version (also --version)");
    fprintf(out, "\n'dicomfs COMMAND --help' describes a command.\n");
}

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return true;
    return false;
}

store_t *cli_open(const char *cmd, const char *archive, bool create)
{
    store_err err = {0};
    store_t *s = store_open(archive, create ? STORE_OPEN_CREATE : 0, &err);
    if (s) return s;
    fprintf(stderr, "dicomfs %s: %s\n", cmd, err.msg);
    if (err.status == STORE_EEXIST) /* most often the arguments in the wrong order */
        fprintf(stderr, "dicomfs %s: the archive comes first; name a new or empty folder to create one "
                "(dicomfs %s --help)\n", cmd, cmd);
    else if (err.status == STORE_ENOTFOUND)
        fprintf(stderr, "dicomfs %s: dicomfs ingest, serve or mount create an archive in a new or empty folder\n", cmd);
    return NULL;
}

bool cli_strict_env(void)
{
    const char *v = getenv("DICOMFS_STRICT");
    return v && *v && strcmp(v, "0") != 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("dicomfs %s\n", DICOMFS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "dicomfs: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
