/* Training-step cost against virtual depth, for one recurrence recipe, on the CPU backend.

   The Universal Transformer form (UNIVERSAL_UNIQUE_BLOCKS = 3, UNIVERSAL_ITERATIONS = R for
   R = 1..6, so 3R virtual layers over 3 physical blocks) at shape A: 256 wide, 4/2
   heads, MLP 2x, vocab 1024 (tied), 8 sequences of 256 tokens (2,048 tokens). For each R it times
   zero_grads + forward (the "fwd" column) and backward, median of N reps (argv[1], default 3),
   after one warm-up forward+backward; then one optimizer step (Muon + Adam), median of N, timed
   separately and left out of the fit. The parameter count stays flat (the blocks are shared) while
   the work grows with the virtual layers, so fwd+bwd should be a + b * layers: the least-squares
   line, its R^2, and b against (ms at 3 layers) / 3 (below 1 means the fixed cost, embedding and
   head, is a visible share at R = 1) are printed. Nothing is asserted (shared machines are noisy). */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "bench.h"

#define MAX_REPS 16
#define MAX_R 6

typedef struct row {
    int iters, layers;
    size_t params;
    double fwd, bwd, opt; /* medians, ms */
} row;

static void check(utg_model *m, utg_result r, const char *what) {
    if (r != UTG_OK) { printf("%s: %s\n", what, utg_model_message(m)); exit(1); }
}

static void measure(int iters, int seq, int seqs, int reps, row *out) {
    utg_model_desc d = {0};
    utg_model *m = NULL;
    utg_optim *o = NULL;
    int32_t *x, *y;
    int n = seq * seqs, i, r;
    double opt[MAX_REPS], loss;
    d.config.universal_unique_blocks = 3; d.config.universal_iterations = iters;
    d.config.model_dim = 256; d.config.num_heads = 4; d.config.num_kv_heads = 2; d.config.mlp_mult = 2;
    d.config.vocab_size = 1024; d.config.train_seq_len = seq;
    if (utg_model_create(&d, &m) != UTG_OK) { printf("R=%d: %s\n", iters, utg_model_message(m)); exit(1); }
    x = (int32_t *)malloc(sizeof(int32_t) * n);
    y = (int32_t *)malloc(sizeof(int32_t) * n);
    if (!x || !y) { printf("out of memory\n"); exit(1); }
    for (i = 0; i < n; i++) { x[i] = (i * 7919) % 1024; y[i] = (i * 104729 + 3) % 1024; }
    check(m, utg_model_reserve(m, seqs), "reserve");
    utg_model_zero_grads(m); /* warm-up: first-touch of activations and scratch */
    check(m, utg_model_forward(m, x, y, seqs, &loss), "forward");
    check(m, utg_model_backward(m, 1.0f), "backward");
    time_fwd_bwd(m, x, y, seqs, reps, &out->fwd, &out->bwd);
    /* the optimizer step, from the last gradients (one warm-up step touches the state arenas) */
    check(m, utg_optim_create(m, &o), "optim_create");
    check(m, utg_optim_step(o, 0, 1.0, NULL), "optim_step");
    for (r = 0; r < reps; r++) {
        double t0 = now_ms();
        utg_optim_step(o, r + 1, 1.0, NULL);
        opt[r] = now_ms() - t0;
    }
    out->iters = iters;
    out->layers = utg_model_plan(m)->n_layers;
    out->params = utg_model_param_count(m);
    out->opt = median(opt, reps);
    utg_optim_destroy(o);
    free(x); free(y);
    utg_model_destroy(m);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 3, i, n = MAX_R, at3 = -1;
    row rows[MAX_R];
    double sx = 0, sy = 0, sxx = 0, sxy = 0, a, b, mean_y, ss_tot = 0, ss_res = 0, r2, ms3;
    if (reps < 3 || reps > MAX_REPS) reps = 3;
    printf("utgolf %s CPU backend: Universal Transformer, 3 unique blocks x R iterations\n", utg_version());
    printf("shape A: d256 4/2 heads MLP 2x vocab 1024, T256 x8 = 2048 tok; median of %d\n", reps);
    printf("(fwd includes zero_grads; total = fwd + bwd, no optimizer; opt = one Muon/Adam step, separate)\n\n");
    printf("%3s %7s %10s %9s %9s %10s %10s %9s\n", "R", "layers", "params", "fwd ms", "bwd ms", "total ms", "ms/layer", "opt ms");
    for (i = 0; i < n; i++) {
        row *w = &rows[i];
        double t;
        measure(i + 1, 256, 8, reps, w);
        t = w->fwd + w->bwd;
        printf("%3d %7d %10zu %9.1f %9.1f %10.1f %10.2f %9.1f\n", w->iters, w->layers, w->params, w->fwd, w->bwd, t,
               t / w->layers, w->opt);
        fflush(stdout);
        if (w->layers == 3) at3 = i;
    }
    for (i = 0; i < n; i++) {
        double x = rows[i].layers, y = rows[i].fwd + rows[i].bwd;
        sx += x; sy += y; sxx += x * x; sxy += x * y;
    }
    b = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    a = (sy - b * sx) / n;
    mean_y = sy / n;
    for (i = 0; i < n; i++) {
        double x = rows[i].layers, y = rows[i].fwd + rows[i].bwd, e = y - (a + b * x);
        ss_res += e * e;
        ss_tot += (y - mean_y) * (y - mean_y);
    }
    r2 = ss_tot > 0 ? 1.0 - ss_res / ss_tot : 1.0;
    printf("\nleast squares: total_ms = %.2f + %.3f * virtual_layers   (R^2 = %.4f)\n", a, b, r2);
    if (at3 >= 0) {
        ms3 = (rows[at3].fwd + rows[at3].bwd) / 3.0;
        printf("slope / (ms at 3 layers / 3) = %.3f / %.3f = %.3f\n", b, ms3, b / ms3);
    }
    printf("cost per virtual layer: %.2f ms; linear fit R^2 = %.4f\n", b, r2);
    return 0;
}
