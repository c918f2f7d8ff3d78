/* retry.c — backoff and interruptible sleeps (retry.h). */
#include "retry.h"

#include <time.h>

volatile sig_atomic_t cast_stop_requested;

double cast_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void retry_init(retry_t *r, double limit_s)
{
    r->limit_s = limit_s;
    r->first = 0;
    r->attempt = 0;
}

double retry_backoff(int n)
{
    return n >= 6 ? 60.0 : (double)(1 << n);
}

bool cast_sleep(double seconds)
{
    double end = cast_now() + seconds;
    while (!cast_stop_requested) {
        double left = end - cast_now();
        if (left <= 0)
            return true;
        /* Slices of 100 ms: a signal may arrive just before nanosleep starts. */
        double slice = left < 0.1 ? left : 0.1;
        struct timespec ts = {(time_t)slice, (long)((slice - (time_t)slice) * 1e9)};
        nanosleep(&ts, NULL);
    }
    return false;
}

bool retry_wait(retry_t *r)
{
    double now = cast_now();
    if (r->attempt == 0)
        r->first = now;
    double wait = retry_backoff(r->attempt);
    if (cast_stop_requested)
        return false;
    if (r->limit_s >= 0 && now + wait - r->first > r->limit_s)
        return false;
    r->attempt++;
    return cast_sleep(wait);
}
