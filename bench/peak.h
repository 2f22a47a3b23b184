/* The machine's measured peak: FMA throughput on every OpenMP thread, for the ratios the benchmarks
   print (utgolf / peak, model FLOPs utilisation).

   fp32: independent chains of fused multiply-adds, a = a*b + c (b just below 1, so the chains settle
   at c/(1-b) and never overflow or go denormal), in 512-bit registers when the CPU has AVX-512F,
   else 256-bit AVX2/FMA, else plain C (which the compiler may or may not vectorise). 16 chains: more
   than latency x FMA pipes on current x86 cores (4 x 2), fewer than the 32 (AVX-512) or 16 (AVX2)
   vector registers. One FMA lane is 2 FLOPs.
   bf16: the same with AVX512_BF16's vdpbf16ps (a += pairs of bf16 products in fp32), 64 FLOPs per
   512-bit instruction; 0 when the CPU lacks it. This is the ceiling of a bf16 matmul (oneDNN, torch's
   bf16 autocast), not of anything utgolf does.

   peak_gflops(kind, threads, seconds): runs the kernel on `threads` OpenMP threads at once for about
   `seconds` (a warm-up round first, so clocks have ramped), returns total GFLOP/s of the fastest round.
   On a machine where another process holds a core, the 2-thread figure comes out near the 1-thread
   one; bench/run.sh warns when it does. Include after
   <omp.h>-capable flags (-fopenmp); without OpenMP it measures one thread whatever `threads` is. */
#ifndef UTG_BENCH_PEAK_H
#define UTG_BENCH_PEAK_H
#include <stdio.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define PEAK_X86 1
#endif

#define PEAK_CHAINS 16

static double peak_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* Each kernel runs `iters` rounds of PEAK_CHAINS vector FMAs and returns a value that depends on
   every chain (printed nowhere, but it keeps the loop alive). */
#ifdef PEAK_X86
__attribute__((target("avx512f"))) static float peak_kernel_avx512(long iters) {
    __m512 a[PEAK_CHAINS], b = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f), s;
    float out[16];
    long i;
    int j;
    for (j = 0; j < PEAK_CHAINS; j++) a[j] = _mm512_set1_ps(0.5f + 0.01f * j);
    for (i = 0; i < iters; i++) {
        for (j = 0; j < PEAK_CHAINS; j++) a[j] = _mm512_fmadd_ps(a[j], b, c);
    }
    s = a[0];
    for (j = 1; j < PEAK_CHAINS; j++) s = _mm512_add_ps(s, a[j]);
    _mm512_storeu_ps(out, s);
    return out[0] + out[15];
}

__attribute__((target("avx2,fma"))) static float peak_kernel_avx2(long iters) {
    __m256 a[PEAK_CHAINS], b = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f), s;
    float out[8];
    long i;
    int j;
    for (j = 0; j < PEAK_CHAINS; j++) a[j] = _mm256_set1_ps(0.5f + 0.01f * j);
    for (i = 0; i < iters; i++) {
        for (j = 0; j < PEAK_CHAINS; j++) a[j] = _mm256_fmadd_ps(a[j], b, c);
    }
    s = a[0];
    for (j = 1; j < PEAK_CHAINS; j++) s = _mm256_add_ps(s, a[j]);
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

#if defined(__GNUC__) && (__GNUC__ >= 10 || defined(__clang__))
#define PEAK_HAVE_BF16 1
__attribute__((target("avx512f,avx512bf16"))) static float peak_kernel_bf16(long iters) {
    __m512 a[PEAK_CHAINS], s;
    __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    __m512bh y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    float out[16];
    long i;
    int j;
    for (j = 0; j < PEAK_CHAINS; j++) a[j] = _mm512_set1_ps(0.01f * j);
    for (i = 0; i < iters; i++) {
        for (j = 0; j < PEAK_CHAINS; j++) a[j] = _mm512_dpbf16_ps(a[j], x, y);
    }
    s = a[0];
    for (j = 1; j < PEAK_CHAINS; j++) s = _mm512_add_ps(s, a[j]);
    _mm512_storeu_ps(out, s);
    return out[0] + out[15];
}
#endif
#endif

