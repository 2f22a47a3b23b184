/* utg-inspect: look inside a UTGA artifact, the file a Parameter Golf submission ships.

   utg-inspect FILE                    envelope, META, tensors, totals, sections
   utg-inspect FILE --json             the same as one JSON document
   utg-inspect FILE --verify [--json]  the loader checklist stage by stage, then the model check
   utg-inspect FILE --budget [--json] [--code-bytes N] [--svg OUT.svg]
   utg-inspect FILE --strip OUT        a copy without the ancillary sections (PROV, ...)

   Everything read from the file is untrusted. Strings and names are printed escaped (a META string
   holding "\x1b[31m" must not recolour the terminal: gguf_dump's lesson), JSON strings are escaped
   into valid UTF-8, and a bad file ends in a message and exit status 1, never a crash. The parser
   runs the whole checklist in one call; --verify repeats the first three stages itself so that a
   truncated or corrupted file is reported at the stage that catches it. */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the envelope's packed_size is a u32, so no artifact is longer than this */
#define MAX_FILE_BYTES \
    (sizeof(size_t) >= 8 ? (size_t)((uint64_t)UTG_ARTIFACT_ENVELOPE + 0xffffffffu) : (size_t)-1)
#define MAX_SHOWN_STRING 72   /* bytes of a META string in the table */
#define MAX_SHOWN_ELEMENTS 8  /* elements of a META array in the table */
#define MAX_SHOWN_PROV 160    /* bytes of a PROV section in the section list */
#define BAR_COLUMNS 32        /* the widest bar of --budget */
#define BUDGET_BAR_COLUMNS 48 /* the artifact + code against the budget */

typedef enum mode { MODE_SHOW, MODE_VERIFY, MODE_BUDGET, MODE_STRIP } mode;

typedef struct options {
    mode mode;
    int json;
    const char *path, *strip_out, *svg_out;
    long long code_bytes; /* -1: not given */
} options;

/* The file and, once parsed, the artifact. */
typedef struct artifact_file {
    const char *path;
    uint8_t *bytes;
    size_t size;
    utg_artifact *a;
    char not_artifact[320]; /* read_artifact's verdict on a file of another kind (--verify reports it) */
} artifact_file;

/* The envelope as the tool reads it itself (--verify's first stage, --budget's decode). */
typedef struct envelope {
    int major, codec;
    unsigned flags;
    uint32_t raw, packed, crc;
} envelope;

static void usage(FILE *f) {
    fprintf(f,
            "usage: utg-inspect FILE [--json]\n"
            "       utg-inspect FILE --verify [--json]\n"
            "       utg-inspect FILE --budget [--json] [--code-bytes N] [--svg OUT.svg]\n"
            "       utg-inspect FILE --strip OUT\n"
            "\n"
            "Shows what a UTGA artifact holds. Every string read from the file is printed escaped.\n"
            "\n"
            "modes:\n"
            "  (none)          the envelope (format version, codec, sizes, CRC), META as a table of\n"
            "                  key, type and value, the tensor table (dtype, bits, scale kind, shape,\n"
            "                  plane bytes, order-0 entropy of the Q symbols), totals and sections\n"
            "  --json          the same as one JSON document (with --verify and --budget: their\n"
            "                  results as JSON)\n"
            "  --verify        runs the loader checklist and prints each stage: envelope, decode +\n"
            "                  CRC, directory, META, TENS, planes, symbols and scales, and model\n"
            "                  consistency (a model built from the META config loads every tensor)\n"
            "  --budget        bytes by tensor group against the Parameter Golf budget of 16,000,000\n"
            "                  bytes (artifact + code), with the headroom, as a bar chart. Groups:\n"
            "                  the embedding (and an untied head), attention, MLP and other matrices\n"
            "                  (*.weight, quantized or float), float/control tensors, scales, and the\n"
            "                  container (envelope, directory, META, TENS, padding), plus ancillary\n"
            "                  sections. The split is approximate: each plane is compressed alone with\n"
            "                  the artifact's codec and the results are scaled to the real packed size\n"
            "                  (the real stream shares context between planes)\n"
            "  --strip OUT     writes a copy without ancillary sections (PROV, ...), re-encoded with\n"
            "                  the same codec, and checks that it holds the same META and tensors\n"
            "\n"
            "options:\n"
            "  --code-bytes N  with --budget: the bytes of the submission's code, added to the total\n"
            "  --svg FILE      with --budget: also draw the chart as an SVG picture\n"
            "  -h, --help      this text\n"
            "\n"
            "Bars use block characters when LC_ALL, LC_CTYPE or LANG names UTF-8, else '#'.\n"
            "Exit status: 0 ok; 1 a bad or unreadable artifact, a failed check, an i/o error, or with\n"
            "--budget a total over the budget; 2 usage error.\n");
}

static int usage_error(const char *what, const char *detail) {
    fprintf(stderr, "utg-inspect: %s%s%s (see utg-inspect --help)\n", what, detail ? ": " : "",
            detail ? detail : "");
    return 2;
}

static int parse_count(const char *s, long long max, long long *out) {
    long long v = 0;
    if (!s || !*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (*s - '0');
        if (v > max) return 0;
    }
    *out = v;
    return 1;
}

/* Returns 0 when the options are usable, else the exit status (2, or -1 after --help). */
static int parse_args(int argc, char **argv, options *o) {
    int a, n_modes = 0, only_files = 0;
    memset(o, 0, sizeof *o);
    o->code_bytes = -1;
    if (argc < 2) { usage(stderr); return 2; }
    for (a = 1; a < argc; a++) {
        const char *opt = argv[a], *val = a + 1 < argc ? argv[a + 1] : NULL;
        if (only_files || opt[0] != '-' || !opt[1]) {
            if (o->path) return usage_error("more than one artifact given", opt);
            o->path = opt;
        } else if (!strcmp(opt, "--")) only_files = 1;
        else if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) { usage(stdout); return -1; }
        else if (!strcmp(opt, "--json")) o->json = 1;
        else if (!strcmp(opt, "--verify")) { o->mode = MODE_VERIFY; n_modes++; }
        else if (!strcmp(opt, "--budget")) { o->mode = MODE_BUDGET; n_modes++; }
        else if (!strcmp(opt, "--strip") || !strcmp(opt, "--svg") || !strcmp(opt, "--code-bytes")) {
            if (!val) return usage_error("missing value after", opt);
            a++;
            if (!strcmp(opt, "--strip")) { o->mode = MODE_STRIP; o->strip_out = val; n_modes++; }
            else if (!strcmp(opt, "--svg")) o->svg_out = val;
            else if (!parse_count(val, 1000000000000LL, &o->code_bytes))
                return usage_error("--code-bytes wants a byte count, got", val);
        } else return usage_error("unknown option", opt);
    }
    if (!o->path) return usage_error("no artifact given", NULL);
    if (n_modes > 1)
        return usage_error("--verify, --budget and --strip are separate runs; give one of them", NULL);
    if ((o->svg_out || o->code_bytes >= 0) && o->mode != MODE_BUDGET)
        return usage_error("--svg and --code-bytes go with --budget", NULL);
    if (o->json && o->mode == MODE_STRIP) return usage_error("--json does not apply to --strip", NULL);
    if (o->mode == MODE_STRIP && !o->strip_out[0])
        return usage_error("--strip needs an output file name", NULL);
    return 0;
}

/* ---- escaping: the terminal, JSON and XML ---- */

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid; *cp gets the code point. */
static size_t utf8_seq(const uint8_t *s, size_t n, uint32_t *cp) {
    uint32_t c = s[0], min;
    size_t len, i;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xc2 && c <= 0xdf) { len = 2; c &= 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; c &= 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; c &= 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3fu);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

/* Code points a terminal may act on: C0 and C1 controls, DEL, and the bidi and line separators
   that can make a string display as something else. */
static int unsafe_cp(uint32_t c) {
    return c < 0x20 || (c >= 0x7f && c < 0xa0) || c == 0x061c || c == 0x200e || c == 0x200f ||
           (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) || c == 0xfeff;
}

/* n bytes as terminal-safe text: \n \t \r, \xNN for other control bytes and invalid UTF-8, \uXXXX
   for unsafe code points past ASCII, and with `quoted` also \" and \\; other UTF-8 as is. */
static void put_escaped(FILE *f, const uint8_t *s, size_t n, int quoted) {
    size_t i = 0;
    while (i < n) {
        uint32_t c = 0;
        size_t len = utf8_seq(s + i, n - i, &c);
        if (!len) { fprintf(f, "\\x%02x", s[i++]); continue; }
        if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (quoted && (c == '"' || c == '\\')) { fputc('\\', f); fputc((int)c, f); }
        else if (unsafe_cp(c)) fprintf(f, c < 0x80 ? "\\x%02x" : "\\u%04x", (unsigned)c);
        else fwrite(s + i, 1, len, f);
        i += len;
    }
}

static void put_escaped_str(FILE *f, const char *s) { put_escaped(f, (const uint8_t *)s, strlen(s), 0); }

