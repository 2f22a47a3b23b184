/* libFuzzer target over the checkpoint loader, utg_checkpoint_load (make fuzz; clang
   -fsanitize=fuzzer,address,undefined). tests/fuzz_replay.c builds this file again with the normal
   compiler (UTG_STATIC, UTG_FUZZ_REPLAY) to replay tests/corpus/checkpoint/.

   Made once: two token shards in a private temp directory (removed at exit), one dataset over them,
   and three training setups, each a tiny model with its optimizer and loader:
     A  MODEL_DIM=8, 2/1 heads, VOCAB_SIZE=16, 1 layer, TRAIN_SEQ_LEN=4, MLP_MULT=1, sequential loader
     B  A with TRAIN_LOADER=shuffled, EMA and SWA (all four optimizer arenas), SEED=7
     C  2 layers looped once from ENABLE_LOOPING_AT=0.5 (two depth-plan phases), sequential
   Every input is offered to all three. Two modes, chosen by the input itself:
   - an input that starts with "UTGCKPT1" is loaded as it is (size field, CRC and all);
   - any other input is the body of a checkpoint (everything between the magic and the CRC): it gets
     the magic, its size in the header (when the body is long enough to hold that field), a LOAD
     section's own FNV checksum recomputed, and the CRC, so that mutations reach the section, knob,
     counter and loader-state checks.
   A refusal must carry a message and change nothing: parameters, optimizer arenas and counters,
   loader state, depth-plan phase and the caller's utg_train_state. After a load: the counters and
   time are sane, the phase is in range, utg_checkpoint_save works; one forward on fixed tokens
   succeeds when the parameters are finite and at most 4 in magnitude (otherwise it may fail, with a
   message); the loader yields a batch; and the saved checkpoint loads again and saves to the same
   bytes (everything a checkpoint holds was restored). */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h> /* rmdir */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NAME "fuzz_checkpoint"
#include "fuzz.h"

#define FZ_SETUPS 3
#define FZ_SEQ 4
#define FZ_VOCAB 16

typedef struct fz_setup {
    const char *name;
    utg_model *m;
    utg_optim *o;
    utg_loader *ld;
    size_t n, ld_size;
    float *params, *arena[UTG_OPTIM_ARENAS], *scratch;
    int has_arena[UTG_OPTIM_ARENAS];
    uint8_t *ld_state, *ld_scratch;
} fz_setup;

static fz_setup g_setups[FZ_SETUPS];
static utg_dataset *g_ds;
static char g_dir[64], g_shard[2][96];
static int g_ready;

static const char *const fz_configs[FZ_SETUPS] = {
    "MODEL_DIM=8\nNUM_HEADS=2\nNUM_KV_HEADS=1\nVOCAB_SIZE=16\nNUM_LAYERS=1\nTRAIN_SEQ_LEN=4\nMLP_MULT=1\n",
    "MODEL_DIM=8\nNUM_HEADS=2\nNUM_KV_HEADS=1\nVOCAB_SIZE=16\nNUM_LAYERS=1\nTRAIN_SEQ_LEN=4\nMLP_MULT=1\n"
    "TRAIN_LOADER=shuffled\nEMA_ENABLED=1\nSWA_ENABLED=1\nSEED=7\n",
    "MODEL_DIM=8\nNUM_HEADS=2\nNUM_KV_HEADS=1\nVOCAB_SIZE=16\nNUM_LAYERS=2\nTRAIN_SEQ_LEN=4\nMLP_MULT=1\n"
    "NUM_LOOPS=1\nLOOP_START=0\nLOOP_END=1\nENABLE_LOOPING_AT=0.5\n",
};
static char fz_config_text[FZ_SETUPS][512]; /* parse_text keeps pointers into its text */

static void fz_cleanup(void) {
    int i, k;
    for (i = 0; i < FZ_SETUPS; i++) {
        fz_setup *s = &g_setups[i];
        utg_loader_destroy(s->ld);
        utg_optim_destroy(s->o);
        utg_model_destroy(s->m);
        free(s->params);
        free(s->scratch);
        for (k = 0; k < UTG_OPTIM_ARENAS; k++) free(s->arena[k]);
        free(s->ld_state);
        free(s->ld_scratch);
    }
    utg_dataset_close(g_ds);
    for (i = 0; i < 2; i++) if (g_shard[i][0]) remove(g_shard[i]);
    if (g_dir[0]) rmdir(g_dir);
}

