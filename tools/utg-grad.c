/* utg-grad: the loss and parameter gradients of one batch, for checking utgolf against PyTorch.

   utg-grad --tokens FILE [--weights FILE] [--config FILE] [KEY=VALUE ...] [--batch-seqs N]
            [--offset N] [--grads-out FILE] [--weights-out FILE]

   Knobs come from the config file, then the environment, then KEY=VALUE arguments (later wins).
   The batch is read as train_gpt.py's loader reads it: B*T+1 consecutive tokens from --offset,
   inputs = tokens[0:B*T], targets = tokens[1:B*T+1], reshaped [B, T]. */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUT_BYTES ((size_t)4 << 30)

static void usage(FILE *f) {
    int i;
    fprintf(f,
            "usage: utg-grad --tokens FILE [options] [KEY=VALUE ...]\n"
            "\n"
            "Prints the mean cross-entropy of one batch (\"loss <value>\") and can write the parameter\n"
            "gradients of that batch as safetensors, to compare with PyTorch autograd.\n"
            "\n"
            "options:\n"
            "  --tokens FILE       Parameter Golf token shard (fineweb_*.bin format)\n"
            "  --weights FILE      safetensors checkpoint (F32/F16/BF16) with train_gpt.py names;\n"
            "                      without it the model is initialised from SEED as train_gpt.py does\n"
            "  --config FILE       KEY=VALUE lines (# comments allowed)\n"
            "  --batch-seqs N      sequences of TRAIN_SEQ_LEN tokens in the batch (default 1)\n"
            "  --offset N          first token of the batch in the shard (default 0)\n"
            "  --grads-out FILE    write the gradients of the mean loss (F32 safetensors)\n"
            "  --weights-out FILE  write the weights used (F32 safetensors)\n"
            "  -h, --help          this text\n"
            "\n"
            "knobs (environment names; defaults are train_gpt.py's):\n");
    for (i = 0; i < utg_config_knob_count(); i++) {
        char line[512];
        fprintf(f, "%s\n", utg_config_help_line(i, line, sizeof line));
    }
}

static int fail(const char *what, const char *detail) {
    fprintf(stderr, "utg-grad: %s%s%s\n", what, detail && detail[0] ? ": " : "", detail ? detail : "");
    return 1;
}

static int parse_count(const char *s, long long max, long long *out) {
    char *end;
    long long v;
    if (!s || !*s) return 0;
    v = strtoll(s, &end, 10);
    if (*end || v < 0 || v > max) return 0;
    *out = v;
    return 1;
}

/* What a run of the tool holds, so that each of its steps takes one pointer. */
typedef struct grad_run {
    const char *tokens_path, *weights_path, *config_path, *grads_out, *weights_out;
    long long batch_seqs, offset;
    utg_model_desc desc;
    utg_model *m;
    void *shard, *weights, *out; /* the token shard, the weights read, an export being written */
    char *config_text;
    int32_t *x, *y; /* the batch: inputs and targets */
} grad_run;

/* What a step returns: GO_ON to go on with the next one, or else the exit status. */
#define GO_ON (-1)

/* One option with its value. GO_ON, or 2 after saying what is wrong. */
static int take_option(grad_run *g, const char *o, const char *v) {
    if (!strcmp(o, "--tokens")) g->tokens_path = v;
    else if (!strcmp(o, "--weights")) g->weights_path = v;
    else if (!strcmp(o, "--config")) g->config_path = v;
    else if (!strcmp(o, "--grads-out")) g->grads_out = v;
    else if (!strcmp(o, "--weights-out")) g->weights_out = v;
    else if (!strcmp(o, "--batch-seqs")) {
        if (!parse_count(v, 1 << 20, &g->batch_seqs) || g->batch_seqs < 1) {
            fprintf(stderr, "utg-grad: bad --batch-seqs '%s'\n", v);
            return 2;
        }
    } else if (!strcmp(o, "--offset")) {
        if (!parse_count(v, (long long)1 << 40, &g->offset)) {
            fprintf(stderr, "utg-grad: bad --offset '%s'\n", v);
            return 2;
        }
    } else {
        fprintf(stderr, "utg-grad: unknown option '%s'; see --help\n", o);
        return 2;
    }
    return GO_ON;
}

