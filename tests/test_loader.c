/* Datasets and training loaders (utgolf.h >>loader): glob expansion and order, shard header checks, reads
   across shard ends, the vocabulary check, the sequential loader against a line-by-line model of
   train_gpt.py's TokenStream + DistributedTokenLoader, the shuffled loader's epoch coverage and
   determinism, checkpoint state (round trip, corrupt and mismatched records), undo on failure, and
   the validation truncation.

   Default build defines _POSIX_C_SOURCE (mkdtemp, fseeko in the loader). Build with -DTEST_ISO_ONLY
   to exercise the plain-fseek path: the temp files then share a unique prefix in /tmp instead of a
   private directory. */
#ifndef TEST_ISO_ONLY
#define _POSIX_C_SOURCE 200809L
#endif
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"

#include "test.h"
#include <stdlib.h>
#include <time.h>
#ifndef TEST_ISO_ONLY
#include <unistd.h> /* rmdir */
#endif

/* ---- temp files ---- */

static char g_base[256]; /* "<private dir>/" or a unique "/tmp/..._" prefix */
static char g_files[128][320];
static int g_n_files;

static void tmp_init(void) {
#ifndef TEST_ISO_ONLY
    char dir[] = "/tmp/utg_loader_XXXXXX";
    if (!mkdtemp(dir)) { printf("mkdtemp failed\n"); exit(2); }
    snprintf(g_base, sizeof g_base, "%s/", dir);
#else
    snprintf(g_base, sizeof g_base, "/tmp/utg_loader_%lu_%lu_", (unsigned long)time(NULL), (unsigned long)clock());
#endif
}

static void tmp_cleanup(void) {
    int i;
    for (i = 0; i < g_n_files; i++) remove(g_files[i]);
#ifndef TEST_ISO_ONLY
    g_base[strlen(g_base) - 1] = 0;
    rmdir(g_base);
#endif
}

static const char *tpath(const char *name) { /* rotating static buffers: up to 4 live at once */
    static char buf[4][320];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s%s", g_base, name);
    return buf[k];
}

static void write_raw(const char *name, const void *bytes, size_t n) {
    const char *p = tpath(name);
    utg_msg msg;
    int i;
    if (utg_write_file(p, bytes, n, &msg) != UTG_OK) { printf("cannot write %s: %s\n", p, msg.text); exit(2); }
    for (i = 0; i < g_n_files; i++)
        if (strcmp(g_files[i], p) == 0) return;
    snprintf(g_files[g_n_files++], sizeof g_files[0], "%s", p);
}

/* A shard of n ids; returns its bytes (caller frees) so tests can corrupt them. */
static uint8_t *shard_bytes(const uint16_t *ids, size_t n, size_t *size) {
    uint8_t *b;
    *size = UTG_SHARD_HEADER_BYTES + 2 * n;
    b = (uint8_t *)malloc(*size);
    utg_shard_write(ids, n, b, *size);
    return b;
}

static void write_shard(const char *name, const uint16_t *ids, size_t n) {
    size_t size;
    uint8_t *b = shard_bytes(ids, n, &size);
    write_raw(name, b, size);
    free(b);
}

/* Shards named prefix_0.bin, prefix_1.bin ... of the given lengths; token = first_value + global index. */
static void write_counting_shards(const char *prefix, const size_t *lens, int n, uint16_t first_value) {
    uint16_t ids[4096];
    char name[64];
    size_t g = 0, i;
    int s;
    for (s = 0; s < n; s++) {
        for (i = 0; i < lens[s]; i++) ids[i] = (uint16_t)(first_value + g++);
        snprintf(name, sizeof name, "%s_%d.bin", prefix, s);
        write_shard(name, ids, lens[s]);
    }
}

