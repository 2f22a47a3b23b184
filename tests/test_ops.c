/* Every backend op's backward against central finite differences, on the CPU backend, plus a test
   of the checker itself: a deliberately wrong backward must be caught. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "gradcheck.h"
#include "test.h"
#include <stdlib.h>

static utg_backend *be;
static uint64_t rng_state = 12345;

static double urand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}
static float *rand_buf(size_t n, double scale) {
    float *p = (float *)calloc(n ? n : 1, sizeof(float));
    size_t i;
    for (i = 0; i < n; i++) p[i] = (float)(scale * urand());
    return p;
}
static float *zeros(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }
static void nan_fill(float *p, size_t n) { size_t i; for (i = 0; i < n; i++) p[i] = NAN; }
/* sum_i w[i]*y[i] in double: the objective every op case uses, with fixed random weights w */
static double wdot(const float *w, const float *y, size_t n) {
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}

static int check_case(const char *what, gc_case *c, gc_opts o) {
    const char *where = "";
    double worst = gc_check(c, &o, &where);
    if (worst > 1.0) {
        o.verbose = 1;
        gc_check(c, &o, &where);
    }
    CHECK(worst <= 1.0, "%s: worst error ratio %.3g in input %s", what, worst, where);
    return worst <= 1.0;
}

/* ---- matmul: C = alpha*op(A)op(B); dA and dB through matmul itself, as the model does ---- */
typedef struct { int M, N, K; utg_trans ta, tb; float alpha; float *A, *B, *C, *W, *gA, *gB; } mm_ctx;
static double mm_obj(void *p) {
    mm_ctx *c = (mm_ctx *)p;
    be->matmul(be, UTG_MM_F32, c->C, c->A, c->B, c->M, c->N, c->K, c->ta, c->tb, c->alpha, 0.0f);
    return wdot(c->W, c->C, (size_t)c->M * c->N);
}
static void mm_grad(void *p) {
    mm_ctx *c = (mm_ctx *)p;
    /* dop(A) = W op(B)^T [M,K]; dop(B) = op(A)^T W [K,N]; stored in A's and B's own layouts */
    if (!c->ta) be->matmul(be, UTG_MM_F32, c->gA, c->W, c->B, c->M, c->K, c->N, UTG_NO_TRANS, c->tb ? UTG_NO_TRANS : UTG_TRANS, c->alpha, 0.0f);
    else be->matmul(be, UTG_MM_F32, c->gA, c->B, c->W, c->K, c->M, c->N, c->tb ? UTG_TRANS : UTG_NO_TRANS, UTG_TRANS, c->alpha, 0.0f);
    if (!c->tb) be->matmul(be, UTG_MM_F32, c->gB, c->A, c->W, c->K, c->N, c->M, c->ta ? UTG_NO_TRANS : UTG_TRANS, UTG_NO_TRANS, c->alpha, 0.0f);
    else be->matmul(be, UTG_MM_F32, c->gB, c->W, c->A, c->N, c->K, c->M, UTG_TRANS, c->ta ? UTG_TRANS : UTG_NO_TRANS, c->alpha, 0.0f);
}
static void test_matmul_grad(void) {
    int combo;
    for (combo = 0; combo < 4; combo++) {
        mm_ctx c;
        gc_case gc;
        char what[64];
        c.M = 7; c.N = 9; c.K = 21; c.ta = (utg_trans)(combo & 1); c.tb = (utg_trans)(combo >> 1); c.alpha = 0.7f;
        c.A = rand_buf((size_t)c.M * c.K, 1); c.B = rand_buf((size_t)c.K * c.N, 1); c.C = zeros((size_t)c.M * c.N);
        c.W = rand_buf((size_t)c.M * c.N, 1); c.gA = zeros((size_t)c.M * c.K); c.gB = zeros((size_t)c.K * c.N);
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = mm_obj; gc.grad = mm_grad; gc.n_in = 2;
        gc.in[0].name = "A"; gc.in[0].x = c.A; gc.in[0].g = c.gA; gc.in[0].n = (size_t)c.M * c.K;
        gc.in[1].name = "B"; gc.in[1].x = c.B; gc.in[1].g = c.gB; gc.in[1].n = (size_t)c.K * c.N;
        snprintf(what, sizeof what, "matmul ta=%d tb=%d", c.ta, c.tb);
        check_case(what, &gc, gc_default_opts());
        free(c.A); free(c.B); free(c.C); free(c.W); free(c.gA); free(c.gB);
    }
}

/* x rounded to bf16 (nearest even), as a float */
static float bf16r(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* Each kernel's transposing pack against the scalar one, bit for bit, over widths, ragged row counts
   and k lengths around the 16 x 16 blocks; the padding rows must come out zero (dst starts as NaN). */
static void test_pack_transpose(void) {
    static const int widths[] = {6, 12, 16, 32}, kbs[] = {1, 15, 16, 17, 40};
    const utg__gk *gk = utg__gk_pick();
    float *src = rand_buf(32 * 45, 1), *d0 = zeros(32 * 40), *d1 = zeros(32 * 40);
    int wi, ki, nr, bad = 0, cases = 0;
    size_t i;
    for (wi = 0; wi < 4; wi++)
        for (ki = 0; ki < 5; ki++)
            for (nr = 0; nr <= widths[wi]; nr++) {
                for (i = 0; i < 32 * 40; i++) d0[i] = d1[i] = NAN;
                utg__pack_t_scalar(d0, widths[wi], src, 45, nr, kbs[ki], 0.75f);
                gk->pack_t(d1, widths[wi], src, 45, nr, kbs[ki], 0.75f);
                cases++;
                if (memcmp(d0, d1, sizeof(float) * (size_t)widths[wi] * kbs[ki]) != 0) bad++;
                for (i = (size_t)nr; i < (size_t)widths[wi]; i++)
                    if (d1[i] != 0.0f) bad++;
            }
    CHECK(bad == 0, "%s: %d of %d packs differ from the scalar pack", gk->name, bad, cases);
#if defined(UTG__X86_KERNELS)
    if (gk == &utg__gk_avx512 && __builtin_cpu_supports("avx512bf16")) { /* the bf16 pairs of the same */
        uint32_t *p1 = (uint32_t *)d1;
        int p, r;
        bad = cases = 0;
        for (wi = 0; wi < 4; wi++)
            for (ki = 0; ki < 5; ki++)
                for (nr = 0; nr <= widths[wi]; nr++) {
                    int kp = (kbs[ki] + 1) / 2;
                    memset(p1, 0xff, sizeof(float) * 32 * 40);
                    utg__pack_pairs_t(p1, widths[wi], src, 45, nr, kbs[ki], 0.75f);
                    cases++;
                    for (p = 0; p < kp; p++)
                        for (r = 0; r < widths[wi]; r++) {
                            float lo = r < nr ? 0.75f * src[r * 45 + 2 * p] : 0.0f;
                            float hi = r < nr && 2 * p + 1 < kbs[ki] ? 0.75f * src[r * 45 + 2 * p + 1] : 0.0f;
                            if (p1[p * widths[wi] + r] != utg__bf16_pair(lo, hi)) { bad++; p = kp; break; }
                        }
                }
        CHECK(bad == 0, "bf16 pairs: %d of %d packs differ from utg__bf16_pair", bad, cases);
        { /* the row-wise pairs (A^T's slivers, B's panels): every lane count, with or without a second
             row, on random values, ties, NaNs, infinities, denormals and signed zeros */
            static const uint32_t special[] = {0x7fc00000u, 0xff800001u, 0x7f800000u, 0xff800000u, 0x00000001u, 0x80400000u,
                                               0x80000000u, 0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x7fffffffu, 0xffffffffu};
            float a0[16], a1[16];
            uint32_t out[16];
            int n, w, two, t;
            bad = cases = 0;
            for (t = 0; t < 40; t++)
                for (n = 0; n <= 16; n++)
                    for (w = n; w <= 16; w++)
                        for (two = 0; two < 2; two++) {
                            for (i = 0; i < 16; i++) {
                                uint32_t u = special[(t * 16 + i) % 12];
                                if (t % 2) memcpy(&a0[i], &u, 4); else a0[i] = src[(t * 16 + i) % (32 * 45)];
                                a1[i] = src[(t * 7 + i * 3) % (32 * 45)] * (t % 3 ? 1.0f : 1e-40f);
                                if (t % 4 == 1) memcpy(&a1[i], &special[(t + i * 5) % 12], 4);
                            }
                            memset(out, 0xff, sizeof out);
                            utg__pair_rows(out, a0, two ? a1 : NULL, n, w, t % 5 ? 1.0f : -0.5f);
                            cases++;
                            for (i = 0; i < 16; i++) {
                                float lo = (t % 5 ? 1.0f : -0.5f) * a0[i], hi = two ? (t % 5 ? 1.0f : -0.5f) * a1[i] : 0.0f;
                                uint32_t want = (size_t)i < (size_t)n ? utg__bf16_pair(lo, hi) : (size_t)i < (size_t)w ? 0u : 0xffffffffu;
                                if (out[i] != want) { bad++; break; }
                            }
                        }
            CHECK(bad == 0, "bf16 row pairs: %d of %d differ from utg__bf16_pair (zero up to w, nothing past it)", bad, cases);
        }
    }
#endif
    free(src); free(d0); free(d1);
}

/* The symmetric-result mode (UTG_*_SYM) on every kernel, fp32 and bf16: X X^T, X^T X, and A A with A
   symmetric, at sizes that cross the tiles, KC and NC. Its upper triangle has the full product's
   bits, and its lower triangle mirrors it (every element written: C starts as NaN). */
static int sym_mismatch(const float *full, const float *sym, int n) {
    int i, j, bad = 0;
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++) {
            float want = j >= i ? full[(size_t)i * n + j] : full[(size_t)j * n + i];
            if (memcmp(&want, &sym[(size_t)i * n + j], sizeof want) != 0) bad++;
        }
    return bad;
}
/* The CPU backend's scratch is 64-byte aligned at every size it grows to, so the ops' per-thread
   parts, started on multiples of 16 floats, never share a cache line between threads */
