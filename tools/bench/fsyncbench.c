/* fsyncbench.c — the machine's own write limits, measured on the archive's disk.
 *
 *   fsyncbench copy DSTDIR LISTFILE   for every path in LISTFILE (one per line): read it,
 *                                     then open DSTDIR/<n>, write, fsync, close.
 *   fsyncbench seq DSTFILE LISTFILE   the same bytes written once, in order, into one file,
 *                                     with a single fdatasync at the end.
 *
 * Prints one JSON object: {"mode":..,"files":N,"bytes":N,"seconds":S}. The caller reads the
 * sources once beforehand so both this and dicomfs read them from the page cache. Built by
 * tools/bench/run.sh with `cc -O2`; nothing else uses it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fsyncbench: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static char **read_list(const char *listfile, size_t *n)
{
    FILE *f = fopen(listfile, "r");
    if (!f)
        die("open", listfile);
    size_t cap = 1024, len = 0;
    char **v = malloc(cap * sizeof *v);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t l;
    while ((l = getline(&line, &lcap, f)) > 0) {
        if (line[l - 1] == '\n')
            line[--l] = 0;
        if (!l)
            continue;
        if (len == cap)
            v = realloc(v, (cap *= 2) * sizeof *v);
        v[len++] = strdup(line);
    }
    free(line);
    fclose(f);
    *n = len;
    return v;
}

/* Reads all of PATH into *BUF (grown as needed); returns its size. */
static size_t slurp(const char *path, char **buf, size_t *cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("stat", path);
    size_t size = (size_t)st.st_size;
    if (size > *cap) {
        *cap = size;
        *buf = realloc(*buf, *cap);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, *buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("read", path);
        got += (size_t)r;
    }
    close(fd);
    return size;
}

static void write_all(int fd, const char *buf, size_t len, const char *path)
{
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("write", path);
        buf += w;
        len -= (size_t)w;
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "copy") && strcmp(argv[1], "seq"))) {
        fprintf(stderr, "usage: fsyncbench copy DSTDIR LISTFILE | seq DSTFILE LISTFILE\n");
        return 2;
    }
    size_t n;
    char **list = read_list(argv[3], &n);
    char *buf = NULL;
    size_t cap = 0, bytes = 0;
    char dst[4096];
    double t0 = now();
    if (!strcmp(argv[1], "copy")) {
        for (size_t i = 0; i < n; i++) {
            size_t len = slurp(list[i], &buf, &cap);
            snprintf(dst, sizeof dst, "%s/%zu.dcm", argv[2], i);
            int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0)
                die("create", dst);
            write_all(fd, buf, len, dst);
            if (fsync(fd) < 0)
                die("fsync", dst);
            if (close(fd) < 0)
                die("close", dst);
            bytes += len;
        }
    } else {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            die("create", argv[2]);
        for (size_t i = 0; i < n; i++) {
            size_t len = slurp(list[i], &buf, &cap);
            write_all(fd, buf, len, argv[2]);
            bytes += len;
        }
        if (fdatasync(fd) < 0)
            die("fdatasync", argv[2]);
        if (close(fd) < 0)
            die("close", argv[2]);
    }
    double secs = now() - t0;
    printf("{\"mode\":\"%s\",\"files\":%zu,\"bytes\":%zu,\"seconds\":%.6f}\n", argv[1], n,
           bytes, secs);
    return 0;
}