static utg_dataset *open_ds(const char *pattern_name, int vocab) {
    utg_dataset *ds = NULL;
    utg_msg msg;
    utg_result r = utg_dataset_open(tpath(pattern_name), vocab, NULL, &ds, &msg);
    if (r != UTG_OK) printf("    open %s: %s\n", pattern_name, msg.text);
    return ds;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- datasets ---- */

static void test_glob_sort(void) {
    uint16_t ids[3] = {1, 2, 3};
    utg_dataset *ds;
    utg_msg msg;
    write_shard("g_a_9.bin", ids, 1);
    write_shard("g_a_10.bin", ids, 2);
    write_shard("g_a_1.bin", ids, 3);
    write_shard("g_b_2.bin", ids, 1);
    write_shard("g_A_5.bin", ids, 2);
    ds = open_ds("g_a_*.bin", 0);
    CHECK(ds && utg_dataset_shard_count(ds) == 3, "3 shards expected");
    if (ds) { /* bytewise: "1" < "10" < "9" */
        CHECK(ends_with(utg_dataset_shard_path(ds, 0), "g_a_1.bin"), "%s", utg_dataset_shard_path(ds, 0));
        CHECK(ends_with(utg_dataset_shard_path(ds, 1), "g_a_10.bin"), "%s", utg_dataset_shard_path(ds, 1));
        CHECK(ends_with(utg_dataset_shard_path(ds, 2), "g_a_9.bin"), "%s", utg_dataset_shard_path(ds, 2));
        CHECK(utg_dataset_shard_tokens(ds, 0) == 3 && utg_dataset_shard_tokens(ds, 1) == 2 &&
              utg_dataset_shard_tokens(ds, 2) == 1 && utg_dataset_tokens(ds) == 6, "token counts");
        CHECK(utg_dataset_shard_path(ds, 3) == NULL && utg_dataset_shard_path(ds, -1) == NULL &&
              utg_dataset_shard_tokens(ds, 3) == 0, "out-of-range accessors");
        utg_dataset_close(ds);
    }
    ds = open_ds("g_*.bin", 0); /* 'A' (0x41) sorts before 'a' (0x61) */
    CHECK(ds && utg_dataset_shard_count(ds) == 5, "5 shards expected");
    if (ds) {
        CHECK(ends_with(utg_dataset_shard_path(ds, 0), "g_A_5.bin"), "%s", utg_dataset_shard_path(ds, 0));
        CHECK(ends_with(utg_dataset_shard_path(ds, 4), "g_b_2.bin"), "%s", utg_dataset_shard_path(ds, 4));
        utg_dataset_close(ds);
    }
    ds = open_ds("g_b_2.bin", 0); /* no wildcard: one path */
    CHECK(ds && utg_dataset_shard_count(ds) == 1 && utg_dataset_tokens(ds) == 1, "single path");
    utg_dataset_close(ds);
    CHECK(utg_dataset_open(tpath("g_b_3.bin"), 0, NULL, &ds, &msg) == UTG_ERR_IO && ds == NULL, "missing single path");
    CHECK(utg_dataset_open("x", 0, NULL, NULL, &msg) == UTG_ERR_INVALID, "NULL out");
    CHECK(utg_dataset_open(tpath("g_a_*.bin"), -1, NULL, &ds, &msg) == UTG_ERR_INVALID, "negative vocab");
}

static void expect_open_fails(const char *name, utg_result want, const char *needle) {
    utg_dataset *ds = (utg_dataset *)&ds; /* must be reset to NULL */
    utg_msg msg;
    utg_result r;
    msg.text[0] = 0;
    r = utg_dataset_open(tpath(name), 1024, NULL, &ds, &msg);
    CHECK(r == want, "%s: got %d (%s), want %d", name, (int)r, msg.text, (int)want);
    CHECK(ds == NULL, "%s: *out not reset", name);
    CHECK(strstr(msg.text, needle) != NULL, "%s: message '%s' lacks '%s'", name, msg.text, needle);
}

static void test_header_validation(void) {
    uint16_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t size;
    uint8_t *good = shard_bytes(ids, 8, &size), *b = (uint8_t *)malloc(size + 1);
    memcpy(b, good, size);
    b[0] ^= 1;
    write_raw("h_magic.bin", b, size);
    expect_open_fails("h_magic.bin", UTG_ERR_FORMAT, "magic");
    expect_open_fails("h_magic.bin", UTG_ERR_FORMAT, "h_magic.bin");
    memcpy(b, good, size);
    b[4] = 2;
    write_raw("h_version.bin", b, size);
    expect_open_fails("h_version.bin", UTG_ERR_FORMAT, "version 2");
    memcpy(b, good, size);
    b[size] = 0;
    write_raw("h_long.bin", b, size + 1);
    expect_open_fails("h_long.bin", UTG_ERR_FORMAT, "header says 8 tokens (1040 bytes) but the file has 1041");
    write_raw("h_short.bin", good, size - 1);
    expect_open_fails("h_short.bin", UTG_ERR_FORMAT, "the file has 1039");
    write_raw("h_trunc.bin", good, 500);
    expect_open_fails("h_trunc.bin", UTG_ERR_FORMAT, "shorter than the 1024-byte");
    write_raw("h_empty.bin", good, 0);
    expect_open_fails("h_empty.bin", UTG_ERR_FORMAT, "0 bytes");
    memcpy(b, good, size);
    b[11] = 0x80; /* num_tokens < 0 as int32 */
    write_raw("h_neg.bin", b, size);
    expect_open_fails("h_neg.bin", UTG_ERR_FORMAT, "-2147483640 tokens");
    expect_open_fails("h_nothing_*.bin", UTG_ERR_IO, "h_nothing_*.bin");
    /* one bad shard spoils the set, and the message names it */
    write_raw("h_set_0.bin", good, size);
    write_raw("h_set_1.bin", good, size - 2);
    write_raw("h_set_2.bin", good, size);
    expect_open_fails("h_set_*.bin", UTG_ERR_FORMAT, "h_set_1.bin");
    free(good);
    free(b);
}

static void test_read_across_shards(void) {
    static const size_t lens[5] = {5, 0, 7, 1, 3};
    int32_t out[32];
    utg_dataset *ds;
    utg_msg msg;
    uint64_t off, n, i;
    int ok = 1;
    write_counting_shards("r", lens, 5, 100);
    ds = open_ds("r_*.bin", 1024);
    CHECK(ds && utg_dataset_tokens(ds) == 16, "16 tokens");
    if (!ds) return;
    for (off = 0; off <= 16; off++)
        for (n = 0; off + n <= 16; n++) {
            memset(out, 0xff, sizeof out);
            if (utg_dataset_read(ds, off, (size_t)n, out, &msg) != UTG_OK) { ok = 0; printf("    %s\n", msg.text); continue; }
            for (i = 0; i < n; i++) ok &= out[i] == (int32_t)(100 + off + i);
            ok &= out[n] == -1; /* nothing written past n */
        }
    CHECK(ok, "every (offset, n) read equals the concatenation");
    CHECK(utg_dataset_read(ds, 17, 0, out, &msg) == UTG_ERR_INVALID, "offset past the end");
    CHECK(utg_dataset_read(ds, 10, 7, out, &msg) == UTG_ERR_INVALID && strstr(msg.text, "past the end"), "%s", msg.text);
    CHECK(utg_dataset_read(ds, 16, 0, NULL, &msg) == UTG_OK, "empty read at the end");
    utg_dataset_close(ds);
}

/* Reads longer than the 32768-token scratch buffer, and reads in random order (seeks). */
static void test_read_large(void) {
    enum { A = 70001, B = 33000 };
    uint16_t *ids = (uint16_t *)malloc(sizeof(uint16_t) * (A + B));
    int32_t *out = (int32_t *)malloc(sizeof(int32_t) * (A + B));
    utg_dataset *ds;
    utg_msg msg;
    uint64_t x = 12345;
    size_t i;
    int k, ok = 1;
    for (i = 0; i < A + B; i++) ids[i] = (uint16_t)((i * 2654435761u) >> 7);
    write_shard("big_0.bin", ids, A);
    write_shard("big_1.bin", ids + A, B);
    ds = open_ds("big_*.bin", 0);
    if (!ds) { free(ids); free(out); return; }
    CHECK(utg_dataset_read(ds, 0, A + B, out, &msg) == UTG_OK, "%s", msg.text);
    for (i = 0; i < A + B; i++) ok &= out[i] == (int32_t)ids[i];
    for (k = 0; k < 200; k++) {
        size_t off, n;
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        off = (size_t)(x >> 33) % (A + B);
        n = (size_t)(x >> 13) % 50000;
        if (n > A + B - off) n = A + B - off;
        if (utg_dataset_read(ds, off, n, out, &msg) != UTG_OK) { ok = 0; continue; }
        for (i = 0; i < n; i++) ok &= out[i] == (int32_t)ids[off + i];
    }
    CHECK(ok, "large and random reads equal the data");
    utg_dataset_close(ds);
    free(ids);
    free(out);
}

static void test_vocab_check(void) {
    uint16_t a[5] = {1, 2, 3, 1500, 4}, b[2] = {5, 6};
    int32_t out[8];
    utg_dataset *ds;
    utg_msg msg;
    write_shard("v_0.bin", a, 5);
    write_shard("v_1.bin", b, 2);
    ds = open_ds("v_*.bin", 1024); /* opening does not read payloads */
    CHECK(ds != NULL, "open");
    if (!ds) return;
    CHECK(utg_dataset_read(ds, 0, 3, out, &msg) == UTG_OK, "ids below the bad one");
    CHECK(utg_dataset_read(ds, 2, 3, out, &msg) == UTG_ERR_FORMAT, "id 1500 >= 1024 refused");
    CHECK(strstr(msg.text, "v_0.bin") && strstr(msg.text, "token 3") && strstr(msg.text, "1500"), "message: %s", msg.text);
    CHECK(utg_dataset_read(ds, 4, 3, out, &msg) == UTG_OK && out[0] == 4 && out[1] == 5 && out[2] == 6,
          "reads after a refused one work");
    utg_dataset_close(ds);
    ds = open_ds("v_*.bin", 0);
    CHECK(ds && utg_dataset_read(ds, 3, 1, out, &msg) == UTG_OK && out[0] == 1500, "vocab 0: no check");
    utg_dataset_close(ds);
    ds = open_ds("v_*.bin", 1501);
    CHECK(ds && utg_dataset_read(ds, 0, 7, out, &msg) == UTG_OK, "vocab 1501 admits 1500");
    utg_dataset_close(ds);
}

static void test_read_val(void) {
    static const size_t lens[2] = {10, 13};
    utg_dataset *ds;
    utg_msg msg;
    int32_t *v = NULL;
    size_t n = 0, i;
    int ok = 1;
    write_counting_shards("val", lens, 2, 7);
    ds = open_ds("val_*.bin", 0);
    if (!ds) return;
    CHECK(utg_dataset_read_val(ds, 4, &v, &n, NULL, &msg) == UTG_OK && n == 21, "((23-1)/4)*4+1 = 21, got %zu", n);
    for (i = 0; v && i < n; i++) ok &= v[i] == (int32_t)(7 + i);
    CHECK(ok, "validation tokens are the stream prefix");
    utg_free(NULL, v);
    CHECK(utg_dataset_read_val(ds, 22, &v, &n, NULL, &msg) == UTG_OK && n == 23, "seq_len 22: all 23");
    utg_free(NULL, v);
    CHECK(utg_dataset_read_val(ds, 1, &v, &n, NULL, &msg) == UTG_OK && n == 23, "seq_len 1: all 23");
    utg_free(NULL, v);
    CHECK(utg_dataset_read_val(ds, 23, &v, &n, NULL, &msg) == UTG_ERR_INVALID && v == NULL && n == 0, "too short");
    CHECK(strstr(msg.text, "too short for seq_len 23"), "message: %s", msg.text);
    CHECK(utg_dataset_read_val(ds, 0, &v, &n, NULL, &msg) == UTG_ERR_INVALID, "seq_len 0");
    utg_dataset_close(ds);
}

#ifdef __linux__
/* A sparse 3 GB shard: offsets past 2 GiB and 2^31 bytes must seek correctly. */
static void test_large_offsets(void) {
    const uint32_t n = 1500000000u;
    uint8_t head[UTG_SHARD_HEADER_BYTES], tail[8] = {7, 0, 8, 0, 9, 0, 10, 0};
    const char *p = tpath("huge_0.bin");
    int32_t out[6];
    utg_dataset *ds;
    utg_msg msg;
    FILE *f = fopen(p, "wb");
    if (!f) { CHECK(0, "cannot create %s", p); return; }
    snprintf(g_files[g_n_files++], sizeof g_files[0], "%s", p);
    memset(head, 0, sizeof head);
    utg__wr_u32le(head, UTG_SHARD_MAGIC);
    utg__wr_u32le(head + 4, UTG_SHARD_VERSION);
    utg__wr_u32le(head + 8, n);
    fwrite(head, 1, sizeof head, f);
    CHECK(fseek(f, (long)(UTG_SHARD_HEADER_BYTES + 2ull * (n - 4)), SEEK_SET) == 0, "seek to write");
    fwrite(tail, 1, 8, f);
    fclose(f);
    ds = open_ds("huge_*.bin", 11);
    CHECK(ds && utg_dataset_tokens(ds) == n, "3 GB shard opens");
    if (!ds) return;
    CHECK(utg_dataset_read(ds, n - 6, 6, out, &msg) == UTG_OK, "%s", msg.text);
    CHECK(out[0] == 0 && out[1] == 0 && out[2] == 7 && out[3] == 8 && out[4] == 9 && out[5] == 10, "tail ids");
    CHECK(utg_dataset_read(ds, 1u << 30, 2, out, &msg) == UTG_OK && out[0] == 0, "back below 2 GiB");
    CHECK(utg_dataset_read(ds, n - 1, 1, out, &msg) == UTG_OK && out[0] == 10, "last token");
    utg_dataset_close(ds);
}
#endif

/* ---- sequential loader vs. a model of train_gpt.py ---- */

/* TokenStream, statement by statement: file_idx, pos, and take() advancing lazily past a shard's end. */
typedef struct {
    const int32_t *const *tokens;
    const size_t *lens;
    int n_files, file_idx;
    size_t pos;
} pg_stream;

static void pg_take(pg_stream *s, size_t n, int32_t *out) {
    size_t remaining = n;
    while (remaining > 0) {
        size_t avail = s->lens[s->file_idx] - s->pos, k;
        if (avail == 0) { /* _advance_file */
            s->file_idx = (s->file_idx + 1) % s->n_files;
            s->pos = 0;
            continue;
        }
        k = remaining < avail ? remaining : avail;
        memcpy(out, s->tokens[s->file_idx] + s->pos, k * sizeof(int32_t));
        out += k;
        s->pos += k;
        remaining -= k;
    }
}

/* DistributedTokenLoader.next_batch with local_tokens = n_seqs * seq_len. */
static void pg_next_batch(pg_stream *s, int rank, int world, size_t local, int32_t *x, int32_t *y) {
    size_t span = local + 1;
    int32_t *chunk = (int32_t *)malloc(sizeof(int32_t) * span * (size_t)world);
    pg_take(s, span * (size_t)world, chunk);
    memcpy(x, chunk + (size_t)rank * span, local * sizeof(int32_t));
    memcpy(y, chunk + (size_t)rank * span + 1, local * sizeof(int32_t));
    free(chunk);
}

static void check_sequential(utg_dataset *ds, const int32_t *const *tokens, const size_t *lens, int n_files,
                             int world, int rank) {
    enum { T = 3, CALLS = 60 };
    pg_stream model;
    utg_loader *ld = NULL;
    utg_msg msg;
    int32_t x[64], y[64], mx[64], my[64];
    uint64_t consumed = 0;
    int call, ok = 1, epoch_ok = 1;
    model.tokens = tokens; model.lens = lens; model.n_files = n_files; model.file_idx = 0; model.pos = 0;
    CHECK(utg_loader_create(ds, UTG_LOADER_SEQUENTIAL, T, rank, world, 0, NULL, &ld, &msg) == UTG_OK, "%s", msg.text);
    if (!ld) return;
    for (call = 0; call < CALLS; call++) {
        int n_seqs = 1 + call % 13; /* up to 39 + 1 tokens per rank: chunks longer than the data */
        size_t local = (size_t)n_seqs * T;
        if (utg_loader_next(ld, x, y, n_seqs, &msg) != UTG_OK) { ok = 0; printf("    %s\n", msg.text); break; }
        pg_next_batch(&model, rank, world, local, mx, my);
        ok &= memcmp(x, mx, local * 4) == 0 && memcmp(y, my, local * 4) == 0;
        consumed += (local + 1) * (uint64_t)world;
        epoch_ok &= utg_loader_epoch(ld) == consumed / utg_dataset_tokens(ds);
    }
    CHECK(ok, "world %d rank %d: batches differ from the TokenStream model", world, rank);
    CHECK(epoch_ok, "world %d rank %d: wrap count", world, rank);
    utg_loader_destroy(ld);
}

static void test_sequential_matches_parameter_golf(void) {
    static const size_t lens[4] = {11, 0, 7, 13}; /* 31 tokens, an empty shard in the middle */
    int32_t t0[11], t2[7], t3[13];
    const int32_t *tokens[4];
    utg_dataset *ds;
    size_t i;
    write_counting_shards("seq", lens, 4, 1);
    for (i = 0; i < 11; i++) t0[i] = (int32_t)(1 + i);
    for (i = 0; i < 7; i++) t2[i] = (int32_t)(12 + i);
    for (i = 0; i < 13; i++) t3[i] = (int32_t)(19 + i);
    tokens[0] = t0; tokens[1] = t0; tokens[2] = t2; tokens[3] = t3;
    ds = open_ds("seq_*.bin", 64);
    if (!ds) return;
    check_sequential(ds, tokens, lens, 4, 1, 0);
    check_sequential(ds, tokens, lens, 4, 2, 0);
    check_sequential(ds, tokens, lens, 4, 2, 1);
    check_sequential(ds, tokens, lens, 4, 3, 2);
    utg_dataset_close(ds);
}

/* ---- shuffled loader ---- */

/* Shards with token value = stream offset, so a window names its own start. Rank 1 owns a shard too
   short for one window (3 tokens) and one of exactly seq_len + 1 tokens (9). */
static const size_t k_shuf_lens[6] = {40, 3, 57, 25, 9, 33};
enum { SHUF_T = 8 };

static utg_dataset *shuffled_dataset(void) {
    static int written;
    if (!written) write_counting_shards("shuf", k_shuf_lens, 6, 0);
    written = 1;
    return open_ds("shuf_*.bin", 0);
}

static void test_shuffled_epochs(void) {
    enum { EPOCHS = 3, MAXW = 16 };
    utg_dataset *ds = shuffled_dataset();
    int rank, owner[6] = {-1, -1, -1, -1, -1, -1};
    if (!ds) return;
    for (rank = 0; rank < 2; rank++) {
        /* starts[epoch][shard][k]: window starts drawn, relative to the shard */
        static uint64_t starts[EPOCHS][6][64];
        int count[EPOCHS][6], e, s, j, ok = 1, draws = 0, differs = 0;
        utg_loader *ld = NULL;
        utg_msg msg;
        int32_t x[SHUF_T], y[SHUF_T];
        memset(count, 0, sizeof count);
        CHECK(utg_loader_create(ds, UTG_LOADER_SHUFFLED, SHUF_T, rank, 2, 42, NULL, &ld, &msg) == UTG_OK, "%s", msg.text);
        if (!ld) continue;
        for (;;) {
            uint64_t start, first;
            if (utg_loader_next(ld, x, y, 1, &msg) != UTG_OK) { ok = 0; break; }
            e = (int)utg_loader_epoch(ld);
            if (e >= EPOCHS) break;
            start = (uint64_t)x[0];
            for (j = 0; j < SHUF_T; j++) ok &= x[j] == (int32_t)(start + j) && y[j] == (int32_t)(start + j + 1);
            for (s = 0, first = 0; first + k_shuf_lens[s] <= start; s++) first += k_shuf_lens[s];
            ok &= start + SHUF_T < first + k_shuf_lens[s]; /* all T + 1 tokens inside shard s */
            ok &= s % 2 == rank;                           /* owned */
            if (owner[s] != -1 && owner[s] != rank) ok = 0; /* ranks disjoint */
            owner[s] = rank;
            if (count[e][s] < 64) starts[e][s][count[e][s]++] = start - first;
            draws++;
        }
        CHECK(ok, "rank %d: windows well formed and owned", rank);
        for (e = 0; e < EPOCHS; e++)
            for (s = rank; s < 6; s += 2) {
                uint64_t n = k_shuf_lens[s], p = UINT64_MAX, max_phase, want;
                int seen[MAXW] = {0};
                if (n < SHUF_T + 1) { CHECK(count[e][s] == 0, "short shard %d drawn", s); continue; }
                for (j = 0; j < count[e][s]; j++) p = starts[e][s][j] < p ? starts[e][s][j] : p;
                max_phase = SHUF_T - 1 < n - SHUF_T - 1 ? SHUF_T - 1 : n - SHUF_T - 1;
                want = (n - 1 - p) / SHUF_T;
                CHECK(p <= max_phase, "epoch %d shard %d: phase %llu > %llu", e, s, (unsigned long long)p,
                      (unsigned long long)max_phase);
                CHECK((uint64_t)count[e][s] == want, "epoch %d shard %d: %d windows, want %llu", e, s, count[e][s],
                      (unsigned long long)want);
                for (j = 0; j < count[e][s]; j++) {
                    uint64_t rel = starts[e][s][j] - p, k = rel / SHUF_T;
                    CHECK(rel % SHUF_T == 0 && k < MAXW && !seen[k], "epoch %d shard %d: window %llu repeated or off-grid",
                          e, s, (unsigned long long)starts[e][s][j]);
                    if (k < MAXW) seen[k] = 1;
                }
                if (e > 0 && (count[e][s] != count[0][s] || memcmp(starts[e][s], starts[0][s], sizeof(uint64_t) * (size_t)count[0][s])))
                    differs = 1;
            }
        CHECK(differs, "rank %d: every epoch repeated epoch 0's phases and order", rank);
        CHECK(draws > 0, "rank %d drew nothing", rank);
        utg_loader_destroy(ld);
    }
    utg_dataset_close(ds);
}

/* Run `calls` batches of n_seqs; return a malloc'd record of inputs and targets. */
static int32_t *record(utg_loader *ld, int calls, int n_seqs, int seq_len) {
    size_t per = (size_t)n_seqs * (size_t)seq_len, c;
    int32_t *r = (int32_t *)calloc(2 * per * (size_t)calls, sizeof(int32_t));
    utg_msg msg;
    for (c = 0; c < (size_t)calls; c++)
        if (utg_loader_next(ld, r + 2 * per * c, r + 2 * per * c + per, n_seqs, &msg) != UTG_OK)
            printf("    next: %s\n", msg.text);
    return r;
}

static int same_stream(utg_loader *a, utg_loader *b, int calls, int n_seqs, int seq_len) {
    int32_t *ra = record(a, calls, n_seqs, seq_len), *rb = record(b, calls, n_seqs, seq_len);
    int same = memcmp(ra, rb, sizeof(int32_t) * 2 * (size_t)n_seqs * (size_t)seq_len * (size_t)calls) == 0;
    free(ra);
    free(rb);
    return same;
}

static utg_loader *mk(utg_dataset *ds, utg_loader_kind kind, int T, int rank, int world, uint64_t seed) {
    utg_loader *ld = NULL;
    utg_msg msg;
    if (utg_loader_create(ds, kind, T, rank, world, seed, NULL, &ld, &msg) != UTG_OK) printf("    create: %s\n", msg.text);
    return ld;
}

/* The shard of each sequence is drawn with probability proportional to its remaining windows: with
   seq_len 1, shard A has 30 windows and B 10, so a fresh loader's first draw is A with p = 0.75.
   Over 1000 seeds the count lies within 4.4 standard deviations (13.7) of 750. */
static void test_shuffled_proportional(void) {
    static const size_t lens[2] = {31, 11};
    utg_dataset *ds;
    int32_t x[1], y[1];
    utg_msg msg;
    int seed, from_a = 0, after_b_is_a = 0, b_first = 0;
    write_counting_shards("prop", lens, 2, 0);
    ds = open_ds("prop_*.bin", 0);
    if (!ds) return;
    for (seed = 0; seed < 1000; seed++) {
        utg_loader *ld = NULL;
        int a;
        if (utg_loader_create(ds, UTG_LOADER_SHUFFLED, 1, 0, 1, (uint64_t)seed, NULL, &ld, &msg) != UTG_OK) break;
        utg_loader_next(ld, x, y, 1, &msg);
        a = x[0] < 31;
        from_a += a;
        if (!a) { /* then A has 30 of 39 left */
            b_first++;
            utg_loader_next(ld, x, y, 1, &msg);
            after_b_is_a += x[0] < 31;
        }
        utg_loader_destroy(ld);
    }
    CHECK(from_a >= 690 && from_a <= 810, "first draw from A in %d of 1000 (expected about 750)", from_a);
    CHECK(b_first > 0 && after_b_is_a * 39 > b_first * 30 - 4 * 39 * 3 && after_b_is_a * 39 < b_first * 30 + 4 * 39 * 3,
          "after B, A in %d of %d (expected 30/39)", after_b_is_a, b_first);
    utg_dataset_close(ds);
}

/* The seed reaches the phases and window orders, not only the shard choice: with one shard there is
   no choice to make. */
static void test_shuffled_seed_orders(void) {
    uint16_t ids[200];
    utg_dataset *ds;
    utg_loader *a, *b;
    int i;
    for (i = 0; i < 200; i++) ids[i] = (uint16_t)i;
    write_shard("one_0.bin", ids, 200);
    ds = open_ds("one_*.bin", 0);
    if (!ds) return;
    a = mk(ds, UTG_LOADER_SHUFFLED, 8, 0, 1, 1);
    b = mk(ds, UTG_LOADER_SHUFFLED, 8, 0, 1, 2);
    CHECK(a && b && !same_stream(a, b, 10, 2, 8), "seeds 1 and 2 give the same window order");
    utg_loader_destroy(a);
    utg_loader_destroy(b);
    utg_dataset_close(ds);
}

static void test_shuffled_determinism(void) {
    utg_dataset *ds = shuffled_dataset();
    utg_loader *a, *b, *c, *d;
    if (!ds) return;
    a = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 0, 1, 7);
    b = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 0, 1, 7);
    c = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 0, 1, 8);
    d = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 0, 1, 7);
    CHECK(a && b && c && d, "create");
    if (a && b && c && d) {
        CHECK(same_stream(a, b, 40, 3, SHUF_T), "same seed, same batches");
        CHECK(!same_stream(c, d, 40, 3, SHUF_T), "another seed, other batches");
    }
    utg_loader_destroy(a); utg_loader_destroy(b); utg_loader_destroy(c); utg_loader_destroy(d);
    a = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 1, 2, 7);
    b = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 1, 2, 7);
    CHECK(a && b && same_stream(a, b, 40, 2, SHUF_T), "rank 1 of 2: same seed, same batches");
    utg_loader_destroy(a); utg_loader_destroy(b);
    utg_dataset_close(ds);
}