/* A JSON string: valid UTF-8 passes, control characters and quotes are escaped, and a byte that is
   not valid UTF-8 becomes U+FFFD (JSON text must be Unicode). */
static void put_json_bytes(FILE *f, const uint8_t *s, size_t n) {
    size_t i = 0;
    fputc('"', f);
    while (i < n) {
        uint32_t c = 0;
        size_t len = utf8_seq(s + i, n - i, &c);
        if (!len) { fputs("\\ufffd", f); i++; continue; }
        if (c == '"' || c == '\\') { fputc('\\', f); fputc((int)c, f); }
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f || c == 0x2028 || c == 0x2029) fprintf(f, "\\u%04x", (unsigned)c);
        else fwrite(s + i, 1, len, f);
        i += len;
    }
    fputc('"', f);
}

static void put_json(FILE *f, const char *s) { put_json_bytes(f, (const uint8_t *)s, strlen(s)); }

/* XML character data: the five entities; characters XML 1.0 forbids, and invalid UTF-8, become '?'. */
static void put_xml(FILE *f, const char *str) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, n = strlen(str);
    while (i < n) {
        uint32_t c = 0;
        size_t len = utf8_seq(s + i, n - i, &c);
        if (!len || (c < 0x20 && c != '\t') || (c >= 0x7f && c < 0xa0) || c == 0xfffe || c == 0xffff) {
            fputc('?', f);
            i += len ? len : 1;
            continue;
        }
        if (c == '&') fputs("&amp;", f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c == '"') fputs("&quot;", f);
        else if (c == '\'') fputs("&apos;", f);
        else fwrite(s + i, 1, len, f);
        i += len;
    }
}

/* ---- numbers ---- */

/* v with thousands separators; eight rotating buffers, so a printf may hold several. */
static const char *num(uint64_t v) {
    static char bufs[8][32];
    static int next;
    char digits[24], *out = bufs[next++ & 7];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v), i, o = 0;
    for (i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
    return out;
}

/* The shortest %g text that reads back as the same value (as a float for f32). */
static void fmt_real(char *buf, size_t n, double v, int is_f32) {
    int p;
    if (!isfinite(v)) { snprintf(buf, n, "null"); return; } /* the parser refuses these; JSON has no NaN */
    for (p = is_f32 ? 6 : 15; p <= 17; p++) {
        double back;
        snprintf(buf, n, "%.*g", p, v);
        back = strtod(buf, NULL);
        if (is_f32 ? (float)back == (float)v : back == v) break;
    }
}

static double percent(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }

/* ---- names ---- */

static const char *codec_name(int id) {
    return id == UTG_CODEC_STORED ? "stored" : id == UTG_CODEC_BROTLI ? "brotli" : "unknown";
}
static const char *dtype_name(utg_dtype d) {
    switch (d) {
    case UTG_DT_F32: return "f32";
    case UTG_DT_F16: return "f16";
    case UTG_DT_BF16: return "bf16";
    case UTG_DT_Q: return "q";
    case UTG_DT_F64: return "f64";
    }
    return "?";
}
static const char *scale_name(utg_scale_kind s) {
    switch (s) {
    case UTG_SCALE_NONE: return "none";
    case UTG_SCALE_TENSOR: return "tensor";
    case UTG_SCALE_ROW: return "row";
    case UTG_SCALE_GROUP: return "group";
    }
    return "?";
}
static const char *kv_type_name(utg_kv_type t) {
    static const char *const names[] = {"u32", "i32", "u64", "f32", "f64", "str", "u32[]", "f32[]"};
    return (int)t >= 0 && (int)t < 8 ? names[t] : "?";
}
static int kv_is_array(const utg_artifact_kv *kv) {
    return kv->type == UTG_KV_U32_ARRAY || kv->type == UTG_KV_F32_ARRAY;
}
/* bytes of one element of a META value as stored */
static size_t kv_elem_bytes(utg_kv_type t) {
    return t == UTG_KV_STR ? 1 : (t == UTG_KV_U64 || t == UTG_KV_F64) ? 8 : 4;
}

static void shape_text(const utg_artifact_tensor *t, char *buf, size_t n) {
    size_t o = 0;
    int d;
    buf[0] = 0;
    for (d = 0; d < t->ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? "x" : "", (long long)t->dims[d]);
}

/* ---- reading ---- */

static int fail_file(const char *path, const char *msg) {
    fprintf(stderr, "utg-inspect: ");
    put_escaped_str(stderr, path);
    fprintf(stderr, ": ");
    put_escaped_str(stderr, msg);
    fputc('\n', stderr);
    return 1;
}

/* Reads the file after its magic matched (a large file of another kind costs one small read). A
   file of another kind counts as read for --verify, which reports it as its envelope stage. */
static int read_artifact(const char *path, artifact_file *f, int verifying) {
    utg_msg msg;
    void *bytes = NULL;
    utg_result r;
    memset(f, 0, sizeof *f);
    memset(&msg, 0, sizeof msg);
    f->path = path;
    r = utg_read_file_magic(path, "UTGA", 4, MAX_FILE_BYTES, &bytes, &f->size, &msg);
    if (r == UTG_ERR_FORMAT && verifying) {
        snprintf(f->not_artifact, sizeof f->not_artifact, "%s", msg.text);
        return 1;
    }
    if (r != UTG_OK) {
        fprintf(stderr, "utg-inspect: ");
        put_escaped_str(stderr, msg.text);
        fputc('\n', stderr);
        return 0;
    }
    f->bytes = (uint8_t *)bytes;
    return 1;
}

static int parse_artifact(artifact_file *f) {
    utg_msg msg;
    memset(&msg, 0, sizeof msg);
    if (utg_artifact_parse(f->bytes, f->size, NULL, NULL, &f->a, &msg) != UTG_OK) {
        fail_file(f->path, msg.text);
        return 0;
    }
    return 1;
}

static void close_artifact(artifact_file *f) {
    utg_artifact_free(f->a);
    free(f->bytes);
    f->a = NULL;
    f->bytes = NULL;
}

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static size_t align_up(size_t v) {
    return (v + UTG_ARTIFACT_ALIGN - 1) / UTG_ARTIFACT_ALIGN * UTG_ARTIFACT_ALIGN;
}

/* ---- the first three checklist stages, read independently of the parser ---- */

static int check_envelope(const uint8_t *b, size_t n, envelope *e, char *msg, size_t cap) {
    utg_codec c;
    if (n < UTG_ARTIFACT_ENVELOPE) {
        snprintf(msg, cap, "the file is %zu bytes, shorter than the 20-byte envelope", n);
        return 0;
    }
    if (memcmp(b, "UTGA", 4)) {
        snprintf(msg, cap, "not a UTGA artifact (magic %02x %02x %02x %02x)", b[0], b[1], b[2], b[3]);
        return 0;
    }
    e->major = b[4];
    e->codec = b[5];
    e->flags = rd16(b + 6);
    e->raw = rd32(b + 8);
    e->packed = rd32(b + 12);
    e->crc = rd32(b + 16);
    if (e->major != UTG_ARTIFACT_MAJOR) {
        snprintf(msg, cap, "format version %d; this tool reads version %d", e->major, UTG_ARTIFACT_MAJOR);
        return 0;
    }
    if (e->flags & 0xffu) {
        snprintf(msg, cap, "must-understand flags 0x%02x are set, none is known", e->flags & 0xffu);
        return 0;
    }
    if (!utg_codec_for_id(e->codec, &c)) {
        snprintf(msg, cap, "codec %d is unknown to this build", e->codec);
        return 0;
    }
    if (e->raw > UTG_MAX_ARTIFACT_RAW) {
        snprintf(msg, cap, "declared payload of %u bytes is over the cap of %u", e->raw,
                 (unsigned)UTG_MAX_ARTIFACT_RAW);
        return 0;
    }
    if ((uint64_t)e->packed + UTG_ARTIFACT_ENVELOPE != (uint64_t)n) {
        snprintf(msg, cap, "the envelope says %u packed bytes, the file holds %zu (truncated or padded)",
                 e->packed, n - UTG_ARTIFACT_ENVELOPE);
        return 0;
    }
    if (e->raw < 16) {
        snprintf(msg, cap, "declared payload of %u bytes is shorter than its 16-byte header", e->raw);
        return 0;
    }
    return 1;
}

/* Decodes into exactly e->raw bytes (malloc'd into *out) and checks the CRC. */
static int decode_payload(const uint8_t *b, const envelope *e, uint8_t **out, char *msg, size_t cap) {
    utg_codec c;
    uint8_t *pay;
    uint32_t crc;
    *out = NULL;
    if (!utg_codec_for_id(e->codec, &c)) {
        snprintf(msg, cap, "codec %d is unknown to this build", e->codec);
        return 0;
    }
    pay = (uint8_t *)malloc(e->raw ? e->raw : 1);
    if (!pay) { snprintf(msg, cap, "out of memory for a %u-byte payload", e->raw); return 0; }
    if (c.decompress(b + UTG_ARTIFACT_ENVELOPE, e->packed, pay, e->raw, c.user) != UTG_OK) {
        snprintf(msg, cap, "the %s payload does not decode to its declared %u bytes", codec_name(e->codec),
                 e->raw);
        free(pay);
        return 0;
    }
    crc = utg_crc32(0, pay, e->raw);
    if (crc != e->crc) {
        snprintf(msg, cap, "payload CRC-32 mismatch: the envelope says %08x, the decoded payload has %08x",
                 e->crc, crc);
        free(pay);
        return 0;
    }
    *out = pay;
    return 1;
}

