/* Config table, parameter arena and init, and the whole model: gradients against finite
   differences on tiny configs, a planted backend error caught, determinism. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "gradcheck.h"
#include "test.h"
#include "mdl.h"
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---------------------------------------------------------------- config */

static void test_config_zero_is_baseline(void) {
    utg_config z, c;
    memset(&z, 0, sizeof z);
    c = utg_config_resolve(&z);
    /* the train_gpt.py defaults */
    CHECK(c.num_layers == 9 && c.model_dim == 512 && c.num_heads == 8 && c.num_kv_heads == 4, "shape");
    CHECK(c.mlp_mult == 2 && c.vocab_size == 1024 && c.tie_embeddings == 1, "mlp/vocab/tie");
    CHECK(c.rope_base == 10000.0 && c.logit_softcap == 30.0 && c.qk_gain_init == 1.5, "rope/softcap/qk gain");
    CHECK(c.tied_embed_init_std == 0.005 && c.train_seq_len == 1024 && c.seed == 1337, "init std/seq/seed");
    CHECK(c.matrix_lr == 0.04 && c.scalar_lr == 0.04 && c.tied_embed_lr == 0.05 && c.embed_lr == 0.6 && c.head_lr == 0.008, "lrs");
    CHECK(c.muon_momentum == 0.95 && c.muon_backend_steps == 5 && c.muon_momentum_warmup_start == 0.85 &&
              c.muon_momentum_warmup_steps == 500, "muon");
    CHECK(c.beta1 == 0.9 && c.beta2 == 0.95 && c.adam_eps == 1e-8 && c.grad_clip_norm == 0.0, "adam");
    CHECK(c.iterations == 20000 && c.warmdown_iters == 1200 && c.warmup_steps == 20 && c.train_batch_tokens == 524288, "loop");
    CHECK(c.max_wallclock_seconds == 600.0 && c.val_loss_every == 1000 && c.train_log_every == 200 && c.val_batch_size == 524288, "loop 2");
    CHECK(c.rms_norm_eps == (double)1.1920928955078125e-07, "eps is fp32 machine epsilon");
    CHECK(strcmp(c.data_path, "./data/datasets/fineweb10B_sp1024") == 0, "data path");
    CHECK(strstr(c.control_tensor_name_patterns, "resid_mix") != NULL, "control patterns");
    /* idempotent, and every knob in the table resolves to its documented default */
    {
        utg_config c2 = utg_config_resolve(&c);
        int i;
        CHECK(memcmp(&c, &c2, sizeof c) == 0, "resolve is not idempotent");
        for (i = 0; i < utg_config_knob_count(); i++) {
            const utg_knob_info *k = utg_config_knob(i);
            char buf[256], def[256];
            utg_config_format(&c, i, buf, sizeof buf);
            if (k->kind == UTG_KNOB_STR) snprintf(def, sizeof def, "%s", k->default_string);
            else if (k->kind == UTG_KNOB_ENUM) snprintf(def, sizeof def, "%.*s", (int)strcspn(k->choices, "|"), k->choices);
            else if (k->kind == UTG_KNOB_REAL) { /* printed exactly: it reads back as the default */
                snprintf(def, sizeof def, "%s", strtod(buf, NULL) == k->default_number ? buf : "(another number)");
            }
            else snprintf(def, sizeof def, "%d", (int)k->default_number);
            CHECK(strcmp(buf, def) == 0, "%s resolves to %s, table says %s", k->env_name, buf, def);
            CHECK(k->doc && strlen(k->doc) > 5, "%s has no doc line", k->env_name);
        }
    }
    CHECK(utg_config_validate(&c, NULL) == UTG_OK, "baseline must validate");
}

static void test_config_set_and_errors(void) {
    utg_config c;
    utg_msg msg;
    char text[] = "# a recipe\nNUM_LAYERS=4\n  export MODEL_DIM = 256\nTIE_EMBEDDINGS=0\nrun_id=\"my run\"\n\nLOGIT_SOFTCAP=0\n";
    memset(&c, 0, sizeof c);
    CHECK(utg_config_parse_text(&c, text, &msg) == UTG_OK, "parse: %s", msg.text);
    c = utg_config_resolve(&c);
    CHECK(c.num_layers == 4 && c.model_dim == 256, "values");
    CHECK(c.tie_embeddings == UTG_OFF, "TIE_EMBEDDINGS=0 must store UTG_OFF, got %d", c.tie_embeddings);
    CHECK(c.logit_softcap == UTG_OFF, "LOGIT_SOFTCAP=0 must mean no cap");
    CHECK(strcmp(c.run_id, "my run") == 0, "quoted string: '%s'", c.run_id);
    CHECK(c.num_heads == 8, "untouched knob keeps its default");
    CHECK(utg_config_set(&c, "NUM_LAYERS", "9x", &msg) == UTG_ERR_CONFIG && strstr(msg.text, "NUM_LAYERS"), "garbage int");
    CHECK(utg_config_set(&c, "NUM_LAYERS", "0", &msg) == UTG_ERR_CONFIG, "0 layers must be refused");
    CHECK(utg_config_set(&c, "NUM_LAYERS", "-3", &msg) == UTG_ERR_CONFIG, "negative");
    CHECK(utg_config_set(&c, "NUM_LAYERS", "99999999999", &msg) == UTG_ERR_CONFIG, "overflow");
    CHECK(utg_config_set(&c, "MATRIX_LR", "nan", &msg) == UTG_ERR_CONFIG, "nan");
    CHECK(utg_config_set(&c, "TIE_EMBEDDINGS", "2", &msg) == UTG_ERR_CONFIG, "bool 2");
    CHECK(utg_config_set(&c, "NO_SUCH_KNOB", "1", &msg) == UTG_ERR_CONFIG && strstr(msg.text, "NO_SUCH_KNOB"), "unknown");
    CHECK(utg_config_set(&c, "num_heads", "16", &msg) == UTG_OK && c.num_heads == 16, "field name works too");
    {
        char bad[] = "NUM_LAYERS=3\nthis line has no equals\n";
        CHECK(utg_config_parse_text(&c, bad, &msg) == UTG_ERR_CONFIG && strstr(msg.text, "line 2"), "line number: %s", msg.text);
    }
    /* validate: inconsistent shapes get a message naming the knobs */
    memset(&c, 0, sizeof c);
    c.num_heads = 7;
    c = utg_config_resolve(&c);
    CHECK(utg_config_validate(&c, &msg) == UTG_ERR_CONFIG && strstr(msg.text, "NUM_HEADS"), "heads: %s", msg.text);
    memset(&c, 0, sizeof c);
    c.num_kv_heads = 3;
    c = utg_config_resolve(&c);
    CHECK(utg_config_validate(&c, &msg) == UTG_ERR_CONFIG && strstr(msg.text, "NUM_KV_HEADS"), "kv heads");
    memset(&c, 0, sizeof c);
    c.model_dim = 24; c.num_heads = 8; c.num_kv_heads = 4; /* head dim 3: odd */
    c = utg_config_resolve(&c);
    CHECK(utg_config_validate(&c, &msg) == UTG_ERR_CONFIG && strstr(msg.text, "even"), "odd head dim");
    /* a model refuses a bad config without crashing, and says why */
    {
        utg_model_desc d;
        utg_model *m = NULL;
        memset(&d, 0, sizeof d);
        d.config.num_heads = 5;
        CHECK(utg_model_create(&d, &m) == UTG_ERR_CONFIG, "bad config accepted");
        CHECK(m && strstr(utg_model_message(m), "NUM_HEADS"), "message: %s", utg_model_message(m));
        utg_model_destroy(m);
    }
}

