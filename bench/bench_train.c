/* utgolf's full training step and evaluation speed at shapes A and B, with model FLOPs
   utilisation, in the line format bench/peer_torch.py prints for PyTorch (bench/run.sh sets them side
   by side).

   Shapes (2,048 tokens per step, vocab 1024, MLP 2x, tied embedding, softcap 30, Muon + Adam with
   train_gpt.py's defaults):
     A: 4 layers, 256 wide, 4/2 heads, 8 sequences of 256
     B: 9 layers, 512 wide, 8/4 heads, 4 sequences of 512 (train_gpt.py's baseline shape)
   A training step is what examples/train.c runs: utg_model_zero_grads, utg_model_forward,
   utg_model_backward, utg_optim_step (Muon with 5 Newton-Schulz iterations for the block matrices,
   Adam for the embedding and the control tensors), on a new batch of tokens each step (make_batch).
   Evaluation is utg_model_eval over one more batch (forward only, per-token losses). Medians of
   --steps timed steps after two warm-up steps; the phases (forward, backward, optimizer) are medians
   too, so they need not add up to the step. The printed loss (the eval batch's, after the training
   steps) is a sanity figure: peer_torch.py trains on the same tokens with the same optimizer, so its
   loss lands close by (the initial weights differ).

   FLOPs counted (peer_torch.py counts the same way):
     N_mm  = L (2 d^2 + 2 kv d + 2 F d) + V d      matmul parameters: q, proj, k, v, fc, down, and the
                                                   (tied) head; the embedding lookup costs nothing
     train = tokens (6 N_mm + 12 L T d)            PaLM's model FLOPs: 2 forward + 4 backward per
                                                   parameter and token, plus attention's QK^T and PV
                                                   (4 T d per token and layer forward, x3 with the
                                                   backward) over the full T x T, no causal discount
                                                   (causal kernels, utgolf's included, do about half)
     eval  = tokens (2 N_mm + 4 L T d)
     ns    = 5 sum over Muon matrices [r, c], mn = min, mx = max, of (4 mn^2 mx + 2 mn^3)
                                                   Newton-Schulz per step: X X^T, A A, B X per iteration;
                                                   not model FLOPs, so reported separately
   mfu = train / step time / peak; mfu_ns counts ns too (the hardware's useful FLOPs); peak is the
   measured fp32 FMA peak on the same threads (bench/peak.h), or --peak GFLOPS.
   Norms, softmax, RoPE, the softcapped cross-entropy and the optimizer's elementwise work are not
   counted.

   Precisions: fp32 (every matmul in fp32; Newton-Schulz in bf16 as by default, MUON_NS_BF16=1, like
   the PyTorch peer's) and bf16 (MATMUL_BF16=1: the model's matmuls too, against torch's bf16 autocast).

   Options: --shapes A,B   --precs fp32,bf16   --steps N (default 5)   --quick (3 steps)   --peak GFLOPS   --threads N
   Nothing is asserted: shared machines are noisy. */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench.h"
#include "peak.h"

#define MAX_STEPS 64

typedef struct shape {
    char name;
    int layers, dim, heads, kv_heads, seq, seqs;
} shape;

static const shape shapes_all[2] = {{'A', 4, 256, 4, 2, 256, 8}, {'B', 9, 512, 8, 4, 512, 4}};

/* The FLOP counts of the header comment, per step of `tokens` tokens. */
static void count_flops(const shape *s, int vocab, int mlp_mult, int ns_steps, double tokens, double *train, double *eval,
                        double *ns) {
    double L = s->layers, d = s->dim, T = s->seq, kv = (double)s->kv_heads * (s->dim / s->heads), F = (double)mlp_mult * d;
    double V = vocab, n_mm = L * (2 * d * d + 2 * kv * d + 2 * F * d) + V * d;
    double mats[4][3] = {{d, d, 2}, {kv, d, 2}, {F, d, 1}, {d, F, 1}}; /* [r, c, count per layer] */
    int i;
    *train = tokens * (6 * n_mm + 12 * L * T * d);
    *eval = tokens * (2 * n_mm + 4 * L * T * d);
    *ns = 0;
    for (i = 0; i < 4; i++) {
        double mn = mats[i][0] < mats[i][1] ? mats[i][0] : mats[i][1], mx = mats[i][0] < mats[i][1] ? mats[i][1] : mats[i][0];
        *ns += mats[i][2] * L * ns_steps * (4 * mn * mn * mx + 2 * mn * mn * mn);
    }
}