static void test_scratch_aligned(void) {
    static const size_t sizes[] = {1, 3, 17, 1000, 4097, 100000};
    size_t s;
    int ok = 1;
    for (s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        float *p = utg__cpu_scratch(be, sizes[s]);
        ok &= p != NULL && ((uintptr_t)p & 63u) == 0;
        if (p) p[sizes[s] - 1] = 1.0f; /* the whole size is usable */
    }
    CHECK(ok, "utg__cpu_scratch returns 64-byte aligned memory");
}

static void test_matmul_sym(void) {
    static const char *names[] = {"avx512", "avx2", "portable"};
    static const int sizes[3][2] = {{37, 70}, {600, 530}, {130, 12}}; /* n, k */
    int kn, si, seen = 0;
    for (kn = 0; kn < 3; kn++) {
        utg_backend *kb = NULL;
        setenv("UTG_CPU_KERNEL", names[kn], 1);
        if (utg_backend_cpu_create(NULL, &kb) != UTG_OK) { CHECK(0, "backend"); continue; }
        unsetenv("UTG_CPU_KERNEL");
        if (strcmp(utg_backend_cpu_kernel(kb), names[kn]) != 0) { utg_backend_destroy(kb); continue; }
        seen++;
        for (si = 0; si < 3; si++) {
            int n = sizes[si][0], k = sizes[si][1], k2 = k > n ? n : k, bf, i, j, bad = 0;
            float *X = rand_buf((size_t)n * k, 1), *S = rand_buf((size_t)n * n, 1);
            float *C0 = zeros((size_t)n * n), *C1 = zeros((size_t)n * n);
            size_t nn = (size_t)n * n;
            for (i = 0; i < n; i++)
                for (j = 0; j < i; j++) S[(size_t)i * n + j] = S[(size_t)j * n + i];
            for (bf = 0; bf < 2; bf++) {
                void (*mm)(utg_backend *, int, void *, const void *, const void *, int, int, int, utg_trans, utg_trans,
                           float, float) =
                    bf ? kb->matmul_bf16 : kb->matmul;
                mm(kb, UTG_MM_F32, C0, X, X, n, n, k, UTG_NO_TRANS, UTG_TRANS, 0.5f, 0.0f);
                memset(C1, 0xff, nn * sizeof(float));
                mm(kb, UTG_MM_F32, C1, X, X, n, n, k, UTG_NO_TRANS_SYM, UTG_TRANS, 0.5f, 0.0f);
                bad += sym_mismatch(C0, C1, n);
                mm(kb, UTG_MM_F32, C0, X, X, n, n, k2, UTG_TRANS, UTG_NO_TRANS, 1.0f, 0.0f); /* X'^T X', X' = X viewed as [k2, n] */
                memset(C1, 0xff, nn * sizeof(float));
                mm(kb, UTG_MM_F32, C1, X, X, n, n, k2, UTG_TRANS_SYM, UTG_NO_TRANS, 1.0f, 0.0f);
                bad += sym_mismatch(C0, C1, n);
                mm(kb, UTG_MM_F32, C0, S, S, n, n, n, UTG_NO_TRANS, UTG_NO_TRANS, -1.5f, 0.0f);
                memset(C1, 0xff, nn * sizeof(float));
                mm(kb, UTG_MM_F32, C1, S, S, n, n, n, UTG_NO_TRANS_SYM, UTG_NO_TRANS, -1.5f, 0.0f);
                bad += sym_mismatch(C0, C1, n);
            }
            CHECK(bad == 0, "%s n=%d k=%d: %d elements differ from the full product's upper triangle or its mirror", names[kn], n, k, bad);
            free(X); free(S); free(C0); free(C1);
        }
        utg_backend_destroy(kb);
    }
    CHECK(seen >= 1, "no kernel ran");
}

/* matmul on every microkernel this CPU has (avx512, avx2, portable) against a plain triple loop in
   double, at sizes that cross KC, NC and the tile edges, and the same bits for 1, 2 and 3 threads */
static void test_matmul_kernels(void) {
    static const char *names[] = {"avx512", "avx2", "portable"};
    /* M x N x K: edge slivers and panels, k blocks (K > 256 with 256 < N <= 512 splits k at 256 when B
       is read in place), one-row and one-column products; the last three take A^T B's two k halves
       (K >= 1024, N <= 512; fp32 when N is a multiple of NR), the last with an odd half 1 and a
       partial panel (bf16 only) */
    int sizes[10][3] = {{37, 600, 270}, {13, 530, 40}, {2, 33, 520}, {100, 64, 64}, {5, 3, 600}, {64, 257, 33}, {25, 300, 600},
                        {30, 288, 1300}, {40, 64, 1100}, {20, 100, 1031}},
        n, s, combo, seen = 0;
    for (n = 0; n < 3; n++) {
        utg_backend *kb = NULL;
        setenv("UTG_CPU_KERNEL", names[n], 1);
        if (utg_backend_cpu_create(NULL, &kb) != UTG_OK) { CHECK(0, "backend"); continue; }
        unsetenv("UTG_CPU_KERNEL");
        if (strcmp(utg_backend_cpu_kernel(kb), names[n]) != 0) { utg_backend_destroy(kb); continue; } /* not on this CPU */
        seen++;
        for (s = 0; s < 10; s++)
            for (combo = 0; combo < 4; combo++) {
                int M = sizes[s][0], N = sizes[s][1], K = sizes[s][2], i, j, k, ta = combo & 1, tb = combo >> 1, th;
                float *A = rand_buf((size_t)M * K, 1), *B = rand_buf((size_t)K * N, 1), *C = rand_buf((size_t)M * N, 1);
                float *C0 = (float *)malloc(sizeof(float) * M * N), *C1 = (float *)malloc(sizeof(float) * M * N);
                double worst = 0.0;
                int same = 1;
                memcpy(C0, C, sizeof(float) * M * N);
                kb->matmul(kb, UTG_MM_F32, C, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 1.0f);
                for (i = 0; i < M; i++)
                    for (j = 0; j < N; j++) {
                        double ref = C0[(size_t)i * N + j];
                        for (k = 0; k < K; k++)
                            ref += 0.5 * (double)(ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]) *
                                   (double)(tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j]);
                        if (fabs(ref - C[(size_t)i * N + j]) > worst) worst = fabs(ref - C[(size_t)i * N + j]);
                    }
                CHECK(worst < 2e-4, "%s %dx%dx%d ta=%d tb=%d: max error %.3g against the double reference", names[n], M, N, K, ta, tb, worst);
                { /* alpha 1 reads whole slivers of A in place (its rows, or A^T's columns); 2A with alpha 1/2 is packed
                     (the halving is exact): the same products in the same order, so the same bits */
                    float *A2 = (float *)malloc(sizeof(float) * M * K), *C2 = (float *)malloc(sizeof(float) * M * N);
                    for (i = 0; i < M * K; i++) A2[i] = 2.0f * A[i];
                    memcpy(C1, C0, sizeof(float) * M * N);
                    memcpy(C2, C0, sizeof(float) * M * N);
                    kb->matmul(kb, UTG_MM_F32, C1, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 1.0f, 1.0f);
                    kb->matmul(kb, UTG_MM_F32, C2, A2, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 1.0f);
                    CHECK(!memcmp(C1, C2, sizeof(float) * M * N), "%s %dx%dx%d ta=%d tb=%d: alpha 1 (A in place) and 2A at alpha 1/2 (packed) differ",
                          names[n], M, N, K, ta, tb);
                    free(A2); free(C2);
                }
                { /* beta 0 stores without reading C (NaN here): what beta 1 gives on a zero C */
                    float *C2 = (float *)malloc(sizeof(float) * M * N);
                    int eq = 1;
                    for (i = 0; i < M * N; i++) { C1[i] = 0.0f; C2[i] = NAN; }
                    kb->matmul(kb, UTG_MM_F32, C1, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 1.0f);
                    kb->matmul(kb, UTG_MM_F32, C2, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 0.0f);
                    for (i = 0; i < M * N; i++) eq &= C1[i] == C2[i];
                    CHECK(eq, "%s %dx%dx%d ta=%d tb=%d: beta 0 differs from beta 1 on a zero C", names[n], M, N, K, ta, tb);
                    free(C2);
                }
                { /* matmul_bf16: the double reference of bf16(0.5 A) bf16(B), summed exactly (bf16 products are exact in fp32) */
                    double wb = 0.0, wr = 0.0;
                    memcpy(C1, C0, sizeof(float) * M * N);
                    kb->matmul_bf16(kb, UTG_MM_F32, C1, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 1.0f);
                    for (i = 0; i < M; i++)
                        for (j = 0; j < N; j++) {
                            double ref = C0[(size_t)i * N + j], plain = ref;
                            for (k = 0; k < K; k++) {
                                float a = 0.5f * (ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]), b = tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                                ref += (double)bf16r(a) * (double)bf16r(b);
                                plain += (double)a * (double)b;
                            }
                            if (fabs(ref - C1[(size_t)i * N + j]) > wb) wb = fabs(ref - C1[(size_t)i * N + j]);
                            if (fabs(plain - C1[(size_t)i * N + j]) > wr) wr = fabs(plain - C1[(size_t)i * N + j]);
                        }
                    /* fp32 sums of exact products: 2e-4 as above; and it really rounded (far from the fp32 result) */
                    CHECK(wb < 2e-4 && wr > 1e-3, "%s bf16 %dx%dx%d ta=%d tb=%d: %.3g from the bf16 reference, %.3g from fp32", names[n], M, N, K,
                          ta, tb, wb, wr);
                }
