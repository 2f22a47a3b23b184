/* safetensors import/export and token shards: round trips, half-float import, every malformed-input
   class with its message, and a deterministic mutation run in which every mutant must be either
   accepted or refused cleanly (run it under ASan/UBSan: make test-asan). Non-finite values are
   refused in safetensors files and checkpoints. utg_write_file's POSIX path (built because this
   file defines _POSIX_C_SOURCE): planted symlinks, stale temporaries, a failed rename. */
#define _POSIX_C_SOURCE 200809L /* utg_write_file's POSIX path; mkdtemp, symlink, fork */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "test.h"
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static utg_model *tiny_model(int tie) {
    utg_model_desc d;
    utg_model *m = NULL;
    memset(&d, 0, sizeof d);
    d.config.num_layers = 2; d.config.model_dim = 8; d.config.num_heads = 2; d.config.num_kv_heads = 1;
    d.config.vocab_size = 16; d.config.train_seq_len = 4; d.config.tie_embeddings = tie ? 1 : UTG_OFF;
    if (utg_model_create(&d, &m) != UTG_OK) printf("    create: %s\n", utg_model_message(m));
    return m;
}

static float *arena_copy(utg_model *m) {
    size_t n = utg_model_arena_floats(m);
    float *p = (float *)malloc(n * 4);
    utg_model_get(m, UTG_ARENA_PARAMS, -1, p, n);
    return p;
}

/* Build a safetensors file from a JSON header and a data buffer. */
static uint8_t *st_build(const char *json, const void *data, size_t data_size, size_t *out_size) {
    size_t h = strlen(json), i;
    uint8_t *b = (uint8_t *)malloc(8 + h + data_size + 1);
    for (i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, json, h);
    if (data_size) memcpy(b + 8 + h, data, data_size);
    *out_size = 8 + h + data_size;
    return b;
}

/* The JSON of the tiny model's tensors with a given dtype, tensors laid out in table order. */
static size_t st_json_for(utg_model *m, const char *dtype, size_t elem, char *out, size_t cap) {
    size_t off = 0, len;
    int i;
    len = (size_t)snprintf(out, cap, "{");
    for (i = 0; i < utg_model_tensor_count(m); i++) {
        const utg_tensor_info *t = utg_model_tensor(m, i);
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", i ? "," : "", t->name, dtype,
                                (long long)t->shape[0]);
        if (t->ndim > 1) len += (size_t)snprintf(out + len, cap - len, ",%lld", (long long)t->shape[1]);
        len += (size_t)snprintf(out + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + t->numel * elem);
        off += t->numel * elem;
    }
    snprintf(out + len, cap - len, "}");
    return off;
}

static void test_safetensors_round_trip(void) {
    utg_model *a = tiny_model(1), *b = tiny_model(1);
    void *bytes = NULL, *bytes2 = NULL;
    size_t size = 0, size2 = 0;
    float *pa, *pb;
    utg_model_init_params(b, 4242); /* b starts different from a */
    CHECK(utg_model_save_safetensors(a, UTG_ARENA_PARAMS, &bytes, &size) == UTG_OK, "save");
    CHECK(((uint8_t *)bytes)[8] == '{', "JSON header starts after the length");
    CHECK(utg_model_load_safetensors(b, bytes, size) == UTG_OK, "load: %s", utg_model_message(b));
    pa = arena_copy(a);
    pb = arena_copy(b);
    CHECK(memcmp(pa, pb, utg_model_arena_floats(a) * 4) == 0, "parameters differ after the round trip");
    /* the writer is deterministic: saving the loaded model gives the same bytes */
    CHECK(utg_model_save_safetensors(b, UTG_ARENA_PARAMS, &bytes2, &size2) == UTG_OK && size == size2 && memcmp(bytes, bytes2, size) == 0,
          "save(load(save(m))) differs from save(m)");
    {   /* the data buffer starts 8-aligned, as the safetensors writers do */
        uint64_t h = 0;
        int i;
        for (i = 0; i < 8; i++) h |= (uint64_t)((uint8_t *)bytes)[i] << (8 * i);
        CHECK(h % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)h);
    }
    free(pa); free(pb);
    utg_free(utg_model_allocator(a), bytes);
    utg_free(utg_model_allocator(b), bytes2);
    utg_model_destroy(a);
    utg_model_destroy(b);
}

