/* utg-shards: text or token ids -> Parameter Golf token shards (PREFIX_000000.bin, ...).

   utg-shards bytes --in TEXT    --out PREFIX [--shard-tokens N]
   utg-shards ids   --in IDS.txt --out PREFIX [--vocab V] [--shard-tokens N]

   bytes: Parameter Golf's byte260 tokenizer (0..3 = pad, bos, eos, unk; byte b -> b + 4) over
          paragraph documents: runs of non-blank lines, each line stripped of ASCII whitespace, joined
          with one space. Each document is BOS followed by its bytes.
   ids:   the output of `spm_encode --output_format=id --extra_options=bos`, one document per line.

   Tokens stream into shards of exactly --shard-tokens (the last one shorter), so a document may
   straddle two shards, as in Parameter Golf's own tokenizer script. The whole input is tokenized and
   checked before the first shard is written: bad input leaves no file behind. */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BOS_ID 1
#define BYTE_ID_OFFSET 4            /* byte260: ids 0..3 are the specials */
#define DEFAULT_SHARD_TOKENS 100000000 /* Parameter Golf's SHARD_SIZE */
#define MAX_SHARDS 1000000          /* the six-digit shard number */
#define MAX_INPUT_BYTES (((size_t)-1) / 8) /* the token array needs 2x the input; keep far from overflow */
#define MAX_PREFIX_BYTES \
    3900 /* room for "_000000.bin", ".<pid>.staged" and utg_write_file's temporary suffix */

typedef enum mode { MODE_BYTES, MODE_IDS } mode;

typedef struct options {
    mode mode;
    const char *in_path, *out_prefix;
    long long vocab, shard_tokens;
} options;

typedef struct token_buf { /* the whole tokenized input */
    uint16_t *ids;
    size_t n, cap;
} token_buf;

static void usage(FILE *f) {
    fprintf(f,
            "usage: utg-shards bytes --in TEXT --out PREFIX [--shard-tokens N]\n"
            "       utg-shards ids --in IDS.txt --out PREFIX [--vocab V] [--shard-tokens N]\n"
            "\n"
            "Writes Parameter Golf token shards PREFIX_000000.bin, PREFIX_000001.bin, ...: a header of\n"
            "256 little-endian int32 (magic 20240520, version 1, token count), then uint16 ids.\n"
            "\n"
            "modes:\n"
            "  bytes  TEXT is split into paragraph documents: runs of non-blank lines, each line\n"
            "         stripped of ASCII whitespace and joined to the next with one space. Each document\n"
            "         is written as BOS (1) then its bytes with Parameter Golf's byte260 ids: 0..3 are\n"
            "         pad, bos, eos, unk and byte b is id b + 4 (vocabulary 260).\n"
            "  ids    IDS.txt holds one document per line as space-separated decimal ids, the output\n"
            "         of `spm_encode --output_format=id --extra_options=bos`. Every id must be below\n"
            "         the vocabulary size. A line that does not start with BOS (1) gets BOS prepended;\n"
            "         blank lines are skipped.\n"
            "\n"
            "options:\n"
            "  --in FILE           input file (read whole into memory)\n"
            "  --out PREFIX        output prefix; e.g. data/x/austen_train gives\n"
            "                      data/x/austen_train_000000.bin\n"
            "  --shard-tokens N    tokens per shard, 1..2147483647 (default 100000000); documents may\n"
            "                      straddle two shards, as in Parameter Golf\n"
            "  --vocab V           ids mode: vocabulary size, 2..65536 (default 65536)\n"
            "  -h, --help          this text\n"
            "\n"
            "The input is checked whole before any shard is written, and each shard is written\n"
            "atomically, so bad input leaves no output. Exit status: 0 ok, 1 bad input or i/o error,\n"
            "2 usage error.\n");
}