#ifdef _OPENMP
                for (th = 1; th <= 3; th++) {
                    int keep = omp_get_max_threads();
                    memcpy(C1, C0, sizeof(float) * M * N);
                    omp_set_num_threads(th);
                    kb->matmul(kb, UTG_MM_F32, C1, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 1.0f);
                    omp_set_num_threads(keep);
                    same &= memcmp(C1, C, sizeof(float) * M * N) == 0;
                }
                CHECK(same, "%s %dx%dx%d ta=%d tb=%d: the same bits for 1, 2 and 3 threads", names[n], M, N, K, ta, tb);
                same = 1;
                for (th = 1; th <= 3; th++) { /* and for the bf16 op */
                    int keep = omp_get_max_threads();
                    float *C2 = (float *)malloc(sizeof(float) * M * N), *C3 = (float *)malloc(sizeof(float) * M * N);
                    memcpy(C2, C0, sizeof(float) * M * N);
                    memcpy(C3, C0, sizeof(float) * M * N);
                    kb->matmul_bf16(kb, UTG_MM_F32, C2, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 1.0f);
                    omp_set_num_threads(th);
                    kb->matmul_bf16(kb, UTG_MM_F32, C3, A, B, M, N, K, (utg_trans)ta, (utg_trans)tb, 0.5f, 1.0f);
                    omp_set_num_threads(keep);
                    same &= memcmp(C2, C3, sizeof(float) * M * N) == 0;
                    free(C2); free(C3);
                }
                CHECK(same, "%s bf16 %dx%dx%d ta=%d tb=%d: the same bits for 1, 2 and 3 threads", names[n], M, N, K, ta, tb);
#else
                (void)th; (void)same; (void)C1;
#endif
                free(A); free(B); free(C); free(C0); free(C1);
            }
        utg_backend_destroy(kb);
    }
    CHECK(seen >= 1, "at least the portable kernel ran");
    printf("      kernels checked: %d (this CPU picks %s)\n", seen, utg_backend_cpu_kernel(be));
}

/* ---- embedding ---- */
typedef struct { int n, d, V; int32_t ids[12]; float *E, *out, *W, *gE; } emb_ctx;
static double emb_obj(void *p) {
    emb_ctx *c = (emb_ctx *)p;
    be->embed_fwd(be, UTG_DT_F32, c->out, c->E, c->ids, c->n, c->d);
    return wdot(c->W, c->out, (size_t)c->n * c->d);
}
static void emb_grad(void *p) {
    emb_ctx *c = (emb_ctx *)p;
    memset(c->gE, 0, sizeof(float) * c->V * c->d);
    be->embed_bwd(be, UTG_DT_F32, c->gE, c->W, c->ids, c->n, c->d);
}
static void test_embed_grad(void) {
    emb_ctx c;
    gc_case gc;
    int i, ids[12] = {3, 0, 5, 3, 3, 1, 7, 0, 2, 6, 5, 3}; /* repeats: gradients must accumulate */
    c.n = 12; c.d = 70; c.V = 8;
    for (i = 0; i < 12; i++) c.ids[i] = ids[i];
    c.E = rand_buf((size_t)c.V * c.d, 1); c.out = zeros((size_t)c.n * c.d); c.W = rand_buf((size_t)c.n * c.d, 1);
    c.gE = zeros((size_t)c.V * c.d);
    memset(&gc, 0, sizeof gc);
    gc.ctx = &c; gc.objective = emb_obj; gc.grad = emb_grad; gc.n_in = 1;
    gc.in[0].name = "table"; gc.in[0].x = c.E; gc.in[0].g = c.gE; gc.in[0].n = (size_t)c.V * c.d;
    check_case("embed", &gc, gc_default_opts());
    free(c.E); free(c.out); free(c.W); free(c.gE);
}

/* ---- RMSNorm ---- */
typedef struct { int rows, cols; float *x, *y, *rstd, *W, *gx; } rms_ctx;
static double rms_obj(void *p) {
    rms_ctx *c = (rms_ctx *)p;
    be->rmsnorm_fwd(be, UTG_DT_F32, c->y, c->rstd, c->x, c->rows, c->cols, 1.1920929e-7f);
    return wdot(c->W, c->y, (size_t)c->rows * c->cols);
}
static void rms_grad(void *p) {
    rms_ctx *c = (rms_ctx *)p;
    rms_obj(c);
    memset(c->gx, 0, sizeof(float) * c->rows * c->cols);
    be->rmsnorm_bwd(be, UTG_DT_F32, c->gx, c->W, c->y, c->rstd, c->rows, c->cols);
}
static gc_case rms_case(rms_ctx *c) {
    gc_case gc;
    c->rows = 6; c->cols = 40;
    c->x = rand_buf(240, 1); c->y = zeros(240); c->rstd = zeros(6); c->W = rand_buf(240, 1); c->gx = zeros(240);
    memset(&gc, 0, sizeof gc);
    gc.ctx = c; gc.objective = rms_obj; gc.grad = rms_grad; gc.n_in = 1;
    gc.in[0].name = "x"; gc.in[0].x = c->x; gc.in[0].g = c->gx; gc.in[0].n = 240;
    return gc;
}
static void rms_free(rms_ctx *c) { free(c->x); free(c->y); free(c->rstd); free(c->W); free(c->gx); }
static void test_rmsnorm_grad(void) {
    rms_ctx c;
    gc_case gc = rms_case(&c);
    gc_opts o = gc_default_opts();
    o.max_probe = 0;
    check_case("rmsnorm", &gc, o);
    rms_free(&c);
}

/* The checker itself: a planted error in a backward must be caught. Two plants: RMSNorm's
   backward without its projection term (dx = rstd*dy), and a 1% scale error. */
static void rms_grad_wrong(void *p) {
    rms_ctx *c = (rms_ctx *)p;
    int i;
    rms_obj(c);
    for (i = 0; i < c->rows * c->cols; i++) c->gx[i] = c->rstd[i / c->cols] * c->W[i];
}
static void rms_grad_scaled(void *p) {
    rms_ctx *c = (rms_ctx *)p;
    int i;
    rms_grad(c);
    for (i = 0; i < c->rows * c->cols; i++) c->gx[i] *= 1.05f;
}
static void test_checker_catches_planted_errors(void) {
    rms_ctx c;
    gc_case gc = rms_case(&c);
    gc_opts o = gc_default_opts();
    double worst;
    o.max_probe = 0;
    gc.grad = rms_grad_wrong;
    worst = gc_check(&gc, &o, NULL);
    CHECK(worst > 10.0, "a backward missing its projection term passed (ratio %.3g)", worst);
    gc.grad = rms_grad_scaled;
    worst = gc_check(&gc, &o, NULL);
    CHECK(worst > 1.0, "a backward off by 5%% passed (ratio %.3g)", worst);
    gc.grad = rms_grad;
    worst = gc_check(&gc, &o, NULL);
    CHECK(worst <= 1.0, "the correct backward failed (ratio %.3g)", worst);
    rms_free(&c);
}

/* ---- q/k preparation: per-head RMSNorm, RoPE (its backward is the inverse rotation), q_gain ---- */
typedef struct { int n_tok, T, H, hd, rd, gain; float *x, *y, *xn, *rstd, *cs, *g, *W, *gx, *gg; } qk_ctx;
static double qk_obj(void *p) {
    qk_ctx *c = (qk_ctx *)p;
    be->qk_norm_rope_fwd(be, UTG_DT_F32, c->y, c->xn, c->rstd, c->x, c->cs, c->gain ? c->g : NULL, c->n_tok, c->T, c->H, c->hd, c->rd, 1e-6f);
    return wdot(c->W, c->y, (size_t)c->n_tok * c->H * c->hd);
}
static void qk_grad(void *p) {
    qk_ctx *c = (qk_ctx *)p;
    qk_obj(c);
    nan_fill(c->gx, (size_t)c->n_tok * c->H * c->hd); /* dx is written, not added to */
    memset(c->gg, 0, sizeof(float) * (size_t)c->H);
    be->qk_norm_rope_bwd(be, UTG_DT_F32, c->gx, c->gain ? c->gg : NULL, c->W, c->xn, c->rstd, c->cs, c->gain ? c->g : NULL, c->n_tok, c->T, c->H,
                         c->hd, c->rd);
}
static void rope_table(float *cs, int T, int rd) {
    int t, i, half = rd / 2;
    for (t = 0; t < T; t++)
        for (i = 0; i < half; i++) {
            double ang = t * pow(10000.0, -2.0 * i / rd);
            cs[t * half + i] = (float)cos(ang);
            cs[T * half + t * half + i] = (float)sin(ang);
        }
}
static void test_qk_norm_rope(void) {
    int variant;
    for (variant = 0; variant < 3; variant++) { /* the whole head with q_gain; partial RoPE (4 of 8) with q_gain; k (no gain) */
        qk_ctx c;
        gc_case gc;
        size_t n;
        int t, h, i;
        double worst = 0.0;
        c.T = 5; c.n_tok = 70; c.H = 3; c.hd = 8; c.rd = variant == 1 ? 4 : 8; c.gain = variant < 2; /* more tokens than reduction chunks */
        n = (size_t)c.n_tok * c.H * c.hd;
        c.x = rand_buf(n, 1); c.y = zeros(n); c.xn = zeros(n); c.rstd = zeros((size_t)c.n_tok * c.H); c.W = rand_buf(n, 1);
        c.gx = zeros(n); c.g = rand_buf(3, 2); c.gg = zeros(3); c.cs = zeros((size_t)c.T * c.rd);
        rope_table(c.cs, c.T, c.rd);
        /* the forward against a double reference of norm, rotation (train_gpt.py's sign convention:
           x1' = x1 cos + x2 sin, x2' = x2 cos - x1 sin), pass-through dims and gain */
        qk_obj(&c);
        for (t = 0; t < c.n_tok; t++)
            for (h = 0; h < c.H; h++) {
                const float *x = c.x + ((size_t)t * c.H + h) * c.hd, *y = c.y + ((size_t)t * c.H + h) * c.hd;
                double ss = 0, rs, g = c.gain ? c.g[h] : 1.0;
                int pos = t % c.T, half = c.rd / 2;
                for (i = 0; i < c.hd; i++) ss += (double)x[i] * x[i];
                rs = 1.0 / sqrt(ss / c.hd + 1e-6);
                for (i = 0; i < c.hd; i++) {
                    double ref;
                    if (i < half) {
                        double a = pos * pow(10000.0, -2.0 * i / c.rd);
                        ref = g * rs * (x[i] * cos(a) + x[i + half] * sin(a));
                    } else if (i < c.rd) {
                        double a = pos * pow(10000.0, -2.0 * (i - half) / c.rd);
                        ref = g * rs * (x[i] * cos(a) - x[i - half] * sin(a));
                    } else {
                        ref = g * rs * x[i];
                    }
                    worst = fmax(worst, fabs(ref - y[i]));
                }
            }
        CHECK(worst < 1e-5, "variant %d: the forward is %.3g from the double reference", variant, worst);
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = qk_obj; gc.grad = qk_grad; gc.n_in = c.gain ? 2 : 1;
        gc.in[0].name = "x"; gc.in[0].x = c.x; gc.in[0].g = c.gx; gc.in[0].n = n;
        gc.in[1].name = "gain"; gc.in[1].x = c.g; gc.in[1].g = c.gg; gc.in[1].n = 3;
        check_case(variant == 0 ? "qk_norm_rope" : variant == 1 ? "qk_norm_rope partial 4 of 8" : "qk_norm_rope without gain", &gc,
                   gc_default_opts());
#ifdef _OPENMP
        { /* the same bits for 1 and 3 threads (dgain sums fixed chunks of tokens) */
            int keep = omp_get_max_threads();
            float *gx1 = zeros(n), g1[3];
            qk_grad(&c);
            memcpy(gx1, c.gx, n * sizeof(float));
            memcpy(g1, c.gg, sizeof g1);
            omp_set_num_threads(keep == 1 ? 3 : 1);
            qk_grad(&c);
            omp_set_num_threads(keep);
            CHECK(!memcmp(gx1, c.gx, n * sizeof(float)) && !memcmp(g1, c.gg, sizeof g1), "variant %d: the same bits for another thread count",
                  variant);
            free(gx1);
        }
#endif
        free(c.x); free(c.y); free(c.xn); free(c.rstd); free(c.W); free(c.gx); free(c.g); free(c.gg); free(c.cs);
    }
}