static float peak_kernel_plain(long iters) {
    float a[PEAK_CHAINS][8], s = 0;
    long i;
    int j, l;
    for (j = 0; j < PEAK_CHAINS; j++)
        for (l = 0; l < 8; l++) a[j][l] = 0.5f + 0.01f * j;
    for (i = 0; i < iters; i++)
        for (j = 0; j < PEAK_CHAINS; j++)
            for (l = 0; l < 8; l++) a[j][l] = a[j][l] * 0.9999999f + 1e-7f;
    for (j = 0; j < PEAK_CHAINS; j++) s += a[j][0] + a[j][7];
    return s;
}

enum { PEAK_FP32 = 0, PEAK_BF16 = 1 };
enum { PEAK_K_NONE = 0, PEAK_K_PLAIN, PEAK_K_AVX2, PEAK_K_AVX512, PEAK_K_BF16 };

/* The kernel that runs for `kind` here, with its FLOPs per round (0: not supported). */
static int peak_kernel(int kind, double *flops_per_round) {
#ifdef PEAK_X86
    __builtin_cpu_init();
    if (kind == PEAK_BF16) {
#ifdef PEAK_HAVE_BF16
        if (__builtin_cpu_supports("avx512bf16")) { *flops_per_round = PEAK_CHAINS * 64.0; return PEAK_K_BF16; }
#endif
        *flops_per_round = 0;
        return PEAK_K_NONE;
    }
    if (__builtin_cpu_supports("avx512f")) { *flops_per_round = PEAK_CHAINS * 32.0; return PEAK_K_AVX512; }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) { *flops_per_round = PEAK_CHAINS * 16.0; return PEAK_K_AVX2; }
#endif
    if (kind == PEAK_BF16) { *flops_per_round = 0; return PEAK_K_NONE; }
    *flops_per_round = PEAK_CHAINS * 16.0;
    return PEAK_K_PLAIN;
}

/* The name of the instruction set the kernel for `kind` uses here. */
static const char *peak_isa(int kind) {
    static const char *names[] = {"none", "plain", "avx2", "avx512", "avx512_bf16"};
    double fpr;
    return names[peak_kernel(kind, &fpr)];
}

static float peak_run(int k, long iters) {
    switch (k) {
#ifdef PEAK_X86
    case PEAK_K_AVX512: return peak_kernel_avx512(iters);
    case PEAK_K_AVX2: return peak_kernel_avx2(iters);
#ifdef PEAK_HAVE_BF16
    case PEAK_K_BF16: return peak_kernel_bf16(iters);
#endif
#endif
    default: return peak_kernel_plain(iters);
    }
}

static volatile float peak_sink;

/* Total GFLOP/s of `threads` threads each running the kernel: the fastest of 5 timed rounds of about
   seconds/6 each, after a warm-up round of the same length. */
static double peak_gflops(int kind, int threads, double seconds) {
    double fpr, t0, t1, samples[5], per_iter_s, gf;
    int isa = peak_kernel(kind, &fpr);
    long iters = 1L << 16;
    int r, i, j;
    if (fpr <= 0) return 0.0;
    /* size the rounds on one thread: iters per second */
    for (;;) {
        t0 = peak_now_s();
        peak_sink = peak_run(isa, iters);
        t1 = peak_now_s();
        if (t1 - t0 > 0.02) break;
        iters *= 2;
    }
    per_iter_s = (t1 - t0) / iters;
    iters = (long)(seconds / 6.0 / per_iter_s) + 1;
    for (r = -1; r < 5; r++) { /* r = -1: warm-up */
        double t_start, t_end;
        t_start = peak_now_s();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
        {
            float v = peak_run(isa, iters);
#ifdef _OPENMP
#pragma omp atomic
#endif
            peak_sink += v;
        }
        t_end = peak_now_s();
        if (r >= 0) samples[r] = t_end - t_start;
    }
    for (i = 1; i < 5; i++) /* sorted: the fastest round is the peak (noise only slows a round) */
        for (j = i; j > 0 && samples[j - 1] > samples[j]; j--) { double t = samples[j]; samples[j] = samples[j - 1]; samples[j - 1] = t; }
    gf = fpr * (double)iters * threads / samples[0] / 1e9;
#ifndef _OPENMP
    gf /= threads;
#endif
    return gf;
}
#endif
