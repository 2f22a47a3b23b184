/* Optimizers: Newton-Schulz against an exact polar factor, the Adam op against
   hand-computed values, utg_optim_step against a double-precision transcription of train_gpt.py's
   Muon + Adam(W) (clipping, MuonEq-R, weight decay, momentum warmup), the LR and momentum
   schedules against a transcription of lr_mul, EMA and SWA, state round trips, determinism across
   thread counts, and utg_model_eval. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "test.h"
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---------------------------------------------------------------- helpers */

typedef struct { uint64_t s; } trng;
static uint64_t trng_next(trng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double trng_unif(trng *r) { return ((double)(trng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double trng_normal(trng *r) {
    double u1 = trng_unif(r), u2 = trng_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double *dalloc(size_t n) { return (double *)calloc(n ? n : 1, sizeof(double)); }
static float *falloc(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }

/* C[m,n] = op(A) op(B), op(A) [m,k]; ta/tb: A stored [k,m], B stored [n,k] */
static void dgemm(double *C, const double *A, const double *B, int m, int n, int k, int ta, int tb) {
    int i, j, l;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            double s = 0.0;
            for (l = 0; l < k; l++) s += (ta ? A[(size_t)l * m + i] : A[(size_t)i * k + l]) * (tb ? B[(size_t)j * k + l] : B[(size_t)l * n + j]);
            C[(size_t)i * n + j] = s;
        }
}
static void dtranspose(double *dst, const double *src, int m, int n) { /* src [m,n] -> dst [n,m] */
    int i, j;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) dst[(size_t)j * m + i] = src[(size_t)i * n + j];
}
static double dnorm(const double *x, size_t n) {
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

/* One-sided (Hestenes) Jacobi SVD of A[m,n], m >= n: A = U diag(s) V^T, U [m,n], V [n,n]. */
static void svd_tall(const double *A, int m, int n, double *U, double *s, double *V) {
    double *W = dalloc((size_t)m * n);
    int sweep, i, j, k;
    memcpy(W, A, sizeof(double) * (size_t)m * n);
    for (i = 0; i < n * n; i++) V[i] = 0.0;
    for (i = 0; i < n; i++) V[i * n + i] = 1.0;
    for (sweep = 0; sweep < 80; sweep++) {
        int rotated = 0;
        for (i = 0; i < n - 1; i++)
            for (j = i + 1; j < n; j++) {
                double a = 0, b = 0, g = 0, zeta, t, c, sn;
                for (k = 0; k < m; k++) {
                    double wi = W[(size_t)k * n + i], wj = W[(size_t)k * n + j];
                    a += wi * wi;
                    b += wj * wj;
                    g += wi * wj;
                }
                if (fabs(g) <= 1e-15 * sqrt(a * b) || g == 0.0) continue;
                rotated = 1;
                zeta = (b - a) / (2.0 * g);
                t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                c = 1.0 / sqrt(1.0 + t * t);
                sn = c * t;
                for (k = 0; k < m; k++) {
                    double wi = W[(size_t)k * n + i], wj = W[(size_t)k * n + j];
                    W[(size_t)k * n + i] = c * wi - sn * wj;
                    W[(size_t)k * n + j] = sn * wi + c * wj;
                }
                for (k = 0; k < n; k++) {
                    double vi = V[(size_t)k * n + i], vj = V[(size_t)k * n + j];
                    V[(size_t)k * n + i] = c * vi - sn * vj;
                    V[(size_t)k * n + j] = sn * vi + c * vj;
                }
            }
        if (!rotated) break;
    }
    for (j = 0; j < n; j++) {
        double nr = 0.0;
        for (k = 0; k < m; k++) nr += W[(size_t)k * n + j] * W[(size_t)k * n + j];
        nr = sqrt(nr);
        s[j] = nr;
        for (k = 0; k < m; k++) U[(size_t)k * n + j] = nr > 0 ? W[(size_t)k * n + j] / nr : 0.0;
    }
    free(W);
}
/* Any shape: A[m,n] = U diag(s) V^T with U [m,r], V [n,r], r = min(m,n). */
static void svd(const double *A, int m, int n, double *U, double *s, double *V) {
    if (m >= n) {
        svd_tall(A, m, n, U, s, V);
    } else {
        double *At = dalloc((size_t)m * n);
        dtranspose(At, A, m, n);
        svd_tall(At, n, m, V, s, U); /* A^T = V S U^T */
        free(At);
    }
}
static double dmin_arr(const double *x, int n) { double v = x[0]; int i; for (i = 1; i < n; i++) if (x[i] < v) v = x[i]; return v; }
static double dmax_arr(const double *x, int n) { double v = x[0]; int i; for (i = 1; i < n; i++) if (x[i] > v) v = x[i]; return v; }

/* The Muon Newton-Schulz iteration in double, as train_gpt.py's zeropower_via_newtonschulz5 (without
   the bf16 cast): X / (||X||_F + 1e-7), transposed when tall, X = aX + (bA + cA^2)X with A = XX^T. */
static const double ns_base_d[3] = {3.4445, -4.7750, 2.0315};
static const double ns_polar_d[5][3] = {{8.156554524902461, -22.48329292557795, 15.878769915207462},
                                        {4.042929935166739, -2.808917465908714, 0.5000178451051316},
                                        {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
                                        {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
                                        {2.3465413258596377, -1.7097828382687081, 0.42323551169305323}};
static void ns_double(double *out, const double *G, int rows, int cols, int steps, int polar) {
    int tall = rows > cols, r = tall ? cols : rows, c = tall ? rows : cols, it;
    size_t n = (size_t)rows * cols, i;
    double *X = dalloc(n), *A = dalloc((size_t)r * r), *B = dalloc((size_t)r * r), *Y = dalloc(n);
    double nrm = dnorm(G, n);
    if (tall) dtranspose(X, G, rows, cols);
    else memcpy(X, G, n * sizeof(double));
    for (i = 0; i < n; i++) X[i] /= nrm + 1e-7;
    for (it = 0; it < steps; it++) {
        const double *k = polar ? ns_polar_d[it < 5 ? it : 4] : ns_base_d;
        dgemm(A, X, X, r, r, c, 0, 1);
        dgemm(B, A, A, r, r, r, 0, 0);
        for (i = 0; i < (size_t)r * r; i++) B[i] = k[1] * A[i] + k[2] * B[i];
        dgemm(Y, B, X, r, c, r, 0, 0);
        for (i = 0; i < n; i++) X[i] = k[0] * X[i] + Y[i];
    }
    if (tall) dtranspose(out, X, r, c);
    else memcpy(out, X, n * sizeof(double));
    free(X); free(A); free(B); free(Y);
}

/* utg_newton_schulz on the CPU backend, host in and out. */
static void ns_cpu(utg_backend *be, float *host, int rows, int cols, int steps, int polar) {
    size_t n = (size_t)rows * cols;
    float *X = (float *)be->buf_alloc(be, n * sizeof(float));
    float *S = (float *)be->buf_alloc(be, utg_newton_schulz_scratch(rows, cols) * sizeof(float));
    be->upload(be, X, host, n * sizeof(float));
    utg_newton_schulz(be, X, rows, cols, steps, polar, S);
    be->download(be, host, X, n * sizeof(float));
    be->buf_free(be, X);
    be->buf_free(be, S);
}

static void random_matrix(double *A, size_t n, uint64_t seed) {
    trng r;
    size_t i;
    r.s = seed;
    for (i = 0; i < n; i++) A[i] = trng_normal(&r);
}

/* ---------------------------------------------------------------- 1. Newton-Schulz */

/* The reference SVD itself: reconstructs A and has orthonormal factors (error <= 1e-10 relative). */
static void test_reference_svd(void) {
    static const int shapes[3][2] = {{16, 48}, {32, 32}, {48, 16}};
    int si;
    for (si = 0; si < 3; si++) {
        int m = shapes[si][0], n = shapes[si][1], r = m < n ? m : n, i, j;
        double *A = dalloc((size_t)m * n), *U = dalloc((size_t)m * r), *V = dalloc((size_t)n * r), *s = dalloc(r);
        double *R = dalloc((size_t)m * n), *UtU = dalloc((size_t)r * r), *VtV = dalloc((size_t)r * r), err = 0, orth = 0;
        random_matrix(A, (size_t)m * n, 100 + si);
        svd(A, m, n, U, s, V);
        for (i = 0; i < m; i++)
            for (j = 0; j < n; j++) {
                double v = 0;
                int k;
                for (k = 0; k < r; k++) v += U[i * r + k] * s[k] * V[j * r + k];
                R[i * n + j] = v - A[i * n + j];
            }
        err = dnorm(R, (size_t)m * n) / dnorm(A, (size_t)m * n);
        dgemm(UtU, U, U, r, r, m, 1, 0);
        dgemm(VtV, V, V, r, r, n, 1, 0);
        for (i = 0; i < r; i++)
            for (j = 0; j < r; j++) {
                double e1 = fabs(UtU[i * r + j] - (i == j)), e2 = fabs(VtV[i * r + j] - (i == j));
                if (e1 > orth) orth = e1;
                if (e2 > orth) orth = e2;
            }
        /* tolerance 1e-10: double Jacobi is accurate to ~1e-14 */
        CHECK(err < 1e-10 && orth < 1e-10, "%dx%d: reconstruction %.3g, orthogonality %.3g", m, n, err, orth);
        free(A); free(U); free(V); free(s); free(R); free(UtU); free(VtV);
    }
}

/* Singular values of the NS result and how it relates to the input's singular vectors. */
typedef struct {
    double smin, smax;     /* singular values of the result */
    double offdiag;        /* ||U^T R V - diag||_F / ||R||_F: the result keeps the input's singular vectors */
    double cos_polar;      /* <R, U V^T> / (||R|| ||U V^T||) */
    double err_double;     /* max |R - NS_double(G)| / max |NS_double(G)| */
    double in_min;         /* smallest singular value of G / ||G||_F */
} ns_stats;

static ns_stats ns_measure(utg_backend *be, const double *G, int rows, int cols, int polar, float *out_result) {
    ns_stats st;
    int r = rows < cols ? rows : cols, i, j;
    size_t n = (size_t)rows * cols, k;
    double *U = dalloc((size_t)rows * r), *V = dalloc((size_t)cols * r), *s = dalloc(r);
    double *Rd = dalloc(n), *T1 = dalloc((size_t)r * cols), *D = dalloc((size_t)r * r), *Ur = dalloc((size_t)rows * r);
    double *Vr = dalloc((size_t)cols * r), *sr = dalloc(r), *P = dalloc(n), *Nd = dalloc(n);
    float *Xf = falloc(n);
    double off = 0, dot = 0, emax = 0, nmax = 0;
    for (k = 0; k < n; k++) Xf[k] = (float)G[k];
    ns_cpu(be, Xf, rows, cols, 5, polar);
    if (out_result) memcpy(out_result, Xf, n * sizeof(float));
    for (k = 0; k < n; k++) Rd[k] = Xf[k];
    svd(G, rows, cols, U, s, V);
    st.in_min = dmin_arr(s, r) / dnorm(G, n);
    /* D = U^T R V */
    dgemm(T1, U, Rd, r, cols, rows, 1, 0);
    dgemm(D, T1, V, r, r, cols, 0, 0);
    for (i = 0; i < r; i++)
        for (j = 0; j < r; j++)
            if (i != j) off += D[i * r + j] * D[i * r + j];
    st.offdiag = sqrt(off) / dnorm(Rd, n);
    dgemm(P, U, V, rows, cols, r, 0, 1); /* exact polar factor U V^T */
    for (k = 0; k < n; k++) dot += Rd[k] * P[k];
    st.cos_polar = dot / (dnorm(Rd, n) * dnorm(P, n));
    svd(Rd, rows, cols, Ur, sr, Vr);
    st.smin = dmin_arr(sr, r);
    st.smax = dmax_arr(sr, r);
    ns_double(Nd, G, rows, cols, 5, polar);
    for (k = 0; k < n; k++) {
        if (fabs(Rd[k] - Nd[k]) > emax) emax = fabs(Rd[k] - Nd[k]);
        if (fabs(Nd[k]) > nmax) nmax = fabs(Nd[k]);
    }
    st.err_double = emax / nmax;
    free(U); free(V); free(s); free(Rd); free(T1); free(D); free(Ur); free(Vr); free(sr); free(P); free(Nd); free(Xf);
    return st;
}

/* A = U diag(s) V^T with U, V from a random matrix's SVD and s spread evenly over [lo, hi]. */
static void conditioned_matrix(double *A, int rows, int cols, double lo, double hi, uint64_t seed) {
    int r = rows < cols ? rows : cols, i, j, k;
    double *G = dalloc((size_t)rows * cols), *U = dalloc((size_t)rows * r), *V = dalloc((size_t)cols * r), *s = dalloc(r);
    random_matrix(G, (size_t)rows * cols, seed);
    svd(G, rows, cols, U, s, V);
    for (k = 0; k < r; k++) s[k] = lo + (hi - lo) * (r > 1 ? (double)k / (r - 1) : 0.0);
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++) {
            double v = 0;
            for (k = 0; k < r; k++) v += U[i * r + k] * s[k] * V[j * r + k];
            A[(size_t)i * cols + j] = v;
        }
    free(G); free(U); free(V); free(s);
}

static utg_backend *cpu_backend(void) {
    utg_backend *be = NULL;
    utg_backend_cpu_create(NULL, &be);
    return be;
}

static void test_ns_random_shapes(void) {
    static const int shapes[3][2] = {{16, 48}, {32, 32}, {48, 16}};
    utg_backend *be = cpu_backend();
    int si;
    CHECK(be != NULL, "cpu backend");
    if (!be) return;
    for (si = 0; si < 3; si++) {
        int rows = shapes[si][0], cols = shapes[si][1];
        double *G = dalloc((size_t)rows * cols);
        ns_stats st;
        random_matrix(G, (size_t)rows * cols, 7 + si);
        st = ns_measure(be, G, rows, cols, 0, NULL);
        printf("    %dx%d gaussian (min sigma/||G||_F %.4f), baseline NS: sigma in [%.4f, %.4f], offdiag %.2e, cos(R, UV^T) %.5f, |R - R_double| %.2e\n",
               rows, cols, st.in_min, st.smin, st.smax, st.offdiag, st.cos_polar, st.err_double);
        /* (a) band: the baseline quintic does not converge to 1; it leaves singular values in roughly
           [0.7, 1.13] (measured [0.68, 1.135] on these seeds). Small singular values grow about
           x3.4445 per step, so one below ~1.5e-3 ||G||_F would still be under 0.65 after 5 steps; the
           seeded square Gaussian's smallest is 2.2e-3 ||G||_F (printed above), the others ~0.1. */
        CHECK(st.smin >= 0.65 && st.smax <= 1.2, "%dx%d: singular values [%.4f, %.4f] outside [0.65, 1.2]", rows, cols, st.smin, st.smax);
        /* (b) same singular vectors as the input: U^T R V diagonal to 1e-4 relative (float rounding
           through 5 iterations is ~1e-6), and R close to the polar factor U V^T (cosine > 0.975; measured 0.981-0.987) */
        CHECK(st.offdiag < 1e-4, "%dx%d: U^T R V off-diagonal %.3g (> 1e-4)", rows, cols, st.offdiag);
        CHECK(st.cos_polar > 0.975, "%dx%d: cosine with U V^T %.5f", rows, cols, st.cos_polar);
        /* (e) the same iteration in double: max error <= 2e-5 of the largest entry */
        CHECK(st.err_double < 2e-5, "%dx%d: float NS vs double NS %.3g (> 2e-5)", rows, cols, st.err_double);
        free(G);
    }
    utg_backend_destroy(be);
}

/* Newton-Schulz with bf16 inputs (UTG_NS_BF16, the default in training, as train_gpt.py): the same
   band and singular vectors as fp32 to bf16's precision, on the hardware (avx512_bf16) path and on
   the rounding path of the other kernels. */
static void test_ns_bf16(void) {
    static const int shapes[3][2] = {{32, 96}, {64, 64}, {96, 32}};
    static const char *kern[2] = {NULL, "avx2"};
    int si, kk;
    for (kk = 0; kk < 2; kk++) {
        utg_backend *be;
        if (kern[kk]) setenv("UTG_CPU_KERNEL", kern[kk], 1);
        be = cpu_backend();
        unsetenv("UTG_CPU_KERNEL");
        if (!be) { CHECK(0, "cpu backend"); return; }
        for (si = 0; si < 3; si++) {
            int rows = shapes[si][0], cols = shapes[si][1];
            double *G = dalloc((size_t)rows * cols);
            ns_stats f, b;
            random_matrix(G, (size_t)rows * cols, 70 + si);
            f = ns_measure(be, G, rows, cols, 0, NULL);
            b = ns_measure(be, G, rows, cols, UTG_NS_BF16, NULL);
            printf("    %s %dx%d: fp32 sigma [%.4f, %.4f] cos %.5f err %.2e | bf16 sigma [%.4f, %.4f] offdiag %.2e cos %.5f err %.2e\n",
                   utg_backend_cpu_kernel(be), rows, cols, f.smin, f.smax, f.cos_polar, f.err_double, b.smin, b.smax, b.offdiag,
                   b.cos_polar, b.err_double);
            /* bf16 keeps 8 bits (4e-3 relative per matmul input). The band and the closeness to the polar
               factor are what Muon needs, and they hold as in fp32 (measured cos within 2e-4, offdiag
               1.7e-2 to 2.3e-2). Entry by entry the result moves by 0.25 to 0.29 of the largest entry
               against the double iteration: five steps multiply the small singular directions, and
               their rounding noise, by about 3.4 each. That is train_gpt.py's bf16 iteration too. */
            CHECK(b.smin >= 0.6 && b.smax <= 1.25, "bf16 %dx%d: singular values [%.4f, %.4f]", rows, cols, b.smin, b.smax);
            CHECK(b.offdiag < 3e-2 && fabs(b.cos_polar - f.cos_polar) < 2e-3, "bf16 %dx%d: offdiag %.3g, cos %.5f vs %.5f", rows, cols,
                  b.offdiag, b.cos_polar, f.cos_polar);
            CHECK(b.err_double < 0.4 && b.err_double > 100 * f.err_double, "bf16 %dx%d: vs double NS %.3g (fp32 %.3g): rounded, boundedly",
                  rows, cols, b.err_double, f.err_double);
            free(G);
        }
        utg_backend_destroy(be);
    }
}

/* (c) Polar Express gives a tighter band around 1 than the baseline tuple on a well-conditioned
   input; also (e) for the Polar Express coefficients. */
static void test_ns_polar_express_tighter(void) {
    static const int shapes[3][2] = {{32, 32}, {16, 48}, {48, 16}};
    utg_backend *be = cpu_backend();
    int si;
    if (!be) { CHECK(0, "cpu backend"); return; }
    for (si = 0; si < 3; si++) {
        int rows = shapes[si][0], cols = shapes[si][1];
        double *G = dalloc((size_t)rows * cols), dev_b, dev_p;
        ns_stats b, p;
        /* singular values in [0.3, 3]: condition number 10 */
        conditioned_matrix(G, rows, cols, 0.3, 3.0, 40 + si);
        b = ns_measure(be, G, rows, cols, 0, NULL);
        p = ns_measure(be, G, rows, cols, 1, NULL);
        dev_b = fmax(fabs(b.smin - 1), fabs(b.smax - 1));
        dev_p = fmax(fabs(p.smin - 1), fabs(p.smax - 1));
        printf("    %dx%d cond 10: baseline sigma in [%.4f, %.4f], polar express [%.4f, %.4f] (|R - R_double| %.2e / %.2e)\n",
               rows, cols, b.smin, b.smax, p.smin, p.smax, b.err_double, p.err_double);
        /* the baseline tuple lands in [0.65, 1.25]; Polar Express strictly tighter around 1, and within 0.15 of it */
        CHECK(b.smin >= 0.65 && b.smax <= 1.25, "baseline band [%.4f, %.4f]", b.smin, b.smax);
        CHECK(dev_p < dev_b && dev_p < 0.15, "polar express max |sigma-1| %.4f vs baseline %.4f", dev_p, dev_b);
        /* singular vectors kept (1e-4, as above); the double re-implementation agrees to 2e-5 */
        CHECK(p.offdiag < 1e-4 && p.cos_polar > 0.98, "polar express: offdiag %.3g cos %.5f", p.offdiag, p.cos_polar);
        CHECK(p.err_double < 2e-5 && b.err_double < 2e-5, "float vs double NS: polar %.3g, baseline %.3g (> 2e-5)",
              p.err_double, b.err_double);
        free(G);
    }
    utg_backend_destroy(be);
}

/* (d) a tall matrix gives the transpose of the result for its transpose. */
static void test_ns_tall_is_transpose(void) {
    utg_backend *be = cpu_backend();
    int rows = 48, cols = 16, i, j, pe;
    if (!be) { CHECK(0, "cpu backend"); return; }
    for (pe = 0; pe < 2; pe++) {
        double *G = dalloc((size_t)rows * cols), worst = 0, mx = 0;
        float *T = falloc((size_t)rows * cols), *W = falloc((size_t)rows * cols);
        random_matrix(G, (size_t)rows * cols, 77);
        for (i = 0; i < rows; i++)
            for (j = 0; j < cols; j++) {
                T[(size_t)i * cols + j] = (float)G[(size_t)i * cols + j];
                W[(size_t)j * rows + i] = (float)G[(size_t)i * cols + j];
            }
        ns_cpu(be, T, rows, cols, 5, pe);
        ns_cpu(be, W, cols, rows, 5, pe);
        for (i = 0; i < rows; i++)
            for (j = 0; j < cols; j++) {
                double d = fabs((double)T[(size_t)i * cols + j] - W[(size_t)j * rows + i]);
                if (d > worst) worst = d;
                if (fabs(T[(size_t)i * cols + j]) > mx) mx = fabs(T[(size_t)i * cols + j]);
            }
        /* float rounding only: <= 1e-6 of the largest entry */
        CHECK(mx > 0.01 && worst <= 1e-6 * mx, "polar=%d: NS(G^T)^T vs NS(G) differ by %.3g (max entry %.3g)", pe, worst, mx);
        free(G); free(T); free(W);
    }
    utg_backend_destroy(be);
}

/* ---------------------------------------------------------------- 2. Adam op */

static void test_adam_step_op(void) {
    enum { N = 6 };
    utg_backend *be = cpu_backend();
    const float p0[N] = {0.5f, -1.25f, 2.0f, 0.0f, 0.75f, -0.3f};
    const float g[3][N] = {{0.1f, -0.02f, 3.0f, 1e-8f, 0.0f, -0.5f},
                           {-0.3f, 0.04f, 1.0f, 2e-8f, 0.25f, 0.5f},
                           {0.2f, -0.01f, -2.0f, -1e-8f, 0.0f, 0.1f}};
    const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8;
    int wdi;
    if (!be) { CHECK(0, "cpu backend"); return; }
    for (wdi = 0; wdi < 2; wdi++) {
        double wd = wdi ? 0.1 : 0.0, rp[N], rm[N], rv[N];
        float *P = (float *)be->buf_alloc(be, N * 4), *Gd = (float *)be->buf_alloc(be, N * 4);
        float *M = (float *)be->buf_alloc(be, N * 4), *Vd = (float *)be->buf_alloc(be, N * 4);
        float hp[N], hm[N], hv[N];
        int t, i;
        be->upload(be, P, p0, sizeof p0);
        for (i = 0; i < N; i++) { rp[i] = p0[i]; rm[i] = 0; rv[i] = 0; }
        for (t = 1; t <= 3; t++) {
            double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
            be->upload(be, Gd, g[t - 1], sizeof g[0]);
            be->adam_step(be, P, Gd, M, Vd, N, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, (float)bc1, (float)bc2);
            be->download(be, hp, P, sizeof hp);
            be->download(be, hm, M, sizeof hm);
            be->download(be, hv, Vd, sizeof hv);
            for (i = 0; i < N; i++) { /* torch.optim.AdamW, written out */
                double gi = g[t - 1][i];
                rp[i] *= 1.0 - lr * wd;
                rm[i] = b1 * rm[i] + (1 - b1) * gi;
                rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
                rp[i] -= (lr / bc1) * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + eps);
            }
            if (t == 1) { /* by hand: m/bc1 = g and sqrt(v/bc2) = |g|, so p1 = p0 (1 - lr wd) - lr g / (|g| + eps) */
                for (i = 0; i < N; i++) {
                    double gi = g[0][i], hand = p0[i] * (1.0 - lr * wd) - lr * gi / (fabs(gi) + eps);
                    /* 1e-6 relative (float state, double reference) */
                    CHECK(fabs(hp[i] - hand) <= 1e-6 * fmax(fabs(hand), 1.0), "wd=%g step 1 elt %d: %.9g vs hand %.9g", wd, i, hp[i], hand);
                }
                /* element 3 has g = 1e-8 = eps: the update is lr * 1e-8 / 2e-8 = lr / 2 exactly where eps sits */
                CHECK(fabs((p0[3] * (1 - lr * wd) - hp[3]) - lr / 2) <= 1e-8, "eps placement: update %.9g, want %.9g",
                      p0[3] * (1 - lr * wd) - hp[3], lr / 2);
            }
            for (i = 0; i < N; i++) {
                /* 1e-6 relative on p, m and v (m, v: of their own magnitude, floor 1e-20) */
                CHECK(fabs(hp[i] - rp[i]) <= 1e-6 * fmax(fabs(rp[i]), 1.0), "wd=%g step %d p[%d] %.9g vs %.9g", wd, t, i, hp[i], rp[i]);
                CHECK(fabs(hm[i] - rm[i]) <= 1e-6 * fabs(rm[i]) + 1e-20, "wd=%g step %d m[%d] %.9g vs %.9g", wd, t, i, hm[i], rm[i]);
                CHECK(fabs(hv[i] - rv[i]) <= 1e-6 * fabs(rv[i]) + 1e-20, "wd=%g step %d v[%d] %.9g vs %.9g", wd, t, i, hv[i], rv[i]);
            }
        }
        be->buf_free(be, P); be->buf_free(be, Gd); be->buf_free(be, M); be->buf_free(be, Vd);
    }
    utg_backend_destroy(be);
}

/* reduce_f64 into a one-double backend buffer, read back */
static double dev_reduce(utg_backend *be, const float *x, size_t n, double scale, int flags) {
    double *acc = (double *)be->buf_alloc(be, sizeof(double)), v = 0.0;
    if (!acc) return NAN;
    if (flags & UTG_REDUCE_ADD) be->upload(be, acc, &(double){0.25}, sizeof(double));
    be->reduce_f64(be, acc, x, n, scale, flags);
    be->download(be, &v, acc, sizeof v);
    be->buf_free(be, acc);
    return v;
}

/* The other optimizer ops: axpby, reduce_f64 (deterministic, double accuracy), row_normalize. */
static void test_optimizer_ops(void) {
    utg_backend *be = cpu_backend();
    size_t n = 3000017, i; /* > 256 * 4096 floats: 256 partial sums of ~11.7k, spread over threads */
    float *x, *y, *h;
    double ref = 0, s1, s2;
    trng rg;
    if (!be) { CHECK(0, "cpu backend"); return; }
    x = (float *)be->buf_alloc(be, n * 4);
    y = (float *)be->buf_alloc(be, n * 4);
    h = falloc(n);
    rg.s = 5;
    for (i = 0; i < n; i++) h[i] = (float)trng_normal(&rg);
    be->upload(be, x, h, n * 4);
    for (i = 0; i < n; i++) ref += (double)h[i] * h[i];
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    s1 = dev_reduce(be, x, n, 1.0, UTG_REDUCE_SQUARES);
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    s2 = dev_reduce(be, x, n, 1.0, UTG_REDUCE_SQUARES);
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
    /* double accumulation: 1e-10 relative to a plain double sum (bound n * 2^-53 = 3e-10, typical
       1e-13; a float accumulator would be off by ~1e-4); the thread count changes no bit */
    CHECK(fabs(s1 - ref) <= 1e-10 * ref && s1 == s2, "sum of squares %.17g / %.17g vs %.17g", s1, s2, ref);
    CHECK(dev_reduce(be, x, 0, 1.0, UTG_REDUCE_SQUARES) == 0.0 &&
          dev_reduce(be, x, 1, 1.0, UTG_REDUCE_SQUARES) == (double)h[0] * h[0], "sum of squares of 0 and 1 elements");
    {   /* the plain sum, scaled, and added to what out[0] held (0.25) */
        double sref = 0.0, s3, s4;
        for (i = 0; i < n; i++) sref += h[i];
        s3 = dev_reduce(be, x, n, 0.5, 0);
        s4 = dev_reduce(be, x, n, 0.5, UTG_REDUCE_ADD);
        CHECK(fabs(s3 - 0.5 * sref) <= 1e-9 * fabs(sref) + 1e-9 && s4 == 0.25 + s3, "sum %.17g vs %.17g, add %.17g",
              s3, 0.5 * sref, s4);
    }
    {   /* normalize_frob: x / (||x|| + eps), the norm from the same deterministic sum */
        float got[3];
        double nrm = sqrt(s1);
        be->normalize_frob(be, x, n, 1e-7);
        be->download(be, got, x, sizeof got);
        for (i = 0; i < 3; i++)
            CHECK(got[i] == (float)(1.0 / (nrm + 1e-7)) * h[i], "normalize_frob[%zu] %.9g vs %.9g", i, got[i],
                  (float)(1.0 / (nrm + 1e-7)) * h[i]);
        be->upload(be, x, h, n * 4);
    }
    /* axpby: y = 2x - 0.5y exactly representable; alpha 0 with x NULL scales */
    {
        float a[5] = {1, -2, 3, 0.5f, 8}, b[5] = {4, 4, -2, 1, 0}, out[5];
        be->upload(be, x, a, sizeof a);
        be->upload(be, y, b, sizeof b);
        be->axpby(be, y, 2.0f, x, -0.5f, 5);
        be->download(be, out, y, sizeof out);
        CHECK(out[0] == 0 && out[1] == -6 && out[2] == 7 && out[3] == 0.5f && out[4] == 16, "axpby: %g %g %g %g %g", out[0], out[1], out[2], out[3], out[4]);
        be->axpby(be, y, 0.0f, NULL, 0.25f, 5);
        be->download(be, out, y, sizeof out);
        CHECK(out[0] == 0 && out[1] == -1.5f && out[2] == 1.75f && out[4] == 4, "axpby alpha 0: %g %g %g %g", out[0], out[1], out[2], out[4]);
    }
    /* muon_momentum: m = mu m + g, u = g + mu m (nesterov) or m; exactly representable values */
    {
        float m0[3] = {1, 2, -4}, g0[3] = {3, -1, 0.5f}, mo[3], uo[3];
        int nest;
        for (nest = 0; nest < 2; nest++) {
            be->upload(be, x, m0, sizeof m0);
            be->upload(be, y, g0, sizeof g0);
            be->muon_momentum(be, y + 8, x, y, 0.5f, nest, 3);
            be->download(be, mo, x, sizeof mo);
            be->download(be, uo, y + 8, sizeof uo);
            CHECK(mo[0] == 3.5f && mo[1] == 0.0f && mo[2] == -1.5f, "muon_momentum buffer: %g %g %g", mo[0], mo[1], mo[2]);
            CHECK(nest ? uo[0] == 4.75f && uo[1] == -1.0f && uo[2] == -0.25f : uo[0] == 3.5f && uo[1] == 0.0f && uo[2] == -1.5f,
                  "muon_momentum nesterov %d update: %g %g %g", nest, uo[0], uo[1], uo[2]);
        }
    }
    /* row_normalize: unit rows, a zero row stays zero, a row below eps is divided by eps */
    {
        float r[4 * 3] = {3, 4, 0, 0, 0, 0, 1e-9f, 0, 0, -1, 2, -2}, out[12];
        be->upload(be, x, r, sizeof r);
        be->row_normalize(be, x, 4, 3, 1e-7f);
        be->download(be, out, x, sizeof out);
        /* float rounding: 1e-6 */
        CHECK(fabs(out[0] - 0.6) < 1e-6 && fabs(out[1] - 0.8) < 1e-6 && out[2] == 0, "row 0: %g %g %g", out[0], out[1], out[2]);
        CHECK(out[3] == 0 && out[4] == 0 && out[5] == 0, "zero row");
        CHECK(fabs(out[6] - 0.01) < 1e-8, "row below eps: %g (want 1e-9 / 1e-7 = 0.01)", out[6]);
        CHECK(fabs(out[9] + 1.0 / 3) < 1e-6 && fabs(out[10] - 2.0 / 3) < 1e-6 && fabs(out[11] + 2.0 / 3) < 1e-6, "row 3: %g %g %g", out[9],
              out[10], out[11]);
    }
    be->buf_free(be, x);
    be->buf_free(be, y);
    free(h);
    utg_backend_destroy(be);
}

/* ---------------------------------------------------------------- 3. utg_optim_step vs a reference */

static utg_config small_config(void) {
    utg_config c;
    memset(&c, 0, sizeof c);
    c.num_layers = 2; c.model_dim = 32; c.num_heads = 4; c.num_kv_heads = 2; c.vocab_size = 64; c.train_seq_len = 16;
    c.mlp_mult = 2;
    /* every optimizer value the reference uses is set here, so the reference does not read defaults */
    c.matrix_lr = 0.03; c.scalar_lr = 0.02; c.tied_embed_lr = 0.05; c.embed_lr = 0.6; c.head_lr = 0.008;
    c.muon_momentum = 0.95; c.muon_momentum_warmup_start = 0.85; c.muon_momentum_warmup_steps = 4;
    c.muon_backend_steps = 5; c.beta1 = 0.9; c.beta2 = 0.95; c.adam_eps = 1e-8;
    c.control_tensor_name_patterns = "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights";
    return c;
}

enum { G_MUON, G_EMBED, G_HEAD, G_SCALAR };

/* The double-precision optimizer of train_gpt.py (plus the record-lineage options), on host arrays
   laid out like the parameter arena. */
typedef struct {
    utg_config c;
    int nt;
    const utg_tensor_info *ti[64];
    int group[64];
    size_t n;
    double *p, *m1, *m2;
    int64_t t;
} ref_opt;

static int pattern_hit(const char *name, const char *patterns) {
    char buf[256], *tok;
    snprintf(buf, sizeof buf, "%s", patterns);
    for (tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (*tok && strstr(name, tok)) return 1;
    return 0;
}

static void ref_init(ref_opt *r, utg_model *m, const utg_config *c) {
    int t;
    float *hp;
    memset(r, 0, sizeof *r);
    r->c = *c;
    r->nt = utg_model_tensor_count(m);
    r->n = utg_model_arena_floats(m);
    r->p = dalloc(r->n); r->m1 = dalloc(r->n); r->m2 = dalloc(r->n);
    hp = falloc(r->n);
    utg_model_get(m, UTG_ARENA_PARAMS, -1, hp, r->n);
    for (t = 0; t < (int)r->n; t++) r->p[t] = hp[t];
    free(hp);
    for (t = 0; t < r->nt && t < 64; t++) {
        const utg_tensor_info *ti = utg_model_tensor(m, t);
        int g;
        /* train_gpt.py's split, by name: block params (named relative to `blocks`) with ndim 2 and no
           control pattern go to Muon; the rest of the block params and skip_weights are scalars */
        if (strcmp(ti->name, "tok_emb.weight") == 0) g = G_EMBED;
        else if (strcmp(ti->name, "lm_head.weight") == 0) g = G_HEAD;
        else if (strncmp(ti->name, "blocks.", 7) == 0 && ti->ndim == 2 && !pattern_hit(ti->name + 7, c->control_tensor_name_patterns)) g = G_MUON;
        else g = G_SCALAR;
        r->ti[t] = ti;
        r->group[t] = g;
    }
}
static void ref_free(ref_opt *r) { free(r->p); free(r->m1); free(r->m2); }

/* g: host gradient arena (double, modified: clipped in place as clip_grad_norm_ does) */
static double ref_step(ref_opt *r, double *g, int step, double lr_scale) {
    const utg_config *c = &r->c;
    double norm = 0, frac, mu, bc1, bc2;
    int t;
    size_t i;
    for (t = 0; t < r->nt; t++)
        for (i = 0; i < r->ti[t]->numel; i++) norm += g[r->ti[t]->offset + i] * g[r->ti[t]->offset + i];
    norm = sqrt(norm);
    if (c->grad_clip_norm > 0) { /* torch.nn.utils.clip_grad_norm_ */
        double coef = c->grad_clip_norm / (norm + 1e-6);
        if (coef > 1.0) coef = 1.0;
        for (i = 0; i < r->n; i++) g[i] *= coef;
    }
    frac = c->muon_momentum_warmup_steps > 0 ? fmin((double)step / c->muon_momentum_warmup_steps, 1.0) : 1.0;
    mu = (1 - frac) * c->muon_momentum_warmup_start + frac * c->muon_momentum;
    r->t++;
    bc1 = 1.0 - pow(c->beta1, (double)r->t);
    bc2 = 1.0 - pow(c->beta2, (double)r->t);
    for (t = 0; t < r->nt; t++) {
        const utg_tensor_info *ti = r->ti[t];
        double *p = r->p + ti->offset, *gg = g + ti->offset, *b = r->m1 + ti->offset, *v = r->m2 + ti->offset;
        size_t n = ti->numel;
        if (r->group[t] == G_MUON) {
            int rows = (int)ti->shape[0], cols = (int)ti->shape[1], k, j;
            double lr = c->matrix_lr * lr_scale, *u = dalloc(n), *X = dalloc(n);
            double wd = c->muon_wd > 0 ? c->muon_wd : 0.0, scale = sqrt(fmax(1.0, (double)rows / cols));
            for (i = 0; i < n; i++) b[i] = mu * b[i] + gg[i];              /* buf.mul_(momentum).add_(g) */
            for (i = 0; i < n; i++) u[i] = c->muon_nesterov > 0 || c->muon_nesterov == 0 ? gg[i] + mu * b[i] : b[i];
            if (c->muon_eq_r > 0) /* MuonEq-R: rows / max(||row||, 1e-7) */
                for (k = 0; k < rows; k++) {
                    double s = 0;
                    for (j = 0; j < cols; j++) s += u[k * cols + j] * u[k * cols + j];
                    s = fmax(sqrt(s), 1e-7);
                    for (j = 0; j < cols; j++) u[k * cols + j] /= s;
                }
            ns_double(X, u, rows, cols, c->muon_backend_steps, c->muon_polar_express > 0);
            for (i = 0; i < n; i++) p[i] = p[i] * (1.0 - lr * wd) - lr * scale * X[i];
            free(u); free(X);
        } else {
            double lr, wd;
            if (r->group[t] == G_EMBED) { lr = c->tie_embeddings > 0 || c->tie_embeddings == 0 ? c->tied_embed_lr : c->embed_lr; wd = c->embed_wd; }
            else if (r->group[t] == G_HEAD) { lr = c->head_lr; wd = c->adam_wd; }
            else { lr = c->scalar_lr; wd = c->adam_wd; }
            lr *= lr_scale;
            for (i = 0; i < n; i++) {
                p[i] *= 1.0 - lr * wd;
                b[i] = c->beta1 * b[i] + (1 - c->beta1) * gg[i];
                v[i] = c->beta2 * v[i] + (1 - c->beta2) * gg[i] * gg[i];
                p[i] -= (lr / bc1) * b[i] / (sqrt(v[i]) / sqrt(bc2) + c->adam_eps);
            }
        }
    }
    return norm;
}

/* Random gradients (zero padding) scaled to a total norm `norm`. */
static void random_grads(const ref_opt *r, float *gf, double *gd, double norm, uint64_t seed) {
    trng rg;
    double s = 0;
    int t;
    size_t i;
    rg.s = seed;
    memset(gf, 0, r->n * sizeof(float));
    for (t = 0; t < r->nt; t++)
        for (i = 0; i < r->ti[t]->numel; i++) gf[r->ti[t]->offset + i] = (float)trng_normal(&rg);
    for (i = 0; i < r->n; i++) s += (double)gf[i] * gf[i];
    for (i = 0; i < r->n; i++) { gf[i] = (float)(gf[i] * (norm / sqrt(s))); gd[i] = gf[i]; }
}

static void random_params(utg_model *m, uint64_t seed) {
    size_t n = utg_model_arena_floats(m), i;
    float *h = falloc(n);
    trng rg;
    int t;
    rg.s = seed;
    for (t = 0; t < utg_model_tensor_count(m); t++) {
        const utg_tensor_info *ti = utg_model_tensor(m, t);
        for (i = 0; i < ti->numel; i++) h[ti->offset + i] = (float)(0.1 * trng_normal(&rg));
    }
    utg_model_set(m, UTG_ARENA_PARAMS, -1, h, n);
    free(h);
}

typedef struct { int step; double lr_scale, gnorm; } sched_pt;

/* Create the model, step it with utg_optim_step and the reference side by side, compare everything. */
static void run_optim_case(const char *label, const utg_config *cfg, const sched_pt *pts, int n_pts, int expect_groups[4]) {
    utg_model_desc d;
    utg_model *m = NULL;
    utg_optim *o = NULL;
    ref_opt r;
    float *gf, *hp, *p_start;
    double *gd, worst_all = 0;
    int k, t, counts[4] = {0, 0, 0, 0};
    memset(&d, 0, sizeof d);
    d.config = *cfg;
    d.config.muon_ns_bf16 = UTG_OFF; /* the double reference runs Newton-Schulz in full precision */
    if (utg_model_create(&d, &m) != UTG_OK) { CHECK(0, "%s: create: %s", label, utg_model_message(m)); utg_model_destroy(m); return; }
    random_params(m, 1234);
    CHECK(utg_optim_create(m, &o) == UTG_OK, "%s: optim create", label);
    if (!o) { utg_model_destroy(m); return; }
    ref_init(&r, m, cfg);
    for (t = 0; t < r.nt; t++) {
        counts[r.group[t]]++;
        /* the roles the model reports agree with the name-based split (MATRIX <-> 2-D block weight) */
        CHECK((r.ti[t]->role == UTG_ROLE_MATRIX) == (strncmp(r.ti[t]->name, "blocks.", 7) == 0 && r.ti[t]->ndim == 2 &&
                                                      !pattern_hit(r.ti[t]->name + 7, "attn_scale,mlp_scale,resid_mix,q_gain")),
              "%s: role of %s", label, r.ti[t]->name);
    }
    for (k = 0; k < 4; k++) CHECK(counts[k] == expect_groups[k], "%s: group %d has %d tensors, want %d", label, k, counts[k], expect_groups[k]);
    gf = falloc(r.n); gd = dalloc(r.n); hp = falloc(r.n); p_start = falloc(r.n);
    utg_model_get(m, UTG_ARENA_PARAMS, -1, p_start, r.n);
    for (k = 0; k < n_pts; k++) {
        double gn = -1, rn, worst = 0;
        size_t i;
        random_grads(&r, gf, gd, pts[k].gnorm, 500 + k);
        CHECK(utg_model_set(m, UTG_ARENA_GRADS, -1, gf, r.n) == UTG_OK, "set grads");
        CHECK(utg_optim_step(o, pts[k].step, pts[k].lr_scale, &gn) == UTG_OK, "%s: step: %s", label, utg_model_message(m));
        rn = ref_step(&r, gd, pts[k].step, pts[k].lr_scale);
        /* reported norm is the norm before clipping: both are double sums of the same floats, 1e-9 relative */
        CHECK(fabs(gn - rn) <= 1e-9 * rn && fabs(rn - pts[k].gnorm) <= 1e-5 * rn, "%s step %d: grad norm %.12g vs %.12g (set %.6g)",
              label, k, gn, rn, pts[k].gnorm);
        if (cfg->grad_clip_norm > 0) { /* the gradient arena holds the clipped gradients afterwards, as clip_grad_norm_ leaves .grad */
            double gw = 0, gm = 0;
            utg_model_get(m, UTG_ARENA_GRADS, -1, hp, r.n);
            for (i = 0; i < r.n; i++) { gw = fmax(gw, fabs(hp[i] - gd[i])); gm = fmax(gm, fabs(gd[i])); }
            CHECK(gw <= 1e-6 * gm, "%s step %d: clipped grads differ by %.3g of %.3g", label, k, gw, gm);
        }
        utg_model_get(m, UTG_ARENA_PARAMS, -1, hp, r.n);
        for (t = 0; t < r.nt; t++) {
            const utg_tensor_info *ti = r.ti[t];
            double tw = 0;
            for (i = 0; i < ti->numel; i++) tw = fmax(tw, fabs(hp[ti->offset + i] - r.p[ti->offset + i]));
            /* float vs double: 2e-6 absolute (measured <= 3.2e-7); every tensor moves by > 1e-3 (checked below) */
            CHECK(tw <= 2e-6, "%s step %d: %s (group %d) differs from the reference by %.3g", label, k, ti->name, r.group[t], tw);
            worst = fmax(worst, tw);
        }
        worst_all = fmax(worst_all, worst);
    }
    /* non-vacuous: every tensor moved by far more than the tolerance */
    for (t = 0; t < r.nt; t++) {
        const utg_tensor_info *ti = r.ti[t];
        double mv = 0;
        size_t i;
        for (i = 0; i < ti->numel; i++) mv = fmax(mv, fabs(hp[ti->offset + i] - p_start[ti->offset + i]));
        CHECK(mv > 1e-3, "%s: %s moved only %.3g", label, ti->name, mv);
    }
    /* the optimizer state arenas match the reference too (Muon buffer / Adam m, Adam v): 1e-6 of the scale */
    {
        float *a0 = falloc(r.n), *a1 = falloc(r.n);
        double w0 = 0, w1 = 0, s0 = 0, s1 = 0;
        size_t i;
        CHECK(utg_optim_get_arena(o, UTG_OPTIM_MOMENTUM, a0, r.n) == UTG_OK && utg_optim_get_arena(o, UTG_OPTIM_SECOND_MOMENT, a1, r.n) == UTG_OK, "get arenas");
        for (i = 0; i < r.n; i++) {
            w0 = fmax(w0, fabs(a0[i] - r.m1[i])); s0 = fmax(s0, fabs(r.m1[i]));
            w1 = fmax(w1, fabs(a1[i] - r.m2[i])); s1 = fmax(s1, fabs(r.m2[i]));
        }
        CHECK(w0 <= 1e-6 * s0 && w1 <= 1e-6 * s1, "%s: state arenas differ: m %.3g of %.3g, v %.3g of %.3g", label, w0, s0, w1, s1);
        free(a0); free(a1);
    }
    printf("    %s: worst parameter difference %.3g\n", label, worst_all);
    free(gf); free(gd); free(hp); free(p_start);
    ref_free(&r);
    utg_optim_destroy(o);
    utg_model_destroy(m);
}

static void test_optim_step_baseline(void) {
    utg_config c = small_config();
    /* steps 0 and 1 in the momentum warmup (0.85, 0.875), then a warmdown step at scale 0.6 */
    sched_pt pts[3] = {{0, 1.0, 1.0}, {1, 1.0, 0.7}, {2, 0.6, 1.3}};
    int groups[4] = {12, 1, 0, 9}; /* 6 matrices x 2 blocks; tok_emb; no head; 4 x 2 + skip_weights */
    run_optim_case("baseline", &c, pts, 3, groups);
}

static void test_optim_step_wd_eqr_clip(void) {
    utg_config c = small_config();
    /* grad norm 2.5 then 0.8 with GRAD_CLIP_NORM 1: the first step is clipped, the second is not */
    sched_pt pts[3] = {{0, 1.0, 2.5}, {1, 1.0, 0.8}, {2, 0.5, 1.7}};
    int groups[4] = {12, 1, 0, 9};
    c.muon_wd = 0.04; c.adam_wd = 0.02; c.embed_wd = 0.085; c.muon_eq_r = 1; c.grad_clip_norm = 1.0;
    run_optim_case("wd + MuonEq-R + clip", &c, pts, 3, groups);
}

static void test_optim_step_untied_polar(void) {
    utg_config c = small_config();
    sched_pt pts[2] = {{0, 1.0, 1.0}, {1, 0.9, 1.0}};
    int groups[4] = {10, 1, 1, 11}; /* c_v of both blocks moved to the scalars by the pattern */
    c.tie_embeddings = UTG_OFF; c.muon_polar_express = 1; c.muon_nesterov = UTG_OFF; c.adam_wd = 0.01; c.muon_wd = 0.02;
    c.grad_clip_norm = 5.0; /* on but never active */
    c.control_tensor_name_patterns = "attn_scale,mlp_scale,resid_mix,q_gain,skip_weights,c_v";
    run_optim_case("untied + polar express + no Nesterov + c_v as control", &c, pts, 2, groups);
}

static void test_optim_rejects_bad_input(void) {
    utg_config c = small_config();
    utg_model_desc d;
    utg_model *m = NULL;
    utg_optim *o = NULL;
    float *g;
    size_t n;
    int64_t steps = -1, swa = -1;
    memset(&d, 0, sizeof d);
    d.config = c;
    utg_model_create(&d, &m);
    CHECK(utg_optim_create(NULL, &o) == UTG_ERR_INVALID, "NULL model");
    CHECK(utg_optim_create(m, &o) == UTG_OK, "create");
    n = utg_model_arena_floats(m);
    g = falloc(n);
    CHECK(utg_optim_step(o, -1, 1.0, NULL) == UTG_ERR_INVALID, "negative step");
    CHECK(utg_optim_step(o, 0, NAN, NULL) == UTG_ERR_INVALID, "NaN lr scale");
    CHECK(utg_optim_step(o, 0, -0.5, NULL) == UTG_ERR_INVALID, "negative lr scale");
    g[utg_model_tensor(m, 5)->offset] = INFINITY;
    utg_model_set(m, UTG_ARENA_GRADS, -1, g, n);
    CHECK(utg_optim_step(o, 0, 1.0, NULL) == UTG_ERR_BACKEND && strstr(utg_model_message(m), "finite"), "inf gradient: %s",
          utg_model_message(m));
    utg_optim_get_counters(o, &steps, &swa);
    CHECK(steps == 0 && swa == 0, "a refused step must not count (adam steps %lld)", (long long)steps);
    free(g);
    utg_optim_destroy(o);
    utg_model_destroy(m);
}

/* The step's loss: the mean of its training forwards' losses, read with the gradient norm (NaN
   before a step); a NaN weight makes the loss NaN, which the step refuses by name before any update. */
static void test_optim_step_loss(void) {
    utg_config c = small_config();
    utg_model_desc d;
    utg_model *m = NULL;
    utg_optim *o = NULL;
    int32_t x[64], y[64];
    double l1 = 0, l2 = 0;
    float *p;
    size_t n, i;
    memset(&d, 0, sizeof d);
    d.config = c;
    if (utg_model_create(&d, &m) != UTG_OK || utg_optim_create(m, &o) != UTG_OK) { CHECK(0, "setup"); return; }
    CHECK(isnan(utg_optim_last_loss(o)), "NaN before the first step");
    for (i = 0; i < 64; i++) x[i] = (int32_t)(i * 7 % 40), y[i] = (int32_t)(i * 11 % 40);
    utg_model_zero_grads(m);
    utg_model_forward(m, x, y, 64 / c.train_seq_len, &l1);
    utg_model_backward(m, 0.5f);
    utg_model_forward(m, y, x, 64 / c.train_seq_len, NULL);
    utg_model_backward(m, 0.5f);
    utg_model_eval(m, y, x, 64 / c.train_seq_len, c.train_seq_len, NULL, &l2); /* an eval adds nothing */
    CHECK(utg_optim_step(o, 0, 1.0, NULL) == UTG_OK, "step: %s", utg_model_message(m));
    CHECK(fabs(utg_optim_last_loss(o) - 0.5 * (l1 + l2)) < 1e-12 * l1, "step loss %.15g, forwards %.15g and %.15g",
          utg_optim_last_loss(o), l1, l2);
    n = utg_model_arena_floats(m);
    p = falloc(n);
    utg_model_get(m, UTG_ARENA_PARAMS, -1, p, n);
    p[utg_model_tensor(m, utg_model_find_tensor(m, "tok_emb.weight"))->offset] = NAN;
    utg_model_set(m, UTG_ARENA_PARAMS, -1, p, n);
    utg_model_zero_grads(m);
    CHECK(utg_model_forward(m, x, y, 64 / c.train_seq_len, NULL) == UTG_OK, "a forward without loss does not wait");
    utg_model_backward(m, 1.0f);
    CHECK(utg_optim_step(o, 1, 1.0, NULL) == UTG_ERR_BACKEND && strstr(utg_model_message(m), "loss is not finite"),
          "NaN loss refused: %s", utg_model_message(m));
    free(p);
    utg_optim_destroy(o);
    utg_model_destroy(m);
}

/* ---------------------------------------------------------------- 4. schedules */

/* train_gpt.py's lr_mul (baseline) */
static double py_lr_mul_iters(const utg_config *a, int step, double elapsed_ms) {
    int warmdown_iters = a->warmdown_iters > 0 ? a->warmdown_iters : 0;
    double max_wallclock_ms, step_ms, warmdown_ms, remaining_ms;
    int has_cap = a->max_wallclock_seconds > 0;
    if (warmdown_iters <= 0) return 1.0;
    if (!has_cap) {
        int warmdown_start = a->iterations - warmdown_iters > 0 ? a->iterations - warmdown_iters : 0;
        if (warmdown_start <= step && step < a->iterations)
            return fmax((double)(a->iterations - step) / (warmdown_iters > 1 ? warmdown_iters : 1), 0.0);
        return 1.0;
    }
    max_wallclock_ms = 1000 * a->max_wallclock_seconds;
    step_ms = elapsed_ms / (step > 1 ? step : 1);
    warmdown_ms = warmdown_iters * step_ms;
    remaining_ms = fmax(max_wallclock_ms - elapsed_ms, 0.0);
    return remaining_ms <= warmdown_ms ? remaining_ms / fmax(warmdown_ms, 1e-9) : 1.0;
}
/* the record lineage's training_frac + lr_mul (PR #1394 on) */
static double py_lr_mul_frac(const utg_config *a, int step, double elapsed_ms) {
    double frac;
    if (a->max_wallclock_seconds > 0) {
        double max_wallclock_ms = 1e3 * a->max_wallclock_seconds - a->gptq_reserve_seconds * 1e3;
        frac = elapsed_ms / fmax(max_wallclock_ms, 1e-9);
    } else {
        frac = (double)step / (a->iterations > 1 ? a->iterations : 1);
    }
    if (a->warmdown_frac <= 0) return 1.0;
    if (frac >= 1.0 - a->warmdown_frac) return fmax((1.0 - frac) / a->warmdown_frac, a->min_lr);
    return 1.0;
}

static void test_lr_scale_iterations(void) {
    utg_config c = small_config();
    int wds[4] = {30, 1, 150, UTG_OFF}, w, step, bad = 0;
    c.max_wallclock_seconds = UTG_OFF;
    c.iterations = 100;
    for (w = 0; w < 4; w++) {
        c.warmdown_iters = wds[w];
        for (step = 0; step <= 120; step++) {
            double got = utg_lr_scale(&c, step, 1e9), want = py_lr_mul_iters(&c, step, 1e9);
            /* the same double arithmetic: 1e-15 */
            if (fabs(got - want) > 1e-15) {
                if (bad++ < 5) CHECK(0, "WARMDOWN_ITERS=%d step %d: %.17g vs lr_mul %.17g", wds[w], step, got, want);
            }
        }
    }
    CHECK(bad == 0, "%d mismatches", bad);
    /* spot values by hand: iterations 100, warmdown 30 -> 1 until step 70, 1.0 at 70, 0.5 at 85, 1/30 at 99, 1 at 100 */
    c.warmdown_iters = 30;
    CHECK(utg_lr_scale(&c, 69, 0) == 1.0 && utg_lr_scale(&c, 70, 0) == 1.0 && utg_lr_scale(&c, 85, 0) == 0.5 &&
              fabs(utg_lr_scale(&c, 99, 0) - 1.0 / 30) < 1e-15 && utg_lr_scale(&c, 100, 0) == 1.0,
          "hand values");
}

static void test_lr_scale_wallclock(void) {
    utg_config c = small_config();
    int bad = 0, si, ei, wi;
    const int steps[] = {0, 1, 2, 10, 100, 1000, 5000, 12345};
    const double ms[] = {0, 1, 50, 1000, 60000, 100000, 272727.27272727271, 300000, 560000, 599999, 600000, 700000};
    const int wds[] = {1200, 20, 1};
    c.max_wallclock_seconds = 600;
    c.iterations = 20000;
    for (wi = 0; wi < 3; wi++)
        for (si = 0; si < 8; si++)
            for (ei = 0; ei < 12; ei++) {
                double got, want;
                c.warmdown_iters = wds[wi];
                got = utg_lr_scale(&c, steps[si], ms[ei]);
                want = py_lr_mul_iters(&c, steps[si], ms[ei]);
                /* 1e-12: same formula, possibly reassociated */
                if (!(fabs(got - want) <= 1e-12)) {
                    if (bad++ < 5) CHECK(0, "cap 600s WARMDOWN_ITERS=%d step %d elapsed %.9g: %.17g vs %.17g", wds[wi], steps[si], ms[ei], got, want);
                }
            }
    CHECK(bad == 0, "%d mismatches", bad);
    /* hand values: step 100 at 300 s -> 3 s/step, warmdown 1200 steps = 3600 s > remaining 300 s: scale 300/3600 */
    c.warmdown_iters = 1200;
    CHECK(fabs(utg_lr_scale(&c, 100, 300000) - 300.0 / 3600.0) < 1e-15, "mid value %.17g", utg_lr_scale(&c, 100, 300000));
    CHECK(utg_lr_scale(&c, 10000, 600000) == 0.0 && utg_lr_scale(&c, 10000, 700000) == 0.0, "past the cap -> 0");
    CHECK(utg_lr_scale(&c, 0, 0) == 1.0, "step 0 -> 1");
    /* per-phase step time (PR #1088): 100 steps at 1 s, then a deeper plan from step 100 at 3 s/step;
       at step 150 (250 s) the phase's 3 s/step gives a 3600 s warmdown: scale 350/3600, where the
       run's average (1.67 s/step, 2000 s) would still say 350/2000 */
    CHECK(fabs(utg_lr_scale_phase(&c, 150, 250000, 100, 100000) - 350.0 / 3600.0) < 1e-15, "phase step time %.17g",
          utg_lr_scale_phase(&c, 150, 250000, 100, 100000));
    CHECK(fabs(utg_lr_scale(&c, 150, 250000) - 350.0 / 2000.0) < 1e-15, "average step time");
    CHECK(utg_lr_scale_phase(&c, 100, 100000, 100, 100000) == utg_lr_scale(&c, 100, 100000), "no step of the phase yet: the average");
    CHECK(utg_lr_scale_phase(&c, 150, 250000, 0, 0) == utg_lr_scale(&c, 150, 250000), "phase 0 is utg_lr_scale");
}

static void test_lr_scale_warmdown_frac(void) {
    utg_config c = small_config();
    int bad = 0, i;
    /* cap 600 s, reserve 12 s -> span 588 s; w 0.72 -> the warmdown starts at 0.28 * 588000 = 164640 ms */
    const double ms[] = {0, 1000, 164639.9, 164640, 164640.1, 300000, 500000, 587999, 588000, 600000, 1e7};
    const double mins[] = {0.0, 0.1}, ws[] = {0.72, 0.3};
    for (i = 0; i < 4 * 11; i++) {
        double got, want;
        c.max_wallclock_seconds = 600;
        c.gptq_reserve_seconds = 12;
        c.warmdown_frac = ws[i / 22];
        c.min_lr = mins[(i / 11) % 2];
        got = utg_lr_scale(&c, 123, ms[i % 11]);
        want = py_lr_mul_frac(&c, 123, ms[i % 11]);
        if (!(fabs(got - want) <= 1e-12)) {
            if (bad++ < 5) CHECK(0, "frac cap: w %g min_lr %g elapsed %.9g: %.17g vs %.17g", c.warmdown_frac, c.min_lr, ms[i % 11], got, want);
        }
    }
    /* no cap: frac = step / ITERATIONS */
    c.max_wallclock_seconds = UTG_OFF;
    c.iterations = 1000;
    c.warmdown_frac = 0.85;
    for (i = 0; i <= 1100; i += 5) {
        double got, want;
        c.min_lr = (i / 5) % 2 ? 0.1 : 0.0;
        got = utg_lr_scale(&c, i, 0);
        want = py_lr_mul_frac(&c, i, 0);
        if (!(fabs(got - want) <= 1e-12)) { if (bad++ < 5) CHECK(0, "frac iters: step %d min_lr %g: %.17g vs %.17g", i, c.min_lr, got, want); }
    }
    CHECK(bad == 0, "%d mismatches", bad);
    /* hand: 0.85 of 1000 steps, step 575 -> (1 - 0.575)/0.85 = 0.5; floor 0.1 near the end */
    c.min_lr = 0.1;
    CHECK(fabs(utg_lr_scale(&c, 575, 0) - 0.5) < 1e-12 && fabs(utg_lr_scale(&c, 990, 0) - 0.1) < 1e-15 && utg_lr_scale(&c, 149, 0) == 1.0,
          "hand values %.17g %.17g %.17g", utg_lr_scale(&c, 575, 0), utg_lr_scale(&c, 990, 0), utg_lr_scale(&c, 149, 0));
}

/* GPTQ_RESERVE_SECONDS >= MAX_WALLCLOCK_SECONDS (accepted by utg_config_validate): lr_mul's frac is
   elapsed / 1e-9, so at elapsed 0 the scale is 1; at elapsed > 0 it is MIN_LR. */
static void test_lr_scale_reserve_exceeds_cap(void) {
    utg_config c = small_config();
    utg_config r;
    c.max_wallclock_seconds = 10; c.gptq_reserve_seconds = 12; c.warmdown_frac = 0.5; c.min_lr = 0.1;
    r = utg_config_resolve(&c);
    CHECK(utg_config_validate(&r, NULL) == UTG_OK, "config accepted");
    /* exact: both sides are 1.0 or min_lr */
    CHECK(utg_lr_scale(&c, 5, 1000) == py_lr_mul_frac(&c, 5, 1000), "elapsed 1 s: %.17g vs %.17g", utg_lr_scale(&c, 5, 1000), py_lr_mul_frac(&c, 5, 1000));
    CHECK(utg_lr_scale(&c, 0, 0) == py_lr_mul_frac(&c, 0, 0), "elapsed 0: utg_lr_scale %.17g vs lr_mul %.17g", utg_lr_scale(&c, 0, 0),
          py_lr_mul_frac(&c, 0, 0));
}

static void test_muon_momentum_schedule(void) {
    utg_config c, d;
    memset(&c, 0, sizeof c);
    c = utg_config_resolve(&c); /* 0.85 -> 0.95 over 500 steps */
    /* exact arithmetic of (1-f)*0.85 + f*0.95; 1e-15 */
    CHECK(fabs(utg_muon_momentum(&c, 0) - 0.85) < 1e-15, "step 0: %.17g", utg_muon_momentum(&c, 0));
    CHECK(fabs(utg_muon_momentum(&c, 250) - 0.90) < 1e-15, "mid: %.17g", utg_muon_momentum(&c, 250));
    CHECK(fabs(utg_muon_momentum(&c, 100) - (0.8 * 0.85 + 0.2 * 0.95)) < 1e-15, "step 100: %.17g", utg_muon_momentum(&c, 100));
    CHECK(fabs(utg_muon_momentum(&c, 500) - 0.95) < 1e-15, "end: %.17g", utg_muon_momentum(&c, 500));
    CHECK(fabs(utg_muon_momentum(&c, 100000) - 0.95) < 1e-15, "beyond: %.17g", utg_muon_momentum(&c, 100000));
    /* record lineage: 0.92 -> 0.99 over 1500 */
    d = c;
    d.muon_momentum = 0.99; d.muon_momentum_warmup_start = 0.92; d.muon_momentum_warmup_steps = 1500;
    CHECK(fabs(utg_muon_momentum(&d, 750) - 0.955) < 1e-15, "0.92->0.99 mid: %.17g", utg_muon_momentum(&d, 750));
    /* warmup off (0 steps -> UTG_OFF): the final momentum from step 0 */
    d.muon_momentum_warmup_steps = UTG_OFF;
    CHECK(utg_muon_momentum(&d, 0) == 0.99, "no warmup: %.17g", utg_muon_momentum(&d, 0));
    /* start 0 (UTG_OFF): 0 at step 0, f*0.99 after */
    d.muon_momentum_warmup_steps = 100; d.muon_momentum_warmup_start = UTG_OFF;
    CHECK(utg_muon_momentum(&d, 0) == 0.0 && fabs(utg_muon_momentum(&d, 50) - 0.495) < 1e-15, "start 0: %.17g %.17g",
          utg_muon_momentum(&d, 0), utg_muon_momentum(&d, 50));
}

/* ---------------------------------------------------------------- 5. EMA, SWA, state */

typedef struct { utg_model *m; utg_optim *o; size_t n; float *g; } om;

static int om_make(om *x, const utg_config *c, uint64_t pseed) {
    utg_model_desc d;
    memset(x, 0, sizeof *x);
    memset(&d, 0, sizeof d);
    d.config = *c;
    if (utg_model_create(&d, &x->m) != UTG_OK) return 0;
    random_params(x->m, pseed);
    if (utg_optim_create(x->m, &x->o) != UTG_OK) return 0;
    x->n = utg_model_arena_floats(x->m);
    x->g = falloc(x->n);
    return 1;
}
static void om_free(om *x) { utg_optim_destroy(x->o); utg_model_destroy(x->m); free(x->g); }
/* one step with deterministic random gradients (zero padding) */
static void om_step(om *x, int step, double scale, uint64_t seed) {
    trng rg;
    int t;
    size_t i;
    rg.s = seed;
    memset(x->g, 0, x->n * sizeof(float));
    for (t = 0; t < utg_model_tensor_count(x->m); t++) {
        const utg_tensor_info *ti = utg_model_tensor(x->m, t);
        for (i = 0; i < ti->numel; i++) x->g[ti->offset + i] = (float)(0.01 * trng_normal(&rg));
    }
    utg_model_set(x->m, UTG_ARENA_GRADS, -1, x->g, x->n);
    utg_optim_step(x->o, step, scale, NULL);
    utg_optim_average(x->o, step + 1, scale);
}

static void test_ema(void) {
    utg_config c = small_config();
    om x;
    double *ema;
    float *p, *before;
    size_t i;
    int k;
    double worst = 0, dist = 0;
    c.ema_enabled = 1; c.ema_decay = 0.9;
    if (!om_make(&x, &c, 11)) { CHECK(0, "setup"); return; }
    ema = dalloc(x.n); p = falloc(x.n); before = falloc(x.n);
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, p, x.n);
    for (i = 0; i < x.n; i++) ema[i] = p[i]; /* EMA starts at the parameters at create */
    for (k = 0; k < 6; k++) {
        om_step(&x, k, 1.0, 900 + k);
        utg_model_get(x.m, UTG_ARENA_PARAMS, -1, p, x.n);
        for (i = 0; i < x.n; i++) ema[i] = 0.9 * ema[i] + 0.1 * p[i];
    }
    memcpy(before, p, x.n * sizeof(float));
    CHECK(utg_optim_apply_average(x.o) == UTG_AVERAGE_EMA, "EMA apply must return 1");
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, p, x.n);
    for (i = 0; i < x.n; i++) { worst = fmax(worst, fabs(p[i] - ema[i])); dist = fmax(dist, fabs(before[i] - ema[i])); }
    /* float EMA vs double: 1e-6; and the EMA is far from the last iterate (non-vacuous) */
    CHECK(worst <= 1e-6 && dist > 1e-2, "EMA differs by %.3g (distance to last iterate %.3g)", worst, dist);
    /* reset: EMA = current parameters, moments zero, counters zero */
    {
        float *a = falloc(x.n);
        int64_t st = -1, sw = -1;
        int z0 = 1, z1 = 1;
        utg_optim_reset(x.o);
        utg_optim_get_counters(x.o, &st, &sw);
        utg_optim_get_arena(x.o, UTG_OPTIM_MOMENTUM, a, x.n);
        for (i = 0; i < x.n; i++) if (a[i] != 0.0f) z0 = 0;
        utg_optim_get_arena(x.o, UTG_OPTIM_SECOND_MOMENT, a, x.n);
        for (i = 0; i < x.n; i++) if (a[i] != 0.0f) z1 = 0;
        CHECK(st == 0 && sw == 0 && z0 && z1, "reset: steps %lld swa %lld zero m %d zero v %d", (long long)st, (long long)sw, z0, z1);
        utg_optim_get_arena(x.o, UTG_OPTIM_EMA, a, x.n);
        CHECK(memcmp(a, p, x.n * sizeof(float)) == 0, "reset: EMA must equal the current parameters");
        free(a);
    }
    free(ema); free(p); free(before);
    om_free(&x);
}

static void test_swa(void) {
    utg_config c = small_config();
    om x;
    const double scales[7] = {1.0, 0.8, 0.45, 0.4, 0.3, 0.2, 0.1};
    double *sum;
    float *p, *before;
    int k, count = 0;
    int64_t st, sw;
    size_t i;
    double worst = 0, dist = 0;
    c.swa_enabled = 1; c.swa_every = 2; c.swa_start_lr_frac = 0.5;
    if (!om_make(&x, &c, 12)) { CHECK(0, "setup"); return; }
    sum = dalloc(x.n); p = falloc(x.n); before = falloc(x.n);
    for (k = 0; k < 7; k++) {
        om_step(&x, k, scales[k], 700 + k);
        /* finished steps k+1: samples when (k+1) % 2 == 0 and scale < 0.5 -> after steps 4 and 6 */
        if ((k + 1) % 2 == 0 && scales[k] < 0.5) {
            utg_model_get(x.m, UTG_ARENA_PARAMS, -1, p, x.n);
            for (i = 0; i < x.n; i++) sum[i] += p[i];
            count++;
        }
    }
    utg_optim_get_counters(x.o, &st, &sw);
    CHECK(count == 2 && sw == 2 && st == 7, "swa samples %lld (want 2), adam steps %lld", (long long)sw, (long long)st);
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, before, x.n);
    CHECK(utg_optim_apply_average(x.o) == UTG_AVERAGE_SWA, "SWA apply must return 2");
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, p, x.n);
    for (i = 0; i < x.n; i++) { worst = fmax(worst, fabs(p[i] - sum[i] / count)); dist = fmax(dist, fabs(before[i] - sum[i] / count)); }
    /* float mean vs double: 1e-6; the mean is not the last iterate */
    CHECK(worst <= 1e-6 && dist > 1e-3, "SWA mean differs by %.3g (distance to last iterate %.3g)", worst, dist);
    free(sum); free(p); free(before);
    om_free(&x);

    /* SWA on without samples (scale never below the threshold): nothing applied */
    if (!om_make(&x, &c, 12)) { CHECK(0, "setup"); return; }
    p = falloc(x.n); before = falloc(x.n);
    for (k = 0; k < 4; k++) om_step(&x, k, 1.0, 700 + k);
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, before, x.n);
    CHECK(utg_optim_apply_average(x.o) == UTG_AVERAGE_NONE, "no samples -> 0");
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, p, x.n);
    CHECK(memcmp(p, before, x.n * sizeof(float)) == 0, "no samples: parameters must stay");
    free(p); free(before);
    om_free(&x);
}