/* The options, a first pass over the arguments (KEY=VALUE come in read_knobs). GO_ON, or the exit
   status: 0 after --help, 2 after a usage error. */
static int parse_options(grad_run *g, int argc, char **argv) {
    int a;
    for (a = 1; a < argc; a++) {
        const char *o = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 0;
        }
        if (strchr(o, '=') && o[0] != '-') continue; /* KEY=VALUE, second pass */
        if (!v) {
            fprintf(stderr, "utg-grad: %s needs a value (or is unknown); see --help\n", o);
            return 2;
        }
        if (take_option(g, o, v) != GO_ON) return 2;
        a++;
    }
    if (!g->tokens_path) {
        fprintf(stderr, "utg-grad: --tokens is required; see --help\n");
        return 2;
    }
    return GO_ON;
}

/* The knobs: the config file, then the environment, then KEY=VALUE arguments (later wins). GO_ON,
   or the exit status: 1 after a bad config file or environment, 2 after a bad argument. */
static int read_knobs(grad_run *g, int argc, char **argv) {
    utg_msg msg;
    size_t n;
    int a;
    if (g->config_path) {
        if (utg_read_file(g->config_path, 1 << 20, (void **)&g->config_text, &n, &msg) != UTG_OK)
            return fail("config", msg.text);
        g->config_text = (char *)realloc(g->config_text, n + 1);
        g->config_text[n] = 0;
        if (utg_config_parse_text(&g->desc.config, g->config_text, &msg) != UTG_OK) {
            fprintf(stderr, "utg-grad: %s: %s\n", g->config_path, msg.text);
            return 1;
        }
    }
    if (utg_config_apply_env(&g->desc.config, &msg) != UTG_OK) return fail("environment", msg.text);
    for (a = 1; a < argc; a++) {
        char key[128], *eq;
        if (argv[a][0] == '-') {
            a++;
            continue;
        }
        eq = strchr(argv[a], '=');
        if (!eq || (size_t)(eq - argv[a]) >= sizeof key) {
            fprintf(stderr, "utg-grad: unexpected argument '%s'\n", argv[a]);
            return 2;
        }
        memcpy(key, argv[a], (size_t)(eq - argv[a]));
        key[eq - argv[a]] = 0;
        if (utg_config_set(&g->desc.config, key, eq + 1, &msg) != UTG_OK) {
            fprintf(stderr, "utg-grad: %s\n", msg.text);
            return 2;
        }
    }
    return GO_ON;
}

/* The model, initialised from SEED or loaded from --weights. GO_ON, or 1 after saying why. */
static int build_model(grad_run *g) {
    utg_msg msg;
    size_t size;
    utg_result r = utg_model_create(&g->desc, &g->m);
    if (r != UTG_OK) return fail(utg_result_string(r), utg_model_message(g->m));
    if (!g->weights_path) return GO_ON;
    if (utg_read_file(g->weights_path, MAX_INPUT_BYTES, &g->weights, &size, &msg) != UTG_OK)
        return fail("weights", msg.text);
    if (utg_model_load_safetensors(g->m, g->weights, size) != UTG_OK) {
        fprintf(stderr, "utg-grad: %s: %s\n", g->weights_path, utg_model_message(g->m));
        return 1;
    }
    return GO_ON;
}

/* The batch: batch_seqs x TRAIN_SEQ_LEN + 1 consecutive tokens of the shard from --offset, as
   inputs and targets shifted by one. GO_ON, or 1 after saying why. */