static uint16_t to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }

static void test_safetensors_half_import(void) {
    utg_model *m = tiny_model(0);
    char json[8192];
    size_t n = utg_model_param_count(m), size, i, k = 0;
    uint16_t *data = (uint16_t *)malloc(n * 2);
    uint8_t *file;
    float *p;
    int ti;
    /* BF16: value i/64 - 1 for element i (exactly representable in bf16 for these magnitudes) */
    st_json_for(m, "BF16", 2, json, sizeof json);
    for (i = 0; i < n; i++) data[i] = to_bf16((float)((int)(i % 128) - 64) / 64.0f);
    file = st_build(json, data, n * 2, &size);
    CHECK(utg_model_load_safetensors(m, file, size) == UTG_OK, "bf16 load: %s", utg_model_message(m));
    p = arena_copy(m);
    for (ti = 0; ti < utg_model_tensor_count(m); ti++) {
        const utg_tensor_info *t = utg_model_tensor(m, ti);
        for (i = 0; i < t->numel; i++, k++)
            if (p[t->offset + i] != (float)((int)(k % 128) - 64) / 64.0f) { CHECK(0, "bf16 value %zu of %s", i, t->name); break; }
    }
    free(p);
    free(file);
    /* F16: known bit patterns: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, smallest subnormal 0x0001 */
    {
        uint16_t pats[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
        float want[4] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-08f};
        st_json_for(m, "F16", 2, json, sizeof json);
        for (i = 0; i < n; i++) data[i] = pats[i % 4];
        file = st_build(json, data, n * 2, &size);
        CHECK(utg_model_load_safetensors(m, file, size) == UTG_OK, "f16 load: %s", utg_model_message(m));
        p = arena_copy(m);
        for (k = 0, ti = 0; ti < utg_model_tensor_count(m); ti++) {
            const utg_tensor_info *t = utg_model_tensor(m, ti);
            for (i = 0; i < t->numel; i++, k++)
                if (p[t->offset + i] != want[k % 4]) { CHECK(0, "f16 value %zu of %s: %g", i, t->name, p[t->offset + i]); break; }
        }
        free(p);
        free(file);
    }
    free(data);
    utg_model_destroy(m);
}

/* One malformed file: must fail with `code`, a message containing `needle`, and leave the model
   unchanged. */
static void expect_refused(utg_model *m, const uint8_t *file, size_t size, utg_result code, const char *needle, const char *what) {
    float *before = arena_copy(m), *after;
    utg_result r = utg_model_load_safetensors(m, file, size);
    after = arena_copy(m);
    CHECK(r == code, "%s: result %d (%s), expected %d; message: %s", what, r, utg_result_string(r), code, utg_model_message(m));
    CHECK(strstr(utg_model_message(m), needle) != NULL, "%s: message '%s' lacks '%s'", what, utg_model_message(m), needle);
    CHECK(memcmp(before, after, utg_model_arena_floats(m) * 4) == 0, "%s: a refused file changed the model", what);
    free(before);
    free(after);
}