/* Save after `before` batches; the continuation of the saved loader, of a fresh loader restored from
   the record, and of the first loader rewound with it, are one stream. */
static void check_save_restore(utg_dataset *ds, utg_loader_kind kind, int T, int rank, int world, int before, int n_seqs) {
    utg_loader *a = mk(ds, kind, T, rank, world, 99), *b = mk(ds, kind, T, rank, world, 99);
    size_t size;
    uint8_t *state;
    int32_t *ra, *rb, *rc;
    size_t bytes;
    utg_msg msg;
    if (!a || !b) { utg_loader_destroy(a); utg_loader_destroy(b); return; }
    free(record(a, before, n_seqs, T));
    size = utg_loader_state_size(a);
    state = (uint8_t *)malloc(size);
    CHECK(utg_loader_save(a, state, size - 1) == UTG_ERR_INVALID, "small buffer refused");
    CHECK(utg_loader_save(a, state, size) == UTG_OK, "save");
    ra = record(a, 25, n_seqs, T);
    CHECK(utg_loader_restore(b, state, size, &msg) == UTG_OK, "restore: %s", msg.text);
    rb = record(b, 25, n_seqs, T);
    CHECK(utg_loader_restore(a, state, size, &msg) == UTG_OK, "rewind: %s", msg.text);
    rc = record(a, 25, n_seqs, T);
    bytes = sizeof(int32_t) * 2 * (size_t)n_seqs * (size_t)T * 25;
    CHECK(memcmp(ra, rb, bytes) == 0, "kind %d rank %d/%d: restored loader continues differently", (int)kind, rank, world);
    CHECK(memcmp(ra, rc, bytes) == 0, "kind %d rank %d/%d: rewound loader continues differently", (int)kind, rank, world);
    free(ra); free(rb); free(rc); free(state);
    utg_loader_destroy(a);
    utg_loader_destroy(b);
}

