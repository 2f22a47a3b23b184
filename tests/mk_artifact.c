/* Writes a small, valid UTGA artifact from a freshly initialised tiny model: the seed corpus of the
   fuzzer and the input of the inspector tests.
   usage: mk_artifact OUT.utga [KEY=VALUE ...]   (knobs as in the trainer; COMPRESSOR=stored|brotli) */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>

int main(int argc, char **argv) {
    utg_model_desc d;
    utg_model *m = NULL;
    utg_msg msg;
    utg_codec codec;
    void *bytes = NULL;
    size_t size = 0;
    int i;
    memset(&d, 0, sizeof d);
    memset(&msg, 0, sizeof msg);
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: mk_artifact OUT.utga [KEY=VALUE ...]\n");
        return argc < 2 ? 2 : 0;
    }
    /* tiny defaults; any knob can be overridden */
    utg_config_set(&d.config, "NUM_LAYERS", "2", &msg);
    utg_config_set(&d.config, "MODEL_DIM", "64", &msg);
    utg_config_set(&d.config, "NUM_HEADS", "2", &msg);
    utg_config_set(&d.config, "NUM_KV_HEADS", "1", &msg);
    utg_config_set(&d.config, "VOCAB_SIZE", "96", &msg);
    utg_config_set(&d.config, "TRAIN_SEQ_LEN", "16", &msg);
    utg_config_set(&d.config, "QUANT_PASSTHROUGH_NUMEL", "1024", &msg);
    for (i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) { fprintf(stderr, "mk_artifact: expected KEY=VALUE, got '%s'\n", argv[i]); return 2; }
        *eq = 0;
        if (utg_config_set(&d.config, argv[i], eq + 1, &msg) != UTG_OK) { fprintf(stderr, "mk_artifact: %s\n", msg.text); return 2; }
    }
    if (utg_model_create(&d, &m) != UTG_OK) { fprintf(stderr, "mk_artifact: %s\n", utg_model_message(m)); return 1; }
    codec = utg_model_config(m)->compressor == UTG_COMPRESSOR_STORED ? utg_codec_stored() : utg_codec_brotli();
    if (utg_model_init_params(m, 1234) != UTG_OK ||
        utg_model_export(m, NULL, &codec, "tool=mk_artifact\nseed=1234\n", NULL, &bytes, &size, NULL) != UTG_OK ||
        utg_write_file(argv[1], bytes, size, &msg) != UTG_OK) {
        fprintf(stderr, "mk_artifact: %s%s\n", utg_model_message(m), msg.text);
        return 1;
    }
    printf("%s: %zu bytes\n", argv[1], size);
    utg_free(utg_model_allocator(m), bytes);
    utg_model_destroy(m);
    return 0;
}
