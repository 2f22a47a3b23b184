/* spm_bytes: utgolf's view of a SentencePiece model and of a scored token stream, printed for
   tests/test_spm_parity.py to compare with the sentencepiece Python module.

   usage: spm_bytes MODEL TABLE_SIZE [PAIRS]
   PAIRS is a text file with one scored position per line: "prev target loss doc", where loss is a
   float (C99 hex floats welcome, so values pass exactly) and doc a document index >= 0.
   Output, one record per line:
       n_pieces N | table_size N | specials BOS EOS UNK PAD SPACE | model_type N | byte_fallback N
       piece ID TYPE SCORE(%a) TEXT(hex)           for every id < n_pieces
       lut ID IS_BOUNDARY HAS_LEADING_SPACE BASE   for every id < table_size
       and with PAIRS: tokens N | bytes N | count_bytes N | loss_sum %a | loss %a | bpb %a | doc D BYTES
   Build: cc -std=c99 -O1 -Wall -Wextra -Werror -o spm_bytes tests/spm_bytes.c -lm */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"

#include <stdio.h>
#include <stdlib.h>

static void print_tables(const utg_tokenizer *t) {
    int id;
    printf("n_pieces %d\ntable_size %d\n", t->n_pieces, t->table_size);
    printf("specials %d %d %d %d %d\n", t->bos_id, t->eos_id, t->unk_id, t->pad_id, t->space_piece_id);
    printf("model_type %d\nbyte_fallback %d\n", t->model_type, t->byte_fallback);
    for (id = 0; id < t->n_pieces; id++) {
        const unsigned char *p = (const unsigned char *)utg_tokenizer_piece(t, id);
        printf("piece %d %d %a ", id, t->piece_type[id], (double)t->piece_score[id]);
        while (*p) printf("%02x", *p++);
        printf("\n");
    }
    for (id = 0; id < t->table_size; id++)
        printf("lut %d %d %d %d\n", id, t->is_boundary[id], t->has_leading_space[id], t->base_bytes[id]);
}

/* Parse "prev target loss doc" lines; returns the number of positions or -1. */
static long parse_pairs(char *text, int32_t *prev, int32_t *target, float *loss, long *doc, long cap) {
    long n = 0;
    char *s = text, *end;
    for (;;) {
        long p, t, d;
        double l;
        while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
        if (!*s) return n;
        if (n >= cap) return -1;
        p = strtol(s, &end, 10); if (end == s) return -1; s = end;
        t = strtol(s, &end, 10); if (end == s) return -1; s = end;
        l = strtod(s, &end);     if (end == s) return -1; s = end;
        d = strtol(s, &end, 10); if (end == s || d < 0) return -1; s = end;
        prev[n] = (int32_t)p;
        target[n] = (int32_t)t;
        loss[n] = (float)l;
        doc[n] = d;
        n++;
    }
}

static int score_pairs(const utg_tokenizer *tok, const char *path) {
    void *buf = NULL;
    size_t size = 0, i;
    long n, cap, d;
    int32_t *prev, *target;
    float *loss;
    long *doc;
    char *text;
    utg_bpb acc = {0.0, 0.0, 0.0};
    utg_msg msg;
    utg_result r;
    if (utg_read_file(path, (size_t)1 << 31, &buf, &size, &msg) != UTG_OK) {
        fprintf(stderr, "spm_bytes: %s\n", msg.text);
        return 1;
    }
    cap = (long)(size / 8 + 1); /* a line is at least 8 characters */
    prev = (int32_t *)malloc((size_t)cap * sizeof *prev);
    target = (int32_t *)malloc((size_t)cap * sizeof *target);
    loss = (float *)malloc((size_t)cap * sizeof *loss);
    doc = (long *)malloc((size_t)cap * sizeof *doc);
    text = (char *)realloc(buf, size + 1);
    if (!prev || !target || !loss || !doc || !text) {
        fprintf(stderr, "spm_bytes: out of memory\n");
        return 1;
    }
    text[size] = 0;
    n = parse_pairs(text, prev, target, loss, doc, cap);
    free(text);
    if (n < 0) {
        fprintf(stderr, "spm_bytes: cannot parse %s\n", path);
        return 1;
    }
    r = utg_bpb_add(&acc, tok, prev, target, loss, (size_t)n);
    if (r != UTG_OK) {
        fprintf(stderr, "spm_bytes: utg_bpb_add: %s\n", utg_result_string(r));
        return 1;
    }
    printf("tokens %.0f\nbytes %.0f\n", acc.tokens, acc.bytes);
    printf("count_bytes %llu\n", (unsigned long long)utg_tokenizer_count_bytes(tok, prev, target, (size_t)n));
    printf("loss_sum %a\nloss %a\nbpb %a\n", acc.loss_sum, utg_bpb_loss(&acc), utg_bpb_value(&acc));
    /* per document: the pairs whose target lies in it (documents are contiguous) */
    for (i = 0; i < (size_t)n;) {
        size_t j = i;
        d = doc[i];
        while (j < (size_t)n && doc[j] == d) j++;
        printf("doc %ld %llu\n", d, (unsigned long long)utg_tokenizer_count_bytes(tok, prev + i, target + i, j - i));
        i = j;
    }
    free(prev);
    free(target);
    free(loss);
    free(doc);
    return 0;
}

int main(int argc, char **argv) {
    utg_tokenizer tok;
    utg_msg msg;
    int status = 0;
    if (argc < 3) {
        fprintf(stderr, "usage: spm_bytes MODEL TABLE_SIZE [PAIRS]\n");
        return 2;
    }
    if (utg_tokenizer_load_spm_file(&tok, argv[1], atoi(argv[2]), NULL, &msg) != UTG_OK) {
        fprintf(stderr, "spm_bytes: %s\n", msg.text);
        return 1;
    }
    print_tables(&tok);
    if (argc > 3) status = score_pairs(&tok, argv[3]);
    utg_tokenizer_free(&tok);
    return status;
}
