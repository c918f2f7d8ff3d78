/* cmd_mount.c — `dicomfs mount`: the archive as a folder, until SIGINT/SIGTERM or an
 * unmount from outside. */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fs.h"

static const char usage_text[] =
    "usage: dicomfs mount ARCHIVE MOUNTPOINT [--daemon] [--allow-delete] [--allow-other]\n"
    "                     [--inbox-keep SECONDS] [--sync-close]\n\n"
    "Mounts ARCHIVE (created when missing or empty) at MOUNTPOINT:\n"
    "  inbox/      copy DICOM files or whole folders here (or to the top) to store them;\n"
    "              close() fails with a reason for files that are not valid instances\n"
    "              and NAME.error says why; stored files leave the listing after a while.\n"
    "              A file is durable when fsync() on it or `sync DIR` returns (commits of\n"
    "              a folder copy are grouped; they follow close() within milliseconds);\n"
    "              both fail when a file failed after its close() (EIO for `sync DIR`)\n"
    "  studies/<study>/series/<series>/instances/<sop>.dcm, and metadata.json files\n"
    "  patients/<Name> (<PatientID>)/<date> <description>/<modality> <number> <description>/<N>.dcm\n"
    "  search/studies|series|instances/<QIDO query>/   links to what matches, e.g.\n"
    "              ls 'MOUNTPOINT/search/studies/PatientName=DOE*&StudyDate=20200101-20201231'\n"
    "  changes/    latest.json, <sequence>.json and feed.jsonl (tail -f follows it)\n"
    "  extended-query-tags/<tag>.json   cat to read; write a JSON array to a new NAME.json to\n"
    "              add tags, {\"queryStatus\":...} to a tag's file to update it; rm deletes\n"
    "              (with --allow-delete)\n"
    "  operations/<id>.json   the progress of a reindex\n"
    "Stops on SIGINT, SIGTERM or `fusermount3 -u MOUNTPOINT`.\n\n"
    "  --daemon        return once mounted and keep serving in the background\n"
    "  --allow-delete  rm and rm -r of instance files and folders delete them from the\n"
    "                  archive (otherwise: Permission denied)\n"
    "  --allow-other   let other users use the mount (permissions still apply)\n"
    "  --inbox-keep S  how long a stored file stays listed where it was dropped\n"
    "                  (default 600 seconds; failed ones stay until removed)\n"
    "  --sync-close    close() returns only once the file is durable (slower copies)\n";

/* Forks; the parent waits until the child says the mount is ready (or failed) and
 * exits with its verdict. Returns the write end of that pipe in the child. */
static int daemonize(void)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) {
        close(p[1]);
        char verdict = 1;
        exit(read(p[0], &verdict, 1) == 1 && verdict == 0 ? 0 : 2);
    }
    close(p[0]);
    setsid();
    return p[1];
}

static void report_ready(int fd, char verdict)
{
    if (fd < 0) return;
    if (verdict == 0) { /* detach from the terminal */
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            if (null > 2) close(null);
        }
    }
    if (write(fd, &verdict, 1) != 1) {}
    close(fd);
}

int cmd_mount(int argc, char **argv)
{
    fs_options fo = {0};
    bool daemon = false;
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(argv[i], "--allow-other") == 0) {
            fo.allow_other = true;
        } else if (strcmp(argv[i], "--allow-delete") == 0) {
            fo.allow_delete = true;
        } else if (strcmp(argv[i], "--daemon") == 0) {
            daemon = true;
        } else if (strcmp(argv[i], "--sync-close") == 0) {
            fo.sync_close = true;
        } else if (strcmp(argv[i], "--inbox-keep") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 86400 * 365) {
                fprintf(stderr, "dicomfs mount: --inbox-keep wants seconds (1 or more), not '%s'\n", argv[i]);
                return 2;
            }
            fo.inbox_keep = (unsigned)v;
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
    int ready = -1;
    char mountpoint[PATH_MAX];
    if (!realpath(pos[1], mountpoint)) snprintf(mountpoint, sizeof mountpoint, "%s", pos[1]);
    if (daemon && (ready = daemonize()) < 0) {
        perror("dicomfs mount: cannot start the daemon");
        return 2;
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    store_t *s = cli_open("mount", pos[0], true);
    if (!s) {
        report_ready(ready, 1);
        return 2;
    }
    store_err err = {0};
    fs_mount *m = fs_mount_start(s, mountpoint, &fo, &err);
    if (!m) {
        fprintf(stderr, "dicomfs mount: %s\n", err.msg);
        store_close(s);
        report_ready(ready, 1);
        return 2;
    }
    printf("dicomfs: %s mounted at %s%s\n", store_dir(s), mountpoint, fo.allow_delete ? " (deleting allowed)" : "");
    fflush(stdout);
    report_ready(ready, 0);
    cli_idle_until_signal(&stop);
    fs_mount_stop(m);
    store_close(s);
    return 0;
}
