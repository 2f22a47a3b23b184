/* The whole-model gradient check shared by the model and plan suites: a tiny model with every
   parameter random, one gc_input per tensor so a failure names the tensor. Include after
   utgolf.h, gradcheck.h and test.h. */
#ifndef UTG_TEST_MDL_H
#define UTG_TEST_MDL_H
#include <stdlib.h>

typedef struct {
    utg_model *m;
    int n_seqs;
    int32_t *x, *y;
    float *params, *grads;
    size_t n;
} mdl_ctx;

static uint64_t lcg = 99;
static double urand(void) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static double mdl_obj(void *p) {
    mdl_ctx *c = (mdl_ctx *)p;
    double loss = 0.0;
    utg_model_set(c->m, UTG_ARENA_PARAMS, -1, c->params, c->n);
    utg_model_forward(c->m, c->x, c->y, c->n_seqs, &loss);
    return loss;
}
static void mdl_grad(void *p) {
    mdl_ctx *c = (mdl_ctx *)p;
    mdl_obj(c);
    utg_model_zero_grads(c->m);
    utg_model_backward(c->m, 1.0f);
    utg_model_get(c->m, UTG_ARENA_GRADS, -1, c->grads, c->n);
}

/* A tiny model with every parameter random (zero-init tensors too, so all gradients flow). */
static int mdl_setup(mdl_ctx *c, const utg_config *cfg, const utg_backend *be_override) {
    utg_model_desc d;
    int i, N;
    size_t k;
    memset(&d, 0, sizeof d);
    memset(c, 0, sizeof *c);
    d.config = *cfg;
    d.backend = (utg_backend *)be_override;
    if (utg_model_create(&d, &c->m) != UTG_OK) { printf("    create: %s\n", utg_model_message(c->m)); return 0; }
    c->n = utg_model_arena_floats(c->m);
    c->params = (float *)calloc(c->n, 4);
    c->grads = (float *)calloc(c->n, 4);
    for (i = 0; i < utg_model_tensor_count(c->m); i++) {
        const utg_tensor_info *t = utg_model_tensor(c->m, i);
        int ctrl = t->role == UTG_ROLE_CONTROL;
        for (k = 0; k < t->numel; k++)
            c->params[t->offset + k] = (float)(ctrl ? 1.0 + 0.3 * urand() : 0.5 * urand());
    }
    c->n_seqs = 2;
    N = c->n_seqs * utg_model_config(c->m)->train_seq_len;
    c->x = (int32_t *)malloc(sizeof(int32_t) * N);
    c->y = (int32_t *)malloc(sizeof(int32_t) * N);
    for (i = 0; i < N; i++) {
        c->x[i] = (int32_t)((i * 37 + 11) % utg_model_config(c->m)->vocab_size);
        c->y[i] = (int32_t)((i * 53 + 5) % utg_model_config(c->m)->vocab_size);
    }
    return 1;
}
static void mdl_free(mdl_ctx *c) {
    utg_model_destroy(c->m);
    free(c->params); free(c->grads); free(c->x); free(c->y);
}

/* Gate weights (attention gates, skip gates, the SmearGate's w) move the fp32 loss by little: the loss's
   rounding (about 2.4e-7 at 3.5) over gradcheck.h's 1e-2 step is a large share of their gradient.
   They are checked in cases of their own with a 3e-2 step; the rest keep 1e-2 (a larger step
   would meet the curvature of QK-norm and softmax). */
static int mdl_small_grad(const char *name) {
    return strstr(name, "gate") != NULL;
}

/* One gc_input per tensor, so a failure names the tensor. */
static double mdl_check(mdl_ctx *c, int verbose, const char **where) {
    gc_case gc;
    gc_opts o = gc_default_opts();
    int i, n_t = utg_model_tensor_count(c->m), pass;
    double worst = 0.0;
    float loss = (float)mdl_obj(c);
    o.max_probe = 24;
    o.verbose = verbose;
    for (pass = 0; pass < 2; pass++) {
        o.h = pass ? 3e-2 : gc_default_opts().h;
        /* the loss comes back through fp32 row losses: a central difference cannot resolve less than
           one unit in the last place of the loss over the step (about 2.4e-5 at loss 3.5, h 1e-2);
           a tensor whose whole gradient is that small (a VE layer scale, a q_gain) is below it */
        o.atol_abs = ((double)nextafterf(loss, INFINITY) - (double)loss) / o.h;
        i = 0;
        while (i < n_t) {
            double w;
            const char *wh = "";
            memset(&gc, 0, sizeof gc);
            gc.ctx = c; gc.objective = mdl_obj; gc.grad = mdl_grad;
            for (; i < n_t && gc.n_in < 8; i++) {
                const utg_tensor_info *t = utg_model_tensor(c->m, i);
                gc_input *in;
                if (mdl_small_grad(t->name) != pass) continue;
                in = &gc.in[gc.n_in++];
                in->name = t->name; in->x = c->params + t->offset; in->g = c->grads + t->offset; in->n = t->numel;
            }
            if (gc.n_in == 0) continue;
            w = gc_check(&gc, &o, &wh);
            if (w > worst) { worst = w; *where = wh; }
        }
    }
    return worst;
}

/* The check of one config (at plan `phase`), printed and recorded as a test failure above 1. */
static void mdl_run(const char *what, utg_config cfg, int phase) {
    mdl_ctx c;
    const char *where = "";
    double worst;
    if (!mdl_setup(&c, &cfg, NULL)) { CHECK(0, "%s: setup failed", what); return; }
    if (phase) CHECK(utg_model_set_phase(c.m, phase, 0) == UTG_OK, "%s: phase %d", what, phase);
    worst = mdl_check(&c, 0, &where);
    if (worst > 1.0) mdl_check(&c, 1, &where);
    CHECK(worst <= 1.0, "%s: worst error ratio %.3g in %s", what, worst, where);
    printf("      %s: worst ratio %.3f (pass <= 1)\n", what, worst);
    mdl_free(&c);
}

#endif
