/* retry.h — capped exponential backoff and the stop request (SIGTERM, SIGINT).
 *
 * The reference's rule: wait min(60, 2^n) s before retry n (n = 0, 1, ...), as long as the
 * overall time since the first failure stays within a limit (its TotalRetryDuration, 10
 * min by default). Waits end early when a stop is requested, so that SIGTERM is obeyed
 * within a fraction of a second even in the middle of a backoff. */
#ifndef DICOMCAST_RETRY_H
#define DICOMCAST_RETRY_H

#include <signal.h>
#include <stdbool.h>

extern volatile sig_atomic_t cast_stop_requested;

typedef struct {
    double limit_s; /* overall budget; < 0: no limit */
    double first;   /* monotonic time of the first failure */
    int attempt;    /* retries so far */
} retry_t;

void retry_init(retry_t *r, double limit_s);

/* After a failure: sleeps the next backoff and returns true, or returns false without
 * sleeping when the budget would run out or a stop was requested. */
bool retry_wait(retry_t *r);

/* The backoff before retry N: min(60, 2^n) seconds. */
double retry_backoff(int n);

/* Sleeps SECONDS unless a stop is requested; returns false when one was. */
bool cast_sleep(double seconds);

double cast_now(void); /* monotonic seconds */

#endif