static void test_safetensors_malformed(void) {
    utg_model *m = tiny_model(1);
    char json[8192], bad[8400];
    size_t n = utg_model_param_count(m), size, data_size;
    float *data = (float *)calloc(n + 64, 4);
    uint8_t *file;
    const char *first = "\"skip_weights\":{\"dtype\":\"F32\",\"shape\":[1,8],\"data_offsets\":[0,32]}";
    data_size = st_json_for(m, "F32", 4, json, sizeof json);
    CHECK(strstr(json, first) != NULL, "test assumption: skip_weights first: %.120s", json);
    /* the valid file loads */
    file = st_build(json, data, data_size, &size);
    CHECK(utg_model_load_safetensors(m, file, size) == UTG_OK, "valid: %s", utg_model_message(m));
    utg_model_init_params(m, 1);
    /* header length: short file, larger than the file, absurd */
    expect_refused(m, file, 5, UTG_ERR_FORMAT, "too short", "5-byte file");
    {
        uint8_t *f2 = (uint8_t *)malloc(size);
        memcpy(f2, file, size);
        f2[0] = 0xff; f2[1] = 0xff; f2[2] = 0x0f;
        expect_refused(m, f2, size, UTG_ERR_FORMAT, "header length", "header longer than the file");
        memset(f2, 0xff, 8);
        expect_refused(m, f2, size, UTG_ERR_FORMAT, "header length", "2^64-1 header length");
        free(f2);
    }
    expect_refused(m, file, size - 4, UTG_ERR_FORMAT, "outside", "truncated data");
    free(file);
#define MALFORMED(from, to, code, needle, what)                               \
    do {                                                                      \
        char *at = strstr(json, from);                                        \
        snprintf(bad, sizeof bad, "%.*s%s%s", (int)(at - json), json, to, at + strlen(from)); \
        file = st_build(bad, data, data_size, &size);                         \
        expect_refused(m, file, size, code, needle, what);                    \
        free(file);                                                           \
    } while (0)
    MALFORMED("{\"skip_weights\"", "[\"skip_weights\"", UTG_ERR_FORMAT, "expected '{'", "not an object");
    MALFORMED("\"F32\",\"shape\":[1,8]", "\"F32\" \"shape\":[1,8]", UTG_ERR_FORMAT, "expected", "missing comma");
    MALFORMED("[0,32]}", "[0,32]", UTG_ERR_FORMAT, "unexpected", "unclosed entry");
    MALFORMED("\"F32\",\"shape\":[1,8]", "\"Q7\",\"shape\":[1,8]", UTG_ERR_FORMAT, "unknown dtype", "unknown dtype");
    MALFORMED("\"F32\",\"shape\":[1,8]", "\"I64\",\"shape\":[1,8]", UTG_ERR_FORMAT, "not supported", "unsupported dtype");
    MALFORMED("[1,8]", "[1,-8]", UTG_ERR_FORMAT, "shape", "negative dim");
    MALFORMED("[1,8]", "[1,8.0]", UTG_ERR_FORMAT, "shape", "fractional dim");
    MALFORMED("[1,8]", "[1,99999999999999999999]", UTG_ERR_FORMAT, "shape", "huge dim");
    MALFORMED("[1,8]", "[1,4]", UTG_ERR_FORMAT, "need", "shape disagrees with the byte range");
    MALFORMED("[0,32]", "[0,32,64]", UTG_ERR_FORMAT, "data_offsets", "three offsets");
    MALFORMED("[0,32]", "[32,0]", UTG_ERR_FORMAT, "outside", "begin after end");
    MALFORMED("[0,32]", "[0,9007199254740992]", UTG_ERR_FORMAT, "outside", "offset past the buffer");
    MALFORMED("\"data_offsets\":[0,32]", "\"data_offsets\":[0,32],\"dtype\":\"F32\"", UTG_ERR_FORMAT, "repeated", "repeated key");
    MALFORMED("\"data_offsets\":[0,32]", "\"data_offsets\":[0,32],\"extra\":1", UTG_ERR_FORMAT, "extra", "unknown key");
    MALFORMED(",\"data_offsets\":[0,32]", "", UTG_ERR_FORMAT, "needs dtype", "no data_offsets");
    MALFORMED("\"skip_weights\"", "\"skip_weights\\u0000\"", UTG_ERR_FORMAT, "header", "NUL escape in a name");
    MALFORMED("{\"skip", "{\"__metadata__\":{\"a\":1},\"skip", UTG_ERR_FORMAT, "strings", "non-string metadata");
    /* ranges: tok_emb moved 16 bytes back onto skip_weights' bytes (sizes stay right) */
    MALFORMED("[32,544]", "[16,528]", UTG_ERR_FORMAT, "overlap", "overlapping tensors");
    /* and a hole: skip_weights moved to the end leaves its old bytes unowned */
    MALFORMED("[0,32]", "[32,64]", UTG_ERR_FORMAT, "unused bytes", "hole at the start");
    /* a trailing byte nobody owns */
    {
        size_t s2;
        uint8_t *f3 = st_build(json, data, data_size + 4, &s2);
        expect_refused(m, f3, s2, UTG_ERR_FORMAT, "unused bytes", "trailing bytes in the data buffer");
        free(f3);
    }
    /* model level: extra tensor, missing tensor, wrong shape, duplicate */
    {
        size_t s2;
        uint8_t *f3;
        char *end = json + strlen(json) - 1; /* final '}' */
        snprintf(bad, sizeof bad, "%.*s,\"ghost.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}}",
                 (int)(end - json), json, data_size, data_size + 4);
        f3 = st_build(bad, data, data_size + 4, &s2);
        expect_refused(m, f3, s2, UTG_ERR_MISMATCH, "ghost.weight", "extra tensor");
        free(f3);
        /* missing: rename skip_weights so its bytes are still owned */
        MALFORMED("\"skip_weights\"", "\"skip_weightz\"", UTG_ERR_MISMATCH, "skip_weightz", "unknown name");
        snprintf(bad, sizeof bad, "{%s}", first);
        f3 = st_build(bad, data, 32, &s2);
        expect_refused(m, f3, s2, UTG_ERR_MISMATCH, "missing", "missing tensors");
        free(f3);
        snprintf(bad, sizeof bad, "{\"skip_weights\":{\"dtype\":\"F32\",\"shape\":[8,1],\"data_offsets\":[0,32]}}");
        f3 = st_build(bad, data, 32, &s2);
        expect_refused(m, f3, s2, UTG_ERR_MISMATCH, "shape", "transposed shape");
        free(f3);
        snprintf(bad, sizeof bad, "{%s,%s}", first, first);
        f3 = st_build(bad, data, 32, &s2);
        expect_refused(m, f3, s2, UTG_ERR_FORMAT, "twice", "duplicate tensor");
        free(f3);
    }
    free(data);
    utg_model_destroy(m);
#undef MALFORMED
}

