/* Deterministic mutation test of the artifact parser (utg_artifact_parse). Seeds are built in
   process: a tiny model exported with the stored and the brotli codec, and an artifact written with
   utg_artifact_writer directly that holds every dtype (F32, F16, BF16, Q), every scale kind (TENSOR,
   ROW, GROUP) and every META type. Mutants: every truncation of the file, the payload cut at every
   length (every 5th inside DATA) in a consistent envelope, single-bit flips (the CRC must catch
   each), structural mutations of the envelope, the payload header, the section directory, META,
   TENS, the plane refs and the DATA planes, wrapped in a fresh envelope with the CRC recomputed so
   the deep checks are reached (some re-encoded with brotli too), and bit flips with the CRC
   recomputed (either outcome, never a crash). Each must-reject mutant must be rejected with a
   message that names the problem and leave nothing allocated; the few that keep the file valid by
   construction must be accepted. Also runs under make test-asan.
   test_artifact_mut --seeds DIR writes the seeds (artifacts and decoded payloads) for make fuzz. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "test.h"
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>

/* ---- bytes ---- */

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24); }

static int icontains(const char *hay, const char *needle) {
    size_t i, j, n = strlen(needle);
    for (i = 0; hay[i]; i++) {
        for (j = 0; j < n && hay[i + j] && tolower((unsigned char)hay[i + j]) == tolower((unsigned char)needle[j]); j++) {}
        if (j == n) return 1;
    }
    return n == 0;
}

/* ---- a counting allocator: a rejected artifact must leave nothing allocated ---- */

static long live_allocs;
static void *c_alloc(size_t n, void *user) {
    void *p = malloc(n ? n : 1);
    (void)user;
    if (p) live_allocs++;
    return p;
}
static void c_free(void *p, void *user) {
    (void)user;
    if (p) { live_allocs--; free(p); }
}
static const utg_allocator counting = {c_alloc, c_free, NULL};

/* ---- tallies ---- */

enum {
    K_TRUNC, K_PTRUNC, K_FLIP, K_ENV, K_HDR, K_DIR, K_META, K_REQ, K_TENS, K_PLANE, K_DATA, K_BROTLI, K_LEGIT, K_SAME, K_FLIPCRC,
    K_N
};
static const char *const kind_name[K_N] = {
    "truncations of the file",
    "truncations of the payload (CRC recomputed)",
    "single-bit flips (CRC not recomputed)",
    "envelope fields",
    "payload header",
    "section directory",
    "META syntax and values",
    "required keys and schedule",
    "TENS records",
    "plane refs (offsets, sizes, overlap)",
    "DATA symbols and scales",
    "structural mutants re-encoded with brotli",
    "valid by construction (must be accepted)",
    "brotli bit flips decoding to the same payload",
    "single-bit flips with CRC recomputed (either)",
};
static long n_rejected[K_N], n_accepted[K_N];
static utg_codec brotli_codec;

/* ---- seeds ---- */

typedef struct seed {
    const char *name;
    uint8_t *art; /* the artifact file */
    size_t n;
    uint8_t *pay; /* its decoded payload */
    size_t pn;
    int brotli;
} seed;
static seed seeds[4];
static int n_seeds;

static uint8_t *wrap(const uint8_t *pay, size_t n, const utg_codec *codec, size_t *out_n) {
    size_t cap = codec ? codec->max_packed(n, NULL) : n, packed = cap;
    uint8_t *e = (uint8_t *)malloc(UTG_ARTIFACT_ENVELOPE + cap + 1);
    if (!e) return NULL;
    memcpy(e, "UTGA", 4);
    e[4] = UTG_ARTIFACT_MAJOR;
    e[5] = (uint8_t)(codec ? codec->id : UTG_CODEC_STORED);
    e[6] = e[7] = 0;
    if (codec) {
        if (codec->compress(pay, n, e + UTG_ARTIFACT_ENVELOPE, &packed, NULL) != UTG_OK) { free(e); return NULL; }
    } else if (n) {
        memcpy(e + UTG_ARTIFACT_ENVELOPE, pay, n);
    }
    wr32(e + 8, (uint32_t)n);
    wr32(e + 12, (uint32_t)packed);
    wr32(e + 16, utg_crc32(0, pay, n));
    *out_n = UTG_ARTIFACT_ENVELOPE + packed;
    return e;
}

static void add_seed(const char *name, const void *bytes, size_t n, int brotli) {
    seed *s = &seeds[n_seeds++];
    utg_artifact *a = NULL;
    utg_msg msg;
    memset(s, 0, sizeof *s);
    s->name = name;
    s->art = (uint8_t *)malloc(n);
    memcpy(s->art, bytes, n);
    s->n = n;
    s->brotli = brotli;
    memset(&msg, 0, sizeof msg);
    if (utg_artifact_parse(s->art, n, NULL, NULL, &a, &msg) != UTG_OK) { printf("seed %s does not parse: %s\n", name, msg.text); exit(1); }
    s->pn = a->raw_size;
    utg_artifact_free(a);
    /* decoded here: a->payload is not the decoded payload (the parser unshuffles DATA in place) */
    s->pay = (uint8_t *)malloc(s->pn);
    if (brotli ? brotli_codec.decompress(s->art + UTG_ARTIFACT_ENVELOPE, n - UTG_ARTIFACT_ENVELOPE, s->pay, s->pn, NULL) != UTG_OK
               : (memcpy(s->pay, s->art + UTG_ARTIFACT_ENVELOPE, s->pn), 0)) { printf("seed %s does not decode\n", name); exit(1); }
    if (utg_crc32(0, s->pay, s->pn) != rd32(s->art + 16)) { printf("seed %s: CRC\n", name); exit(1); }
}

/* a tiny model (untied head, a looped layer, 6-bit matrices, 8-bit embeddings) */
static void make_model_seeds(void) {
    static const char *const knobs[][2] = {
        {"NUM_LAYERS", "2"}, {"MODEL_DIM", "16"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"VOCAB_SIZE", "32"},
        {"TRAIN_SEQ_LEN", "16"}, {"QUANT_PASSTHROUGH_NUMEL", "128"}, {"MATRIX_BITS", "6"}, {"TIE_EMBEDDINGS", "0"},
        {"NUM_LOOPS", "1"}, {"LOOP_START", "0"}, {"LOOP_END", "1"}};
    utg_model_desc d;
    utg_model *m = NULL;
    utg_msg msg;
    utg_codec stored = utg_codec_stored();
    void *bytes = NULL;
    size_t size = 0, i;
    memset(&d, 0, sizeof d);
    memset(&msg, 0, sizeof msg);
    for (i = 0; i < sizeof knobs / sizeof knobs[0]; i++)
        if (utg_config_set(&d.config, knobs[i][0], knobs[i][1], &msg) != UTG_OK) { printf("config: %s\n", msg.text); exit(1); }
    if (utg_model_create(&d, &m) != UTG_OK || utg_model_init_params(m, 1234) != UTG_OK) { printf("model: %s\n", utg_model_message(m)); exit(1); }
    if (utg_model_export(m, NULL, &stored, "tool=test_artifact_mut\n", NULL, &bytes, &size, NULL) != UTG_OK) { printf("export: %s\n", utg_model_message(m)); exit(1); }
    add_seed("model, stored", bytes, size, 0);
    utg_free(utg_model_allocator(m), bytes);
    if (utg_model_export(m, NULL, &brotli_codec, "tool=test_artifact_mut\n", NULL, &bytes, &size, NULL) != UTG_OK) { printf("export: %s\n", utg_model_message(m)); exit(1); }
    add_seed("model, brotli", bytes, size, 1);
    utg_free(utg_model_allocator(m), bytes);
    utg_model_destroy(m);
}

/* every dtype, every scale kind, every META type, an ancillary section */
static void make_writer_seeds(void) {
    utg_artifact_writer *w = NULL;
    utg_artifact_tensor t;
    uint32_t u32 = 1, blocks = 3, layers[4] = {0, 1, 2, 1}, x1 = 7, x2 = 8;
    int32_t i32 = -5;
    uint64_t u64 = 0x0123456789abcdefull;
    float f32 = 1.5f, farr[3] = {0.5f, -1.0f, 3.0f}, fv[5] = {1.0f, -2.0f, 0.25f, 3.5f, -0.125f}, tscale = 0.01f;
    double f64 = -2.25;
    uint16_t h[12], bf[12], rs[6], gs[4];
    int8_t q8[32], q4[30], q2[27], q6[16], q3[16];
    void *bytes = NULL;
    size_t size = 0;
    int i, ok = 1;
    for (i = 0; i < 12; i++) { h[i] = utg_f32_to_f16(0.1f * (float)(i - 6)); bf[i] = (uint16_t)(0x3f80u + (unsigned)i); }
    for (i = 0; i < 6; i++) rs[i] = utg_f32_to_f16(0.05f * (float)(i + 1));
    for (i = 0; i < 4; i++) gs[i] = utg_f32_to_f16(0.5f + (float)i);
    for (i = 0; i < 32; i++) q8[i] = (int8_t)((i * 37) % 255 - 127);
    for (i = 0; i < 30; i++) q4[i] = (int8_t)(i % 15 - 7);
    for (i = 0; i < 27; i++) q2[i] = (int8_t)(i % 3 - 1);
    for (i = 0; i < 16; i++) { q6[i] = (int8_t)(i * 4 - 31); q3[i] = (int8_t)(i % 7 - 3); }
    ok &= utg_artifact_writer_create(NULL, &w) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "utg.arch", UTG_KV_STR, "utg-test", 8) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "utg.quant.version", UTG_KV_U32, &u32, 1) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "utg.plan.physical_blocks", UTG_KV_U32, &blocks, 1) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "utg.plan.layers", UTG_KV_U32_ARRAY, layers, 4) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.i32", UTG_KV_I32, &i32, 1) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.u64", UTG_KV_U64, &u64, 1) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.f32", UTG_KV_F32, &f32, 1) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.f64", UTG_KV_F64, &f64, 1) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.str", UTG_KV_STR, "hello", 5) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.empty", UTG_KV_STR, "", 0) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.nul", UTG_KV_STR, "a\0b", 3) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.farr", UTG_KV_F32_ARRAY, farr, 3) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "t.uarr_empty", UTG_KV_U32_ARRAY, NULL, 0) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "x.aa", UTG_KV_U32, &x1, 1) == UTG_OK;
    ok &= utg_artifact_add_kv(w, "x.ab", UTG_KV_U32, &x2, 1) == UTG_OK;