/* The tokens of step `step` (bench/peer_torch.py makes the same): a window of n + 1 tokens of one
   pseudo-random stream, t[k] = top 10 bits of hash(k) (the "lowbias32" integer hash), as inputs and
   next-token targets, a new window every step. Nothing to learn, so the loss stays near ln(1024) as
   in early training, and no softmax saturates. */
static uint32_t token_hash(uint32_t k) {
    k ^= k >> 16; k *= 0x7feb352du;
    k ^= k >> 15; k *= 0x846ca68bu;
    k ^= k >> 16;
    return k >> 22;
}

static void make_batch(int32_t *x, int32_t *y, int n, int step) {
    int i;
    for (i = 0; i < n; i++) {
        uint32_t k = (uint32_t)step * (uint32_t)(n + 1) + (uint32_t)i;
        x[i] = (int32_t)token_hash(k);
        y[i] = (int32_t)token_hash(k + 1u);
    }
}

static void check(utg_model *m, utg_result r, const char *what) {
    if (r != UTG_OK) { printf("%s: %s\n", what, m ? utg_model_message(m) : "failed"); exit(1); }
}

static void bench(const shape *s, int bf16, int steps, double peak, int threads) {
    utg_model_desc desc;
    utg_model *m = NULL;
    utg_optim *o = NULL;
    const utg_config *cfg;
    int32_t *x, *y;
    int n = s->seq * s->seqs, r;
    double loss, t_step[MAX_STEPS], t_fwd[MAX_STEPS], t_bwd[MAX_STEPS], t_opt[MAX_STEPS], t_eval[MAX_STEPS];
    double step_ms, fwd_ms, bwd_ms, opt_ms, eval_ms, f_train, f_eval, f_ns, train_tok_s, eval_tok_s;
    memset(&desc, 0, sizeof desc);
    desc.config.num_layers = s->layers;
    desc.config.model_dim = s->dim;
    desc.config.num_heads = s->heads;
    desc.config.num_kv_heads = s->kv_heads;
    desc.config.mlp_mult = 2;
    desc.config.vocab_size = 1024;
    desc.config.train_seq_len = s->seq;
    desc.config.matmul_bf16 = bf16; /* MATMUL_BF16: the model's matmuls as bf16 products, fp32 sums */
    check(NULL, utg_model_create(&desc, &m), "model");
    cfg = utg_model_config(m);
    x = (int32_t *)malloc(sizeof(int32_t) * n);
    y = (int32_t *)malloc(sizeof(int32_t) * n);
    if (!x || !y) { printf("out of memory\n"); exit(1); }
    check(m, utg_model_reserve(m, s->seqs), "reserve");
    check(m, utg_optim_create(m, &o), "optimizer");
    for (r = -2; r < steps; r++) { /* two warm-up steps: first touch of activations, scratch and state */
        double t0, t1, t2, t3;
        make_batch(x, y, n, r + 2);
        t0 = now_ms();
        utg_model_zero_grads(m);
        check(m, utg_model_forward(m, x, y, s->seqs, NULL), "forward"); /* no wait, as train.c */
        t1 = now_ms();
        check(m, utg_model_backward(m, 1.0f), "backward");
        t2 = now_ms();
        check(m, utg_optim_step(o, r + 2, 1.0, NULL), "optimizer step");
        t3 = now_ms();
        if (r < 0) continue;
        t_fwd[r] = t1 - t0; t_bwd[r] = t2 - t1; t_opt[r] = t3 - t2; t_step[r] = t3 - t0;
    }
    make_batch(x, y, n, steps + 2);
    for (r = -1; r < steps; r++) { /* one warm-up: RoPE tables and scratch of the eval path */
        double t0 = now_ms();
        check(m, utg_model_eval(m, x, y, s->seqs, s->seq, NULL, &loss), "eval");
        if (r >= 0) t_eval[r] = now_ms() - t0;
    }
    step_ms = median(t_step, steps); fwd_ms = median(t_fwd, steps); bwd_ms = median(t_bwd, steps);
    opt_ms = median(t_opt, steps); eval_ms = median(t_eval, steps);
    count_flops(s, cfg->vocab_size, cfg->mlp_mult, cfg->muon_backend_steps, n, &f_train, &f_eval, &f_ns);
    train_tok_s = n / (step_ms / 1e3);
    eval_tok_s = n / (eval_ms / 1e3);
    printf("shape %c %s: %dL d%d %d/%d heads T%d x%d = %d tok, %zu params: step %.1f ms (fwd %.1f, bwd %.1f, opt %.1f), "
           "%.0f tok/s train, eval %.1f ms, %.0f tok/s eval\n",
           s->name, bf16 ? "bf16" : "fp32", s->layers, s->dim, s->heads, s->kv_heads, s->seq, s->seqs, n, utg_model_param_count(m), step_ms,
           fwd_ms, bwd_ms, opt_ms, train_tok_s, eval_ms, eval_tok_s);
    printf("utgolf shape:%c prec:%s threads:%d tokens:%d train_tok_s:%.1f eval_tok_s:%.1f step_ms:%.2f fwd_ms:%.2f "
           "bwd_ms:%.2f opt_ms:%.2f eval_ms:%.2f model_gflop:%.2f ns_gflop:%.2f eval_gflop:%.2f peak_gflops:%.1f "
           "mfu:%.3f mfu_ns:%.3f eval_mfu:%.3f loss:%.4f\n",
           s->name, bf16 ? "bf16" : "fp32", threads, n, train_tok_s, eval_tok_s, step_ms, fwd_ms, bwd_ms, opt_ms, eval_ms, f_train / 1e9, f_ns / 1e9,
           f_eval / 1e9, peak, f_train / (step_ms / 1e3) / (peak * 1e9), (f_train + f_ns) / (step_ms / 1e3) / (peak * 1e9),
           f_eval / (eval_ms / 1e3) / (peak * 1e9), loss);
    fflush(stdout);
    utg_optim_destroy(o);
    free(x); free(y);
    utg_model_destroy(m);
}