/* Deterministic mutation: bit flips, byte overwrites with boundary values, truncations, header
   length edits. Every mutant must come back OK or with a clean error (ASan checks the "clean"). */
static void test_safetensors_mutations(void) {
    utg_model *m = tiny_model(1);
    void *bytes;
    size_t size;
    uint8_t *mut;
    uint64_t s = 2024;
    int accepted = 0, refused = 0, it, bad_code = 0;
    static const uint8_t vals[] = {0, 0xff, '"', '{', '}', '[', ']', ',', ':', '9', '-', '\\', 0x80};
    utg_model_save_safetensors(m, UTG_ARENA_PARAMS, &bytes, &size);
    mut = (uint8_t *)malloc(size);
    for (it = 0; it < 3000; it++) {
        size_t len = size, pos;
        utg_result r;
        int kind;
        memcpy(mut, bytes, size);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        kind = (int)((s >> 33) % 4);
        /* mostly hit the header, where the structure is */
        pos = (size_t)((s >> 13) % (it % 3 ? 200 + 8 : size));
        if (kind == 0) mut[pos] ^= (uint8_t)(1u << ((s >> 5) % 8));
        else if (kind == 1) mut[pos] = vals[(s >> 7) % sizeof vals];
        else if (kind == 2) len = pos;
        else { size_t k = (s >> 40) % 8; mut[k] = (uint8_t)(s >> 48); }
        r = utg_model_load_safetensors(m, mut, len);
        if (r == UTG_OK) accepted++;
        else {
            refused++;
            if (r != UTG_ERR_FORMAT && r != UTG_ERR_MISMATCH) bad_code++;
            if (utg_model_message(m)[0] == 0) bad_code++;
        }
    }
    printf("      3000 mutants: %d accepted, %d refused\n", accepted, refused);
    CHECK(refused > 1000, "too few mutants refused (%d): the mutator is not reaching the parser", refused);
    CHECK(accepted > 0, "no mutant accepted: bit flips in float data should load");
    CHECK(bad_code == 0, "%d refusals had an unexpected code or no message", bad_code);
    free(mut);
    utg_free(utg_model_allocator(m), bytes);
    utg_model_destroy(m);
}