#define ADD_T(nm, dt, qb, sk, gr, nd, d0, d1, d2, d3, vals, scl)                                                  \
    do {                                                                                                       \
        memset(&t, 0, sizeof t);                                                                               \
        strcpy(t.name, nm);                                                                                    \
        t.dtype = dt; t.qbits = qb; t.scale_kind = sk; t.group = gr; t.ndim = nd;                              \
        t.dims[0] = d0; t.dims[1] = d1; t.dims[2] = d2; t.dims[3] = d3;                                        \
        t.values = vals; t.scales = scl;                                                                       \
        if (utg_artifact_add_tensor(w, &t) != UTG_OK) { printf("add %s: %s\n", nm, utg_artifact_writer_message(w)); ok = 0; } \
    } while (0)
    ADD_T("f32.vec", UTG_DT_F32, 0, UTG_SCALE_NONE, 0, 1, 5, 0, 0, 0, fv, NULL);
    ADD_T("f16.mat", UTG_DT_F16, 0, UTG_SCALE_NONE, 0, 2, 3, 4, 0, 0, h, NULL);
    ADD_T("bf16.cube", UTG_DT_BF16, 0, UTG_SCALE_NONE, 0, 3, 2, 2, 3, 0, bf, NULL);
    ADD_T("q.tensor", UTG_DT_Q, 8, UTG_SCALE_TENSOR, 0, 2, 4, 8, 0, 0, q8, &tscale);
    ADD_T("q.row", UTG_DT_Q, 4, UTG_SCALE_ROW, 0, 2, 6, 5, 0, 0, q4, rs);
    ADD_T("q.group", UTG_DT_Q, 2, UTG_SCALE_GROUP, 7, 2, 3, 9, 0, 0, q2, gs);
    ADD_T("q.four", UTG_DT_Q, 6, UTG_SCALE_ROW, 0, 4, 2, 2, 2, 2, q6, rs);
    ADD_T("blocks.0.q3", UTG_DT_Q, 3, UTG_SCALE_GROUP, 8, 2, 4, 4, 0, 0, q3, gs);
#undef ADD_T
    ok &= utg_artifact_add_section(w, "PROV", "tool=test_artifact_mut\n", 23) == UTG_OK;
    ok &= utg_artifact_write(w, NULL, &bytes, &size, NULL) == UTG_OK;
    if (!ok) { printf("writer seed: %s\n", utg_artifact_writer_message(w)); exit(1); }
    add_seed("writer, stored", bytes, size, 0);
    utg_free(NULL, bytes);
    if (utg_artifact_write(w, &brotli_codec, &bytes, &size, NULL) != UTG_OK) { printf("writer seed: %s\n", utg_artifact_writer_message(w)); exit(1); }
    add_seed("writer, brotli", bytes, size, 1);
    utg_free(NULL, bytes);
    utg_artifact_writer_destroy(w);
}

/* ---- the payload's layout, read independently of the parser ---- */

typedef struct lsect { char tag[5]; uint32_t flags, off, size; } lsect;
typedef struct lkv { size_t at, key_at, type_at, val_at; uint32_t klen, count; int type; char key[UTG_ARTIFACT_MAX_KEY + 1]; } lkv;
typedef struct lten {
    size_t at, name_at, f_at, dims_at, refs_at;
    uint32_t rl, nl, dims[4], vo, vs, so, ss;
    int dtype, qbits, sk, ndim, group;
    char name[UTG_MAX_NAME + 1];
} lten;
typedef struct layout {
    uint32_t nsec, nkv, nt;
    lsect s[UTG_ARTIFACT_MAX_SECTIONS];
    int meta, tens, data;
    lkv kv[1024];
    lten t[256];
} layout;

static void read_layout(const uint8_t *pay, layout *L) {
    uint32_t i, k;
    size_t p;
    memset(L, 0, sizeof *L);
    L->nsec = rd16(pay + 2);
    L->meta = L->tens = L->data = -1;
    for (i = 0; i < L->nsec; i++) {
        const uint8_t *e = pay + 16 + 16 * i;
        memcpy(L->s[i].tag, e, 4);
        L->s[i].flags = rd32(e + 4);
        L->s[i].off = rd32(e + 8);
        L->s[i].size = rd32(e + 12);
        if (!strcmp(L->s[i].tag, "META")) L->meta = (int)i;
        if (!strcmp(L->s[i].tag, "TENS")) L->tens = (int)i;
        if (!strcmp(L->s[i].tag, "DATA")) L->data = (int)i;
    }
    p = L->s[L->meta].off;
    L->nkv = rd32(pay + p);
    p += 4;
    for (i = 0; i < L->nkv && i < 1024; i++) {
        lkv *kv = &L->kv[i];
        kv->at = p;
        kv->klen = rd16(pay + p);
        kv->key_at = p + 2;
        memcpy(kv->key, pay + p + 2, kv->klen);
        kv->type_at = p + 2 + kv->klen;
        kv->type = pay[kv->type_at];
        kv->val_at = kv->type_at + 1;
        p = kv->val_at;
        if (kv->type == UTG_KV_STR || kv->type == UTG_KV_U32_ARRAY || kv->type == UTG_KV_F32_ARRAY) {
            kv->count = rd32(pay + p);
            p += 4 + (size_t)kv->count * (kv->type == UTG_KV_STR ? 1 : 4);
        } else {
            kv->count = 1;
            p += (kv->type == UTG_KV_U64 || kv->type == UTG_KV_F64) ? 8 : 4;
        }
    }
    p = L->s[L->tens].off;
    L->nt = rd32(pay + p);
    p += 4;
    for (i = 0; i < L->nt && i < 256; i++) {
        lten *t = &L->t[i];
        t->at = p;
        t->rl = rd16(pay + p);
        t->nl = pay[p + 2];
        t->name_at = p + 3;
        memcpy(t->name, pay + p + 3, t->nl);
        t->f_at = p + 3 + t->nl;
        t->dtype = pay[t->f_at];
        t->qbits = pay[t->f_at + 1];
        t->sk = pay[t->f_at + 2];
        t->ndim = pay[t->f_at + 3];
        t->group = (int)rd16(pay + t->f_at + 4);
        t->dims_at = t->f_at + 8;
        for (k = 0; k < (uint32_t)t->ndim; k++) t->dims[k] = rd32(pay + t->dims_at + 4 * k);
        t->refs_at = t->dims_at + 4 * (size_t)t->ndim;
        t->vo = rd32(pay + t->refs_at);
        t->vs = rd32(pay + t->refs_at + 4);
        t->so = rd32(pay + t->refs_at + 8);
        t->ss = rd32(pay + t->refs_at + 12);
        p += t->rl;
    }
}
static size_t data_at(const layout *L, uint32_t off) { return (size_t)L->s[L->data].off + off; }
static int find_key(const layout *L, const char *key) {
    uint32_t i;
    for (i = 0; i < L->nkv; i++) if (!strcmp(L->kv[i].key, key)) return (int)i;
    return -1;
}

/* bytes n of src with del bytes at `at` replaced by ins_n bytes of ins (NULL: zeros) */
static uint8_t *splice(const uint8_t *src, size_t n, size_t at, size_t del, const void *ins, size_t ins_n, size_t *out_n) {
    uint8_t *d = (uint8_t *)calloc(n - del + ins_n + 1, 1);
    memcpy(d, src, at);
    if (ins) memcpy(d + at, ins, ins_n);
    memcpy(d + at + ins_n, src + at + del, n - at - del);
    *out_n = n - del + ins_n;
    return d;
}
/* the payload again with section k's bytes replaced; the sections after it move, 64-aligned, tiled */
static uint8_t *rebuild(const seed *s, const layout *L, int k, const uint8_t *bytes, size_t n, size_t *out_n) {
    size_t off[UTG_ARTIFACT_MAX_SECTIONS], size[UTG_ARTIFACT_MAX_SECTIONS], pos = 16 + 16 * (size_t)L->nsec;
    uint32_t i;
    uint8_t *d;
    for (i = 0; i < L->nsec; i++) {
        off[i] = (pos + 63) / 64 * 64;
        size[i] = (int)i == k ? n : L->s[i].size;
        pos = off[i] + size[i];
    }
    d = (uint8_t *)calloc(pos + 1, 1);
    memcpy(d, s->pay, 16 + 16 * (size_t)L->nsec);
    for (i = 0; i < L->nsec; i++) {
        wr32(d + 16 + 16 * (size_t)i + 8, (uint32_t)off[i]);
        wr32(d + 16 + 16 * (size_t)i + 12, (uint32_t)size[i]);
        memcpy(d + off[i], (int)i == k ? bytes : s->pay + L->s[i].off, size[i]);
    }
    *out_n = pos;
    return d;
}

/* ---- parse a mutant ---- */

/* use an accepted artifact the way a caller would */
static void exercise(const utg_artifact *a) {
    int i;
    uint32_t j;
    utg_config cfg;
    utg_msg msg;
    double sink = 0.0;
    for (i = 0; i < a->n_tensors; i++) {
        size_t n = a->tensors[i].numel;
        float *buf = (float *)malloc(n * sizeof(float));
        CHECK(buf && utg_artifact_tensor_floats(a, i, buf, n) == UTG_OK, "tensor %d floats", i);
        if (buf) sink += buf[0] + buf[n - 1];
        sink += utg_artifact_tensor_entropy(a, i);
        free(buf);
    }
    for (i = 0; i < a->n_kv; i++) {
        const utg_artifact_kv *kv = &a->kv[i];
        for (j = 0; j < kv->count && kv->type == UTG_KV_U32_ARRAY; j++) sink += utg_artifact_kv_u32(kv, j);
        for (j = 0; j < kv->count && kv->type == UTG_KV_F32_ARRAY; j++) sink += utg_artifact_kv_f32(kv, j);
        if (kv->type == UTG_KV_STR) sink += (double)strlen(kv->str);
    }
    memset(&msg, 0, sizeof msg);
    if (utg_artifact_config(a, &cfg, &msg) != UTG_OK) CHECK(msg.text[0], "utg_artifact_config failed without a message");
    (void)sink;
}