static int read_batch(grad_run *g) {
    utg_msg msg;
    const uint8_t *tok;
    size_t shard_size, n_tok, need, i;
    int T = utg_model_config(g->m)->train_seq_len;
    if (utg_read_file(g->tokens_path, MAX_INPUT_BYTES, &g->shard, &shard_size, &msg) != UTG_OK)
        return fail("tokens", msg.text);
    if (utg_shard_parse(g->shard, shard_size, &tok, &n_tok, &msg) != UTG_OK) {
        fprintf(stderr, "utg-grad: %s: %s\n", g->tokens_path, msg.text);
        return 1;
    }
    need = (size_t)g->batch_seqs * (size_t)T + 1;
    if ((size_t)g->offset > n_tok || n_tok - (size_t)g->offset < need) {
        fprintf(stderr, "utg-grad: %s holds %zu tokens; the batch needs %zu from offset %lld "
                "(%lld x TRAIN_SEQ_LEN %d, +1)\n", g->tokens_path, n_tok, need, g->offset, g->batch_seqs, T);
        return 1;
    }
    g->x = (int32_t *)malloc(sizeof(int32_t) * need);
    g->y = (int32_t *)malloc(sizeof(int32_t) * need);
    if (!g->x || !g->y) return fail("out of memory", NULL);
    for (i = 0; i + 1 < need; i++) {
        g->x[i] = utg_shard_token(tok, (size_t)g->offset + i);
        g->y[i] = utg_shard_token(tok, (size_t)g->offset + i + 1);
    }
    return GO_ON;
}

/* One arena of the model as F32 safetensors into path (what: the name in a message). 0, or 1. */
static int write_arena(grad_run *g, utg_arena arena, const char *path, const char *what) {
    utg_msg msg;
    size_t size;
    if (utg_model_save_safetensors(g->m, arena, &g->out, &size) != UTG_OK)
        return fail("export", utg_model_message(g->m));
    if (utg_write_file(path, g->out, size, &msg) != UTG_OK) return fail(what, msg.text);
    utg_free(utg_model_allocator(g->m), g->out);
    g->out = NULL;
    return 0;
}

/* The forward pass and its loss; with --grads-out the backward pass and the gradients; with
   --weights-out the weights. 0, or 1 after saying why. */
static int run_batch(grad_run *g) {
    double loss;
    if (utg_model_forward(g->m, g->x, g->y, (int)g->batch_seqs, &loss) != UTG_OK)
        return fail("forward", utg_model_message(g->m));
    printf("loss %.9g\n", loss);
    fprintf(stderr, "utg-grad: %zu parameters, %lld x %d tokens, loss %.6f nats\n",
            utg_model_param_count(g->m), g->batch_seqs, utg_model_config(g->m)->train_seq_len, loss);
    if (g->grads_out) {
        utg_model_zero_grads(g->m);
        if (utg_model_backward(g->m, 1.0f) != UTG_OK) return fail("backward", utg_model_message(g->m));
        if (write_arena(g, UTG_ARENA_GRADS, g->grads_out, "grads-out") != 0) return 1;
    }
    if (g->weights_out && write_arena(g, UTG_ARENA_PARAMS, g->weights_out, "weights-out") != 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    grad_run run;
    grad_run *g = &run;
    int rc;
    memset(g, 0, sizeof *g);
    g->batch_seqs = 1;
    rc = parse_options(g, argc, argv);
    if (rc != GO_ON) return rc;
    rc = read_knobs(g, argc, argv);
    if (rc == GO_ON) rc = build_model(g);
    if (rc == GO_ON) rc = read_batch(g);
    if (rc == GO_ON) rc = run_batch(g);
    if (g->m && g->out) utg_free(utg_model_allocator(g->m), g->out);
    utg_model_destroy(g->m);
    free(g->x);
    free(g->y);
    free(g->shard);
    free(g->weights);
    free(g->config_text);
    return rc;
}