static void test_gradients_export(void) {
    utg_model *m = tiny_model(1);
    int32_t x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    double loss;
    void *bytes;
    size_t size;
    utg_model *m2 = tiny_model(1);
    float *g, *p2;
    utg_model_forward(m, x, y, 2, &loss);
    utg_model_zero_grads(m);
    utg_model_backward(m, 1.0f);
    CHECK(utg_model_save_safetensors(m, UTG_ARENA_GRADS, &bytes, &size) == UTG_OK, "save grads");
    /* a gradients file has the parameters' names and shapes: it loads as parameters */
    CHECK(utg_model_load_safetensors(m2, bytes, size) == UTG_OK, "grads file: %s", utg_model_message(m2));
    g = (float *)malloc(utg_model_arena_floats(m) * 4);
    utg_model_get(m, UTG_ARENA_GRADS, -1, g, utg_model_arena_floats(m));
    p2 = arena_copy(m2);
    CHECK(memcmp(g, p2, utg_model_arena_floats(m) * 4) == 0, "gradients changed on the way through the file");
    free(g); free(p2);
    utg_free(utg_model_allocator(m), bytes);
    utg_model_destroy(m);
    utg_model_destroy(m2);
}

static void test_shards(void) {
    uint16_t ids[5] = {1, 65535, 0, 513, 7};
    uint8_t buf[1024 + 10], bad[1024 + 10];
    const uint8_t *tok;
    size_t n, i;
    utg_msg msg;
    CHECK(utg_shard_write(ids, 5, buf, sizeof buf) == UTG_OK, "write");
    CHECK(utg_shard_write(ids, 5, buf, sizeof buf - 1) == UTG_ERR_INVALID, "wrong output size");
    CHECK(utg_shard_parse(buf, sizeof buf, &tok, &n, &msg) == UTG_OK && n == 5, "parse");
    for (i = 0; i < 5; i++) CHECK(utg_shard_token(tok, i) == ids[i], "token %zu", i);
    CHECK(buf[0] == (20240520 & 0xff) && buf[4] == 1 && buf[8] == 5, "little-endian header");
    CHECK(utg_shard_parse(buf, sizeof buf - 1, &tok, &n, &msg) == UTG_ERR_FORMAT && strstr(msg.text, "5 tokens"), "short: %s", msg.text);
    CHECK(utg_shard_parse(buf, 100, &tok, &n, &msg) == UTG_ERR_FORMAT && strstr(msg.text, "header"), "truncated header");
    memcpy(bad, buf, sizeof buf);
    bad[0] ^= 1;
    CHECK(utg_shard_parse(bad, sizeof bad, &tok, &n, &msg) == UTG_ERR_FORMAT && strstr(msg.text, "magic"), "magic");
    memcpy(bad, buf, sizeof buf);
    bad[4] = 2;
    CHECK(utg_shard_parse(bad, sizeof bad, &tok, &n, &msg) == UTG_ERR_FORMAT && strstr(msg.text, "version"), "version");
    memcpy(bad, buf, sizeof buf);
    bad[11] = 0x80; /* num_tokens negative as int32 */
    CHECK(utg_shard_parse(bad, sizeof bad, &tok, &n, &msg) == UTG_ERR_FORMAT, "huge count");
}

/* A NaN or an infinity in a safetensors file is refused, naming the tensor, the model unchanged. */
static void test_safetensors_nonfinite(void) {
    utg_model *m = tiny_model(1);
    void *bytes;
    size_t size, begin = 0, end = 0;
    uint8_t *file;
    const char *at;
    float bad[2] = {NAN, INFINITY};
    int k;
    CHECK(utg_model_save_safetensors(m, UTG_ARENA_PARAMS, &bytes, &size) == UTG_OK, "save");
    at = strstr((const char *)bytes + 8, "\"tok_emb.weight\":{\"dtype\":\"F32\"");
    at = at ? strstr(at, "\"data_offsets\":[") : NULL;
    CHECK(at && sscanf(at, "\"data_offsets\":[%zu,%zu]", &begin, &end) == 2 && end - begin == 16 * 8 * 4,
          "test assumption: tok_emb.weight is F32 with its data_offsets");
    utg_model_init_params(m, 77); /* the model differs from the file: a partial load would show */
    for (k = 0; k < 2; k++) {
        uint64_t h = 0;
        int i;
        file = (uint8_t *)malloc(size);
        memcpy(file, bytes, size);
        for (i = 0; i < 8; i++) h |= (uint64_t)file[i] << (8 * i);
        memcpy(file + 8 + h + begin + 4 * 37, &bad[k], 4); /* element 37 of tok_emb.weight */
        expect_refused(m, file, size, UTG_ERR_FORMAT, "not finite", k ? "+Inf in tok_emb.weight" : "NaN in tok_emb.weight");
        CHECK(strstr(utg_model_message(m), "tok_emb.weight") != NULL, "the message names the tensor: %s", utg_model_message(m));
        free(file);
    }
    utg_free(utg_model_allocator(m), bytes);
    utg_model_destroy(m);
}

