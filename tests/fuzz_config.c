/* libFuzzer target over the config text parser (make fuzz; clang -fsanitize=fuzzer,address,undefined).
   tests/fuzz_replay.c builds this file again with the normal compiler (UTG_STATIC, UTG_FUZZ_REPLAY)
   to replay tests/corpus/config/.

   The input, NUL-terminated, goes through utg_config_parse_text, utg_config_resolve (which must be
   idempotent) and utg_config_validate. A refusal must carry a message. A valid config is formatted
   knob by knob with utg_config_format into KEY=VALUE lines, and that text must parse and validate
   again into a fresh config (the round trip a checkpoint's CONF section or a logged config relies
   on), and must format to the same values. The one exception is a string whose formatted text the
   parser reads differently: surrounding blanks (trimmed) or one pair of matching quotes (stripped);
   the format has no quoting, so such a value (only reachable through quotes in the first place)
   may change, but the config must still validate.
   No model is built here: a fuzzed config can ask for gigabytes. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NAME "fuzz_config"
#include "fuzz.h"

typedef struct fz_text {
    char *b;
    size_t n, cap;
} fz_text;

static void fz_put(fz_text *t, const char *s) {
    size_t k = strlen(s);
    if (t->n + k + 1 > t->cap) {
        char *nb;
        t->cap = (t->n + k + 1) * 2;
        nb = (char *)realloc(t->b, t->cap);
        if (!nb) abort();
        t->b = nb;
    }
    memcpy(t->b + t->n, s, k + 1);
    t->n += k;
}

/* every knob as KEY=VALUE lines; vbuf holds vcap bytes, enough for any value of this config */
static void fz_format_all(const utg_config *c, fz_text *t, char *vbuf, size_t vcap) {
    int i;
    t->n = 0;
    fz_put(t, "");
    for (i = 0; i < utg_config_knob_count(); i++) {
        utg_config_format(c, i, vbuf, vcap);
        FZ_REQUIRE(strlen(vbuf) < vcap - 1, "knob %s formats to %zu bytes or more", utg_config_knob(i)->env_name, vcap - 1);
        fz_put(t, utg_config_knob(i)->env_name);
        fz_put(t, "=");
        fz_put(t, vbuf);
        fz_put(t, "\n");
    }
}

