/* The depth plan: every recurrence recipe compiles to the index lists the records use;
   schedules switch plans without allocating; untied repeat MLPs are copied when recurrence switches
   on; gradients are checked against finite differences through recurrent plans, per-depth
   conditioning and each parallel-residual form; bad recurrence knobs are refused with a message. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "gradcheck.h"
#include "test.h"
#include "mdl.h"
#include <stdlib.h>

/* A model from KEY=VALUE text over a tiny base shape (no parameters drawn beyond the model's own). */
static utg_model *make_model(const char *text, utg_result *res, char *err, size_t err_size) {
    utg_config cfg;
    utg_model_desc d;
    utg_model *m = NULL;
    utg_msg msg;
    utg_result r;
    static char buf[4096];
    memset(&cfg, 0, sizeof cfg);
    memset(&msg, 0, sizeof msg);
    snprintf(buf, sizeof buf, "MODEL_DIM=16\nNUM_HEADS=4\nNUM_KV_HEADS=2\nVOCAB_SIZE=32\nTRAIN_SEQ_LEN=8\n%s", text);
    r = utg_config_parse_text(&cfg, buf, &msg);
    if (r != UTG_OK) {
        if (res) *res = r;
        if (err) snprintf(err, err_size, "%s", msg.text);
        return NULL;
    }
    memset(&d, 0, sizeof d);
    d.config = cfg;
    r = utg_model_create(&d, &m);
    if (res) *res = r;
    if (err) snprintf(err, err_size, "%s", utg_model_message(m));
    if (r != UTG_OK) { utg_model_destroy(m); return NULL; }
    return m;
}

/* blocks of a plan as "0 1 2 | 3 4" (| at the encoder/decoder split) */
static const char *blocks(const utg_plan *p) {
    static char buf[1024];
    size_t at = 0;
    int i;
    buf[0] = 0;
    for (i = 0; i < p->n_layers && at + 16 < sizeof buf; i++) {
        if (i == p->n_encoder && i > 0) at += (size_t)snprintf(buf + at, sizeof buf - at, "| ");
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%d ", p->layers[i].block);
    }
    if (at) buf[at - 1] = 0;
    return buf;
}

/* The U-Net pairing of a plan is the records': the first n_encoder layers push slot i, decoder
   layer j pops slot n_encoder-1-j with skip_weights[j], for j < min(n_encoder, n_decoder). */
static int unet_pairing_ok(const utg_plan *p) {
    int i, n_dec = p->n_layers - p->n_encoder, n_skip = p->n_encoder < n_dec ? p->n_encoder : n_dec;
    for (i = 0; i < p->n_layers; i++) {
        const utg_plan_layer *l = &p->layers[i];
        int j = i - p->n_encoder;
        if (l->push_slot != (i < p->n_encoder ? i : -1)) return 0;
        if (j >= 0 && j < n_skip) { if (l->pop_slot != p->n_encoder - 1 - j || l->skip_index != j) return 0; }
        else if (l->pop_slot != -1) return 0;
    }
    return 1;
}

static void test_plan_baseline(void) {
    utg_model *m = make_model("NUM_LAYERS=9\n", NULL, NULL, 0);
    const utg_plan *p;
    CHECK(m != NULL, "baseline model");
    if (!m) return;
    p = utg_model_plan(m);
    CHECK(utg_model_plan_count(m) == 1, "one plan");
    CHECK(!strcmp(blocks(p), "0 1 2 3 | 4 5 6 7 8"), "got %s", blocks(p));
    CHECK(unet_pairing_ok(p), "U-Net pairing");
    CHECK(p->lanes_from == -1 && p->layers[0].ctrl == 0 && p->layers[8].ctrl == 8, "single lane, physical control");
    utg_model_destroy(m);
}

/* PR #1204: RECUR_LAYERS=4,5 on 11 layers -> [0..5, 4, 5, 6..10], enc 6 / dec 7, per
   virtual control tensors, the repeats' MLPs untied and copied at RECUR_START_STEP, two lanes from
   physical layer 7 on (virtual 9..12 once recurrence is on). */
