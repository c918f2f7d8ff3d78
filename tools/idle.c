/* idle.c — what the main thread of `serve` and `mount` does while the faces work: it waits
 * for a signal that stops them, and meanwhile hands back to the kernel the memory malloc
 * holds free.
 *
 * Why: glibc keeps freed memory in its arenas (one per thread, up to 8 per core). Under a
 * mixed load the short-lived buffers of requests and listings are freed between long-lived
 * allocations (SQLite's page cache, the mount's node table), so the holes cannot shrink an
 * arena from its top: a 10-minute load left the server with 34 MB in use beside 91 MB free
 * (mallinfo2), the mount with 20 MB beside 152 MB, and RSS creeping up all the time.
 * malloc_trim returns the free pages of every arena (madvise), so RSS follows what is in
 * use. It takes the arenas' locks one at a time, briefly, and runs only when enough is free. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <time.h>

#include "cli.h"

#define TRIM_EVERY_S 10
#define TRIM_WHEN_FREE (16u << 20) /* bytes free in the arenas before trimming is worth it */

static void release_free_memory(void)
{
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks >= TRIM_WHEN_FREE) malloc_trim(0);
}

int cli_idle_until_signal(const sigset_t *stop)
{
    const struct timespec every = {TRIM_EVERY_S, 0};
    for (;;) {
        int sig = sigtimedwait(stop, NULL, &every);
        if (sig > 0) return sig;
        if (errno == EAGAIN) release_free_memory(); /* else EINTR: wait again */
    }
}