/* One value of knob i as text: set must give ok (1) or a refusal naming the knob and the value (0); an
   accepted value formats back to text that sets the same value. A refused value put into a resolved
   config by hand must fail validate with the knob named (except UTG_OFF, which reads as 0). */
static void config_try(int i, double v, int ok) {
    const utg_knob_info *k = utg_config_knob(i);
    utg_config c, c2;
    utg_msg msg;
    char text[64], back[64];
    utg_result r;
    if (k->kind == UTG_KNOB_REAL)
        snprintf(text, sizeof text, "%.17g", v);
    else
        snprintf(text, sizeof text, "%.0f", v);
    memset(&c, 0, sizeof c);
    memset(&msg, 0, sizeof msg);
    r = utg_config_set(&c, k->env_name, text, &msg);
    if (ok) {
        CHECK(r == UTG_OK, "%s=%s refused: %s", k->env_name, text, msg.text);
        if (r != UTG_OK) return;
        c = utg_config_resolve(&c);
        utg_config_format(&c, i, back, sizeof back);
        memset(&c2, 0, sizeof c2);
        CHECK(utg_config_set(&c2, k->env_name, back, &msg) == UTG_OK, "%s=%s formats as %s: %s", k->env_name,
              text, back, msg.text);
        c2 = utg_config_resolve(&c2);
        CHECK(!memcmp(utg__knob_cptr(&c, i), utg__knob_cptr(&c2, i),
                      k->kind == UTG_KNOB_REAL ? sizeof(double) : sizeof(int)),
              "%s=%s does not round-trip through '%s'", k->env_name, text, back);
        CHECK(strtod(back, NULL) == v, "%s=%s formats as %s", k->env_name, text, back);
        return;
    }
    CHECK(r == UTG_ERR_CONFIG && strstr(msg.text, k->env_name) && strstr(msg.text, text) &&
              strstr(msg.text, "must be"),
          "%s=%s: result %d, message '%s'", k->env_name, text, (int)r, msg.text);
    if (v == UTG_OFF && ((k->flags & UTG_KF_OFF) || k->kind == UTG_KNOB_BOOL)) return;
    memset(&c, 0, sizeof c);
    c = utg_config_resolve(&c);
    if (k->kind == UTG_KNOB_REAL)
        *(double *)utg__knob_ptr(&c, i) = v;
    else
        *(int *)utg__knob_ptr(&c, i) = (int)v;
    memset(&msg, 0, sizeof msg);
    CHECK(utg_config_validate(&c, &msg) == UTG_ERR_CONFIG && strstr(msg.text, k->env_name),
          "validate with %s=%s: '%s'", k->env_name, text, msg.text);
}

/* Every knob with a range: its bounds are accepted and the values just outside refused, by the parser
   and by the validator. */
static void test_config_ranges(void) {
    int i, n_ranged = 0;
    for (i = 0; i < utg_config_knob_count(); i++) {
        const utg_knob_info *k = utg_config_knob(i);
        int gt = (k->flags & UTG_KF_GT) != 0, lt = (k->flags & UTG_KF_LT) != 0;
        double lo, hi;
        if (k->kind == UTG_KNOB_STR || k->kind == UTG_KNOB_ENUM) continue;
        n_ranged++;
        CHECK(k->min < k->max && k->min >= 0, "%s: range %g..%g", k->env_name, k->min, k->max);
        CHECK(!(k->flags & UTG_KF_OFF) || (k->min == 0 && !gt), "%s: 0 means off, so the range starts at 0",
              k->env_name);
        if (k->kind == UTG_KNOB_REAL) {
            lo = gt ? nextafter(k->min, HUGE_VAL) : k->min;
            config_try(i, lo, 1);
            config_try(i, gt ? k->min : nextafter(k->min, -HUGE_VAL), 0);
            if (k->max == UTG_INF) continue;
            hi = lt ? nextafter(k->max, -HUGE_VAL) : k->max;
            config_try(i, hi, 1);
            config_try(i, lt ? k->max : nextafter(k->max, HUGE_VAL), 0);
        } else {
            lo = gt ? k->min + 1 : k->min;
            config_try(i, lo, 1);
            if (!(lo - 1 == 0 && (k->flags & UTG_KF_OR0))) config_try(i, lo - 1, 0);
            if (k->flags & UTG_KF_OR0) config_try(i, 0, 1);
            if (k->max == UTG_INF) {
                config_try(i, 2147483647.0, 1);
                continue;
            }
            hi = lt ? k->max - 1 : k->max;
            config_try(i, hi, 1);
            config_try(i, hi + 1, 0);
        }
    }
    CHECK(n_ranged > 100, "%d knobs with a range", n_ranged);
    { /* the messages, word for word */
        static const char *want[][3] = {
            {"NUM_LAYERS", "0", "NUM_LAYERS must be in 1..1024 (got 0)"},
            {"EMA_DECAY", "1", "EMA_DECAY must be in (0, 1) (got 1)"},
            {"ATTN_BITS", "1", "ATTN_BITS must be 0 or in 2..8 (got 1)"},
            {"ROPE_BASE", "0.5", "ROPE_BASE must be > 1 (got 0.5)"},
            {"TIE_EMBEDDINGS", "2", "TIE_EMBEDDINGS must be 0 or 1 (got 2)"},
            {"UNET_SKIPS", "loops", "UNET_SKIPS must be one of half|loop|none (got 'loops')"},
        };
        utg_config c;
        utg_msg msg;
        size_t j;
        for (j = 0; j < sizeof want / sizeof want[0]; j++) {
            memset(&c, 0, sizeof c);
            CHECK(utg_config_set(&c, want[j][0], want[j][1], &msg) == UTG_ERR_CONFIG &&
                      !strcmp(msg.text, want[j][2]),
                  "%s=%s: '%s'", want[j][0], want[j][1], msg.text);
        }
    }
}