static void test_plan_recur_layers(void) {
    utg_model *m = make_model("NUM_LAYERS=11\nRECUR_LAYERS=4,5\nRECUR_START_STEP=3000\nCONTROL_SCOPE=virtual\n"
                              "REPEAT_UNTIE_MLP=full\nREPEAT_UNTIE_MLP_LAYERS=4,5\nPARALLEL_RESIDUAL=two_lane\n"
                              "PARALLEL_START_LAYER=7\n", NULL, NULL, 0);
    const utg_plan *p0, *p1;
    int i;
    CHECK(m != NULL, "model");
    if (!m) return;
    CHECK(utg_model_plan_count(m) == 2, "flat plan, then the recurrent one");
    p0 = utg_model_plan_at(m, 0);
    p1 = utg_model_plan_at(m, 1);
    CHECK(!strcmp(blocks(p0), "0 1 2 3 4 | 5 6 7 8 9 10"), "phase 0: %s", blocks(p0));
    CHECK(!strcmp(blocks(p1), "0 1 2 3 4 5 | 4 5 6 7 8 9 10"), "phase 1: %s", blocks(p1));
    CHECK(unet_pairing_ok(p0) && unet_pairing_ok(p1), "U-Net pairing");
    CHECK(p1->start_step == 3000 && p1->start_frac < 0, "activated at step 3000");
    for (i = 0; i < 13; i++) CHECK(p1->layers[i].ctrl == i, "virtual layer %d owns control set %d", i, p1->layers[i].ctrl);
    CHECK(p1->layers[6].mlp_set == 0 && p1->layers[7].mlp_set == 1 && p1->layers[4].mlp_set == -1, "repeats of 4, 5 untied");
    CHECK(p1->n_init_sets == 2 && p0->n_init_sets == 0, "copied when recurrence switches on");
    CHECK(p1->layers[6].visit == 1 && p1->layers[4].visit == 0, "visits counted");
    CHECK(p1->lanes_from == 9 && p0->lanes_from == 7, "lanes from physical 7: got %d / %d", p1->lanes_from, p0->lanes_from);
    CHECK(p1->layers[12].lane == UTG_LANE_TWO && p1->layers[8].lane == UTG_LANE_SINGLE, "lane modes");
    CHECK(utg_model_find_tensor(m, "blocks.12.attn_scale") >= 0 && utg_model_find_tensor(m, "blocks.12.attn.c_q.weight") < 0,
          "13 control sets, 11 blocks of matrices");
    CHECK(utg_model_find_tensor(m, "repeat_mlp.1.fc.weight") >= 0 && utg_model_find_tensor(m, "parallel_post_lambdas") >= 0,
          "untied MLPs and lane lambdas");
    CHECK(utg_model_tensor(m, utg_model_find_tensor(m, "skip_weights"))->shape[0] == 6, "skip weights sized for 13 layers");
    CHECK(utg_model_schedule_phase(m, 2999, 0.9) == 0 && utg_model_schedule_phase(m, 3000, 0.0) == 1, "step trigger");
    utg_model_destroy(m);
}

/* LOOP_START/LOOP_END/NUM_LOOPS with num_enc = len // 2 */
static void test_plan_loops(void) {
    utg_model *m = make_model("NUM_LAYERS=11\nNUM_LOOPS=2\nLOOP_START=4\nLOOP_END=5\nENABLE_LOOPING_AT=0.5\n", NULL, NULL, 0);
    const utg_plan *p;
    CHECK(m != NULL, "model");
    if (!m) return;
    p = utg_model_plan_at(m, 1);
    CHECK(p && !strcmp(blocks(p), "0 1 2 3 4 5 4 | 5 4 5 6 7 8 9 10"), "loop 4-5 x3: %s", p ? blocks(p) : "-");
    CHECK(p && unet_pairing_ok(p) && p->start_frac == 0.5, "pairing and trigger");
    CHECK(!strcmp(blocks(utg_model_plan(m)), "0 1 2 3 4 | 5 6 7 8 9 10"), "flat until the trigger");
    CHECK(utg_model_schedule_phase(m, 100000, 0.49) == 0 && utg_model_schedule_phase(m, 0, 0.5) == 1, "fraction trigger");
    CHECK(utg_model_tensor(m, utg_model_find_tensor(m, "skip_weights"))->shape[0] == 7, "skip weights for the looped graph");
    CHECK(p && p->layers[6].ctrl == 4, "physical control: shared by every visit");
    utg_model_destroy(m);
    /* the 2026-04-09 geometry: loop 3-5, two extra passes, fully parallel lanes from layer 8 */
    m = make_model("NUM_LAYERS=11\nNUM_LOOPS=2\nLOOP_START=3\nLOOP_END=5\nENABLE_LOOPING_AT=0.35\n"
                   "PARALLEL_RESIDUAL=parallel\nPARALLEL_START_LAYER=8\n", NULL, NULL, 0);
    CHECK(m != NULL, "model");
    if (!m) return;
    p = utg_model_plan_at(m, 1);
    CHECK(p && !strcmp(blocks(p), "0 1 2 3 4 5 3 4 | 5 3 4 5 6 7 8 9 10"), "loop 3-5 x3: %s", p ? blocks(p) : "-");
    CHECK(p && p->lanes_from == 14 && p->layers[14].block == 8, "lanes from the decoder's layer 8 (got %d)", p ? p->lanes_from : -2);
    utg_model_destroy(m);
}

/* the same graph from explicit index lists */
static void test_plan_explicit_lists(void) {
    utg_model *m = make_model("NUM_LAYERS=11\nENCODER_LAYERS=0,1,2,3,4,5,3,4\nDECODER_LAYERS=5,3,4,5,6,7,8,9,10\n", NULL, NULL, 0);
    const utg_plan *p;
    CHECK(m != NULL, "model");
    if (!m) return;
    p = utg_model_plan(m);
    CHECK(!strcmp(blocks(p), "0 1 2 3 4 5 3 4 | 5 3 4 5 6 7 8 9 10"), "got %s", blocks(p));
    CHECK(unet_pairing_ok(p) && utg_model_plan_count(m) == 1, "pairing, always on");
    utg_model_destroy(m);
    /* an uneven split is honoured as given */
    m = make_model("NUM_LAYERS=4\nENCODER_LAYERS=0,1\nDECODER_LAYERS=2,3,2,3\n", NULL, NULL, 0);
    CHECK(m && !strcmp(blocks(utg_model_plan(m)), "0 1 | 2 3 2 3") && unet_pairing_ok(utg_model_plan(m)), "2 | 4 split");
    utg_model_destroy(m);
}