int main(int argc, char **argv) {
    const char *shapes = "A,B", *precs = "fp32,bf16";
    int steps = 5, threads = 1, i;
    double peak = 0;
    int peak_given;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) steps = 3;
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) shapes = argv[++i];
        else if (!strcmp(argv[i], "--precs") && i + 1 < argc) precs = argv[++i];
        else if (!strcmp(argv[i], "--peak") && i + 1 < argc) peak = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
#ifdef _OPENMP
            if (threads > 0) omp_set_num_threads(threads);
#endif
        } else {
            printf("usage: %s [--shapes A,B] [--precs fp32,bf16] [--steps N] [--quick] [--peak GFLOPS] [--threads N]\n", argv[0]);
            return 2;
        }
    }
    if (steps < 1) steps = 1;
    if (steps > MAX_STEPS) steps = MAX_STEPS;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#else
    threads = 1;
#endif
    peak_given = peak > 0;
    if (!peak_given) peak = peak_gflops(PEAK_FP32, threads, 1.0);
    printf("utgolf %s CPU backend: full training step (forward, backward, Muon + Adam) and eval, %d thread%s, "
           "median of %d; fp32 peak %.1f GFLOP/s (%s FMA%s)\n",
           utg_version(), threads, threads > 1 ? "s" : "", steps, peak, peak_isa(PEAK_FP32), peak_given ? ", given" : "");
    fflush(stdout);
    for (i = 0; i < 2; i++) {
        if (!strchr(shapes, shapes_all[i].name)) continue;
        if (strstr(precs, "fp32")) bench(&shapes_all[i], 0, steps, peak, threads);
        if (strstr(precs, "bf16")) bench(&shapes_all[i], 1, steps, peak, threads);
    }
    return 0;
}