/* The ENUM knobs: every word is accepted, is its constant and formats back; other words are refused
   with the choices named; the constants beside the table follow the words of the rows. */
static void test_config_enums(void) {
    static const struct {
        const char *env;
        int value;
        const char *word;
    } consts[] = {
        {"UNET_SKIPS", UTG_UNET_SKIPS_HALF, "half"},
        {"UNET_SKIPS", UTG_UNET_SKIPS_LOOP, "loop"},
        {"UNET_SKIPS", UTG_UNET_SKIPS_NONE, "none"},
        {"CONTROL_SCOPE", UTG_CONTROL_SCOPE_PHYSICAL, "physical"},
        {"CONTROL_SCOPE", UTG_CONTROL_SCOPE_VIRTUAL, "virtual"},
        {"REPEAT_UNTIE_MLP", UTG_REPEAT_UNTIE_MLP_NONE, "none"},
        {"REPEAT_UNTIE_MLP", UTG_REPEAT_UNTIE_MLP_FULL, "full"},
        {"REPEAT_UNTIE_MLP", UTG_REPEAT_UNTIE_MLP_DOWN, "down"},
        {"PARALLEL_RESIDUAL", UTG_PARALLEL_RESIDUAL_NONE, "none"},
        {"PARALLEL_RESIDUAL", UTG_PARALLEL_RESIDUAL_GPTJ, "gptj"},
        {"PARALLEL_RESIDUAL", UTG_PARALLEL_RESIDUAL_TWO_LANE, "two_lane"},
        {"PARALLEL_RESIDUAL", UTG_PARALLEL_RESIDUAL_PARALLEL, "parallel"},
        {"PARALLEL_FINAL_LANE", UTG_PARALLEL_FINAL_LANE_MEAN, "mean"},
        {"PARALLEL_FINAL_LANE", UTG_PARALLEL_FINAL_LANE_ATTN, "attn"},
        {"PARALLEL_FINAL_LANE", UTG_PARALLEL_FINAL_LANE_MLP, "mlp"},
        {"MLP_ACTIVATION", UTG_MLP_ACTIVATION_RELU2, "relu2"},
        {"MLP_ACTIVATION", UTG_MLP_ACTIVATION_LEAKY_RELU2, "leaky_relu2"},
        {"Q_GAIN_SCOPE", UTG_Q_GAIN_SCOPE_BLOCK, "block"},
        {"Q_GAIN_SCOPE", UTG_Q_GAIN_SCOPE_CONTROL, "control"},
        {"ON_NONFINITE", UTG_ON_NONFINITE_STOP, "stop"},
        {"ON_NONFINITE", UTG_ON_NONFINITE_ROLLBACK, "rollback"},
        {"QUANT_CLIP", UTG_QUANT_CLIP_PERCENTILE, "percentile"},
        {"QUANT_CLIP", UTG_QUANT_CLIP_MAX, "max"},
        {"QUANT_CLIP", UTG_QUANT_CLIP_SDCLIP, "sdclip"},
        {"QUANT_CLIP", UTG_QUANT_CLIP_SEARCH, "search"},
        {"GPTQ_CALIBRATION", UTG_GPTQ_CALIBRATION_TRAIN, "train"},
        {"GPTQ_CALIBRATION", UTG_GPTQ_CALIBRATION_SELF, "self"},
        {"GPTQ_CALIBRATION", UTG_GPTQ_CALIBRATION_RANDOM, "random"},
        {"QAT", UTG_QAT_NONE, "none"},
        {"QAT", UTG_QAT_STE, "ste"},
        {"QAT", UTG_QAT_NOISY, "noisy"},
        {"ACTIVATION_DTYPE", UTG_ACTIVATION_DTYPE_AUTO, "auto"},
        {"ACTIVATION_DTYPE", UTG_ACTIVATION_DTYPE_FP32, "fp32"},
        {"ACTIVATION_DTYPE", UTG_ACTIVATION_DTYPE_BF16, "bf16"},
        {"COMPRESSOR", UTG_COMPRESSOR_BROTLI, "brotli"},
        {"COMPRESSOR", UTG_COMPRESSOR_STORED, "stored"},
        {"TRAIN_LOADER", UTG_TRAIN_LOADER_SEQUENTIAL, "sequential"},
        {"TRAIN_LOADER", UTG_TRAIN_LOADER_SHUFFLED, "shuffled"},
    };
    static const char *bad[] = {"", "bogus", "HALF", "half|loop", " half", "0", "1"};
    int i, n_enum = 0, n_words_all = 0;
    size_t j;
    for (i = 0; i < utg_config_knob_count(); i++) {
        const utg_knob_info *k = utg_config_knob(i);
        const char *w;
        int n_words = 0, n_consts = 0;
        if (k->kind != UTG_KNOB_ENUM) continue;
        n_enum++;
        CHECK(k->choices && k->choices[0] && k->default_number == 0, "%s: choices", k->env_name);
        for (w = k->choices; w;) { /* each word */
            const char *bar = strchr(w, '|');
            char word[64], back[64], help[1024];
            utg_config c;
            utg_msg msg;
            snprintf(word, sizeof word, "%.*s", bar ? (int)(bar - w) : (int)strlen(w), w);
            memset(&c, 0, sizeof c);
            CHECK(utg_config_set(&c, k->env_name, word, &msg) == UTG_OK, "%s=%s: %s", k->env_name, word,
                  msg.text);
            CHECK(*(int *)utg__knob_ptr(&c, i) == n_words, "%s=%s is %d", k->env_name, word,
                  *(int *)utg__knob_ptr(&c, i));
            c = utg_config_resolve(&c);
            CHECK(!strcmp(utg_config_format(&c, i, back, sizeof back), word), "%s=%s formats as %s",
                  k->env_name, word, back);
            CHECK(utg_config_validate(&c, &msg) == UTG_OK || !strstr(msg.text, k->env_name), "%s=%s: %s",
                  k->env_name, word, msg.text);
            for (j = 0; j < sizeof consts / sizeof consts[0]; j++)
                if (!strcmp(consts[j].env, k->env_name) && !strcmp(consts[j].word, word)) {
                    CHECK(consts[j].value == n_words, "%s_%s is %d, the word's index %d", k->env_name, word,
                          consts[j].value, n_words);
                    n_consts++;
                }
            utg_config_help_line(i, help, sizeof help);
            CHECK(strstr(help, k->choices) != NULL, "--help of %s lacks the choices: %s", k->env_name, help);
            n_words++;
            w = bar ? bar + 1 : NULL;
        }
        n_words_all += n_words;
        CHECK(n_consts == n_words, "%s: %d constants for %d words", k->env_name, n_consts, n_words);
        for (j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            utg_config c;
            utg_msg msg;
            memset(&c, 0, sizeof c);
            CHECK(utg_config_set(&c, k->env_name, bad[j], &msg) == UTG_ERR_CONFIG &&
                      strstr(msg.text, k->env_name) && strstr(msg.text, k->choices),
                  "%s='%s': %s", k->env_name, bad[j], msg.text);
        }
        { /* an index outside the words, put into a config by hand */
            static const int outside[] = {-1, 0};
            utg_config c;
            utg_msg msg;
            for (j = 0; j < 2; j++) {
                memset(&c, 0, sizeof c);
                c = utg_config_resolve(&c);
                *(int *)utg__knob_ptr(&c, i) = outside[j] ? outside[j] : n_words;
                CHECK(utg_config_validate(&c, &msg) == UTG_ERR_CONFIG && strstr(msg.text, k->env_name) &&
                          strstr(msg.text, k->choices),
                      "%s index %d: %s", k->env_name, *(int *)utg__knob_ptr(&c, i), msg.text);
            }
        }
    }
    CHECK(n_enum == 14 && n_words_all == (int)(sizeof consts / sizeof consts[0]), "%d enum knobs, %d words",
          n_enum, n_words_all);
    { /* utg_knob_info and --help show ranges too */
        const utg_knob_info *k = utg_config_knob(utg_config_find_knob("NUM_LAYERS"));
        char help[1024];
        CHECK(k && k->min == 1 && k->max == 1024 && !k->choices, "NUM_LAYERS info");
        utg_config_help_line(utg_config_find_knob("NUM_LAYERS"), help, sizeof help);
        CHECK(strstr(help, " 1..1024 ") != NULL, "help: %s", help);
        utg_config_help_line(utg_config_find_knob("EMA_DECAY"), help, sizeof help);
        CHECK(strstr(help, " (0, 1) ") != NULL, "help: %s", help);
    }
}

