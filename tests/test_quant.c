/* The host-side quantizers: fp16 conversion against a brute-force nearest-even reference; per-row
   intN error bounds for every bit width; the percentile clip against torch.quantile's formula;
   SDClip; the GPTQ-lite search never worse than any of its candidates; bad input refused. The
   backend's fake_quant_rows (QAT) against the host quantizer, and its counter-based noise; the
   single-process collectives. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "test.h"
#include <stdlib.h>

static uint64_t lcg = 7;
static double urand(void) { /* [-1, 1) */
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* the half nearest to x (ties to the even code), by search over all finite positive halves */
static uint16_t ref_f16(float x) {
    double a = fabs((double)x), best_d = 1e300;
    uint16_t best = 0, h;
    if (a >= 65520.0) return (uint16_t)((x < 0 ? 0x8000u : 0u) | 0x7c00u); /* rounds to infinity */
    for (h = 0; h <= 0x7bff; h++) {
        double d = fabs((double)utg_f16_to_f32(h) - a);
        if (d < best_d || (d == best_d && !(h & 1))) { best_d = d; best = h; }
    }
    return (uint16_t)((x < 0 ? 0x8000u : 0u) | best);
}

static void test_f16(void) {
    uint32_t h;
    int i, bad = 0;
    for (h = 0; h < 0x10000u; h++) { /* every half survives the trip through float */
        float f = utg_f16_to_f32((uint16_t)h);
        if (isnan(f)) { CHECK(isnan(utg_f16_to_f32(utg_f32_to_f16(f))), "NaN stays NaN (%04x)", h); continue; }
        if (utg_f32_to_f16(f) != (uint16_t)h && bad++ < 5) CHECK(0, "half %04x -> %g -> %04x", h, f, utg_f32_to_f16(f));
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    bad = 0;
    for (i = 0; i < 3000; i++) { /* random floats over the whole half range, subnormals included */
        float x = (float)(urand() * pow(2.0, (double)(i % 44) - 27.0));
        uint16_t got = utg_f32_to_f16(x), want = ref_f16(x);
        if (got != want && bad++ < 5) CHECK(0, "%.9g -> %04x, nearest-even is %04x", x, got, want);
    }
    CHECK(bad == 0, "%d of 3000 random floats rounded wrongly", bad);
    /* exact ties: 1 + 2^-11 lies between 1 and 1 + 2^-10 -> even (1); 1 + 3*2^-11 -> 1 + 2^-9 */
    CHECK(utg_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 && utg_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02, "ties to even");
    CHECK(utg_f32_to_f16(65519.0f) == 0x7bff && utg_f32_to_f16(65520.0f) == 0x7c00 && utg_f32_to_f16(1e30f) == 0x7c00, "overflow");
    CHECK(utg_f32_to_f16(0x1p-25f) == 0 && utg_f32_to_f16(0x1.8p-25f) == 1 && utg_f32_to_f16(-0x1p-24f) == 0x8001, "subnormals");
}

/* every bit width: |w - dequant| <= scale/2 (plus the fp16 rounding of the scale times |q|) for
   entries inside the clip; outside it the symbol saturates at +-r */
static void test_error_bounds(void) {
    enum { R = 7, C = 301 };
    static float W[R * C], D[R * C];
    static int8_t q[R * C];
    uint16_t sc[R];
    int bits, i, c;
    utg_msg msg;
    memset(&msg, 0, sizeof msg);
    for (i = 0; i < R * C; i++) W[i] = (float)(urand() * (1 + i / C)); /* rows of growing range */
    for (bits = 2; bits <= 8; bits++) {
        utg_quant_spec sp = {bits, UTG_CLIP_MAX, 0.0};
        int r = (1 << (bits - 1)) - 1, bad = 0;
        double worst = 0.0;
        CHECK(utg_quantize_rows(W, R, C, &sp, q, sc, NULL, &msg) == UTG_OK, "%s", msg.text);
        utg_dequantize_rows(q, sc, R, C, D);
        for (i = 0; i < R; i++) {
            float mx = 0.0f, s = mx, s16 = utg_f16_to_f32(sc[i]);
            for (c = 0; c < C; c++) if (fabsf(W[i * C + c]) > mx) mx = fabsf(W[i * C + c]);
            s = mx / (float)r > 1.0f / (float)r ? mx / (float)r : 1.0f / (float)r;
            for (c = 0; c < C; c++) {
                double e = fabs((double)W[i * C + c] - D[i * C + c]), bound = 0.5 * s * (1 + 1e-6) + r * fabs((double)s16 - s);
                if (q[i * C + c] < -r || q[i * C + c] > r) bad++;
                if (e > bound) bad++;
                if (e / s > worst) worst = e / s;
            }
        }
        CHECK(bad == 0, "int%d: %d entries out of range or beyond scale/2", bits, bad);
        printf("      int%d: worst |w - dequant| = %.3f scales (bound 0.5 + fp16 scale rounding)\n", bits, worst);
    }
}

/* torch.quantile(|w|, p) per row, linear interpolation, computed here in double */
static double quantile_ref(const float *w, int n, double p) {
    double *a = (double *)malloc(sizeof(double) * n), pos, v;
    int i, j, lo;
    for (i = 0; i < n; i++) a[i] = fabs(w[i]);
    for (i = 1; i < n; i++) for (j = i; j > 0 && a[j - 1] > a[j]; j--) { double t = a[j]; a[j] = a[j - 1]; a[j - 1] = t; }
    pos = p * (n - 1);
    lo = (int)floor(pos);
    v = a[lo] + (a[lo + 1 < n ? lo + 1 : lo] - a[lo]) * (pos - lo);
    free(a);
    return v;
}

static void test_percentile_and_sdclip(void) {
    enum { C = 1000 };
    static float w[C];
    static int8_t q[C];
    uint16_t sc = 0;
    utg_msg msg;
    int c, r = 127, sat = 0;
    double clip, mean = 0, ss = 0, chosen = 0;
    utg_quant_spec pct = {8, UTG_CLIP_PERCENTILE, 0.99}, sd = {6, UTG_CLIP_SDCLIP, 2.5};
    memset(&msg, 0, sizeof msg);
    for (c = 0; c < C; c++) w[c] = (float)(urand() * urand() * 3.0);
    w[17] = 40.0f; /* an outlier the clip must cut */
    CHECK(utg_quantize_rows(w, 1, C, &pct, q, &sc, &chosen, &msg) == UTG_OK && chosen == 0.99, "%s", msg.text);
    clip = quantile_ref(w, C, 0.99);
    CHECK(fabs(utg_f16_to_f32(sc) - utg_f16_to_f32(utg_f32_to_f16((float)(clip / r)))) == 0.0, "scale = fp16(quantile / 127): %g vs %g",
          utg_f16_to_f32(sc), clip / r);
    CHECK(q[17] == 127, "the outlier saturates (q %d)", q[17]);
    for (c = 0; c < C; c++) sat += abs(q[c]) == 127;
    CHECK(sat >= 9 && sat <= 12, "about 1%% of the row at the clip (%d)", sat);
    /* the baseline's percentile on a row: clip at the 99.99984th percentile */
    pct.param = 0.9999984;
    CHECK(utg_quantize_rows(w, 1, C, &pct, q, &sc, NULL, &msg) == UTG_OK, "%s", msg.text);
    CHECK(fabs(utg_f16_to_f32(sc) - (float)(quantile_ref(w, C, 0.9999984) / r)) < 1e-3 * utg_f16_to_f32(sc), "baseline percentile");
    /* SDClip: clip = k * std (unbiased) */
    for (c = 0; c < C; c++) mean += w[c];
    mean /= C;
    for (c = 0; c < C; c++) ss += (w[c] - mean) * (w[c] - mean);
    clip = 2.5 * sqrt(ss / (C - 1));
    CHECK(utg_quantize_rows(w, 1, C, &sd, q, &sc, NULL, &msg) == UTG_OK, "%s", msg.text);
    CHECK(fabs(utg_f16_to_f32(sc) - clip / 31) < 1e-3 * clip / 31, "SDClip scale %g, k*std/31 = %g", utg_f16_to_f32(sc), clip / 31);
    CHECK(q[17] == 31, "SDClip saturates the outlier at 31 (q %d)", q[17]);
    /* a narrow row (std 0.01): SDClip's scale k*std/31 = 1e-3 stays (the max clip would floor it at 1/31) */
    for (c = 0; c < C; c++) w[c] = (float)(0.01 * 1.7320508 * urand());
    for (mean = 0, ss = 0, c = 0; c < C; c++) mean += w[c];
    mean /= C;
    for (c = 0; c < C; c++) ss += (w[c] - mean) * (w[c] - mean);
    clip = 2.5 * sqrt(ss / (C - 1));
    CHECK(utg_quantize_rows(w, 1, C, &sd, q, &sc, NULL, &msg) == UTG_OK && fabs(utg_f16_to_f32(sc) - clip / 31) < 1e-3 * clip / 31,
          "narrow row: SDClip scale %g, k*std/31 = %g", utg_f16_to_f32(sc), clip / 31);
    sd.clip = UTG_CLIP_MAX;
    CHECK(utg_quantize_rows(w, 1, C, &sd, q, &sc, NULL, &msg) == UTG_OK && utg_f16_to_f32(sc) == utg_f16_to_f32(utg_f32_to_f16(1.0f / 31)),
          "narrow row: the max clip keeps train_gpt.py's floor 1/31 (%g)", utg_f16_to_f32(sc));
}

/* GPTQ-lite: the chosen percentile's error is the smallest of the five candidates' */
static void test_search(void) {
    enum { R = 16, C = 256 };
    static float W[R * C], D[R * C];
    static int8_t q[R * C];
    uint16_t sc[R];
    static const double cand[5] = {0.999, 0.9995, 0.9999, 0.99999, 1.0};
    utg_msg msg;
    int i, k;
    double chosen = -1, err_best, errs[5];
    utg_quant_spec s = {5, UTG_CLIP_SEARCH, 0.0};
    memset(&msg, 0, sizeof msg);
    for (i = 0; i < R * C; i++) W[i] = (float)(urand() * urand() * urand()); /* heavy-tailed */
    for (i = 0; i < R; i++) W[i * C + i] = 5.0f;
    for (k = 0; k < 5; k++) {
        utg_quant_spec p = {5, UTG_CLIP_PERCENTILE, cand[k]};
        errs[k] = 0;
        utg_quantize_rows(W, R, C, &p, q, sc, NULL, &msg);
        utg_dequantize_rows(q, sc, R, C, D);
        for (i = 0; i < R * C; i++) errs[k] += (double)(W[i] - D[i]) * (W[i] - D[i]);
    }
    CHECK(utg_quantize_rows(W, R, C, &s, q, sc, &chosen, &msg) == UTG_OK, "%s", msg.text);
    utg_dequantize_rows(q, sc, R, C, D);
    err_best = 0;
    for (i = 0; i < R * C; i++) err_best += (double)(W[i] - D[i]) * (W[i] - D[i]);
    for (k = 0; k < 5; k++) CHECK(err_best <= errs[k], "search error %g above candidate %g's %g", err_best, cand[k], errs[k]);
    CHECK(err_best < errs[4], "with outliers, clipping beats the row max (%g vs %g)", err_best, errs[4]);
    printf("      int5 GPTQ-lite picked %g: error %.4g vs row max %.4g\n", chosen, err_best, errs[4]);
}

/* H-weighted error sum_rows (w - dq) H (w - dq)^T: the output error of the linear on its inputs */
static double h_err(const float *W, const float *D, const double *H, int rows, int cols) {
    double e = 0.0;
    int i, a, b;
    for (i = 0; i < rows; i++)
        for (a = 0; a < cols; a++) {
            double da = (double)W[i * cols + a] - D[i * cols + a];
            for (b = 0; b < cols; b++) e += da * H[a * cols + b] * ((double)W[i * cols + b] - D[i * cols + b]);
        }
    return e;
}

/* GPTQ against plain rounding with the same scales, on correlated inputs: lower H-weighted error
   at every bit width; with H = I it is plain rounding exactly; dead columns come out zero. */
static void test_gptq(void) {
    enum { R = 24, C = 160, N = 600 }; /* 160 columns: two blocks of the 128-column sweep */
    static float W[R * C], D[R * C], X[N * C];
    static double H[C * C], I[C * C];
    static int8_t q[R * C], q2[R * C];
    uint16_t sc[R], sc2[R];
    utg_msg msg;
    int i, j, k, bits;
    memset(&msg, 0, sizeof msg);
    for (i = 0; i < R * C; i++) W[i] = (float)(urand() * 0.1);
    for (i = 0; i < N; i++) { /* inputs with strong correlations between neighbouring features */
        double base = urand();
        for (j = 0; j < C; j++) X[i * C + j] = (float)(0.8 * base + 0.6 * urand() + (j ? 0.5 * X[i * C + j - 1] : 0.0));
    }
    for (j = 0; j < C; j++)
        for (k = 0; k < C; k++) {
            double v = 0.0;
            for (i = 0; i < N; i++) v += (double)X[i * C + j] * X[i * C + k];
            H[j * C + k] = v / N;
            I[j * C + k] = j == k;
        }
    for (bits = 3; bits <= 6; bits++) {
        utg_quant_spec sp = {bits, UTG_CLIP_MAX, 0.0};
        double e_rtn, e_gptq;
        CHECK(utg_quantize_rows(W, R, C, &sp, q, sc, NULL, &msg) == UTG_OK, "%s", msg.text);
        utg_dequantize_rows(q, sc, R, C, D);
        e_rtn = h_err(W, D, H, R, C);
        CHECK(utg_gptq_rows(W, R, C, H, &sp, 0.0, q2, sc2, &msg) == UTG_OK, "%s", msg.text);
        CHECK(memcmp(sc, sc2, sizeof sc) == 0, "the same scales");
        utg_dequantize_rows(q2, sc2, R, C, D);
        e_gptq = h_err(W, D, H, R, C);
        CHECK(e_gptq < 0.8 * e_rtn, "int%d: GPTQ %.4g not clearly below rounding %.4g", bits, e_gptq, e_rtn);
        printf("      int%d: H-weighted error GPTQ %.4g vs rounding %.4g (%.0f%%)\n", bits, e_gptq, e_rtn, 100.0 * e_gptq / e_rtn);
        /* with H = I there is nothing to propagate: exactly rounding with the stored (fp16) scale */
        CHECK(utg_gptq_rows(W, R, C, I, &sp, 0.0, q2, sc2, &msg) == UTG_OK, "%s", msg.text);
        for (i = 0, k = 0; i < R * C; i++) {
            int r = (1 << (bits - 1)) - 1;
            double v = nearbyint((double)W[i] / utg_f16_to_f32(sc2[i / C]));
            v = v > r ? r : v < -r ? -r : v;
            k += q2[i] != (int8_t)v;
        }
        CHECK(k == 0, "int%d, H = I: %d symbols differ from rounding", bits, k);
    }
    { /* dead column 5: zero in the output; a bad H refused */
        utg_quant_spec sp = {4, UTG_CLIP_MAX, 0.0};
        static double Hd[C * C];
        memcpy(Hd, H, sizeof Hd);
        for (k = 0; k < C; k++) Hd[5 * C + k] = Hd[k * C + 5] = 0.0;
        CHECK(utg_gptq_rows(W, R, C, Hd, &sp, 0.0, q2, sc2, &msg) == UTG_OK, "%s", msg.text);
        for (i = 0, k = 0; i < R; i++) k += q2[i * C + 5] != 0;
        CHECK(k == 0, "dead column quantized to zero (%d nonzero)", k);
        Hd[7 * C + 7] = -1.0;
        CHECK(utg_gptq_rows(W, R, C, Hd, &sp, 0.0, q2, sc2, &msg) == UTG_ERR_INVALID && strstr(msg.text, "H["), "negative variance");
        sp.clip = UTG_CLIP_SEARCH;
        CHECK(utg_gptq_rows(W, R, C, H, &sp, 0.0, q2, sc2, &msg) == UTG_ERR_INVALID, "search refused");
    }
}

static void test_bad_input(void) {
    float w[4] = {1, 2, 3, 4};
    int8_t q[4];
    uint16_t sc[1];
    utg_msg msg;
    utg_quant_spec ok = {6, UTG_CLIP_MAX, 0}, b1 = {1, UTG_CLIP_MAX, 0}, b9 = {9, UTG_CLIP_MAX, 0};
    utg_quant_spec p0 = {6, UTG_CLIP_PERCENTILE, 0}, p2 = {6, UTG_CLIP_PERCENTILE, 1.5}, sd = {6, UTG_CLIP_SDCLIP, -1};
    memset(&msg, 0, sizeof msg);
    CHECK(utg_quantize_rows(w, 1, 4, &b1, q, sc, NULL, &msg) == UTG_ERR_INVALID && strstr(msg.text, "bits"), "1 bit");
    CHECK(utg_quantize_rows(w, 1, 4, &b9, q, sc, NULL, &msg) == UTG_ERR_INVALID && strstr(msg.text, "bits"), "9 bits");
    CHECK(utg_quantize_rows(w, 1, 4, &p0, q, sc, NULL, &msg) == UTG_ERR_INVALID && strstr(msg.text, "percentile"), "p 0");
    CHECK(utg_quantize_rows(w, 1, 4, &p2, q, sc, NULL, &msg) == UTG_ERR_INVALID, "p 1.5");
    CHECK(utg_quantize_rows(w, 1, 4, &sd, q, sc, NULL, &msg) == UTG_ERR_INVALID && strstr(msg.text, "SDClip"), "k < 0");
    CHECK(utg_quantize_rows(w, 0, 4, &ok, q, sc, NULL, &msg) == UTG_ERR_INVALID, "no rows");
    w[2] = NAN;
    CHECK(utg_quantize_rows(w, 1, 4, &ok, q, sc, NULL, &msg) == UTG_ERR_INVALID && strstr(msg.text, "not finite"), "NaN weight");
}

/* fake_quant_rows on a fresh CPU backend: in = host w [rows, cols], out = host result */
static void fake_quant(const float *w, float *out, int rows, int cols, int bits, int clip, double k, uint64_t key) {
    utg_backend *be = NULL;
    size_t bytes = sizeof(float) * (size_t)rows * (size_t)cols;
    float *dw, *dout;
    if (utg_backend_cpu_create(NULL, &be) != UTG_OK) return;
    dw = (float *)be->buf_alloc(be, bytes);
    dout = (float *)be->buf_alloc(be, bytes);
    be->upload(be, dw, w, bytes);
    be->fake_quant_rows(be, dout, dw, rows, cols, bits, clip, k, key);
    be->download(be, out, dout, bytes);
    be->buf_free(be, dw);
    be->buf_free(be, dout);
    utg_backend_destroy(be);
}

/* STE: the same bits as utg_quantize_rows then utg_dequantize_rows, for the row max and SDClip and
   rows wider than the op's stack scratch; a row holding a NaN passes through unchanged. */
static void test_fake_quant_ste(void) {
    enum { R = 5, C = 700 };
    static float w[R * C], got[R * C], want[R * C];
    static int8_t q[R * C];
    uint16_t sc[R];
    int bits, mode, i;
    for (i = 0; i < R * C; i++) w[i] = (float)(urand() * (1 + i % 7));
    for (mode = 0; mode < 2; mode++)
        for (bits = 2; bits <= 8; bits += 3) {
            utg_quant_spec spec = {bits, mode ? UTG_CLIP_SDCLIP : UTG_CLIP_MAX, mode ? 12.85 : 0.0};
            utg_quantize_rows(w, R, C, &spec, q, sc, NULL, NULL);
            utg_dequantize_rows(q, sc, R, C, want);
            fake_quant(w, got, R, C, bits, spec.clip, spec.param, 0);
            CHECK(!memcmp(got, want, sizeof got), "STE %s at %d bits matches the host quantizer",
                  mode ? "SDClip" : "row max", bits);
        }
    w[C + 3] = NAN;
    fake_quant(w, got, R, C, 4, UTG_CLIP_MAX, 0.0, 0);
    CHECK(isnan(got[C + 3]) && !memcmp(got + C + 4, w + C + 4, sizeof(float) * (C - 4)),
          "a row with a NaN passes through");
}

/* the noise's draw, written out from the table's contract */
static float noise_u(uint64_t key, uint64_t i) {
    uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* noisy: every element is fmaf(u - 0.5, rowmax / r, w) with u from the counter-based draw, so it
   does not depend on the thread count; another key draws other noise. */
static void test_fake_quant_noise(void) {
    enum { R = 4, C = 300 };
    static float w[R * C], got[R * C], other[R * C];
    uint64_t key = utg_qat_noise_key(1337, 7, 3);
    int i, r, bad = 0;
    for (i = 0; i < R * C; i++) w[i] = (float)urand();
    fake_quant(w, got, R, C, 6, UTG_CLIP_MAX, 0.0, key);
    for (r = 0; r < R; r++) {
        float mx = 0.0f;
        int c;
        for (c = 0; c < C; c++) mx = fabsf(w[r * C + c]) > mx ? fabsf(w[r * C + c]) : mx;
        for (c = 0; c < C; c++) {
            size_t at = (size_t)r * C + (size_t)c;
            if (got[at] != fmaf(noise_u(key, at) - 0.5f, mx / 31.0f, w[at])) bad++;
        }
    }
    CHECK(bad == 0, "%d elements differ from the contract's formula", bad);
    fake_quant(w, other, R, C, 6, UTG_CLIP_MAX, 0.0, utg_qat_noise_key(1337, 8, 3));
    CHECK(memcmp(got, other, sizeof got) != 0 && key != 0, "another step's key, other noise");
}

/* One process: rank 0 of 1; the sum and the broadcast leave the buffer alone, the gather copies. */
static void test_single_process_collectives(void) {
    utg_backend *be = NULL;
    double h[3] = {1.5, -2, 1e300}, back[3];
    float hf[4] = {1, 2, 3, 4}, backf[4];
    double *d;
    float *src, *dst;
    if (utg_backend_cpu_create(NULL, &be) != UTG_OK) { CHECK(0, "backend"); return; }
    CHECK(be->rank == 0 && be->world == 1, "rank %d of %d", be->rank, be->world);
    d = (double *)be->buf_alloc(be, sizeof h);
    src = (float *)be->buf_alloc(be, sizeof hf);
    dst = (float *)be->buf_alloc(be, sizeof hf);
    be->upload(be, d, h, sizeof h);
    be->all_reduce(be, d, UTG_DT_F64, 3);
    be->broadcast(be, d, sizeof h, 0);
    be->download(be, back, d, sizeof back);
    CHECK(!memcmp(h, back, sizeof h), "all_reduce and broadcast over one rank change nothing");
    be->upload(be, src, hf, sizeof hf);
    be->all_gather(be, dst, src, sizeof hf);
    be->download(be, backf, dst, sizeof backf);
    CHECK(!memcmp(hf, backf, sizeof hf), "all_gather over one rank copies");
    be->buf_free(be, d);
    be->buf_free(be, src);
    be->buf_free(be, dst);
    utg_backend_destroy(be);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    RUN(test_f16);
    RUN(test_error_bounds);
    RUN(test_percentile_and_sdclip);
    RUN(test_search);
    RUN(test_gptq);
    RUN(test_bad_input);
    RUN(test_fake_quant_ste);
    RUN(test_fake_quant_noise);
    RUN(test_single_process_collectives);
    return TEST_SUMMARY();
}