static int usage_error(const char *what, const char *detail) {
    fprintf(stderr, "utg-shards: %s%s%s (see utg-shards --help)\n", what, detail ? ": " : "",
            detail ? detail : "");
    return 2;
}

static int parse_count(const char *s, long long min, long long max, long long *out) {
    long long v = 0;
    if (!s || !*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (*s - '0');
        if (v > max) return 0;
    }
    if (v < min) return 0;
    *out = v;
    return 1;
}

/* Returns 0 when the options are usable, else the exit status (2, or -1 after --help). */
static int parse_args(int argc, char **argv, options *o) {
    int a;
    o->vocab = -1;
    o->shard_tokens = DEFAULT_SHARD_TOKENS;
    o->in_path = o->out_prefix = NULL;
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) { usage(stdout); return -1; }
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "bytes")) o->mode = MODE_BYTES;
    else if (!strcmp(argv[1], "ids")) o->mode = MODE_IDS;
    else return usage_error("unknown mode (expected bytes or ids)", argv[1]);
    for (a = 2; a < argc; a++) {
        const char *opt = argv[a], *val = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) { usage(stdout); return -1; }
        if (strcmp(opt, "--in") && strcmp(opt, "--out") && strcmp(opt, "--shard-tokens") &&
            strcmp(opt, "--vocab"))
            return usage_error("unknown option", opt);
        if (!val) return usage_error("missing value after", opt);
        a++;
        if (!strcmp(opt, "--in")) o->in_path = val;
        else if (!strcmp(opt, "--out")) o->out_prefix = val;
        else if (!strcmp(opt, "--shard-tokens")) {
            if (!parse_count(val, 1, INT32_MAX, &o->shard_tokens))
                return usage_error("--shard-tokens wants 1..2147483647, got", val);
        } else if (!parse_count(val, 2, 65536, &o->vocab))
            return usage_error("--vocab wants 2..65536, got", val);
    }
    if (!o->in_path) return usage_error("--in is required", NULL);
    if (!o->out_prefix || !o->out_prefix[0]) return usage_error("--out is required", NULL);
    if (strlen(o->out_prefix) > MAX_PREFIX_BYTES) return usage_error("--out prefix is too long", NULL);
    if (o->mode == MODE_BYTES && o->vocab >= 0) return usage_error("--vocab applies to ids mode only", NULL);
    if (o->vocab < 0) o->vocab = 65536;
    return 0;
}

static int is_blank(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* Appends one id, growing by doubling; 0 when out of memory. */
static int push(token_buf *t, unsigned id) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4096;
        uint16_t *p;
        if (cap > ((size_t)-1) / sizeof *p) return 0;
        p = (uint16_t *)realloc(t->ids, cap * sizeof *p);
        if (!p) return 0;
        t->ids = p;
        t->cap = cap;
    }
    t->ids[t->n++] = (uint16_t)id;
    return 1;
}

/* The line starting at pos: [*a, *b) without surrounding blanks; returns the start of the next line. */
static size_t next_line(const uint8_t *text, size_t size, size_t pos, size_t *a, size_t *b) {
    size_t end = pos;
    while (end < size && text[end] != '\n') end++;
    *a = pos;
    *b = end;
    while (*a < *b && is_blank(text[*a])) (*a)++;
    while (*b > *a && is_blank(text[*b - 1])) (*b)--;
    return end + 1;
}

static int tokenize_bytes(const uint8_t *text, size_t size, token_buf *t, size_t *n_docs) {
    size_t pos = 0, a, b, i;
    int in_doc = 0;
    while (pos < size) {
        pos = next_line(text, size, pos, &a, &b);
        if (a == b) { in_doc = 0; continue; }
        if (!push(t, in_doc ? ' ' + BYTE_ID_OFFSET : BOS_ID)) return 0;
        if (!in_doc) (*n_docs)++;
        in_doc = 1;
        for (i = a; i < b; i++)
            if (!push(t, text[i] + BYTE_ID_OFFSET)) return 0;
    }
    return 1;
}