static void test_ema_wins_and_off(void) {
    utg_config c = small_config();
    om x, y;
    float *p, *e, *before;
    int k;
    c.ema_enabled = 1; c.ema_decay = 0.8; c.swa_enabled = 1; c.swa_every = 1; c.swa_start_lr_frac = 1.0;
    if (!om_make(&x, &c, 13)) { CHECK(0, "setup"); return; }
    p = falloc(x.n); e = falloc(x.n); before = falloc(x.n);
    for (k = 0; k < 3; k++) om_step(&x, k, 0.5, 300 + k);
    utg_optim_get_arena(x.o, UTG_OPTIM_EMA, e, x.n);
    CHECK(utg_optim_apply_average(x.o) == UTG_AVERAGE_EMA, "both on: EMA wins (1)");
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, p, x.n);
    CHECK(memcmp(p, e, x.n * sizeof(float)) == 0, "both on: parameters must be the EMA arena");
    om_free(&x);
    /* both off: 0, parameters unchanged */
    c = small_config();
    if (!om_make(&y, &c, 13)) { CHECK(0, "setup"); free(p); free(e); free(before); return; }
    for (k = 0; k < 2; k++) om_step(&y, k, 0.3, 300 + k);
    utg_model_get(y.m, UTG_ARENA_PARAMS, -1, before, y.n);
    CHECK(utg_optim_apply_average(y.o) == UTG_AVERAGE_NONE, "both off: 0");
    utg_model_get(y.m, UTG_ARENA_PARAMS, -1, p, y.n);
    CHECK(memcmp(p, before, y.n * sizeof(float)) == 0, "both off: parameters must stay");
    /* arenas that are off fail cleanly and leave the destination alone */
    {
        size_t i;
        int untouched = 1;
        for (i = 0; i < y.n; i++) e[i] = 42.0f;
        CHECK(utg_optim_get_arena(y.o, UTG_OPTIM_EMA, e, y.n) == UTG_ERR_INVALID && strstr(utg_model_message(y.m), "2"), "EMA off: %s",
              utg_model_message(y.m));
        CHECK(utg_optim_get_arena(y.o, UTG_OPTIM_SWA, e, y.n) == UTG_ERR_INVALID, "SWA off");
        CHECK(utg_optim_set_arena(y.o, UTG_OPTIM_SWA, e, y.n) == UTG_ERR_INVALID, "set SWA off");
        CHECK(utg_optim_get_arena(y.o, 4, e, y.n) == UTG_ERR_INVALID && utg_optim_get_arena(y.o, -1, e, y.n) == UTG_ERR_INVALID, "bad index");
        CHECK(utg_optim_get_arena(y.o, UTG_OPTIM_MOMENTUM, e, y.n - 1) == UTG_ERR_MISMATCH, "wrong length");
        CHECK(utg_optim_get_arena(NULL, UTG_OPTIM_MOMENTUM, e, y.n) == UTG_ERR_INVALID, "NULL optimizer");
        for (i = 0; i < y.n; i++) if (e[i] != 42.0f) untouched = 0;
        CHECK(untouched, "a failed get_arena wrote into the destination");
    }
    om_free(&y);
    free(p); free(e); free(before);
}