enum { MUST_REJECT, MUST_ACCEPT, EITHER };

/* parse; check the outcome against `want`; returns 1 when accepted */
static int judge(int kind, int want, const uint8_t *b, size_t n, const char *needle, const char *what) {
    utg_artifact *a = NULL;
    utg_msg msg;
    utg_result r;
    memset(&msg, 0, sizeof msg);
    live_allocs = 0;
    r = utg_artifact_parse(b, n, NULL, &counting, &a, &msg);
    if (r == UTG_OK) {
        n_accepted[kind]++;
        CHECK(a != NULL, "%s: UTG_OK without an artifact", what);
        CHECK(want != MUST_REJECT, "%s: accepted, must be rejected", what);
        if (a) exercise(a);
        utg_artifact_free(a);
        CHECK(live_allocs == 0, "%s: %ld allocations left after utg_artifact_free", what, live_allocs);
        return 1;
    }
    n_rejected[kind]++;
    CHECK(a == NULL, "%s: failure leaves an artifact", what);
    CHECK(live_allocs == 0, "%s: rejected with %ld allocations left", what, live_allocs);
    CHECK(msg.text[0] != 0, "%s: result %d without a message", what, (int)r);
    CHECK(want != MUST_ACCEPT, "%s: rejected (%s), must be accepted", what, msg.text);
    if (needle && want == MUST_REJECT) CHECK(icontains(msg.text, needle), "%s: message '%s' does not mention '%s'", what, msg.text, needle);
    return 0;
}

/* a mutated payload in a fresh stored envelope (CRC recomputed); every 8th small one (the writer
   seed) and every 128th large one also re-encoded with brotli (quality 11 is slow). Frees pay. */
static void judge_payload(int kind, int want, uint8_t *pay, size_t n, const char *needle, const char *fmt, ...) {
    static unsigned counter;
    char what[200];
    size_t en = 0;
    uint8_t *e;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    e = wrap(pay, n, NULL, &en);
    judge(kind, want, e, en, needle, what);
    free(e);
    if (want == MUST_REJECT && counter++ % (n < 4096 ? 8 : 128) == 0) {
        e = wrap(pay, n, &brotli_codec, &en);
        CHECK(e != NULL, "brotli");
        if (e) judge(K_BROTLI, want, e, en, needle, what);
        free(e);
    }
    free(pay);
}
/* a mutated file as is. Frees art. */
static void judge_file(int kind, int want, uint8_t *art, size_t n, const char *needle, const char *fmt, ...) {
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    judge(kind, want, art, n, needle, what);
    free(art);
}
static uint8_t *copy_of(const uint8_t *p, size_t n, size_t extra) {
    uint8_t *c = (uint8_t *)calloc(n + extra + 1, 1);
    memcpy(c, p, n);
    return c;
}
#define PAY(s) copy_of((s)->pay, (s)->pn, 0)
#define ART(s) copy_of((s)->art, (s)->n, 0)

static const seed *stored_seeds[2];
static layout *layouts[2];

/* ---- the tests ---- */

static void test_seeds(void) {
    int i;
    for (i = 0; i < n_seeds; i++) CHECK(judge(K_LEGIT, MUST_ACCEPT, seeds[i].art, seeds[i].n, NULL, seeds[i].name) == 1, "%s", seeds[i].name);
    /* the model seed carries a usable config */
    {
        utg_artifact *a = NULL;
        utg_config cfg;
        utg_msg msg;
        memset(&msg, 0, sizeof msg);
        CHECK(utg_artifact_parse(seeds[0].art, seeds[0].n, NULL, NULL, &a, &msg) == UTG_OK, "%s", msg.text);
        CHECK(a && utg_artifact_config(a, &cfg, &msg) == UTG_OK && cfg.model_dim == 16, "%s", msg.text);
        utg_artifact_free(a);
    }
    /* the writer seed has what the mutations below rely on */
    {
        const layout *L = layouts[1];
        int kinds = 0;
        uint32_t k;
        for (k = 0; k < L->nt; k++) kinds |= 1 << (L->t[k].dtype * 4 + L->t[k].sk);
        CHECK((kinds & 0xe000) == 0xe000 && (kinds & 0x111) == 0x111, "dtype/scale kinds 0x%x", kinds);
        CHECK(L->nsec == 4 && L->nkv == 15 && L->nt == 8, "%u sections, %u keys, %u tensors", L->nsec, L->nkv, L->nt);
    }
}

static void test_truncations(void) {
    int i;
    size_t n;
    for (i = 0; i < n_seeds; i++) {
        const seed *s = &seeds[i];
        for (n = 0; n < s->n; n++) {
            char what[64];
            snprintf(what, sizeof what, "%s cut to %zu bytes", s->name, n);
            judge(K_TRUNC, MUST_REJECT, s->art, n, n < UTG_ARTIFACT_ENVELOPE ? "envelope" : "packed", what);
        }
        /* padded by a byte */
        {
            uint8_t *a = copy_of(s->art, s->n, 1);
            judge_file(K_TRUNC, MUST_REJECT, a, s->n + 1, "packed", "%s plus a byte", s->name);
        }
    }
    /* the payload cut short, the envelope made consistent again: the sections no longer fit */
    for (i = 0; i < 2; i++) {
        const seed *s = stored_seeds[i];
        for (n = 0; n < s->pn; n += n < layouts[i]->s[layouts[i]->data].off ? 1 : 5) {
            char what[64];
            size_t en = 0;
            uint8_t *e = wrap(s->pay, n, NULL, &en);
            snprintf(what, sizeof what, "%s payload cut to %zu bytes", s->name, n);
            judge(K_PTRUNC, MUST_REJECT, e, en, NULL, what);
            free(e);
        }
    }
}

static void test_bit_flips(void) {
    int i, bit;
    size_t pos;
    for (i = 0; i < n_seeds; i++) {
        const seed *s = &seeds[i];
        uint8_t *a = copy_of(s->art, s->n, 0);
        for (pos = 0; pos < s->n; pos += pos < 52 ? 1 : s->brotli ? 3 : 2) {
            /* every bit of the envelope and the first 32 packed bytes, then one bit every 2 bytes (3 for brotli) */
            int b0 = pos < 52 ? 0 : (int)(pos % 8), b1 = pos < 52 ? 8 : b0 + 1;
            for (bit = b0; bit < b1; bit++) {
                char what[80];
                snprintf(what, sizeof what, "%s, bit %d of byte %zu flipped", s->name, bit, pos);
                a[pos] ^= (uint8_t)(1u << bit);
                if (pos == 7) judge(K_LEGIT, MUST_ACCEPT, a, s->n, NULL, what); /* the may-ignore flag byte */
                else if (!s->brotli || pos < UTG_ARTIFACT_ENVELOPE) judge(K_FLIP, MUST_REJECT, a, s->n, pos >= UTG_ARTIFACT_ENVELOPE ? "CRC" : NULL, what);
                else if (judge(K_FLIP, EITHER, a, s->n, NULL, what)) {
                    /* some brotli bits do not change the output (e.g. the window size): then the
                       payload, and so the CRC, is the same and the artifact is rightly accepted */
                    uint8_t *d = (uint8_t *)malloc(s->pn);
                    n_accepted[K_FLIP]--;
                    n_accepted[K_SAME]++;
                    CHECK(brotli_codec.decompress(a + UTG_ARTIFACT_ENVELOPE, s->n - UTG_ARTIFACT_ENVELOPE, d, s->pn, NULL) == UTG_OK &&
                              !memcmp(d, s->pay, s->pn), "%s: accepted with a different payload", what);
                    free(d);
                }
                a[pos] ^= (uint8_t)(1u << bit);
            }
        }
        free(a);
    }
}