/* The word [s, e) quoted for a message: at most 24 bytes, non-printable bytes as \xHH. */
static void quote_word(const uint8_t *s, const uint8_t *e, char *out, size_t out_size) {
    size_t o = 0;
    const uint8_t *p;
    for (p = s; p < e && p < s + 24 && o + 5 < out_size; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '\'') out[o++] = (char)*p;
        else o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", *p);
    }
    if (p < e && o + 4 < out_size) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = 0;
}

/* Parses one decimal id below vocab from [s, e); on failure fills why and returns 0. */
static int parse_id(const uint8_t *s, const uint8_t *e, long long vocab, unsigned *id, char *why,
                    size_t why_size) {
    long long v = 0;
    const uint8_t *p;
    char word[128];
    for (p = s; p < e; p++) {
        if (*p < '0' || *p > '9') {
            quote_word(s, e, word, sizeof word);
            snprintf(why, why_size, "'%s' is not a decimal token id", word);
            return 0;
        }
        if (v < vocab) v = v * 10 + (*p - '0'); /* stops growing past vocab: no overflow */
    }
    if (v >= vocab) {
        quote_word(s, e, word, sizeof word);
        snprintf(why, why_size, "token id %s is not below the vocabulary size %lld", word, vocab);
        return 0;
    }
    *id = (unsigned)v;
    return 1;
}

/* Returns 1 on success, 0 when out of memory, -1 on bad input (message already printed). */
static int tokenize_ids(const char *path, const uint8_t *text, size_t size, long long vocab, token_buf *t,
                        size_t *n_docs) {
    size_t pos = 0, line = 0, a, b;
    char why[256];
    while (pos < size) {
        int first = 1;
        pos = next_line(text, size, pos, &a, &b);
        line++;
        while (a < b) {
            size_t e = a;
            unsigned id;
            while (e < b && !is_blank(text[e])) e++;
            if (!parse_id(text + a, text + e, vocab, &id, why, sizeof why)) {
                fprintf(stderr, "utg-shards: %s:%zu: %s\n", path, line, why);
                return -1;
            }
            if (first && id != BOS_ID && !push(t, BOS_ID)) return 0;
            if (!push(t, id)) return 0;
            if (first) (*n_docs)++;
            first = 0;
            for (a = e; a < b && is_blank(text[a]); a++) {}
        }
    }
    return 1;
}

static void shard_name(char *out, size_t out_size, const char *prefix, size_t index) {
    snprintf(out, out_size, "%s_%06lu.bin", prefix, (unsigned long)index);
}

/* Where shard k waits until every shard is written: PREFIX_k.bin.<pid>.staged (a loader's
   PREFIX_*.bin glob does not match it). */
static void staged_name(char *out, size_t out_size, const char *prefix, size_t index) {
    char name[MAX_PREFIX_BYTES + 32];
    shard_name(name, sizeof name, prefix, index);
    snprintf(out, out_size, "%s.%ld.staged", name, (long)getpid());
}

static void remove_staged(const char *prefix, size_t from, size_t to) {
    char name[MAX_PREFIX_BYTES + 64];
    for (; from < to; from++) { staged_name(name, sizeof name, prefix, from); remove(name); }
}

/* Writes every shard beside its final name first; only when all are written do they replace the
   shards of an earlier run, so that a failed write (a full disk) leaves those as they were. Returns
   the exit status. */
