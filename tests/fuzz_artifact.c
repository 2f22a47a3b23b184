/* libFuzzer target over the UTGA artifact parser (make fuzz; clang -fsanitize=fuzzer,address,undefined).

   Two modes, chosen by the input itself:
   - an input that starts with "UTGA" is parsed as a whole artifact (envelope, stored or brotli
     codec, CRC, then everything behind it);
   - any other input is taken as a decoded *payload*: it is wrapped in a fresh envelope with the
     stored codec (exact raw_size and packed_size, CRC from utg_crc32), so mutations reach the payload
     header, the section directory, META, TENS and DATA checks without being stopped by the CRC.

   A successful parse is then used the way a caller would: every tensor through
   utg_artifact_tensor_floats and utg_artifact_tensor_entropy, every key (arrays element by element,
   strings), utg_artifact_find_kv / _find_tensor, utg_artifact_config; its invariants are checked
   (planes inside DATA, symbols in range, lookups consistent) and it is written again with
   utg_artifact_writer, which must succeed and parse back to the same keys and tensors. Any broken
   invariant aborts, so libFuzzer reports it as a crash. A failed parse must carry a message. */
#define UTG_MAX_ARTIFACT_RAW (64u * 1024u * 1024u) /* a smaller cap keeps brotli bombs cheap */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NAME "fuzz_artifact"
#include "fuzz.h"

static int is_core(const char *tag) { return !strcmp(tag, "META") || !strcmp(tag, "TENS") || !strcmp(tag, "DATA"); }

/* the parsed artifact as a user touches it; checks what must hold after a successful parse */
static void use_artifact(const utg_artifact *a) {
    int i;
    uint32_t j;
    const uint8_t *dbeg = a->payload + a->data_offset, *dend = dbeg + a->data_size;
    utg_config cfg;
    utg_msg msg;
    float probe;
    FZ_REQUIRE(a->major == UTG_ARTIFACT_MAJOR, "major %d", a->major);
    FZ_REQUIRE((uintptr_t)a->payload % UTG_ARTIFACT_ALIGN == 0, "payload not aligned");
    FZ_REQUIRE((uint64_t)a->data_offset + a->data_size <= a->raw_size, "DATA outside the payload");
    for (i = 0; i < a->n_kv; i++) {
        const utg_artifact_kv *kv = &a->kv[i];
        double sum = 0.0;
        FZ_REQUIRE(utg_artifact_find_kv(a, kv->key) == i, "key %s not found at its index %d", kv->key, i);
        FZ_REQUIRE(kv->type >= UTG_KV_U32 && kv->type <= UTG_KV_F32_ARRAY, "kv type %d", (int)kv->type);
        switch (kv->type) {
        case UTG_KV_U32_ARRAY:
            for (j = 0; j < kv->count; j++) sum += utg_artifact_kv_u32(kv, j);
            FZ_REQUIRE(utg_artifact_kv_u32(kv, kv->count) == 0, "u32 array read past its end");
            FZ_REQUIRE(utg_artifact_kv_f32(kv, 0) == 0.0f, "f32 read of a u32 array");
            break;
        case UTG_KV_F32_ARRAY:
            for (j = 0; j < kv->count; j++) {
                float f = utg_artifact_kv_f32(kv, j);
                FZ_REQUIRE(isfinite(f), "key %s element %u is not finite", kv->key, j);
                sum += f;
            }
            FZ_REQUIRE(utg_artifact_kv_f32(kv, kv->count) == 0.0f, "f32 array read past its end");
            break;
        case UTG_KV_STR:
            FZ_REQUIRE(kv->str != NULL, "string key %s without str", kv->key);
            FZ_REQUIRE(strlen(kv->str) <= kv->count, "string key %s longer than its count", kv->key);
            break;
        case UTG_KV_F32: case UTG_KV_F64:
            FZ_REQUIRE(isfinite(kv->f), "key %s not finite", kv->key);
            break;
        default: break;
        }
        FZ_REQUIRE(sum == sum, "NaN sum");
    }
    for (i = 0; i < a->n_tensors; i++) {
        const utg_artifact_tensor *t = &a->tensors[i];
        size_t numel = 1, k;
        float *buf;
        double h;
        int d;
        FZ_REQUIRE(utg_artifact_find_tensor(a, t->name) == i, "tensor %s not found at its index %d", t->name, i);
        FZ_REQUIRE(t->ndim >= 1 && t->ndim <= UTG_MAX_DIMS, "ndim %d", t->ndim);
        for (d = 0; d < t->ndim; d++) { FZ_REQUIRE(t->dims[d] >= 1, "dim %lld", (long long)t->dims[d]); numel *= (size_t)t->dims[d]; }
        FZ_REQUIRE(numel == t->numel, "numel %zu vs %zu", numel, t->numel);
        FZ_REQUIRE((const uint8_t *)t->values >= dbeg && (const uint8_t *)t->values + t->values_size <= dend, "tensor %s values outside DATA", t->name);
        if (t->scales_size)
            FZ_REQUIRE(t->scales && (const uint8_t *)t->scales >= dbeg && (const uint8_t *)t->scales + t->scales_size <= dend,
                       "tensor %s scales outside DATA", t->name);
        buf = (float *)malloc(numel * sizeof(float));
        if (!buf) continue;
        FZ_REQUIRE(utg_artifact_tensor_floats(a, i, buf, numel) == UTG_OK, "tensor %s floats", t->name);
        FZ_REQUIRE(utg_artifact_tensor_floats(a, i, buf, numel + 1) == UTG_ERR_MISMATCH, "tensor %s wrong n", t->name);
        if (t->dtype == UTG_DT_Q) {
            const int8_t *q = (const int8_t *)t->values;
            int r = (1 << (t->qbits - 1)) - 1;
            FZ_REQUIRE(t->qbits >= 2 && t->qbits <= 8, "qbits %d", t->qbits);
            for (k = 0; k < numel; k++) FZ_REQUIRE(q[k] <= r && q[k] >= -r, "symbol %d at %zu, qbits %d", q[k], k, t->qbits);
        }
        h = utg_artifact_tensor_entropy(a, i);
        FZ_REQUIRE(h >= 0.0 && h <= 8.0 + 1e-9, "entropy %g", h);
        free(buf);
    }
    FZ_REQUIRE(utg_artifact_tensor_floats(a, a->n_tensors, &probe, 1) == UTG_ERR_INVALID, "index past the end");
    FZ_REQUIRE(utg_artifact_tensor_floats(a, -1, &probe, 1) == UTG_ERR_INVALID, "index -1");
    FZ_REQUIRE(utg_artifact_tensor_entropy(a, a->n_tensors) == 0.0, "entropy past the end");
    memset(&msg, 0, sizeof msg);
    if (utg_artifact_config(a, &cfg, &msg) != UTG_OK) FZ_REQUIRE(msg.text[0], "utg_artifact_config failed without a message");
}

