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

int main(int argc, char **argv) {
    const char *tokens_path = NULL, *weights_path = NULL, *config_path = NULL, *grads_out = NULL, *weights_out = NULL;
    long long batch_seqs = 1, offset = 0;
    utg_model_desc desc;
    utg_model *m = NULL;
    utg_msg msg;
    void *shard = NULL, *weights = NULL, *out = NULL;
    char *config_text = NULL;
    size_t shard_size, weights_size, n_tok, out_size, need, i;
    const uint8_t *tok;
    int32_t *x = NULL, *y = NULL;
    double loss;
    int a, rc = 1;
    utg_result r;

    memset(&desc, 0, sizeof desc);
    for (a = 1; a < argc; a++) { /* first pass: options */
        const char *o = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) { usage(stdout); return 0; }
        if (strchr(o, '=') && o[0] != '-') continue; /* KEY=VALUE, second pass */
        if (!v) { fprintf(stderr, "utg-grad: %s needs a value (or is unknown); see --help\n", o); return 2; }
        if (!strcmp(o, "--tokens")) tokens_path = v;
        else if (!strcmp(o, "--weights")) weights_path = v;
        else if (!strcmp(o, "--config")) config_path = v;
        else if (!strcmp(o, "--grads-out")) grads_out = v;
        else if (!strcmp(o, "--weights-out")) weights_out = v;
        else if (!strcmp(o, "--batch-seqs")) {
            if (!parse_count(v, 1 << 20, &batch_seqs) || batch_seqs < 1) { fprintf(stderr, "utg-grad: bad --batch-seqs '%s'\n", v); return 2; }
        } else if (!strcmp(o, "--offset")) {
            if (!parse_count(v, (long long)1 << 40, &offset)) { fprintf(stderr, "utg-grad: bad --offset '%s'\n", v); return 2; }
        } else { fprintf(stderr, "utg-grad: unknown option '%s'; see --help\n", o); return 2; }
        a++;
    }
    if (!tokens_path) { fprintf(stderr, "utg-grad: --tokens is required; see --help\n"); return 2; }

    if (config_path) {
        size_t n;
        if (utg_read_file(config_path, 1 << 20, (void **)&config_text, &n, &msg) != UTG_OK) return fail("config", msg.text);
        config_text = (char *)realloc(config_text, n + 1);
        config_text[n] = 0;
        if (utg_config_parse_text(&desc.config, config_text, &msg) != UTG_OK) {
            fprintf(stderr, "utg-grad: %s: %s\n", config_path, msg.text);
            goto done;
        }
    }
    if (utg_config_apply_env(&desc.config, &msg) != UTG_OK) { fail("environment", msg.text); goto done; }
    for (a = 1; a < argc; a++) {
        char key[128], *eq;
        if (argv[a][0] == '-') { a++; continue; }
        eq = strchr(argv[a], '=');
        if (!eq || (size_t)(eq - argv[a]) >= sizeof key) { fprintf(stderr, "utg-grad: unexpected argument '%s'\n", argv[a]); rc = 2; goto done; }
        memcpy(key, argv[a], (size_t)(eq - argv[a]));
        key[eq - argv[a]] = 0;
        if (utg_config_set(&desc.config, key, eq + 1, &msg) != UTG_OK) { fprintf(stderr, "utg-grad: %s\n", msg.text); rc = 2; goto done; }
    }

    if ((r = utg_model_create(&desc, &m)) != UTG_OK) { fail(utg_result_string(r), utg_model_message(m)); goto done; }
    if (weights_path) {
        if (utg_read_file(weights_path, MAX_INPUT_BYTES, &weights, &weights_size, &msg) != UTG_OK) { fail("weights", msg.text); goto done; }
        if ((r = utg_model_load_safetensors(m, weights, weights_size)) != UTG_OK) {
            fprintf(stderr, "utg-grad: %s: %s\n", weights_path, utg_model_message(m));
            goto done;
        }
    }
    if (utg_read_file(tokens_path, MAX_INPUT_BYTES, &shard, &shard_size, &msg) != UTG_OK) { fail("tokens", msg.text); goto done; }
    if (utg_shard_parse(shard, shard_size, &tok, &n_tok, &msg) != UTG_OK) { fprintf(stderr, "utg-grad: %s: %s\n", tokens_path, msg.text); goto done; }
    need = (size_t)batch_seqs * (size_t)utg_model_config(m)->train_seq_len + 1;
    if ((size_t)offset > n_tok || n_tok - (size_t)offset < need) {
        fprintf(stderr, "utg-grad: %s holds %zu tokens; the batch needs %zu from offset %lld (%lld x TRAIN_SEQ_LEN %d, +1)\n",
                tokens_path, n_tok, need, offset, batch_seqs, utg_model_config(m)->train_seq_len);
        goto done;
    }
    x = (int32_t *)malloc(sizeof(int32_t) * need);
    y = (int32_t *)malloc(sizeof(int32_t) * need);
    if (!x || !y) { fail("out of memory", NULL); goto done; }
    for (i = 0; i + 1 < need; i++) {
        x[i] = utg_shard_token(tok, (size_t)offset + i);
        y[i] = utg_shard_token(tok, (size_t)offset + i + 1);
    }
    if ((r = utg_model_forward(m, x, y, (int)batch_seqs, &loss)) != UTG_OK) { fail("forward", utg_model_message(m)); goto done; }
    printf("loss %.9g\n", loss);
    fprintf(stderr, "utg-grad: %zu parameters, %lld x %d tokens, loss %.6f nats\n", utg_model_param_count(m), batch_seqs,
            utg_model_config(m)->train_seq_len, loss);
    if (grads_out) {
        utg_model_zero_grads(m);
        if ((r = utg_model_backward(m, 1.0f)) != UTG_OK) { fail("backward", utg_model_message(m)); goto done; }
        if (utg_model_save_safetensors(m, UTG_ARENA_GRADS, &out, &out_size) != UTG_OK) { fail("export", utg_model_message(m)); goto done; }
        if (utg_write_file(grads_out, out, out_size, &msg) != UTG_OK) { fail("grads-out", msg.text); goto done; }
        utg_model_free_bytes(m, out);
        out = NULL;
    }
    if (weights_out) {
        if (utg_model_save_safetensors(m, UTG_ARENA_PARAMS, &out, &out_size) != UTG_OK) { fail("export", utg_model_message(m)); goto done; }
        if (utg_write_file(weights_out, out, out_size, &msg) != UTG_OK) { fail("weights-out", msg.text); goto done; }
    }
    rc = 0;
done:
    if (m && out) utg_model_free_bytes(m, out);
    utg_model_destroy(m);
    free(x); free(y); free(shard); free(weights); free(config_text);
    return rc;
}