static void test_envelope(void) {
    int i, bit;
    for (i = 0; i < n_seeds; i++) {
        const seed *s = &seeds[i];
        uint8_t *a;
        uint32_t raw = (uint32_t)s->pn, packed = (uint32_t)(s->n - UTG_ARTIFACT_ENVELOPE);
        static const uint32_t raw_bad[] = {0, 15, 0xffffffffu, UTG_MAX_ARTIFACT_RAW + 1u};
        static const char *const raw_msg[] = {"shorter than its header", "shorter than its header", "cap", "cap"};
        static const uint32_t packed_bad[] = {0, 1, 0x7fffffffu, 0xffffffffu, 0xffffffecu};
        size_t k;
        for (k = 0; k < 4; k++) { a = ART(s); a[k] ^= 0x20; judge_file(K_ENV, MUST_REJECT, a, s->n, "UTGA", "%s, magic byte %zu", s->name, k); }
        { a = ART(s); a[4] = 0; judge_file(K_ENV, MUST_REJECT, a, s->n, "version", "%s, major 0", s->name); }
        { a = ART(s); a[4] = 2; judge_file(K_ENV, MUST_REJECT, a, s->n, "version", "%s, major 2", s->name); }
        { a = ART(s); a[4] = 255; judge_file(K_ENV, MUST_REJECT, a, s->n, "version", "%s, major 255", s->name); }
        { a = ART(s); a[5] = 2; judge_file(K_ENV, MUST_REJECT, a, s->n, "codec", "%s, codec 2", s->name); }
        { a = ART(s); a[5] = 255; judge_file(K_ENV, MUST_REJECT, a, s->n, "codec", "%s, codec 255", s->name); }
        /* the codec byte swapped: stored bytes are not a brotli stream and vice versa */
        { a = ART(s); a[5] = s->brotli ? 0 : 1; judge_file(K_ENV, MUST_REJECT, a, s->n, "decode", "%s, other codec", s->name); }
        for (bit = 0; bit < 8; bit++) { a = ART(s); a[6] |= (uint8_t)(1u << bit); judge_file(K_ENV, MUST_REJECT, a, s->n, "must-understand", "%s, must-understand flag bit %d", s->name, bit); }
        for (bit = 0; bit < 8; bit++) { a = ART(s); a[7] |= (uint8_t)(1u << bit); judge_file(K_LEGIT, MUST_ACCEPT, a, s->n, NULL, "%s, may-ignore flag bit %d", s->name, bit); }
        for (k = 0; k < 4; k++) { a = ART(s); wr32(a + 8, raw_bad[k]); judge_file(K_ENV, MUST_REJECT, a, s->n, raw_msg[k], "%s, raw_size %u", s->name, raw_bad[k]); }
        { a = ART(s); wr32(a + 8, raw + 1); judge_file(K_ENV, MUST_REJECT, a, s->n, "decode", "%s, raw_size + 1", s->name); }
        { a = ART(s); wr32(a + 8, raw - 1); judge_file(K_ENV, MUST_REJECT, a, s->n, "decode", "%s, raw_size - 1", s->name); }
        { a = ART(s); wr32(a + 8, raw + 64); judge_file(K_ENV, MUST_REJECT, a, s->n, "decode", "%s, raw_size + 64", s->name); }
        /* at the cap itself: the parser may allocate it, then the decode fails */
        if (s->brotli) { a = ART(s); wr32(a + 8, UTG_MAX_ARTIFACT_RAW); judge_file(K_ENV, MUST_REJECT, a, s->n, "decode", "%s, raw_size at the cap", s->name); }
        for (k = 0; k < 5; k++) { a = ART(s); wr32(a + 12, packed_bad[k]); judge_file(K_ENV, MUST_REJECT, a, s->n, "packed", "%s, packed_size %u", s->name, packed_bad[k]); }
        { a = ART(s); wr32(a + 12, packed + 1); judge_file(K_ENV, MUST_REJECT, a, s->n, "packed", "%s, packed_size + 1", s->name); }
        { a = ART(s); wr32(a + 12, packed - 1); judge_file(K_ENV, MUST_REJECT, a, s->n, "packed", "%s, packed_size - 1", s->name); }
        /* bytes appended and counted in packed_size: the codec must not ignore trailing bytes (brotli's
           one-shot decoder would: the binding decodes as a stream and requires all input consumed) */
        for (k = 1; k <= 64; k *= 4) {
            a = copy_of(s->art, s->n, k);
            memset(a + s->n, 0xa5, k);
            wr32(a + 12, packed + (uint32_t)k);
            judge_file(K_ENV, MUST_REJECT, a, s->n + k, "decode", "%s, %zu packed bytes appended", s->name, k);
        }
        for (k = 0; k < 4; k++) { a = ART(s); a[16 + k] ^= 0x01; judge_file(K_ENV, MUST_REJECT, a, s->n, "CRC", "%s, CRC byte %zu", s->name, k); }
    }
}

static void test_header_and_directory(void) {
    int i;
    for (i = 0; i < 2; i++) {
        const seed *s = stored_seeds[i];
        const layout *L = layouts[i];
        uint8_t *p;
        uint32_t k, j;
        static const uint32_t nsec_bad[] = {0, 1, 2, 33, 0xffff};
        /* header */
        { p = PAY(s); wr16(p, 1); judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, minor version 1", s->name); }
        { p = PAY(s); wr16(p, 0xffff); judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, minor version 65535", s->name); }
        for (k = 0; k < 5; k++) { p = PAY(s); wr16(p + 2, nsec_bad[k]); judge_payload(K_HDR, MUST_REJECT, p, s->pn, "sections", "%s, section count %u", s->name, nsec_bad[k]); }
        { p = PAY(s); wr16(p + 2, L->nsec - 1); judge_payload(K_HDR, MUST_REJECT, p, s->pn, NULL, "%s, section count - 1", s->name); }
        { p = PAY(s); wr16(p + 2, L->nsec + 1); judge_payload(K_HDR, MUST_REJECT, p, s->pn, NULL, "%s, section count + 1", s->name); }
        { p = PAY(s); wr16(p + 4, 32); judge_payload(K_HDR, MUST_REJECT, p, s->pn, "alignment", "%s, alignment 32", s->name); }
        { p = PAY(s); wr16(p + 4, 0); judge_payload(K_HDR, MUST_REJECT, p, s->pn, "alignment", "%s, alignment 0", s->name); }
        for (k = 6; k < 16; k++) { p = PAY(s); p[k] = 1; judge_payload(K_HDR, MUST_REJECT, p, s->pn, "reserved", "%s, header byte %u", s->name, k); }
        /* trailing bytes after the last section */
        { p = copy_of(s->pay, s->pn, 1); judge_payload(K_HDR, MUST_REJECT, p, s->pn + 1, "after its last section", "%s, a byte appended", s->name); }
        { p = copy_of(s->pay, s->pn, 64); judge_payload(K_HDR, MUST_REJECT, p, s->pn + 64, "after its last section", "%s, 64 bytes appended", s->name); }
        /* directory entries */
        for (k = 0; k < L->nsec; k++) {
            size_t e = 16 + 16 * (size_t)k;
            const lsect *S = &L->s[k];
            int core = (int)k == L->meta || (int)k == L->tens || (int)k == L->data, last = k + 1 == L->nsec;
            uint32_t next = last ? (uint32_t)s->pn : L->s[k + 1].off;
            static const int64_t doff[] = {1, -1, 64, -64, 4096};
            for (j = 0; j < 5; j++) {
                p = PAY(s);
                wr32(p + e + 8, (uint32_t)((int64_t)S->off + doff[j]));
                judge_payload(K_DIR, MUST_REJECT, p, s->pn, "tile", "%s, section %s offset %+d", s->name, S->tag, (int)doff[j]);
            }
            { p = PAY(s); wr32(p + e + 8, 0); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "tile", "%s, section %s at offset 0", s->name, S->tag); }
            { p = PAY(s); wr32(p + e + 8, 0xffffffc0u); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "tile", "%s, section %s at offset 2^32-64", s->name, S->tag); }
            { p = PAY(s); wr32(p + e + 12, 0xffffffffu); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "runs past", "%s, section %s of size 2^32-1", s->name, S->tag); }
            { p = PAY(s); wr32(p + e + 12, (uint32_t)s->pn); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "runs past", "%s, section %s of the payload's size", s->name, S->tag); }
            /* growing into the next section: overlap */
            if (!last) { p = PAY(s); wr32(p + e + 12, next - S->off + 64); judge_payload(K_DIR, MUST_REJECT, p, s->pn, NULL, "%s, section %s overlaps the next", s->name, S->tag); }
            /* one byte more or less: DATA and ancillary sections may grow into zero padding */
            {
                int fits = S->off + S->size + 1 <= next && ((int)k == L->data || !core);
                p = PAY(s); wr32(p + e + 12, S->size + 1);
                judge_payload(fits ? K_LEGIT : K_DIR, fits ? MUST_ACCEPT : MUST_REJECT, p, s->pn, NULL, "%s, section %s size + 1", s->name, S->tag);
            }
            if (S->size) { p = PAY(s); wr32(p + e + 12, S->size - 1); judge_payload(K_DIR, MUST_REJECT, p, s->pn, NULL, "%s, section %s size - 1", s->name, S->tag); }
            { p = PAY(s); p[e] = (uint8_t)tolower(p[e]); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "malformed tag", "%s, section %s lower case", s->name, S->tag); }
            { p = PAY(s); p[e + 3] = 0; judge_payload(K_DIR, MUST_REJECT, p, s->pn, "malformed tag", "%s, section %s tag with NUL", s->name, S->tag); }
            { p = PAY(s); p[e + 4] |= 2; judge_payload(K_DIR, MUST_REJECT, p, s->pn, "unknown flags", "%s, section %s flag bit 1", s->name, S->tag); }
            { p = PAY(s); p[e + 7] |= 0x80; judge_payload(K_DIR, MUST_REJECT, p, s->pn, "unknown flags", "%s, section %s flag bit 31", s->name, S->tag); }
            if (core) {
                p = PAY(s); wr32(p + e + 4, 0); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "must be critical", "%s, section %s not critical", s->name, S->tag);
                p = PAY(s); memcpy(p + e, "ZZZZ", 4); wr32(p + e + 4, 0); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "lacks", "%s, section %s renamed, ancillary", s->name, S->tag);
                p = PAY(s); memcpy(p + e, "ZZZZ", 4); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "critical section ZZZZ", "%s, section %s renamed, critical", s->name, S->tag);
            } else {
                p = PAY(s); memcpy(p + e, "ZZZZ", 4); judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, unknown ancillary section", s->name);
                p = PAY(s); wr32(p + e + 4, 1); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "critical section", "%s, unknown critical section", s->name);
                p = PAY(s); memcpy(p + e, "META", 4); wr32(p + e + 4, 1); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "twice", "%s, a second META", s->name);
                p = PAY(s); memcpy(p + e, "DATA", 4); wr32(p + e + 4, 1); judge_payload(K_DIR, MUST_REJECT, p, s->pn, "twice", "%s, a second DATA", s->name);
            }
            if (!last) {
                /* two entries swapped */
                p = PAY(s);
                memcpy(p + e, s->pay + e + 16, 16);
                memcpy(p + e + 16, s->pay + e, 16);
                judge_payload(K_DIR, MUST_REJECT, p, s->pn, "tile", "%s, sections %s and %s swapped", s->name, S->tag, L->s[k + 1].tag);
            }
            /* zero padding before the section made non-zero */
            {
                uint32_t prev_end = k ? L->s[k - 1].off + L->s[k - 1].size : 16 + 16 * L->nsec;
                if (prev_end < S->off) {
                    p = PAY(s); p[prev_end] = 0x01; judge_payload(K_DIR, MUST_REJECT, p, s->pn, "padding", "%s, padding before %s", s->name, S->tag);
                    p = PAY(s); p[S->off - 1] = 0x80; judge_payload(K_DIR, MUST_REJECT, p, s->pn, "padding", "%s, last padding byte before %s", s->name, S->tag);
                }
            }
        }
    }
}

/* a byte in [a-z0-9_.] different from c */
static uint8_t other_key_char(uint8_t c) { return c == 'q' ? 'z' : 'q'; }