/* the parser reads "KEY=s" back as s */
static int fz_survives(const char *s) {
    size_t n = strlen(s);
    if (n && (s[0] == ' ' || s[0] == '\t' || s[0] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) return 0;
    if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = (char *)malloc(size + 1), *vbuf, *vbuf2;
    size_t vcap = size + 1024; /* a string knob holds at most the input or its default */
    fz_text t1 = {NULL, 0, 0}, t2;
    utg_config c, c2;
    utg_msg msg;
    utg_result r;
    int i;
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    text[size] = 0;
    memset(&c, 0, sizeof c);
    memset(&msg, 0, sizeof msg);
    r = utg_config_parse_text(&c, text, &msg);
    if (r != UTG_OK) {
        FZ_REQUIRE(r == UTG_ERR_CONFIG, "parse result %d", (int)r);
        FZ_REQUIRE(msg.text[0] != 0 && memchr(msg.text, 0, sizeof msg.text), "parse failed without a message");
        free(text);
        return 0;
    }
    c = utg_config_resolve(&c);
    c2 = utg_config_resolve(&c);
    FZ_REQUIRE(memcmp(&c, &c2, sizeof c) == 0, "utg_config_resolve is not idempotent");
    memset(&msg, 0, sizeof msg);
    r = utg_config_validate(&c, &msg);
    if (r != UTG_OK) {
        FZ_REQUIRE(r == UTG_ERR_CONFIG, "validate result %d", (int)r);
        FZ_REQUIRE(msg.text[0] != 0 && memchr(msg.text, 0, sizeof msg.text), "validate failed without a message");
        free(text);
        return 0;
    }
    /* round trip: format every knob, parse that into a fresh config */
    vbuf = (char *)malloc(vcap);
    vbuf2 = (char *)malloc(vcap);
    if (!vbuf || !vbuf2) abort();
    fz_format_all(&c, &t1, vbuf, vcap);
    t2.b = (char *)malloc(t1.n + 1);
    if (!t2.b) abort();
    memcpy(t2.b, t1.b, t1.n + 1);
    memset(&c2, 0, sizeof c2);
    memset(&msg, 0, sizeof msg);
    r = utg_config_parse_text(&c2, t2.b, &msg);
    FZ_REQUIRE(r == UTG_OK, "the formatted config does not parse: %s\n--- formatted:\n%s", msg.text, t1.b);
    c2 = utg_config_resolve(&c2);
    memset(&msg, 0, sizeof msg);
    r = utg_config_validate(&c2, &msg);
    FZ_REQUIRE(r == UTG_OK, "the formatted config does not validate: %s", msg.text);
    for (i = 0; i < utg_config_knob_count(); i++) {
        const utg_knob_info *k = utg_config_knob(i);
        utg_config_format(&c, i, vbuf, vcap);
        utg_config_format(&c2, i, vbuf2, vcap);
        if (k->kind == UTG_KNOB_STR && !fz_survives(vbuf)) continue;
        FZ_REQUIRE(strcmp(vbuf, vbuf2) == 0, "%s formats as '%s', parses back and formats as '%s'", k->env_name, vbuf, vbuf2);
    }
    free(t2.b);
    free(t1.b);
    free(vbuf);
    free(vbuf2);
    free(text);
    return 0;
}

#ifdef UTG_FUZZ_REPLAY
/* Seeds beside the recipes (the Makefile copies the recipes/ files and data/austen/run.env): every knob
   with its default as the formatter writes it, the syntax the parser accepts (export, quotes,
   comments, blanks, field names, true/false), and a few values at the edges of validate's ranges. */
int utg_fuzz_config_seeds(const char *dir);
int utg_fuzz_config_seeds(const char *dir) {
    static const char *texts[] = {
        "# comment\n\nexport NUM_LAYERS = 4\nmodel_dim=256\nRUN_ID=\"my run\"\nTIE_EMBEDDINGS='0'\nEMA_ENABLED=true\n"
        "SWA_ENABLED=false\r\nLOGIT_SOFTCAP=0\n  \t# indented comment\nQUANT_LAYER_BITS=3:5,4:6\n",
        "MODEL_DIM=16\nNUM_HEADS=2\nNUM_KV_HEADS=1\nVOCAB_SIZE=32\nNUM_LAYERS=2\nTRAIN_SEQ_LEN=8\n",
        "EMA_DECAY=0.999\nWARMDOWN_FRAC=1\nMIN_LR=0\nQUANT_CLIP_PERCENTILE=0.5000001\nLEAKY_RELU_SLOPE=0.9\nGPTQ_DAMP=9.5\n"
        "ROPE_BASE=1.0000001\nRMS_NORM_EPS=1e-30\nMATRIX_LR=1e300\n",
        "NUM_LAYERS=11\nNUM_LOOPS=2\nLOOP_START=3\nLOOP_END=5\nENABLE_LOOPING_AT=0.35\nPARALLEL_RESIDUAL=two_lane\n"
        "PARALLEL_START_LAYER=7\nXSA_LAST_N=11\nROPE_DIMS=16\nMLP_ACTIVATION=leaky_relu2\nBIGRAM_VOCAB_SIZE=2048\n",
        "NUM_HEADS=7\n",
        "NUM_LAYERS=9x\n",
        "this line has no equals\n",
    };
    char path[1024], *vbuf = (char *)malloc(4096);
    fz_text t = {NULL, 0, 0};
    utg_config c;
    utg_msg msg;
    size_t k;
    if (!vbuf) return 1;
    for (k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        snprintf(path, sizeof path, "%s/seed-%zu.env", dir, k);
        if (utg_write_file(path, texts[k], strlen(texts[k]), &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); free(vbuf); return 1; }
    }
    memset(&c, 0, sizeof c);
    c = utg_config_resolve(&c);
    fz_format_all(&c, &t, vbuf, 4096);
    snprintf(path, sizeof path, "%s/seed-defaults.env", dir);
    if (utg_write_file(path, t.b, t.n, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); free(vbuf); free(t.b); return 1; }
    free(t.b);
    free(vbuf);
    return 0;
}
#endif