/* ---- causal GQA attention ---- */
typedef struct { int B, T, H, Hkv, hd; float scale; float *q, *k, *v, *y, *lse, *W, *gq, *gk, *gv; } at_ctx;
static double at_obj(void *p) {
    at_ctx *c = (at_ctx *)p;
    be->attn_fwd(be, UTG_DT_F32, c->y, c->lse, c->q, c->k, c->v, c->B, c->T, c->H, c->Hkv, c->hd, c->scale);
    return wdot(c->W, c->y, (size_t)c->B * c->T * c->H * c->hd);
}
static void at_grad(void *p) {
    at_ctx *c = (at_ctx *)p;
    size_t nq = (size_t)c->B * c->T * c->H * c->hd, nk = (size_t)c->B * c->T * c->Hkv * c->hd;
    at_obj(c);
    nan_fill(c->gq, nq); /* written, not added to */
    nan_fill(c->gk, nk);
    nan_fill(c->gv, nk);
    be->attn_bwd(be, UTG_DT_F32, c->gq, c->gk, c->gv, c->W, c->q, c->k, c->v, c->y, c->lse, c->B, c->T, c->H, c->Hkv, c->hd, c->scale);
}
static void test_attention_grad(void) {
    int variant;
    for (variant = 0; variant < 2; variant++) {
        at_ctx c;
        gc_case gc;
        size_t nq, nk;
        char what[64];
        c.B = 2; c.T = 6; c.H = 4; c.Hkv = variant ? 4 : 2; c.hd = 8; c.scale = 1.0f / sqrtf(8.0f);
        nq = (size_t)c.B * c.T * c.H * c.hd; nk = (size_t)c.B * c.T * c.Hkv * c.hd;
        c.q = rand_buf(nq, 1.5); c.k = rand_buf(nk, 1.5); c.v = rand_buf(nk, 1); c.y = zeros(nq);
        c.lse = zeros((size_t)c.B * c.T * c.H); c.W = rand_buf(nq, 1); c.gq = zeros(nq); c.gk = zeros(nk); c.gv = zeros(nk);
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = at_obj; gc.grad = at_grad; gc.n_in = 3;
        gc.in[0].name = "q"; gc.in[0].x = c.q; gc.in[0].g = c.gq; gc.in[0].n = nq;
        gc.in[1].name = "k"; gc.in[1].x = c.k; gc.in[1].g = c.gk; gc.in[1].n = nk;
        gc.in[2].name = "v"; gc.in[2].x = c.v; gc.in[2].g = c.gv; gc.in[2].n = nk;
        snprintf(what, sizeof what, "attention H=%d Hkv=%d", c.H, c.Hkv);
        check_case(what, &gc, gc_default_opts());
        /* causality: the first query of each sequence sees only itself, so y = v of that token */
        at_obj(&c);
        CHECK(fabs(c.y[0] - c.v[0]) < 1e-6, "first token must attend only to itself");
        free(c.q); free(c.k); free(c.v); free(c.y); free(c.lse); free(c.W); free(c.gq); free(c.gk); free(c.gv);
    }
}

/* The tiled attention at lengths that cross its query panels (NR: 32 or 16) and key tiles (96),
   against a plain double implementation (forward y and lse, backward dq, dk, dv), on every kernel
   this CPU has, and the same bits for 1 and 3 threads. */
static void attn_ref(const float *q, const float *k, const float *v, const float *dy, int B, int T, int H, int Hkv, int hd, double scale,
                     double *y, double *lse, double *dq, double *dk, double *dv) {
    int b, h, t, s, i, g = H / Hkv, qw = H * hd, kw = Hkv * hd;
    double *p = (double *)malloc(sizeof(double) * T), *dp = (double *)malloc(sizeof(double) * T);
    memset(dq, 0, sizeof(double) * B * T * qw);
    memset(dk, 0, sizeof(double) * B * T * kw);
    memset(dv, 0, sizeof(double) * B * T * kw);
    for (b = 0; b < B; b++)
        for (h = 0; h < H; h++)
            for (t = 0; t < T; t++) {
                const float *qr = q + ((size_t)b * T + t) * qw + h * hd;
                double mx = -1e300, sum = 0, D = 0;
                for (s = 0; s <= t; s++) {
                    const float *kr = k + ((size_t)b * T + s) * kw + (h / g) * hd;
                    double d = 0;
                    for (i = 0; i < hd; i++) d += (double)qr[i] * kr[i];
                    p[s] = d * scale;
                    if (p[s] > mx) mx = p[s];
                }
                for (s = 0; s <= t; s++) { p[s] = exp(p[s] - mx); sum += p[s]; }
                lse[((size_t)b * T + t) * H + h] = mx + log(sum);
                for (i = 0; i < hd; i++) {
                    double a = 0;
                    for (s = 0; s <= t; s++) a += p[s] / sum * v[((size_t)b * T + s) * kw + (h / g) * hd + i];
                    y[((size_t)b * T + t) * qw + h * hd + i] = a;
                }
                for (s = 0; s <= t; s++) p[s] /= sum;
                for (i = 0; i < hd; i++) D += (double)dy[((size_t)b * T + t) * qw + h * hd + i] * y[((size_t)b * T + t) * qw + h * hd + i];
                for (s = 0; s <= t; s++) {
                    double a = 0;
                    for (i = 0; i < hd; i++) a += (double)dy[((size_t)b * T + t) * qw + h * hd + i] * v[((size_t)b * T + s) * kw + (h / g) * hd + i];
                    dp[s] = p[s] * (a - D) * scale;
                    for (i = 0; i < hd; i++) {
                        dq[((size_t)b * T + t) * qw + h * hd + i] += dp[s] * k[((size_t)b * T + s) * kw + (h / g) * hd + i];
                        dk[((size_t)b * T + s) * kw + (h / g) * hd + i] += dp[s] * qr[i];
                        dv[((size_t)b * T + s) * kw + (h / g) * hd + i] += p[s] * dy[((size_t)b * T + t) * qw + h * hd + i];
                    }
                }
            }
    free(p);
    free(dp);
}
static double max_err(const float *a, const double *r, size_t n) {
    double w = 0, m = 0;
    size_t i;
    for (i = 0; i < n; i++) { w = fmax(w, fabs(a[i] - r[i])); m = fmax(m, fabs(r[i])); }
    return w / (m > 0 ? m : 1);
}
static void test_attention_tiles(void) {
    static const char *names[] = {"avx512", "avx2", "portable"};
    /* B, T, H, Hkv, hd: partial query panels and key tiles, hd below, between and above the kernels'
       MR and NR, and a kv head shared by 4 query heads */
    static const int shapes[3][5] = {{2, 150, 4, 2, 8}, {1, 97, 2, 1, 20}, {1, 200, 4, 1, 64}};
    int n, si, seen = 0;
    for (n = 0; n < 3; n++) {
        utg_backend *kb = NULL;
        setenv("UTG_CPU_KERNEL", names[n], 1);
        utg_backend_cpu_create(NULL, &kb);
        unsetenv("UTG_CPU_KERNEL");
        if (!kb) { CHECK(0, "backend"); continue; }
        if (strcmp(utg_backend_cpu_kernel(kb), names[n]) != 0) { utg_backend_destroy(kb); continue; }
        seen++;
        for (si = 0; si < 3; si++) {
            int B = shapes[si][0], T = shapes[si][1], H = shapes[si][2], Hkv = shapes[si][3], hd = shapes[si][4];
            size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * Hkv * hd, nl = (size_t)B * T * H;
            float scale = 1.0f / sqrtf((float)hd);
            float *q = rand_buf(nq, 1.5), *k = rand_buf(nk, 1.5), *v = rand_buf(nk, 1), *dy = rand_buf(nq, 1), *y = zeros(nq), *lse = zeros(nl);
            float *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk), *y1 = zeros(nq), *dq1 = zeros(nq), *dk1 = zeros(nk), *dv1 = zeros(nk);
            double *ry = (double *)malloc(sizeof(double) * nq), *rl = (double *)malloc(sizeof(double) * nl);
            double *rq = (double *)malloc(sizeof(double) * nq), *rk = (double *)malloc(sizeof(double) * nk), *rv = (double *)malloc(sizeof(double) * nk);
            double el = 0;
            size_t i;
            attn_ref(q, k, v, dy, B, T, H, Hkv, hd, scale, ry, rl, rq, rk, rv);
            kb->attn_fwd(kb, UTG_DT_F32, y, lse, q, k, v, B, T, H, Hkv, hd, scale);
            nan_fill(dq, nq); nan_fill(dk, nk); nan_fill(dv, nk); /* written, not added to */
            kb->attn_bwd(kb, UTG_DT_F32, dq, dk, dv, dy, q, k, v, y, lse, B, T, H, Hkv, hd, scale);
            for (i = 0; i < nl; i++) el = fmax(el, fabs(lse[i] - rl[i]));
            /* fp32 against double over up to 150 keys: 1e-5 of the largest entry (measured ~1e-6) */
            CHECK(max_err(y, ry, nq) < 1e-5 && el < 1e-5 && max_err(dq, rq, nq) < 1e-5 && max_err(dk, rk, nk) < 1e-5 &&
                      max_err(dv, rv, nk) < 1e-5,
                  "%s T=%d hd=%d: y %.2g lse %.2g dq %.2g dk %.2g dv %.2g", names[n], T, hd, max_err(y, ry, nq), el, max_err(dq, rq, nq),
                  max_err(dk, rk, nk), max_err(dv, rv, nk));
#ifdef _OPENMP
            {
                int keep = omp_get_max_threads();
                float *l1 = zeros(nl);
                omp_set_num_threads(keep == 1 ? 3 : 1);
                kb->attn_fwd(kb, UTG_DT_F32, y1, l1, q, k, v, B, T, H, Hkv, hd, scale);
                nan_fill(dq1, nq); nan_fill(dk1, nk); nan_fill(dv1, nk);
                kb->attn_bwd(kb, UTG_DT_F32, dq1, dk1, dv1, dy, q, k, v, y1, l1, B, T, H, Hkv, hd, scale);
                omp_set_num_threads(keep);
                CHECK(!memcmp(y, y1, nq * 4) && !memcmp(lse, l1, nl * 4) && !memcmp(dq, dq1, nq * 4) && !memcmp(dk, dk1, nk * 4) &&
                          !memcmp(dv, dv1, nk * 4),
                      "%s T=%d: the same bits for another thread count", names[n], T);
                free(l1);
            }
#endif
            free(q); free(k); free(v); free(dy); free(y); free(lse); free(dq); free(dk); free(dv); free(y1); free(dq1); free(dk1); free(dv1);
            free(ry); free(rl); free(rq); free(rk); free(rv);
        }
        utg_backend_destroy(kb);
    }
    CHECK(seen >= 1, "a kernel ran");
}