/* PR #1412: one extra pass at ENABLE_LOOPING_AT, all of them at LOOP_PHASE2_AT */
static void test_plan_progressive(void) {
    utg_model *m = make_model("NUM_LAYERS=11\nNUM_LOOPS=2\nLOOP_START=4\nLOOP_END=5\nENABLE_LOOPING_AT=0.5\nLOOP_PHASE2_AT=0.65\n",
                              NULL, NULL, 0);
    CHECK(m != NULL, "model");
    if (!m) return;
    CHECK(utg_model_plan_count(m) == 3, "three phases");
    CHECK(!strcmp(blocks(utg_model_plan_at(m, 1)), "0 1 2 3 4 5 | 4 5 6 7 8 9 10"), "phase 1: %s", blocks(utg_model_plan_at(m, 1)));
    CHECK(!strcmp(blocks(utg_model_plan_at(m, 2)), "0 1 2 3 4 5 4 | 5 4 5 6 7 8 9 10"), "phase 2: %s", blocks(utg_model_plan_at(m, 2)));
    CHECK(utg_model_schedule_phase(m, 0, 0.6) == 1 && utg_model_schedule_phase(m, 0, 0.7) == 2, "fractions");
    CHECK(utg_model_tensor(m, utg_model_find_tensor(m, "skip_weights"))->shape[0] == 7, "skips sized for the largest phase");
    utg_model_destroy(m);
}

/* stem/core x R/tail, the UT d mod n, and the depth curriculum */
static void test_plan_universal_forms(void) {
    const utg_plan *p;
    utg_model *m = make_model("NUM_LAYERS=5\nNUM_LOOPS=2\nLOOP_START=1\nLOOP_END=3\nUNET_SKIPS=loop\n", NULL, NULL, 0);
    CHECK(m != NULL, "stem/core/tail");
    if (m) {
        p = utg_model_plan(m);
        CHECK(p->n_layers == 11 && p->layers[0].push_slot == 0 && p->layers[10].pop_slot == 0 && p->layers[10].skip_index == 0,
              "stem pushes, tail pops");
        CHECK(p->layers[5].pop_slot == -1 && p->layers[5].push_slot == -1 && p->layers[4].block == 1, "core: no skips");
        utg_model_destroy(m);
    }
    m = make_model("UNIVERSAL_UNIQUE_BLOCKS=3\nUNIVERSAL_ITERATIONS=4\nITER_EMBED=1\nITER_SCALE=1\n", NULL, NULL, 0);
    CHECK(m != NULL, "UT");
    if (m) {
        p = utg_model_plan(m);
        CHECK(!strcmp(blocks(p), "0 1 2 0 1 2 | 0 1 2 0 1 2") && unet_pairing_ok(p), "e mod 3: %s", blocks(p));
        CHECK(utg_model_physical_blocks(m) == 3 && utg_model_find_tensor(m, "blocks.3.attn.c_q.weight") < 0, "3 physical blocks");
        CHECK(utg_model_tensor(m, utg_model_find_tensor(m, "iter_embed"))->shape[0] == 12, "iteration embeddings per virtual layer");
        utg_model_destroy(m);
    }
    m = make_model("UNIVERSAL_UNIQUE_BLOCKS=1\nUNIVERSAL_ITERATIONS=6\nNUM_LAYER_SCHEDULE=0:2,2000:6\nUNET_SKIPS=none\n"
                   "CONTROL_SCOPE=virtual\nNORM_BIAS=1\nBLOCK_ATTNS=2\nMLP_LAYERS=3\n", NULL, NULL, 0);
    CHECK(m != NULL, "depth curriculum");
    if (m) {
        CHECK(utg_model_plan_count(m) == 2 && utg_model_plan_at(m, 0)->n_layers == 2 && utg_model_plan_at(m, 1)->n_layers == 6,
              "depth 2 then 6");
        CHECK(utg_model_plan_at(m, 1)->start_step == 2000 && utg_model_schedule_phase(m, 1999, 0) == 0 &&
              utg_model_schedule_phase(m, 2000, 0) == 1, "switch at step 2000");
        CHECK(utg_model_find_tensor(m, "skip_weights") < 0 && utg_model_find_tensor(m, "blocks.5.norm_bias") >= 0, "no skips, 6 depths");
        utg_model_destroy(m);
    }
}

/* A recipes/ file as the trainer loads it; NULL (and a failed check) when it does not build. */
static utg_model *recipe_model(const char *path) {
    utg_config cfg;
    utg_model_desc d;
    utg_model *m = NULL;
    utg_msg msg;
    void *buf;
    size_t n;
    static char text[8][8192];
    static int used;
    char *t = text[used++ % 8];
    memset(&cfg, 0, sizeof cfg); memset(&d, 0, sizeof d); memset(&msg, 0, sizeof msg);
    if (utg_read_file(path, sizeof text[0] - 1, &buf, &n, &msg) != UTG_OK) { CHECK(0, "%s: %s", path, msg.text); return NULL; }
    memcpy(t, buf, n);
    t[n] = 0;
    free(buf);
    if (utg_config_parse_text(&cfg, t, &msg) != UTG_OK) { CHECK(0, "%s: %s", path, msg.text); return NULL; }
    d.config = cfg;
    if (utg_model_create(&d, &m) != UTG_OK) { CHECK(0, "%s: %s", path, utg_model_message(m)); utg_model_destroy(m); return NULL; }
    return m;
}

/* Every recipe in recipes/ builds, its plans are the record's index lists, and its parameter count
   is the record's where the record (or its log) gives one and all the record's features exist. */