static void fz_init(void) {
    static const size_t lens[2] = {100, 57};
    char pattern[128];
    utg_msg msg;
    int i, k;
    if (g_ready) return;
    g_ready = 1;
    snprintf(g_dir, sizeof g_dir, "/tmp/utg_fuzz_ckpt_XXXXXX");
    if (!mkdtemp(g_dir)) { fprintf(stderr, "fuzz_checkpoint: mkdtemp failed\n"); g_dir[0] = 0; abort(); }
    atexit(fz_cleanup);
    for (i = 0; i < 2; i++) {
        uint16_t ids[100];
        uint8_t buf[UTG_SHARD_HEADER_BYTES + 200];
        size_t j, bytes = UTG_SHARD_HEADER_BYTES + 2 * lens[i];
        for (j = 0; j < lens[i]; j++) ids[j] = (uint16_t)((j * 7 + (size_t)i * 3) % FZ_VOCAB);
        snprintf(g_shard[i], sizeof g_shard[i], "%s/shard_%d.bin", g_dir, i);
        if (utg_shard_write(ids, lens[i], buf, bytes) != UTG_OK || utg_write_file(g_shard[i], buf, bytes, &msg) != UTG_OK) {
            fprintf(stderr, "fuzz_checkpoint: cannot write %s\n", g_shard[i]);
            abort();
        }
    }
    snprintf(pattern, sizeof pattern, "%s/shard_*.bin", g_dir);
    if (utg_dataset_open(pattern, FZ_VOCAB, NULL, &g_ds, &msg) != UTG_OK) { fprintf(stderr, "fuzz_checkpoint: dataset: %s\n", msg.text); abort(); }
    for (i = 0; i < FZ_SETUPS; i++) {
        fz_setup *s = &g_setups[i];
        utg_model_desc d;
        const utg_config *c;
        memset(&d, 0, sizeof d);
        s->name = i == 0 ? "A" : i == 1 ? "B" : "C";
        snprintf(fz_config_text[i], sizeof fz_config_text[i], "%s", fz_configs[i]);
        if (utg_config_parse_text(&d.config, fz_config_text[i], &msg) != UTG_OK) { fprintf(stderr, "fuzz_checkpoint: %s\n", msg.text); abort(); }
        if (utg_model_create(&d, &s->m) != UTG_OK || utg_optim_create(s->m, &s->o) != UTG_OK) {
            fprintf(stderr, "fuzz_checkpoint: setup %s: %s\n", s->name, utg_model_message(s->m));
            abort();
        }
        c = utg_model_config(s->m);
        if (utg_loader_create(g_ds, c->train_loader == UTG_TRAIN_LOADER_SHUFFLED ? UTG_LOADER_SHUFFLED : UTG_LOADER_SEQUENTIAL,
                              c->train_seq_len, 0, 1, (uint64_t)(c->seed < 0 ? 0 : c->seed), NULL, &s->ld, &msg) != UTG_OK) {
            fprintf(stderr, "fuzz_checkpoint: loader %s: %s\n", s->name, msg.text);
            abort();
        }
        s->n = utg_model_arena_floats(s->m);
        s->params = (float *)malloc(s->n * sizeof(float));
        s->scratch = (float *)malloc(s->n * sizeof(float));
        for (k = 0; k < UTG_OPTIM_ARENAS; k++) {
            s->arena[k] = (float *)malloc(s->n * sizeof(float));
            s->has_arena[k] = s->arena[k] && utg_optim_get_arena(s->o, k, s->arena[k], s->n) == UTG_OK;
        }
        s->ld_size = utg_loader_state_size(s->ld);
        s->ld_state = (uint8_t *)malloc(s->ld_size);
        s->ld_scratch = (uint8_t *)malloc(s->ld_size);
        if (!s->params || !s->scratch || !s->ld_state || !s->ld_scratch) abort();
    }
    if (utg_model_plan_count(g_setups[2].m) < 2) { fprintf(stderr, "fuzz_checkpoint: setup C has one plan\n"); abort(); }
}