/* ---- relu^2 ---- */
typedef struct { size_t n; float slope; float *x, *y, *W, *gx; } r2_ctx;
static double r2_obj(void *p) {
    r2_ctx *c = (r2_ctx *)p;
    be->relu2_fwd(be, UTG_DT_F32, c->y, c->x, c->n, c->slope);
    return wdot(c->W, c->y, c->n);
}
static void r2_grad(void *p) {
    r2_ctx *c = (r2_ctx *)p;
    nan_fill(c->gx, c->n); /* written, not added to */
    be->relu2_bwd(be, UTG_DT_F32, c->gx, c->W, c->x, c->n, c->slope);
}
static void test_relu2_grad(void) {
    r2_ctx c;
    gc_case gc;
    size_t i;
    int variant;
    for (variant = 0; variant < 2; variant++) { /* relu^2, then leaky_relu(x, 0.5)^2 (PR #493) */
        c.n = 200;
        c.slope = variant ? 0.5f : 0.0f;
        c.x = rand_buf(c.n, 2); c.y = zeros(c.n); c.W = rand_buf(c.n, 1); c.gx = zeros(c.n);
        for (i = 0; i < c.n; i++) if (fabsf(c.x[i]) < 0.05f) c.x[i] = 0.5f; /* stay off the kink */
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = r2_obj; gc.grad = r2_grad; gc.n_in = 1;
        gc.in[0].name = "x"; gc.in[0].x = c.x; gc.in[0].g = c.gx; gc.in[0].n = c.n;
        check_case(variant ? "leaky_relu2 0.5" : "relu2", &gc, gc_default_opts());
        c.x[0] = -2.0f;
        r2_obj(&c);
        CHECK(c.y[0] == (variant ? 1.0f : 0.0f), "f(-2) = (slope * -2)^2: %g", c.y[0]);
        free(c.x); free(c.y); free(c.W); free(c.gx);
    }
}

/* ---- XSA: remove each head's component along its own token's value (GQA groups share it) ---- */
typedef struct { int n_tok, H, Hkv, hd; float *x, *v, *y, *W, *gx, *gv; } xsa_ctx;
static double xsa_obj(void *p) {
    xsa_ctx *c = (xsa_ctx *)p;
    be->xsa_fwd(be, UTG_DT_F32, c->y, c->x, c->v, c->n_tok, c->H, c->Hkv, c->hd);
    return wdot(c->W, c->y, (size_t)c->n_tok * c->H * c->hd);
}
static void xsa_grad(void *p) {
    xsa_ctx *c = (xsa_ctx *)p;
    memset(c->gx, 0, (size_t)c->n_tok * c->H * c->hd * sizeof(float));
    memset(c->gv, 0, (size_t)c->n_tok * c->Hkv * c->hd * sizeof(float));
    be->xsa_bwd(be, UTG_DT_F32, c->gx, c->gv, c->W, c->x, c->v, c->n_tok, c->H, c->Hkv, c->hd);
}
static void test_xsa_grad(void) {
    int variant;
    for (variant = 0; variant < 2; variant++) { /* GQA (2 query heads per kv head), then MHA */
        xsa_ctx c;
        gc_case gc;
        size_t nx, nv;
        int t, h, i;
        c.n_tok = 7; c.H = 4; c.Hkv = variant ? 4 : 2; c.hd = 8;
        nx = (size_t)c.n_tok * c.H * c.hd; nv = (size_t)c.n_tok * c.Hkv * c.hd;
        c.x = rand_buf(nx, 1); c.v = rand_buf(nv, 1); c.y = zeros(nx); c.W = rand_buf(nx, 1); c.gx = zeros(nx); c.gv = zeros(nv);
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = xsa_obj; gc.grad = xsa_grad; gc.n_in = 2;
        gc.in[0].name = "x"; gc.in[0].x = c.x; gc.in[0].g = c.gx; gc.in[0].n = nx;
        gc.in[1].name = "v"; gc.in[1].x = c.v; gc.in[1].g = c.gv; gc.in[1].n = nv;
        check_case(variant ? "xsa MHA" : "xsa GQA", &gc, gc_default_opts());
        /* the output is orthogonal to the token's own value, for every head of the group */
        xsa_obj(&c);
        for (t = 0; t < c.n_tok; t++)
            for (h = 0; h < c.H; h++) {
                const float *y = c.y + ((size_t)t * c.H + h) * c.hd, *v = c.v + ((size_t)t * c.Hkv + h / (c.H / c.Hkv)) * c.hd;
                double dotp = 0, ny = 0;
                for (i = 0; i < c.hd; i++) { dotp += (double)y[i] * v[i]; ny += (double)y[i] * y[i]; }
                if (fabs(dotp) > 1e-5 * (1 + sqrt(ny))) { CHECK(0, "token %d head %d: y.v = %g", t, h, dotp); t = c.n_tok; break; }
            }
        free(c.x); free(c.v); free(c.y); free(c.W); free(c.gx); free(c.gv);
    }
}

/* ---- gated skip: out = a x + (1 - a) s z, a = sigmoid(g) ---- */
typedef struct { int rows, cols; float *x, *z, *g, *s, *y, *W, *dout, *gx, *gz, *gg, *gs; } lerp_ctx;
static double lerp_obj(void *p) {
    lerp_ctx *c = (lerp_ctx *)p;
    be->lerp_fwd(be, UTG_DT_F32, c->y, c->x, c->z, c->g, c->s, c->rows, c->cols);
    return wdot(c->W, c->y, (size_t)c->rows * c->cols);
}
static void lerp_grad(void *p) {
    lerp_ctx *c = (lerp_ctx *)p;
    size_t n = (size_t)c->rows * c->cols;
    lerp_obj(c);
    memset(c->gz, 0, n * sizeof(float)); memset(c->gg, 0, c->cols * sizeof(float)); memset(c->gs, 0, c->cols * sizeof(float));
    memcpy(c->gx, c->W, n * sizeof(float)); /* dx overwrites dout in place, as the model calls it */
    be->lerp_bwd(be, UTG_DT_F32, c->gx, c->gz, c->gg, c->gs, c->gx, c->y, c->z, c->g, c->s, c->rows, c->cols);
}
static void test_lerp_grad(void) {
    lerp_ctx c;
    gc_case gc;
    size_t n;
    c.rows = 9; c.cols = 6;
    n = (size_t)c.rows * c.cols;
    c.x = rand_buf(n, 1); c.z = rand_buf(n, 1); c.g = rand_buf(6, 1.5); c.s = rand_buf(6, 1); c.y = zeros(n); c.W = rand_buf(n, 1);
    c.gx = zeros(n); c.gz = zeros(n); c.gg = zeros(6); c.gs = zeros(6);
    memset(&gc, 0, sizeof gc);
    gc.ctx = &c; gc.objective = lerp_obj; gc.grad = lerp_grad; gc.n_in = 4;
    gc.in[0].name = "x"; gc.in[0].x = c.x; gc.in[0].g = c.gx; gc.in[0].n = n;
    gc.in[1].name = "z"; gc.in[1].x = c.z; gc.in[1].g = c.gz; gc.in[1].n = n;
    gc.in[2].name = "gate"; gc.in[2].x = c.g; gc.in[2].g = c.gg; gc.in[2].n = 6;
    gc.in[3].name = "s"; gc.in[3].x = c.s; gc.in[3].g = c.gs; gc.in[3].n = 6;
    check_case("lerp (skip gates)", &gc, gc_default_opts());
    c.g[0] = 0.0f; /* gate 0: the mean of h and s*z (PR #1089's start) */
    lerp_obj(&c);
    CHECK(fabsf(c.y[0] - 0.5f * (c.x[0] + c.s[0] * c.z[0])) < 1e-6f, "gate 0 gives the midpoint");
    { /* s = NULL means s = 1 (the static SmearGate), ds NULL */
        lerp_ctx u = c;
        float *ones = zeros(6), *s_keep = c.s;
        int i;
        for (i = 0; i < 6; i++) ones[i] = 1.0f;
        u.s = NULL;
        lerp_obj(&u);
        memcpy(c.gx, u.y, n * sizeof(float));
        c.s = ones;
        lerp_obj(&c);
        CHECK(memcmp(c.gx, c.y, n * sizeof(float)) == 0, "s = NULL is s = 1");
        memset(u.gz, 0, n * sizeof(float)); memset(u.gg, 0, 6 * sizeof(float));
        memcpy(u.gx, u.W, n * sizeof(float));
        lerp_obj(&u);
        be->lerp_bwd(be, UTG_DT_F32, u.gx, u.gz, u.gg, NULL, u.gx, u.y, u.z, u.g, NULL, u.rows, u.cols);
        lerp_grad(&c);
        CHECK(memcmp(u.gx, c.gx, n * sizeof(float)) == 0 && memcmp(u.gz, c.gz, n * sizeof(float)) == 0 &&
              memcmp(u.gg, c.gg, 6 * sizeof(float)) == 0, "the backward with s = NULL is the one with s = 1");
        c.s = s_keep;
        free(ones);
    }
    free(c.x); free(c.z); free(c.g); free(c.s); free(c.y); free(c.W); free(c.gx); free(c.gz); free(c.gg); free(c.gs);
}