/* ---------------------------------------------------------------- arena */

static void test_arena_baseline(void) {
    utg_model *m = NULL;
    int i;
    CHECK(utg_model_create(NULL, &m) == UTG_OK, "create: %s", utg_model_message(m));
    /* 17,059,912 = 9 x 1,837,064 + 524,288 + 2,048 */
    CHECK(utg_model_param_count(m) == 17059912u, "parameter count %zu", utg_model_param_count(m));
    CHECK(utg_model_tensor_count(m) == 2 + 9 * 10, "tensor count %d", utg_model_tensor_count(m));
    {
        const utg_tensor_info *t = utg_model_tensor(m, utg_model_find_tensor(m, "blocks.8.mlp.proj.weight"));
        CHECK(t && t->shape[0] == 512 && t->shape[1] == 1024 && t->role == UTG_ROLE_MATRIX && t->block == 8, "mlp proj");
        t = utg_model_tensor(m, utg_model_find_tensor(m, "blocks.0.attn.c_k.weight"));
        CHECK(t && t->shape[0] == 256 && t->shape[1] == 512, "c_k is [Hkv*hd, d]");
        t = utg_model_tensor(m, utg_model_find_tensor(m, "skip_weights"));
        CHECK(t && t->shape[0] == 4 && t->shape[1] == 512 && t->role == UTG_ROLE_CONTROL, "skip_weights [4,512]");
        t = utg_model_tensor(m, utg_model_find_tensor(m, "blocks.3.attn.q_gain"));
        CHECK(t && t->ndim == 1 && t->shape[0] == 8 && t->role == UTG_ROLE_CONTROL, "q_gain");
        t = utg_model_tensor(m, utg_model_find_tensor(m, "tok_emb.weight"));
        CHECK(t && t->role == UTG_ROLE_EMBED && t->shape[0] == 1024, "tok_emb");
        CHECK(utg_model_find_tensor(m, "lm_head.weight") < 0, "tied model has no lm_head");
    }
    /* offsets: aligned, in order, non-overlapping, inside the arena */
    for (i = 0; i < utg_model_tensor_count(m); i++) {
        const utg_tensor_info *t = utg_model_tensor(m, i);
        CHECK(t->offset % 16 == 0, "%s misaligned", t->name);
        if (i > 0) {
            const utg_tensor_info *p = utg_model_tensor(m, i - 1);
            CHECK(p->offset + p->numel <= t->offset, "%s overlaps %s", t->name, p->name);
        }
        CHECK(t->offset + t->numel <= utg_model_arena_floats(m), "%s outside the arena", t->name);
    }
    utg_model_destroy(m);
    {
        utg_model_desc d;
        memset(&d, 0, sizeof d);
        d.config.tie_embeddings = UTG_OFF;
        CHECK(utg_model_create(&d, &m) == UTG_OK, "untied");
        CHECK(utg_model_find_tensor(m, "lm_head.weight") >= 0, "untied model needs lm_head");
        CHECK(utg_model_param_count(m) == 17059912u + 524288u, "untied count %zu", utg_model_param_count(m));
        utg_model_destroy(m);
    }
}

