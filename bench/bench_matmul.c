/* utgolf's CPU matmul at the model's shapes, against OpenBLAS and against the machine's peak.

   The utgolf side is exactly what the model calls: a backend from utg_backend_cpu_create and its
   be->matmul (C = op(A) op(B), the transposition flags as the model passes them). The peer is
   OpenBLAS's cblas_sgemm with the same row-major layouts, loaded at run time with
   dlopen("libopenblas.so.0") (or --openblas PATH), so this builds without OpenBLAS and says
   "OpenBLAS not found" when it is missing. The peak is bench/peak.h's FMA-throughput kernel on every
   thread. Everything runs at 1 and at 2 threads (OpenMP; OpenBLAS gets openblas_set_num_threads and,
   in its OpenMP build, follows omp_set_num_threads too).

   Shapes, for T tokens (2,048: shape B is 4 x 512, shape A 8 x 256), d wide, kv = Hkv * head_dim,
   F = MLP_MULT * d, vocab V:
     fwd  x W^T   (NT): q/proj [T,d]x[d,d]^T, k/v [T,d]x[kv,d]^T, fc [T,d]x[F,d]^T, down [T,F]x[d,F]^T,
                        head [T,d]x[V,d]^T
     dX   dY W    (NN): the same five, gradient to the input
     dW   dY^T X  (TN): the same five, gradient to the weight (K = T)
     ns   Newton-Schulz on each Muon matrix: X X^T (NT; X^T X, TN, for the tall fc), A A (NN),
                        B X (NN; X B^T, NT, for fc)
   plus 2048^3 (NN). Every case also runs through be->matmul_bf16 (bf16 products, fp32 sums: what
   MATMUL_BF16 and Newton-Schulz use), reported against the measured vdpbf16ps peak. Each figure is the median of several timed samples (each sample repeats the
   call for at least ~15 ms), after one warm-up call. "mix" lines weight each case by how often one
   training step runs it (per layer: q and proj, k and v, fc, down; the head once; Newton-Schulz 5
   iterations per matrix) and divide the mix's FLOPs by its time: the matmul throughput a step sees.

   Lines starting "matmul-mix", "matmul-cube" and "peak" are for bench/run.sh (key:value fields).
   Nothing is asserted: shared machines are noisy.

   Options: --threads 1,2   --shapes A,B   --quick (fewer samples)   --openblas PATH   --no-cube */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench.h"
#include "peak.h"

/* cblas_sgemm of OpenBLAS's LP64 build (blasint = int), with CBLAS's enum values */
typedef void (*sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc);
typedef void (*set_threads_fn)(int);
typedef char *(*get_str_fn)(void);
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

static sgemm_fn ob_sgemm;
static set_threads_fn ob_set_threads;

typedef struct mm_case {
    char shape;   /* 'A', 'B', or 'X' for the cube */
    char set[8];  /* fwd, dX, dW, ns, cube */
    char name[24];
    int M, N, K, ta, tb;
    double per_step; /* how many times one training step runs it */
} mm_case;

#define MAX_CASES 64
static mm_case cases[MAX_CASES];
static int n_cases;

static void add(char shape, const char *set, const char *name, int M, int N, int K, int ta, int tb, double per_step) {
    mm_case *c = &cases[n_cases++];
    c->shape = shape;
    snprintf(c->set, sizeof c->set, "%s", set);
    snprintf(c->name, sizeof c->name, "%s.%s", set, name);
    c->M = M; c->N = N; c->K = K; c->ta = ta; c->tb = tb;
    c->per_step = per_step;
}