/* get_arena / set_arena / counters carry the whole state: a second optimizer loaded from the first
   continues bit-identically. */
static void test_state_round_trip(void) {
    utg_config c = small_config();
    om a, b;
    float *buf, *pa, *pb;
    int k, w, same = 1;
    int64_t st, sw;
    c.ema_enabled = 1; c.swa_enabled = 1; c.swa_every = 1; c.swa_start_lr_frac = 0.9; c.muon_eq_r = 1; c.muon_wd = 0.05;
    if (!om_make(&a, &c, 21) || !om_make(&b, &c, 99)) { CHECK(0, "setup"); return; }
    buf = falloc(a.n); pa = falloc(a.n); pb = falloc(a.n);
    for (k = 0; k < 3; k++) om_step(&a, k, 0.8, 40 + k);
    /* move a's parameters and every state arena into b */
    utg_model_get(a.m, UTG_ARENA_PARAMS, -1, buf, a.n);
    utg_model_set(b.m, UTG_ARENA_PARAMS, -1, buf, b.n);
    for (w = 0; w < UTG_OPTIM_ARENAS; w++) {
        CHECK(utg_optim_get_arena(a.o, w, buf, a.n) == UTG_OK, "get %d", w);
        CHECK(utg_optim_set_arena(b.o, w, buf, b.n) == UTG_OK, "set %d", w);
    }
    utg_optim_get_counters(a.o, &st, &sw);
    CHECK(st == 3 && sw == 3, "counters %lld %lld", (long long)st, (long long)sw);
    utg_optim_set_counters(b.o, st, sw);
    for (k = 3; k < 5; k++) { om_step(&a, k, 0.7, 40 + k); om_step(&b, k, 0.7, 40 + k); }
    utg_model_get(a.m, UTG_ARENA_PARAMS, -1, pa, a.n);
    utg_model_get(b.m, UTG_ARENA_PARAMS, -1, pb, b.n);
    CHECK(memcmp(pa, pb, a.n * sizeof(float)) == 0, "parameters differ after the round trip");
    for (w = 0; w < UTG_OPTIM_ARENAS; w++) {
        utg_optim_get_arena(a.o, w, pa, a.n);
        utg_optim_get_arena(b.o, w, pb, b.n);
        if (memcmp(pa, pb, a.n * sizeof(float)) != 0) same = 0;
    }
    CHECK(same, "state arenas differ after the round trip");
    CHECK(utg_optim_apply_average(a.o) == UTG_AVERAGE_EMA && utg_optim_apply_average(b.o) == UTG_AVERAGE_EMA, "apply");
    utg_model_get(a.m, UTG_ARENA_PARAMS, -1, pa, a.n);
    utg_model_get(b.m, UTG_ARENA_PARAMS, -1, pb, b.n);
    CHECK(memcmp(pa, pb, a.n * sizeof(float)) == 0, "averages differ after the round trip");
    /* the counters matter (so the check above can fail): the same arenas without them diverge */
    {
        om d2;
        if (om_make(&d2, &c, 99)) {
            utg_model_get(b.m, UTG_ARENA_PARAMS, -1, buf, b.n);
            utg_model_set(d2.m, UTG_ARENA_PARAMS, -1, buf, d2.n);
            for (w = 0; w < UTG_OPTIM_ARENAS; w++) {
                utg_optim_get_arena(b.o, w, buf, b.n);
                utg_optim_set_arena(d2.o, w, buf, d2.n);
            }
            om_step(&b, 5, 0.7, 50);
            om_step(&d2, 5, 0.7, 50);
            utg_model_get(b.m, UTG_ARENA_PARAMS, -1, pa, b.n);
            utg_model_get(d2.m, UTG_ARENA_PARAMS, -1, pb, d2.n);
            CHECK(memcmp(pa, pb, b.n * sizeof(float)) != 0, "without the counters the step must differ");
            om_free(&d2);
        }
    }
    free(buf); free(pa); free(pb);
    om_free(&a);
    om_free(&b);
}