static float *get_tensor(utg_model *m, const char *name, size_t *n) {
    int ti = utg_model_find_tensor(m, name);
    const utg_tensor_info *t = utg_model_tensor(m, ti);
    float *p = (float *)malloc(t->numel * sizeof(float));
    utg_model_get(m, UTG_ARENA_PARAMS, ti, p, t->numel);
    *n = t->numel;
    return p;
}

static void test_init_matches_train_gpt(void) {
    utg_model *m = NULL;
    size_t n, i;
    float *p;
    double s = 0, s2 = 0, mx = 0;
    CHECK(utg_model_create(NULL, &m) == UTG_OK, "create");
    p = get_tensor(m, "tok_emb.weight", &n);
    for (i = 0; i < n; i++) { s += p[i]; s2 += (double)p[i] * p[i]; }
    CHECK(fabs(s / n) < 1e-4 && fabs(sqrt(s2 / n) - 0.005) < 0.0001, "tied embedding N(0, 0.005^2): mean %g std %g", s / n, sqrt(s2 / n));
    free(p);
    p = get_tensor(m, "blocks.2.attn.c_q.weight", &n);
    s = s2 = 0;
    for (i = 0; i < n; i++) { s += p[i]; s2 += (double)p[i] * p[i]; if (fabs(p[i]) > mx) mx = fabs(p[i]); }
    /* U(-b, b), b = 1/sqrt(512): max close to b, variance b^2/3 */
    CHECK(mx <= 1.0 / sqrt(512.0) && mx > 0.99 / sqrt(512.0), "uniform bound: max %g", mx);
    CHECK(fabs(s2 / n - 1.0 / (3 * 512.0)) < 0.02 / (3 * 512.0), "uniform variance %g", s2 / n);
    free(p);
    p = get_tensor(m, "blocks.2.mlp.fc.weight", &n);
    for (mx = 0, i = 0; i < n; i++) if (fabs(p[i]) > mx) mx = fabs(p[i]);
    CHECK(mx <= 1.0 / sqrt(512.0) && mx > 0.99 / sqrt(512.0), "fc fan_in is d");
    free(p);
    {
        const char *zero[] = {"blocks.0.attn.proj.weight", "blocks.5.mlp.proj.weight"};
        for (i = 0; i < 2; i++) {
            size_t k, nz = 0;
            p = get_tensor(m, zero[i], &n);
            for (k = 0; k < n; k++) nz += p[k] != 0.0f;
            CHECK(nz == 0, "%s must start at zero", zero[i]);
            free(p);
        }
    }
    p = get_tensor(m, "blocks.4.resid_mix", &n);
    CHECK(p[0] == 1.0f && p[511] == 1.0f && p[512] == 0.0f && p[1023] == 0.0f, "resid_mix = [ones; zeros]");
    free(p);
    p = get_tensor(m, "blocks.4.attn.q_gain", &n);
    CHECK(n == 8 && p[0] == 1.5f && p[7] == 1.5f, "q_gain = QK_GAIN_INIT");
    free(p);
    p = get_tensor(m, "skip_weights", &n);
    CHECK(p[0] == 1.0f && p[n - 1] == 1.0f, "skip_weights = 1");
    free(p);
    utg_model_destroy(m);
}

static void test_init_deterministic(void) {
    utg_model *a = NULL, *b = NULL;
    size_t n;
    float *pa, *pb;
    utg_model_create(NULL, &a);
    utg_model_create(NULL, &b);
    n = utg_model_arena_floats(a);
    pa = (float *)malloc(n * 4);
    pb = (float *)malloc(n * 4);
    utg_model_get(a, UTG_ARENA_PARAMS, -1, pa, n);
    utg_model_get(b, UTG_ARENA_PARAMS, -1, pb, n);
    CHECK(memcmp(pa, pb, n * 4) == 0, "same seed, different parameters");
    utg_model_init_params(b, 7);
    utg_model_get(b, UTG_ARENA_PARAMS, -1, pb, n);
    CHECK(memcmp(pa, pb, n * 4) != 0, "a different seed must change the parameters");
    utg_model_init_params(b, 1337);
    utg_model_get(b, UTG_ARENA_PARAMS, -1, pb, n);
    CHECK(memcmp(pa, pb, n * 4) == 0, "re-init with the same seed must reproduce");
    free(pa); free(pb);
    utg_model_destroy(a);
    utg_model_destroy(b);
}

/* ---------------------------------------------------------------- whole model */

static utg_config tiny_config(int L, int d, int H, int Hkv, int V, int T, int tie, double softcap) {
    utg_config c;
    memset(&c, 0, sizeof c);
    c.num_layers = L; c.model_dim = d; c.num_heads = H; c.num_kv_heads = Hkv; c.vocab_size = V;
    c.train_seq_len = T; c.tie_embeddings = tie ? 1 : UTG_OFF; c.logit_softcap = softcap; c.mlp_mult = 2;
    return c;
}

static void run_model_gradcheck(const char *what, utg_config cfg) { mdl_run(what, cfg, 0); }

