/* Shared by the libFuzzer targets tests/fuzz_*.c: FZ_REQUIRE(cond, fmt, ...) aborts with the
   target's name (FZ_NAME, defined before this is included), the line and a message when an
   invariant fails, so that libFuzzer, and fuzz_replay, report it as a crash. */
#ifndef UTG_TEST_FUZZ_H
#define UTG_TEST_FUZZ_H
#include <stdio.h>
#include <stdlib.h>

#define FZ_REQUIRE(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, FZ_NAME ": invariant failed at line %d: %s: ", __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