/* A checkpoint of a diverged state (a NaN parameter, an infinite optimizer moment) is refused with
   the tensor named, and the model it was loaded into keeps its parameters; a finite one loads. */
static void ckpt_expect_refused(utg_model *src, utg_optim *so, const char *what) {
    utg_model *m = tiny_model(1);
    utg_optim *o = NULL;
    utg_train_state ts;
    void *bytes = NULL;
    size_t size = 0;
    float *before, *after;
    memset(&ts, 0, sizeof ts);
    utg_optim_create(m, &o);
    utg_model_init_params(m, 99);
    before = arena_copy(m);
    CHECK(utg_checkpoint_save(src, so, NULL, &ts, &bytes, &size) == UTG_OK, "%s: save: %s", what, utg_model_message(src));
    CHECK(utg_checkpoint_load(m, o, NULL, &ts, bytes, size) != UTG_OK, "%s: a checkpoint of a diverged state loaded", what);
    CHECK(strstr(utg_model_message(m), "not finite") && strstr(utg_model_message(m), "blocks.0.attn.c_q.weight"),
          "%s: message '%s' lacks 'not finite' or the tensor's name", what, utg_model_message(m));
    after = arena_copy(m);
    CHECK(memcmp(before, after, utg_model_arena_floats(m) * 4) == 0, "%s: a refused checkpoint changed the model", what);
    free(before);
    free(after);
    utg_free(utg_model_allocator(src), bytes);
    utg_optim_destroy(o);
    utg_model_destroy(m);
}

static void test_checkpoint_nonfinite(void) {
    utg_model *a = tiny_model(1), *b = tiny_model(1);
    utg_optim *oa = NULL, *ob = NULL;
    utg_train_state ts;
    int ti = utg_model_find_tensor(a, "blocks.0.attn.c_q.weight");
    const utg_tensor_info *t = utg_model_tensor(a, ti);
    size_t n = utg_model_arena_floats(a);
    float *w = (float *)malloc(t->numel * 4), *arena = (float *)malloc(n * 4), keep;
    void *bytes = NULL;
    size_t size = 0;
    memset(&ts, 0, sizeof ts);
    CHECK(utg_optim_create(a, &oa) == UTG_OK && utg_optim_create(b, &ob) == UTG_OK, "optimizers");
    /* finite: the checkpoint loads */
    CHECK(utg_checkpoint_save(a, oa, NULL, &ts, &bytes, &size) == UTG_OK, "save");
    CHECK(utg_checkpoint_load(b, ob, NULL, &ts, bytes, size) == UTG_OK, "a finite checkpoint: %s", utg_model_message(b));
    utg_free(utg_model_allocator(a), bytes);
    /* a NaN parameter */
    utg_model_get(a, UTG_ARENA_PARAMS, ti, w, t->numel);
    keep = w[5];
    w[5] = NAN;
    utg_model_set(a, UTG_ARENA_PARAMS, ti, w, t->numel);
    ckpt_expect_refused(a, oa, "NaN parameter");
    w[5] = keep;
    utg_model_set(a, UTG_ARENA_PARAMS, ti, w, t->numel);
    /* an infinite first moment of the optimizer */
    utg_optim_get_arena(oa, UTG_OPTIM_MOMENTUM, arena, n);
    arena[t->offset + 3] = INFINITY;
    utg_optim_set_arena(oa, UTG_OPTIM_MOMENTUM, arena, n);
    ckpt_expect_refused(a, oa, "infinite optimizer state");
    free(w);
    free(arena);
    utg_optim_destroy(oa);
    utg_optim_destroy(ob);
    utg_model_destroy(a);
    utg_model_destroy(b);
}

/* REAL knobs print exactly (the shortest text that reads back as the same double); checkpoints
   from before hold them with %.9g, and such a text still matches a run with the same value. */