static void test_save_restore(void) {
    utg_dataset *ds = shuffled_dataset();
    int before;
    if (!ds) return;
    for (before = 0; before < 12; before += 5) { /* 25 further batches cross several epochs / wraps */
        check_save_restore(ds, UTG_LOADER_SEQUENTIAL, 4, 0, 1, before, 3);
        check_save_restore(ds, UTG_LOADER_SEQUENTIAL, 4, 1, 2, before, 5);
        check_save_restore(ds, UTG_LOADER_SHUFFLED, SHUF_T, 0, 1, before, 3);
        check_save_restore(ds, UTG_LOADER_SHUFFLED, SHUF_T, 1, 2, before, 2);
    }
    utg_dataset_close(ds);
}

static void test_reset(void) {
    utg_dataset *ds = shuffled_dataset();
    utg_loader_kind kinds[2] = {UTG_LOADER_SEQUENTIAL, UTG_LOADER_SHUFFLED};
    int k;
    if (!ds) return;
    for (k = 0; k < 2; k++) {
        utg_loader *a = mk(ds, kinds[k], SHUF_T, 0, 2, 5), *b = mk(ds, kinds[k], SHUF_T, 0, 2, 5);
        if (!a || !b) continue;
        free(record(a, 17, 3, SHUF_T));
        utg_loader_reset(a);
        CHECK(utg_loader_epoch(a) == 0, "epoch after reset");
        CHECK(same_stream(a, b, 20, 3, SHUF_T), "kind %d: reset gives the initial stream", k);
        utg_loader_destroy(a);
        utg_loader_destroy(b);
    }
    utg_dataset_close(ds);
}