static void test_meta(void) {
    int i;
    for (i = 0; i < 2; i++) {
        const seed *s = stored_seeds[i];
        const layout *L = layouts[i];
        size_t m0 = L->s[L->meta].off;
        uint8_t *p;
        uint32_t k, j;
        static const uint8_t bad_chars[] = {'A', 'Z', '-', ' ', '/', 0x80, 0xff, 0, '\n'};
        /* the key count */
        { p = PAY(s); wr32(p + m0, 0xffffffffu); judge_payload(K_META, MUST_REJECT, p, s->pn, "keys", "%s, META count 2^32-1", s->name); }
        { p = PAY(s); wr32(p + m0, UTG_ARTIFACT_MAX_KV + 1); judge_payload(K_META, MUST_REJECT, p, s->pn, "keys", "%s, META count over the cap", s->name); }
        { p = PAY(s); wr32(p + m0, UTG_ARTIFACT_MAX_KV); judge_payload(K_META, MUST_REJECT, p, s->pn, "runs past", "%s, META count at the cap", s->name); }
        { p = PAY(s); wr32(p + m0, L->nkv + 1); judge_payload(K_META, MUST_REJECT, p, s->pn, "runs past", "%s, META count + 1", s->name); }
        { p = PAY(s); wr32(p + m0, L->nkv - 1); judge_payload(K_META, MUST_REJECT, p, s->pn, "stray", "%s, META count - 1", s->name); }
        { p = PAY(s); wr32(p + m0, 0); judge_payload(K_META, MUST_REJECT, p, s->pn, "stray", "%s, META count 0", s->name); }
        for (k = 0; k < L->nkv; k++) {
            const lkv *kv = &L->kv[k];
            /* many keys (the model's config): a sample, every key type included */
            if (L->nkv > 40 && k % 4 && k + 1 != L->nkv && kv->type != UTG_KV_STR && kv->type != UTG_KV_U32_ARRAY && kv->type != UTG_KV_F32_ARRAY && kv->type != UTG_KV_F32)
                continue;
            /* key length */
            { p = PAY(s); wr16(p + kv->at, 0); judge_payload(K_META, MUST_REJECT, p, s->pn, "lower_snake", "%s, key %s length 0", s->name, kv->key); }
            { p = PAY(s); wr16(p + kv->at, 0xffff); judge_payload(K_META, MUST_REJECT, p, s->pn, "runs past", "%s, key %s length 65535", s->name, kv->key); }
            { p = PAY(s); wr16(p + kv->at, UTG_ARTIFACT_MAX_KEY + 1); judge_payload(K_META, MUST_REJECT, p, s->pn, NULL, "%s, key %s length 65", s->name, kv->key); }
            { p = PAY(s); wr16(p + kv->at, kv->klen + 1); judge_payload(K_META, MUST_REJECT, p, s->pn, NULL, "%s, key %s length + 1", s->name, kv->key); }
            { p = PAY(s); wr16(p + kv->at, kv->klen - 1); judge_payload(K_META, MUST_REJECT, p, s->pn, NULL, "%s, key %s length - 1", s->name, kv->key); }
            /* key characters */
            for (j = 0; j < sizeof bad_chars; j++) {
                size_t at = kv->key_at + (j % 2 ? kv->klen - 1 : 0);
                p = PAY(s); p[at] = bad_chars[j];
                judge_payload(K_META, MUST_REJECT, p, s->pn, "lower_snake", "%s, key %s char 0x%02x", s->name, kv->key, bad_chars[j]);
            }
            { p = PAY(s); p[kv->key_at] = '.'; judge_payload(K_META, MUST_REJECT, p, s->pn, "lower_snake", "%s, key %s leading dot", s->name, kv->key); }
            { p = PAY(s); p[kv->key_at + kv->klen - 1] = '.'; judge_payload(K_META, MUST_REJECT, p, s->pn, "lower_snake", "%s, key %s trailing dot", s->name, kv->key); }
            {
                const char *dot = strchr(kv->key, '.');
                if (dot && (size_t)(dot - kv->key) + 1 < kv->klen) {
                    p = PAY(s); p[kv->key_at + (size_t)(dot - kv->key) + 1] = '.';
                    judge_payload(K_META, MUST_REJECT, p, s->pn, "lower_snake", "%s, key %s with '..'", s->name, kv->key);
                }
            }
            /* the type */
            { p = PAY(s); p[kv->type_at] = 8; judge_payload(K_META, MUST_REJECT, p, s->pn, "unknown type", "%s, key %s type 8", s->name, kv->key); }
            { p = PAY(s); p[kv->type_at] = 0xff; judge_payload(K_META, MUST_REJECT, p, s->pn, "unknown type", "%s, key %s type 255", s->name, kv->key); }
            /* counts and values */
            if (kv->type == UTG_KV_STR || kv->type == UTG_KV_U32_ARRAY || kv->type == UTG_KV_F32_ARRAY) {
                int lastkv = k + 1 == L->nkv;
                { p = PAY(s); wr32(p + kv->val_at, 0xffffffffu); judge_payload(K_META, MUST_REJECT, p, s->pn, "elements", "%s, key %s count 2^32-1", s->name, kv->key); }
                { p = PAY(s); wr32(p + kv->val_at, 0x40000000u); judge_payload(K_META, MUST_REJECT, p, s->pn, "elements", "%s, key %s count 2^30 (x4 wraps 32 bits)", s->name, kv->key); }
                { p = PAY(s); wr32(p + kv->val_at, UTG_ARTIFACT_MAX_ARRAY + 1); judge_payload(K_META, MUST_REJECT, p, s->pn, "elements", "%s, key %s count over the cap", s->name, kv->key); }
                { p = PAY(s); wr32(p + kv->val_at, kv->count + 1); judge_payload(K_META, MUST_REJECT, p, s->pn, lastkv ? "elements" : NULL, "%s, key %s count + 1", s->name, kv->key); }
                if (kv->count) { p = PAY(s); wr32(p + kv->val_at, kv->count - 1); judge_payload(K_META, MUST_REJECT, p, s->pn, lastkv ? "stray" : NULL, "%s, key %s count - 1", s->name, kv->key); }
                if (kv->type == UTG_KV_F32_ARRAY && kv->count) {
                    static const uint32_t nf[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u};
                    for (j = 0; j < 4; j++) {
                        p = PAY(s); wr32(p + kv->val_at + 4 + 4 * (size_t)(kv->count - 1), nf[j]);
                        judge_payload(K_META, MUST_REJECT, p, s->pn, "not finite", "%s, key %s last element 0x%08x", s->name, kv->key, nf[j]);
                    }
                }
            } else if (kv->type == UTG_KV_F32) {
                static const uint32_t nf[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffffffffu};
                for (j = 0; j < 4; j++) {
                    p = PAY(s); wr32(p + kv->val_at, nf[j]);
                    judge_payload(K_META, MUST_REJECT, p, s->pn, "not finite", "%s, key %s = 0x%08x", s->name, kv->key, nf[j]);
                }
            } else if (kv->type == UTG_KV_F64) {
                p = PAY(s); wr32(p + kv->val_at, 0); wr32(p + kv->val_at + 4, 0x7ff00000u);
                judge_payload(K_META, MUST_REJECT, p, s->pn, "not finite", "%s, key %s = +Inf", s->name, kv->key);
                p = PAY(s); wr32(p + kv->val_at, 1); wr32(p + kv->val_at + 4, 0xfff00000u);
                judge_payload(K_META, MUST_REJECT, p, s->pn, "not finite", "%s, key %s = NaN", s->name, kv->key);
            }
        }
        /* duplicate keys: the first pair of equal length */
        {
            uint32_t a2, b2;
            int done = 0;
            for (a2 = 0; a2 < L->nkv && !done; a2++)
                for (b2 = a2 + 1; b2 < L->nkv && !done; b2++)
                    if (L->kv[a2].klen == L->kv[b2].klen) {
                        p = PAY(s); memcpy(p + L->kv[b2].key_at, L->kv[a2].key, L->kv[a2].klen);
                        judge_payload(K_META, MUST_REJECT, p, s->pn, "twice", "%s, key %s renamed %s", s->name, L->kv[b2].key, L->kv[a2].key);
                        done = 1;
                    }
            CHECK(done, "%s: no two keys of equal length", s->name);
        }
        /* a value that is not checked: changing it keeps the file valid */
        {
            int u = find_key(L, "t.u64") >= 0 ? find_key(L, "t.u64") : find_key(L, "utg.quant.version");
            p = PAY(s); p[L->kv[u].val_at] ^= 0x40;
            judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, value of %s changed", s->name, L->kv[u].key);
        }
        /* required keys: renamed, retyped; the schedule */
        {
            static const char *const req[] = {"utg.arch", "utg.quant.version", "utg.plan.physical_blocks", "utg.plan.layers"};
            int kb = find_key(L, "utg.plan.physical_blocks"), kl = find_key(L, "utg.plan.layers");
            uint32_t blocks = rd32(s->pay + L->kv[kb].val_at);
            for (j = 0; j < 4; j++) {
                int r = find_key(L, req[j]);
                const lkv *kv = &L->kv[r];
                CHECK(r >= 0, "%s lacks %s", s->name, req[j]);
                if (r < 0) continue;
                p = PAY(s); p[kv->key_at + kv->klen - 1] = other_key_char(p[kv->key_at + kv->klen - 1]);
                judge_payload(K_REQ, MUST_REJECT, p, s->pn, req[j], "%s, %s renamed", s->name, req[j]);
                if (kv->type == UTG_KV_U32 || kv->type == UTG_KV_U32_ARRAY) {
                    p = PAY(s); p[kv->type_at] = kv->type == UTG_KV_U32 ? UTG_KV_I32 : UTG_KV_F32_ARRAY;
                    judge_payload(K_REQ, MUST_REJECT, p, s->pn, req[j], "%s, %s retyped", s->name, req[j]);
                }
            }
            p = PAY(s); wr32(p + L->kv[kb].val_at, 0);
            judge_payload(K_REQ, MUST_REJECT, p, s->pn, "physical_blocks", "%s, physical_blocks 0", s->name);
            for (j = 0; j < L->kv[kl].count; j++) {
                p = PAY(s); wr32(p + L->kv[kl].val_at + 4 + 4 * (size_t)j, blocks);
                judge_payload(K_REQ, MUST_REJECT, p, s->pn, "physical_blocks", "%s, layers[%u] = physical_blocks", s->name, j);
                p = PAY(s); wr32(p + L->kv[kl].val_at + 4 + 4 * (size_t)j, 0xffffffffu);
                judge_payload(K_REQ, MUST_REJECT, p, s->pn, "physical_blocks", "%s, layers[%u] = 2^32-1", s->name, j);
            }
            p = PAY(s); wr32(p + L->kv[kb].val_at, blocks - 1);
            judge_payload(K_REQ, MUST_REJECT, p, s->pn, "physical_blocks", "%s, physical_blocks - 1", s->name);
        }
    }
}