static void test_checkpoint_real_knob_text(void) {
    utg_config c;
    char now[64];
    int k = utg_config_find_knob("LEAKY_RELU_SLOPE"), kb = utg_config_find_knob("NUM_LAYERS");
    memset(&c, 0, sizeof c);
    c.leaky_relu_slope = 1.0 / 3.0;
    c = utg_config_resolve(&c);
    utg_config_format(&c, k, now, sizeof now);
    CHECK(strtod(now, NULL) == 1.0 / 3.0, "1/3 prints as %s, which reads back as another number", now);
    c.leaky_relu_slope = 0.95;
    utg_config_format(&c, k, now, sizeof now);
    CHECK(strcmp(now, "0.95") == 0, "0.95 prints as %s", now);
    c.leaky_relu_slope = 1.0 / 3.0;
    CHECK(utg__ckpt_real_9g(&c, k, "0.333333333"), "the %%.9g text of the same value is refused");
    CHECK(!utg__ckpt_real_9g(&c, k, "0.333333334"), "another value's %%.9g text matches");
    CHECK(!utg__ckpt_real_9g(&c, kb, "9"), "an INT knob went through the REAL rule");
}

/* ---- utg_write_file: each test works in its own mkdtemp directory ---- */

static int put_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(text, 1, strlen(text), f) == strlen(text);
    if (f) ok = fclose(f) == 0 && ok;
    return ok;
}

/* the file at path (links followed) holds exactly `text` */
static int file_holds(const char *path, const char *text) {
    char buf[256];
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return 0;
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

static int is_regular(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* entries of dir whose name ends in ".utgtmp" */
static int count_utgtmp(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len >= 7 && strcmp(e->d_name + len - 7, ".utgtmp") == 0) n++;
    }
    closedir(d);
    return n;
}