static uint64_t fz_fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* body mode: magic, size, the LOAD record's checksum, CRC */
static uint8_t *fz_wrap(const uint8_t *body, size_t n, size_t *out_size) {
    size_t size = 8 + n + 8, pos = 24;
    uint8_t *b = (uint8_t *)malloc(size);
    uint32_t n_sec, s, crc;
    int i;
    if (!b) return NULL;
    memcpy(b, "UTGCKPT1", 8);
    if (n) memcpy(b + 8, body, n);
    if (size >= 24) for (i = 0; i < 8; i++) b[16 + i] = (uint8_t)((uint64_t)size >> (8 * i));
    n_sec = size >= 24 ? utg__rd_u32le(b + 12) : 0;
    for (s = 0; s < n_sec && s < 8 && size - 8 >= pos && size - 8 - pos >= 16; s++) {
        uint32_t tag = utg__rd_u32le(b + pos);
        uint64_t len = utg__rd_u64le(b + pos + 8), room = size - 8 - pos - 16;
        if (len > room) break;
        if (tag == 0x44414F4Cu && len >= 72) { /* "LOAD": a loader record ends with FNV-1a 64 of the rest */
            uint8_t *p = b + pos + 16;
            uint64_t h = fz_fnv1a(p, (size_t)len - 8);
            for (i = 0; i < 8; i++) p[len - 8 + (uint64_t)i] = (uint8_t)(h >> (8 * i));
        }
        if (((len + 7) & ~(uint64_t)7) > room) break;
        pos += 16 + (size_t)((len + 7) & ~(uint64_t)7);
    }
    crc = utg_crc32(0, b, size - 8);
    for (i = 0; i < 4; i++) { b[size - 8 + (size_t)i] = (uint8_t)(crc >> (8 * i)); b[size - 4 + (size_t)i] = 0; }
    *out_size = size;
    return b;
}

static int fz_tame(const float *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!(p[i] >= -4.0f && p[i] <= 4.0f)) return 0;
    return 1;
}

/* the state a refused load must not touch */
static void fz_snapshot(fz_setup *s) {
    int k;
    FZ_REQUIRE(utg_model_get(s->m, UTG_ARENA_PARAMS, -1, s->params, s->n) == UTG_OK, "get");
    for (k = 0; k < UTG_OPTIM_ARENAS; k++)
        if (s->has_arena[k]) FZ_REQUIRE(utg_optim_get_arena(s->o, k, s->arena[k], s->n) == UTG_OK, "arena %d", k);
    FZ_REQUIRE(utg_loader_save(s->ld, s->ld_state, s->ld_size) == UTG_OK, "loader save");
}

static void fz_unchanged(fz_setup *s, const char *why) {
    int k;
    FZ_REQUIRE(utg_model_get(s->m, UTG_ARENA_PARAMS, -1, s->scratch, s->n) == UTG_OK, "get");
    FZ_REQUIRE(memcmp(s->scratch, s->params, s->n * sizeof(float)) == 0, "setup %s: a refused checkpoint changed the parameters (%s)", s->name, why);
    for (k = 0; k < UTG_OPTIM_ARENAS; k++) {
        if (!s->has_arena[k]) continue;
        FZ_REQUIRE(utg_optim_get_arena(s->o, k, s->scratch, s->n) == UTG_OK, "arena %d", k);
        FZ_REQUIRE(memcmp(s->scratch, s->arena[k], s->n * sizeof(float)) == 0, "setup %s: a refused checkpoint changed optimizer arena %d (%s)", s->name, k, why);
    }
    FZ_REQUIRE(utg_loader_save(s->ld, s->ld_scratch, s->ld_size) == UTG_OK, "loader save");
    FZ_REQUIRE(memcmp(s->ld_scratch, s->ld_state, s->ld_size) == 0, "setup %s: a refused checkpoint moved the loader (%s)", s->name, why);
}