/* ---- attention output gates: sparse (window, scale), AttnOutGate (2 sigmoid), dense ---- */
typedef struct { int n, H, hd, xc, win; float scale, mult; float *yin, *x, *W, *y, *g, *Wo, *gyin, *gx, *gW; } gate_ctx;
static double gate_obj(void *p) {
    gate_ctx *c = (gate_ctx *)p;
    be->gate_fwd(be, UTG_DT_F32, c->y, c->g, c->yin, c->x, c->W, c->n, c->H, c->hd, c->xc, c->win, c->scale, c->mult);
    return wdot(c->Wo, c->y, (size_t)c->n * c->H * c->hd);
}
static void gate_grad(void *p) {
    gate_ctx *c = (gate_ctx *)p;
    gate_obj(c);
    memset(c->gyin, 0, sizeof(float) * (size_t)c->n * c->H * c->hd);
    memset(c->gx, 0, sizeof(float) * (size_t)c->n * c->xc);
    memset(c->gW, 0, sizeof(float) * (size_t)c->H * c->win);
    be->gate_bwd(be, UTG_DT_F32, c->gyin, c->gx, c->gW, c->Wo, c->yin, c->x, c->W, c->g, c->n, c->H, c->hd, c->xc, c->win, c->scale, c->mult);
}
static void test_gate_grad(void) {
    static const char *names[3] = {"sparse gate (window 5, scale 0.5)", "AttnOutGate (2 sigmoid)", "dense gate"};
    int v;
    for (v = 0; v < 3; v++) {
        gate_ctx c;
        gc_case gc;
        size_t ny;
        c.n = 7; c.H = 3; c.hd = 4; c.xc = 12; c.win = v == 2 ? 12 : 5; c.scale = v == 0 ? 0.5f : 1.0f; /* PR #1855: 0.5 */ c.mult = v == 1 ? 2.0f : 1.0f;
        ny = (size_t)c.n * c.H * c.hd;
        c.yin = rand_buf(ny, 1); c.x = rand_buf((size_t)c.n * c.xc, 1); c.W = rand_buf((size_t)c.H * c.win, 1);
        c.y = zeros(ny); c.g = zeros((size_t)c.n * c.H); c.Wo = rand_buf(ny, 1);
        c.gyin = zeros(ny); c.gx = zeros((size_t)c.n * c.xc); c.gW = zeros((size_t)c.H * c.win);
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = gate_obj; gc.grad = gate_grad; gc.n_in = 3;
        gc.in[0].name = "yin"; gc.in[0].x = c.yin; gc.in[0].g = c.gyin; gc.in[0].n = ny;
        gc.in[1].name = "x"; gc.in[1].x = c.x; gc.in[1].g = c.gx; gc.in[1].n = (size_t)c.n * c.xc;
        gc.in[2].name = "W"; gc.in[2].x = c.W; gc.in[2].g = c.gW; gc.in[2].n = (size_t)c.H * c.win;
        check_case(names[v], &gc, gc_default_opts());
        memset(c.W, 0, sizeof(float) * (size_t)c.H * c.win);
        gate_obj(&c);
        CHECK(fabsf(c.g[0] - 0.5f * c.mult) < 1e-7f, "%s: W = 0 gives %g", names[v], 0.5 * c.mult);
        free(c.yin); free(c.x); free(c.W); free(c.y); free(c.g); free(c.Wo); free(c.gyin); free(c.gx); free(c.gW);
    }
}

/* ---- input-dependent SmearGate, BOS-masked ---- */
typedef struct { int n, T, d, win; int32_t ids[12]; float *x, *w, *lam, *y, *W, *gx, *gw, *gl; } smear_ctx;
static double smear_obj(void *p) {
    smear_ctx *c = (smear_ctx *)p;
    be->smear_fwd(be, UTG_DT_F32, c->y, c->x, c->w, c->lam, c->ids, c->n, c->T, c->d, c->win, 1);
    return wdot(c->W, c->y, (size_t)c->n * c->d);
}
static void smear_grad(void *p) {
    smear_ctx *c = (smear_ctx *)p;
    memset(c->gx, 0, sizeof(float) * (size_t)c->n * c->d);
    memset(c->gw, 0, sizeof(float) * (size_t)c->win);
    c->gl[0] = 0.0f;
    be->smear_bwd(be, UTG_DT_F32, c->gx, c->gw, c->gl, c->W, c->x, c->w, c->lam, c->ids, c->n, c->T, c->d, c->win, 1);
}
static void test_smear_grad(void) {
    smear_ctx c;
    gc_case gc;
    int i;
    c.n = 12; c.T = 6; c.d = 5; c.win = 3;
    for (i = 0; i < 12; i++) c.ids[i] = 2 + i;
    c.ids[3] = 1; /* a BOS inside the first sequence: no smear into it */
    c.x = rand_buf(60, 1); c.w = rand_buf(3, 1); c.lam = rand_buf(1, 1); c.y = zeros(60); c.W = rand_buf(60, 1);
    c.gx = zeros(60); c.gw = zeros(3); c.gl = zeros(1);
    memset(&gc, 0, sizeof gc);
    gc.ctx = &c; gc.objective = smear_obj; gc.grad = smear_grad; gc.n_in = 3;
    gc.in[0].name = "x"; gc.in[0].x = c.x; gc.in[0].g = c.gx; gc.in[0].n = 60;
    gc.in[1].name = "w"; gc.in[1].x = c.w; gc.in[1].g = c.gw; gc.in[1].n = 3;
    gc.in[2].name = "lambda"; gc.in[2].x = c.lam; gc.in[2].g = c.gl; gc.in[2].n = 1;
    check_case("smear gate", &gc, gc_default_opts());
    smear_obj(&c);
    CHECK(!memcmp(c.y, c.x, 5 * sizeof(float)) && !memcmp(c.y + 15, c.x + 15, 5 * sizeof(float)) && !memcmp(c.y + 30, c.x + 30, 5 * sizeof(float)),
          "no smear into a sequence start (rows 0, 6) or a BOS (row 3)");
    CHECK(memcmp(c.y + 20, c.x + 20, 5 * sizeof(float)) != 0, "row 4 takes a share of row 3");
    free(c.x); free(c.w); free(c.lam); free(c.y); free(c.W); free(c.gx); free(c.gw); free(c.gl);
}

/* ---- channel mix (resid_mix, scaled residual adds, skip adds, biases, lane updates) ---- */
/* mix_rmsnorm_fwd: the same bits as mix_fwd then rmsnorm_fwd, for each kind of weight, a bias
   (z NULL) and out aliasing x; its gradient is theirs (the model's gradient checks run through it) */
static void test_mix_rmsnorm(void) {
    static const struct { int use_wx, use_z, flags, alias; } V[] = {
        {1, 1, 0, 0}, {0, 1, 0, 1}, {1, 1, UTG_MIX_WX_SCALAR | UTG_MIX_WZ_SCALAR, 0}, {0, 1, UTG_MIX_WZ_SCALAR | UTG_MIX_WZ_SIGMOID, 1},
        {1, 0, 0, 0}, {0, 0, 0, 1},
    };
    int rows = 29, cols = 40, v;
    size_t n = (size_t)rows * cols;
    for (v = 0; v < (int)(sizeof V / sizeof V[0]); v++) {
        float *x = rand_buf(n, 1), *z = rand_buf(n, 1), *wx = rand_buf(cols, 1), *wz = rand_buf(cols, 1), *x2 = zeros(n);
        float *o1 = zeros(n), *y1 = zeros(n), *r1 = zeros(rows), *o2 = zeros(n), *y2 = zeros(n), *r2 = zeros(rows), *out2;
        memcpy(x2, x, n * sizeof(float));
        be->mix_fwd(be, UTG_DT_F32, o1, x, V[v].use_wx ? wx : NULL, V[v].use_z ? z : NULL, wz, rows, cols, V[v].flags);
        be->rmsnorm_fwd(be, UTG_DT_F32, y1, r1, o1, rows, cols, 1e-6f);
        out2 = V[v].alias ? x2 : o2;
        nan_fill(y2, n); nan_fill(r2, rows);
        be->mix_rmsnorm_fwd(be, UTG_DT_F32, out2, y2, r2, x2, V[v].use_wx ? wx : NULL, V[v].use_z ? z : NULL, wz, rows, cols, V[v].flags, 1e-6f);
        CHECK(!memcmp(o1, out2, n * 4) && !memcmp(y1, y2, n * 4) && !memcmp(r1, r2, rows * 4),
              "variant %d: mix_rmsnorm_fwd gives the bits of mix_fwd + rmsnorm_fwd", v);
        free(x); free(z); free(wx); free(wz); free(x2); free(o1); free(y1); free(r1); free(o2); free(y2); free(r2);
    }
}