static int tag_ok(const uint8_t *t) {
    int k;
    for (k = 0; k < 4; k++) if (!((t[k] >= 'A' && t[k] <= 'Z') || (t[k] >= '0' && t[k] <= '9'))) return 0;
    return 1;
}
static int is_core_tag(const uint8_t *t) {
    return !memcmp(t, "META", 4) || !memcmp(t, "TENS", 4) || !memcmp(t, "DATA", 4);
}

/* The payload header and the section directory: entries in bounds, tiling the payload in order with
   zeroed padding, no duplicates, META/TENS/DATA present and critical, no unknown critical tag. */
static int check_directory(const uint8_t *pay, uint32_t raw, int *n_out, char *msg, size_t cap) {
    uint32_t nsec = rd16(pay + 2), i, j, prev_end, c;
    int core = 0;
    if (rd16(pay + 4) != UTG_ARTIFACT_ALIGN) {
        snprintf(msg, cap, "plane alignment is %u, expected %d", rd16(pay + 4), UTG_ARTIFACT_ALIGN);
        return 0;
    }
    for (i = 6; i < 16; i++)
        if (pay[i]) {
            snprintf(msg, cap, "payload header byte %u is reserved but not zero", i);
            return 0;
        }
    if (nsec < 3 || nsec > UTG_ARTIFACT_MAX_SECTIONS) {
        snprintf(msg, cap, "%u sections (3..%d)", nsec, UTG_ARTIFACT_MAX_SECTIONS);
        return 0;
    }
    if (16 + 16 * (size_t)nsec > raw) {
        snprintf(msg, cap, "the section directory runs past the payload");
        return 0;
    }
    prev_end = 16 + 16 * nsec;
    for (i = 0; i < nsec; i++) {
        const uint8_t *e = pay + 16 + 16 * (size_t)i;
        uint32_t flags = rd32(e + 4), off = rd32(e + 8), size = rd32(e + 12);
        if (!tag_ok(e)) { snprintf(msg, cap, "section %u has a malformed tag", i); return 0; }
        if (flags & ~1u) {
            snprintf(msg, cap, "section %.4s has unknown flags 0x%x", (const char *)e, flags);
            return 0;
        }
        if (off != align_up(prev_end)) {
            snprintf(msg, cap, "section %.4s starts at %u, not at %zu: sections must tile the payload",
                     (const char *)e, off, align_up(prev_end));
            return 0;
        }
        if (off > raw || size > raw - off) {
            snprintf(msg, cap, "section %.4s (%u bytes at %u) runs past the payload", (const char *)e, size,
                     off);
            return 0;
        }
        for (c = prev_end; c < off; c++)
            if (pay[c]) {
                snprintf(msg, cap, "padding before section %.4s is not zero", (const char *)e);
                return 0;
            }
        for (j = 0; j < i; j++)
            if (!memcmp(pay + 16 + 16 * (size_t)j, e, 4)) {
                snprintf(msg, cap, "section %.4s appears twice", (const char *)e);
                return 0;
            }
        if (is_core_tag(e)) {
            if (!(flags & 1u)) {
                snprintf(msg, cap, "section %.4s must be critical", (const char *)e);
                return 0;
            }
            core++;
        } else if (flags & 1u) {
            snprintf(msg, cap, "critical section %.4s is unknown to this build", (const char *)e);
            return 0;
        }
        prev_end = off + size;
    }
    if (prev_end != raw) { snprintf(msg, cap, "%u bytes after the last section", raw - prev_end); return 0; }
    if (core != 3) { snprintf(msg, cap, "the payload lacks a META, TENS or DATA section"); return 0; }
    *n_out = (int)nsec;
    return 1;
}

/* ---- the default view ---- */

static void show_kv_value(const utg_artifact_kv *kv) {
    char buf[64];
    uint32_t i, shown;
    switch (kv->type) {
    case UTG_KV_U32: case UTG_KV_U64: printf("%llu", (unsigned long long)kv->u); break;
    case UTG_KV_I32: printf("%lld", (long long)kv->i); break;
    case UTG_KV_F32:
    case UTG_KV_F64:
        fmt_real(buf, sizeof buf, kv->f, kv->type == UTG_KV_F32);
        printf("%s", buf);
        break;
    case UTG_KV_STR:
        shown = kv->count < MAX_SHOWN_STRING ? kv->count : MAX_SHOWN_STRING;
        putchar('"');
        put_escaped(stdout, (const uint8_t *)kv->str, shown, 1);
        putchar('"');
        if (shown < kv->count) printf("... (%s bytes)", num(kv->count));
        break;
    case UTG_KV_U32_ARRAY: case UTG_KV_F32_ARRAY:
        shown = kv->count < MAX_SHOWN_ELEMENTS ? kv->count : MAX_SHOWN_ELEMENTS;
        putchar('[');
        for (i = 0; i < shown; i++) {
            if (kv->type == UTG_KV_U32_ARRAY) snprintf(buf, sizeof buf, "%u", utg_artifact_kv_u32(kv, i));
            else fmt_real(buf, sizeof buf, utg_artifact_kv_f32(kv, i), 1);
            printf("%s%s", i ? ", " : "", buf);
        }
        printf("%s]", shown < kv->count ? ", ..." : "");
        break;
    }
}

static void show_envelope(const artifact_file *f) {
    const utg_artifact *a = f->a;
    printf("artifact  ");
    put_escaped_str(stdout, f->path);
    printf("\nformat    UTGA %d.%d, envelope flags 0x%04x\n", a->major, a->minor, (unsigned)a->flags);
    printf("codec     %s (id %d)\n", codec_name(a->codec), a->codec);
    printf("size      %s bytes = 20 envelope + %s packed; %s bytes decoded (ratio %.2f)\n", num(f->size),
           num(a->packed_size), num(a->raw_size),
           a->packed_size ? (double)a->raw_size / a->packed_size : 0.0);
    printf("crc32     %08x ok (matches the decoded payload)\n", a->crc);
}

static void show_meta(const utg_artifact *a) {
    int i, kw = 3, tw = 4;
    for (i = 0; i < a->n_kv; i++) {
        char t[32];
        int n = (int)strlen(a->kv[i].key);
        if (n > kw) kw = n;
        n = kv_is_array(&a->kv[i])
                ? snprintf(t, sizeof t, "%.3s[%u]", kv_type_name(a->kv[i].type), a->kv[i].count)
                : 3;
        if (n > tw) tw = n;
    }
    printf("\nMETA: %d keys\n  %-*s  %-*s  value\n", a->n_kv, kw, "key", tw, "type");
    for (i = 0; i < a->n_kv; i++) {
        const utg_artifact_kv *kv = &a->kv[i];
        char t[32];
        if (kv_is_array(kv)) snprintf(t, sizeof t, "%.3s[%u]", kv_type_name(kv->type), kv->count);
        else snprintf(t, sizeof t, "%s", kv_type_name(kv->type));
        printf("  ");
        put_escaped_str(stdout, kv->key); /* lower_snake by the parser's check; escaped all the same */
        printf("%*s  %-*s  ", kw - (int)strlen(kv->key), "", tw, t);
        show_kv_value(kv);
        putchar('\n');
    }
}

static void show_tensors(const utg_artifact *a) {
    int i, nw = 4;
    for (i = 0; i < a->n_tensors; i++)
        if ((int)strlen(a->tensors[i].name) > nw) nw = (int)strlen(a->tensors[i].name);
    printf(
        "\nTENS: %d tensors\n  %-*s  dtype  bits  scale       shape              values     scales  entropy\n",
        a->n_tensors, nw, "name");
    for (i = 0; i < a->n_tensors; i++) {
        const utg_artifact_tensor *t = &a->tensors[i];
        char shape[80], scale[32], bits[8], ent[16];
        shape_text(t, shape, sizeof shape);
        if (t->scale_kind == UTG_SCALE_GROUP) snprintf(scale, sizeof scale, "group %d", t->group);
        else if (t->scale_kind == UTG_SCALE_NONE) snprintf(scale, sizeof scale, "-");
        else
            snprintf(scale, sizeof scale, "%s %s", scale_name(t->scale_kind),
                     t->scale_kind == UTG_SCALE_TENSOR ? "f32" : "f16");
        snprintf(bits, sizeof bits, t->dtype == UTG_DT_Q ? "%d" : "-", t->qbits);
        if (t->dtype == UTG_DT_Q) snprintf(ent, sizeof ent, "%.3f", utg_artifact_tensor_entropy(a, i));
        else snprintf(ent, sizeof ent, "-");
        printf("  ");
        put_escaped_str(stdout, t->name);
        printf("%*s  %-5s  %4s  %-10s  %-14s  %10s  %9s  %7s\n", nw - (int)strlen(t->name), "",
               dtype_name(t->dtype), bits, scale, shape, num(t->values_size),
               t->scales_size ? num(t->scales_size) : "-", ent);
    }
}