/* FNV-1a 64, as the state record's trailer, to forge records that pass the checksum. */
static void reseal(uint8_t *p, size_t size) {
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;
    for (i = 0; i + 8 < size; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    for (i = 0; i < 8; i++) p[size - 8 + i] = (uint8_t)(h >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Restore of `bad` must fail with `want` and leave `ld` where `good` says it is. */
static void expect_refused(utg_loader *ld, utg_loader *ref, const uint8_t *bad, size_t size, utg_result want,
                           const char *needle, const char *what) {
    utg_msg msg;
    utg_result r;
    msg.text[0] = 0;
    r = utg_loader_restore(ld, bad, size, &msg);
    CHECK(r == want, "%s: got %d (%s), want %d", what, (int)r, msg.text, (int)want);
    CHECK(strstr(msg.text, needle) != NULL, "%s: message '%s' lacks '%s'", what, msg.text, needle);
    CHECK(same_stream(ld, ref, 3, 2, SHUF_T), "%s: the loader moved", what);
}

static void test_restore_refusals(void) {
    static const size_t other_lens[6] = {40, 3, 57, 25, 9, 34};
    utg_dataset *ds = shuffled_dataset(), *other;
    utg_loader *a, *ref, *m;
    uint8_t *good, *bad;
    size_t size, shards_at = 64, rng_at;
    utg_msg msg;
    write_counting_shards("oth", other_lens, 6, 0);
    other = open_ds("oth_*.bin", 0);
    if (!ds || !other) return;
    a = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 0, 2, 3);
    ref = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 0, 2, 3);
    free(record(a, 4, 2, SHUF_T));
    size = utg_loader_state_size(a);
    good = (uint8_t *)malloc(size);
    bad = (uint8_t *)malloc(size);
    CHECK(good && bad && size >= 64, "state of %zu bytes", size);
    if (!good || !bad || size < 64) { free(good); free(bad); return; }
    utg_loader_save(a, good, size);
    utg_loader_restore(ref, good, size, &msg); /* ref mirrors a; each refusal below compares 3 batches */
#define FORGE(stmt) (memcpy(bad, good, size), stmt)
    FORGE(bad[size / 2] ^= 0x10);
    expect_refused(a, ref, bad, size, UTG_ERR_FORMAT, "checksum", "flipped bit");
    expect_refused(a, ref, good, size - 1, UTG_ERR_FORMAT, "truncated", "truncated");
    expect_refused(a, ref, good, 10, UTG_ERR_FORMAT, "not a loader state", "tiny");
    FORGE(bad[0] = 'X');
    expect_refused(a, ref, bad, size, UTG_ERR_FORMAT, "not a loader state", "magic");
    FORGE(bad[4] = 2);
    expect_refused(a, ref, bad, size, UTG_ERR_FORMAT, "version 2", "version");
    rng_at = shards_at + 8 * 6;
    FORGE((put_u64(bad + rng_at + 32, 1000), reseal(bad, size))); /* taken[0] beyond the windows */
    expect_refused(a, ref, bad, size, UTG_ERR_FORMAT, "windows taken", "taken > windows");
    FORGE((memset(bad + rng_at, 0, 32), reseal(bad, size)));
    expect_refused(a, ref, bad, size, UTG_ERR_FORMAT, "all zero", "zero RNG");
    FORGE((put_u64(bad + 32, 4), reseal(bad, size)));
    expect_refused(a, ref, bad, size, UTG_ERR_MISMATCH, "seed 4", "seed");
    FORGE((bad[20] = 3, reseal(bad, size)));
    expect_refused(a, ref, bad, size, UTG_ERR_MISMATCH, "rank 0 of 3", "world");
    /* a record from other setups, into a loader of this one */
    m = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T + 1, 0, 2, 3);
    if (m) {
        utg_loader *mr = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T + 1, 0, 2, 3);
        utg_msg mm;
        CHECK(utg_loader_restore(m, good, size, &mm) == UTG_ERR_MISMATCH && strstr(mm.text, "seq_len 8"), "seq_len: %s", mm.text);
        CHECK(same_stream(m, mr, 3, 2, SHUF_T + 1), "seq_len mismatch moved the loader");
        utg_loader_destroy(mr);
    }
    utg_loader_destroy(m);
    m = mk(ds, UTG_LOADER_SHUFFLED, SHUF_T, 1, 2, 3);
    CHECK(m && utg_loader_restore(m, good, size, &msg) == UTG_ERR_MISMATCH, "rank");
    utg_loader_destroy(m);
    m = mk(ds, UTG_LOADER_SEQUENTIAL, SHUF_T, 0, 2, 3);
    CHECK(m && utg_loader_restore(m, good, size, &msg) == UTG_ERR_MISMATCH && strstr(msg.text, "kind 1"), "kind: %s", msg.text);
    utg_loader_destroy(m);
    m = mk(other, UTG_LOADER_SHUFFLED, SHUF_T, 0, 2, 3);
    CHECK(m && utg_loader_restore(m, good, size, &msg) == UTG_ERR_MISMATCH, "other data: %s", msg.text);
    utg_loader_destroy(m);
    /* sequential: an offset past the data */
    m = mk(ds, UTG_LOADER_SEQUENTIAL, SHUF_T, 0, 1, 0);
    if (m) {
        size_t ss = utg_loader_state_size(m);
        uint8_t *st = (uint8_t *)malloc(ss);
        utg_loader *mr = mk(ds, UTG_LOADER_SEQUENTIAL, SHUF_T, 0, 1, 0);
        utg_loader_save(m, st, ss);
        put_u64(st + 48, 167);
        reseal(st, ss);
        CHECK(utg_loader_restore(m, st, ss, &msg) == UTG_ERR_FORMAT && strstr(msg.text, "past the dataset"), "%s", msg.text);
        CHECK(same_stream(m, mr, 3, 2, SHUF_T), "sequential refusal moved the loader");
        put_u64(st + 48, 166);
        reseal(st, ss);
        CHECK(utg_loader_restore(m, st, ss, &msg) == UTG_OK, "last offset accepted: %s", msg.text);
        free(st);
        utg_loader_destroy(mr);
    }
    utg_loader_destroy(m);