/* ---------------------------------------------------------------- 6. determinism */

/* threads when the model and optimizer are made; step_threads (if > 0) for the steps */
static void run_threads2(int threads, int step_threads, float *params, float *state, size_t n) {
    utg_config c = small_config();
    om x;
    int k;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads; (void)step_threads;
#endif
    c.model_dim = 64; c.num_heads = 4; c.num_kv_heads = 2; c.vocab_size = 96;
    c.ema_enabled = 1; c.muon_eq_r = 1; c.grad_clip_norm = 0.05; c.muon_wd = 0.04; c.adam_wd = 0.02;
    if (!om_make(&x, &c, 5)) { CHECK(0, "setup"); return; }
#ifdef _OPENMP
    if (step_threads > 0) omp_set_num_threads(step_threads);
#endif
    CHECK(x.n == n, "arena size");
    for (k = 0; k < 3; k++) om_step(&x, k, 1.0 - 0.2 * k, 60 + k);
    utg_model_get(x.m, UTG_ARENA_PARAMS, -1, params, n);
    utg_optim_get_arena(x.o, UTG_OPTIM_MOMENTUM, state, n);
    utg_optim_get_arena(x.o, UTG_OPTIM_SECOND_MOMENT, state + n, n);
    utg_optim_get_arena(x.o, UTG_OPTIM_EMA, state + 2 * n, n);
    om_free(&x);
}
static void run_threads(int threads, float *params, float *state, size_t n) { run_threads2(threads, 0, params, state, n); }
static void test_deterministic_across_threads(void) {
    utg_config c = small_config();
    utg_model_desc d;
    utg_model *m = NULL;
    size_t n;
    float *p1, *p2, *s1, *s2;
    c.model_dim = 64; c.num_heads = 4; c.num_kv_heads = 2; c.vocab_size = 96;
    memset(&d, 0, sizeof d);
    d.config = c;
    utg_model_create(&d, &m);
    n = utg_model_arena_floats(m);
    utg_model_destroy(m);
    p1 = falloc(n); p2 = falloc(n); s1 = falloc(3 * n); s2 = falloc(3 * n);
    run_threads(1, p1, s1, n);
    run_threads(2, p2, s2, n);
    CHECK(memcmp(p1, p2, n * sizeof(float)) == 0, "parameters: 1 thread and 2 threads differ");
    CHECK(memcmp(s1, s2, 3 * n * sizeof(float)) == 0, "optimizer state: 1 thread and 2 threads differ");
    run_threads(3, p2, s2, n); /* Muon runs whole tensors on each of 3 threads: still the same bits */
    CHECK(memcmp(p1, p2, n * sizeof(float)) == 0 && memcmp(s1, s2, 3 * n * sizeof(float)) == 0, "1 thread and 3 threads differ");
    run_threads2(3, 1, p2, s2, n); /* made with 3 threads, stepped with 1: the Muon team follows */
    CHECK(memcmp(p1, p2, n * sizeof(float)) == 0 && memcmp(s1, s2, 3 * n * sizeof(float)) == 0, "made with 3 threads, stepped with 1: differs");
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    /* and Newton-Schulz alone on a larger matrix (more than one gemm block) */
    {
        int rows = 96, cols = 160, t;
        float *a = falloc((size_t)rows * cols), *b = falloc((size_t)rows * cols);
        double *G = dalloc((size_t)rows * cols);
        utg_backend *be = cpu_backend();
        size_t i;
        random_matrix(G, (size_t)rows * cols, 3);
        for (t = 1; t <= 2; t++) {
            float *dst = t == 1 ? a : b;
            for (i = 0; i < (size_t)rows * cols; i++) dst[i] = (float)G[i];
#ifdef _OPENMP
            omp_set_num_threads(t);
#endif
            ns_cpu(be, dst, rows, cols, 5, 0);
        }
        CHECK(memcmp(a, b, (size_t)rows * cols * sizeof(float)) == 0, "NS 96x160: 1 thread and 2 threads differ");
        utg_backend_destroy(be);
        free(a); free(b); free(G);
    }
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
    free(p1); free(p2); free(s1); free(s2);
}