/* Totals by dtype (Q split by bit width); entropy_bytes sums numel * H / 8 over Q tensors. */
typedef struct totals {
    uint64_t params, scale_bytes, dtype_bytes[4], q_bytes[9];
    int dtype_count[4], q_count[9];
    double entropy_bytes;
} totals;

static totals count_totals(const utg_artifact *a) {
    totals s;
    int i;
    memset(&s, 0, sizeof s);
    for (i = 0; i < a->n_tensors; i++) {
        const utg_artifact_tensor *t = &a->tensors[i];
        s.params += t->numel;
        s.dtype_bytes[t->dtype] += t->values_size;
        s.dtype_count[t->dtype]++;
        s.scale_bytes += t->scales_size;
        if (t->dtype == UTG_DT_Q) {
            s.q_bytes[t->qbits] += t->values_size;
            s.q_count[t->qbits]++;
            s.entropy_bytes += (double)t->numel * utg_artifact_tensor_entropy(a, i) / 8.0;
        }
    }
    return s;
}

static void show_totals(const utg_artifact *a) {
    totals s = count_totals(a);
    int d, b;
    printf("\ntotals\n  parameters   %s in %d tensors\n", num(s.params), a->n_tensors);
    for (b = 2; b <= 8; b++)
        if (s.q_count[b])
            printf("  q%d           %s bytes of symbols in %d tensors\n", b, num(s.q_bytes[b]), s.q_count[b]);
    if (s.dtype_count[UTG_DT_Q])
        printf("  scales       %s bytes\n  entropy      %s bytes: the order-0 entropy of all Q symbols\n",
               num(s.scale_bytes), num((uint64_t)ceil(s.entropy_bytes)));
    for (d = UTG_DT_F32; d <= UTG_DT_BF16; d++)
        if (s.dtype_count[d])
            printf("  %-4s         %s bytes in %d tensors\n", dtype_name((utg_dtype)d), num(s.dtype_bytes[d]),
                   s.dtype_count[d]);
}

static void show_sections(const utg_artifact *a) {
    int i;
    printf("\nsections: %d\n  tag   kind           offset        size\n", a->n_sections);
    for (i = 0; i < a->n_sections; i++) {
        const utg_artifact_section *s = &a->sections[i];
        printf("  ");
        put_escaped_str(stdout, s->tag);
        printf("  %-9s  %10s  %10s", s->flags & 1u ? "critical" : "ancillary", num(s->offset), num(s->size));
        if (!strcmp(s->tag, "PROV")) { /* provenance is text; show its start */
            uint32_t shown = s->size < MAX_SHOWN_PROV ? s->size : MAX_SHOWN_PROV;
            printf("  \"");
            put_escaped(stdout, a->payload + s->offset, shown, 1);
            printf("\"%s", shown < s->size ? "..." : "");
        }
        putchar('\n');
    }
}

static int run_show(artifact_file *f) {
    show_envelope(f);
    show_meta(f->a);
    show_tensors(f->a);
    show_totals(f->a);
    show_sections(f->a);
    return 0;
}

/* ---- --json ---- */

static void json_kv_value(const utg_artifact_kv *kv) {
    char buf[64];
    uint32_t i;
    switch (kv->type) {
    case UTG_KV_U32: case UTG_KV_U64: printf("%llu", (unsigned long long)kv->u); break;
    case UTG_KV_I32: printf("%lld", (long long)kv->i); break;
    case UTG_KV_F32:
    case UTG_KV_F64:
        fmt_real(buf, sizeof buf, kv->f, kv->type == UTG_KV_F32);
        printf("%s", buf);
        break;
    case UTG_KV_STR: put_json_bytes(stdout, (const uint8_t *)kv->str, kv->count); break;
    case UTG_KV_U32_ARRAY: case UTG_KV_F32_ARRAY:
        putchar('[');
        for (i = 0; i < kv->count; i++) {
            if (kv->type == UTG_KV_U32_ARRAY) snprintf(buf, sizeof buf, "%u", utg_artifact_kv_u32(kv, i));
            else fmt_real(buf, sizeof buf, utg_artifact_kv_f32(kv, i), 1);
            printf("%s%s", i ? ", " : "", buf);
        }
        putchar(']');
        break;
    }
}

static void json_tensor(const utg_artifact *a, int i) {
    const utg_artifact_tensor *t = &a->tensors[i];
    int d;
    printf("    {\"name\": ");
    put_json(stdout, t->name);
    printf(", \"dtype\": \"%s\", \"bits\": %d, \"scale\": \"%s\", \"group\": %d, \"shape\": [",
           dtype_name(t->dtype), t->qbits, scale_name(t->scale_kind), t->group);
    for (d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->dims[d]);
    printf(
        "], \"numel\": %zu, \"values_bytes\": %zu, \"scales_bytes\": %zu, \"values_offset\": %u, \"scales_offset\": %u, \"entropy_bits\": ",
        t->numel, t->values_size, t->scales_size, t->values_offset, t->scales_offset);
    if (t->dtype == UTG_DT_Q) printf("%.6f}", utg_artifact_tensor_entropy(a, i));
    else printf("null}");
}

static int run_json(artifact_file *f) {
    const utg_artifact *a = f->a;
    totals s = count_totals(a);
    int i, d;
    printf("{\n  \"file\": ");
    put_json(stdout, f->path);
    printf(
        ",\n  \"envelope\": {\"format_major\": %d, \"format_minor\": %d, \"codec\": \"%s\", \"codec_id\": %d, \"flags\": %d, "
        "\"file_bytes\": %zu, \"packed_bytes\": %u, \"raw_bytes\": %u, \"crc32\": \"%08x\", \"crc_ok\": true},\n  \"meta\": [",
        a->major, a->minor, codec_name(a->codec), a->codec, a->flags, f->size, a->packed_size, a->raw_size,
        a->crc);
    for (i = 0; i < a->n_kv; i++) {
        const utg_artifact_kv *kv = &a->kv[i];
        printf("%s\n    {\"key\": ", i ? "," : "");
        put_json(stdout, kv->key);
        printf(", \"type\": \"%s\", \"count\": %u, \"value\": ", kv_type_name(kv->type), kv->count);
        json_kv_value(kv);
        putchar('}');
    }
    printf("\n  ],\n  \"tensors\": [");
    for (i = 0; i < a->n_tensors; i++) { printf("%s\n", i ? "," : ""); json_tensor(a, i); }
    printf(
        "\n  ],\n  \"totals\": {\"parameters\": %llu, \"tensors\": %d, \"scale_bytes\": %llu, \"symbol_entropy_bytes\": %.1f, \"bytes_by_dtype\": {",
        (unsigned long long)s.params, a->n_tensors, (unsigned long long)s.scale_bytes, s.entropy_bytes);
    for (d = 0; d < 4; d++)
        printf("%s\"%s\": %llu", d ? ", " : "", dtype_name((utg_dtype)d),
               (unsigned long long)s.dtype_bytes[d]);
    printf("}},\n  \"sections\": [");
    for (i = 0; i < a->n_sections; i++) {
        const utg_artifact_section *sec = &a->sections[i];
        printf("%s\n    {\"tag\": ", i ? "," : "");
        put_json(stdout, sec->tag);
        printf(", \"critical\": %s, \"offset\": %u, \"size\": %u", sec->flags & 1u ? "true" : "false",
               sec->offset, sec->size);
        if (!strcmp(sec->tag, "PROV")) {
            printf(", \"text\": ");
            put_json_bytes(stdout, a->payload + sec->offset, sec->size);
        }
        putchar('}');
    }
    printf("\n  ]\n}\n");
    return 0;
}

/* ---- --verify ---- */

enum { ST_ENVELOPE, ST_DECODE, ST_DIRECTORY, ST_META, ST_TENS, ST_PLANES, ST_SYMBOLS, ST_MODEL, ST_COUNT };
static const char *const stage_names[ST_COUNT] = {
    "envelope", "decode + CRC", "directory",          "META",
    "TENS",     "planes",       "symbols and scales", "model consistency"};

typedef struct stage {
    int status; /* 0 not run, 1 passed, -1 failed */
    char detail[320];
} stage;

/* The stage a parser message belongs to. The parser checks everything in one call and reports only
   a message, so this reads its wording; an unknown message is charged to the first stage the tool
   does not check itself (META). */