/* The matmuls of one training step of a 2,048-token batch at one shape (see the header comment). */
static void add_shape(char shape, int L, int d, int kv, int F, int V, int T) {
    const int NT0 = 0, NT1 = 1; /* UTG_NO_TRANS, UTG_TRANS */
    double ns = 5.0 * L;       /* Newton-Schulz iterations per matrix per step, times layers */
    add(shape, "fwd", "q,proj", T, d, d, NT0, NT1, 2.0 * L);
    add(shape, "fwd", "k,v", T, kv, d, NT0, NT1, 2.0 * L);
    add(shape, "fwd", "fc", T, F, d, NT0, NT1, 1.0 * L);
    add(shape, "fwd", "down", T, d, F, NT0, NT1, 1.0 * L);
    add(shape, "fwd", "head", T, V, d, NT0, NT1, 1.0);
    add(shape, "dX", "q,proj", T, d, d, NT0, NT0, 2.0 * L);
    add(shape, "dX", "k,v", T, d, kv, NT0, NT0, 2.0 * L);
    add(shape, "dX", "fc", T, d, F, NT0, NT0, 1.0 * L);
    add(shape, "dX", "down", T, F, d, NT0, NT0, 1.0 * L);
    add(shape, "dX", "head", T, d, V, NT0, NT0, 1.0);
    add(shape, "dW", "q,proj", d, d, T, NT1, NT0, 2.0 * L);
    add(shape, "dW", "k,v", kv, d, T, NT1, NT0, 2.0 * L);
    add(shape, "dW", "fc", F, d, T, NT1, NT0, 1.0 * L);
    add(shape, "dW", "down", d, F, T, NT1, NT0, 1.0 * L);
    add(shape, "dW", "head", V, d, T, NT1, NT0, 1.0);
    /* q and proj [d,d] (wide): X X^T, A A, B X; k and v [kv,d]; fc [F,d] is tall: X^T X, A A, X B^T;
       down [d,F] (wide) */
    add(shape, "ns", "xxT.q,proj", d, d, d, NT0, NT1, 2 * ns);
    add(shape, "ns", "xxT.k,v", kv, kv, d, NT0, NT1, 2 * ns);
    add(shape, "ns", "xTx.fc", d, d, F, NT1, NT0, ns);
    add(shape, "ns", "xxT.down", d, d, F, NT0, NT1, ns);
    add(shape, "ns", "AA.d", d, d, d, NT0, NT0, 4 * ns);
    add(shape, "ns", "AA.kv", kv, kv, kv, NT0, NT0, 2 * ns);
    add(shape, "ns", "BX.q,proj", d, d, d, NT0, NT0, 2 * ns);
    add(shape, "ns", "BX.k,v", kv, d, kv, NT0, NT0, 2 * ns);
    add(shape, "ns", "XBT.fc", F, d, d, NT0, NT1, ns);
    add(shape, "ns", "BX.down", d, F, d, NT0, NT0, ns);
}

/* ---------------------------------------------------------------------------------------- timing */

typedef void (*run_fn)(const mm_case *c, float *C, const float *A, const float *B);
static utg_backend *g_be;

static void run_utg(const mm_case *c, float *C, const float *A, const float *B) {
    g_be->matmul(g_be, UTG_MM_F32, C, A, B, c->M, c->N, c->K, c->ta ? UTG_TRANS : UTG_NO_TRANS, c->tb ? UTG_TRANS : UTG_NO_TRANS,
                 1.0f, 0.0f);
}

static void run_utg_bf16(const mm_case *c, float *C, const float *A, const float *B) {
    g_be->matmul_bf16(g_be, UTG_MM_F32, C, A, B, c->M, c->N, c->K, c->ta ? UTG_TRANS : UTG_NO_TRANS, c->tb ? UTG_TRANS : UTG_NO_TRANS,
                      1.0f, 0.0f);
}

static void run_ob(const mm_case *c, float *C, const float *A, const float *B) {
    ob_sgemm(CBLAS_ROW_MAJOR, c->ta ? CBLAS_TRANS : CBLAS_NO_TRANS, c->tb ? CBLAS_TRANS : CBLAS_NO_TRANS, c->M, c->N,
             c->K, 1.0f, A, c->ta ? c->M : c->K, B, c->tb ? c->K : c->N, 0.0f, C, c->N);
}

/* Median seconds per call: one warm-up call, then `samples` samples, each repeating the call until
   at least min_s has passed. */
static double time_case(run_fn f, const mm_case *c, float *C, const float *A, const float *B, int samples, double min_s) {
    double v[32];
    int s;
    f(c, C, A, B);
    if (samples > 32) samples = 32;
    for (s = 0; s < samples; s++) {
        double t0 = peak_now_s(), t;
        int calls = 0;
        do {
            f(c, C, A, B);
            calls++;
            t = peak_now_s() - t0;
        } while (t < min_s);
        v[s] = t / calls;
    }
    return median(v, samples);
}

static double flops(const mm_case *c) { return 2.0 * c->M * c->N * c->K; }

/* largest |x - y| over the largest |y| */
static double rel_diff(const float *x, const float *y, size_t n) {
    double dmax = 0, ymax = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)x[i] - y[i]), a = fabs((double)y[i]);
        if (d > dmax) dmax = d;
        if (a > ymax) ymax = a;
    }
    return ymax > 0 ? dmax / ymax : dmax;
}

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#endif
    if (ob_set_threads) ob_set_threads(t);
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (s && *s && n < max) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