/* write the parsed artifact again; the writer must take it and the result must parse back equal */
static void round_trip(const utg_artifact *a) {
    utg_artifact_writer *w = NULL;
    utg_artifact *b = NULL;
    utg_msg msg;
    void *out = NULL;
    size_t out_size = 0;
    utg_result r;
    int i, k;
    uint32_t j;
    if (utg_artifact_writer_create(NULL, &w) != UTG_OK) return;
    for (i = 0; i < a->n_kv; i++) {
        const utg_artifact_kv *kv = &a->kv[i];
        uint32_t u32 = (uint32_t)kv->u;
        int32_t i32 = (int32_t)kv->i;
        uint64_t u64 = kv->u;
        float f32 = (float)kv->f;
        double f64 = kv->f;
        void *arr = NULL;
        switch (kv->type) {
        case UTG_KV_U32: r = utg_artifact_add_kv(w, kv->key, kv->type, &u32, 1); break;
        case UTG_KV_I32: r = utg_artifact_add_kv(w, kv->key, kv->type, &i32, 1); break;
        case UTG_KV_U64: r = utg_artifact_add_kv(w, kv->key, kv->type, &u64, 1); break;
        case UTG_KV_F32: r = utg_artifact_add_kv(w, kv->key, kv->type, &f32, 1); break;
        case UTG_KV_F64: r = utg_artifact_add_kv(w, kv->key, kv->type, &f64, 1); break;
        case UTG_KV_STR: r = utg_artifact_add_kv(w, kv->key, kv->type, kv->data, kv->count); break;
        default:
            arr = malloc(4 * (size_t)kv->count + 4);
            if (!arr) { utg_artifact_writer_destroy(w); return; }
            for (j = 0; j < kv->count; j++) {
                if (kv->type == UTG_KV_U32_ARRAY) ((uint32_t *)arr)[j] = utg_artifact_kv_u32(kv, j);
                else ((float *)arr)[j] = utg_artifact_kv_f32(kv, j);
            }
            r = utg_artifact_add_kv(w, kv->key, kv->type, arr, kv->count);
            free(arr);
            break;
        }
        FZ_REQUIRE(r == UTG_OK, "writer refused parsed key %s: %s", kv->key, utg_artifact_writer_message(w));
    }
    for (i = 0; i < a->n_tensors; i++) {
        const utg_artifact_tensor *t = &a->tensors[i];
        r = utg_artifact_add_tensor(w, t);
        if (r != UTG_OK && t->dtype == UTG_DT_F32) { utg_artifact_writer_destroy(w); return; } /* non-finite F32 values: the writer refuses them */
        FZ_REQUIRE(r == UTG_OK, "writer refused parsed tensor %s: %s", t->name, utg_artifact_writer_message(w));
    }
    for (i = 0; i < a->n_sections; i++) {
        const utg_artifact_section *s = &a->sections[i];
        if (is_core(s->tag)) continue;
        r = utg_artifact_add_section(w, s->tag, a->payload + s->offset, s->size);
        FZ_REQUIRE(r == UTG_OK, "writer refused parsed section %s: %s", s->tag, utg_artifact_writer_message(w));
    }
    r = utg_artifact_write(w, NULL, &out, &out_size, NULL);
    FZ_REQUIRE(r == UTG_OK, "writer failed: %s", utg_artifact_writer_message(w));
    memset(&msg, 0, sizeof msg);
    r = utg_artifact_parse(out, out_size, NULL, NULL, &b, &msg);
    FZ_REQUIRE(r == UTG_OK, "the writer's output does not parse: %s", msg.text);
    FZ_REQUIRE(b->n_kv == a->n_kv && b->n_tensors == a->n_tensors && b->n_sections == a->n_sections, "counts differ");
    for (i = 0; i < a->n_kv; i++) {
        const utg_artifact_kv *x = &a->kv[i], *y = &b->kv[i];
        FZ_REQUIRE(!strcmp(x->key, y->key) && x->type == y->type && x->count == y->count && x->u == y->u, "key %s differs", x->key);
        if (x->type == UTG_KV_STR || x->type == UTG_KV_U32_ARRAY || x->type == UTG_KV_F32_ARRAY)
            FZ_REQUIRE(!x->count || !memcmp(x->data, y->data, (size_t)x->count * (x->type == UTG_KV_STR ? 1 : 4)), "key %s data differs", x->key);
    }
    for (i = 0; i < a->n_tensors; i++) {
        const utg_artifact_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        FZ_REQUIRE(!strcmp(x->name, y->name) && x->dtype == y->dtype && x->qbits == y->qbits && x->scale_kind == y->scale_kind &&
                       x->group == y->group && x->ndim == y->ndim && x->values_size == y->values_size && x->scales_size == y->scales_size,
                   "tensor %s differs", x->name);
        for (k = 0; k < x->ndim; k++) FZ_REQUIRE(x->dims[k] == y->dims[k], "tensor %s dim %d differs", x->name, k);
        FZ_REQUIRE(!memcmp(x->values, y->values, x->values_size), "tensor %s values differ", x->name);
        FZ_REQUIRE(!x->scales_size || !memcmp(x->scales, y->scales, x->scales_size), "tensor %s scales differ", x->name);
    }
    utg_artifact_free(b);
    utg_free(NULL, out);
    utg_artifact_writer_destroy(w);
}