static int classify(const char *m) {
    if (!strncmp(m, "utg.plan.layers[", 16)) return ST_MODEL;
    if (!strncmp(m, "META", 4)) return ST_META;
    if (!strncmp(m, "DATA", 4)) return ST_PLANES;
    if (!strncmp(m, "TENS", 4) || !strncmp(m, "tensor record", 13)) return ST_TENS;
    if (!strncmp(m, "planes of", 9)) return ST_PLANES;
    if (!strncmp(m, "tensor ", 7)) {
        if (strstr(m, "symbol") || strstr(m, "not finite")) return ST_SYMBOLS;
        if ((strstr(m, "plane") && !strstr(m, "plane too large")) || strstr(m, "scale offset"))
            return ST_PLANES;
        return ST_TENS;
    }
    if (strstr(m, "CRC") || strstr(m, "decode") || strstr(m, "out of memory for a")) return ST_DECODE;
    if (!strncmp(m, "section", 7) || !strncmp(m, "payload", 7) || !strncmp(m, "padding", 7) ||
        !strncmp(m, "critical section", 16))
        return ST_DIRECTORY;
    if (!strncmp(m, "artifact", 8) || !strncmp(m, "not a UTGA", 10)) return ST_ENVELOPE;
    return ST_META;
}

/* The utg.plan.* keys against the model built from the META config: its physical blocks, and the
   blocks of the plan at utg.plan.phase, in order. */
static int check_plan_keys(const utg_artifact *a, utg_model *m, char *detail, size_t cap) {
    int kb = utg_artifact_find_kv(a, "utg.plan.physical_blocks"),
        kl = utg_artifact_find_kv(a, "utg.plan.layers");
    const utg_plan *p = utg_model_plan(m);
    uint32_t i;
    if (kb >= 0 && a->kv[kb].u != (uint64_t)utg_model_physical_blocks(m)) {
        snprintf(detail, cap, "utg.plan.physical_blocks says %llu, the META config builds %d",
                 (unsigned long long)a->kv[kb].u, utg_model_physical_blocks(m));
        return 0;
    }
    if (kl < 0) return 1;
    if (a->kv[kl].count != (uint32_t)p->n_layers) {
        snprintf(detail, cap,
                 "utg.plan.layers has %u entries, the plan at utg.plan.phase has %d virtual layers",
                 a->kv[kl].count, p->n_layers);
        return 0;
    }
    for (i = 0; i < a->kv[kl].count; i++)
        if (utg_artifact_kv_u32(&a->kv[kl], i) != (uint32_t)p->layers[i].block) {
            snprintf(detail, cap, "utg.plan.layers[%u] = %u, the plan runs block %d there", i,
                     utg_artifact_kv_u32(&a->kv[kl], i), p->layers[i].block);
            return 0;
        }
    return 1;
}

/* Builds a model from the META config and loads the artifact into it: every tensor present with the
   shape the config gives, the schedule in range, the utg.plan.* keys those of the model. The config's
   tensor and parameter counts are compared with TENS before the model is allocated. Also compares
   utg.model.params with the tensors. */
static int check_model(const utg_artifact *a, char *detail, size_t cap) {
    utg_model *m = NULL;
    totals s = count_totals(a);
    char plan[256];
    int k = utg_artifact_find_kv(a, "utg.model.params"), ok = 0;
    if (k >= 0 && a->kv[k].type == UTG_KV_U64 && a->kv[k].u != s.params) {
        snprintf(detail, cap, "utg.model.params says %llu, the tensors hold %llu",
                 (unsigned long long)a->kv[k].u, (unsigned long long)s.params);
        return 0;
    }
    if (utg_model_create_from_artifact(a, NULL, &m) != UTG_OK)
        snprintf(detail, cap, "%s", utg_model_message(m));
    else if (check_plan_keys(a, m, detail, cap)) {
        utg_plan_describe(utg_model_plan(m), plan, sizeof plan);
        snprintf(detail, cap,
                 "the META config builds the model and every tensor loads (%d physical blocks, %.200s)",
                 utg_model_physical_blocks(m), plan);
        ok = 1;
    }
    utg_model_destroy(m);
    return ok;
}

static void stage_pass(stage *st, int k, const char *detail) {
    st[k].status = 1;
    snprintf(st[k].detail, sizeof st[k].detail, "%s", detail);
}
static int stage_fail(stage *st, int k, const char *msg) {
    int j;
    for (j = k; j < ST_COUNT; j++) st[j].status = 0;
    st[k].status = -1;
    snprintf(st[k].detail, sizeof st[k].detail, "%s", msg);
    return k;
}

/* The parser's verdict split into the stages it covers (META .. symbols and scales). */
static void pass_parsed_stages(const utg_artifact *a, stage *st) {
    char d[320];
    int i, nq = 0, ns = 0, np = 0;
    size_t n_scales = 0;
    for (i = 0; i < a->n_tensors; i++) {
        const utg_artifact_tensor *t = &a->tensors[i];
        np++;
        if (t->scales_size) { ns++; n_scales += t->n_scales; }
        if (t->dtype == UTG_DT_Q) nq++;
    }
    snprintf(d, sizeof d, "%d keys: syntax, types, no duplicates, the required keys", a->n_kv);
    stage_pass(st, ST_META, d);
    snprintf(d, sizeof d, "%d tensors: names, dtypes, bit widths, scale kinds, shapes", a->n_tensors);
    stage_pass(st, ST_TENS, d);
    snprintf(d, sizeof d,
             "%d value and %d scale planes inside DATA (%s bytes): aligned, exact sizes, no overlap", np, ns,
             num(a->data_size));
    stage_pass(st, ST_PLANES, d);
    snprintf(d, sizeof d, "%d Q tensors: symbols within +-(2^(bits-1) - 1), %s scales finite", nq,
             num(n_scales));
    stage_pass(st, ST_SYMBOLS, d);
}

/* Runs every stage; returns the index of the failed one, or -1. */
static int verify(const artifact_file *f, stage *st) {
    envelope e;
    uint8_t *pay = NULL;
    utg_artifact *a = NULL;
    utg_msg msg;
    char m[320];
    int n_sections = 0, failed = -1;
    memset(st, 0, sizeof(stage) * ST_COUNT);
    memset(&msg, 0, sizeof msg);
    if (f->not_artifact[0]) return stage_fail(st, ST_ENVELOPE, f->not_artifact);
    if (!check_envelope(f->bytes, f->size, &e, m, sizeof m)) return stage_fail(st, ST_ENVELOPE, m);
    snprintf(m, sizeof m, "UTGA %d, codec %s, %s packed bytes for %s", e.major, codec_name(e.codec),
             num(e.packed), num(e.raw));
    stage_pass(st, ST_ENVELOPE, m);
    if (!decode_payload(f->bytes, &e, &pay, m, sizeof m)) return stage_fail(st, ST_DECODE, m);
    snprintf(m, sizeof m, "%s bytes, CRC-32 %08x matches", num(e.raw), e.crc);
    stage_pass(st, ST_DECODE, m);
    if (!check_directory(pay, e.raw, &n_sections, m, sizeof m)) failed = stage_fail(st, ST_DIRECTORY, m);
    free(pay);
    if (failed >= 0) return failed;
    snprintf(m, sizeof m, "%d sections tile the payload; META, TENS and DATA critical", n_sections);
    stage_pass(st, ST_DIRECTORY, m);
    if (utg_artifact_parse(f->bytes, f->size, NULL, NULL, &a, &msg) != UTG_OK) {
        int k = classify(msg.text), j;
        for (j = ST_META; j < k; j++) stage_pass(st, j, "checked by the parser before the failure");
        return stage_fail(st, k, msg.text);
    }
    pass_parsed_stages(a, st);
    if (check_model(a, m, sizeof m)) stage_pass(st, ST_MODEL, m);
    else failed = stage_fail(st, ST_MODEL, m);
    utg_artifact_free(a);
    return failed;
}

static int run_verify(const artifact_file *f, int json) {
    stage st[ST_COUNT];
    int failed = verify(f, st), k;
    if (json) {
        printf("{\n  \"file\": ");
        put_json(stdout, f->path);
        printf(",\n  \"ok\": %s,\n  \"stages\": [", failed < 0 ? "true" : "false");
        for (k = 0; k < ST_COUNT; k++) {
            printf("%s\n    {\"stage\": \"%s\", \"status\": \"%s\", \"detail\": ", k ? "," : "",
                   stage_names[k],
                   st[k].status > 0   ? "passed"
                   : st[k].status < 0 ? "failed"
                                      : "not run");
            put_json(stdout, st[k].detail);
            putchar('}');
        }
        printf("\n  ]\n}\n");
    } else {
        printf("verify ");
        put_escaped_str(stdout, f->path);
        putchar('\n');
        for (k = 0; k < ST_COUNT; k++) {
            printf("  %-5s %-19s ",
                   st[k].status > 0   ? "ok"
                   : st[k].status < 0 ? "FAIL"
                                      : "-",
                   stage_names[k]);
            put_escaped_str(stdout, st[k].status ? st[k].detail : "not run");
            putchar('\n');
        }
        if (failed < 0) printf("all %d stages passed\n", ST_COUNT);
        else printf("FAILED at %s\n", stage_names[failed]);
    }
    if (failed < 0) return 0;
    fprintf(stderr, "utg-inspect: ");
    put_escaped_str(stderr, f->path);
    fprintf(stderr, ": %s: ", stage_names[failed]);
    put_escaped_str(stderr, st[failed].detail);
    fputc('\n', stderr);
    return 1;
}

