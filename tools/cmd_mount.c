/* cmd_mount.c — `dicomfs mount`: the archive as a folder, until SIGINT/SIGTERM or an
 * unmount from outside. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "fs.h"

static const char usage_text[] =
    "usage: dicomfs mount ARCHIVE MOUNTPOINT [--allow-other]\n\n"
    "Mounts ARCHIVE (created when missing) at MOUNTPOINT, in the foreground:\n"
    "  copy DICOM files or whole folders into MOUNTPOINT or MOUNTPOINT/inbox to store them\n"
    "  (close() fails with a reason for files that are not valid instances; NAME.error says\n"
    "  why), browse MOUNTPOINT/studies/<study>/series/<series>/instances/<sop>.dcm and\n"
    "  metadata.json files, and MOUNTPOINT/changes/.\n"
    "Stops on SIGINT, SIGTERM or `fusermount3 -u MOUNTPOINT`.\n\n"
    "  --allow-other   let other users use the mount (permissions still apply)\n";

int cmd_mount(int argc, char **argv)
{
    fs_options fo = {0};
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(argv[i], "--allow-other") == 0) {
            fo.allow_other = true;
        } else if (argv[i][0] == '-' || npos == 2) {
            fputs(usage_text, stderr);
            return 2;
        } else {
            pos[npos++] = argv[i];
        }
    }
    if (npos != 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    store_t *s = cli_open("mount", pos[0], true);
    if (!s) return 2;
    store_err err = {0};
    fs_mount *m = fs_mount_start(s, pos[1], &fo, &err);
    if (!m) {
        fprintf(stderr, "dicomfs mount: %s\n", err.msg);
        store_close(s);
        return 2;
    }
    printf("dicomfs: %s mounted at %s\n", store_dir(s), pos[1]);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    fs_mount_stop(m);
    store_close(s);
    return 0;
}