/* the TENS tensor count: too large, off by one, 0 */
static void tens_count(const seed *s, const layout *L) {
    size_t t0 = L->s[L->tens].off;
    uint8_t *p;
    { p = PAY(s); wr32(p + t0, 0xffffffffu); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "tensors", "%s, TENS count 2^32-1", s->name); }
    { p = PAY(s); wr32(p + t0, UTG_ARTIFACT_MAX_TENSORS + 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "tensors", "%s, TENS count over the cap", s->name); }
    { p = PAY(s); wr32(p + t0, L->nt + 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, TENS count + 1", s->name); }
    { p = PAY(s); wr32(p + t0, L->nt - 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "stray", "%s, TENS count - 1", s->name); }
    { p = PAY(s); wr32(p + t0, 0); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "stray", "%s, TENS count 0", s->name); }
}

/* tensor k's record length: too short, too long, longer with the extra bytes there */
static void tens_record_length(const seed *s, const layout *L, uint32_t k) {
    const lten *t = &L->t[k];
    size_t tend = L->s[L->tens].off + L->s[L->tens].size;
    int lastt = k + 1 == L->nt;
    uint32_t base = 3 + t->nl + 8, full = base + 4 * (uint32_t)t->ndim + 16;
    static const uint32_t rl_bad_short[] = {0, 1, 2, 3};
    uint8_t *p;
    uint32_t j;
    /* record length */
    for (j = 0; j < 4; j++) { p = PAY(s); wr16(p + t->at, rl_bad_short[j]); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "too short", "%s, tensor %s record length %u", s->name, t->name, rl_bad_short[j]); }
    { p = PAY(s); wr16(p + t->at, base - 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "too short", "%s, tensor %s record without its fields", s->name, t->name); }
    { p = PAY(s); wr16(p + t->at, full - 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "too short", "%s, tensor %s record without its plane refs", s->name, t->name); }
    { p = PAY(s); wr16(p + t->at, 0xffff); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "runs past", "%s, tensor %s record length 65535", s->name, t->name); }
    { p = PAY(s); wr16(p + t->at, t->rl + 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, lastt ? "runs past" : NULL, "%s, tensor %s record length + 1", s->name, t->name); }
    /* a longer record whose extra bytes are there (future fields): TENS grows into its zero padding */
    if (lastt && tend + 4 <= L->s[L->data].off) {
        p = PAY(s); wr16(p + t->at, t->rl + 4); wr32(p + 16 + 16 * (size_t)L->tens + 12, L->s[L->tens].size + 4);
        judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s record with 4 appended bytes", s->name, t->name);
    }
}

/* tensor k's name: its length and its characters */
static void tens_name(const seed *s, const layout *L, uint32_t k) {
    const lten *t = &L->t[k];
    uint8_t *p;
    uint32_t j;
    /* name */
    { p = PAY(s); p[t->at + 2] = 0; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "name", "%s, tensor %s name length 0", s->name, t->name); }
    { p = PAY(s); p[t->at + 2] = UTG_MAX_NAME + 1; judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s name length 65", s->name, t->name); }
    { p = PAY(s); p[t->at + 2] = 0xff; judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s name length 255", s->name, t->name); }
    { p = PAY(s); p[t->at + 2] = (uint8_t)(t->nl + 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s name length + 1", s->name, t->name); }
    { p = PAY(s); p[t->at + 2] = (uint8_t)(t->nl - 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s name length - 1", s->name, t->name); }
    {
        static const uint8_t bad[] = {' ', 0x7f, '\n', 0x80, 0};
        for (j = 0; j < 5; j++) {
            p = PAY(s); p[t->name_at + (j % 2 ? t->nl - 1 : 0)] = bad[j];
            judge_payload(K_TENS, MUST_REJECT, p, s->pn, "name", "%s, tensor %s name char 0x%02x", s->name, t->name, bad[j]);
        }
    }
}

/* tensor k's dtype, qbits, scale kind, group and reserved bytes */
static void tens_fields(const seed *s, const layout *L, uint32_t k) {
    const lten *t = &L->t[k];
    int isq = t->dtype == UTG_DT_Q;
    uint8_t *p;
    uint32_t j;
    /* dtype, qbits, scale kind, group, reserved */
    { p = PAY(s); p[t->f_at] = 4; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "dtype", "%s, tensor %s dtype 4", s->name, t->name); }
    { p = PAY(s); p[t->f_at] = 0xff; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "dtype", "%s, tensor %s dtype 255", s->name, t->name); }
    if (isq) {
        static const uint8_t qb[] = {0, 1, 9, 255};
        for (j = 0; j < 4; j++) { p = PAY(s); p[t->f_at + 1] = qb[j]; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "qbits", "%s, tensor %s qbits %u", s->name, t->name, qb[j]); }
        { p = PAY(s); p[t->f_at] = UTG_DT_F32; judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s Q as F32", s->name, t->name); }
        { p = PAY(s); p[t->f_at + 2] = 0; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "scale kind", "%s, tensor %s without a scale kind", s->name, t->name); }
        { p = PAY(s); p[t->f_at + 2] = 4; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "scale kind", "%s, tensor %s scale kind 4", s->name, t->name); }
        { p = PAY(s); p[t->f_at + 2] = 0xff; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "scale kind", "%s, tensor %s scale kind 255", s->name, t->name); }
        /* 8 bits hold every narrower symbol */
        if (t->qbits < 8) { p = PAY(s); p[t->f_at + 1] = 8; judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s widened to 8 bits", s->name, t->name); }
        if (t->sk == UTG_SCALE_GROUP) {
            p = PAY(s); wr16(p + t->f_at + 4, 0); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "group", "%s, tensor %s group 0", s->name, t->name);
            p = PAY(s); wr16(p + t->f_at + 4, 0xffff); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "scale plane", "%s, tensor %s group 65535", s->name, t->name);
            p = PAY(s); p[t->f_at + 2] = UTG_SCALE_ROW; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "group", "%s, tensor %s GROUP as ROW", s->name, t->name);
        } else {
            p = PAY(s); wr16(p + t->f_at + 4, 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "group", "%s, tensor %s group without group scales", s->name, t->name);
            /* (a ROW tensor of 2 rows has as many scale bytes as a TENSOR one) */
            if (t->dims[0] != 2) {
                p = PAY(s); p[t->f_at + 2] = t->sk == UTG_SCALE_ROW ? UTG_SCALE_TENSOR : UTG_SCALE_ROW;
                judge_payload(K_TENS, MUST_REJECT, p, s->pn, "scale plane", "%s, tensor %s other scale kind", s->name, t->name);
            }
        }
    } else {
        { p = PAY(s); p[t->f_at + 1] = 4; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "float tensor", "%s, tensor %s float with qbits", s->name, t->name); }
        { p = PAY(s); p[t->f_at + 2] = UTG_SCALE_ROW; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "float tensor", "%s, tensor %s float with scales", s->name, t->name); }
        { p = PAY(s); wr16(p + t->f_at + 4, 4); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "float tensor", "%s, tensor %s float with a group", s->name, t->name); }
        { p = PAY(s); p[t->f_at] = UTG_DT_Q; judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s float as Q", s->name, t->name); }
        if (t->dtype == UTG_DT_F32) { p = PAY(s); p[t->f_at] = UTG_DT_F16; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "value plane", "%s, tensor %s F32 as F16", s->name, t->name); }
        else { p = PAY(s); p[t->f_at] = t->dtype == UTG_DT_F16 ? UTG_DT_BF16 : UTG_DT_F16; judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s F16 <-> BF16", s->name, t->name); }
    }
    { p = PAY(s); p[t->f_at + 6] = 1; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "reserved", "%s, tensor %s reserved byte 6", s->name, t->name); }
    { p = PAY(s); p[t->f_at + 7] = 0x80; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "reserved", "%s, tensor %s reserved byte 7", s->name, t->name); }
}

