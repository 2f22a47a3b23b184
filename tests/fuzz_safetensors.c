/* libFuzzer target over the safetensors reader, utg_model_load_safetensors (make fuzz; clang
   -fsanitize=fuzzer,address,undefined). tests/fuzz_replay.c builds this file again with the normal
   compiler (UTG_STATIC, UTG_FUZZ_REPLAY) to replay tests/corpus/safetensors/.

   One tiny model (MODEL_DIM=16, 2 heads, 1 KV head, VOCAB_SIZE=32, 2 layers, TRAIN_SEQ_LEN=8) is made
   once; every input is loaded into it. A refusal must carry a message and leave the parameters as
   they were, bit for bit. After a load: utg_model_save_safetensors must write the parameters out and
   that file must load back to the same bits; one forward on fixed tokens must succeed whenever the
   loaded parameters are all finite and at most 4 in magnitude (a forward of larger values may
   overflow, and must then fail with a message). */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NAME "fuzz_safetensors"
#include "fuzz.h"

static utg_model *g_model;
static float *g_before, *g_after;
static size_t g_n;

static utg_model *fz_model(void) {
    static char text[] = "MODEL_DIM=16\nNUM_HEADS=2\nNUM_KV_HEADS=1\nVOCAB_SIZE=32\nNUM_LAYERS=2\nTRAIN_SEQ_LEN=8\n";
    utg_model_desc d;
    utg_msg msg;
    if (g_model) return g_model;
    memset(&d, 0, sizeof d);
    memset(&msg, 0, sizeof msg);
    if (utg_config_parse_text(&d.config, text, &msg) != UTG_OK) { fprintf(stderr, "fuzz_safetensors: config: %s\n", msg.text); abort(); }
    if (utg_model_create(&d, &g_model) != UTG_OK) { fprintf(stderr, "fuzz_safetensors: create: %s\n", utg_model_message(g_model)); abort(); }
    g_n = utg_model_arena_floats(g_model);
    g_before = (float *)malloc(g_n * sizeof(float));
    g_after = (float *)malloc(g_n * sizeof(float));
    if (!g_before || !g_after) abort();
    return g_model;
}

/* finite and small enough that a forward cannot overflow */
static int fz_tame(const float *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!(p[i] >= -4.0f && p[i] <= 4.0f)) return 0;
    return 1;
}

static void fz_forward(utg_model *m, const float *params) {
    int32_t in[8], tg[8];
    double loss = -1.0;
    utg_result r;
    int i;
    for (i = 0; i < 8; i++) { in[i] = (i * 7 + 3) % 32; tg[i] = (i * 5 + 1) % 32; }
    m->msg.text[0] = 0;
    r = utg_model_forward(m, in, tg, 1, &loss);
    if (fz_tame(params, g_n)) FZ_REQUIRE(r == UTG_OK && loss >= 0.0 && isfinite(loss), "forward on tame parameters: %d %s, loss %g", (int)r, utg_model_message(m), loss);
    else FZ_REQUIRE(r == UTG_OK || m->msg.text[0], "forward failed (%d) without a message", (int)r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    utg_model *m = fz_model();
    void *out = NULL;
    size_t out_size = 0;
    utg_result r;
    FZ_REQUIRE(utg_model_get(m, UTG_ARENA_PARAMS, -1, g_before, g_n) == UTG_OK, "get");
    m->msg.text[0] = 0;
    r = utg_model_load_safetensors(m, data, size);
    FZ_REQUIRE(utg_model_get(m, UTG_ARENA_PARAMS, -1, g_after, g_n) == UTG_OK, "get");
    if (r != UTG_OK) {
        FZ_REQUIRE(r == UTG_ERR_FORMAT || r == UTG_ERR_MISMATCH || r == UTG_ERR_NOMEM, "result %d: %s", (int)r, utg_model_message(m));
        FZ_REQUIRE(m->msg.text[0] != 0 && memchr(m->msg.text, 0, sizeof m->msg.text), "result %d without a message", (int)r);
        FZ_REQUIRE(memcmp(g_before, g_after, g_n * sizeof(float)) == 0, "a refused file changed the parameters (%s)", utg_model_message(m));
        return 0;
    }
    /* written out and read back: the same bits */
    FZ_REQUIRE(utg_model_save_safetensors(m, UTG_ARENA_PARAMS, &out, &out_size) == UTG_OK, "save: %s", utg_model_message(m));
    memset(g_before, 0xA5, g_n * sizeof(float));
    FZ_REQUIRE(utg_model_set(m, UTG_ARENA_PARAMS, -1, g_before, g_n) == UTG_OK, "set");
    FZ_REQUIRE(utg_model_load_safetensors(m, out, out_size) == UTG_OK, "the saved file does not load: %s", utg_model_message(m));
    FZ_REQUIRE(utg_model_get(m, UTG_ARENA_PARAMS, -1, g_before, g_n) == UTG_OK, "get");
    FZ_REQUIRE(memcmp(g_before, g_after, g_n * sizeof(float)) == 0, "save and load changed the parameters");
    utg_free(utg_model_allocator(m), out);
    fz_forward(m, g_after);
    return 0;
}

#ifdef UTG_FUZZ_REPLAY
/* Seeds: utg_model_save_safetensors (F32), then files written here by hand in BF16, F16 and mixed
   dtypes, with the header's entries in another order than the data, a __metadata__ object, JSON
   blanks and escapes in a name. */
static uint16_t fz_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }
static uint16_t fz_f16(float f) { /* values here are small multiples of 1/64: exact in fp16 */
    uint32_t u, e, mant;
    memcpy(&u, &f, 4);
    e = (u >> 23) & 0xff;
    mant = u & 0x7fffff;
    if (e == 0) return (uint16_t)((u >> 16) & 0x8000);
    return (uint16_t)(((u >> 16) & 0x8000) | ((e - 112) << 10) | (mant >> 13));
}