static void test_recipes(void) {
    utg_model *m;
    if ((m = recipe_model("recipes/ut_1088_double_attn.env")) != NULL) { /* the fork's log: model_params:18135072 */
        CHECK(utg_model_param_count(m) == 18135072u, "PR #1088: %zu parameters, the record has 18,135,072", utg_model_param_count(m));
        CHECK(utg_model_plan_count(m) == 2 && !strcmp(blocks(utg_model_plan_at(m, 1)), "0 0 0 0 0 0") &&
              utg_model_plan_at(m, 0)->n_layers == 2 && utg_model_plan_at(m, 1)->start_step == 2000, "depth 2, then 6 at step 2000");
        utg_model_destroy(m);
    }
    if ((m = recipe_model("recipes/ut_1110_iter_embed.env")) != NULL) {
        /* 8,115,775 = the UT core 7,623,704 + BigramHash (327,681) + SmearGate (512) + the value
           embedding (163,843) + value residual (11) + hc_alpha/hc_beta (24) */
        CHECK(utg_model_param_count(m) == 8115775u, "PR #1110: %zu parameters, the record has 8,115,775", utg_model_param_count(m));
        CHECK(!strcmp(blocks(utg_model_plan(m)), "0 1 2 0 1 2 | 0 1 2 0 1 2"), "e mod 3: %s", blocks(utg_model_plan(m)));
        CHECK(utg_model_tensor(m, utg_model_find_tensor(m, "vrl_alphas"))->numel == 11 &&
              utg_model_tensor(m, utg_model_find_tensor(m, "hc_alpha"))->numel == 12 &&
              utg_model_tensor(m, utg_model_find_tensor(m, "ve_layer_scales"))->numel == 2, "11 value-residual alphas, 12 hc scalars, 2 VE scales");
        utg_model_destroy(m);
    }
    if ((m = recipe_model("recipes/recur_1204_parallel.env")) != NULL) {
        const utg_plan *p = utg_model_plan_at(m, 1);
        CHECK(p && !strcmp(blocks(p), "0 1 2 3 4 5 | 4 5 6 7 8 9 10") && p->start_step == 3000 && p->lanes_from == 9 &&
              p->layers[6].mlp_set >= 0 && p->layers[12].ctrl == 12, "PR #1204's plan");
        /* the log's model_params:30352046 (BigramHash 2816x160) less block 0's four attention matrices
           (786,432), which the record's banks hold but never run or export; utgolf does not allocate them */
        CHECK(utg_model_param_count(m) == 30352046u - 786432u, "PR #1204: %zu parameters, expected 29,565,614",
              utg_model_param_count(m));
        CHECK(utg_model_find_tensor(m, "blocks.0.attn.c_q.weight") < 0 && utg_model_find_tensor(m, "blocks.1.attn.c_q.weight") >= 0 &&
              utg_model_find_tensor(m, "blocks.0.attn.q_gain") >= 0 && utg_model_find_tensor(m, "blocks.12.attn.q_gain") >= 0,
              "no attention matrices in block 0; q_gain per virtual layer");
        utg_model_destroy(m);
    }
    if ((m = recipe_model("recipes/loop3_1493.env")) != NULL) {
        const utg_plan *p = utg_model_plan_at(m, 1);
        CHECK(p && !strcmp(blocks(p), "0 1 2 3 4 5 3 4 | 5 3 4 5 6 7 8 9 10") && p->start_frac == 0.35 &&
              p->layers[12].lane == UTG_LANE_SINGLE && p->layers[13].lane == UTG_LANE_GPTJ && p->layers[16].lane == UTG_LANE_GPTJ &&
              p->lanes_from == -1, "PR #1493's plan: GPT-J residuals in physical blocks 7..10");
        CHECK(utg_model_param_count(m) == 35944536u, "PR #1493: %zu parameters, the record prints model_params:35944536",
              utg_model_param_count(m));
        CHECK(utg_model_find_tensor(m, "skip_gates") >= 0 && utg_model_tensor(m, utg_model_find_tensor(m, "skip_gates"))->shape[0] == 8,
              "skip gates sized for the looped graph (8)");
        utg_model_destroy(m);
    }
    if ((m = recipe_model("recipes/top_1855.env")) != NULL) {
        const utg_plan *p = utg_model_plan_at(m, 1);
        CHECK(p && !strcmp(blocks(p), "0 1 2 3 4 5 3 4 | 5 3 4 5 6 7 8 9 10") && p->start_frac == 0.35 &&
              p->layers[14].lane == UTG_LANE_PARALLEL && p->lanes_from == 14, "PR #1855's plan");
        CHECK(utg_model_param_count(m) == 35945671u, "PR #1855: %zu parameters, the record has 35,945,671", utg_model_param_count(m));
        CHECK(utg_model_find_tensor(m, "blocks.0.attn.attn_gate_w") >= 0 && utg_model_find_tensor(m, "smear_lambda") >= 0 &&
              utg_model_tensor(m, utg_model_find_tensor(m, "smear_gate.weight"))->numel == 12, "sparse gates on every block, the SmearGate");
        utg_model_destroy(m);
    }
    if ((m = recipe_model("recipes/film_1640.env")) != NULL) {
        CHECK(!strcmp(blocks(utg_model_plan(m)), "0 1 2 3 4 5 0 1 2 3 4 5 | 0 1 2 3 4 5 0 1 2 3 4 5") &&
              utg_model_find_tensor(m, "film") >= 0, "PR #1640's plan: %s", blocks(utg_model_plan(m)));
        utg_model_destroy(m);
    }
}

/* The recurrence's 3-D tensors (film [depth, 2, d], parallel_post_lambdas [blocks, 2, 2]) go through
   safetensors with their full shapes and come back equal. */
