/* Tokenizer metadata and bits-per-byte (utgolf.h >>tokenizer): a hand-built SentencePiece model with every
   piece type, checked entry by entry; byte260; bpb on hand-computed examples; every malformed-input
   class with its message; every truncation and a seeded bit-flip run, each of which must be refused
   cleanly (tokenizer zeroed, nothing allocated) or load to a self-consistent result. Run it under
   ASan/UBSan too. If data/austen/sp1024.model exists it is loaded as well. */
/* small caps, so that both can be reached by small inputs (text > 2 x pieces: the count cap is
   tested with one-letter pieces) */
#define UTG_MAX_TOKENIZER_PIECES 20000
#define UTG_MAX_TOKENIZER_TEXT 100000
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"

#include "test.h"
#include "spm_expect.h"
#include <stdlib.h>

#define SP "\xe2\x96\x81" /* U+2581 */

/* ---- a counting allocator: every failure must leave nothing allocated ---- */
static long live_allocs;
static void *count_alloc(size_t n, void *user) {
    (void)user;
    live_allocs++;
    return malloc(n);
}
static void count_free(void *p, void *user) {
    (void)user;
    live_allocs--;
    free(p);
}
static utg_allocator counting(void) {
    utg_allocator a;
    a.alloc_fn = count_alloc;
    a.free_fn = count_free;
    a.user = NULL;
    return a;
}

#include "pbw.h"

/* ---- the hand-built model ---- */
typedef struct piece_spec {
    const char *text;
    float score;
    int type; /* 0 = field omitted, i.e. NORMAL */
    int boundary, lead, base;
} piece_spec;

#define N_SPECIAL 4
static const piece_spec specials[N_SPECIAL] = {
    {"<pad>", 0.0f, UTG_PIECE_CONTROL, 1, 0, 0},
    {"<s>", 0.0f, UTG_PIECE_CONTROL, 1, 0, 0},
    {"</s>", 0.0f, UTG_PIECE_CONTROL, 1, 0, 0},
    {"<unk>", 0.0f, UTG_PIECE_UNKNOWN, 1, 0, 0},
};
/* ids 260.. */
static const piece_spec extras[] = {
    {SP, -1.0f, UTG_PIECE_NORMAL, 0, 1, 0},                 /* 260 standalone space: 0 base bytes */
    {SP "the", -2.0f, 0, 0, 1, 3},                          /* 261 type omitted */
    {"\xc3\xa9", -3.5f, UTG_PIECE_NORMAL, 0, 0, 2},         /* 262 é */
    {SP SP, -4.25f, 0, 0, 1, 3},                            /* 263 only ONE ▁ is stripped */
    {"ab" SP, -5.0f, UTG_PIECE_NORMAL, 0, 0, 5},            /* 264 trailing ▁ is not a leading space */
    {"<mask>", 0.0f, UTG_PIECE_USER_DEFINED, 0, 0, 6},      /* 265 user-defined = normal */
    {SP "user", 0.0f, UTG_PIECE_USER_DEFINED, 0, 1, 4},     /* 266 */
    {"<unused>", 0.0f, UTG_PIECE_UNUSED, 1, 0, 0},          /* 267 unused = boundary */
    {"\xe6\x97\xa5\xe6\x9c\xac", -6.0f, 0, 0, 0, 6},        /* 268 日本 */
    {SP "\xe2\x82\xac", -7.0f, UTG_PIECE_NORMAL, 0, 1, 3},  /* 269 ▁€ */
    {"<ctl>", 0.0f, UTG_PIECE_CONTROL, 1, 0, 0},            /* 270 */
    {"1", -8.0f, UTG_PIECE_NORMAL, 0, 0, 1},                /* 271 */
    {"\xf0\x9f\x99\x82", -9.0f, UTG_PIECE_NORMAL, 0, 0, 4}, /* 272 🙂 */
    {"<0x41>", -10.0f, UTG_PIECE_NORMAL, 0, 0, 6},          /* 273 a NORMAL piece spelled like a byte */
};
#define N_EXTRA ((int)(sizeof extras / sizeof extras[0]))
#define N_HAND (N_SPECIAL + 256 + N_EXTRA)
enum { ID_PAD = 0, ID_BOS = 1, ID_EOS = 2, ID_UNK = 3, ID_SPACE = 260, ID_THE = 261, ID_E_ACUTE = 262, ID_MASK = 265,
       ID_UNUSED = 267, ID_EURO = 269, ID_CTL = 270, ID_A_BYTE = 4 + 0x41 };

static void byte_piece_name(int b, char out[7]) {
    static const char hex[] = "0123456789ABCDEF";
    out[0] = '<'; out[1] = '0'; out[2] = 'x'; out[3] = hex[b >> 4]; out[4] = hex[b & 15]; out[5] = '>'; out[6] = 0;
}

static void hand_trainer_spec(pbw *w) {
    pbw t = {NULL, 0, 0};
    pb_str(&t, 1, "corpus.txt");
    pb_int(&t, 3, 2); /* BPE */
    pb_int(&t, 4, N_HAND);
    pb_float(&t, 10, 0.999f);
    pb_key(&t, 11, 0); pb_varint(&t, (uint64_t)1 << 40); /* uint64 input_sentence_size, skipped */
    pb_int(&t, 25, 1);
    pb_int(&t, 35, 1); /* byte_fallback */
    pb_int(&t, 40, 3);
    pb_int(&t, 41, 1);
    pb_int(&t, 42, 2);
    pb_int(&t, 43, 0);
    pb_str(&t, 44, " \xe2\x81\x87 ");
    pb_key(&t, 300, 1); pb_raw(&t, "12345678", 8); /* an extension with wire type 1 */
    pb_msg(w, 2, &t);
}