static int fz_write(const char *dir, const char *name, const void *b, size_t n) {
    char path[1024];
    utg_msg msg;
    utg_model *m = fz_model();
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (utg_write_file(path, b, n, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); return 1; }
    if (utg_model_load_safetensors(m, b, n) != UTG_OK) fprintf(stderr, "note: seed %s does not load: %s\n", name, utg_model_message(m));
    return 0;
}

/* variant 0: BF16; 1: F16, entries listed last tensor first, with __metadata__ and blanks; 2: dtypes
   mixed, an escaped name */
static int fz_hand_file(const char *dir, const char *name, int variant) {
    utg_model *m = fz_model();
    int nt = utg_model_tensor_count(m), i, k, ti;
    size_t hcap = 256 + (size_t)nt * 256, h = 0, off = 0, total, j;
    char *hdr = (char *)malloc(hcap);
    uint8_t *file, *d;
    int fails;
    if (!hdr) return 1;
    h += (size_t)snprintf(hdr + h, hcap - h, variant == 1 ? "{ \"__metadata__\" : {\"format\":\"pt\", \"x\":\"\\u00e9\"}" : "{");
    for (k = 0; k < nt; k++) {
        const utg_tensor_info *t;
        const char *dt;
        size_t elem, begin = 0;
        ti = variant == 1 ? nt - 1 - k : k;
        t = utg_model_tensor(m, ti);
        dt = variant == 0 ? "BF16" : variant == 1 ? "F16" : (ti % 3 == 0 ? "F32" : ti % 3 == 1 ? "F16" : "BF16");
        for (i = 0; i < ti; i++) { /* data stays in table order */
            const utg_tensor_info *u = utg_model_tensor(m, i);
            size_t e = variant == 0 ? 2 : variant == 1 ? 2 : (i % 3 == 0 ? 4 : 2);
            begin += u->numel * e;
        }
        elem = strcmp(dt, "F32") ? 2 : 4;
        h += (size_t)snprintf(hdr + h, hcap - h, "%s\"", (k || variant == 1) ? (variant == 1 ? ",\n  " : ",") : "");
        if (variant == 2 && ti == 0 && t->name[0]) h += (size_t)snprintf(hdr + h, hcap - h, "\\u%04x%s", (unsigned)(unsigned char)t->name[0], t->name + 1);
        else h += (size_t)snprintf(hdr + h, hcap - h, "%s", t->name);
        if (variant == 1) h += (size_t)snprintf(hdr + h, hcap - h, "\" : { \"shape\" : [%lld", (long long)t->shape[0]);
        else h += (size_t)snprintf(hdr + h, hcap - h, "\":{\"dtype\":\"%s\",\"shape\":[%lld", dt, (long long)t->shape[0]);
        for (i = 1; i < t->ndim; i++) h += (size_t)snprintf(hdr + h, hcap - h, ", %lld", (long long)t->shape[i]);
        if (variant == 1) h += (size_t)snprintf(hdr + h, hcap - h, "], \"data_offsets\" : [%zu, %zu], \"dtype\" : \"%s\" }", begin, begin + t->numel * elem, dt);
        else h += (size_t)snprintf(hdr + h, hcap - h, "],\"data_offsets\":[%zu,%zu]}", begin, begin + t->numel * elem);
        off += t->numel * elem;
    }
    h += (size_t)snprintf(hdr + h, hcap - h, variant == 1 ? "\n}  " : "}");
    total = 8 + h + off;
    file = (uint8_t *)calloc(1, total);
    if (!file) { free(hdr); return 1; }
    for (j = 0; j < 8; j++) file[j] = (uint8_t)((uint64_t)h >> (8 * j));
    memcpy(file + 8, hdr, h);
    d = file + 8 + h;
    for (ti = 0; ti < nt; ti++) {
        const utg_tensor_info *t = utg_model_tensor(m, ti);
        int f32 = variant == 2 && ti % 3 == 0, bf = variant == 0 || (variant == 2 && ti % 3 == 2);
        for (j = 0; j < t->numel; j++) {
            float v = (float)((int)((j * 37 + (size_t)ti) % 128) - 64) / 64.0f;
            if (f32) { memcpy(d, &v, 4); d += 4; }
            else {
                uint16_t u = bf ? fz_bf16(v) : fz_f16(v);
                d[0] = (uint8_t)u; d[1] = (uint8_t)(u >> 8); d += 2;
            }
        }
    }
    fails = fz_write(dir, name, file, total);
    free(file);
    free(hdr);
    return fails;
}

int utg_fuzz_safetensors_seeds(const char *dir);
int utg_fuzz_safetensors_seeds(const char *dir) {
    utg_model *m = fz_model();
    void *out = NULL;
    size_t out_size = 0;
    int fails = 0;
    if (utg_model_init_params(m, 1234) != UTG_OK || utg_model_save_safetensors(m, UTG_ARENA_PARAMS, &out, &out_size) != UTG_OK) return 1;
    fails += fz_write(dir, "seed-f32.safetensors", out, out_size);
    utg_free(utg_model_allocator(m), out);
    fails += fz_hand_file(dir, "seed-bf16.safetensors", 0);
    fails += fz_hand_file(dir, "seed-f16-reordered.safetensors", 1);
    fails += fz_hand_file(dir, "seed-mixed-escaped.safetensors", 2);
    return fails;
}
#endif
