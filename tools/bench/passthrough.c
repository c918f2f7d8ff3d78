/* passthrough.c — the mount benchmark's anchor: a minimal passthrough FUSE file system
 * (libfuse's high-level API, as libfuse's example/passthrough.c), so dicomfs's mount is
 * measured against what FUSE itself allows on this kernel with the same libfuse, the same
 * loop and the same cache settings, on the same files.
 *
 *   passthrough [-o fsync_close] [-o keep_cache] [FUSE options] BACKING MOUNTPOINT
 *
 * Every path under MOUNTPOINT is BACKING's; each call is the matching *at() call on a
 * descriptor of BACKING, each open keeps its descriptor in fi->fh (reads and writes are
 * pread/pwrite on it, nothing looked up per read).
 *   keep_cache   reads keep the kernel's page cache across opens (fi->keep_cache), as
 *                dicomfs does for stored instances, whose bytes never change
 *   fsync_close  close() of a file written through the mount returns once its data is on
 *                disk (fsync at flush): the durability a close through dicomfs's inbox
 *                gives with --sync-close, for an honest comparison of copy-ins
 * Caches: entries and attributes 1 s, no negative entries (dicomfs's settings), and libfuse's
 * default 1 MiB max_write. Runs in the foreground with -f; stops on SIGINT/SIGTERM or
 * fusermount3 -u. Built by tools/bench/run.sh (cc, pkg-config fuse3); nothing else uses it. */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static struct {
    int root;         /* BACKING */
    int fsync_close;
    int keep_cache;
    char *backing;
} pt;

static const struct fuse_opt pt_opts[] = {
    {"fsync_close", offsetof(__typeof__(pt), fsync_close), 1},
    {"keep_cache", offsetof(__typeof__(pt), keep_cache), 1},
    FUSE_OPT_END,
};

/* PATH relative to BACKING ("/" is "."). */
static const char *rel(const char *path)
{
    while (*path == '/') path++;
    return *path ? path : ".";
}

static void *pt_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->use_ino = 1;
    cfg->entry_timeout = 1; /* dicomfs's caches (libfuse's defaults too) */
    cfg->attr_timeout = 1;
    cfg->negative_timeout = 0;
    return NULL;
}

static int pt_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    int rc = fi ? fstat((int)fi->fh, st) : fstatat(pt.root, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return rc ? -errno : 0;
}

static int pt_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    (void)off;
    (void)fi;
    int fd = openat(pt.root, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        enum fuse_fill_dir_flags plus = 0;
        memset(&st, 0, sizeof st);
        if ((flags & FUSE_READDIR_PLUS) && fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            plus = FUSE_FILL_DIR_PLUS;
        else {
            st.st_ino = e->d_ino;
            st.st_mode = (mode_t)DTTOIF(e->d_type);
        }
        if (fill(buf, e->d_name, &st, 0, plus)) break;
    }
    closedir(d);
    return 0;
}

static int pt_open(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(pt.root, rel(path), fi->flags & ~O_NOFOLLOW);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    fi->keep_cache = pt.keep_cache;
    return 0;
}

static int pt_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int fd = openat(pt.root, rel(path), fi->flags, mode);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int pt_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int pt_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pwrite((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

/* Only flush's result reaches close(): with fsync_close, the data is durable here. */
static int pt_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    if (!pt.fsync_close) return 0;
    int fl = fcntl((int)fi->fh, F_GETFL); /* FLUSH does not carry the open's flags */
    if (fl >= 0 && (fl & O_ACCMODE) != O_RDONLY && fsync((int)fi->fh) != 0) return -errno;
    return 0;
}

static int pt_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    close((int)fi->fh);
    return 0;
}

static int pt_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    int rc = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);
    return rc ? -errno : 0;
}

static int pt_mkdir(const char *path, mode_t mode) { return mkdirat(pt.root, rel(path), mode) ? -errno : 0; }
static int pt_unlink(const char *path) { return unlinkat(pt.root, rel(path), 0) ? -errno : 0; }
static int pt_rmdir(const char *path) { return unlinkat(pt.root, rel(path), AT_REMOVEDIR) ? -errno : 0; }

static int pt_rename(const char *from, const char *to, unsigned int flags)
{
    return renameat2(pt.root, rel(from), pt.root, rel(to), flags) ? -errno : 0;
}

static int pt_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int rc = fi ? fchmod((int)fi->fh, mode) : fchmodat(pt.root, rel(path), mode, 0);
    return rc ? -errno : 0;
}

static int pt_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    int rc = fi ? fchown((int)fi->fh, uid, gid) : fchownat(pt.root, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW);
    return rc ? -errno : 0;
}

static int pt_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (fi) return ftruncate((int)fi->fh, size) ? -errno : 0;
    int fd = openat(pt.root, rel(path), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = ftruncate(fd, size) ? -errno : 0;
    close(fd);
    return rc;
}

static int pt_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    int rc = fi ? futimens((int)fi->fh, tv) : utimensat(pt.root, rel(path), tv, AT_SYMLINK_NOFOLLOW);
    return rc ? -errno : 0;
}

static int pt_statfs(const char *path, struct statvfs *sv)
{
    (void)path;
    return fstatvfs(pt.root, sv) ? -errno : 0;
}

static const struct fuse_operations pt_ops = {
    .init = pt_init,
    .getattr = pt_getattr,
    .readdir = pt_readdir,
    .open = pt_open,
    .create = pt_create,
    .read = pt_read,
    .write = pt_write,
    .flush = pt_flush,
    .release = pt_release,
    .fsync = pt_fsync,
    .mkdir = pt_mkdir,
    .unlink = pt_unlink,
    .rmdir = pt_rmdir,
    .rename = pt_rename,
    .chmod = pt_chmod,
    .chown = pt_chown,
    .truncate = pt_truncate,
    .utimens = pt_utimens,
    .statfs = pt_statfs,
};

/* The first non-option argument is BACKING; the rest go to fuse_main. */
static int take_backing(void *data, const char *arg, int key, struct fuse_args *out)
{
    (void)data;
    (void)out;
    if (key == FUSE_OPT_KEY_NONOPT && !pt.backing) {
        pt.backing = strdup(arg);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    if (fuse_opt_parse(&args, &pt, pt_opts, take_backing) != 0) return 2;
    if (!pt.backing) {
        fprintf(stderr, "usage: passthrough [-o fsync_close] [-o keep_cache] [FUSE options] BACKING MOUNTPOINT\n");
        return 2;
    }
    pt.root = open(pt.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pt.root < 0) {
        perror(pt.backing);
        return 2;
    }
    umask(0);
    int rc = fuse_main(args.argc, args.argv, &pt_ops, NULL);
    fuse_opt_free_args(&args);
    return rc;
}