static void hand_model(pbw *w) {
    pbw n = {NULL, 0, 0}, st = {NULL, 0, 0};
    uint8_t charsmap[100];
    char name[7];
    int i;
    for (i = 0; i < N_SPECIAL; i++) pb_piece(w, specials[i].text, specials[i].score, specials[i].type);
    for (i = 0; i < 256; i++) {
        byte_piece_name(i, name);
        pb_piece(w, name, 0.0f, UTG_PIECE_BYTE);
        if (i == 100) { pb_key(w, 251, 5); pb_raw(w, "abcd", 4); } /* unknown fields between pieces */
    }
    for (i = 0; i < N_EXTRA; i++) pb_piece(w, extras[i].text, extras[i].score, extras[i].type);
    hand_trainer_spec(w);
    pb_str(&n, 1, "nmt_nfkc");
    for (i = 0; i < 100; i++) charsmap[i] = (uint8_t)(i * 37);
    pb_bytes(&n, 2, charsmap, sizeof charsmap);
    pb_int(&n, 3, 0);
    pb_msg(w, 3, &n);
    pb_msg(w, 4, &st); /* empty self_test_data */
    pb_key(w, 250, 1); pb_raw(w, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    pb_key(w, 252, 0); pb_varint(w, 7);
}

static utg_result load(const pbw *w, utg_tokenizer *t, int table_size, utg_msg *msg) {
    utg_allocator a = counting();
    msg->text[0] = 0;
    return utg_tokenizer_load_spm(t, w->b, w->n, table_size, &a, msg);
}

static int is_zeroed(const utg_tokenizer *t) {
    utg_tokenizer z;
    memset(&z, 0, sizeof z);
    return memcmp(&z, t, sizeof z) == 0;
}

/* The result of any successful load must satisfy these, whatever the input was. */
static int consistent(const utg_tokenizer *t) {
    int id, n_unknown = 0;
    if (t->kind != UTG_TOKENIZER_SPM || t->n_pieces < 1 || t->table_size < t->n_pieces) return 0;
    for (id = 0; id < t->table_size; id++) {
        int boundary = 1, lead = 0, base = 0;
        if (id < t->n_pieces) {
            const char *p = utg_tokenizer_piece(t, id);
            int type = t->piece_type[id];
            if (!p || !*p || type < 1 || type > 6) return 0;
            if (type == UTG_PIECE_UNKNOWN) n_unknown++;
            spm_expected_row(p, type, &boundary, &lead, &base);
        }
        if (t->is_boundary[id] != boundary || t->has_leading_space[id] != lead || t->base_bytes[id] != base) return 0;
    }
    if (n_unknown != 1) return 0;
    if (t->unk_id >= t->n_pieces || t->bos_id >= t->n_pieces || t->eos_id >= t->n_pieces || t->pad_id >= t->n_pieces) return 0;
    if (t->unk_id >= 0 && t->piece_type[t->unk_id] != UTG_PIECE_UNKNOWN) return 0;
    if (t->bos_id >= 0 && t->piece_type[t->bos_id] != UTG_PIECE_CONTROL) return 0;
    if (t->eos_id >= 0 && t->piece_type[t->eos_id] != UTG_PIECE_CONTROL) return 0;
    if (t->pad_id >= 0 && t->piece_type[t->pad_id] != UTG_PIECE_CONTROL) return 0;
    if (t->space_piece_id >= 0 && strcmp(utg_tokenizer_piece(t, t->space_piece_id), SP) != 0) return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------------ */

static void test_spm_hand_model(void) {
    pbw w = {NULL, 0, 0};
    utg_tokenizer t;
    utg_msg msg;
    utg_result r;
    int id, bad = 0;
    hand_model(&w);
    r = load(&w, &t, 300, &msg);
    CHECK(r == UTG_OK, "load: %s", msg.text);
    if (r != UTG_OK) { free(w.b); return; }
    CHECK(t.kind == UTG_TOKENIZER_SPM, "kind %d", t.kind);
    CHECK(t.n_pieces == N_HAND, "n_pieces %d, want %d", t.n_pieces, N_HAND);
    CHECK(t.table_size == 300, "table_size %d", t.table_size);
    CHECK(t.pad_id == 0 && t.bos_id == 1 && t.eos_id == 2 && t.unk_id == 3, "specials %d %d %d %d", t.pad_id, t.bos_id, t.eos_id, t.unk_id);
    CHECK(t.space_piece_id == ID_SPACE, "space piece %d", t.space_piece_id);
    CHECK(t.model_type == 2 && t.byte_fallback == 1, "model_type %d byte_fallback %d", t.model_type, t.byte_fallback);
    for (id = 0; id < t.table_size; id++) {
        piece_spec e = {NULL, 0.0f, 0, 1, 0, 0}; /* ids past the model */
        char name[7];
        int want_type;
        if (id < N_SPECIAL) e = specials[id];
        else if (id < N_SPECIAL + 256) {
            byte_piece_name(id - N_SPECIAL, name);
            e.text = name; e.type = UTG_PIECE_BYTE; e.boundary = 0; e.base = 1;
        } else if (id < N_HAND) e = extras[id - N_SPECIAL - 256];
        if (t.is_boundary[id] != e.boundary || t.has_leading_space[id] != e.lead || t.base_bytes[id] != e.base) {
            if (bad++ < 5) printf("    id %d: boundary %d lead %d base %d, want %d %d %d\n", id, t.is_boundary[id],
                                  t.has_leading_space[id], t.base_bytes[id], e.boundary, e.lead, e.base);
        }
        if (id >= N_HAND) {
            CHECK(utg_tokenizer_piece(&t, id) == NULL, "piece %d past the model", id);
            continue;
        }
        want_type = e.type ? e.type : UTG_PIECE_NORMAL;
        CHECK(strcmp(utg_tokenizer_piece(&t, id), e.text) == 0, "piece %d text '%s'", id, utg_tokenizer_piece(&t, id));
        CHECK(t.piece_score[id] == e.score, "piece %d score %g want %g", id, t.piece_score[id], e.score);
        CHECK(t.piece_type[id] == want_type, "piece %d type %d want %d", id, t.piece_type[id], want_type);
    }
    CHECK(bad == 0, "%d table entries wrong", bad);
    CHECK(utg_tokenizer_piece(&t, -1) == NULL && utg_tokenizer_piece(NULL, 0) == NULL, "out-of-range piece");
    CHECK(consistent(&t), "consistency");
    utg_tokenizer_free(&t);
    CHECK(is_zeroed(&t) && live_allocs == 0, "free: zeroed %d, live allocations %ld", is_zeroed(&t), live_allocs);

    /* table_size below n_pieces: the tables are n_pieces long */
    r = load(&w, &t, 10, &msg);
    CHECK(r == UTG_OK && t.table_size == N_HAND, "table_size %d", t.table_size);
    utg_tokenizer_free(&t);
    free(w.b);
}

/* No trainer spec, no <s>: the defaults of SentencePieceProcessor. */
static void test_spm_minimal_and_names(void) {
    pbw w = {NULL, 0, 0}, ts = {NULL, 0, 0};
    utg_tokenizer t;
    utg_msg msg;
    pb_piece(&w, "<unk>", 0.0f, UTG_PIECE_UNKNOWN);
    CHECK(load(&w, &t, 0, &msg) == UTG_OK, "minimal: %s", msg.text);
    CHECK(t.n_pieces == 1 && t.table_size == 1 && t.unk_id == 0 && t.bos_id == -1 && t.eos_id == -1 && t.pad_id == -1 &&
              t.space_piece_id == -1 && t.model_type == 1 && t.byte_fallback == 0,
          "minimal: n %d unk %d bos %d eos %d pad %d space %d", t.n_pieces, t.unk_id, t.bos_id, t.eos_id, t.pad_id, t.space_piece_id);
    utg_tokenizer_free(&t);

    /* renamed specials; the numeric ids in the trainer spec are not what decides (as in SentencePiece);
       a NORMAL "<s>" next to the CONTROL one is legal (separate name spaces); a NORMAL piece named
       like pad_piece does not make a pad id */
    free(w.b);
    memset(&w, 0, sizeof w);
    pb_piece(&w, "[UNK]", 0.0f, UTG_PIECE_UNKNOWN);
    pb_piece(&w, "[BOS]", 0.0f, UTG_PIECE_CONTROL);
    pb_piece(&w, "<s>", 0.0f, UTG_PIECE_NORMAL);
    pb_piece(&w, "[PAD]", 0.0f, UTG_PIECE_NORMAL);
    pb_piece(&w, SP, 0.0f, UTG_PIECE_UNUSED);
    pb_str(&ts, 45, "[UNK]");
    pb_str(&ts, 46, "[BOS]");
    pb_str(&ts, 48, "[PAD]");
    pb_int(&ts, 41, -1); /* 10-byte varint */
    pb_int(&ts, 42, 1000000);
    pb_int(&ts, 4, -5); /* vocab_size: informational */
    pb_msg(&w, 2, &ts);
    CHECK(load(&w, &t, 0, &msg) == UTG_OK, "renamed: %s", msg.text);
    CHECK(t.unk_id == 0 && t.bos_id == 1 && t.eos_id == -1 && t.pad_id == -1, "renamed: unk %d bos %d eos %d pad %d", t.unk_id,
          t.bos_id, t.eos_id, t.pad_id);
    CHECK(t.space_piece_id == 4, "an UNUSED ▁ is still what piece_to_id returns: %d", t.space_piece_id);
    CHECK(consistent(&t), "consistency");
    utg_tokenizer_free(&t);
    CHECK(live_allocs == 0, "live allocations %ld", live_allocs);
    free(w.b);
}

static void test_byte260(void) {
    utg_tokenizer t;
    utg_msg msg;
    int id;
    CHECK(utg_tokenizer_byte260(&t, 0, NULL, &msg) == UTG_OK, "%s", msg.text);
    CHECK(t.kind == UTG_TOKENIZER_BYTE260 && t.n_pieces == 260 && t.table_size == 260, "kind %d n %d table %d", t.kind,
          t.n_pieces, t.table_size);
    CHECK(t.pad_id == 0 && t.bos_id == 1 && t.eos_id == 2 && t.unk_id == 3 && t.space_piece_id == 36, "specials");
    for (id = 0; id < 260; id++) {
        int special = id < 4;
        char name[7];
        CHECK(t.is_boundary[id] == special && t.base_bytes[id] == !special && t.has_leading_space[id] == 0, "id %d", id);
        if (!special) {
            byte_piece_name(id - 4, name);
            CHECK(strcmp(utg_tokenizer_piece(&t, id), name) == 0 && t.piece_type[id] == UTG_PIECE_BYTE, "id %d '%s'", id,
                  utg_tokenizer_piece(&t, id));
        }
    }
    CHECK(strcmp(utg_tokenizer_piece(&t, 1), "<s>") == 0 && t.piece_type[3] == UTG_PIECE_UNKNOWN, "specials' pieces");
    utg_tokenizer_free(&t);

    {
        utg_allocator a = counting();
        CHECK(utg_tokenizer_byte260(&t, 512, &a, &msg) == UTG_OK && t.table_size == 512 && t.n_pieces == 260, "table 512");
        for (id = 260; id < 512; id++) CHECK(t.is_boundary[id] == 1 && t.base_bytes[id] == 0, "pad id %d", id);
        utg_tokenizer_free(&t);
        CHECK(live_allocs == 0, "live %ld", live_allocs);
    }

    /* "hé!" as bytes after BOS: 4 bytes, BOS target 0 */
    {
        int32_t seq[] = {1, 4 + 'h', 4 + 0xc3, 4 + 0xa9, 4 + '!', 1, 4 + ' '};
        utg_bpb acc = {0, 0, 0};
        float loss[6] = {1, 1, 1, 1, 1, 1};
        utg_tokenizer_byte260(&t, 0, NULL, &msg);
        CHECK(utg_tokenizer_count_bytes(&t, seq, seq + 1, 6) == 5, "byte count %llu",
              (unsigned long long)utg_tokenizer_count_bytes(&t, seq, seq + 1, 6));
        CHECK(utg_bpb_add(&acc, &t, seq, seq + 1, loss, 6) == UTG_OK && acc.bytes == 5 && acc.tokens == 6, "acc");
        utg_tokenizer_free(&t);
    }
}

/* prev -> target pairs on the hand model, with their byte counts worked out by hand */
static void test_bpb_hand(void) {
    static const struct { int32_t prev, target, bytes; } pairs[] = {
        {ID_BOS, ID_THE, 3},        /* "▁the" after BOS: the ▁ costs nothing */
        {ID_THE, ID_SPACE, 1},      /* standalone ▁ after a normal token: one space */
        {ID_SPACE, ID_E_ACUTE, 2},  /* é */
        {ID_E_ACUTE, ID_THE, 4},    /* " the" */
        {ID_THE, ID_BOS, 0},        /* BOS target: 0 bytes, its loss still counts */
        {ID_BOS, ID_SPACE, 0},      /* ▁ right after BOS */
        {ID_THE, ID_A_BYTE, 1},     /* byte piece */
        {ID_A_BYTE, ID_EURO, 4},    /* " €" after a byte piece (bytes are not boundaries) */
        {ID_PAD, ID_THE, 3},        /* after pad, unk, unused, control: no space */
        {ID_UNK, ID_THE, 3},
        {ID_UNUSED, ID_THE, 3},
        {ID_CTL, ID_THE, 3},
        {ID_MASK, ID_THE, 4},       /* after a user-defined piece: a space */
        {290, ID_THE, 3},           /* after an id past the model (table 300) */
        {ID_THE, 290, 0},
        {ID_THE, 263, 4},           /* "▁▁": lead + 3 (the second ▁ counts as its UTF-8 bytes) */
        {ID_THE, 264, 5},           /* "ab▁" */
        {ID_THE, 273, 6},           /* NORMAL "<0x41>" */
    };
    enum { N = sizeof pairs / sizeof pairs[0] };
    pbw w = {NULL, 0, 0};
    utg_tokenizer t;
    utg_msg msg;
    int32_t prev[N], target[N];
    float loss[N];
    utg_bpb acc = {0, 0, 0};
    double loss_sum = 0.0, want_bpb;
    uint64_t total = 0;
    int i;
    hand_model(&w);
    CHECK(load(&w, &t, 300, &msg) == UTG_OK, "%s", msg.text);
    for (i = 0; i < N; i++) {
        uint64_t b = utg_tokenizer_count_bytes(&t, &pairs[i].prev, &pairs[i].target, 1);
        CHECK(b == (uint64_t)pairs[i].bytes, "pair %d (%d -> %d): %llu bytes, want %d", i, pairs[i].prev, pairs[i].target,
              (unsigned long long)b, pairs[i].bytes);
        prev[i] = pairs[i].prev;
        target[i] = pairs[i].target;
        loss[i] = 0.25f * (float)(i + 1);
        loss_sum += loss[i];
        total += (uint64_t)pairs[i].bytes;
    }
    CHECK(total == 49, "hand total %llu", (unsigned long long)total);
    CHECK(utg_tokenizer_count_bytes(&t, prev, target, N) == total, "count_bytes");
    CHECK(utg_bpb_add(&acc, &t, prev, target, loss, N) == UTG_OK, "add");
    CHECK(acc.tokens == N && acc.bytes == (double)total && acc.loss_sum == loss_sum, "sums %g %g %g", acc.tokens, acc.bytes, acc.loss_sum);
    want_bpb = loss_sum / (double)total / 0.6931471805599453;
    CHECK(fabs(utg_bpb_value(&acc) - want_bpb) <= 1e-15 * want_bpb, "bpb %.17g want %.17g", utg_bpb_value(&acc), want_bpb);
    CHECK(utg_bpb_loss(&acc) == loss_sum / N, "loss");
    /* the same data in two calls: same sums */
    {
        utg_bpb two = {0, 0, 0};
        utg_bpb_add(&two, &t, prev, target, loss, 7);
        utg_bpb_add(&two, &t, prev + 7, target + 7, loss + 7, N - 7);
        CHECK(two.tokens == acc.tokens && two.bytes == acc.bytes && fabs(two.loss_sum - acc.loss_sum) < 1e-12, "split");
    }

    /* refused: ids outside the table; nothing is added */
    {
        utg_bpb before = acc;
        int32_t p2[3] = {ID_BOS, ID_THE, -1}, t2[3] = {ID_THE, ID_SPACE, ID_THE}, t3[3] = {ID_THE, 300, ID_THE};
        CHECK(utg_bpb_add(&acc, &t, p2, t2, loss, 3) == UTG_ERR_INVALID, "negative prev");
        CHECK(utg_bpb_add(&acc, &t, t2, t3, loss, 3) == UTG_ERR_INVALID, "target == table_size");
        t3[1] = INT32_MIN;
        CHECK(utg_bpb_add(&acc, &t, t2, t3, loss, 3) == UTG_ERR_INVALID, "INT32_MIN");
        CHECK(memcmp(&before, &acc, sizeof acc) == 0, "acc changed by a refused call");
        CHECK(utg_bpb_add(&acc, &t, NULL, t2, loss, 3) == UTG_ERR_INVALID && utg_bpb_add(NULL, &t, p2, t2, loss, 3) == UTG_ERR_INVALID,
              "NULL");
        CHECK(utg_bpb_add(&acc, &t, NULL, NULL, NULL, 0) == UTG_OK, "n = 0");
        /* count_bytes treats out-of-range ids like ids past the model */
        CHECK(utg_tokenizer_count_bytes(&t, p2 + 2, t2 + 2, 1) == 3 && utg_tokenizer_count_bytes(&t, t2, t3 + 1, 1) == 0, "oob count");
    }
    {
        utg_bpb empty = {0, 0, 0};
        CHECK(utg_bpb_value(&empty) == 0.0 && utg_bpb_loss(&empty) == 0.0 && utg_bpb_value(NULL) == 0.0, "empty");
        /* only BOS targets: tokens but no bytes */
        utg_bpb_add(&empty, &t, prev + 4, target + 4, loss, 1);
        CHECK(empty.tokens == 1 && empty.bytes == 0 && utg_bpb_value(&empty) == 0.0, "no bytes");
    }
    utg_tokenizer_free(&t);
    free(w.b);
}

/* ---- malformed input ---- */

static void expect_refused(const char *name, const pbw *w, utg_result want_r, const char *want_msg) {
    utg_tokenizer t;
    utg_msg msg;
    utg_result r = load(w, &t, 0, &msg);
    CHECK(r == want_r, "%s: result %d (%s), want %d; message '%s'", name, (int)r, utg_result_string(r), (int)want_r, msg.text);
    CHECK(strstr(msg.text, want_msg) != NULL, "%s: message '%s' lacks '%s'", name, msg.text, want_msg);
    CHECK(is_zeroed(&t) && live_allocs == 0, "%s: zeroed %d, live allocations %ld", name, is_zeroed(&t), live_allocs);
    if (r == UTG_OK) utg_tokenizer_free(&t);
}

/* a model with just <unk> (16 bytes); the cases append to it */
static pbw with_unk(void) {
    pbw w = {NULL, 0, 0};
    pb_piece(&w, "<unk>", 0.0f, UTG_PIECE_UNKNOWN);
    return w;
}

/* varints: too long, above 2^64, cut off */
static void spm_bad_varints(void) {
    pbw w;
    int i;
    /* varints */
    w = with_unk();
    for (i = 0; i < 10; i++) pb_byte(&w, 0x80);
    pb_byte(&w, 0x01);
    expect_refused("11-byte varint", &w, UTG_ERR_FORMAT, "byte 16: varint longer than 10 bytes");
    free(w.b);
    w = with_unk();
    for (i = 0; i < 9; i++) pb_byte(&w, 0xff);
    pb_byte(&w, 0x02);
    expect_refused("varint above 2^64", &w, UTG_ERR_FORMAT, "above 2^64");
    free(w.b);
    w = with_unk();
    pb_byte(&w, 0x80);
    expect_refused("varint cut off", &w, UTG_ERR_FORMAT, "byte 16: varint cut off");
    free(w.b);
}

/* lengths past the end of the file or of the enclosing message; a cut-off fixed64 */
static void spm_bad_lengths(void) {
    pbw w;
    /* lengths */
    w = with_unk();
    pb_key(&w, 1, 2); pb_varint(&w, 100); pb_raw(&w, "abc", 3);
    expect_refused("length past the end", &w, UTG_ERR_FORMAT, "byte 17: length 100 runs past the end of its message at byte 21");
    free(w.b);
    w = with_unk();
    pb_key(&w, 1, 2); pb_varint(&w, 5); pb_byte(&w, 0x0a); pb_byte(&w, 0x10); pb_raw(&w, "abc", 3);
    pb_bytes(&w, 250, "padding-padding-padding", 23); /* the file goes on; the piece must not */
    expect_refused("length past the enclosing message", &w, UTG_ERR_FORMAT, "byte 19: length 16 runs past the end of its message at byte 23");
    free(w.b);
    w = with_unk();
    pb_key(&w, 1, 2); pb_varint(&w, (uint64_t)-1);
    expect_refused("length 2^64-1", &w, UTG_ERR_FORMAT, "runs past the end");
    free(w.b);
    w = with_unk();
    pb_key(&w, 250, 1); pb_raw(&w, "1234", 4);
    expect_refused("fixed64 cut off", &w, UTG_ERR_FORMAT, "8-byte fixed field cut off");
    free(w.b);
}

/* wire types and field numbers, including those of the top-level fields */
static void spm_bad_wire_types(void) {
    pbw w;
    /* wire types and field numbers */
    w = with_unk(); pb_key(&w, 7, 3);
    expect_refused("start group", &w, UTG_ERR_FORMAT, "field 7 is a group (wire type 3)");
    free(w.b);
    w = with_unk(); pb_key(&w, 7, 4);
    expect_refused("end group", &w, UTG_ERR_FORMAT, "wire type 4");
    free(w.b);
    w = with_unk(); pb_key(&w, 7, 6);
    expect_refused("wire type 6", &w, UTG_ERR_FORMAT, "wire type 6, which does not exist");
    free(w.b);
    w = with_unk(); pb_key(&w, 7, 7);
    expect_refused("wire type 7", &w, UTG_ERR_FORMAT, "wire type 7");
    free(w.b);
    w = with_unk(); pb_key(&w, 0, 0); pb_varint(&w, 1);
    expect_refused("field 0", &w, UTG_ERR_FORMAT, "field number 0");
    free(w.b);
    w = with_unk(); pb_varint(&w, ((uint64_t)1 << 32) << 3);
    expect_refused("field 2^32", &w, UTG_ERR_FORMAT, "outside 1..2^29-1");
    free(w.b);
    w = with_unk(); pb_int(&w, 1, 5);
    expect_refused("pieces as varint", &w, UTG_ERR_FORMAT, "pieces (field 1) has wire type 0, expected 2");
    free(w.b);
    w = with_unk(); pb_key(&w, 2, 5); pb_raw(&w, "abcd", 4);
    expect_refused("trainer_spec as fixed32", &w, UTG_ERR_FORMAT, "trainer_spec (field 2) has wire type 5");
    free(w.b);
    w = with_unk(); pb_int(&w, 3, 1);
    expect_refused("normalizer_spec as varint", &w, UTG_ERR_FORMAT, "normalizer_spec (field 3) has wire type 0");
    free(w.b);
}

/* a piece's text, score and type fields */
static void spm_bad_piece_fields(void) {
    pbw w, p;
    /* piece fields */
    w = with_unk(); memset(&p, 0, sizeof p); pb_int(&p, 1, 97); pb_msg(&w, 1, &p);
    expect_refused("piece text as varint", &w, UTG_ERR_FORMAT, "piece text (SentencePiece field 1) has wire type 0");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_str(&p, 1, "a"); pb_int(&p, 2, 1); pb_msg(&w, 1, &p);
    expect_refused("score as varint", &w, UTG_ERR_FORMAT, "piece score (SentencePiece field 2) has wire type 0, expected 5");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_str(&p, 1, "a"); pb_bytes(&p, 3, "x", 1); pb_msg(&w, 1, &p);
    expect_refused("type as bytes", &w, UTG_ERR_FORMAT, "piece type (SentencePiece field 3) has wire type 2");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_str(&p, 1, "a"); pb_key(&p, 2, 5); pb_raw(&p, "ab", 2); pb_msg(&w, 1, &p);
    expect_refused("score cut off", &w, UTG_ERR_FORMAT, "4-byte fixed field cut off");
    free(w.b);
    w = with_unk(); pb_piece(&w, "a", 0.0f, 7);
    expect_refused("type 7", &w, UTG_ERR_FORMAT, "piece 1 (byte 16): type 7 is not a SentencePiece type");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_str(&p, 1, "a"); pb_int(&p, 3, 0); pb_msg(&w, 1, &p);
    expect_refused("type 0", &w, UTG_ERR_FORMAT, "type 0 is not");
    free(w.b);
    w = with_unk(); pb_piece(&w, "a", 0.0f, -1);
    expect_refused("type -1", &w, UTG_ERR_FORMAT, "type -1 is not");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_str(&p, 1, "a"); pb_key(&p, 3, 0); pb_varint(&p, (uint64_t)1 << 33); pb_msg(&w, 1, &p);
    expect_refused("type 2^33", &w, UTG_ERR_FORMAT, "is not an int32");
    free(w.b);
}

/* trainer_spec fields with bad values or wire types */
static void spm_bad_trainer_spec(void) {
    pbw w, p;
    /* trainer spec */
    w = with_unk(); memset(&p, 0, sizeof p); pb_key(&p, 40, 0); pb_varint(&p, (uint64_t)1 << 40); pb_msg(&w, 2, &p);
    expect_refused("unk_id 2^40", &w, UTG_ERR_FORMAT, "trainer_spec.unk_id = 1099511627776 is not an int32");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_key(&p, 4, 0); pb_varint(&p, (uint64_t)1 << 31); pb_msg(&w, 2, &p);
    expect_refused("vocab_size 2^31", &w, UTG_ERR_FORMAT, "trainer_spec.vocab_size = 2147483648 is not an int32");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_str(&p, 41, "x"); pb_msg(&w, 2, &p);
    expect_refused("bos_id as bytes", &w, UTG_ERR_FORMAT, "trainer_spec.bos_id has wire type 2");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_int(&p, 46, 1); pb_msg(&w, 2, &p);
    expect_refused("bos_piece as varint", &w, UTG_ERR_FORMAT, "special piece name has wire type 0");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_float(&p, 35, 1.0f); pb_msg(&w, 2, &p);
    expect_refused("byte_fallback as float", &w, UTG_ERR_FORMAT, "trainer_spec.byte_fallback has wire type 5");
    free(w.b);
}

/* what SentencePiece's loader refuses: empty, NUL, bad UTF-8, duplicates, no unk, byte pieces */
static void spm_loader_refuses(void) {
    pbw w, p;
    int i;
    /* what SentencePiece's loader refuses */
    w = with_unk(); pb_piece(&w, "", 0.0f, UTG_PIECE_NORMAL);
    expect_refused("empty piece", &w, UTG_ERR_FORMAT, "piece 1 (byte 16) is empty");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_float(&p, 2, 1.0f); pb_msg(&w, 1, &p);
    expect_refused("piece without text", &w, UTG_ERR_FORMAT, "is empty");
    free(w.b);
    w = with_unk(); memset(&p, 0, sizeof p); pb_bytes(&p, 1, "a\0b", 3); pb_msg(&w, 1, &p);
    expect_refused("NUL in a piece", &w, UTG_ERR_FORMAT, "contains a NUL byte");
    free(w.b);
    {
        static const char *const invalid[] = {"\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "a\xe2\x96", "\xff", "\xe0\x80\x80"};
        for (i = 0; i < (int)(sizeof invalid / sizeof invalid[0]); i++) {
            w = with_unk();
            pb_piece(&w, invalid[i], 0.0f, UTG_PIECE_NORMAL);
            expect_refused("invalid UTF-8", &w, UTG_ERR_FORMAT, "is not valid UTF-8 (at byte 2");
            free(w.b);
        }
    }
    w = with_unk(); pb_piece(&w, "ab", 0.0f, 0); pb_piece(&w, "ab", 0.0f, UTG_PIECE_USER_DEFINED);
    expect_refused("duplicate", &w, UTG_ERR_FORMAT, "pieces 1 and 2 have the same text");
    free(w.b);
    w = with_unk(); pb_piece(&w, "<s>", 0.0f, UTG_PIECE_CONTROL); pb_piece(&w, "<s>", 0.0f, UTG_PIECE_UNKNOWN);
    expect_refused("second unk", &w, UTG_ERR_FORMAT, "piece 2 (byte 30) is a second unknown piece (the first is 0)");
    free(w.b);
    w = with_unk(); pb_piece(&w, "<s>", 0.0f, UTG_PIECE_CONTROL); pb_piece(&w, "<s>", 0.0f, UTG_PIECE_CONTROL);
    expect_refused("duplicate control", &w, UTG_ERR_FORMAT, "same text");
    free(w.b);
    memset(&w, 0, sizeof w); pb_piece(&w, "a", 0.0f, UTG_PIECE_NORMAL);
    expect_refused("no unk", &w, UTG_ERR_FORMAT, "no piece of type UNKNOWN");
    free(w.b);
    memset(&w, 0, sizeof w);
    expect_refused("empty file", &w, UTG_ERR_FORMAT, "no piece of type UNKNOWN");
    w = with_unk(); pb_piece(&w, "<0x4a>", 0.0f, UTG_PIECE_BYTE);
    expect_refused("lowercase byte piece", &w, UTG_ERR_FORMAT, "has type BYTE but is not spelled <0xNN>");
    free(w.b);
    w = with_unk(); pb_piece(&w, "<0x4A", 0.0f, UTG_PIECE_BYTE);
    expect_refused("short byte piece", &w, UTG_ERR_FORMAT, "not spelled <0xNN>");
    free(w.b);
    w = with_unk(); pb_piece(&w, "<0x4A>", 0.0f, UTG_PIECE_BYTE);
    expect_refused("byte piece without byte_fallback", &w, UTG_ERR_FORMAT, "byte_fallback is false");
    free(w.b);
    {
        char name[7];
        w = with_unk();
        for (i = 0; i < 255; i++) { byte_piece_name(i, name); pb_piece(&w, name, 0.0f, UTG_PIECE_BYTE); }
        memset(&p, 0, sizeof p); pb_int(&p, 35, 1); pb_msg(&w, 2, &p);
        expect_refused("255 byte pieces", &w, UTG_ERR_FORMAT, "only 255 of the 256 byte pieces");
        byte_piece_name(0, name); pb_piece(&w, name, 0.0f, UTG_PIECE_BYTE);
        expect_refused("a byte piece twice", &w, UTG_ERR_FORMAT, "only 255 of the 256");
        byte_piece_name(255, name); pb_piece(&w, name, 0.0f, UTG_PIECE_BYTE);
        expect_refused("a byte piece twice, all 256 present", &w, UTG_ERR_FORMAT, "pieces 1 and 256 have the same text");
        free(w.b);
    }
}

/* bad arguments to utg_tokenizer_load_spm and utg_tokenizer_byte260 */
static void spm_bad_arguments(void) {
    pbw w;
    /* arguments */
    {
        utg_tokenizer t;
        utg_msg msg;
        w = with_unk();
        CHECK(utg_tokenizer_load_spm(&t, w.b, w.n, -1, NULL, &msg) == UTG_ERR_INVALID && is_zeroed(&t), "table_size -1");
        CHECK(utg_tokenizer_load_spm(&t, w.b, w.n, UTG_MAX_TOKENIZER_PIECES + 1, NULL, &msg) == UTG_ERR_INVALID && is_zeroed(&t),
              "table_size too large: %s", msg.text);
        CHECK(utg_tokenizer_load_spm(&t, NULL, 5, 0, NULL, &msg) == UTG_ERR_INVALID && is_zeroed(&t), "NULL bytes");
        CHECK(utg_tokenizer_load_spm(NULL, w.b, w.n, 0, NULL, &msg) == UTG_ERR_INVALID, "NULL tok");
        CHECK(utg_tokenizer_byte260(&t, -3, NULL, &msg) == UTG_ERR_INVALID && is_zeroed(&t), "byte260 table -3");
        CHECK(utg_tokenizer_load_spm(&t, w.b, w.n, 0, NULL, NULL) == UTG_OK, "NULL msg is allowed");
        utg_tokenizer_free(&t);
        utg_tokenizer_free(NULL);
        free(w.b);
    }
}

static void test_spm_malformed(void) {
    spm_bad_varints();
    spm_bad_lengths();
    spm_bad_wire_types();
    spm_bad_piece_fields();
    spm_bad_trainer_spec();
    spm_loader_refuses();
    spm_bad_arguments();
}

static void test_spm_caps(void) {
    pbw w;
    int i;
    /* piece count: <unk> + UTG_MAX_TOKENIZER_PIECES one-letter pieces; piece 20000 starts at 16 + 19999 * 5 */
    w = with_unk();
    for (i = 0; i < UTG_MAX_TOKENIZER_PIECES; i++) pb_raw(&w, "\x0a\x03\x0a\x01\x61", 5);
    expect_refused("piece count cap", &w, UTG_ERR_FORMAT, "byte 100011: more than 20000 pieces");
    free(w.b);
    /* one piece longer than 65535 bytes */
    {
        char *big = (char *)malloc(UTG_MAX_PIECE_BYTES + 2);
        memset(big, 'a', UTG_MAX_PIECE_BYTES + 1);
        big[UTG_MAX_PIECE_BYTES + 1] = 0;
        w = with_unk();
        pb_piece(&w, big, 0.0f, UTG_PIECE_NORMAL);
        expect_refused("piece length cap", &w, UTG_ERR_FORMAT, "is 65536 bytes long, more than 65535");
        free(w.b);
        /* total text (this test sets UTG_MAX_TOKENIZER_TEXT to 100000): two pieces of 60000 */
        big[60000] = 0;
        w = with_unk();
        pb_piece(&w, big, 0.0f, UTG_PIECE_NORMAL);
        big[0] = 'b';
        pb_piece(&w, big, 0.0f, UTG_PIECE_NORMAL);
        expect_refused("total text cap", &w, UTG_ERR_FORMAT, "piece text exceeds 100000 bytes in total");
        free(w.b);
        free(big);
    }
}

/* Every truncation of the hand model: refused cleanly or a consistent (shorter) model. */
static void test_spm_truncations(void) {
    pbw w = {NULL, 0, 0};
    size_t len;
    int accepted = 0, refused = 0;
    hand_model(&w);
    for (len = 0; len < w.n; len++) {
        utg_tokenizer t;
        utg_msg msg;
        uint8_t *copy = (uint8_t *)malloc(len ? len : 1); /* exact size, so ASan sees any overread */
        utg_allocator a = counting();
        utg_result r;
        memcpy(copy, w.b, len);
        r = utg_tokenizer_load_spm(&t, copy, len, 0, &a, &msg);
        if (r == UTG_OK) {
            accepted++;
            CHECK(consistent(&t), "truncated to %zu: inconsistent", len);
            utg_tokenizer_free(&t);
        } else {
            refused++;
            CHECK(r == UTG_ERR_FORMAT && is_zeroed(&t) && msg.text[0], "truncated to %zu: result %d", len, (int)r);
        }
        CHECK(live_allocs == 0, "truncated to %zu: %ld live allocations", len, live_allocs);
        free(copy);
    }
    printf("      %zu truncations: %d accepted, %d refused\n", w.n, accepted, refused);
    CHECK(refused > 0 && accepted > 0, "accepted %d refused %d", accepted, refused);
    free(w.b);
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Seeded mutations: bit flips, boundary bytes, and lengths; accepted results must be consistent. */
static void test_spm_mutations(void) {
    static const uint8_t boundary[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x08, 0x0d};
    pbw w = {NULL, 0, 0};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    uint8_t *m;
    int i, accepted = 0, refused = 0, inconsistent = 0, unclean = 0;
    hand_model(&w);
    m = (uint8_t *)malloc(w.n);
    for (i = 0; i < 20000; i++) {
        utg_tokenizer t;
        utg_msg msg;
        utg_allocator a = counting();
        utg_result r;
        int k, edits = 1 + (int)(rng_next(&seed) % 4);
        memcpy(m, w.b, w.n);
        for (k = 0; k < edits; k++) {
            size_t at = (size_t)(rng_next(&seed) % w.n);
            uint64_t how = rng_next(&seed) % 3;
            if (how == 0) m[at] ^= (uint8_t)(1u << (rng_next(&seed) % 8));
            else if (how == 1) m[at] = boundary[rng_next(&seed) % sizeof boundary];
            else m[at] = (uint8_t)rng_next(&seed);
        }
        r = utg_tokenizer_load_spm(&t, m, w.n, (int)(rng_next(&seed) % 400), &a, &msg);
        if (r == UTG_OK) {
            accepted++;
            if (!consistent(&t) && inconsistent++ < 3) printf("    mutant %d: inconsistent result\n", i);
            utg_tokenizer_free(&t);
        } else {
            refused++;
            if ((r != UTG_ERR_FORMAT || !is_zeroed(&t) || !msg.text[0]) && unclean++ < 3)
                printf("    mutant %d: result %d, message '%s'\n", i, (int)r, msg.text);
        }
        if (live_allocs != 0 && unclean++ < 3) printf("    mutant %d: %ld live allocations\n", i, live_allocs);
        live_allocs = 0;
    }
    printf("      20000 mutants: %d accepted, %d refused\n", accepted, refused);
    CHECK(inconsistent == 0 && unclean == 0, "%d inconsistent, %d unclean", inconsistent, unclean);
    CHECK(accepted > 1000 && refused > 1000, "accepted %d refused %d: the mutator is not reaching both paths", accepted, refused);
    free(m);
    free(w.b);
}

/* The real tokenizer, if another step has produced it. */
static void test_austen_model(void) {
    static const char *const paths[] = {"data/austen/sp1024.model", "../data/austen/sp1024.model"};
    utg_tokenizer t;
    utg_msg msg;
    const char *path = NULL;
    FILE *f;
    int i;
    for (i = 0; i < 2 && !path; i++)
        if ((f = fopen(paths[i], "rb")) != NULL) { fclose(f); path = paths[i]; }
    if (!path) {
        printf("      note: data/austen/sp1024.model does not exist yet; real-model check skipped\n");
        return;
    }
    CHECK(utg_tokenizer_load_spm_file(&t, path, 1024, NULL, &msg) == UTG_OK, "%s", msg.text);
    CHECK(t.n_pieces == 1024, "n_pieces %d", t.n_pieces);
    CHECK(t.space_piece_id >= 0, "no standalone ▁ piece (Parameter Golf issue #897)");
    CHECK(t.pad_id == 0 && t.bos_id == 1 && t.eos_id == 2 && t.unk_id == 3, "specials %d %d %d %d", t.pad_id, t.bos_id, t.eos_id, t.unk_id);
    CHECK(t.byte_fallback == 1 && t.model_type == 2, "byte_fallback %d model_type %d", t.byte_fallback, t.model_type);
    CHECK(consistent(&t), "consistency");
    printf("      %s: %d pieces, standalone \xe2\x96\x81 is id %d\n", path, t.n_pieces, t.space_piece_id);
    utg_tokenizer_free(&t);
    /* seeded bit flips over the real file (its trainer and normalizer specs included) */
    {
        void *bytes = NULL;
        size_t size = 0;
        uint64_t seed = 12345;
        uint8_t *m;
        int k, accepted = 0, unclean = 0;
        utg_read_file(path, 1 << 24, &bytes, &size, &msg);
        m = (uint8_t *)malloc(size ? size : 1);
        for (i = 0; i < 1000 && size; i++) {
            utg_allocator a = counting();
            utg_result r;
            memcpy(m, bytes, size);
            for (k = 0; k < 3; k++) m[rng_next(&seed) % size] ^= (uint8_t)(1u << (rng_next(&seed) % 8));
            r = utg_tokenizer_load_spm(&t, m, size, 1024, &a, &msg);
            if (r == UTG_OK) {
                accepted++;
                if (!consistent(&t)) unclean++;
                utg_tokenizer_free(&t);
            } else if (r != UTG_ERR_FORMAT || !is_zeroed(&t)) {
                unclean++;
            }
            if (live_allocs) unclean++;
            live_allocs = 0;
        }
        printf("      1000 mutants of it: %d accepted\n", accepted);
        CHECK(unclean == 0, "%d mutants of the real model handled uncleanly", unclean);
        free(m);
        free(bytes);
    }
    CHECK(utg_tokenizer_load_spm_file(&t, "data/austen/does-not-exist.model", 0, NULL, &msg) == UTG_ERR_IO && is_zeroed(&t),
          "missing file");
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    RUN(test_spm_hand_model);
    RUN(test_spm_minimal_and_names);
    RUN(test_byte260);
    RUN(test_bpb_hand);
    RUN(test_spm_malformed);
    RUN(test_spm_caps);
    RUN(test_spm_truncations);
    RUN(test_spm_mutations);
    RUN(test_austen_model);
    return TEST_SUMMARY();
}
