/* libFuzzer target over the SentencePiece .model reader, utg_tokenizer_load_spm (make fuzz; clang
   -fsanitize=fuzzer,address,undefined). tests/fuzz_replay.c builds this file again with the normal
   compiler (UTG_STATIC, UTG_FUZZ_REPLAY) to replay tests/corpus/spm/.

   Small caps (512 pieces, 4 KiB of piece text) so that inputs of fuzzer size reach them. Every load
   goes through a counting allocator. A refusal must carry a message, leave the tokenizer zeroed and
   nothing allocated. A model that loads must be self-consistent (the rules tests/test_tokenizer.c
   checks: byte tables derived from piece types and texts, exactly one UNKNOWN piece, special ids of
   the right types, the space piece spelled "▁"); it is then used: every piece looked up, ids out of
   range refused, count_bytes and utg_bpb_add over every (prev, target) pair of a strided walk, a
   second load with a longer table that must agree with the first on every id of the model and pad
   the rest as boundary ids worth 0 bytes; utg_tokenizer_free zeroes it and frees everything. */
#define UTG_MAX_TOKENIZER_PIECES 512
#define UTG_MAX_TOKENIZER_TEXT 4096
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NAME "fuzz_spm"
#include "fuzz.h"
#include "spm_expect.h"

#define SP "\xe2\x96\x81" /* U+2581 */

static long live_allocs;
static void *count_alloc(size_t n, void *user) {
    void *p = malloc(n);
    (void)user;
    if (p) live_allocs++;
    return p;
}
static void count_free(void *p, void *user) {
    (void)user;
    if (p) live_allocs--;
    free(p);
}

static int is_zeroed(const utg_tokenizer *t) {
    utg_tokenizer z;
    memset(&z, 0, sizeof z);
    return memcmp(&z, t, sizeof z) == 0;
}

/* what must hold for any model that loads (as tests/test_tokenizer.c's consistent()) */
static void check_consistent(const utg_tokenizer *t, int table_size) {
    int id, n_unknown = 0;
    FZ_REQUIRE(t->kind == UTG_TOKENIZER_SPM, "kind %d", t->kind);
    FZ_REQUIRE(t->n_pieces >= 1 && t->n_pieces <= UTG_MAX_TOKENIZER_PIECES, "n_pieces %d", t->n_pieces);
    FZ_REQUIRE(t->table_size == (table_size > t->n_pieces ? table_size : t->n_pieces), "table_size %d for %d pieces, asked %d",
               t->table_size, t->n_pieces, table_size);
    FZ_REQUIRE(t->byte_fallback == 0 || t->byte_fallback == 1, "byte_fallback %d", t->byte_fallback);
    for (id = 0; id < t->table_size; id++) {
        int boundary = 1, lead = 0, base = 0;
        if (id < t->n_pieces) {
            const char *p = utg_tokenizer_piece(t, id);
            int type = t->piece_type[id];
            size_t len;
            FZ_REQUIRE(p && *p, "piece %d empty", id);
            FZ_REQUIRE(type >= 1 && type <= 6, "piece %d type %d", id, type);
            len = strlen(p);
            FZ_REQUIRE(len <= UTG_MAX_PIECE_BYTES, "piece %d is %zu bytes", id, len);
            if (type == UTG_PIECE_UNKNOWN) n_unknown++;
            spm_expected_row(p, type, &boundary, &lead, &base);
        }
        FZ_REQUIRE(t->is_boundary[id] == boundary && t->has_leading_space[id] == lead && t->base_bytes[id] == base,
                   "id %d: boundary %d lead %d base %d, want %d %d %d", id, t->is_boundary[id], t->has_leading_space[id],
                   t->base_bytes[id], boundary, lead, base);
    }
    FZ_REQUIRE(n_unknown == 1, "%d UNKNOWN pieces", n_unknown);
    /* unk_id is "the UNKNOWN piece", which every loaded model has (also when trainer_spec.unk_piece
       names no piece, e.g. one holding a NUL byte: PieceToId gives the unknown piece) */
    FZ_REQUIRE((t->unk_id >= 0 && t->unk_id < t->n_pieces && t->piece_type[t->unk_id] == UTG_PIECE_UNKNOWN),
               "unk_id %d", t->unk_id);
    FZ_REQUIRE(t->bos_id < t->n_pieces && (t->bos_id < 0 || t->piece_type[t->bos_id] == UTG_PIECE_CONTROL), "bos_id %d", t->bos_id);
    FZ_REQUIRE(t->eos_id < t->n_pieces && (t->eos_id < 0 || t->piece_type[t->eos_id] == UTG_PIECE_CONTROL), "eos_id %d", t->eos_id);
    FZ_REQUIRE(t->pad_id < t->n_pieces && (t->pad_id < 0 || t->piece_type[t->pad_id] == UTG_PIECE_CONTROL), "pad_id %d", t->pad_id);
    FZ_REQUIRE(t->bos_id >= -1 && t->eos_id >= -1 && t->pad_id >= -1 && t->space_piece_id >= -1, "special ids below -1");
    FZ_REQUIRE(t->space_piece_id < t->n_pieces && (t->space_piece_id < 0 || strcmp(utg_tokenizer_piece(t, t->space_piece_id), SP) == 0),
               "space piece %d", t->space_piece_id);
    FZ_REQUIRE(utg_tokenizer_piece(t, -1) == NULL && utg_tokenizer_piece(t, t->n_pieces) == NULL, "piece out of range");
}