static void test_safetensors_3d(void) {
    static const char *text = "NUM_LAYERS=3\nFILM=1\nUNIVERSAL_UNIQUE_BLOCKS=3\nUNIVERSAL_ITERATIONS=2\n";
    static const char *text2 = "NUM_LAYERS=3\nPARALLEL_RESIDUAL=parallel\nPARALLEL_START_LAYER=1\n";
    const char *texts[2];
    int k;
    texts[0] = text;
    texts[1] = text2;
    for (k = 0; k < 2; k++) {
        utg_model *a = make_model(texts[k], NULL, NULL, 0), *b = make_model(texts[k], NULL, NULL, 0);
        void *bytes = NULL;
        size_t n = 0, nf, i;
        float *pa, *pb;
        CHECK(a && b, "models");
        if (!a || !b) { utg_model_destroy(a); utg_model_destroy(b); continue; }
        nf = utg_model_arena_floats(a);
        pa = (float *)malloc(nf * 4); pb = (float *)malloc(nf * 4);
        for (i = 0; i < nf; i++) pa[i] = (float)urand();
        utg_model_set(a, UTG_ARENA_PARAMS, -1, pa, nf);
        CHECK(utg_model_save_safetensors(a, UTG_ARENA_PARAMS, &bytes, &n) == UTG_OK, "save");
        CHECK(bytes && strstr((const char *)bytes + 8, k ? "\"shape\":[3,2,2]" : "\"shape\":[6,2,16]") != NULL, "3-D shape written");
        CHECK(utg_model_load_safetensors(b, bytes, n) == UTG_OK, "load: %s", utg_model_message(b));
        utg_model_get(a, UTG_ARENA_PARAMS, -1, pa, nf);
        utg_model_get(b, UTG_ARENA_PARAMS, -1, pb, nf);
        for (i = 0; i < (size_t)utg_model_tensor_count(a); i++) { /* (the arena's padding is not saved) */
            const utg_tensor_info *t = utg_model_tensor(a, (int)i);
            CHECK(memcmp(pa + t->offset, pb + t->offset, t->numel * 4) == 0, "round trip of %s", t->name);
        }
        utg_free(utg_model_allocator(a), bytes);
        free(pa); free(pb);
        utg_model_destroy(a); utg_model_destroy(b);
    }
}

/* Bad recurrence knobs: a clear refusal naming the knob, never a crash. */
static void test_plan_errors(void) {
    static const struct { const char *text, *needle; } B[] = {
        {"NUM_LAYERS=4\nRECUR_LAYERS=4,5\n", "RECUR_LAYERS"},
        {"NUM_LAYERS=4\nRECUR_LAYERS=1,x\n", "RECUR_LAYERS"},
        {"NUM_LAYERS=4\nRECUR_LAYERS=1\nNUM_LOOPS=1\n", "one recurrence form"},
        {"NUM_LAYERS=4\nNUM_LOOPS=1\nLOOP_START=3\nLOOP_END=2\n", "LOOP_START"},
        {"NUM_LAYERS=4\nNUM_LOOPS=1\nLOOP_START=2\nLOOP_END=4\n", "LOOP_START"},
        {"NUM_LAYERS=4\nENCODER_LAYERS=0,1\nDECODER_LAYERS=2,7\n", "physical layer 7"},
        {"NUM_LAYERS=4\nENCODER_LAYERS=0,,1\n", "ENCODER_LAYERS"},
        {"NUM_LAYERS=4\nRECUR_START_STEP=10\n", "recurrent plan"},
        {"NUM_LAYERS=4\nLOOP_PHASE2_AT=0.5\n", "LOOP_PHASE2_AT"},
        {"NUM_LAYERS=4\nNUM_LOOPS=1\nLOOP_START=1\nLOOP_END=2\nRECUR_START_STEP=5\nENABLE_LOOPING_AT=0.3\n", "not both"},
        {"NUM_LAYERS=4\nNUM_LAYER_SCHEDULE=5:2\n", "step 0"},
        {"NUM_LAYERS=4\nNUM_LAYER_SCHEDULE=0:2,10:9\n", "depth 9"},
        {"NUM_LAYERS=4\nNUM_LAYER_SCHEDULE=0:2,0:3\n", "increase"},
        {"NUM_LAYERS=4\nNUM_LAYER_SCHEDULE=0-2\n", "NUM_LAYER_SCHEDULE"},
        {"NUM_LAYERS=4\nUNET_SKIPS=loop\n", "UNET_SKIPS=loop"},
        {"NUM_LAYERS=4\nFILM=1\nITER_EMBED=1\n", "FILM"},
        {"NUM_LAYERS=4\nPARALLEL_RESIDUAL=two_lane\nBLOCK_ATTNS=2\n", "BLOCK_ATTNS"},
        {"NUM_LAYERS=4\nPARALLEL_RESIDUAL=parallel\nITER_SCALE=1\n", "PARALLEL_RESIDUAL"},
        {"NUM_LAYERS=4\nPARALLEL_RESIDUAL=sideways\n", "PARALLEL_RESIDUAL"},
        {"NUM_LAYERS=4\nCONTROL_SCOPE=global\n", "CONTROL_SCOPE"},
        {"NUM_LAYERS=4\nREPEAT_UNTIE_MLP=half\n", "REPEAT_UNTIE_MLP"},
        {"NUM_LAYERS=4\nBLOCK_ATTNS=3\n", "BLOCK_ATTNS"},
        {"NUM_LAYERS=4\nMLP_LAYERS=4\n", "MLP_LAYERS"},
        {"NUM_LAYERS=4\nUNIVERSAL_UNIQUE_BLOCKS=2\nUNIVERSAL_ITERATIONS=300\n", "UNIVERSAL_ITERATIONS"},
    };
    size_t i;
    for (i = 0; i < sizeof B / sizeof B[0]; i++) {
        char err[512];
        utg_result r = UTG_OK;
        utg_model *m = make_model(B[i].text, &r, err, sizeof err);
        CHECK(m == NULL && r != UTG_OK, "accepted: %s", B[i].text);
        CHECK(strstr(err, B[i].needle) != NULL, "message for '%s' lacks '%s': %s", B[i].text, B[i].needle, err);
        utg_model_destroy(m);
    }
}