static void test_model_gradcheck_tied_gqa(void) {
    run_model_gradcheck("3 layers (odd: skip stack), GQA 4/2, tied, softcap 5", tiny_config(3, 16, 4, 2, 32, 8, 1, 5.0));
}
static void test_model_gradcheck_untied_mha(void) {
    run_model_gradcheck("4 layers, MHA 2/2, untied, no softcap", tiny_config(4, 12, 2, 2, 24, 6, 0, UTG_OFF));
}
static void test_model_gradcheck_mqa(void) {
    run_model_gradcheck("2 layers, MQA 4/1, tied, softcap 30", tiny_config(2, 16, 4, 1, 20, 7, 1, 30.0));
}

/* A planted error in one backend op must make the whole-model check fail. */
static void bad_rmsnorm_bwd(utg_backend *be, utg_dtype at, void *dxv, const void *dyv, const void *y,
                            const float *rstd, int rows, int cols) {
    float *dx = (float *)dxv;
    const float *dy = (const float *)dyv;
    int i;
    (void)be; (void)y; (void)at; /* the test model stores fp32 activations */
    for (i = 0; i < rows * cols; i++) dx[i] += rstd[i / cols] * dy[i]; /* projection term missing */
}
static void test_model_gradcheck_catches_planted_error(void) {
    utg_backend *be;
    mdl_ctx c;
    utg_config cfg = tiny_config(2, 16, 4, 2, 32, 8, 1, 5.0);
    const char *where = "";
    double worst;
    utg_backend_cpu_create(NULL, &be);
    be->rmsnorm_bwd = bad_rmsnorm_bwd;
    if (!mdl_setup(&c, &cfg, be)) { CHECK(0, "setup"); utg_backend_destroy(be); return; }
    worst = mdl_check(&c, 0, &where);
    CHECK(worst > 5.0, "a wrong RMSNorm backward went unnoticed (worst ratio %.3g)", worst);
    mdl_free(&c);
    utg_backend_destroy(be);
}

static void test_model_loss_at_init(void) {
    utg_model_desc d;
    utg_model *m = NULL;
    int32_t x[64], y[64];
    int i;
    double loss = 0;
    memset(&d, 0, sizeof d);
    d.config = tiny_config(4, 32, 4, 2, 64, 32, 1, 30.0);
    utg_model_create(&d, &m);
    for (i = 0; i < 64; i++) { x[i] = (i * 13) % 64; y[i] = (i * 29 + 1) % 64; }
    CHECK(utg_model_forward(m, x, y, 2, &loss) == UTG_OK, "forward: %s", utg_model_message(m));
    /* zero-init projections and a 0.005-std embedding: logits are almost 0, the loss ln V */
    CHECK(fabs(loss - log(64.0)) < 0.01, "loss at init %.5f, expected about ln 64 = %.5f", loss, log(64.0));
    utg_model_destroy(m);
}

static void test_model_rejects_bad_use(void) {
    utg_model_desc d;
    utg_model *m = NULL;
    int32_t x[16], y[16];
    int i;
    double loss;
    memset(&d, 0, sizeof d);
    d.config = tiny_config(2, 16, 4, 2, 32, 8, 1, 30.0);
    utg_model_create(&d, &m);
    for (i = 0; i < 16; i++) { x[i] = i; y[i] = i + 1; }
    CHECK(utg_model_backward(m, 1.0f) == UTG_ERR_INVALID, "backward before forward must fail");
    x[5] = 32;
    CHECK(utg_model_forward(m, x, y, 2, &loss) == UTG_ERR_MISMATCH && strstr(utg_model_message(m), "vocabulary"),
          "token id == V must be refused: %s", utg_model_message(m));
    x[5] = -1;
    CHECK(utg_model_forward(m, x, y, 2, &loss) == UTG_ERR_MISMATCH, "negative id");
    x[5] = 5;
    CHECK(utg_model_forward(m, x, y, 0, &loss) == UTG_ERR_INVALID, "zero sequences");
    CHECK(utg_model_forward(m, x, y, 2, &loss) == UTG_OK, "valid forward after errors");
    CHECK(utg_model_backward(m, 1.0f) == UTG_OK, "backward");
    CHECK(utg_model_backward(m, 1.0f) == UTG_ERR_INVALID, "second backward without a forward");
    {
        utg_backend be;
        utg_model *m2 = NULL;
        memset(&be, 0, sizeof be);
        be.abi_version = 999;
        be.struct_size = sizeof be;
        be.name = "alien";
        d.backend = &be;
        CHECK(utg_model_create(&d, &m2) == UTG_ERR_BACKEND && strstr(utg_model_message(m2), "ABI"), "ABI mismatch");
        utg_model_destroy(m2);
    }
    utg_model_destroy(m);
}

/* Same inputs, same bits: across runs, and across thread counts (the CPU ops are written so that
   no sum depends on how rows are split between threads). */
static void fwd_bwd_grads(int threads, float *out, size_t n, double *loss) {
    utg_model_desc d;
    utg_model *m = NULL;
    int32_t x[96], y[96];
    int i;
    memset(&d, 0, sizeof d);
    d.config = tiny_config(5, 64, 4, 2, 50, 48, 1, 30.0);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    utg_model_create(&d, &m);
    utg_model_init_params(m, 5);
    {   /* make the zero-init projections non-zero so every path carries gradient */
        float *p = (float *)malloc(utg_model_arena_floats(m) * 4);
        size_t k;
        utg_model_get(m, UTG_ARENA_PARAMS, -1, p, utg_model_arena_floats(m));
        for (k = 0; k < utg_model_arena_floats(m); k++) if (p[k] == 0.0f) p[k] = 0.01f * (float)((k % 7) - 3);
        utg_model_set(m, UTG_ARENA_PARAMS, -1, p, utg_model_arena_floats(m));
        free(p);
    }
    for (i = 0; i < 96; i++) { x[i] = (i * 7) % 50; y[i] = (i * 11 + 3) % 50; }
    utg_model_forward(m, x, y, 2, loss);
    utg_model_zero_grads(m);
    utg_model_backward(m, 1.0f);
    utg_model_get(m, UTG_ARENA_GRADS, -1, out, n);
    utg_model_destroy(m);
}
static void test_model_deterministic_across_threads(void) {
    utg_model_desc d;
    utg_model *m = NULL;
    size_t n;
    float *g1, *g2, *g3;
    double l1, l2, l3;
    memset(&d, 0, sizeof d);
    d.config = tiny_config(5, 64, 4, 2, 50, 48, 1, 30.0);
    utg_model_create(&d, &m);
    n = utg_model_arena_floats(m);
    utg_model_destroy(m);
    g1 = (float *)malloc(n * 4); g2 = (float *)malloc(n * 4); g3 = (float *)malloc(n * 4);
    fwd_bwd_grads(2, g1, n, &l1);
    fwd_bwd_grads(2, g2, n, &l2);
    fwd_bwd_grads(1, g3, n, &l3);
    CHECK(l1 == l2 && memcmp(g1, g2, n * 4) == 0, "two runs differ");
    CHECK(l1 == l3 && memcmp(g1, g3, n * 4) == 0, "1 thread and 2 threads differ (loss %.9g vs %.9g)", l1, l3);
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
    free(g1); free(g2); free(g3);
}

