/* upload.c — receiving an instance's bytes into a private temp file (tmp/<id>.part).
 * Nothing here touches the index: a file becomes an instance only in ingest.c and
 * commit.c, so a partial upload can never be half-stored. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

/* An upload stops counting as "may join the next group" when finished or aborted. */
void upload_done(store_t *s)
{
    if (atomic_fetch_sub(&s->uploads_open, 1) == 1) {
        pthread_mutex_lock(&s->q_lock);
        pthread_cond_signal(&s->q_cond);
        pthread_mutex_unlock(&s->q_lock);
    }
}

store_upload *store_upload_begin(store_t *s, store_err *err)
{
    if (s->readonly) {
        store_readonly(s, err);
        return NULL;
    }
    store_upload *up = calloc(1, sizeof *up);
    if (!up) abort();
    up->store = s;
    char id[33];
    store_random_hex(id, 16);
    snprintf(up->path, sizeof up->path, "%s/tmp/%s.part", s->dir, id);
    up->fd = open(up->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (up->fd < 0) {
        store_seterr(err, store_errno_status(errno), "cannot create a temp file in %s/tmp: %s", s->dir, strerror(errno));
        free(up);
        return NULL;
    }
    atomic_fetch_add(&s->uploads_open, 1);
    return up;
}

/* Extends the running CRC-32 by bytes written at OFF, or gives it up (ingest reads the
 * file back instead) when they are not the next ones. */
static void crc_extend(store_upload *up, const unsigned char *p, size_t len, uint64_t off)
{
    if (up->crc_lost || off != up->crc_len) {
        up->crc_lost = true;
        return;
    }
    up->crc_len += len;
    for (size_t step; len > 0; p += step, len -= step) {
        step = len < (1u << 30) ? len : (1u << 30);
        up->crc = (uint32_t)crc32(up->crc, p, (uInt)step);
    }
}

bool upload_crc(const store_upload *up, uint32_t *crc)
{
    if (up->crc_lost || up->crc_len != up->size) return false;
    *crc = up->crc;
    return true;
}

store_status store_upload_pwrite(store_upload *up, const void *buf, size_t len, uint64_t off)
{
    crc_extend(up, buf, len, off);
    const char *p = buf;
    size_t left = len;
    while (left > 0) {
        ssize_t n = pwrite(up->fd, p, left, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            return up->failed = n < 0 ? store_errno_status(errno) : STORE_EIO;
        }
        p += n;
        left -= (size_t)n;
        off += (uint64_t)n;
    }
    if (off > up->size) up->size = off;
    return STORE_OK;
}

store_status store_upload_write(store_upload *up, const void *buf, size_t len)
{
    return store_upload_pwrite(up, buf, len, up->size);
}

store_status store_upload_truncate(store_upload *up, uint64_t size)
{
    if (ftruncate(up->fd, (off_t)size) != 0) return store_errno_status(errno);
    if (size != up->crc_len) up->crc_lost = true; /* bytes cut off, or zeros added */
    up->size = size;
    return STORE_OK;
}

uint64_t store_upload_size(const store_upload *up) { return up->size; }

long store_upload_pread(store_upload *up, void *buf, size_t len, uint64_t off)
{
    ssize_t n = pread(up->fd, buf, len, (off_t)off);
    return n < 0 ? -1 : (long)n;
}

void store_upload_abort(store_upload *up)
{
    if (!up) return;
    upload_done(up->store);
    close(up->fd);
    unlink(up->path);
    free(up);
}

store_status store_upload_copy_fd(store_upload *up, int fd)
{
    /* copy_file_range lets the kernel move the bytes; read/write where it cannot. */
    for (;;) {
        ssize_t n = copy_file_range(fd, NULL, up->fd, NULL, 1 << 30, 0);
        if (n > 0) {
            up->size += (uint64_t)n;
            up->crc_lost = true; /* bytes we never saw */
            continue;
        }
        if (n == 0) return STORE_OK;
        if (errno == EINTR) continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) break;
        char buf[1 << 16];
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0 || (r < 0 && errno == EINTR))
            if (r > 0 && store_upload_write(up, buf, (size_t)r) != STORE_OK) return up->failed;
        if (r == 0) return STORE_OK;
        break;
    }
    return up->failed = store_errno_status(errno);
}