/* ---------------------------------------------------------------- phase switching */

typedef struct { size_t allocs; } count_ctx;
static void *count_alloc(size_t size, void *user) { ((count_ctx *)user)->allocs++; return malloc(size); }
static void count_free(void *p, void *user) { (void)user; free(p); }

/* Untied MLPs are zero until recurrence switches on, then copies of the shared MLP; the switch
   allocates nothing; activate = 0 (resume / evaluation) copies nothing. */
static void test_phase_switch(void) {
    utg_config cfg;
    utg_model_desc d;
    utg_model *m = NULL;
    utg_msg msg;
    count_ctx cc = {0};
    static char text[] = "MODEL_DIM=16\nNUM_HEADS=4\nNUM_KV_HEADS=2\nVOCAB_SIZE=32\nTRAIN_SEQ_LEN=8\nNUM_LAYERS=4\n"
                         "RECUR_LAYERS=1,2\nRECUR_START_STEP=5\nREPEAT_UNTIE_MLP=full\n";
    int32_t x[16], y[16];
    int i, t_fc, t_r0;
    double loss0, loss1, loss2;
    size_t before;
    float a[16 * 32], b[16 * 32];
    memset(&cfg, 0, sizeof cfg); memset(&d, 0, sizeof d); memset(&msg, 0, sizeof msg);
    utg_config_parse_text(&cfg, text, &msg);
    d.config = cfg;
    d.allocator.alloc_fn = count_alloc;
    d.allocator.free_fn = count_free;
    d.allocator.user = &cc;
    CHECK(utg_model_create(&d, &m) == UTG_OK, "%s", utg_model_message(m));
    if (!m) return;
    for (i = 0; i < 16; i++) { x[i] = (i * 7 + 3) % 32; y[i] = (i * 11 + 1) % 32; }
    t_fc = utg_model_find_tensor(m, "blocks.1.mlp.fc.weight");
    t_r0 = utg_model_find_tensor(m, "repeat_mlp.0.fc.weight");
    CHECK(t_fc >= 0 && t_r0 >= 0, "tensors");
    if (t_fc < 0 || t_r0 < 0) { utg_model_destroy(m); return; }
    utg_model_get(m, UTG_ARENA_PARAMS, t_r0, b, 16 * 32);
    for (i = 0; i < 16 * 32; i++) if (b[i] != 0.0f) break;
    CHECK(i == 16 * 32, "untied MLP is zero before recurrence");
    { /* random weights (zero-init projections make every block the identity at init) */
        size_t n = utg_model_arena_floats(m), k;
        float *all = (float *)malloc(n * 4);
        const utg_tensor_info *r0 = utg_model_tensor(m, t_r0);
        utg_model_get(m, UTG_ARENA_PARAMS, -1, all, n);
        for (k = 0; k < n; k++) all[k] += (float)(0.2 * urand());
        memset(all + r0->offset, 0, r0->numel * 4);
        utg_model_set(m, UTG_ARENA_PARAMS, -1, all, n);
        free(all);
    }
    CHECK(utg_model_reserve(m, 2) == UTG_OK, "reserve");
    CHECK(utg_model_forward(m, x, y, 2, &loss0) == UTG_OK && utg_model_backward(m, 1.0f) == UTG_OK, "phase 0 step");
    before = cc.allocs;
    CHECK(utg_model_set_phase(m, 1, 0) == UTG_OK, "select phase 1");
    utg_model_get(m, UTG_ARENA_PARAMS, t_r0, b, 16 * 32);
    CHECK(b[0] == 0.0f && b[5] == 0.0f, "activate = 0 copies nothing");
    CHECK(utg_model_set_phase(m, 0, 0) == UTG_OK && utg_model_set_phase(m, 1, 1) == UTG_OK, "activate phase 1");
    utg_model_get(m, UTG_ARENA_PARAMS, t_fc, a, 16 * 32);
    utg_model_get(m, UTG_ARENA_PARAMS, t_r0, b, 16 * 32);
    CHECK(memcmp(a, b, sizeof a) == 0, "untied MLP copied from the shared one at the switch");
    CHECK(utg_model_plan(m)->n_layers == 6, "6 virtual layers");
    CHECK(utg_model_forward(m, x, y, 2, &loss1) == UTG_OK && utg_model_backward(m, 1.0f) == UTG_OK, "phase 1 step");
    CHECK(loss1 != loss0, "the plan changed the function (%g vs %g)", loss0, loss1);
    CHECK(utg_model_set_phase(m, 0, 0) == UTG_OK && utg_model_forward(m, x, y, 2, &loss2) == UTG_OK && loss2 == loss0,
          "back to phase 0: the same loss bit for bit");
    CHECK(cc.allocs == before, "switching plans allocated %zu times", cc.allocs - before);
    CHECK(utg_model_set_phase(m, 2, 0) != UTG_OK && utg_model_set_phase(m, -1, 0) != UTG_OK, "bad phase refused");
    utg_model_destroy(m);
}

/* ---------------------------------------------------------------- gradients through plans */