/* tensor k's ndim and dims, and a later record renamed to its name */
static void tens_dims(const seed *s, const layout *L, uint32_t k) {
    const lten *t = &L->t[k];
    uint8_t *p;
    uint32_t j;
    /* ndim and dims */
    { p = PAY(s); p[t->f_at + 3] = 0; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "dims", "%s, tensor %s ndim 0", s->name, t->name); }
    { p = PAY(s); p[t->f_at + 3] = 5; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "dims", "%s, tensor %s ndim 5", s->name, t->name); }
    { p = PAY(s); p[t->f_at + 3] = 0xff; judge_payload(K_TENS, MUST_REJECT, p, s->pn, "dims", "%s, tensor %s ndim 255", s->name, t->name); }
    if (t->ndim < 4) { p = PAY(s); p[t->f_at + 3] = (uint8_t)(t->ndim + 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s ndim + 1", s->name, t->name); }
    if (t->ndim > 1) { p = PAY(s); p[t->f_at + 3] = (uint8_t)(t->ndim - 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s ndim - 1", s->name, t->name); }
    for (j = 0; j < (uint32_t)t->ndim; j++) {
        size_t d = t->dims_at + 4 * (size_t)j;
        p = PAY(s); wr32(p + d, 0); judge_payload(K_TENS, MUST_REJECT, p, s->pn, "dimension", "%s, tensor %s dim %u = 0", s->name, t->name, j);
        p = PAY(s); wr32(p + d, 0xffffffffu); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s dim %u = 2^32-1", s->name, t->name, j);
        p = PAY(s); wr32(p + d, 0x80000000u); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s dim %u = 2^31", s->name, t->name, j);
        p = PAY(s); wr32(p + d, t->dims[j] + 1); judge_payload(K_TENS, MUST_REJECT, p, s->pn, NULL, "%s, tensor %s dim %u + 1", s->name, t->name, j);
    }
    if (t->ndim >= 2) {
        /* numel past 2^32 - 1 (or past size_t with 3 or 4 dims) */
        p = PAY(s);
        for (j = 0; j < (uint32_t)t->ndim; j++) wr32(p + t->dims_at + 4 * (size_t)j, 0xffffffffu);
        judge_payload(K_TENS, MUST_REJECT, p, s->pn, t->ndim >= 3 ? "dimension" : "elements", "%s, tensor %s all dims 2^32-1", s->name, t->name);
        p = PAY(s); wr32(p + t->dims_at, 0x10000u); wr32(p + t->dims_at + 4, 0x10000u);
        judge_payload(K_TENS, MUST_REJECT, p, s->pn, "elements", "%s, tensor %s 2^16 x 2^16", s->name, t->name);
    }
    /* duplicate names: the record after, when its name has the same length */
    for (j = k + 1; j < L->nt; j++)
        if (L->t[j].nl == t->nl) {
            p = PAY(s); memcpy(p + L->t[j].name_at, t->name, t->nl);
            judge_payload(K_TENS, MUST_REJECT, p, s->pn, "twice", "%s, tensor %s renamed %s", s->name, L->t[j].name, t->name);
            break;
        }
}

/* tensor k's plane refs: offsets, sizes, and overlaps with other tensors' planes */
static void tens_plane_refs(const seed *s, const layout *L, uint32_t k) {
    const lten *t = &L->t[k];
    uint32_t dsize = L->s[L->data].size;
    uint8_t *p;
    uint32_t j;
    /* plane refs */
    {
        size_t r = t->refs_at;
        p = PAY(s); wr32(p + r, t->vo + 1); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "unaligned", "%s, tensor %s value offset + 1", s->name, t->name);
        p = PAY(s); wr32(p + r, t->vo + 32); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "unaligned", "%s, tensor %s value offset + 32", s->name, t->name);
        p = PAY(s); wr32(p + r, (dsize + 63) / 64 * 64); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "outside DATA", "%s, tensor %s values past DATA", s->name, t->name);
        p = PAY(s); wr32(p + r, 0xffffffc0u); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "outside DATA", "%s, tensor %s value offset 2^32-64", s->name, t->name);
        p = PAY(s); wr32(p + r + 4, t->vs + 1); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "value plane", "%s, tensor %s value size + 1", s->name, t->name);
        p = PAY(s); wr32(p + r + 4, t->vs - 1); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "value plane", "%s, tensor %s value size - 1", s->name, t->name);
        p = PAY(s); wr32(p + r + 4, 0); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "value plane", "%s, tensor %s value size 0", s->name, t->name);
        p = PAY(s); wr32(p + r + 4, 0xffffffffu); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "value plane", "%s, tensor %s value size 2^32-1", s->name, t->name);
        if (t->ss) {
            p = PAY(s); wr32(p + r + 8, t->so + 2); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "unaligned", "%s, tensor %s scale offset + 2", s->name, t->name);
            p = PAY(s); wr32(p + r + 8, 0xffffffc0u); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "outside DATA", "%s, tensor %s scale offset 2^32-64", s->name, t->name);
            p = PAY(s); wr32(p + r + 8, (dsize + 63) / 64 * 64); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "outside DATA", "%s, tensor %s scales past DATA", s->name, t->name);
            p = PAY(s); wr32(p + r + 12, t->ss + 2); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "scale plane", "%s, tensor %s scale size + 2", s->name, t->name);
            p = PAY(s); wr32(p + r + 12, t->ss - 1); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "scale plane", "%s, tensor %s scale size - 1", s->name, t->name);
            p = PAY(s); wr32(p + r + 12, 0); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "scale plane", "%s, tensor %s scale size 0", s->name, t->name);
            p = PAY(s); wr32(p + r + 8, t->vo); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "overlap", "%s, tensor %s scales on its own values", s->name, t->name);
        } else {
            p = PAY(s); wr32(p + r + 8, 64); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "without scales", "%s, tensor %s scale offset without scales", s->name, t->name);
            p = PAY(s); wr32(p + r + 12, 2); judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "scale plane", "%s, tensor %s float with a scale plane", s->name, t->name);
        }
        /* overlaps with the other tensors' planes */
        for (j = 0; j < L->nt; j++) {
            const lten *o = &L->t[j];
            if (j == k || (j != (k + 1) % L->nt && j != (k + L->nt / 2) % L->nt)) continue;
            if ((uint64_t)o->vo + t->vs <= dsize) {
                p = PAY(s); wr32(p + r, o->vo);
                judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "overlap", "%s, tensor %s values on %s's values", s->name, t->name, o->name);
            }
            if (o->vs > 64 && (uint64_t)o->vo + 64 + t->vs <= dsize) {
                p = PAY(s); wr32(p + r, o->vo + 64);
                judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "overlap", "%s, tensor %s values inside %s's values", s->name, t->name, o->name);
            }
            if (t->ss && o->ss && (uint64_t)o->so + t->ss <= dsize) {
                p = PAY(s); wr32(p + r + 8, o->so);
                judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "overlap", "%s, tensor %s scales on %s's scales", s->name, t->name, o->name);
            }
            if (t->ss && (uint64_t)o->vo + t->ss <= dsize) {
                p = PAY(s); wr32(p + r + 8, o->vo);
                judge_payload(K_PLANE, MUST_REJECT, p, s->pn, "overlap", "%s, tensor %s scales on %s's values", s->name, t->name, o->name);
            }
        }
    }
}

static void test_tens(void) {
    int i;
    for (i = 0; i < 2; i++) {
        const seed *s = stored_seeds[i];
        const layout *L = layouts[i];
        uint32_t k;
        tens_count(s, L);
        for (k = 0; k < L->nt; k++) {
            tens_record_length(s, L, k);
            tens_name(s, L, k);
            tens_fields(s, L, k);
            tens_dims(s, L, k);
            tens_plane_refs(s, L, k);
        }
    }
}

static void test_data(void) {
    int i;
    for (i = 0; i < 2; i++) {
        const seed *s = stored_seeds[i];
        const layout *L = layouts[i];
        uint8_t *p;
        uint32_t k, j;
        for (k = 0; k < L->nt; k++) {
            const lten *t = &L->t[k];
            size_t v = data_at(L, t->vo), numel = t->vs / (t->dtype == UTG_DT_F32 ? 4 : t->dtype == UTG_DT_Q ? 1 : 2);
            if (t->dtype == UTG_DT_Q) {
                int r = (1 << (t->qbits - 1)) - 1;
                size_t at[2];
                at[0] = v;
                at[1] = v + numel - 1;
                for (j = 0; j < 2; j++) {
                    if (r < 127) {
                        p = PAY(s); p[at[j]] = (uint8_t)(r + 1); judge_payload(K_DATA, MUST_REJECT, p, s->pn, "outside", "%s, tensor %s symbol %d", s->name, t->name, r + 1);
                        p = PAY(s); p[at[j]] = (uint8_t)(-(r + 1)); judge_payload(K_DATA, MUST_REJECT, p, s->pn, "outside", "%s, tensor %s symbol %d", s->name, t->name, -(r + 1));
                    }
                    p = PAY(s); p[at[j]] = 0x80; judge_payload(K_DATA, MUST_REJECT, p, s->pn, "outside", "%s, tensor %s symbol -128", s->name, t->name);
                    p = PAY(s); p[at[j]] = (uint8_t)r; judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s symbol %d", s->name, t->name, r);
                    p = PAY(s); p[at[j]] = (uint8_t)(-r); judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s symbol %d", s->name, t->name, -r);
                }
                /* scales: planes are byte-shuffled (all low bytes, then all high bytes) */
                if (t->sk == UTG_SCALE_TENSOR) {
                    static const uint32_t nf[] = {0x7f800000u, 0xff800000u, 0x7fc00000u};
                    for (j = 0; j < 3; j++) {
                        p = PAY(s); wr32(p + data_at(L, t->so), nf[j]);
                        judge_payload(K_DATA, MUST_REJECT, p, s->pn, "not finite", "%s, tensor %s scale 0x%08x", s->name, t->name, nf[j]);
                    }
                    p = PAY(s); wr32(p + data_at(L, t->so), 0x3f800000u); judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s scale 1.0", s->name, t->name);
                } else {
                    static const uint16_t nf[] = {0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xffff};
                    size_t ns = t->ss / 2, sa = data_at(L, t->so);
                    size_t which[2];
                    which[0] = 0;
                    which[1] = ns - 1;
                    for (j = 0; j < 10; j++) {
                        size_t e = which[j % 2];
                        p = PAY(s); p[sa + e] = (uint8_t)nf[j / 2]; p[sa + ns + e] = (uint8_t)(nf[j / 2] >> 8);
                        judge_payload(K_DATA, MUST_REJECT, p, s->pn, "not finite", "%s, tensor %s scale %zu = 0x%04x", s->name, t->name, e, nf[j / 2]);
                    }
                    p = PAY(s); p[sa] = 0x00; p[sa + ns] = 0x3c; judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s scale 0 = 1.0", s->name, t->name);
                    p = PAY(s); p[sa + ns - 1] ^= 0x01; judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s scale mantissa bit", s->name, t->name);
                }
            } else {
                /* float values are not range-checked: a mantissa bit keeps the file valid */
                p = PAY(s); p[v] ^= 0x01; judge_payload(K_LEGIT, MUST_ACCEPT, p, s->pn, NULL, "%s, tensor %s value low bit", s->name, t->name);
            }
        }
    }
}