/* ---- --budget ---- */

enum { G_EMBED, G_ATTN, G_MLP, G_OTHER, G_FLOAT, G_SCALES, G_OVERHEAD, G_ANCILLARY, G_COUNT };
static const char *const group_names[G_COUNT] = {
    "embedding",          "attention",         "MLP", "other matrices", "float/control tensors", "scales",
    "container overhead", "ancillary sections"};
static const char *const group_colors[G_COUNT] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                                  "#59a14f", "#edc948", "#b07aa1", "#ff9da7"};
#define CODE_COLOR "#9c755f"

typedef struct group {
    int planes;
    uint64_t raw;   /* payload bytes */
    uint64_t alone; /* the planes compressed one by one */
    uint64_t bytes; /* the share of the real file */
} group;

typedef struct plane {
    const uint8_t *p;
    size_t n, alone;
    int group;
} plane;

typedef struct budget {
    group g[G_COUNT];
    uint64_t artifact, total;
    long long code; /* -1: not given */
    int exact;      /* stored codec: the split is exact */
    const char *codec;
} budget;

/* Which group a tensor's values count in, by its utgolf name: every matrix is a "*.weight" (kept
   float or quantized), the control tensors (scales, mixes, gains, skip weights) are not. */
static int tensor_group(const utg_artifact_tensor *t) {
    size_t n = strlen(t->name);
    int matrix = t->dtype == UTG_DT_Q || (n > 7 && !strcmp(t->name + n - 7, ".weight"));
    if (!strncmp(t->name, "tok_emb.", 8) || !strncmp(t->name, "lm_head.", 8)) return G_EMBED;
    if (!matrix) return G_FLOAT;
    if (strstr(t->name, "attn")) return G_ATTN;
    if (strstr(t->name, "mlp")) return G_MLP;
    return G_OTHER;
}

/* Every stretch of the decoded payload as a plane: tensor values and scales (as stored, shuffled),
   each ancillary section, and one plane of everything else (header, directory, META, TENS, padding).
   `rest` receives that last plane's bytes (caller frees). Returns the count, 0 when out of memory. */
static int collect_planes(const utg_artifact *a, const uint8_t *pay, plane *pl, uint8_t **rest) {
    uint8_t *used = (uint8_t *)calloc(a->raw_size, 1), *r;
    size_t j, o = 0;
    int i, n = 0;
    *rest = NULL;
    if (!used) return 0;
    for (i = 0; i < a->n_tensors; i++) {
        const utg_artifact_tensor *t = &a->tensors[i];
        size_t vo = a->data_offset + t->values_offset, so = a->data_offset + t->scales_offset;
        pl[n].p = pay + vo; pl[n].n = t->values_size; pl[n].group = tensor_group(t); n++;
        memset(used + vo, 1, t->values_size);
        if (!t->scales_size) continue;
        pl[n].p = pay + so; pl[n].n = t->scales_size; pl[n].group = G_SCALES; n++;
        memset(used + so, 1, t->scales_size);
    }
    for (i = 0; i < a->n_sections; i++) {
        const utg_artifact_section *s = &a->sections[i];
        if (s->flags & 1u) continue;
        pl[n].p = pay + s->offset; pl[n].n = s->size; pl[n].group = G_ANCILLARY; n++;
        memset(used + s->offset, 1, s->size);
    }
    r = (uint8_t *)malloc(a->raw_size);
    if (r) for (j = 0; j < a->raw_size; j++) if (!used[j]) r[o++] = pay[j];
    free(used);
    if (!r) return 0;
    pl[n].p = r; pl[n].n = o; pl[n].group = G_OVERHEAD; n++;
    *rest = r;
    return n;
}

/* Each plane compressed alone; a plane the codec cannot pack counts its raw size. */
static void compress_planes(const utg_codec *c, plane *pl, int n) {
    int i;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (i = 0; i < n; i++) {
        size_t cap = c->max_packed(pl[i].n, c->user), got;
        uint8_t *dst;
        if (cap < pl[i].n / 2) cap = pl[i].n + (pl[i].n >> 2) + 1024;
        dst = (uint8_t *)malloc(cap ? cap : 1);
        got = cap;
        pl[i].alone = pl[i].n;
        if (dst && c->compress(pl[i].p, pl[i].n, dst, &got, c->user) == UTG_OK && got <= cap)
            pl[i].alone = got;
        free(dst);
    }
}

/* Splits `target` bytes in proportion to each group's alone-compressed size, in integers: the
   largest-remainder rounding makes the shares add up to target exactly. Both factors are below 2^32
   (u32 sizes), so the products fit. */
static void attribute(group *g, uint64_t target) {
    uint64_t sum = 0, given = 0, rem[G_COUNT];
    int k, used[G_COUNT];
    int shift = 0;
    for (k = 0; k < G_COUNT; k++) sum += g[k].alone;
    while (sum >> (32 + shift)) shift++; /* only past a 4 GiB payload (a raised UTG_MAX_ARTIFACT_RAW) */
    sum >>= shift;
    if (!sum) { g[G_OVERHEAD].bytes = target; return; }
    for (k = 0; k < G_COUNT; k++) {
        g[k].bytes = (g[k].alone >> shift) * target / sum;
        rem[k] = (g[k].alone >> shift) * target % sum;
        used[k] = 0;
        given += g[k].bytes;
    }
    while (given < target) { /* fewer than G_COUNT rounds */
        int best = -1;
        for (k = 0; k < G_COUNT; k++) if (!used[k] && (best < 0 || rem[k] > rem[best])) best = k;
        if (best < 0) best = G_OVERHEAD;
        else used[best] = 1;
        g[best].bytes++;
        given++;
    }
}

/* Decodes the payload again (the parsed one has its planes unshuffled in place) and splits the file
   into groups. Returns 0, or 1 after a message. */
static int compute_budget(const artifact_file *f, budget *b) {
    const utg_artifact *a = f->a;
    envelope e;
    utg_codec c;
    uint8_t *pay = NULL, *rest = NULL;
    plane *pl;
    char m[320];
    int n, i;
    memset(b, 0, sizeof *b);
    if (!check_envelope(f->bytes, f->size, &e, m, sizeof m) ||
        !decode_payload(f->bytes, &e, &pay, m, sizeof m))
        return fail_file(f->path, m);
    utg_codec_for_id(a->codec, &c);
    pl = (plane *)calloc((size_t)a->n_tensors * 2 + UTG_ARTIFACT_MAX_SECTIONS + 1, sizeof *pl);
    n = pl ? collect_planes(a, pay, pl, &rest) : 0;
    if (!n) { free(pl); free(pay); return fail_file(f->path, "out of memory"); }
    compress_planes(&c, pl, n);
    for (i = 0; i < n; i++) {
        group *g = &b->g[pl[i].group];
        if (pl[i].group != G_OVERHEAD) g->planes++;
        g->raw += pl[i].n;
        g->alone += pl[i].alone;
    }
    attribute(b->g, a->packed_size);
    b->g[G_OVERHEAD].bytes += UTG_ARTIFACT_ENVELOPE;
    b->artifact = f->size;
    b->exact = a->codec == UTG_CODEC_STORED;
    b->codec = codec_name(a->codec);
    free(rest);
    free(pl);
    free(pay);
    return 0;
}

static int utf8_terminal(void) {
    const char *v[3];
    int k;
    v[0] = getenv("LC_ALL"); v[1] = getenv("LC_CTYPE"); v[2] = getenv("LANG");
    for (k = 0; k < 3; k++)
        if (v[k] && v[k][0])
            return strstr(v[k], "UTF-8") || strstr(v[k], "utf-8") || strstr(v[k], "UTF8") ||
                   strstr(v[k], "utf8");
    return 0;
}

/* A bar of `cols` columns filled to fraction x, in eighths of a block with UTF-8, else '#', after
   `lead` (printed only when there is something to draw); `track` draws the unfilled part (light
   shade, or '.'). */
static void put_bar(const char *lead, double x, int cols, int utf8, int track) {
    static const char *const eighths[8] = {"",
                                           "\xe2\x96\x8f",
                                           "\xe2\x96\x8e",
                                           "\xe2\x96\x8d",
                                           "\xe2\x96\x8c",
                                           "\xe2\x96\x8b",
                                           "\xe2\x96\x8a",
                                           "\xe2\x96\x89"};
    long units = (long)floor((x < 0 ? 0 : x > 1 ? 1 : x) * cols * (utf8 ? 8 : 1) + 0.5), k;
    int used = 0;
    if (units || track) fputs(lead, stdout);
    for (k = 0; k < units / (utf8 ? 8 : 1); k++, used++) fputs(utf8 ? "\xe2\x96\x88" : "#", stdout);
    if (utf8 && units % 8) { fputs(eighths[units % 8], stdout); used++; }
    if (track) for (; used < cols; used++) fputs(utf8 ? "\xe2\x96\x91" : ".", stdout);
}

