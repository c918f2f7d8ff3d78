/* idle.c — what the main thread of `serve` and `mount` does while the faces work: it waits
 * for a signal that stops them, and meanwhile hands back to the kernel the memory malloc
 * holds free.
 *
 * Why: glibc keeps freed memory in its arenas (one per thread, up to 8 per core). Under a
 * mixed load the short-lived buffers of requests and listings are freed between long-lived
 * allocations (SQLite's page cache, the mount's node table), so the holes cannot shrink an
 * arena from its top: 150 s into a load run the server held 34 MB in use beside 91 MB free
 * (mallinfo2), the mount 20 MB beside 152 MB, and their RSS had crept up all the while and
 * stayed there when the load ended. malloc_trim returns the free pages of every arena
 * (madvise), so an idle process falls back to what it uses; under load the pages are soon
 * touched again (this does not lower the peak). It takes the arenas' locks one at a time,
 * briefly, and runs only when enough lies free and the heap changed since the last time. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <time.h>

#include "cli.h"

#define TRIM_EVERY_S 10
#define TRIM_WHEN_FREE (16u << 20) /* bytes free in the arenas before trimming is worth it */

static void release_free_memory(void)
{
    static struct mallinfo2 last; /* as it was after the last trim */
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks < TRIM_WHEN_FREE ||
        (mi.arena == last.arena && mi.uordblks == last.uordblks && mi.hblkhd == last.hblkhd))
        return; /* little to give back, or given back already (free chunks stay free) */
    malloc_trim(0);
    last = mallinfo2();
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