static void plan_gradcheck(const char *what, const char *text, int phase) {
    utg_config cfg;
    utg_msg msg;
    static char buf[2048];
    memset(&cfg, 0, sizeof cfg);
    memset(&msg, 0, sizeof msg);
    snprintf(buf, sizeof buf, "MODEL_DIM=16\nNUM_HEADS=4\nNUM_KV_HEADS=2\nVOCAB_SIZE=32\nTRAIN_SEQ_LEN=8\nMLP_MULT=2\n"
                              "LOGIT_SOFTCAP=5\n%s", text);
    if (utg_config_parse_text(&cfg, buf, &msg) != UTG_OK) { CHECK(0, "%s: %s", what, msg.text); return; }
    mdl_run(what, cfg, phase);
}

static void test_grad_loops_shared(void) {
    plan_gradcheck("loop 1 x2 on 3 blocks, shared control", "NUM_LAYERS=3\nNUM_LOOPS=1\nLOOP_START=1\nLOOP_END=1\n", 0);
}
static void test_grad_recur_two_lane(void) {
    plan_gradcheck("PR #1204: recur 1, per-virtual control, untied MLP, two lanes",
                   "NUM_LAYERS=3\nRECUR_LAYERS=1\nRECUR_START_STEP=5\nCONTROL_SCOPE=virtual\nREPEAT_UNTIE_MLP=full\n"
                   "PARALLEL_RESIDUAL=two_lane\nPARALLEL_START_LAYER=1\n", 1);
}
static void test_grad_parallel_lanes(void) {
    plan_gradcheck("PR #1530: loop, fully parallel lanes, mean", "NUM_LAYERS=4\nNUM_LOOPS=1\nLOOP_START=1\nLOOP_END=2\n"
                   "PARALLEL_RESIDUAL=parallel\nPARALLEL_START_LAYER=2\n", 0);
    plan_gradcheck("fully parallel lanes, the MLP lane to the head", "NUM_LAYERS=3\nPARALLEL_RESIDUAL=parallel\n"
                   "PARALLEL_START_LAYER=1\nPARALLEL_FINAL_LANE=mlp\n", 0);
    plan_gradcheck("two lanes, the attention lane to the head", "NUM_LAYERS=3\nPARALLEL_RESIDUAL=two_lane\n"
                   "PARALLEL_START_LAYER=0\nPARALLEL_FINAL_LANE=attn\n", 0);
}
static void test_grad_gptj(void) {
    plan_gradcheck("GPT-J parallel from layer 2", "NUM_LAYERS=4\nPARALLEL_RESIDUAL=gptj\nPARALLEL_START_LAYER=2\n", 0);
}
static void test_grad_ut_iteration(void) {
    plan_gradcheck("PR #1110: UT 2 blocks x3, iteration embeddings and scales",
                   "UNIVERSAL_UNIQUE_BLOCKS=2\nUNIVERSAL_ITERATIONS=3\nITER_EMBED=1\nITER_SCALE=1\n", 0);
    plan_gradcheck("iteration scale alone", "UNIVERSAL_UNIQUE_BLOCKS=2\nUNIVERSAL_ITERATIONS=2\nITER_SCALE=1\n", 0);
}
static void test_grad_film(void) {
    plan_gradcheck("PR #1640: UT 2 blocks x2 with FiLM", "UNIVERSAL_UNIQUE_BLOCKS=2\nUNIVERSAL_ITERATIONS=2\nFILM=1\n", 0);
}
static void test_grad_superblock(void) {
    plan_gradcheck("PR #1088: super-block x2, norm bias, per-depth control",
                   "UNIVERSAL_UNIQUE_BLOCKS=1\nUNIVERSAL_ITERATIONS=2\nUNET_SKIPS=none\nCONTROL_SCOPE=virtual\n"
                   "NORM_BIAS=1\nBLOCK_ATTNS=2\nMLP_LAYERS=3\nTIE_EMBEDDINGS=0\n", 0);
}
static void test_grad_stem_core_tail(void) {
    plan_gradcheck("stem/core x2/tail, stem->tail skips, untied down proj",
                   "NUM_LAYERS=3\nNUM_LOOPS=1\nLOOP_START=1\nLOOP_END=1\nUNET_SKIPS=loop\nREPEAT_UNTIE_MLP=down\n", 0);
}

/* A looped model equals its unrolled flat copy: the same loss bit for bit, and each shared tensor's
   gradient is the sum of its copies' gradients (this checks the accumulation over visits exactly,
   at depths where finite differences in fp32 are too noisy). */
/* the looped model's name of the unrolled model's tensor: blocks.j.X -> blocks.<plan[j]>.X */
static const char *looped_name(const utg_plan *p, const char *flat, char *buf, size_t n) {
    int b, len = 0;
    if (sscanf(flat, "blocks.%d.%n", &b, &len) == 1 && len > 0 && b < p->n_layers)
        snprintf(buf, n, "blocks.%d.%s", p->layers[b].block, flat + len);
    else
        snprintf(buf, n, "%s", flat);
    return buf;
}