#undef FORGE
    free(good);
    free(bad);
    utg_loader_destroy(a);
    utg_loader_destroy(ref);
    utg_dataset_close(ds);
    utg_dataset_close(other);
}

/* A failed next leaves the loader where it was, including across an epoch change it had begun. */
static void test_failure_does_not_move(void) {
    enum { T = 4 };
    uint16_t ids[T + 1] = {1, 2, 3, 4, 5}, bad_ids[T + 1] = {1, 2, 3, 4, 999};
    utg_dataset *ds;
    utg_loader *ld, *ref;
    utg_msg msg;
    uint8_t s0[512], s1[512];
    int32_t x[3 * T], y[3 * T];
    size_t size, trunc;
    uint8_t *b;
    int i;
    for (i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "fail_%d.bin", i);
        write_shard(name, ids, T + 1); /* one window each */
    }
    ds = open_ds("fail_*.bin", 100);
    ld = mk(ds, UTG_LOADER_SHUFFLED, T, 0, 1, 1);
    ref = mk(ds, UTG_LOADER_SHUFFLED, T, 0, 1, 1);
    if (!ds || !ld || !ref) return;
    CHECK(utg_loader_next(ld, x, y, 3, &msg) == UTG_OK, "epoch 0: %s", msg.text);
    size = utg_loader_state_size(ld);
    utg_loader_save(ld, s0, sizeof s0);
    /* replace every shard by one whose header promises more bytes than it has: the shard the dataset
       holds open still reads (old file), any other one fails, and epoch 1 needs all three */
    b = shard_bytes(ids, T + 1, &trunc);
    for (i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "fail_%d.bin", i);
        write_raw(name, b, trunc - 4);
    }
    CHECK(utg_loader_next(ld, x, y, 3, &msg) == UTG_ERR_IO && strstr(msg.text, "short read"), "truncated: %s", msg.text);
    utg_loader_save(ld, s1, sizeof s1);
    CHECK(memcmp(s0, s1, size) == 0 && utg_loader_epoch(ld) == 0, "the failed call moved the loader");
    for (i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "fail_%d.bin", i);
        write_shard(name, ids, T + 1);
    }
    free(record(ref, 1, 3, T));
    CHECK(same_stream(ld, ref, 4, 3, T), "continuation after the failure");
    utg_loader_destroy(ld);
    utg_loader_destroy(ref);
    utg_dataset_close(ds);
    /* sequential: an id outside the vocabulary stops the call, and the position stays */
    write_shard("failv_0.bin", bad_ids, T + 1);
    ds = open_ds("failv_*.bin", 100);
    ld = mk(ds, UTG_LOADER_SEQUENTIAL, 2, 0, 1, 0);
    if (!ds || !ld) return;
    CHECK(utg_loader_next(ld, x, y, 1, &msg) == UTG_OK && x[0] == 1 && y[1] == 3, "first span");
    utg_loader_save(ld, s0, sizeof s0);
    CHECK(utg_loader_next(ld, x, y, 1, &msg) == UTG_ERR_FORMAT && strstr(msg.text, "999"), "%s", msg.text);
    utg_loader_save(ld, s1, sizeof s1);
    CHECK(memcmp(s0, s1, utg_loader_state_size(ld)) == 0, "the failed call moved the loader");
    free(b);
    utg_loader_destroy(ld);
    utg_dataset_close(ds);
}