/* UTG_MIX_DX_SET / UTG_MIX_DZ_SET: the flagged gradient is overwritten (a NaN there is gone), the
   other still added to; both give the bits of adding into zeros */
static void test_mix_set(void) {
    int rows = 37, cols = 20, f;
    size_t n = (size_t)rows * cols, i;
    float *x = rand_buf(n, 1), *z = rand_buf(n, 1), *wx = rand_buf(cols, 1), *wz = rand_buf(cols, 1), *dout = rand_buf(n, 1);
    float *rx = zeros(n), *rz = zeros(n), *gx = zeros(n), *gz = zeros(n);
    be->mix_bwd(be, UTG_DT_F32, rx, rz, NULL, NULL, dout, x, wx, z, wz, rows, cols, 0);
    for (f = 1; f <= 3; f++) {
        int ok = 1;
        if (f & 1) nan_fill(gx, n); else for (i = 0; i < n; i++) gx[i] = 1.0f;
        if (f & 2) nan_fill(gz, n); else for (i = 0; i < n; i++) gz[i] = 1.0f;
        be->mix_bwd(be, UTG_DT_F32, gx, gz, NULL, NULL, dout, x, wx, z, wz, rows, cols, ((f & 1) ? UTG_MIX_DX_SET : 0) | ((f & 2) ? UTG_MIX_DZ_SET : 0));
        for (i = 0; i < n; i++) {
            if ((f & 1) ? gx[i] != rx[i] : fabsf(gx[i] - (1.0f + rx[i])) > 1e-6f) ok = 0; /* (1 + a*b may fuse) */
            if ((f & 2) ? gz[i] != rz[i] : fabsf(gz[i] - (1.0f + rz[i])) > 1e-6f) ok = 0;
        }
        CHECK(ok, "mix_bwd with%s%s overwrites the flagged gradient and adds into the other", (f & 1) ? " DX_SET" : "",
              (f & 2) ? " DZ_SET" : "");
    }
    free(x); free(z); free(wx); free(wz); free(dout); free(rx); free(rz); free(gx); free(gz);
}

typedef struct { int rows, cols, use_wx, use_z, flags; float *x, *wx, *z, *wz, *out, *W, *gx, *gwx, *gz, *gwz; } mix_ctx;
static double mix_obj(void *p) {
    mix_ctx *c = (mix_ctx *)p;
    be->mix_fwd(be, UTG_DT_F32, c->out, c->x, c->use_wx ? c->wx : NULL, c->use_z ? c->z : NULL, c->wz, c->rows, c->cols, c->flags);
    return wdot(c->W, c->out, (size_t)c->rows * c->cols);
}
static void mix_grad(void *p) {
    mix_ctx *c = (mix_ctx *)p;
    size_t n = (size_t)c->rows * c->cols;
    memset(c->gx, 0, n * 4); memset(c->gz, 0, n * 4); memset(c->gwx, 0, c->cols * 4); memset(c->gwz, 0, c->cols * 4);
    be->mix_bwd(be, UTG_DT_F32, c->gx, c->gz, c->use_wx ? c->gwx : NULL, c->gwz, c->W, c->x, c->use_wx ? c->wx : NULL,
                c->use_z ? c->z : NULL, c->wz, c->rows, c->cols, c->flags);
}
static void test_mix_grad(void) {
    /* per-channel and scalar weights, an unweighted x, and z = NULL (a bias) */
    static const struct { int use_wx, use_z, flags; const char *name; } V[] = {
        {1, 1, 0, "mix with both weights"},
        {0, 1, 0, "mix with x unweighted"},
        {1, 1, UTG_MIX_WX_SCALAR | UTG_MIX_WZ_SCALAR, "mix with scalar weights (lane update)"},
        {0, 1, UTG_MIX_WZ_SCALAR, "mix with a scalar z weight"},
        {1, 0, 0, "mix with z = NULL (FiLM: gamma * x + beta)"},
        {0, 0, 0, "mix with z = NULL (bias add)"},
        {0, 1, UTG_MIX_WZ_SCALAR | UTG_MIX_WZ_SIGMOID, "mix with a sigmoid scalar z weight (value residual)"},
        {1, 1, UTG_MIX_WX_SCALAR | UTG_MIX_WZ_SCALAR | UTG_MIX_WZ_SIGMOID, "mix with a scalar x weight and a sigmoid z weight"},
    };
    int variant;
    for (variant = 0; variant < (int)(sizeof V / sizeof V[0]); variant++) {
        mix_ctx c;
        gc_case gc;
        size_t n;
        int nw;
        c.rows = 45; c.cols = 12; c.use_wx = V[variant].use_wx; c.use_z = V[variant].use_z; c.flags = V[variant].flags;
        n = (size_t)c.rows * c.cols;
        c.x = rand_buf(n, 1); c.z = rand_buf(n, 1); c.wx = rand_buf(c.cols, 1); c.wz = rand_buf(c.cols, 1);
        c.out = zeros(n); c.W = rand_buf(n, 1); c.gx = zeros(n); c.gz = zeros(n); c.gwx = zeros(c.cols); c.gwz = zeros(c.cols);
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = mix_obj; gc.grad = mix_grad;
        gc.n_in = 0;
        gc.in[gc.n_in].name = "x"; gc.in[gc.n_in].x = c.x; gc.in[gc.n_in].g = c.gx; gc.in[gc.n_in++].n = n;
        if (c.use_z) { gc.in[gc.n_in].name = "z"; gc.in[gc.n_in].x = c.z; gc.in[gc.n_in].g = c.gz; gc.in[gc.n_in++].n = n; }
        nw = (c.flags & UTG_MIX_WZ_SCALAR) ? 1 : c.cols;
        gc.in[gc.n_in].name = "wz"; gc.in[gc.n_in].x = c.wz; gc.in[gc.n_in].g = c.gwz; gc.in[gc.n_in++].n = (size_t)nw;
        if (c.use_wx) {
            nw = (c.flags & UTG_MIX_WX_SCALAR) ? 1 : c.cols;
            gc.in[gc.n_in].name = "wx"; gc.in[gc.n_in].x = c.wx; gc.in[gc.n_in].g = c.gwx; gc.in[gc.n_in++].n = (size_t)nw;
        }
        check_case(V[variant].name, &gc, gc_default_opts());
        if (c.flags & UTG_MIX_WX_SCALAR) { /* only wx[0] may be read: poisoning the rest changes nothing */
            float before[3];
            mix_obj(&c);
            memcpy(before, c.out, sizeof before);
            c.wx[1] = NAN; c.wz[1] = NAN;
            mix_obj(&c);
            CHECK(memcmp(before, c.out, sizeof before) == 0 && isfinite(c.out[1]), "scalar weights read element 0 only");
        }
        if (c.flags & UTG_MIX_WZ_SIGMOID) { /* the weight is sigmoid(wz): 0.5 at wz = 0 */
            c.wz[0] = 0.0f;
            mix_obj(&c);
            CHECK(fabsf(c.out[3] - ((c.use_wx ? c.wx[0] : 1.0f) * c.x[3] + 0.5f * c.z[3])) < 1e-6f, "sigmoid(0) weighs z by 0.5");
        }
        free(c.x); free(c.z); free(c.wx); free(c.wz); free(c.out); free(c.W); free(c.gx); free(c.gz); free(c.gwx); free(c.gwz);
    }
}

/* ---- softcapped cross-entropy (the op computes its own gradient in place) ---- */
typedef struct { int rows, V; float cap; int32_t tgt[5]; float *z, *work, *loss; float *gz; } xe_ctx;
static double xe_obj(void *p) {
    xe_ctx *c = (xe_ctx *)p;
    size_t i;
    double s = 0.0;
    memcpy(c->work, c->z, sizeof(float) * c->rows * c->V);
    be->xent_fwd(be, UTG_DT_F32, c->work, c->loss, c->tgt, c->rows, c->V, c->cap, 0.0f);
    for (i = 0; i < (size_t)c->rows; i++) s += c->loss[i];
    return s / c->rows;
}
static void xe_grad(void *p) {
    xe_ctx *c = (xe_ctx *)p;
    memcpy(c->gz, c->z, sizeof(float) * c->rows * c->V);
    be->xent_fwd(be, UTG_DT_F32, c->gz, c->loss, c->tgt, c->rows, c->V, c->cap, 1.0f / c->rows);
}
static void test_xent_grad(void) {
    int variant;
    for (variant = 0; variant < 2; variant++) {
        xe_ctx c;
        gc_case gc;
        int i;
        size_t n;
        c.rows = 5; c.V = 33; c.cap = variant ? 0.0f : 3.0f; /* a small cap so tanh bends */
        for (i = 0; i < 5; i++) c.tgt[i] = (i * 7) % 33;
        n = (size_t)c.rows * c.V;
        c.z = rand_buf(n, 6); c.work = zeros(n); c.loss = zeros(5); c.gz = zeros(n);
        memset(&gc, 0, sizeof gc);
        gc.ctx = &c; gc.objective = xe_obj; gc.grad = xe_grad; gc.n_in = 1;
        gc.in[0].name = "logits"; gc.in[0].x = c.z; gc.in[0].g = c.gz; gc.in[0].n = n;
        check_case(variant ? "xent without softcap" : "xent with softcap", &gc, gc_default_opts());
        /* value: with all-zero logits the loss is ln V */
        memset(c.z, 0, n * sizeof(float));
        CHECK(fabs(xe_obj(&c) - log(33.0)) < 1e-5, "loss of uniform logits %.7f, expected ln 33", xe_obj(&c));
        free(c.z); free(c.work); free(c.loss); free(c.gz);
    }
}