static void unrolled_equivalence(const char *what, const char *rec_text) {
    char err[512], flat_text[256], name[UTG_MAX_NAME];
    utg_model *R = make_model(rec_text, NULL, err, sizeof err), *F;
    const utg_plan *p;
    int i, j, n_t, bad = 0;
    int32_t x[16], y[16];
    double lr, lf, worst = 0.0;
    float *pr, *pf, *gr, *gf, *acc;
    CHECK(R != NULL, "%s: %s", what, err);
    if (!R) return;
    p = utg_model_plan(R);
    snprintf(flat_text, sizeof flat_text, "NUM_LAYERS=%d\n", p->n_layers);
    F = make_model(flat_text, NULL, err, sizeof err);
    CHECK(F != NULL, "flat: %s", err);
    if (!F) { utg_model_destroy(R); return; }
    pr = (float *)calloc(utg_model_arena_floats(R), 4); gr = (float *)calloc(utg_model_arena_floats(R), 4);
    pf = (float *)calloc(utg_model_arena_floats(F), 4); gf = (float *)calloc(utg_model_arena_floats(F), 4);
    acc = (float *)calloc(utg_model_arena_floats(R), 4);
    for (i = 0; i < (int)utg_model_arena_floats(R); i++) pr[i] = (float)(0.3 * urand());
    for (i = 0; i < utg_model_tensor_count(R); i++) { /* control tensors near 1, as trained ones are */
        const utg_tensor_info *t = utg_model_tensor(R, i);
        size_t k;
        if (t->role == UTG_ROLE_CONTROL) for (k = 0; k < t->numel; k++) pr[t->offset + k] += 1.0f;
    }
    n_t = utg_model_tensor_count(F);
    for (i = 0; i < n_t; i++) { /* flat blocks.j.X <- looped blocks.<plan[j]>.X; the rest by name */
        const utg_tensor_info *t = utg_model_tensor(F, i), *s;
        j = utg_model_find_tensor(R, looped_name(p, t->name, name, sizeof name));
        CHECK(j >= 0 && utg_model_tensor(R, j)->numel == t->numel, "no looped tensor for %s", t->name);
        if (j < 0) { bad = 1; break; }
        s = utg_model_tensor(R, j);
        memcpy(pf + t->offset, pr + s->offset, t->numel * 4);
    }
    for (i = 0; i < 16; i++) { x[i] = (i * 7 + 3) % 32; y[i] = (i * 11 + 1) % 32; }
    if (!bad) {
        utg_model_set(R, UTG_ARENA_PARAMS, -1, pr, utg_model_arena_floats(R));
        utg_model_set(F, UTG_ARENA_PARAMS, -1, pf, utg_model_arena_floats(F));
        utg_model_zero_grads(R); utg_model_zero_grads(F);
        CHECK(utg_model_forward(R, x, y, 2, &lr) == UTG_OK && utg_model_forward(F, x, y, 2, &lf) == UTG_OK, "forward");
        CHECK(lr == lf, "%s: looped loss %.9g, unrolled %.9g", what, lr, lf);
        utg_model_backward(R, 1.0f); utg_model_backward(F, 1.0f);
        utg_model_get(R, UTG_ARENA_GRADS, -1, gr, utg_model_arena_floats(R));
        utg_model_get(F, UTG_ARENA_GRADS, -1, gf, utg_model_arena_floats(F));
        for (i = 0; i < n_t; i++) { /* sum the copies' gradients onto the looped tensors */
            const utg_tensor_info *t = utg_model_tensor(F, i), *s;
            size_t k;
            s = utg_model_tensor(R, utg_model_find_tensor(R, looped_name(p, t->name, name, sizeof name)));
            for (k = 0; k < t->numel; k++) acc[s->offset + k] += gf[t->offset + k];
        }
        for (i = 0; i < utg_model_tensor_count(R); i++) {
            const utg_tensor_info *t = utg_model_tensor(R, i);
            double gmax = 1e-30, e = 0.0;
            size_t k;
            for (k = 0; k < t->numel; k++) if (fabs(acc[t->offset + k]) > gmax) gmax = fabs(acc[t->offset + k]);
            for (k = 0; k < t->numel; k++) {
                double d = fabs(acc[t->offset + k] - gr[t->offset + k]) / gmax;
                if (d > e) e = d;
            }
            CHECK(e < 1e-5, "%s: %s differs from the sum of its copies by %.3g of its largest entry", what, t->name, e);
            if (e > worst) worst = e;
        }
        printf("      %-58s loss equal, gradients within %.2g\n", what, worst);
    }
    free(pr); free(gr); free(pf); free(gf); free(acc);
    utg_model_destroy(R);
    utg_model_destroy(F);
}

static void test_grad_unrolled_equivalence(void) {
    unrolled_equivalence("loop 1-2 x3 on 4 blocks (8 virtual)", "NUM_LAYERS=4\nNUM_LOOPS=2\nLOOP_START=1\nLOOP_END=2\n");
    unrolled_equivalence("UT 3 blocks x4 (12 virtual)", "UNIVERSAL_UNIQUE_BLOCKS=3\nUNIVERSAL_ITERATIONS=4\n");
    unrolled_equivalence("explicit lists, 11 blocks / 17 virtual",
                         "NUM_LAYERS=11\nENCODER_LAYERS=0,1,2,3,4,5,3,4\nDECODER_LAYERS=5,3,4,5,6,7,8,9,10\n");
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    RUN(test_plan_baseline);
    RUN(test_plan_recur_layers);
    RUN(test_plan_loops);
    RUN(test_plan_explicit_lists);
    RUN(test_plan_progressive);
    RUN(test_plan_universal_forms);
    RUN(test_recipes);
    RUN(test_safetensors_3d);
    RUN(test_plan_errors);
    RUN(test_phase_switch);
    RUN(test_grad_loops_shared);
    RUN(test_grad_unrolled_equivalence);
    RUN(test_grad_recur_two_lane);
    RUN(test_grad_parallel_lanes);
    RUN(test_grad_gptj);
    RUN(test_grad_ut_iteration);
    RUN(test_grad_film);
    RUN(test_grad_superblock);
    RUN(test_grad_stem_core_tail);
    return TEST_SUMMARY();
}