static int write_shards(const char *prefix, const token_buf *t, size_t shard_tokens, size_t *n_shards) {
    size_t n = (t->n + shard_tokens - 1) / shard_tokens, k, cap = t->n < shard_tokens ? t->n : shard_tokens;
    uint8_t *buf;
    char name[MAX_PREFIX_BYTES + 32], staged[MAX_PREFIX_BYTES + 64];
    FILE *stale;
    if (n > MAX_SHARDS) {
        fprintf(
            stderr,
            "utg-shards: %lu shards needed, more than the %d that six-digit names allow; raise --shard-tokens\n",
            (unsigned long)n, MAX_SHARDS);
        return 1;
    }
    buf = (uint8_t *)malloc(UTG_SHARD_HEADER_BYTES + 2 * cap);
    if (!buf) {
        fprintf(stderr, "utg-shards: out of memory for a shard of %lu tokens\n", (unsigned long)cap);
        return 1;
    }
    for (k = 0; k < n; k++) {
        size_t first = k * shard_tokens, count = t->n - first < shard_tokens ? t->n - first : shard_tokens;
        size_t bytes = UTG_SHARD_HEADER_BYTES + 2 * count;
        utg_msg msg;
        utg_result r = utg_shard_write(t->ids + first, count, buf, bytes);
        staged_name(staged, sizeof staged, prefix, k);
        msg.text[0] = 0;
        if (r == UTG_OK) r = utg_write_file(staged, buf, bytes, &msg);
        if (r != UTG_OK) {
            fprintf(stderr, "utg-shards: %s: %s; no shard was replaced\n", msg.text[0] ? msg.text : staged,
                    utg_result_string(r));
            remove_staged(prefix, 0, k + 1);
            free(buf);
            return 1;
        }
    }
    free(buf);
    for (k = 0; k < n; k++) {
        staged_name(staged, sizeof staged, prefix, k);
        shard_name(name, sizeof name, prefix, k);
        if (rename(staged, name) != 0) {
            fprintf(
                stderr,
                "utg-shards: cannot rename %s to %s: %s; shards 0..%lu are new, the rest keep their earlier bytes\n",
                staged, name, strerror(errno), (unsigned long)k);
            remove_staged(prefix, k, n);
            return 1;
        }
    }
    *n_shards = n;
    shard_name(name, sizeof name, prefix, n); /* a loader globbing PREFIX_*.bin would read it too */
    if ((stale = fopen(name, "rb")) != NULL) {
        fclose(stale);
        fprintf(stderr, "utg-shards: warning: %s is left over from an earlier run; remove it\n", name);
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    token_buf t = {NULL, 0, 0};
    void *text = NULL;
    size_t size = 0, n_docs = 0, n_shards = 0;
    utg_msg msg;
    utg_result r;
    int rc = parse_args(argc, argv, &o), ok;
    if (rc) return rc < 0 ? 0 : rc;

    msg.text[0] = 0;
    r = utg_read_file(o.in_path, MAX_INPUT_BYTES, &text, &size, &msg);
    if (r != UTG_OK) {
        fprintf(stderr, "utg-shards: %s (%s)\n", msg.text[0] ? msg.text : o.in_path, utg_result_string(r));
        return 1;
    }
    if (o.mode == MODE_BYTES) ok = tokenize_bytes((const uint8_t *)text, size, &t, &n_docs);
    else ok = tokenize_ids(o.in_path, (const uint8_t *)text, size, o.vocab, &t, &n_docs);
    free(text);
    if (ok == 0) fprintf(stderr, "utg-shards: out of memory tokenizing %s\n", o.in_path);
    else if (ok == 1 && n_docs == 0)
        fprintf(stderr, "utg-shards: %s: no documents (the file is empty or blank)\n", o.in_path);
    rc = ok == 1 && n_docs > 0 ? write_shards(o.out_prefix, &t, (size_t)o.shard_tokens, &n_shards) : 1;
    if (rc == 0)
        printf("utg-shards: %lu documents, %lu tokens, %lu shard%s (%s_%06d.bin%s)\n", (unsigned long)n_docs,
               (unsigned long)t.n, (unsigned long)n_shards, n_shards == 1 ? "" : "s", o.out_prefix, 0,
               n_shards == 1 ? "" : " ...");
    free(t.ids);
    return rc;
}