/* count_bytes and bpb over a strided walk of (prev, target) pairs, including ids past the table */
static void use_tables(const utg_tokenizer *t) {
    enum { N = 64 };
    int32_t prev[N], target[N];
    float loss[N];
    uint64_t want = 0, got;
    utg_bpb acc;
    int k, in_range = 1;
    for (k = 0; k < N; k++) {
        prev[k] = (int32_t)(((uint32_t)k * 2654435761u) % (uint32_t)(t->table_size + 2)) - 1;
        target[k] = (int32_t)(((uint32_t)k * 40503u + 7u) % (uint32_t)(t->table_size + 2)) - 1;
        loss[k] = 0.5f;
        if (target[k] < 0 || target[k] >= t->table_size || prev[k] < 0 || prev[k] >= t->table_size) in_range = 0;
        /* the rule: base bytes, plus one for a leading space unless the previous token is a boundary */
        if (target[k] >= 0 && target[k] < t->table_size) {
            int pb = prev[k] < 0 || prev[k] >= t->table_size || t->is_boundary[prev[k]];
            want += t->base_bytes[target[k]] + (uint64_t)(t->has_leading_space[target[k]] && !pb);
        }
    }
    got = utg_tokenizer_count_bytes(t, prev, target, N);
    FZ_REQUIRE(got == want, "count_bytes %llu, by hand %llu", (unsigned long long)got, (unsigned long long)want);
    memset(&acc, 0, sizeof acc);
    if (in_range) {
        FZ_REQUIRE(utg_bpb_add(&acc, t, prev, target, loss, N) == UTG_OK && acc.tokens == N && acc.bytes == (double)want, "bpb_add");
    } else {
        utg_bpb before = acc;
        FZ_REQUIRE(utg_bpb_add(&acc, t, prev, target, loss, N) != UTG_OK, "bpb_add took an id outside the table");
        FZ_REQUIRE(memcmp(&before, &acc, sizeof acc) == 0, "a refused bpb_add changed the accumulator");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    utg_allocator al;
    utg_tokenizer t, t2;
    utg_msg msg;
    utg_result r;
    int id, longer;
    al.alloc_fn = count_alloc;
    al.free_fn = count_free;
    al.user = NULL;
    live_allocs = 0;
    memset(&msg, 0, sizeof msg);
    memset(&t, 0xAB, sizeof t); /* the reader must zero it on failure */
    r = utg_tokenizer_load_spm(&t, data, size, 0, &al, &msg);
    if (r != UTG_OK) {
        FZ_REQUIRE(r == UTG_ERR_FORMAT || r == UTG_ERR_UNSUPPORTED || r == UTG_ERR_NOMEM, "result %d (%s)", (int)r, msg.text);
        FZ_REQUIRE(msg.text[0] != 0 && memchr(msg.text, 0, sizeof msg.text), "result %d without a message", (int)r);
        FZ_REQUIRE(is_zeroed(&t), "a failed load left the tokenizer set");
        FZ_REQUIRE(live_allocs == 0, "a failed load left %ld allocations", live_allocs);
        return 0;
    }
    check_consistent(&t, 0);
    use_tables(&t);
    /* a longer table: the same entries, then boundary ids worth 0 bytes */
    longer = t.n_pieces + 5 <= UTG_MAX_TOKENIZER_PIECES ? t.n_pieces + 5 : t.n_pieces;
    memset(&msg, 0, sizeof msg);
    r = utg_tokenizer_load_spm(&t2, data, size, longer, &al, &msg);
    FZ_REQUIRE(r == UTG_OK, "second load with table %d: %s", longer, msg.text);
    check_consistent(&t2, longer);
    FZ_REQUIRE(t2.n_pieces == t.n_pieces && t2.bos_id == t.bos_id && t2.eos_id == t.eos_id && t2.unk_id == t.unk_id &&
                   t2.pad_id == t.pad_id && t2.space_piece_id == t.space_piece_id && t2.model_type == t.model_type &&
                   t2.byte_fallback == t.byte_fallback,
               "second load differs");
    for (id = 0; id < t.n_pieces; id++)
        FZ_REQUIRE(!strcmp(utg_tokenizer_piece(&t, id), utg_tokenizer_piece(&t2, id)) && t.piece_type[id] == t2.piece_type[id] &&
                       !memcmp(&t.piece_score[id], &t2.piece_score[id], sizeof(float)),
                   "piece %d differs between loads", id);
    use_tables(&t2);
    utg_tokenizer_free(&t2);
    utg_tokenizer_free(&t);
    FZ_REQUIRE(is_zeroed(&t) && is_zeroed(&t2), "utg_tokenizer_free did not zero the tokenizer");
    FZ_REQUIRE(live_allocs == 0, "%ld allocations left after utg_tokenizer_free", live_allocs);
    return 0;
}

#ifdef UTG_FUZZ_REPLAY
/* ---- seeds ---- */
#include "pbw.h"

static int seed_write(const char *dir, const char *name, pbw *w) {
    char path[1024];
    utg_msg msg;
    utg_tokenizer t;
    int ok;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ok = utg_write_file(path, w->b, w->n, &msg) == UTG_OK;
    if (!ok) fprintf(stderr, "%s\n", msg.text);
    /* a seed that does not load teaches the fuzzer little: say so */
    if (ok && utg_tokenizer_load_spm(&t, w->b, w->n, 0, NULL, &msg) != UTG_OK) fprintf(stderr, "note: seed %s does not load: %s\n", name, msg.text);
    else if (ok) utg_tokenizer_free(&t);
    free(w->b);
    memset(w, 0, sizeof *w);
    return ok ? 0 : 1;
}

/* the byte pieces <0x00>..<0xFF> */
static void byte_pieces(pbw *w, int from, int to) {
    static const char hex[] = "0123456789ABCDEF";
    char name[7];
    int b;
    for (b = from; b < to; b++) {
        name[0] = '<'; name[1] = '0'; name[2] = 'x'; name[3] = hex[b >> 4]; name[4] = hex[b & 15]; name[5] = '>'; name[6] = 0;
        pb_piece(w, name, 0.0f, UTG_PIECE_BYTE);
    }
}

/* Keeps the first `head` and last `tail` pieces of a real model and its trainer spec; the normalizer
   spec (a large charsmap, which the reader skips) becomes a small one. */
static int seed_from_real(const char *dir, const char *path, int head, int tail, const char *name) {
    void *buf = NULL;
    size_t size = 0, pos = 0;
    const uint8_t *b;
    int n_pieces = 0, id = 0, pass;
    pbw w = {NULL, 0, 0}, ns = {NULL, 0, 0};
    utg_msg msg;
    if (utg_read_file(path, 64u << 20, &buf, &size, &msg) != UTG_OK) {
        fprintf(stderr, "note: %s\n", msg.text);
        return 0; /* optional */
    }
    b = (const uint8_t *)buf;
    for (pass = 0; pass < 2; pass++) {
        pos = 0;
        id = 0;
        while (pos < size) {
            size_t start = pos;
            uint64_t key = 0, len = 0;
            int shift = 0;
            do { key |= (uint64_t)(b[pos] & 0x7f) << shift; shift += 7; } while (b[pos++] & 0x80 && pos < size);
            if ((key & 7) != 2) { fprintf(stderr, "note: %s: unexpected wire type\n", path); free(buf); free(w.b); return 0; }
            shift = 0;
            do { len |= (uint64_t)(b[pos] & 0x7f) << shift; shift += 7; } while (b[pos++] & 0x80 && pos < size);
            if (len > size - pos) { free(buf); free(w.b); return 0; }
            pos += (size_t)len;
            if (pass == 0) { if ((key >> 3) == 1) n_pieces++; continue; }
            if ((key >> 3) == 1) {
                if (id < head || id >= n_pieces - tail) pb_raw(&w, b + start, pos - start);
                id++;
            } else if ((key >> 3) == 3) {
                pb_str(&ns, 1, "identity");
                pb_int(&ns, 3, 1);
                pb_msg(&w, 3, &ns);
            } else {
                pb_raw(&w, b + start, pos - start);
            }
        }
    }
    free(buf);
    return seed_write(dir, name, &w);
}

int utg_fuzz_spm_seeds(const char *dir);
int utg_fuzz_spm_seeds(const char *dir) {
    pbw w = {NULL, 0, 0}, ts = {NULL, 0, 0}, ns = {NULL, 0, 0};
    int fails = 0;
    /* 1: the smallest model: one UNKNOWN piece */
    pb_piece(&w, "<unk>", 0.0f, UTG_PIECE_UNKNOWN);
    fails += seed_write(dir, "seed-minimal.model", &w);
    /* 2: byte-fallback BPE in the Parameter Golf layout: 4 specials, 256 bytes, then every piece kind */
    pb_piece(&w, "<pad>", 0.0f, UTG_PIECE_CONTROL);
    pb_piece(&w, "<s>", 0.0f, UTG_PIECE_CONTROL);
    pb_piece(&w, "</s>", 0.0f, UTG_PIECE_CONTROL);
    pb_piece(&w, "<unk>", 0.0f, UTG_PIECE_UNKNOWN);
    byte_pieces(&w, 0, 256);
    pb_piece(&w, SP, -1.0f, UTG_PIECE_NORMAL);
    pb_piece(&w, SP "the", -2.0f, 0);
    pb_piece(&w, "\xc3\xa9", -3.5f, UTG_PIECE_NORMAL);
    pb_piece(&w, SP SP, -4.25f, 0);
    pb_piece(&w, "<mask>", 0.0f, UTG_PIECE_USER_DEFINED);
    pb_piece(&w, "<unused>", 0.0f, UTG_PIECE_UNUSED);
    pb_piece(&w, SP "\xe2\x82\xac", -7.0f, UTG_PIECE_NORMAL);
    pb_str(&ts, 1, "corpus.txt");
    pb_int(&ts, 3, 2);
    pb_int(&ts, 4, 267);
    pb_key(&ts, 11, 0); pb_varint(&ts, (uint64_t)1 << 40);
    pb_int(&ts, 35, 1);
    pb_int(&ts, 40, 3);
    pb_int(&ts, 41, 1);
    pb_int(&ts, 42, 2);
    pb_int(&ts, 43, 0);
    pb_key(&ts, 300, 1); pb_raw(&ts, "12345678", 8);
    pb_msg(&w, 2, &ts);
    pb_str(&ns, 1, "nmt_nfkc");
    pb_bytes(&ns, 2, "\x01\x02\x03", 3);
    pb_msg(&w, 3, &ns);
    pb_key(&w, 250, 5); pb_raw(&w, "abcd", 4);
    fails += seed_write(dir, "seed-bytes.model", &w);
    /* 3: renamed specials, unigram, negative int32 ids (10-byte varints), an UNUSED space piece */
    pb_piece(&w, "[UNK]", 0.0f, UTG_PIECE_UNKNOWN);
    pb_piece(&w, "[BOS]", 0.0f, UTG_PIECE_CONTROL);
    pb_piece(&w, "[EOS]", 0.0f, UTG_PIECE_CONTROL);
    pb_piece(&w, "<s>", 0.0f, UTG_PIECE_NORMAL);
    pb_piece(&w, SP, 0.0f, UTG_PIECE_UNUSED);
    pb_piece(&w, "ab", -1.5f, UTG_PIECE_NORMAL);
    pb_str(&ts, 45, "[UNK]");
    pb_str(&ts, 46, "[BOS]");
    pb_str(&ts, 47, "[EOS]");
    pb_str(&ts, 48, "[PAD]");
    pb_int(&ts, 3, 1);
    pb_int(&ts, 41, -1);
    pb_int(&ts, 42, 1000000);
    pb_msg(&w, 2, &ts);
    fails += seed_write(dir, "seed-renamed.model", &w);
    /* 4: char model, no trainer spec, a few multi-byte pieces */
    pb_piece(&w, "<unk>", 0.0f, UTG_PIECE_UNKNOWN);
    pb_piece(&w, "\xe6\x97\xa5", -1.0f, 0);
    pb_piece(&w, "\xf0\x9f\x99\x82", -2.0f, 0);
    pb_piece(&w, SP "x", -3.0f, 0);
    pb_str(&ts, 1, "c");
    pb_int(&ts, 3, 4);
    pb_msg(&w, 2, &ts);
    fails += seed_write(dir, "seed-char.model", &w);
    /* 5: the Austen model cut down to 300 pieces (the bytes and the first merges, the last pieces) */
    fails += seed_from_real(dir, "data/austen/sp1024.model", 280, 20, "seed-austen-cut.model");
    return fails;
}
#endif
