/* testlib.h — CHECK(cond, "what the rule is") counts and reports; test_summary() prints
 * "N passed, N failed" (the line CI reads) and gives the exit status. */
#ifndef DICOMFS_TESTLIB_H
#define DICOMFS_TESTLIB_H

#include <stdio.h>

extern int test_failures, test_checks;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        test_checks++;                                                     \
        if (!(cond)) {                                                     \
            test_failures++;                                               \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

int test_summary(void);

#endif
