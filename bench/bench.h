/* Timing helpers shared by the benchmarks: a monotonic clock in ms, the median of a sample, and the
   timed forward/backward loop. Include after utgolf.h. */
#ifndef UTG_BENCH_H
#define UTG_BENCH_H
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* sorts v in place */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* reps timed forward + backward passes (zero_grads counted with the forward): the medians in ms */
static __attribute__((unused)) void time_fwd_bwd(utg_model *m, const int32_t *x, const int32_t *y, int seqs, int reps, double *fwd_ms, double *bwd_ms) {
    double fwd[64], bwd[64], loss;
    int r;
    if (reps > 64) reps = 64;
    for (r = 0; r < reps; r++) {
        double t0 = now_ms(), t1, t2;
        utg_model_zero_grads(m);
        utg_model_forward(m, x, y, seqs, &loss);
        t1 = now_ms();
        utg_model_backward(m, 1.0f);
        t2 = now_ms();
        fwd[r] = t1 - t0;
        bwd[r] = t2 - t1;
    }
    *fwd_ms = median(fwd, reps);
    *bwd_ms = median(bwd, reps);
}
#endif