/* mutations that change a section's length: the payload is rebuilt around them */
static void test_resized_sections(void) {
    int i;
    for (i = 0; i < 2; i++) {
        const seed *s = stored_seeds[i];
        const layout *L = layouts[i];
        const uint8_t *meta = s->pay + L->s[L->meta].off, *tens = s->pay + L->s[L->tens].off;
        size_t mn = L->s[L->meta].size, tn = L->s[L->tens].size, m0 = L->s[L->meta].off, t0 = L->s[L->tens].off, n, n2;
        uint8_t *sec, *p;
        const lkv *kv = &L->kv[L->nkv - 1];
        const lten *t = &L->t[0];
        static const uint8_t zeros[8] = {0};
        char key[UTG_ARTIFACT_MAX_KEY + 2], name[UTG_MAX_NAME + 2];
        uint8_t entry[UTG_ARTIFACT_MAX_KEY + 16];
        uint32_t v = 42;
        /* META and TENS shorter than their counts */
        for (n = 0; n < 4; n++) {
            p = rebuild(s, L, L->meta, meta, n, &n2); judge_payload(K_META, MUST_REJECT, p, n2, "too short", "%s, META of %zu bytes", s->name, n);
            p = rebuild(s, L, L->tens, tens, n, &n2); judge_payload(K_TENS, MUST_REJECT, p, n2, "too short", "%s, TENS of %zu bytes", s->name, n);
        }
        /* stray bytes after the last key / record */
        sec = splice(meta, mn, mn, 0, NULL, 1, &n);
        p = rebuild(s, L, L->meta, sec, n, &n2); judge_payload(K_META, MUST_REJECT, p, n2, "stray", "%s, a byte after the last key", s->name); free(sec);
        sec = splice(tens, tn, tn, 0, NULL, 5, &n);
        p = rebuild(s, L, L->tens, sec, n, &n2); judge_payload(K_TENS, MUST_REJECT, p, n2, "stray", "%s, 5 bytes after the last record", s->name); free(sec);
        /* META cut inside the last key: past its section */
        p = rebuild(s, L, L->meta, meta, mn - 1, &n2); judge_payload(K_META, MUST_REJECT, p, n2, "past its section", "%s, META one byte short", s->name);
        p = rebuild(s, L, L->tens, tens, tn - 1, &n2); judge_payload(K_TENS, MUST_REJECT, p, n2, "runs past", "%s, TENS one byte short", s->name);
        /* an unknown key added: ignored */
        n = 0;
        wr16(entry, 8); memcpy(entry + 2, "zz.extra", 8); entry[10] = UTG_KV_U32; wr32(entry + 11, v);
        sec = splice(meta, mn, mn, 0, entry, 15, &n);
        wr32(sec, L->nkv + 1);
        p = rebuild(s, L, L->meta, sec, n, &n2); judge_payload(K_LEGIT, MUST_ACCEPT, p, n2, NULL, "%s, an unknown key added", s->name); free(sec);
        /* the last key renamed to 64 (accepted) and 65 (rejected) characters */
        memset(key, 'k', sizeof key);
        memcpy(key, "zz.", 3);
        sec = splice(meta, mn, kv->key_at - m0, kv->klen, key, UTG_ARTIFACT_MAX_KEY, &n);
        wr16(sec + (kv->at - m0), UTG_ARTIFACT_MAX_KEY);
        p = rebuild(s, L, L->meta, sec, n, &n2); judge_payload(K_LEGIT, MUST_ACCEPT, p, n2, NULL, "%s, key %s renamed to 64 characters", s->name, kv->key); free(sec);
        sec = splice(meta, mn, kv->key_at - m0, kv->klen, key, UTG_ARTIFACT_MAX_KEY + 1, &n);
        wr16(sec + (kv->at - m0), UTG_ARTIFACT_MAX_KEY + 1);
        p = rebuild(s, L, L->meta, sec, n, &n2); judge_payload(K_META, MUST_REJECT, p, n2, "lower_snake", "%s, key %s renamed to 65 characters", s->name, kv->key); free(sec);
        /* the first record with 4 more bytes (fields of a later minor version): skipped */
        sec = splice(tens, tn, t->at - t0 + t->rl, 0, zeros, 4, &n);
        wr16(sec + (t->at - t0), t->rl + 4);
        p = rebuild(s, L, L->tens, sec, n, &n2); judge_payload(K_LEGIT, MUST_ACCEPT, p, n2, NULL, "%s, tensor %s with 4 appended bytes", s->name, t->name); free(sec);
        /* the first tensor renamed to 64 (accepted) and 65 (rejected) characters */
        memset(name, 'n', sizeof name);
        sec = splice(tens, tn, t->name_at - t0, t->nl, name, UTG_MAX_NAME, &n);
        wr16(sec + (t->at - t0), t->rl - t->nl + UTG_MAX_NAME);
        sec[t->at - t0 + 2] = UTG_MAX_NAME;
        p = rebuild(s, L, L->tens, sec, n, &n2); judge_payload(K_LEGIT, MUST_ACCEPT, p, n2, NULL, "%s, tensor %s renamed to 64 characters", s->name, t->name); free(sec);
        sec = splice(tens, tn, t->name_at - t0, t->nl, name, UTG_MAX_NAME + 1, &n);
        wr16(sec + (t->at - t0), t->rl - t->nl + UTG_MAX_NAME + 1);
        sec[t->at - t0 + 2] = UTG_MAX_NAME + 1;
        p = rebuild(s, L, L->tens, sec, n, &n2); judge_payload(K_TENS, MUST_REJECT, p, n2, "name", "%s, tensor %s renamed to 65 characters", s->name, t->name); free(sec);
        /* DATA cut before its last plane ends */
        p = rebuild(s, L, L->data, s->pay + L->s[L->data].off, L->s[L->data].size - 1, &n2);
        judge_payload(K_PLANE, MUST_REJECT, p, n2, "outside DATA", "%s, DATA one byte short", s->name);
        /* the rebuild itself is faithful */
        p = rebuild(s, L, L->meta, meta, mn, &n2);
        CHECK(n2 == s->pn && !memcmp(p, s->pay, n2), "%s: rebuild", s->name);
        judge_payload(K_LEGIT, MUST_ACCEPT, p, n2, NULL, "%s, rebuilt", s->name);
    }
}

/* every bit of the header, directory, META and TENS, and a sample of DATA, with the CRC recomputed:
   no crash, no leak, a message on every rejection */
static void test_flips_with_crc(void) {
    int i, bit;
    for (i = 0; i < 2; i++) {
        const seed *s = stored_seeds[i];
        const layout *L = layouts[i];
        size_t pos, data0 = L->s[L->data].off;
        uint8_t *p = copy_of(s->pay, s->pn, 0);
        for (pos = 0; pos < s->pn; pos += pos < data0 ? 1 : 7) {
            int dir = pos < 16 + 16 * (size_t)L->nsec, b0 = dir ? 0 : (int)(pos % 4), b1 = dir ? 8 : pos < data0 ? 8 : b0 + 1;
            for (bit = b0; bit < b1; bit += dir ? 1 : 4) {
                char what[96];
                size_t en = 0;
                uint8_t *e;
                p[pos] ^= (uint8_t)(1u << bit);
                e = wrap(p, s->pn, NULL, &en);
                snprintf(what, sizeof what, "%s payload, bit %d of byte %zu flipped", s->name, bit, pos);
                judge(K_FLIPCRC, EITHER, e, en, NULL, what);
                free(e);
                p[pos] ^= (uint8_t)(1u << bit);
            }
        }
        free(p);
    }
}

static void test_report(void) {
    int k;
    long total = 0, rej = 0;
    for (k = 0; k < K_N; k++) {
        printf("    %-48s %7ld mutants, %7ld rejected, %6ld accepted\n", kind_name[k], n_rejected[k] + n_accepted[k], n_rejected[k], n_accepted[k]);
        total += n_rejected[k] + n_accepted[k];
        rej += n_rejected[k];
        if (k != K_LEGIT && k != K_FLIPCRC && k != K_SAME) CHECK(n_accepted[k] == 0, "%s: %ld accepted", kind_name[k], n_accepted[k]);
        if (k == K_LEGIT || k == K_SAME) CHECK(n_rejected[k] == 0, "%s: %ld rejected", kind_name[k], n_rejected[k]);
        if (k != K_SAME) CHECK(n_rejected[k] + n_accepted[k] > 0, "no mutants of kind %s", kind_name[k]);
    }
    printf("    %ld mutants in all, %ld rejected cleanly, %ld accepted\n", total, rej, total - rej);
}

static int write_seeds(const char *dir) {
    static const char *const names[] = {"model-stored", "model-brotli", "writer-stored", "writer-brotli"};
    int i;
    char path[1024];
    utg_msg msg;
    memset(&msg, 0, sizeof msg);
    for (i = 0; i < n_seeds; i++) {
        snprintf(path, sizeof path, "%s/mut-%s.utga", dir, names[i]);
        if (utg_write_file(path, seeds[i].art, seeds[i].n, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); return 1; }
        if (!seeds[i].brotli) {
            snprintf(path, sizeof path, "%s/mut-%s.payload", dir, names[i]);
            if (utg_write_file(path, seeds[i].pay, seeds[i].pn, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); return 1; }
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *filter = NULL;
    int i;
    brotli_codec = utg_codec_brotli();
    make_model_seeds();
    make_writer_seeds();
    if (argc > 2 && !strcmp(argv[1], "--seeds")) return write_seeds(argv[2]);
    if (argc > 1) filter = argv[1];
    stored_seeds[0] = &seeds[0];
    stored_seeds[1] = &seeds[2];
    for (i = 0; i < 2; i++) {
        layouts[i] = (layout *)malloc(sizeof(layout));
        read_layout(stored_seeds[i]->pay, layouts[i]);
    }
    RUN(test_seeds);
    RUN(test_truncations);
    RUN(test_bit_flips);
    RUN(test_envelope);
    RUN(test_header_and_directory);
    RUN(test_meta);
    RUN(test_tens);
    RUN(test_data);
    RUN(test_resized_sections);
    RUN(test_flips_with_crc);
    RUN(test_report);
    for (i = 0; i < 2; i++) free(layouts[i]);
    for (i = 0; i < n_seeds; i++) { free(seeds[i].art); free(seeds[i].pay); }
    return TEST_SUMMARY();
}