static void fz_load_one(fz_setup *s, const uint8_t *file, size_t size) {
    utg_train_state ts = {-7, -7.5, -7}, ts2;
    int64_t adam0, swa0, adam1, swa1;
    int phase0 = utg_model_phase(s->m);
    void *s1 = NULL, *s2 = NULL;
    size_t n1 = 0, n2 = 0;
    utg_result r;
    fz_snapshot(s);
    utg_optim_get_counters(s->o, &adam0, &swa0);
    s->m->msg.text[0] = 0;
    r = utg_checkpoint_load(s->m, s->o, s->ld, &ts, file, size);
    if (r != UTG_OK) {
        const char *why = utg_model_message(s->m);
        FZ_REQUIRE(r == UTG_ERR_FORMAT || r == UTG_ERR_MISMATCH, "setup %s: result %d: %s", s->name, (int)r, why);
        FZ_REQUIRE(s->m->msg.text[0] != 0 && memchr(s->m->msg.text, 0, sizeof s->m->msg.text), "setup %s: result %d without a message", s->name, (int)r);
        FZ_REQUIRE(ts.step == -7 && ts.train_ms == -7.5 && ts.tokens_seen == -7, "setup %s: a refused checkpoint wrote the train state (%s)", s->name, why);
        utg_optim_get_counters(s->o, &adam1, &swa1);
        FZ_REQUIRE(adam1 == adam0 && swa1 == swa0, "setup %s: a refused checkpoint changed the optimizer counters (%s)", s->name, why);
        FZ_REQUIRE(utg_model_phase(s->m) == phase0, "setup %s: a refused checkpoint changed the phase (%s)", s->name, why);
        fz_unchanged(s, why);
        return;
    }
    utg_optim_get_counters(s->o, &adam1, &swa1);
    FZ_REQUIRE(ts.step >= 0 && adam1 >= 0 && swa1 >= 0, "setup %s: negative counters loaded", s->name);
    FZ_REQUIRE(ts.train_ms >= 0.0 && isfinite(ts.train_ms), "setup %s: training time %g", s->name, ts.train_ms);
    FZ_REQUIRE(utg_model_phase(s->m) >= 0 && utg_model_phase(s->m) < utg_model_plan_count(s->m), "setup %s: phase %d", s->name, utg_model_phase(s->m));
    FZ_REQUIRE(utg_checkpoint_save(s->m, s->o, s->ld, &ts, &s1, &n1) == UTG_OK, "setup %s: save after load: %s", s->name, utg_model_message(s->m));
    /* the model works */
    {
        int32_t in[FZ_SEQ] = {1, 5, 9, 15}, tg[FZ_SEQ] = {5, 9, 15, 0}, lin[2 * FZ_SEQ], ltg[2 * FZ_SEQ];
        double loss = -1.0;
        utg_msg msg;
        FZ_REQUIRE(utg_model_get(s->m, UTG_ARENA_PARAMS, -1, s->scratch, s->n) == UTG_OK, "get");
        s->m->msg.text[0] = 0;
        r = utg_model_forward(s->m, in, tg, 1, &loss);
        if (fz_tame(s->scratch, s->n)) FZ_REQUIRE(r == UTG_OK && isfinite(loss), "setup %s: forward after load: %d %s", s->name, (int)r, utg_model_message(s->m));
        else FZ_REQUIRE(r == UTG_OK || s->m->msg.text[0], "setup %s: forward failed (%d) without a message", s->name, (int)r);
        memset(&msg, 0, sizeof msg);
        r = utg_loader_next(s->ld, lin, ltg, 2, &msg);
        FZ_REQUIRE(r == UTG_OK, "setup %s: the restored loader yields no batch: %d %s", s->name, (int)r, msg.text);
    }
    /* everything the checkpoint holds comes back */
    ts2 = ts;
    ts.step = -1;
    s->m->msg.text[0] = 0;
    r = utg_checkpoint_load(s->m, s->o, s->ld, &ts, s1, n1);
    FZ_REQUIRE(r == UTG_OK, "setup %s: a checkpoint just saved does not load: %s", s->name, utg_model_message(s->m));
    FZ_REQUIRE(!memcmp(&ts, &ts2, sizeof ts), "setup %s: train state differs after save and load", s->name);
    FZ_REQUIRE(utg_checkpoint_save(s->m, s->o, s->ld, &ts, &s2, &n2) == UTG_OK, "setup %s: second save", s->name);
    FZ_REQUIRE(n1 == n2 && !memcmp(s1, s2, n1), "setup %s: save, load, save gives other bytes (%zu vs %zu)", s->name, n1, n2);
    utg_free(utg_model_allocator(s->m), s1);
    utg_free(utg_model_allocator(s->m), s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *wrapped = NULL;
    const uint8_t *file = data;
    size_t n = size;
    int i;
    fz_init();
    if (!(size >= 8 && !memcmp(data, "UTGCKPT1", 8))) {
        wrapped = fz_wrap(data, size, &n);
        if (!wrapped) return 0;
        file = wrapped;
    }
    for (i = 0; i < FZ_SETUPS; i++) fz_load_one(&g_setups[i], file, n);
    free(wrapped);
    return 0;
}

#ifdef UTG_FUZZ_REPLAY
/* Seeds: each setup's checkpoint fresh and after three training steps (C switched to its second
   phase), one version-1 file (48-byte STAT, no phase) from A's, and the body of each (body mode). */
static int fz_seed_write(const char *dir, const char *name, const uint8_t *b, size_t n) {
    char path[1024];
    utg_msg msg;
    snprintf(path, sizeof path, "%s/%s.utgc", dir, name);
    if (utg_write_file(path, b, n, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); return 1; }
    snprintf(path, sizeof path, "%s/%s.body", dir, name);
    if (utg_write_file(path, b + 8, n - 16, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); return 1; }
    return 0;
}

/* A's version-2 checkpoint as version 1: STAT loses its last 8 bytes (the phase) */
static int fz_seed_v1(const char *dir, const uint8_t *b, size_t n) {
    uint8_t *v = (uint8_t *)malloc(n);
    size_t pos = 24, out = 24, size;
    uint32_t s, n_sec = utg__rd_u32le(b + 12), crc;
    int i, fails;
    if (!v) return 1;
    memcpy(v, b, 24);
    for (s = 0; s < n_sec; s++) {
        uint32_t tag = utg__rd_u32le(b + pos);
        uint64_t len = utg__rd_u64le(b + pos + 8), padded = (len + 7) & ~(uint64_t)7;
        uint64_t keep = tag == 0x54415453u ? 48 : len;
        memcpy(v + out, b + pos, 16);
        for (i = 0; i < 8; i++) v[out + 8 + (size_t)i] = (uint8_t)(keep >> (8 * i));
        memcpy(v + out + 16, b + pos + 16, (size_t)((keep + 7) & ~(uint64_t)7));
        out += 16 + (size_t)((keep + 7) & ~(uint64_t)7);
        pos += 16 + (size_t)padded;
    }
    size = out + 8;
    v[8] = 1; v[9] = v[10] = v[11] = 0;
    for (i = 0; i < 8; i++) v[16 + i] = (uint8_t)((uint64_t)size >> (8 * i));
    crc = utg_crc32(0, v, out);
    for (i = 0; i < 4; i++) { v[out + (size_t)i] = (uint8_t)(crc >> (8 * i)); v[out + 4 + (size_t)i] = 0; }
    fails = fz_seed_write(dir, "seed-A-trained-v1", v, size);
    free(v);
    return fails;
}

int utg_fuzz_checkpoint_seeds(const char *dir);
int utg_fuzz_checkpoint_seeds(const char *dir) {
    int i, step, fails = 0;
    fz_init();
    for (i = 0; i < FZ_SETUPS; i++) {
        fz_setup *s = &g_setups[i];
        utg_train_state ts = {0, 0.0, 0};
        void *b = NULL;
        size_t n = 0;
        char name[64];
        int32_t in[2 * FZ_SEQ], tg[2 * FZ_SEQ];
        utg_msg msg;
        double loss;
        if (utg_checkpoint_save(s->m, s->o, s->ld, &ts, &b, &n) != UTG_OK) return 1;
        snprintf(name, sizeof name, "seed-%s-fresh", s->name);
        fails += fz_seed_write(dir, name, (const uint8_t *)b, n);
        utg_free(utg_model_allocator(s->m), b);
        for (step = 0; step < 3; step++) {
            if (i == 2 && step == 2 && utg_model_set_phase(s->m, 1, 1) != UTG_OK) return 1;
            if (utg_loader_next(s->ld, in, tg, 2, &msg) != UTG_OK || utg_model_forward(s->m, in, tg, 2, &loss) != UTG_OK) return 1;
            utg_model_zero_grads(s->m);
            if (utg_model_backward(s->m, 1.0f) != UTG_OK || utg_optim_step(s->o, step, 1.0, NULL) != UTG_OK) return 1;
            utg_optim_average(s->o, step, 0.1);
            ts.step = step + 1;
            ts.train_ms += 12.5;
            ts.tokens_seen += 2 * FZ_SEQ;
        }
        if (utg_checkpoint_save(s->m, s->o, s->ld, &ts, &b, &n) != UTG_OK) return 1;
        snprintf(name, sizeof name, "seed-%s-trained", s->name);
        fails += fz_seed_write(dir, name, (const uint8_t *)b, n);
        if (i == 0) fails += fz_seed_v1(dir, (const uint8_t *)b, n);
        utg_free(utg_model_allocator(s->m), b);
    }
    return fails;
}
#endif