/* The library's own exp (branch-free, vectorizable) against double-precision exp. */
static void test_expf_accuracy(void) {
    double worst = 0.0, x;
    for (x = -87.0; x <= 88.0; x += 0.00137) {
        double ref = exp((double)(float)x), rel = fabs(utg__expf((float)x) - ref) / ref;
        float row[1] = {(float)x};
        utg__exp_row(row, 1, 0.0f);
        if (row[0] != utg__expf((float)x)) rel = 1.0; /* the row form gives the same bits */
        if (rel > worst) worst = rel;
    }
    CHECK(worst < 3e-7, "worst relative error %.3g", worst);
    CHECK(utg__expf(0.0f) == 1.0f, "e^0 = %.9g", utg__expf(0.0f));
    CHECK(utg__expf(-1000.0f) < 1e-37f && utg__expf(-1000.0f) >= 0.0f, "large negative arguments clamp near 0");
}

/* The library's own tanh (chunked, vectorizable) against double-precision tanh, on both sides of
   its switch from the polynomial to the exp form at |y| = 1/4, and the clamp at 9. */
static void test_tanh_accuracy(void) {
    enum { N = 256 };
    float y[N], out[N], tmp[N];
    double worst = 0.0;
    int i, pass;
    for (pass = 0; pass < 40; pass++) {
        for (i = 0; i < N; i++) y[i] = (float)(-12.0 + 24.0 * (pass * N + i) / (40.0 * N)) * (pass % 2 ? 1.0f : 0.03f);
        utg__tanh_chunk(out, y, tmp, N, 1.0f);
        for (i = 0; i < N; i++) {
            double ref = tanh((double)y[i]), err = fabs(out[i] - ref) / (fabs(ref) > 1e-30 ? fabs(ref) : 1.0);
            if (err > worst) worst = err;
        }
    }
    CHECK(worst < 5e-7, "worst relative error %.3g", worst);
    y[0] = 0.0f; y[1] = -0.25f; y[2] = 0.25f; y[3] = 1e-20f;
    utg__tanh_chunk(out, y, tmp, 4, 30.0f);
    CHECK(out[0] == 0.0f && out[3] > 0.0f, "tanh(0) = %g, tanh(1e-20) = %g", out[0], out[3]);
    CHECK(out[1] == -out[2], "odd at the switch: %.9g vs %.9g", out[1], out[2]);
}

/* Softcapped cross-entropy of long rows (several chunks and a ragged tail) against a double
   reference: the row losses and the gradient (1/rows scale) within stated tolerances. */
static void test_xent_long_rows(void) {
    const int rows = 3, V = 1030;
    int32_t tgt[3] = {0, 517, 1029};
    float *z = rand_buf((size_t)rows * V, 1.0), *g = zeros((size_t)rows * V), loss[3];
    int r, j, v;
    for (v = 0; v < 2; v++) {
        float cap = v ? 0.0f : 30.0f;
        double worst_l = 0, worst_g = 0;
        for (j = 0; j < rows * V; j++) g[j] = z[j] * 20.0f; /* logits of +-20 */
        be->xent_fwd(be, UTG_DT_F32, g, loss, tgt, rows, V, cap, 1.0f / rows);
        for (r = 0; r < rows; r++) {
            double zz[1030], mx = -1e300, sum = 0.0, lse;
            for (j = 0; j < V; j++) {
                double x = 20.0 * z[r * V + j];
                zz[j] = cap > 0 ? cap * tanh(x / cap) : x;
                if (zz[j] > mx) mx = zz[j];
            }
            for (j = 0; j < V; j++) sum += exp(zz[j] - mx);
            lse = mx + log(sum);
            if (fabs(loss[r] - (lse - zz[tgt[r]])) > worst_l) worst_l = fabs(loss[r] - (lse - zz[tgt[r]]));
            for (j = 0; j < V; j++) {
                double p = exp(zz[j] - lse), gr = (p - (j == tgt[r])) / rows;
                if (cap > 0) gr *= 1.0 - (zz[j] / cap) * (zz[j] / cap);
                if (fabs(g[r * V + j] - gr) > worst_g) worst_g = fabs(g[r * V + j] - gr);
            }
        }
        CHECK(worst_l < 2e-5, "%s: worst loss error %.3g", v ? "no cap" : "cap 30", worst_l);
        CHECK(worst_g < 1e-7, "%s: worst gradient error %.3g", v ? "no cap" : "cap 30", worst_g);
    }
    free(z); free(g);
}

/* The logits buffer after xent_fwd without a gradient (dscale 0) holds the softcapped logits
   z' = c tanh(z / c), from which a sampler reads softmax(z'); without a cap it is left as it was.
   (With a gradient it holds the gradient: test_xent_long_rows.) */
static void test_xent_logits_contract(void) {
    const int rows = 2, V = 300;
    int32_t tgt[2] = {3, 299};
    float *z = rand_buf((size_t)rows * V, 1.0), *w = zeros((size_t)rows * V), loss[2];
    double worst = 0.0;
    int j;
    for (j = 0; j < rows * V; j++) w[j] = z[j] * 40.0f;
    be->xent_fwd(be, UTG_DT_F32, w, loss, tgt, rows, V, 30.0f, 0.0f);
    for (j = 0; j < rows * V; j++) {
        double want = 30.0 * tanh(40.0 * (double)z[j] / 30.0);
        if (fabs(w[j] - want) > worst) worst = fabs(w[j] - want);
    }
    CHECK(worst < 3e-5, "softcapped logits kept: worst error %.3g (cap 30, logits of +-40)", worst);
    for (j = 0; j < rows * V; j++) w[j] = z[j] * 40.0f;
    be->xent_fwd(be, UTG_DT_F32, w, loss, tgt, rows, V, 0.0f, 0.0f);
    for (j = 0; j < rows * V && w[j] == z[j] * 40.0f; j++) {}
    CHECK(j == rows * V, "no cap: the logits are left as they were (first change at %d)", j);
    free(z); free(w);
}

/* Non-finite and huge logits in the cross-entropy: a NaN (at the target or elsewhere) reaches the
   exp path (utg__expf_core, whose float-to-int conversion must not see it: run under
   -fsanitize=float-cast-overflow) and makes its row's loss NaN, with and without softcap and with
   the gradient; logits of +-1e30 give the double reference's loss; the other rows are the same
   bits as when computed alone. */
static void test_xent_nonfinite(void) {
    enum { R = 5, V = 37 };
    int32_t tgt[R] = {1, 2, 9, 3, 4};
    float z[R * V], work[R * V], alone[V], loss[R], loss1;
    int r, j, v, k;
    CHECK(isnan(utg__expf(NAN)), "e^NaN = %g", utg__expf(NAN));
    for (v = 0; v < 6; v++) {
        float cap = v % 3 == 0 ? 0.0f : v % 3 == 1 ? 3.0f : 30.0f, dscale = v < 3 ? 0.0f : 1.0f / R;
        for (j = 0; j < R * V; j++) z[j] = (float)(4.0 * urand());
        z[1 * V + 5] = NAN;   /* row 1: a NaN beside the target */
        z[2 * V + 9] = NAN;   /* row 2: the target is NaN */
        z[3 * V + 7] = 1e30f; /* row 3: a huge logit */
        z[4 * V + 8] = -1e30f;
        memcpy(work, z, sizeof z);
        be->xent_fwd(be, UTG_DT_F32, work, loss, tgt, R, V, cap, dscale);
        CHECK(isnan(loss[1]) && isnan(loss[2]), "cap %g, dscale %g: NaN logits give row losses %g and %g", cap, dscale, loss[1], loss[2]);
        for (r = 3; r < R; r++) {
            double zz[V], mx = -1e300, sum = 0.0, ref;
            for (j = 0; j < V; j++) {
                zz[j] = cap > 0 ? cap * tanh((double)z[r * V + j] / cap) : (double)z[r * V + j];
                if (zz[j] > mx) mx = zz[j];
            }
            for (j = 0; j < V; j++) sum += exp(zz[j] - mx);
            ref = mx + log(sum) - zz[tgt[r]];
            CHECK(fabs(loss[r] - ref) <= 1e-5 * (fabs(ref) > 1.0 ? fabs(ref) : 1.0), "cap %g, dscale %g, row %d: loss %.9g, reference %.9g",
                  cap, dscale, r, loss[r], ref);
            for (j = 0; j < V; j++)
                if (!isfinite(work[r * V + j])) { CHECK(0, "cap %g, row %d: output %d is %g", cap, r, j, work[r * V + j]); break; }
        }
        /* row 0 (all finite) as if alone: rows are independent */
        memcpy(alone, z, sizeof alone);
        be->xent_fwd(be, UTG_DT_F32, alone, &loss1, tgt, 1, V, cap, dscale);
        for (k = 0, j = 0; j < V; j++) k += memcmp(&alone[j], &work[j], 4) != 0;
        CHECK(loss1 == loss[0] && k == 0, "cap %g, dscale %g: row 0 differs from row 0 alone (%d outputs)", cap, dscale, k);
    }
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    if (utg_backend_cpu_create(NULL, &be) != UTG_OK) { printf("cannot create the CPU backend\n0 passed, 1 failed\n"); return 1; }
    RUN(test_scratch_aligned);
    RUN(test_expf_accuracy);
    RUN(test_tanh_accuracy);
    RUN(test_xent_long_rows);
    RUN(test_xent_logits_contract);
    RUN(test_pack_transpose);
    RUN(test_matmul_kernels);
    RUN(test_matmul_sym);
    RUN(test_attention_tiles);
    RUN(test_matmul_grad);
    RUN(test_embed_grad);
    RUN(test_rmsnorm_grad);
    RUN(test_checker_catches_planted_errors);
    RUN(test_qk_norm_rope);
    RUN(test_attention_grad);
    RUN(test_relu2_grad);
    RUN(test_xsa_grad);
    RUN(test_lerp_grad);
    RUN(test_gate_grad);
    RUN(test_smear_grad);
    RUN(test_mix_grad);
    RUN(test_mix_set);
    RUN(test_mix_rmsnorm);
    RUN(test_xent_grad);
    RUN(test_xent_nonfinite);
    utg_backend_destroy(be);
    return TEST_SUMMARY();
}