static void test_create_errors(void) {
    static const size_t empty_lens[2] = {0, 0}, short_lens[3] = {20, 4, 20};
    utg_dataset *ds = shuffled_dataset(), *empty, *shorts;
    utg_loader *ld = (utg_loader *)&ld;
    utg_msg msg;
    int32_t x[8], y[8];
    write_counting_shards("empty", empty_lens, 2, 0);
    write_counting_shards("short", short_lens, 3, 0);
    empty = open_ds("empty_*.bin", 0);
    shorts = open_ds("short_*.bin", 0);
    if (!ds || !empty || !shorts) return;
    CHECK(utg_loader_create(ds, UTG_LOADER_SEQUENTIAL, 4, 2, 2, 0, NULL, &ld, &msg) == UTG_ERR_INVALID && !ld, "rank >= world");
    CHECK(utg_loader_create(ds, UTG_LOADER_SEQUENTIAL, 0, 0, 1, 0, NULL, &ld, &msg) == UTG_ERR_INVALID, "seq_len 0");
    CHECK(utg_loader_create(ds, UTG_LOADER_SEQUENTIAL, 4, 0, 0, 0, NULL, &ld, &msg) == UTG_ERR_INVALID, "world 0");
    CHECK(utg_loader_create(ds, (utg_loader_kind)7, 4, 0, 1, 0, NULL, &ld, &msg) == UTG_ERR_INVALID, "kind 7");
    CHECK(utg_loader_create(NULL, UTG_LOADER_SEQUENTIAL, 4, 0, 1, 0, NULL, &ld, &msg) == UTG_ERR_INVALID, "no dataset");
    CHECK(utg_loader_create(ds, UTG_LOADER_SHUFFLED, 4, 6, 8, 0, NULL, &ld, &msg) == UTG_ERR_INVALID &&
          strstr(msg.text, "owns no shard"), "rank 6 of 8 over 6 shards: %s", msg.text);
    CHECK(utg_loader_create(empty, UTG_LOADER_SEQUENTIAL, 4, 0, 1, 0, NULL, &ld, &msg) == UTG_ERR_INVALID &&
          strstr(msg.text, "no tokens"), "empty stream: %s", msg.text);
    CHECK(utg_loader_create(shorts, UTG_LOADER_SHUFFLED, 4, 1, 2, 0, NULL, &ld, &msg) == UTG_ERR_INVALID &&
          strstr(msg.text, "seq_len + 1 = 5"), "no window: %s", msg.text);
    CHECK(utg_loader_create(shorts, UTG_LOADER_SHUFFLED, 4, 0, 2, 0, NULL, &ld, &msg) == UTG_OK, "rank 0 has windows");
    CHECK(utg_loader_next(ld, x, y, 0, &msg) == UTG_ERR_INVALID, "n_seqs 0");
    CHECK(utg_loader_next(ld, NULL, y, 1, &msg) == UTG_ERR_INVALID, "NULL inputs");
    CHECK(utg_loader_next(ld, x, y, 2, &msg) == UTG_OK, "next");
    utg_loader_destroy(ld);
    utg_dataset_close(ds);
    utg_dataset_close(empty);
    utg_dataset_close(shorts);
}

