/* Forward + backward time of the baseline shape on the CPU backend.

   Shape B of ANCHORS.md: 9 layers, 512 wide, 8/4 heads, MLP 2x, vocab 1024, 4 sequences of 512
   tokens (2,048 tokens). Prints milliseconds and tokens/s; nothing is asserted (shared machines are
   noisy). The peer figure printed beside it is from ANCHORS.md, not measured in this run: eager
   PyTorch + OpenBLAS, fp32, a whole training step (forward, backward and Muon/Adam). */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "bench.h"

static void bench(const char *label, int layers, int dim, int heads, int kv, int seq, int seqs, double peer_tok_s, int reps) {
    utg_model_desc d = {0};
    utg_model *m;
    int32_t *x, *y;
    int n = seq * seqs, i;
    double loss, f, b;
    d.config.num_layers = layers; d.config.model_dim = dim; d.config.num_heads = heads; d.config.num_kv_heads = kv;
    d.config.train_seq_len = seq;
    if (utg_model_create(&d, &m) != UTG_OK) { printf("%s: %s\n", label, utg_model_message(m)); exit(1); }
    x = (int32_t *)malloc(sizeof(int32_t) * n);
    y = (int32_t *)malloc(sizeof(int32_t) * n);
    for (i = 0; i < n; i++) { x[i] = (i * 7919) % 1024; y[i] = (i * 104729 + 3) % 1024; }
    utg_model_reserve(m, seqs);
    utg_model_forward(m, x, y, seqs, &loss); /* warm-up: first-touch of activations and scratch */
    utg_model_backward(m, 1.0f);
    time_fwd_bwd(m, x, y, seqs, reps, &f, &b);
    printf("%-34s %6d tok  fwd %8.1f ms  bwd %8.1f ms  fwd+bwd %8.1f ms  %7.0f tok/s", label, n, f, b, f + b, n / ((f + b) / 1e3));
    if (peer_tok_s > 0) printf("  (ANCHORS peer, full step: %.0f tok/s; ratio %.2f)", peer_tok_s, (n / ((f + b) / 1e3)) / peer_tok_s);
    printf("\n");
    free(x); free(y);
    utg_model_destroy(m);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    if (reps < 1 || reps > 16) reps = 3;
    printf("utgolf %s CPU backend, median of %d (forward, backward; no optimizer)\n", utg_version(), reps);
    bench("shape A: 4L d256 4/2 heads T256 x8", 4, 256, 4, 2, 256, 8, 10000, reps);
    bench("shape B: 9L d512 8/4 heads T512 x4", 9, 512, 8, 4, 512, 4, 1300, reps);
    return 0;
}
