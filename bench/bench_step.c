/* Where a training step's time goes on the CPU backend: each phase (forward with zero_grads,
   backward, optimizer step, eval forward) split into matmul (be->matmul and be->matmul_bf16, with
   the GFLOP/s they reach in place), attention (attn_fwd and attn_bwd) and everything else (norms,
   RoPE, activations, the softcapped cross-entropy, the optimizer's elementwise work, ...).

   It wraps the backend's function pointers with timers (utg_model_desc.backend), so it measures the
   calls the model really makes, on their real operands; they add a clock read per call. The
   optimizer runs whole Muon tensors on several threads at once (UTG_BACKEND_CONCURRENT), so its
   matmul time is summed over those threads (thread-milliseconds) and can exceed the phase.
   Shapes A and B (2,048 tokens per step; bench/bench_train.c describes them), in fp32
   and with MATMUL_BF16=1. Medians of `reps` steps after two warm-up steps (phases separately, so
   they need not add up). Prints milliseconds; nothing is asserted (shared machines are noisy). */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench.h"

static utg_backend orig; /* the real ops */
static double t_mm, t_attn, f_mm;

typedef void (*mm_fn)(utg_backend *, int, void *, const void *, const void *, int, int, int, utg_trans, utg_trans,
                      float, float);
static void timed_mm(mm_fn fn, utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N,
                     int K, utg_trans ta, utg_trans tb, float alpha, float beta) {
    double t = now_ms();
    fn(be, types, C, A, B, M, N, K, ta, tb, alpha, beta);
    t = now_ms() - t;
#ifdef _OPENMP
#pragma omp atomic
#endif
    t_mm += t;
#ifdef _OPENMP
#pragma omp atomic
#endif
    f_mm += 2.0 * M * N * K;
}
static void w_matmul(utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N, int K,
                     utg_trans ta, utg_trans tb, float alpha, float beta) {
    timed_mm(orig.matmul, be, types, C, A, B, M, N, K, ta, tb, alpha, beta);
}
static void w_matmul_bf16(utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N, int K,
                          utg_trans ta, utg_trans tb, float alpha, float beta) {
    timed_mm(orig.matmul_bf16, be, types, C, A, B, M, N, K, ta, tb, alpha, beta);
}
static void w_attn_fwd(utg_backend *be, utg_dtype at, void *y, float *lse, const void *q, const void *k,
                       const void *v, int B, int T, int H, int Hkv, int hd, float scale) {
    double t = now_ms();
    orig.attn_fwd(be, at, y, lse, q, k, v, B, T, H, Hkv, hd, scale);
    t_attn += now_ms() - t;
}
static void w_attn_bwd(utg_backend *be, utg_dtype at, void *dq, void *dk, void *dv, const void *dy, const void *q,
                       const void *k, const void *v, const void *y, const float *lse, int B, int T, int H, int Hkv,
                       int hd, float scale) {
    double t = now_ms();
    orig.attn_bwd(be, at, dq, dk, dv, dy, q, k, v, y, lse, B, T, H, Hkv, hd, scale);
    t_attn += now_ms() - t;
}

enum { PH_FWD, PH_BWD, PH_OPT, PH_EVAL, N_PH };

static void bench(const char *label, int layers, int dim, int heads, int kv, int seq, int seqs, int bf16, int reps) {
    static const char *names[N_PH] = {"fwd", "bwd", "opt", "eval"};
    utg_model_desc d;
    utg_backend *be;
    utg_model *m = NULL;
    utg_optim *o = NULL;
    int32_t *x, *y;
    int n = seq * seqs, i, r, p;
    double loss, tot[N_PH][64], mm[N_PH][64], at[N_PH][64], fl[N_PH] = {0};
    if (reps > 64) reps = 64;
    if (utg_backend_cpu_create(NULL, &be) != UTG_OK) { printf("cannot create the CPU backend\n"); exit(1); }
    orig = *be;
    be->matmul = w_matmul;
    be->matmul_bf16 = orig.matmul_bf16 ? w_matmul_bf16 : NULL;
    be->attn_fwd = w_attn_fwd;
    be->attn_bwd = w_attn_bwd;
    memset(&d, 0, sizeof d);
    d.backend = be;
    d.config.num_layers = layers; d.config.model_dim = dim; d.config.num_heads = heads; d.config.num_kv_heads = kv;
    d.config.train_seq_len = seq; d.config.matmul_bf16 = bf16;
    if (utg_model_create(&d, &m) != UTG_OK || utg_model_reserve(m, seqs) != UTG_OK || utg_optim_create(m, &o) != UTG_OK) {
        printf("%s: %s\n", label, m ? utg_model_message(m) : "cannot create the model");
        exit(1);
    }
    x = (int32_t *)malloc(sizeof(int32_t) * n);
    y = (int32_t *)malloc(sizeof(int32_t) * n);
    if (!x || !y) { printf("out of memory\n"); exit(1); }
    for (i = 0; i < n; i++) { x[i] = (i * 7919) % 1024; y[i] = (i * 104729 + 3) % 1024; }
    for (r = -2; r < reps; r++) {
        for (p = 0; p < N_PH; p++) {
            double t0 = now_ms(), m0 = t_mm, a0 = t_attn, f0 = f_mm;
            utg_result res = UTG_OK;
            if (p == PH_FWD) { utg_model_zero_grads(m); res = utg_model_forward(m, x, y, seqs, &loss); }
            else if (p == PH_BWD) res = utg_model_backward(m, 1.0f);
            else if (p == PH_OPT) res = utg_optim_step(o, r + 2, 1.0, NULL);
            else res = utg_model_eval(m, x, y, seqs, seq, NULL, &loss);
            if (res != UTG_OK) { printf("%s: %s\n", label, utg_model_message(m)); exit(1); }
            if (r < 0) continue;
            tot[p][r] = now_ms() - t0;
            mm[p][r] = t_mm - m0;
            at[p][r] = t_attn - a0;
            fl[p] = f_mm - f0;
        }
    }
    printf("%s, %s (%d tok):\n", label, bf16 ? "MATMUL_BF16=1" : "fp32", n);
    for (p = 0; p < N_PH; p++) {
        double t = median(tot[p], reps), a = median(mm[p], reps), b = median(at[p], reps);
        if (p == PH_OPT) /* concurrent tensors: thread-time, and the phase's throughput */
            printf("  %-4s %8.1f ms   matmul %7.1f thread-ms (%5.1f GFLOP; %5.0f GFLOP/s over the phase)\n", names[p], t, a,
                   fl[p] / 1e9, fl[p] / t / 1e6);
        else
            printf("  %-4s %8.1f ms   matmul %7.1f ms (%5.1f GFLOP at %5.0f GFLOP/s)   attention %6.1f ms   other %6.1f ms\n",
                   names[p], t, a, fl[p] / 1e9, a > 0 ? fl[p] / a / 1e6 : 0.0, b, t - a - b);
    }
    fflush(stdout);
    free(x); free(y);
    utg_optim_destroy(o);
    utg_model_destroy(m);
    utg_backend_destroy(be);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 3, bf16;
    if (reps < 1 || reps > 64) reps = 3;
    printf("utgolf %s CPU backend: where a training step's time goes, median of %d\n", utg_version(), reps);
    for (bf16 = 0; bf16 < 2; bf16++) {
        bench("shape A: 4L d256 4/2 heads T256 x8", 4, 256, 4, 2, 256, 8, bf16, reps);
        bench("shape B: 9L d512 8/4 heads T512 x4", 9, 512, 8, 4, 512, 4, bf16, reps);
    }
    return 0;
}