static void parse_one(const uint8_t *bytes, size_t size) {
    utg_artifact *a = NULL;
    utg_msg msg;
    utg_result r;
    memset(&msg, 0, sizeof msg);
    r = utg_artifact_parse(bytes, size, NULL, NULL, &a, &msg);
    if (r != UTG_OK) {
        FZ_REQUIRE(a == NULL, "failed parse left an artifact");
        FZ_REQUIRE(msg.text[0] != 0, "result %d without a message", (int)r);
        FZ_REQUIRE(memchr(msg.text, 0, sizeof msg.text) != NULL, "message not terminated");
        return;
    }
    FZ_REQUIRE(a != NULL, "UTG_OK without an artifact");
    use_artifact(a);
    round_trip(a);
    utg_artifact_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 4 && !memcmp(data, "UTGA", 4)) {
        parse_one(data, size);
    } else {
        /* payload mode: a fresh stored envelope around the input */
        uint8_t *env = (uint8_t *)malloc(UTG_ARTIFACT_ENVELOPE + size);
        uint32_t crc = utg_crc32(0, data, size);
        if (!env) return 0;
        memcpy(env, "UTGA", 4);
        env[4] = UTG_ARTIFACT_MAJOR;
        env[5] = UTG_CODEC_STORED;
        env[6] = env[7] = 0;
        env[8] = (uint8_t)size; env[9] = (uint8_t)(size >> 8); env[10] = (uint8_t)(size >> 16); env[11] = (uint8_t)(size >> 24);
        memcpy(env + 12, env + 8, 4);
        env[16] = (uint8_t)crc; env[17] = (uint8_t)(crc >> 8); env[18] = (uint8_t)(crc >> 16); env[19] = (uint8_t)(crc >> 24);
        if (size) memcpy(env + UTG_ARTIFACT_ENVELOPE, data, size);
        parse_one(env, UTG_ARTIFACT_ENVELOPE + size);
        free(env);
    }
    return 0;
}
