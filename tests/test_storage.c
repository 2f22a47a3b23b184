/* bf16 activation storage, op by op: every op of the table run with its activation operands stored
   as BF16 gives exactly the bits of the same op run on F32 copies of the same (bf16-exact) values
   with each output rounded to bf16 once, as the table's precision rule says; F32 operands (weights,
   statistics, weight gradients) come out the same in both runs. Outputs the op adds into start
   from the same values in both. Then fill, copy and matmul's per-operand types, and a model whose
   activations are bf16: half the activation memory, a loss and gradients near the fp32 model's. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "test.h"
#include <stdlib.h>

static utg_backend *be;
static uint64_t lcg = 11;

static float urand(void) { /* [-1, 1) */
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(lcg >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}
static uint16_t bf16_of(float f) { /* nearest even, as the table rounds */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float f32_of(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One operand of an op under test: activation (stored as at) or F32, read or written. */
enum { ACT_IN, ACT_OUT, ACT_INOUT, F32_IN, F32_OUT, F32_INOUT, IDS };
typedef struct operand {
    int kind;
    size_t n;
    float lo, hi; /* the range of its random values */
} operand;
#define MAX_OPS 10

/* A case: its operands, and a call of the op with them in the order given. */
typedef struct op_case {
    const char *name;
    int n;
    operand o[MAX_OPS];
    void (*call)(utg_dtype at, void **p);
} op_case;

static int is_act(int kind) { return kind == ACT_IN || kind == ACT_OUT || kind == ACT_INOUT; }
static int is_out(int kind) { return kind == ACT_OUT || kind == ACT_INOUT || kind == F32_OUT || kind == F32_INOUT; }

/* The buffers of one run: F32 copies (run 0) or activations as bf16 (run 1), the same values. */
static void make_buffers(const op_case *c, float **vals, void **p32, void **p16) {
    int i;
    size_t k;
    for (i = 0; i < c->n; i++) {
        const operand *o = &c->o[i];
        vals[i] = (float *)malloc(sizeof(float) * o->n);
        for (k = 0; k < o->n; k++) {
            float v = o->lo + (o->hi - o->lo) * 0.5f * (urand() + 1.0f);
            if (o->kind == IDS) v = (float)(int)(v);
            vals[i][k] = is_act(o->kind) || o->kind == F32_INOUT ? f32_of(bf16_of(v)) : v;
        }
        if (o->kind == IDS) {
            int32_t *a = (int32_t *)malloc(sizeof(int32_t) * o->n);
            for (k = 0; k < o->n; k++) a[k] = (int32_t)vals[i][k];
            p32[i] = p16[i] = a;
            continue;
        }
        p32[i] = malloc(sizeof(float) * o->n);
        memcpy(p32[i], vals[i], sizeof(float) * o->n);
        if (is_act(o->kind)) {
            uint16_t *h = (uint16_t *)malloc(sizeof(uint16_t) * o->n);
            for (k = 0; k < o->n; k++) h[k] = bf16_of(vals[i][k]);
            p16[i] = h;
        } else {
            p16[i] = malloc(sizeof(float) * o->n);
            memcpy(p16[i], vals[i], sizeof(float) * o->n);
        }
    }
}

/* Runs a case both ways and compares every output bit for bit. */
static void run_case(const op_case *c) {
    float *vals[MAX_OPS];
    void *p32[MAX_OPS], *p16[MAX_OPS];
    int i, bad = 0;
    size_t k;
    make_buffers(c, vals, p32, p16);
    c->call(UTG_DT_F32, p32);
    c->call(UTG_DT_BF16, p16);
    for (i = 0; i < c->n; i++) {
        const operand *o = &c->o[i];
        if (!is_out(o->kind)) continue;
        for (k = 0; k < o->n; k++) {
            float want = ((float *)p32[i])[k], got;
            uint16_t w16 = bf16_of(want), g16 = is_act(o->kind) ? ((uint16_t *)p16[i])[k] : 0;
            got = is_act(o->kind) ? f32_of(g16) : ((float *)p16[i])[k];
            if (is_act(o->kind) ? g16 != w16 : memcmp(&got, &want, 4) != 0) {
                if (bad++ < 3)
                    CHECK(0, "%s operand %d element %zu: %.9g stored, %.9g wanted", c->name, i, k, got,
                          is_act(o->kind) ? f32_of(w16) : want);
            }
        }
    }
    CHECK(bad == 0, "%s: %d output elements differ from the rounded fp32 result", c->name, bad);
    for (i = 0; i < c->n; i++) {
        free(vals[i]);
        if (p16[i] != p32[i]) free(p16[i]);
        free(p32[i]);
    }
}

/* ---- the calls: p holds the operands in the order of the case's list ---- */
enum { R = 6, C = 16, H = 4, HKV = 2, HD = 4, T = 3, V = 20, F = 24 }; /* R rows = 2 sequences of T */

static void c_embed_fwd(utg_dtype at, void **p) { be->embed_fwd(be, at, p[0], (float *)p[1], (int32_t *)p[2], R, C); }
static void c_embed_bwd(utg_dtype at, void **p) { be->embed_bwd(be, at, (float *)p[0], p[1], (int32_t *)p[2], R, C); }
static void c_rms_fwd(utg_dtype at, void **p) { be->rmsnorm_fwd(be, at, p[0], (float *)p[1], p[2], R, C, 1e-6f); }
static void c_rms_bwd(utg_dtype at, void **p) {
    be->rmsnorm_bwd(be, at, p[0], p[1], p[2], (float *)p[3], R, C);
}
static void c_qk_fwd(utg_dtype at, void **p) {
    be->qk_norm_rope_fwd(be, at, p[0], p[1], (float *)p[2], p[3], (float *)p[4], (float *)p[5], R, T, H, HD, 2,
                         1e-6f);
}
static void c_qk_bwd(utg_dtype at, void **p) {
    be->qk_norm_rope_bwd(be, at, p[0], (float *)p[1], p[2], p[3], (float *)p[4], (float *)p[5], (float *)p[6], R,
                         T, H, HD, 2);
}
static void c_attn_fwd(utg_dtype at, void **p) {
    be->attn_fwd(be, at, p[0], (float *)p[1], p[2], p[3], p[4], 2, T, H, HKV, HD, 0.5f);
}
static void c_attn_bwd(utg_dtype at, void **p) {
    be->attn_bwd(be, at, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], (float *)p[8], 2, T, H, HKV, HD, 0.5f);
}
static void c_relu2_fwd(utg_dtype at, void **p) { be->relu2_fwd(be, at, p[0], p[1], (size_t)R * C, 0.5f); }
static void c_relu2_bwd(utg_dtype at, void **p) { be->relu2_bwd(be, at, p[0], p[1], p[2], (size_t)R * C, 0.5f); }
static void c_mix_fwd(utg_dtype at, void **p) {
    be->mix_fwd(be, at, p[0], p[1], (float *)p[2], p[3], (float *)p[4], R, C, 0);
}
static void c_mix_bwd(utg_dtype at, void **p) {
    be->mix_bwd(be, at, p[0], p[1], (float *)p[2], (float *)p[3], p[4], p[5], (float *)p[6], p[7], (float *)p[8], R,
                C, UTG_MIX_DX_SET);
}
static void c_mix_rms(utg_dtype at, void **p) {
    be->mix_rmsnorm_fwd(be, at, p[0], p[1], (float *)p[2], p[3], (float *)p[4], p[5], (float *)p[6], R, C, 0, 1e-6f);
}
static void c_xent(utg_dtype at, void **p) { be->xent_fwd(be, at, p[0], (float *)p[1], (int32_t *)p[2], R, V, 30.0f, 0.5f); }
static void c_xsa_fwd(utg_dtype at, void **p) { be->xsa_fwd(be, at, p[0], p[1], p[2], R, H, HKV, HD); }
static void c_xsa_bwd(utg_dtype at, void **p) { be->xsa_bwd(be, at, p[0], p[1], p[2], p[3], p[4], R, H, HKV, HD); }
static void c_lerp_fwd(utg_dtype at, void **p) {
    be->lerp_fwd(be, at, p[0], p[1], p[2], (float *)p[3], (float *)p[4], R, C);
}
static void c_lerp_bwd(utg_dtype at, void **p) {
    be->lerp_bwd(be, at, p[0], p[1], (float *)p[2], (float *)p[3], p[4], p[5], p[6], (float *)p[7], (float *)p[8], R,
                 C);
}
static void c_gate_fwd(utg_dtype at, void **p) {
    be->gate_fwd(be, at, p[0], (float *)p[1], p[2], p[3], (float *)p[4], R, H, HD, C, 4, 0.5f, 2.0f);
}
static void c_gate_bwd(utg_dtype at, void **p) {
    be->gate_bwd(be, at, p[0], p[1], (float *)p[2], p[3], p[4], p[5], (float *)p[6], (float *)p[7], R, H, HD, C, 4,
                 0.5f, 2.0f);
}
static void c_smear_fwd(utg_dtype at, void **p) {
    be->smear_fwd(be, at, p[0], p[1], (float *)p[2], (float *)p[3], (int32_t *)p[4], R, T, C, 4, 1);
}
static void c_smear_bwd(utg_dtype at, void **p) {
    be->smear_bwd(be, at, p[0], (float *)p[1], (float *)p[2], p[3], p[4], (float *)p[5], (float *)p[6],
                  (int32_t *)p[7], R, T, C, 4, 1);
}

#define A_(kind, n) {kind, (size_t)(n), -2.0f, 2.0f}
#define P_(kind, n) {kind, (size_t)(n), 0.1f, 2.0f} /* positive: rstd, gains */
static const op_case cases[] = {
    {"embed_fwd", 3, {A_(ACT_OUT, R * C), A_(F32_IN, V * C), {IDS, R, 0, V - 0.01f}}, c_embed_fwd},
    {"embed_bwd", 3, {A_(F32_INOUT, V * C), A_(ACT_IN, R * C), {IDS, R, 0, V - 0.01f}}, c_embed_bwd},
    {"rmsnorm_fwd", 3, {A_(ACT_OUT, R * C), A_(F32_OUT, R), A_(ACT_IN, R * C)}, c_rms_fwd},
    {"rmsnorm_bwd", 4, {A_(ACT_OUT, R * C), A_(ACT_IN, R * C), A_(ACT_IN, R * C), P_(F32_IN, R)}, c_rms_bwd},
    {"qk_norm_rope_fwd", 6,
     {A_(ACT_OUT, R * H * HD), A_(ACT_OUT, R * H * HD), A_(F32_OUT, R * H), A_(ACT_IN, R * H * HD),
      A_(F32_IN, T * 2), P_(F32_IN, H)},
     c_qk_fwd},
    {"qk_norm_rope_bwd", 7,
     {A_(ACT_OUT, R * H * HD), A_(F32_INOUT, H), A_(ACT_IN, R * H * HD), A_(ACT_IN, R * H * HD), P_(F32_IN, R * H),
      A_(F32_IN, T * 2), P_(F32_IN, H)},
     c_qk_bwd},
    {"attn_fwd", 5,
     {A_(ACT_OUT, R * H * HD), A_(F32_OUT, R * H), A_(ACT_IN, R * H * HD), A_(ACT_IN, R * HKV * HD),
      A_(ACT_IN, R * HKV * HD)},
     c_attn_fwd},
    {"attn_bwd", 9,
     {A_(ACT_OUT, R * H * HD), A_(ACT_OUT, R * HKV * HD), A_(ACT_OUT, R * HKV * HD), A_(ACT_IN, R * H * HD),
      A_(ACT_IN, R * H * HD), A_(ACT_IN, R * HKV * HD), A_(ACT_IN, R * HKV * HD), A_(ACT_IN, R * H * HD),
      P_(F32_IN, R * H)},
     c_attn_bwd},
    {"relu2_fwd", 2, {A_(ACT_OUT, R * C), A_(ACT_IN, R * C)}, c_relu2_fwd},
    {"relu2_bwd", 3, {A_(ACT_OUT, R * C), A_(ACT_IN, R * C), A_(ACT_IN, R * C)}, c_relu2_bwd},
    {"mix_fwd", 5, {A_(ACT_OUT, R * C), A_(ACT_IN, R * C), A_(F32_IN, C), A_(ACT_IN, R * C), A_(F32_IN, C)},
     c_mix_fwd},
    {"mix_bwd", 9,
     {A_(ACT_OUT, R * C), A_(ACT_INOUT, R * C), A_(F32_INOUT, C), A_(F32_INOUT, C), A_(ACT_IN, R * C),
      A_(ACT_IN, R * C), A_(F32_IN, C), A_(ACT_IN, R * C), A_(F32_IN, C)},
     c_mix_bwd},
    {"mix_rmsnorm_fwd", 7,
     {A_(ACT_OUT, R * C), A_(ACT_OUT, R * C), A_(F32_OUT, R), A_(ACT_IN, R * C), A_(F32_IN, C), A_(ACT_IN, R * C),
      A_(F32_IN, C)},
     c_mix_rms},
    {"xent_fwd", 3, {{ACT_INOUT, R * V, -40.0f, 40.0f}, A_(F32_OUT, R), {IDS, R, 0, V - 0.01f}}, c_xent},
    {"xsa_fwd", 3, {A_(ACT_OUT, R * H * HD), A_(ACT_IN, R * H * HD), A_(ACT_IN, R * HKV * HD)}, c_xsa_fwd},
    {"xsa_bwd", 5,
     {A_(ACT_INOUT, R * H * HD), A_(ACT_INOUT, R * HKV * HD), A_(ACT_IN, R * H * HD), A_(ACT_IN, R * H * HD),
      A_(ACT_IN, R * HKV * HD)},
     c_xsa_bwd},
    {"lerp_fwd", 5, {A_(ACT_OUT, R * C), A_(ACT_IN, R * C), A_(ACT_IN, R * C), A_(F32_IN, C), P_(F32_IN, C)},
     c_lerp_fwd},
    {"lerp_bwd", 9,
     {A_(ACT_OUT, R * C), A_(ACT_INOUT, R * C), A_(F32_INOUT, C), A_(F32_INOUT, C), A_(ACT_IN, R * C),
      A_(ACT_IN, R * C), A_(ACT_IN, R * C), A_(F32_IN, C), P_(F32_IN, C)},
     c_lerp_bwd},
    {"gate_fwd", 5,
     {A_(ACT_OUT, R * H * HD), A_(F32_OUT, R * H), A_(ACT_IN, R * H * HD), A_(ACT_IN, R * C), A_(F32_IN, H * 4)},
     c_gate_fwd},
    {"gate_bwd", 8,
     {A_(ACT_INOUT, R * H * HD), A_(ACT_INOUT, R * C), A_(F32_INOUT, H * 4), A_(ACT_IN, R * H * HD),
      A_(ACT_IN, R * H * HD), A_(ACT_IN, R * C), A_(F32_IN, H * 4), P_(F32_IN, R * H)},
     c_gate_bwd},
    {"smear_fwd", 5,
     {A_(ACT_OUT, R * C), A_(ACT_IN, R * C), A_(F32_IN, 4), A_(F32_IN, 1), {IDS, R, 0, V - 0.01f}},
     c_smear_fwd},
    {"smear_bwd", 8,
     {A_(ACT_INOUT, R * C), A_(F32_INOUT, 4), A_(F32_INOUT, 1), A_(ACT_IN, R * C), A_(ACT_IN, R * C), A_(F32_IN, 4),
      A_(F32_IN, 1), {IDS, R, 0, V - 0.01f}},
     c_smear_bwd},
};

static void test_every_op_bf16_is_rounded_fp32(void) {
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
}

/* matmul with each operand's own type: C[bf16] = A[bf16] B[f32]^T, dW[f32] += A[bf16]^T B[bf16],
   and C[bf16] += A B (beta 1: C read and rounded once) against fp32 on the same values. */
static void test_matmul_types(void) {
    enum { M = 5, N = 7, K = 9 };
    float a[M * K], b[N * K], c32[M * N], w[K * N], w16res[K * N];
    uint16_t a16[M * K], c16[M * N], b16[N * K];
    int i, bad = 0;
    for (i = 0; i < M * K; i++) a16[i] = bf16_of(urand()), a[i] = f32_of(a16[i]);
    for (i = 0; i < N * K; i++) b[i] = urand(), b16[i] = bf16_of(b[i]);
    for (i = 0; i < M * N; i++) c16[i] = bf16_of(urand()), c32[i] = f32_of(c16[i]);
    be->matmul(be, UTG_MM_F32, c32, a, b, M, N, K, UTG_NO_TRANS, UTG_TRANS, 1.0f, 1.0f);
    be->matmul(be, UTG_MM_TYPES(UTG_DT_BF16, UTG_DT_BF16, UTG_DT_F32), c16, a16, b, M, N, K, UTG_NO_TRANS,
               UTG_TRANS, 1.0f, 1.0f);
    for (i = 0; i < M * N; i++) bad += c16[i] != bf16_of(c32[i]);
    CHECK(bad == 0, "C[bf16] += A[bf16] B^T: %d of %d differ", bad, M * N);
    for (i = 0; i < N * K; i++) b[i] = f32_of(b16[i]);
    memset(w, 0, sizeof w);
    memset(w16res, 0, sizeof w16res);
    /* dW [K, N] = A^T [K, M] x B' [M, N], with B' = b viewed as [M, N] (first M * N values) */
    be->matmul(be, UTG_MM_F32, w, a, b, K, N, M, UTG_TRANS, UTG_NO_TRANS, 1.0f, 1.0f);
    be->matmul(be, UTG_MM_TYPES(UTG_DT_F32, UTG_DT_BF16, UTG_DT_BF16), w16res, a16, b16, K, N, M, UTG_TRANS,
               UTG_NO_TRANS, 1.0f, 1.0f);
    CHECK(!memcmp(w, w16res, sizeof w), "dW[f32] += A[bf16]^T B[bf16] differs from fp32 on the same values");
}

/* fill rounds its value once; copy moves bytes; both ignore nothing past n. */
static void test_fill_copy(void) {
    uint16_t h[9], g[9];
    int i, ok = 1;
    for (i = 0; i < 9; i++) h[i] = 0xabcd;
    be->fill(be, h, UTG_DT_BF16, 1.00390625f, 8); /* 1 + 2^-8: a tie, rounds to even (1.0) */
    for (i = 0; i < 8; i++) ok &= h[i] == 0x3f80;
    CHECK(ok && h[8] == 0xabcd, "bf16 fill: %04x .. %04x, guard %04x", h[0], h[7], h[8]);
    for (i = 0; i < 9; i++) g[i] = (uint16_t)i;
    be->copy(be, h, g, 5 * sizeof(uint16_t)); /* an odd number of bf16 elements */
    CHECK(h[4] == 4 && h[5] == 0x3f80, "copy by bytes: %d %04x", h[4], h[5]);
}

/* A model with bf16 activations: about half the activation bytes per token; its loss within 1% and
   its gradient within a few percent (cosine above 0.999) of the fp32 model from the same seed. */
static void test_model_bf16_storage(void) {
    utg_config c32, c16;
    utg_model_desc d;
    utg_model *m[2] = {NULL, NULL};
    int32_t x[2 * 32], y[2 * 32];
    double loss[2] = {0, 0}, dot = 0, n0 = 0, n1 = 0;
    float *g[2] = {NULL, NULL};
    size_t n = 0, i;
    int k;
    utg_msg msg;
    memset(&c32, 0, sizeof c32);
    utg_config_parse_text(&c32, (char[]){"NUM_LAYERS=3\nMODEL_DIM=64\nNUM_HEADS=4\nNUM_KV_HEADS=2\nVOCAB_SIZE=96\n"
                                         "TRAIN_SEQ_LEN=32\nMLP_MULT=2\nSEED=3\n"},
                          &msg);
    c16 = c32;
    utg_config_set(&c16, "ACTIVATION_DTYPE", "bf16", &msg);
    for (i = 0; i < 2 * 32; i++) x[i] = (int32_t)((i * 37 + 5) % 96), y[i] = (int32_t)((i * 53 + 11) % 96);
    for (k = 0; k < 2; k++) {
        memset(&d, 0, sizeof d);
        d.config = k ? c16 : c32;
        if (utg_model_create(&d, &m[k]) != UTG_OK) { CHECK(0, "model: %s", utg_model_message(m[k])); goto done; }
        n = utg_model_arena_floats(m[k]);
        g[k] = (float *)calloc(n, sizeof(float));
        utg_model_zero_grads(m[k]);
        CHECK(utg_model_forward(m[k], x, y, 2, &loss[k]) == UTG_OK && utg_model_backward(m[k], 1.0f) == UTG_OK,
              "fwd/bwd %d: %s", k, utg_model_message(m[k]));
        utg_model_get(m[k], UTG_ARENA_GRADS, -1, g[k], n);
    }
    CHECK(utg_model_activation_dtype(m[1]) == UTG_DT_BF16 && utg_model_activation_dtype(m[0]) == UTG_DT_F32,
          "the storage types");
    {
        double b32 = utg_model_activation_bytes_per_token(m[1], UTG_DT_F32);
        double b16 = utg_model_activation_bytes_per_token(m[1], UTG_DT_BF16);
        CHECK(b16 > 0.45 * b32 && b16 < 0.6 * b32, "bytes per token: %.0f bf16, %.0f fp32", b16, b32);
    }
    for (i = 0; i < n; i++) dot += (double)g[0][i] * g[1][i], n0 += (double)g[0][i] * g[0][i], n1 += (double)g[1][i] * g[1][i];
    CHECK(fabs(loss[1] - loss[0]) < 0.01 * loss[0], "loss %.6f bf16 vs %.6f fp32", loss[1], loss[0]);
    CHECK(dot / sqrt(n0 * n1) > 0.999 && fabs(sqrt(n1 / n0) - 1.0) < 0.05,
          "gradient cosine %.6f, norm ratio %.4f", dot / sqrt(n0 * n1), sqrt(n1 / n0));
done:
    for (k = 0; k < 2; k++) utg_model_destroy(m[k]), free(g[k]);
}

/* ACTIVATION_DTYPE=bf16 on a backend that does not store bf16 is refused with a message. */
static void test_unsupported_storage_refused(void) {
    utg_backend *b2 = NULL;
    utg_model_desc d;
    utg_model *m = NULL;
    utg_msg msg;
    utg_backend_cpu_create(NULL, &b2);
    b2->storage_dtypes = 1u << UTG_DT_F32;
    memset(&d, 0, sizeof d);
    utg_config_set(&d.config, "ACTIVATION_DTYPE", "bf16", &msg);
    d.backend = b2;
    CHECK(utg_model_create(&d, &m) == UTG_ERR_CONFIG && strstr(utg_model_message(m), "ACTIVATION_DTYPE"),
          "refused: %s", utg_model_message(m));
    utg_model_destroy(m);
    utg_backend_destroy(b2);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    if (utg_backend_cpu_create(NULL, &be) != UTG_OK) return 1;
    RUN(test_every_op_bf16_is_rounded_fp32);
    RUN(test_matmul_types);
    RUN(test_fill_copy);
    RUN(test_model_bf16_storage);
    RUN(test_unsupported_storage_refused);
    utg_backend_destroy(be);
    return TEST_SUMMARY();
}
