/* A tiny protobuf writer for SentencePiece .model files made by the tests (test_tokenizer.c) and
   the spm fuzz target's seeds (fuzz_spm.c). Every function is static: include it in one file of a
   program. Out of memory aborts (tests only). */
#ifndef UTG_TEST_PBW_H
#define UTG_TEST_PBW_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct pbw {
    uint8_t *b;
    size_t n, cap;
} pbw;

static void pb_raw(pbw *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->b = (uint8_t *)realloc(w->b, w->cap);
    }
    if (n) memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void pb_byte(pbw *w, uint8_t v) { pb_raw(w, &v, 1); }
static void pb_varint(pbw *w, uint64_t v) {
    while (v >= 0x80) {
        pb_byte(w, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    pb_byte(w, (uint8_t)v);
}
static void pb_key(pbw *w, uint32_t field, int wire) { pb_varint(w, ((uint64_t)field << 3) | (uint64_t)wire); }
static void pb_int(pbw *w, uint32_t field, int64_t v) { /* int32 fields: negatives become 10 bytes */
    pb_key(w, field, 0);
    pb_varint(w, (uint64_t)v);
}
static void pb_bytes(pbw *w, uint32_t field, const void *p, size_t n) {
    pb_key(w, field, 2);
    pb_varint(w, n);
    pb_raw(w, p, n);
}
static void pb_str(pbw *w, uint32_t field, const char *s) { pb_bytes(w, field, s, strlen(s)); }
static void pb_float(pbw *w, uint32_t field, float f) {
    uint32_t u;
    int i;
    memcpy(&u, &f, 4);
    pb_key(w, field, 5);
    for (i = 0; i < 4; i++) pb_byte(w, (uint8_t)(u >> (8 * i)));
}
static void pb_msg(pbw *w, uint32_t field, pbw *sub) { /* appends and frees sub */
    pb_bytes(w, field, sub->b, sub->n);
    free(sub->b);
    memset(sub, 0, sizeof *sub);
}
/* type 0: leave the field out (proto default NORMAL) */
static void pb_piece(pbw *w, const char *text, float score, int type) {
    pbw p = {NULL, 0, 0};
    pb_str(&p, 1, text);
    pb_float(&p, 2, score);
    if (type) pb_int(&p, 3, type);
    pb_msg(w, 1, &p);
}

#endif