/* remove everything in dir (files, links, empty directories), then dir */
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d) {
        while ((e = readdir(d)) != NULL) {
            char p[512];
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (unlink(p) != 0) rmdir(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Links planted at the temporary names (the old fixed "<path>.tmp" and this process's next
   "<path>.<pid>-<n>.utgtmp") are never written through; a path that is itself a link is replaced
   by a regular file, its target untouched. The first test to call utg_write_file: the serial n of
   its temporaries starts at 0. */
static void test_write_file_symlinks(void) {
    char dir[] = "/tmp/utg_io_XXXXXX", name[128], victim[64], path[64], link_path[64];
    const char *old_text = "the victim's bytes", *new_text = "new bytes";
    utg_msg msg;
    utg_result r;
    int k;
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    snprintf(victim, sizeof victim, "%s/victim", dir);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    snprintf(link_path, sizeof link_path, "%s/link.bin", dir);
    CHECK(put_file(victim, old_text), "write the victim");
    snprintf(name, sizeof name, "%s.tmp", path);
    CHECK(symlink(victim, name) == 0, "symlink %s", name);
    for (k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "%s.%ld-%d.utgtmp", path, (long)getpid(), k);
        CHECK(symlink(victim, name) == 0, "symlink %s", name);
    }
    memset(&msg, 0, sizeof msg);
    r = utg_write_file(path, new_text, strlen(new_text), &msg);
    CHECK(r == UTG_OK, "write past planted links: %s (%s)", utg_result_string(r), msg.text);
    CHECK(file_holds(victim, old_text), "the victim was written through a planted link");
    CHECK(is_regular(path) && file_holds(path, new_text), "model.bin is not a regular file with the new bytes");
    /* path itself a link to the victim: the rename replaces the link */
    CHECK(symlink(victim, link_path) == 0, "symlink link.bin");
    r = utg_write_file(link_path, new_text, strlen(new_text), &msg);
    CHECK(r == UTG_OK, "write over a link: %s (%s)", utg_result_string(r), msg.text);
    CHECK(is_regular(link_path) && file_holds(link_path, new_text), "link.bin is not a regular file with the new bytes");
    CHECK(file_holds(victim, old_text), "the link's target was overwritten");
    remove_dir(dir);
}

/* Temporaries of the same path left by a process that no longer exists are removed; those of a
   live process, of another path, and files not named like a temporary stay. */
static void test_write_file_sweeps_stale(void) {
    char dir[] = "/tmp/utg_io_XXXXXX", path[160], dead[160], alive[160], other[160], other2[160], plain[160];
    utg_msg msg;
    pid_t child;
    int status = 0;
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    child = fork();
    if (child == 0) _exit(0);
    CHECK(child > 0 && waitpid(child, &status, 0) == child, "fork and reap a child");
    snprintf(path, sizeof path, "%s/model.bin", dir);
    snprintf(plain, sizeof plain, "%s/model.bin.tmp", dir);
    snprintf(dead, sizeof dead, "%s/model.bin.%ld-0.utgtmp", dir, (long)child);
    snprintf(alive, sizeof alive, "%s/model.bin.%ld-0.utgtmp", dir, (long)getppid());
    snprintf(other, sizeof other, "%s/other.bin.%ld-0.utgtmp", dir, (long)child);
    snprintf(other2, sizeof other2, "%s/model.bin.old.%ld-0.utgtmp", dir, (long)child);
    CHECK(put_file(dead, "x") && put_file(alive, "x") && put_file(other, "x") && put_file(other2, "x") &&
          put_file(plain, "x"), "plant the files");
    CHECK(utg_write_file(path, "new", 3, &msg) == UTG_OK, "write: %s", msg.text);
    CHECK(!exists(dead), "the dead process's temporary of model.bin was left");
    CHECK(exists(alive), "a live process's temporary was removed");
    CHECK(exists(other) && exists(other2), "another path's temporary was removed");
    CHECK(exists(plain), "a file not named like a temporary was removed");
    CHECK(file_holds(path, "new"), "model.bin lacks the new bytes");
    remove_dir(dir);
}

/* A write that fails (here the rename: the target is a directory) returns UTG_ERR_IO naming the
   step, leaves the target as it was and no temporary behind. */
static void test_write_file_failure_leaves_nothing(void) {
    char dir[] = "/tmp/utg_io_XXXXXX", path[160];
    struct stat st;
    utg_msg msg;
    utg_result r;
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    snprintf(path, sizeof path, "%s/model.bin", dir);
    CHECK(mkdir(path, 0700) == 0, "mkdir");
    memset(&msg, 0, sizeof msg);
    r = utg_write_file(path, "new", 3, &msg);
    CHECK(r == UTG_ERR_IO, "writing over a directory: %s, expected UTG_ERR_IO", utg_result_string(r));
    CHECK(strstr(msg.text, "rename") && strstr(msg.text, "model.bin"), "message '%s' lacks the step (rename) or the path", msg.text);
    CHECK(lstat(path, &st) == 0 && S_ISDIR(st.st_mode), "the directory was replaced");
    CHECK(count_utgtmp(dir) == 0, "%d temporaries left behind", count_utgtmp(dir));
    CHECK(rmdir(path) == 0, "the directory is no longer empty");
    remove_dir(dir);
}

/* A file replaced by utg_write_file keeps its permission bits (a private 0600 file stays private). */
static void test_write_file_keeps_mode(void) {
    char dir[] = "/tmp/utg_io_XXXXXX", path[160];
    struct stat st;
    utg_msg msg;
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    snprintf(path, sizeof path, "%s/secret.bin", dir);
    memset(&msg, 0, sizeof msg);
    CHECK(utg_write_file(path, "old", 3, &msg) == UTG_OK && chmod(path, 0600) == 0, "first write: %s", msg.text);
    CHECK(utg_write_file(path, "new!", 4, &msg) == UTG_OK, "second write: %s", msg.text);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600 && st.st_size == 4, "mode %o size %lld after the rewrite",
          (unsigned)(st.st_mode & 07777), (long long)st.st_size);
    remove_dir(dir);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    RUN(test_safetensors_round_trip);
    RUN(test_safetensors_half_import);
    RUN(test_safetensors_malformed);
    RUN(test_safetensors_mutations);
    RUN(test_gradients_export);
    RUN(test_shards);
    RUN(test_safetensors_nonfinite);
    RUN(test_checkpoint_nonfinite);
    RUN(test_checkpoint_real_knob_text);
    RUN(test_write_file_symlinks);
    RUN(test_write_file_sweeps_stale);
    RUN(test_write_file_failure_leaves_nothing);
    RUN(test_write_file_keeps_mode);
    return TEST_SUMMARY();
}