/* ---------------------------------------------------------------- 7. utg_model_eval */

static void test_model_eval(void) {
    utg_config c = small_config();
    utg_model_desc d;
    utg_model *m = NULL;
    enum { T = 16, B = 2, LL = 40 };
    int32_t x[B * LL], y[B * LL];
    float tl[B * LL], tl2[B * LL];
    double lf = 0, le = 0, lf2 = 0, l8 = 0, l40 = 0, sum = 0, worst = 0;
    int i, b;
    trng rg;
    memset(&d, 0, sizeof d);
    d.config = c;
    if (utg_model_create(&d, &m) != UTG_OK) { CHECK(0, "create"); return; }
    random_params(m, 8); /* non-zero projections, so attention and the MLP matter */
    rg.s = 17;
    for (i = 0; i < B * LL; i++) { x[i] = (int32_t)(trng_next(&rg) % 64); y[i] = (int32_t)(trng_next(&rg) % 64); }
    /* the first B*T ids as B sequences of T (the same rows the T-eval sees) */
    CHECK(utg_model_forward(m, x, y, B, &lf) == UTG_OK, "forward: %s", utg_model_message(m));
    CHECK(utg_model_eval(m, x, y, B, T, tl, &le) == UTG_OK, "eval T: %s", utg_model_message(m));
    CHECK(le == lf, "eval at TRAIN_SEQ_LEN %.17g != forward %.17g (must be exact)", le, lf);
    for (i = 0; i < B * T; i++) sum += tl[i];
    /* the per-token losses average to the mean: same double sum, 1e-12 relative */
    CHECK(fabs(sum / (B * T) - le) <= 1e-12 * le && le > 1.0, "token losses average %.17g vs %.17g", sum / (B * T), le);
    /* eval consumed no gradient state: a backward after it is refused */
    CHECK(utg_model_backward(m, 1.0f) == UTG_ERR_INVALID, "backward after eval must be refused");
    /* shorter and longer than TRAIN_SEQ_LEN */
    CHECK(utg_model_eval(m, x, y, B, 8, NULL, &l8) == UTG_OK && isfinite(l8) && l8 > 0, "eval 8: %s", utg_model_message(m));
    CHECK(utg_model_eval(m, x, y, B, LL, tl, &l40) == UTG_OK && isfinite(l40) && l40 > 0, "eval 40: %s", utg_model_message(m));
    /* causality: position j of a sequence only sees its first j+1 tokens, so the first k losses of a
       length-40 window equal a length-k window's over the same prefix (1e-5 relative: different
       blockings of the attention sums) */
    {
        const int ks[3] = {5, 16, 23};
        int ki;
        for (ki = 0; ki < 3; ki++) {
            int k = ks[ki];
            int32_t xs[B * LL], ys[B * LL];
            double lk;
            for (b = 0; b < B; b++) {
                memcpy(xs + b * k, x + b * LL, k * sizeof(int32_t));
                memcpy(ys + b * k, y + b * LL, k * sizeof(int32_t));
            }
            CHECK(utg_model_eval(m, xs, ys, B, k, tl2, &lk) == UTG_OK, "eval %d", k);
            for (b = 0; b < B; b++)
                for (i = 0; i < k; i++) worst = fmax(worst, fabs(tl2[b * k + i] - tl[b * LL + i]) / fmax(1.0, fabs(tl[b * LL + i])));
        }
        CHECK(worst <= 1e-5, "prefix losses differ by %.3g relative", worst);
    }
    /* sequences are independent: sequence 1 alone gives the same losses as in the batch (1e-6) */
    {
        double l1;
        worst = 0;
        CHECK(utg_model_eval(m, x + LL, y + LL, 1, LL, tl2, &l1) == UTG_OK, "eval one");
        for (i = 0; i < LL; i++) worst = fmax(worst, fabs(tl2[i] - tl[LL + i]));
        CHECK(worst <= 1e-6, "batch row vs alone: %.3g", worst);
    }
    /* the training length still works after other lengths: same loss bit for bit */
    CHECK(utg_model_forward(m, x, y, B, &lf2) == UTG_OK && lf2 == lf, "forward after evals %.17g vs %.17g", lf2, lf);
    CHECK(utg_model_backward(m, 1.0f) == UTG_OK, "backward after forward");
    /* bad arguments */
    CHECK(utg_model_eval(m, x, y, 0, 8, NULL, &le) == UTG_ERR_INVALID && utg_model_eval(m, x, y, 1, 0, NULL, &le) == UTG_ERR_INVALID,
          "empty batch");
    CHECK(utg_model_eval(NULL, x, y, 1, 8, NULL, &le) == UTG_ERR_INVALID, "NULL model");
    {
        int32_t bad[8] = {0, 1, 2, 64, 4, 5, 6, 7};
        CHECK(utg_model_eval(m, bad, y, 1, 8, NULL, &le) == UTG_ERR_MISMATCH, "out-of-vocabulary id");
    }
    utg_model_destroy(m);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    RUN(test_reference_svd);
    RUN(test_ns_random_shapes);
    RUN(test_ns_bf16);
    RUN(test_ns_polar_express_tighter);
    RUN(test_ns_tall_is_transpose);
    RUN(test_adam_step_op);
    RUN(test_optimizer_ops);
    RUN(test_optim_step_baseline);
    RUN(test_optim_step_wd_eqr_clip);
    RUN(test_optim_step_untied_polar);
    RUN(test_optim_rejects_bad_input);
    RUN(test_lr_scale_iterations);
    RUN(test_lr_scale_wallclock);
    RUN(test_lr_scale_warmdown_frac);
    RUN(test_lr_scale_reserve_exceeds_cap);
    RUN(test_muon_momentum_schedule);
    RUN(test_ema);
    RUN(test_swa);
    RUN(test_ema_wins_and_off);
    RUN(test_state_round_trip);
    RUN(test_deterministic_across_threads);
    RUN(test_model_eval);
    RUN(test_optim_step_loss);
    return TEST_SUMMARY();
}
