/* testlib.c — the tiny test harness of the unit tests (see testlib.h). */
#include "testlib.h"

#include <stdlib.h>

int test_failures, test_checks;

int test_summary(void)
{
    printf("%d passed, %d failed\n", test_checks - test_failures, test_failures);
    return test_failures ? 1 : 0;
}