/* Gradients accumulate across backward calls (micro-batches): two backwards of the same batch give
   twice one backward, and loss_scale scales them. */
static void test_model_grad_accumulation(void) {
    mdl_ctx c;
    utg_config cfg = tiny_config(2, 16, 4, 2, 32, 8, 1, 30.0);
    float *g1;
    size_t k;
    double worst = 0, gmax = 0;
    if (!mdl_setup(&c, &cfg, NULL)) { CHECK(0, "setup"); return; }
    mdl_grad(&c);
    g1 = (float *)malloc(c.n * 4);
    memcpy(g1, c.grads, c.n * 4);
    utg_model_zero_grads(c.m);
    mdl_obj(&c); utg_model_backward(c.m, 0.5f);
    mdl_obj(&c); utg_model_backward(c.m, 1.5f);
    utg_model_get(c.m, UTG_ARENA_GRADS, -1, c.grads, c.n);
    for (k = 0; k < c.n; k++) {
        if (fabs(g1[k]) > gmax) gmax = fabs(g1[k]);
        if (fabs(c.grads[k] - 2.0 * g1[k]) > worst) worst = fabs(c.grads[k] - 2.0 * g1[k]);
    }
    CHECK(gmax > 0 && worst <= 1e-5 * gmax, "0.5x + 1.5x backward != 2x: error %.3g of %.3g", worst, gmax);
    free(g1);
    mdl_free(&c);
}

/* MATMUL_BF16: the same model with bf16 matmul inputs. Its loss stays within bf16's rounding of
   the fp32 one and its gradient points the same way, yet differs (the option does something). */
static void test_model_matmul_bf16(void) {
    mdl_ctx a, b;
    utg_config cfg = tiny_config(2, 64, 4, 2, 64, 32, 1, 30.0), cb = cfg;
    double la, lb, dot = 0, na = 0, nb = 0;
    size_t k;
    cb.matmul_bf16 = 1;
    if (!mdl_setup(&a, &cfg, NULL) || !mdl_setup(&b, &cb, NULL)) { CHECK(0, "setup"); return; }
    CHECK(a.n == b.n, "same arena");
    memcpy(b.params, a.params, a.n * 4);
    la = mdl_obj(&a);
    lb = mdl_obj(&b);
    mdl_grad(&a);
    mdl_grad(&b);
    for (k = 0; k < a.n; k++) { dot += (double)a.grads[k] * b.grads[k]; na += (double)a.grads[k] * a.grads[k]; nb += (double)b.grads[k] * b.grads[k]; }
    printf("      loss fp32 %.6f bf16 %.6f; gradient cosine %.6f\n", la, lb, dot / sqrt(na * nb));
    CHECK(la != lb && fabs(la - lb) < 1e-2 * fabs(la), "bf16 loss %.6f vs fp32 %.6f", lb, la);
    CHECK(dot / sqrt(na * nb) > 0.999 && dot / sqrt(na * nb) < 1.0, "gradient cosine %.6f", dot / sqrt(na * nb));
    mdl_free(&a);
    mdl_free(&b);
}

/* utg_model_generate draws each next token from the model's own distribution, the softmax of the
   softcapped logits (the eval forward applies the cap; a second cap would flatten it). Near-one-hot
   tied embeddings give each token a logit near the cap on itself, so the cap matters; the drawn
   pairs (first, second) are compared cell by cell with n_first * p(second | first), p from
   utg_model_eval's per-position losses: total variation within sampling noise. */
static void test_model_generate_distribution(void) {
    enum { V = 16, N = 32768 };
    utg_model_desc d;
    utg_model *m = NULL;
    int32_t *out = (int32_t *)malloc(sizeof(int32_t) * 2 * N), in[V * V], tgt[V * V];
    float row_loss[V * V], *emb;
    double p[V][V], count[V][V], n_first[V], tv = 0.0, noise = 0.0, loss, p_self = 0.0;
    size_t n, i;
    uint64_t s = 7;
    int f, v;
    memset(&d, 0, sizeof d);
    d.config = tiny_config(2, 16, 4, 2, V, 8, 1, 5.0);
    CHECK(utg_model_create(&d, &m) == UTG_OK, "create: %s", utg_model_message(m));
    emb = get_tensor(m, "tok_emb.weight", &n); /* [16, 16], tied: the head too */
    for (i = 0; i < n; i++) {                   /* 2 I + uniform noise in [-1/2, 1/2) */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        emb[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5) + (i / V == i % V ? 2.0f : 0.0f);
    }
    utg_model_set(m, UTG_ARENA_PARAMS, utg_model_find_tensor(m, "tok_emb.weight"), emb, n);
    for (f = 0; f < V; f++) /* V * V sequences of one token: f, scored against every v */
        for (v = 0; v < V; v++) { in[f * V + v] = f; tgt[f * V + v] = v; }
    CHECK(utg_model_eval(m, in, tgt, V * V, 1, row_loss, &loss) == UTG_OK, "eval: %s", utg_model_message(m));
    for (f = 0; f < V; f++) {
        double sum = 0.0;
        for (v = 0; v < V; v++) sum += p[f][v] = exp(-(double)row_loss[f * V + v]);
        CHECK(fabs(sum - 1.0) < 1e-4, "p(. | %d) sums to %.6f", f, sum);
        p_self += p[f][f] / V;
    }
    memset(count, 0, sizeof count);
    memset(n_first, 0, sizeof n_first);
    CHECK(utg_model_generate(m, N, 2, 1.0, 2024, out) == UTG_OK, "generate: %s", utg_model_message(m));
    for (i = 0; i < N; i++) { count[out[2 * i]][out[2 * i + 1]] += 1.0; n_first[out[2 * i]] += 1.0; }
    for (f = 0; f < V; f++)
        for (v = 0; v < V; v++) { /* E|count - mean| of a binomial, about sqrt(2/pi) sd */
            tv += 0.5 * fabs(count[f][v] - n_first[f] * p[f][v]) / N;
            noise += 0.5 * sqrt(2.0 / 3.14159265358979 * n_first[f] * p[f][v] * (1.0 - p[f][v])) / N;
        }
    printf("      mean p(first | first) %.3f; total variation %.4f, sampling noise about %.4f, tolerance 0.06\n", p_self, tv, noise);
    CHECK(tv < 0.06, "drawn pairs are %.4f in total variation from the model's distribution (noise about %.4f)", tv, noise);
    free(emb);
    free(out);
    utg_model_destroy(m);
}

