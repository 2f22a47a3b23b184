/* A minimal test harness: each test is a function; CHECK records failures with file and line; the
   runner prints one line per test and the closing "N passed, N failed". */
#ifndef UTG_TEST_H
#define UTG_TEST_H
#include <stdio.h>
#include <string.h>

static int t__failures_in_test;
static int t__passed, t__failed;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            t__failures_in_test++;                                            \
            printf("    check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                              \
            printf("\n");                                                     \
        }                                                                     \
    } while (0)

static void t__run(const char *name, void (*fn)(void), const char *filter) {
    if (filter && !strstr(name, filter)) return;
    t__failures_in_test = 0;
    fn();
    if (t__failures_in_test == 0) {
        t__passed++;
        printf("ok    %s\n", name);
    } else {
        t__failed++;
        printf("FAIL  %s\n", name);
    }
    fflush(stdout);
}
#define RUN(fn) t__run(#fn, fn, filter)
#define TEST_SUMMARY() (printf("%d passed, %d failed\n", t__passed, t__failed), t__failed ? 1 : 0)

#endif