int main(int argc, char **argv) {
    const char *ob_path = "libopenblas.so.0", *shapes = "A,B", *env;
    int threads[4] = {1, 2}, n_threads = 2, quick = 0, cube = 1, i, ti;
    int samples;
    double min_s;
    size_t max_floats = 0;
    float *A, *B, *C1, *C2;
    void *lib;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--no-cube")) cube = 0;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) n_threads = parse_list(argv[++i], threads, 4);
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) shapes = argv[++i];
        else if (!strcmp(argv[i], "--openblas") && i + 1 < argc) ob_path = argv[++i];
        else {
            printf("usage: %s [--threads 1,2] [--shapes A,B] [--quick] [--no-cube] [--openblas PATH]\n", argv[0]);
            return 2;
        }
    }
    samples = quick ? 3 : 7;
    min_s = quick ? 0.008 : 0.015;

    /* model shapes, 2,048 tokens per step */
    if (strchr(shapes, 'A')) add_shape('A', 4, 256, 2 * 64, 512, 1024, 2048);
    if (strchr(shapes, 'B')) add_shape('B', 9, 512, 4 * 64, 1024, 1024, 2048);
    if (cube) add('X', "cube", "2048^3", 2048, 2048, 2048, 0, 0, 0.0);
    for (i = 0; i < n_cases; i++) {
        size_t a = (size_t)cases[i].M * cases[i].K, b = (size_t)cases[i].K * cases[i].N, c = (size_t)cases[i].M * cases[i].N;
        if (a > max_floats) max_floats = a;
        if (b > max_floats) max_floats = b;
        if (c > max_floats) max_floats = c;
    }

    printf("utgolf %s: CPU matmul (be->matmul) vs OpenBLAS cblas_sgemm vs measured peak\n", utg_version());
    if (utg_backend_cpu_create(NULL, &g_be) != UTG_OK) { printf("cannot create the CPU backend\n"); return 1; }
    lib = dlopen(ob_path, RTLD_NOW | RTLD_LOCAL);
    if (lib) {
        get_str_fn cfg, core;
        *(void **)&ob_sgemm = dlsym(lib, "cblas_sgemm");
        *(void **)&ob_set_threads = dlsym(lib, "openblas_set_num_threads");
        *(void **)&cfg = dlsym(lib, "openblas_get_config");
        *(void **)&core = dlsym(lib, "openblas_get_corename");
        if (!ob_sgemm) { printf("OpenBLAS: %s has no cblas_sgemm\n", ob_path); lib = NULL; }
        else printf("OpenBLAS: %s (%s; core %s)\n", ob_path, cfg ? cfg() : "?", core ? core() : "?");
    }
    if (!lib) printf("OpenBLAS not found (dlopen %s): %s; utgolf and peak only\n", ob_path, dlerror());
    if ((env = getenv("OPENBLAS_CORETYPE")) != NULL)
        printf("note: OPENBLAS_CORETYPE=%s is set: OpenBLAS runs that core's kernels (bench/run.sh unsets it)\n", env);

    A = (float *)g_be->buf_alloc(g_be, max_floats * sizeof(float));
    B = (float *)g_be->buf_alloc(g_be, max_floats * sizeof(float));
    C1 = (float *)g_be->buf_alloc(g_be, max_floats * sizeof(float));
    C2 = (float *)g_be->buf_alloc(g_be, max_floats * sizeof(float));
    if (!A || !B || !C1 || !C2) { printf("out of memory\n"); return 1; }
    {
        uint64_t s = 0x9e3779b97f4a7c15ull;
        size_t k;
        for (k = 0; k < max_floats; k++) { /* uniform in [-1, 1) */
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            A[k] = (float)((double)(s >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            B[k] = (float)((double)(s >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
        }
    }

    for (ti = 0; ti < n_threads; ti++) {
        int t = threads[ti], sh;
        double peak, peak_bf16;
        const char *isa = peak_isa(PEAK_FP32);
        set_threads(t);
        peak = peak_gflops(PEAK_FP32, t, quick ? 0.5 : 1.0);
        peak_bf16 = peak_gflops(PEAK_BF16, t, quick ? 0.5 : 1.0);
        printf("\n== %d thread%s: peak fp32 %.1f GFLOP/s (%s FMA), bf16 %.1f GFLOP/s (%s)\n", t, t > 1 ? "s" : "", peak,
               isa, peak_bf16, peak_isa(PEAK_BF16));
        printf("peak threads:%d fp32_gflops:%.1f bf16_gflops:%.1f isa:%s\n", t, peak, peak_bf16, isa);
        printf("%-5s %-16s %5s %5s %5s %2s %9s %9s %7s %8s %8s %8s %9s %9s\n", "shape", "case", "M", "N", "K", "op", "utgolf",
               "OpenBLAS", "utg/OB", "utg/peak", "OB/peak", "diff", "utg bf16", "/bf16pk");
        fflush(stdout);
        for (sh = 0; sh < 3; sh++) {
            char shape = "ABX"[sh];
            const char *sets[4] = {"fwd", "dX", "dW", "ns"};
            double mix_f[5] = {0}, mix_tu[5] = {0}, mix_to[5] = {0}, mix_tb[5] = {0}; /* fwd, dX, dW, ns, fwd+bwd */
            int any = 0, k;
            for (i = 0; i < n_cases; i++) {
                const mm_case *c = &cases[i];
                double tu, to = 0, tb = 0, gu, go = 0, gb = 0, diff = -1;
                if (c->shape != shape) continue;
                any = 1;
                tu = time_case(run_utg, c, C1, A, B, samples, min_s);
                gu = flops(c) / tu / 1e9;
                if (g_be->matmul_bf16) {
                    tb = time_case(run_utg_bf16, c, C2, A, B, samples, min_s);
                    gb = flops(c) / tb / 1e9;
                }
                if (ob_sgemm) {
                    to = time_case(run_ob, c, C2, A, B, samples, min_s);
                    go = flops(c) / to / 1e9;
                    diff = rel_diff(C1, C2, (size_t)c->M * c->N);
                }
                printf("%-5c %-16s %5d %5d %5d %c%c %9.1f", shape == 'X' ? '-' : shape, c->name, c->M, c->N, c->K,
                       c->ta ? 'T' : 'N', c->tb ? 'T' : 'N', gu);
                if (ob_sgemm) printf(" %9.1f %7.2f %8.2f %8.2f %8.1e", go, gu / go, gu / peak, go / peak, diff);
                else printf(" %9s %7s %8.2f %8s %8s", "-", "-", gu / peak, "-", "-");
                if (gb > 0) printf(" %9.1f %9.2f\n", gb, gb / peak_bf16);
                else printf(" %9s %9s\n", "-", "-");
                if (shape == 'X')
                    printf("matmul-cube threads:%d case:2048^3 utgolf_gflops:%.1f openblas_gflops:%.1f peak_gflops:%.1f "
                           "utgolf_bf16_gflops:%.1f bf16_peak_gflops:%.1f\n", t, gu, go, peak, gb, peak_bf16);
                fflush(stdout);
                for (k = 0; k < 4; k++)
                    if (!strcmp(c->set, sets[k])) {
                        mix_f[k] += c->per_step * flops(c);
                        mix_tu[k] += c->per_step * tu;
                        mix_to[k] += c->per_step * to;
                        mix_tb[k] += c->per_step * tb;
                        if (k < 3) {
                            mix_f[4] += c->per_step * flops(c);
                            mix_tu[4] += c->per_step * tu;
                            mix_to[4] += c->per_step * to;
                            mix_tb[4] += c->per_step * tb;
                        }
                    }
            }
            if (!any || shape == 'X') continue;
            for (k = 0; k < 5; k++) {
                const char *nm = k < 4 ? sets[k] : "fwd+bwd";
                double gu = mix_f[k] / mix_tu[k] / 1e9, go = ob_sgemm ? mix_f[k] / mix_to[k] / 1e9 : 0;
                double gb = mix_tb[k] > 0 ? mix_f[k] / mix_tb[k] / 1e9 : 0;
                printf("matmul-mix threads:%d shape:%c set:%s gflop_per_step:%.1f utgolf_ms:%.1f openblas_ms:%.1f "
                       "utgolf_gflops:%.1f openblas_gflops:%.1f peak_gflops:%.1f utgolf_bf16_gflops:%.1f bf16_peak_gflops:%.1f\n",
                       t, shape, nm, mix_f[k] / 1e9, mix_tu[k] * 1e3, mix_to[k] * 1e3, gu, go, peak, gb, peak_bf16);
            }
            fflush(stdout);
        }
    }
    g_be->buf_free(g_be, A); g_be->buf_free(g_be, B); g_be->buf_free(g_be, C1); g_be->buf_free(g_be, C2);
    utg_backend_destroy(g_be);
    return 0;
}