/* utg_model_eval_bpb: sliding windows score every target once (in batches of 3 windows, and of one:
   stride < 0 below), disjoint windows the whole windows; two ranks' accumulators add up to one
   process's (the same windows, split); bad options refused. */
static void eval_pass(utg_model *m, const utg_tokenizer *tok, const int32_t *s, size_t n, int stride, int rank,
                      int world, utg_bpb *acc) {
    utg_eval_opts o;
    memset(&o, 0, sizeof o);
    o.seq_len = 16, o.stride = stride < 0 ? -stride : stride, o.batch_seqs = stride < 0 ? 1 : 3;
    o.rank = rank, o.world = world;
    memset(acc, 0, sizeof *acc);
    CHECK(utg_model_eval_bpb(m, tok, s, n, &o, acc) == UTG_OK, "eval_bpb stride %d rank %d/%d: %s", stride, rank,
          world, utg_model_message(m));
}
static void test_model_eval_bpb(void) {
    utg_config c = tiny_config(2, 16, 4, 2, 40, 16, 1, 30.0);
    utg_model_desc d;
    utg_model *m = NULL;
    utg_tokenizer tok;
    utg_msg msg;
    utg_bpb all, r0, r1;
    utg_eval_opts bad;
    int32_t s[101];
    int i, k;
    memset(&d, 0, sizeof d);
    memset(&tok, 0, sizeof tok);
    d.config = c;
    for (i = 0; i < 101; i++) s[i] = (int32_t)((i * 7 + i / 5) % 40);
    if (utg_model_create(&d, &m) != UTG_OK || utg_tokenizer_byte260(&tok, 40, NULL, &msg) != UTG_OK) {
        CHECK(0, "setup");
        utg_model_destroy(m);
        return;
    }
    for (k = 0; k < 3; k++) { /* sliding (stride 5: shortened tail windows), one window a batch, disjoint */
        int stride = k == 2 ? 0 : k ? -5 : 5;
        eval_pass(m, &tok, s, 101, stride, 0, 1, &all);
        eval_pass(m, &tok, s, 101, stride, 0, 2, &r0);
        eval_pass(m, &tok, s, 101, stride, 1, 2, &r1);
        CHECK(all.tokens == (k == 2 ? 96.0 : 100.0), "stride %d: %.0f targets scored", stride, all.tokens);
        CHECK(r0.tokens + r1.tokens == all.tokens && r0.bytes + r1.bytes == all.bytes && r0.tokens > 0 &&
                  r1.tokens > 0 && fabs(r0.loss_sum + r1.loss_sum - all.loss_sum) <= 1e-9 * all.loss_sum,
              "stride %d: ranks %.0f + %.0f tokens, loss %.12g + %.12g vs %.12g", stride, r0.tokens, r1.tokens,
              r0.loss_sum, r1.loss_sum, all.loss_sum);
    }
    memset(&bad, 0, sizeof bad);
    bad.seq_len = 16, bad.stride = 17, bad.batch_seqs = 1;
    CHECK(utg_model_eval_bpb(m, &tok, s, 101, &bad, &all) == UTG_ERR_INVALID, "a stride over the window");
    bad.stride = 0, bad.rank = 2, bad.world = 2;
    CHECK(utg_model_eval_bpb(m, &tok, s, 101, &bad, &all) == UTG_ERR_INVALID, "rank 2 of 2");
    bad.rank = 0, bad.world = 1;
    CHECK(utg_model_eval_bpb(m, &tok, s, 10, &bad, &all) == UTG_ERR_INVALID &&
              strstr(utg_model_message(m), "fewer than one window"),
          "a stream shorter than a window: %s", utg_model_message(m));
    utg_tokenizer_free(&tok);
    utg_model_destroy(m);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    RUN(test_config_zero_is_baseline);
    RUN(test_config_set_and_errors);
    RUN(test_config_ranges);
    RUN(test_config_enums);
    RUN(test_arena_baseline);
    RUN(test_init_matches_train_gpt);
    RUN(test_init_deterministic);
    RUN(test_model_loss_at_init);
    RUN(test_model_rejects_bad_use);
    RUN(test_model_gradcheck_tied_gqa);
    RUN(test_model_gradcheck_untied_mha);
    RUN(test_model_gradcheck_mqa);
    RUN(test_model_gradcheck_catches_planted_error);
    RUN(test_model_grad_accumulation);
    RUN(test_model_deterministic_across_threads);
    RUN(test_model_matmul_bf16);
    RUN(test_model_generate_distribution);
    RUN(test_model_eval_bpb);
    return TEST_SUMMARY();
}