static void show_budget(const artifact_file *f, const budget *b) {
    uint64_t maxg = 1, raw = 0, planes = 0;
    int k, utf8 = utf8_terminal();
    long long headroom = (long long)UTG_PARAM_GOLF_BUDGET - (long long)b->total;
    for (k = 0; k < G_COUNT; k++) {
        if (b->g[k].bytes > maxg) maxg = b->g[k].bytes;
        raw += b->g[k].raw;
        planes += (uint64_t)b->g[k].planes;
    }
    printf("budget ");
    put_escaped_str(stdout, f->path);
    printf(" against %s bytes (Parameter Golf: artifact + code, decimal bytes)\n",
           num(UTG_PARAM_GOLF_BUDGET));
    if (b->exact) printf("exact: the stored codec keeps every payload byte as it is\n");
    else
        printf(
            "approximate, the real stream shares context: each plane compressed alone with %s,\nscaled to the real %s packed bytes\n",
            b->codec, num(f->a->packed_size));
    printf("\n  %-22s %6s %12s %12s %7s\n", "group", "planes", "raw bytes", "bytes", "share");
    for (k = 0; k < G_COUNT; k++) {
        const group *g = &b->g[k];
        printf("  %-22s %6s %12s %12s %6.1f%%", group_names[k],
               k == G_OVERHEAD ? "-" : num((uint64_t)g->planes), num(g->raw), num(g->bytes),
               percent((double)g->bytes, (double)b->artifact));
        put_bar("  ", (double)g->bytes / (double)maxg, BAR_COLUMNS, utf8, 0);
        putchar('\n');
    }
    printf("  %-22s %6s %12s %12s %6.1f%%\n", "artifact", num(planes), num(raw), num(b->artifact), 100.0);
    if (b->code >= 0)
        printf("  %-22s %6s %12s %12s\n", "code (--code-bytes)", "", "", num((uint64_t)b->code));
    printf("  %-22s %6s %12s %12s %6.2f%% of %s\n", "total", "", "", num(b->total),
           percent((double)b->total, UTG_PARAM_GOLF_BUDGET), num(UTG_PARAM_GOLF_BUDGET));
    if (headroom >= 0) printf("  %-22s %6s %12s %12s\n", "headroom", "", "", num((uint64_t)headroom));
    else printf("  %-22s %6s %12s %12s  OVER THE BUDGET\n", "over by", "", "", num((uint64_t)-headroom));
    printf("\n  budget");
    put_bar(" [", (double)b->total / UTG_PARAM_GOLF_BUDGET, BUDGET_BAR_COLUMNS, utf8, 1);
    printf("] %.2f%% used\n", percent((double)b->total, UTG_PARAM_GOLF_BUDGET));
}

static void json_budget(const artifact_file *f, const budget *b) {
    int k;
    printf("{\n  \"file\": ");
    put_json(stdout, f->path);
    printf(
        ",\n  \"budget_bytes\": %d,\n  \"codec\": \"%s\",\n  \"approximate\": %s,\n  \"artifact_bytes\": %llu,\n  \"code_bytes\": %lld,\n"
        "  \"total_bytes\": %llu,\n  \"headroom_bytes\": %lld,\n  \"groups\": [",
        UTG_PARAM_GOLF_BUDGET, b->codec, b->exact ? "false" : "true", (unsigned long long)b->artifact,
        b->code >= 0 ? b->code : 0, (unsigned long long)b->total,
        (long long)UTG_PARAM_GOLF_BUDGET - (long long)b->total);
    for (k = 0; k < G_COUNT; k++)
        printf(
            "%s\n    {\"group\": \"%s\", \"planes\": %d, \"raw_bytes\": %llu, \"alone_bytes\": %llu, \"bytes\": %llu}",
            k ? "," : "", group_names[k], b->g[k].planes, (unsigned long long)b->g[k].raw,
            (unsigned long long)b->g[k].alone, (unsigned long long)b->g[k].bytes);
    printf("\n  ]\n}\n");
}

/* ---- the SVG chart ---- */

static void svg_text(FILE *s, double x, double y, const char *anchor, const char *style, const char *text) {
    fprintf(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, style);
    put_xml(s, text);
    fputs("</text>\n", s);
}

/* One bar per group (widths proportional to the largest), then the artifact and the code stacked
   against the budget, the rest drawn as headroom. */
static void svg_body(FILE *s, const artifact_file *f, const budget *b) {
    const double W = 800, label_w = 200, bar_x = 216, bar_w = 440, row = 28, top = 78;
    const char *base = strrchr(f->path, '/');
    uint64_t maxg = 1;
    double y, x, scale, stack_w = W - bar_x - 24;
    char t[256];
    int k, H = (int)(top + G_COUNT * row + 130);
    for (k = 0; k < G_COUNT; k++) if (b->g[k].bytes > maxg) maxg = b->g[k].bytes;
    fprintf(
        s,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%d\" viewBox=\"0 0 %.0f %d\" "
        "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n",
        W, H, W, H);
    snprintf(t, sizeof t, "%s: where the bytes go", base ? base + 1 : f->path);
    fputs("<title>", s); put_xml(s, t); fputs("</title>\n", s);
    fprintf(s, "<rect width=\"%.0f\" height=\"%d\" fill=\"#ffffff\"/>\n", W, H);
    svg_text(s, 16, 30, "start", " font-size=\"18\" font-weight=\"bold\"", t);
    if (b->exact) snprintf(t, sizeof t, "bytes by tensor group (exact: stored codec)");
    else
        snprintf(
            t, sizeof t,
            "bytes by tensor group, approximate: each plane compressed alone with %s, scaled to the real size",
            b->codec);
    svg_text(s, 16, 52, "start", " fill=\"#555555\"", t);
    for (k = 0; k < G_COUNT; k++) {
        double w = bar_w * (double)b->g[k].bytes / (double)maxg;
        y = top + k * row;
        svg_text(s, label_w, y + 14, "end", "", group_names[k]);
        fprintf(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"18\" rx=\"2\" fill=\"%s\"/>\n", bar_x,
                y, w, group_colors[k]);
        snprintf(t, sizeof t, "%s (%.1f%%)", num(b->g[k].bytes),
                 percent((double)b->g[k].bytes, (double)b->artifact));
        svg_text(s, bar_x + w + 6, y + 14, "start", " fill=\"#333333\"", t);
    }
    y = top + G_COUNT * row + 24;
    scale = stack_w / (double)(b->total > UTG_PARAM_GOLF_BUDGET ? b->total : UTG_PARAM_GOLF_BUDGET);
    svg_text(s, label_w, y + 20, "end", " font-weight=\"bold\"", "budget");
    fprintf(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"28\" fill=\"#e8e8e8\"/>\n", bar_x, y,
            UTG_PARAM_GOLF_BUDGET * scale);
    for (k = 0, x = bar_x; k <= G_COUNT; k++) { /* the groups, then the code */
        double w = (k < G_COUNT ? (double)b->g[k].bytes : (double)(b->code > 0 ? b->code : 0)) * scale;
        fprintf(s, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"28\" fill=\"%s\"/>\n", x, y, w,
                k < G_COUNT ? group_colors[k] : CODE_COLOR);
        x += w;
    }
    fprintf(s,
            "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#c00000\" stroke-width=\"2\"/>\n",
            bar_x + UTG_PARAM_GOLF_BUDGET * scale, y - 6, bar_x + UTG_PARAM_GOLF_BUDGET * scale, y + 34);
    if (b->code >= 0)
        snprintf(t, sizeof t, "artifact %s + code %s = %s of %s bytes (%.2f%%)", num(b->artifact),
                 num((uint64_t)b->code), num(b->total), num(UTG_PARAM_GOLF_BUDGET),
                 percent((double)b->total, UTG_PARAM_GOLF_BUDGET));
    else
        snprintf(t, sizeof t, "artifact %s of %s bytes (%.2f%%)", num(b->artifact),
                 num(UTG_PARAM_GOLF_BUDGET), percent((double)b->total, UTG_PARAM_GOLF_BUDGET));
    svg_text(s, bar_x, y + 50, "start", "", t);
    if (b->code >= 0) { /* the code's colour is in no group row */
        fprintf(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", W - 80, y + 40,
                CODE_COLOR);
        svg_text(s, W - 62, y + 50, "start", "", "code");
    }
    if (b->total <= UTG_PARAM_GOLF_BUDGET)
        snprintf(t, sizeof t, "headroom %s bytes", num(UTG_PARAM_GOLF_BUDGET - b->total));
    else snprintf(t, sizeof t, "over the budget by %s bytes", num(b->total - UTG_PARAM_GOLF_BUDGET));
    svg_text(s, bar_x, y + 70, "start",
             b->total <= UTG_PARAM_GOLF_BUDGET ? " fill=\"#555555\""
                                               : " fill=\"#c00000\" font-weight=\"bold\"",
             t);
    fputs("</svg>\n", s);
}