/* Every allocation goes through the caller's allocator and is returned. */
static long g_live;
static void *count_alloc(size_t n, void *user) { (void)user; g_live++; return malloc(n); }
static void count_free(void *p, void *user) { (void)user; g_live--; free(p); }

static void test_allocator(void) {
    utg_allocator a;
    utg_dataset *ds = NULL;
    utg_loader *l1 = NULL, *l2 = NULL;
    utg_msg msg;
    int32_t *v = NULL;
    size_t n;
    a.alloc_fn = count_alloc; a.free_fn = count_free; a.user = NULL;
    utg_dataset_close(shuffled_dataset()); /* writes the files */
    CHECK(utg_dataset_open(tpath("shuf_*.bin"), 0, &a, &ds, &msg) == UTG_OK, "%s", msg.text);
    CHECK(utg_loader_create(ds, UTG_LOADER_SHUFFLED, 4, 0, 1, 0, &a, &l1, &msg) == UTG_OK, "%s", msg.text);
    CHECK(utg_loader_create(ds, UTG_LOADER_SEQUENTIAL, 4, 0, 1, 0, &a, &l2, &msg) == UTG_OK, "%s", msg.text);
    CHECK(utg_dataset_read_val(ds, 4, &v, &n, &a, &msg) == UTG_OK, "%s", msg.text);
    CHECK(g_live > 0, "the allocator was used");
    utg_free(&a, v);
    utg_loader_destroy(l1);
    utg_loader_destroy(l2);
    utg_dataset_close(ds);
    {   /* a failed open returns everything too */
        uint16_t ids[4] = {1, 2, 3, 4};
        size_t size;
        uint8_t *bytes = shard_bytes(ids, 4, &size);
        write_raw("alloc_0.bin", bytes, size);
        write_raw("alloc_1.bin", bytes, size - 2);
        free(bytes);
        CHECK(utg_dataset_open(tpath("alloc_*.bin"), 0, &a, &ds, &msg) == UTG_ERR_FORMAT, "bad set");
    }
    CHECK(g_live == 0, "%ld allocations not returned", g_live);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    int rc;
    tmp_init();
    RUN(test_glob_sort);
    RUN(test_header_validation);
    RUN(test_read_across_shards);
    RUN(test_read_large);
    RUN(test_vocab_check);
    RUN(test_read_val);
#ifdef __linux__
    RUN(test_large_offsets);
#endif
    RUN(test_sequential_matches_parameter_golf);
    RUN(test_shuffled_epochs);
    RUN(test_shuffled_proportional);
    RUN(test_shuffled_determinism);
    RUN(test_shuffled_seed_orders);
    RUN(test_save_restore);
    RUN(test_reset);
    RUN(test_restore_refusals);
    RUN(test_failure_does_not_move);
    RUN(test_create_errors);
    RUN(test_allocator);
    rc = TEST_SUMMARY();
    tmp_cleanup();
    return rc;
}