/* Returns 0, or 1 after a message (a partial file is removed). */
static int write_svg(const char *path, const artifact_file *f, const budget *b) {
    FILE *s = fopen(path, "w");
    int ok;
    if (!s) return fail_file(path, "cannot create the SVG file");
    svg_body(s, f, b);
    ok = !ferror(s);
    ok = (fclose(s) == 0) && ok;
    if (!ok) { remove(path); return fail_file(path, "cannot write the SVG file"); }
    return 0;
}

static int run_budget(const artifact_file *f, const options *o) {
    budget b;
    if (compute_budget(f, &b)) return 1;
    b.code = o->code_bytes;
    b.total = b.artifact + (uint64_t)(b.code > 0 ? b.code : 0);
    if (o->json) json_budget(f, &b);
    else show_budget(f, &b);
    if (o->svg_out && write_svg(o->svg_out, f, &b)) return 1;
    if (o->svg_out && !o->json) { printf("  chart: "); put_escaped_str(stdout, o->svg_out); putchar('\n'); }
    return b.total > UTG_PARAM_GOLF_BUDGET;
}

/* ---- --strip ---- */

static utg_result add_kv_copy(utg_artifact_writer *w, const utg_artifact_kv *kv) {
    uint32_t u32 = (uint32_t)kv->u, i;
    int32_t i32 = (int32_t)kv->i;
    uint64_t u64 = kv->u;
    float f32 = (float)kv->f;
    double f64 = kv->f;
    uint32_t *arr;
    utg_result r;
    switch (kv->type) {
    case UTG_KV_U32: return utg_artifact_add_kv(w, kv->key, kv->type, &u32, 1);
    case UTG_KV_I32: return utg_artifact_add_kv(w, kv->key, kv->type, &i32, 1);
    case UTG_KV_U64: return utg_artifact_add_kv(w, kv->key, kv->type, &u64, 1);
    case UTG_KV_F32: return utg_artifact_add_kv(w, kv->key, kv->type, &f32, 1);
    case UTG_KV_F64: return utg_artifact_add_kv(w, kv->key, kv->type, &f64, 1);
    case UTG_KV_STR: return utg_artifact_add_kv(w, kv->key, kv->type, kv->str, kv->count);
    case UTG_KV_U32_ARRAY: case UTG_KV_F32_ARRAY:
        arr = (uint32_t *)malloc(sizeof *arr * (kv->count ? kv->count : 1));
        if (!arr) return UTG_ERR_NOMEM;
        for (i = 0; i < kv->count; i++) {
            if (kv->type == UTG_KV_U32_ARRAY) arr[i] = utg_artifact_kv_u32(kv, i);
            else { float v = utg_artifact_kv_f32(kv, i); memcpy(&arr[i], &v, 4); }
        }
        r = utg_artifact_add_kv(w, kv->key, kv->type, arr, kv->count);
        free(arr);
        return r;
    }
    return UTG_ERR_INVALID;
}

/* Same META (keys, types, stored bytes) and tensors (description, symbols, scales) in both. */
static int same_content(const utg_artifact *x, const utg_artifact *y, char *why, size_t cap) {
    int i, d;
    if (x->n_kv != y->n_kv || x->n_tensors != y->n_tensors) {
        snprintf(why, cap, "the copy holds %d keys and %d tensors, not %d and %d", y->n_kv, y->n_tensors,
                 x->n_kv, x->n_tensors);
        return 0;
    }
    for (i = 0; i < x->n_kv; i++) {
        const utg_artifact_kv *a = &x->kv[i], *b = &y->kv[i];
        if (strcmp(a->key, b->key) || a->type != b->type || a->count != b->count ||
            memcmp(a->data, b->data, (size_t)a->count * kv_elem_bytes(a->type))) {
            snprintf(why, cap, "META key %s differs in the copy", a->key);
            return 0;
        }
    }
    for (i = 0; i < x->n_tensors; i++) {
        const utg_artifact_tensor *a = &x->tensors[i], *b = &y->tensors[i];
        int same = !strcmp(a->name, b->name) && a->dtype == b->dtype && a->qbits == b->qbits &&
                   a->scale_kind == b->scale_kind && a->group == b->group && a->ndim == b->ndim &&
                   a->values_size == b->values_size && a->scales_size == b->scales_size;
        for (d = 0; same && d < a->ndim; d++) same = a->dims[d] == b->dims[d];
        same = same && !memcmp(a->values, b->values, a->values_size) &&
               (!a->scales_size || !memcmp(a->scales, b->scales, a->scales_size));
        if (!same) { snprintf(why, cap, "tensor %s differs in the copy", a->name); return 0; }
    }
    return 1;
}

/* The artifact re-written through the writer: every key and tensor, no ancillary section. */
static int rewrite(const utg_artifact *a, void **out, size_t *out_size, size_t *raw, char *why, size_t cap) {
    utg_artifact_writer *w = NULL;
    utg_codec c;
    int i, ok = 0;
    utg_codec_for_id(a->codec, &c);
    if (utg_artifact_writer_create(NULL, &w) != UTG_OK) { snprintf(why, cap, "out of memory"); return 0; }
    for (i = 0; i < a->n_kv; i++)
        if (add_kv_copy(w, &a->kv[i]) != UTG_OK) {
            snprintf(why, cap, "META key %s: %.240s", a->kv[i].key, utg_artifact_writer_message(w));
            goto done;
        }
    for (i = 0; i < a->n_tensors; i++)
        if (utg_artifact_add_tensor(w, &a->tensors[i]) != UTG_OK) {
            snprintf(why, cap, "tensor %s: %.240s", a->tensors[i].name, utg_artifact_writer_message(w));
            goto done;
        }
    if (utg_artifact_write(w, &c, out, out_size, raw) != UTG_OK) {
        snprintf(why, cap, "%s", utg_artifact_writer_message(w));
        goto done;
    }
    ok = 1;
done:
    utg_artifact_writer_destroy(w);
    return ok;
}

static int run_strip(const artifact_file *f, const char *out_path) {
    const utg_artifact *a = f->a;
    utg_artifact *back = NULL;
    void *bytes = NULL;
    size_t size = 0, raw = 0;
    utg_msg msg;
    char why[320];
    int i, dropped = 0, rc = 1;
    memset(&msg, 0, sizeof msg);
    if (!rewrite(a, &bytes, &size, &raw, why, sizeof why)) return fail_file(f->path, why);
    if (utg_artifact_parse(bytes, size, NULL, NULL, &back, &msg) != UTG_OK) {
        snprintf(why, sizeof why, "the stripped copy does not parse: %s", msg.text);
        fail_file(f->path, why);
        goto done;
    }
    if (!same_content(a, back, why, sizeof why)) { fail_file(f->path, why); goto done; }
    if (utg_write_file(out_path, bytes, size, &msg) != UTG_OK) { fail_file(out_path, msg.text); goto done; }
    printf("strip ");
    put_escaped_str(stdout, f->path);
    printf(" -> ");
    put_escaped_str(stdout, out_path);
    printf(" (%s)\n", codec_name(a->codec));
    for (i = 0; i < a->n_sections; i++) {
        if (a->sections[i].flags & 1u) continue;
        printf("  dropped ");
        put_escaped_str(stdout, a->sections[i].tag);
        printf(" (ancillary, %s bytes)\n", num(a->sections[i].size));
        dropped++;
    }
    if (!dropped) printf("  no ancillary sections: the copy is the same content, re-encoded\n");
    if (a->minor != UTG_ARTIFACT_MINOR || (a->flags & 0xff00))
        printf("  written as format %d.%d without may-ignore flags\n", UTG_ARTIFACT_MAJOR,
               UTG_ARTIFACT_MINOR);
    printf("  old %s bytes, new %s bytes (%s%s); decoded payload %s -> %s bytes\n", num(f->size), num(size),
           size <= f->size ? "-" : "+", num(size <= f->size ? f->size - size : size - f->size),
           num(a->raw_size), num(raw));
    printf("  checked: the copy parses with the same %d META keys and %d tensors\n", a->n_kv, a->n_tensors);
    rc = 0;
done:
    utg_artifact_free(back);
    utg_free(NULL, bytes);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    artifact_file f;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (!read_artifact(o.path, &f, o.mode == MODE_VERIFY)) return 1;
    if (o.mode == MODE_VERIFY) rc = run_verify(&f, o.json);
    else if (!parse_artifact(&f)) rc = 1;
    else if (o.mode == MODE_BUDGET) rc = run_budget(&f, &o);
    else if (o.mode == MODE_STRIP) rc = run_strip(&f, o.strip_out);
    else rc = o.json ? run_json(&f) : run_show(&f);
    close_artifact(&f);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "utg-inspect: cannot write the output\n");
        return 1;
    }
    return rc;
}
