/* train.c: the standalone utgolf trainer, in one translation unit.

   It does what Parameter Golf's train_gpt.py does on one process: Muon + Adam, the warmdown LR
   schedule under a wallclock cap, periodic and final val_loss / val_bpb with the exact byte rule,
   then writes the weights. On top: checkpoints that resume bit-exactly, a JSONL metrics file, a
   progress bar on a terminal, and an SVG picture of the loss curves.

   Build:  cc -std=c99 -O3 -march=native -fopenmp -o train examples/train.c -lm
   Run:    ./train --help

   Knobs: defaults (train_gpt.py's) < --config FILE < environment < arguments. Arguments are
   KEY=VALUE, --KEY=VALUE or --KEY VALUE, where KEY is the environment name (NUM_LAYERS) or the
   field name, with '-' for '_' allowed (--num-layers 4). */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------- */
/* small utilities */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* An append-only text file (train.log, metrics.jsonl) written with write(2), whole lines per call,
   so that a failed write is known at once rather than at some later stdio flush. The first failure
   is kept; the trainer checks after every step and stops with it (sink_failed). */
typedef struct sink {
    int fd;
    const char *path;
    int err; /* errno of the first failed write, 0 while all went through */
} sink;

static sink g_log = {-1, NULL, 0}; /* out_dir/train.log */
static int g_progress_live;        /* a progress line is on the terminal */

static int sink_open(sink *s, const char *path, int truncate) {
    s->path = path;
    s->err = 0;
    s->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0), 0666);
    return s->fd >= 0;
}

static void sink_write(sink *s, const char *bytes, size_t n) {
    while (s->fd >= 0 && !s->err && n > 0) {
        ssize_t w = write(s->fd, bytes, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { s->err = w < 0 ? errno : EIO; break; }
        bytes += w;
        n -= (size_t)w;
    }
}

static void sink_printf(sink *s, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) sink_write(s, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* fsync and close; 0 when everything written reached the file */
static int sink_close(sink *s) {
    if (s->fd >= 0) {
        if (!s->err && fsync(s->fd) != 0) s->err = errno;
        if (close(s->fd) != 0 && !s->err) s->err = errno;
        s->fd = -1;
    }
    return s->err ? -1 : 0;
}

static void clear_progress(void) {
    if (g_progress_live) {
        fprintf(stderr, "\r\033[K");
        g_progress_live = 0;
    }
}

/* One line to the terminal (out) and to the log file. */
static void vlog(FILE *out, const char *prefix, const char *fmt, va_list ap) {
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    clear_progress();
    fflush(stdout);
    fprintf(out, "%s%s\n", prefix, buf);
    fflush(out);
    sink_printf(&g_log, "%s\n", buf);
}
/* Progress lines, as train_gpt.py's log0: stdout and the log file. */
static void logf_(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(stdout, "", fmt, ap);
    va_end(ap);
}
/* Failures: stderr (so they show when stdout is redirected) and the log file. */
static void errf_(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(stderr, "train: ", fmt, ap);
    va_end(ap);
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (s < 0 || !isfinite(s)) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static void progress(double frac, int step, double eta_s, double loss, double tok_s) {
    char eta[32];
    int width = 30, filled, i;
    if (frac < 0) frac = 0;
    if (frac > 1) frac = 1;
    filled = (int)(frac * width + 0.5);
    fmt_duration(eta, sizeof eta, eta_s);
    fprintf(stderr, "\r\033[K[");
    for (i = 0; i < width; i++) fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %3.0f%% step %d  loss %.4f  %.0f tok/s  ETA %s", 100 * frac, step, loss, tok_s, eta);
    fflush(stderr);
    g_progress_live = 1;
}

static int mkdir_p(const char *path) {
    char buf[4096];
    size_t i, n = strlen(path);
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
            buf[i] = c;
        }
    }
    return 0;
}

/* SIGINT (Ctrl-C) and SIGTERM (what schedulers send) both end the run after the current step, with
   a checkpoint; the exit status is 128 + the signal's number, as a shell reports a killed process. */
static volatile sig_atomic_t g_interrupted; /* the signal's number, 0 when none came */
static void on_stop_signal(int sig) { g_interrupted = sig; }

/* ---------------------------------------------------------------------------------------------- */
/* the loss-curve picture: an SVG line chart of train loss (every logged step) and val loss */

typedef struct curve {
    int n, cap;
    double *x, *y;
} curve;

/* Append a point, first dropping points at or after its step: a resumed run re-logs the steps
   after its checkpoint, and the later record wins. */
static void curve_put(curve *c, double x, double y) {
    while (c->n > 0 && c->x[c->n - 1] >= x) c->n--;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 256;
        double *nx = (double *)realloc(c->x, sizeof(double) * cap), *ny;
        if (!nx) return;
        c->x = nx;
        ny = (double *)realloc(c->y, sizeof(double) * cap);
        if (!ny) return;
        c->y = ny;
        c->cap = cap;
    }
    c->x[c->n] = x;
    c->y[c->n] = y;
    c->n++;
}

/* The curves of the whole run, resumes included, from metrics.jsonl (this program's own format). */
static void load_curves(const char *path, curve *train, curve *val, curve *plans) {
    char line[1024];
    FILE *f = fopen(path, "r");
    if (!f) return;
    train->n = val->n = plans->n = 0;
    while (fgets(line, sizeof line, f)) {
        const char *ps = strstr(line, "\"step\":"), *pt = strstr(line, "\"train_loss\":"), *pv = strstr(line, "\"val_loss\":");
        const char *pp = strstr(line, "\"virtual_layers\":");
        double st;
        if (!ps) continue;
        st = atof(ps + 7);
        if (pt) curve_put(train, st, atof(pt + 13));
        else if (pv) curve_put(val, st, atof(pv + 11));
        else if (pp) curve_put(plans, st, atof(pp + 17)); /* a depth-plan switch: step, virtual layers */
    }
    fclose(f);
}

static double nice_step(double range, int ticks) {
    double raw = range / ticks, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/* The picture is drawn into memory and written with utg_write_file: loss.svg is replaced whole or
   not at all. 0, or -1 with the reason in msg. */
static int write_svg(const char *path, const curve *train, const curve *val, const curve *plans, const char *title, utg_msg *msg) {
    const double W = 720, H = 420, L = 64, R = 20, T = 40, B = 50;
    double x0 = 0, x1 = 1, y0 = 1e300, y1 = -1e300, st;
    const curve *cs[2];
    const char *colors[2] = {"#1f77b4", "#d62728"}, *names[2] = {"train loss", "val loss"};
    FILE *f;
    char *svg = NULL;
    size_t svg_size = 0;
    int k, i, rc;
    cs[0] = train;
    cs[1] = val;
    for (k = 0; k < 2; k++)
        for (i = 0; i < cs[k]->n; i++)
            if (cs[k]->x[i] > x1) x1 = cs[k]->x[i];
    /* the y range leaves out the train loss of the first 2% of steps (the early transient would
       flatten everything else); points above the range are drawn at its top edge */
    for (k = 0; k < 2; k++)
        for (i = 0; i < cs[k]->n; i++) {
            if (k == 0 && cs[k]->x[i] < 0.02 * x1 && cs[k]->n > 50) continue;
            if (isfinite(cs[k]->y[i])) {
                if (cs[k]->y[i] < y0) y0 = cs[k]->y[i];
                if (cs[k]->y[i] > y1) y1 = cs[k]->y[i];
            }
        }
    if (y0 > y1) { y0 = 0; y1 = 1; }
    if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
    st = nice_step(y1 - y0, 6);
    y0 = floor(y0 / st) * st;
    y1 = ceil(y1 / st) * st;
    f = open_memstream(&svg, &svg_size);
    if (!f) { snprintf(msg->text, sizeof msg->text, "out of memory drawing '%.200s'", path); return -1; }
#define PX(v) (L + ((v) - x0) / (x1 - x0) * (W - L - R))
#define PY(v) (H - B - (((v) < y1 ? (v) : y1) - y0) / (y1 - y0) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"24\" font-size=\"15\">", L);
    for (i = 0; title[i]; i++) { /* escape the title */
        if (title[i] == '<') fputs("&lt;", f);
        else if (title[i] == '&') fputs("&amp;", f);
        else if (title[i] == '>') fputs("&gt;", f);
        else fputc(title[i], f);
    }
    fprintf(f, "</text>\n");
    for (i = 0; y0 + i * st <= y1 + st * 1e-9; i++) {
        double v = y0 + i * st;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", L, W - R, PY(v), PY(v));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", L - 6, PY(v) + 4, v);
    }
    st = nice_step(x1 - x0, 8);
    for (i = 0; x0 + i * st <= x1 + st * 1e-9; i++) {
        double v = x0 + i * st;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", PX(v), PX(v), T, H - B);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", PX(v), H - B + 16, v);
    }
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", L, T, W - L - R, H - T - B);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 12);
    fprintf(f, "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" text-anchor=\"middle\">loss (nats/token)</text>\n",
            (T + H - B) / 2, (T + H - B) / 2);
    for (k = 0; k < 2; k++) {
        if (cs[k]->n == 0) continue;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" points=\"", colors[k], k ? "2" : "1.2");
        for (i = 0; i < cs[k]->n; i++)
            if (isfinite(cs[k]->y[i])) fprintf(f, "%.1f,%.1f ", PX(cs[k]->x[i]), PY(cs[k]->y[i]));
        fprintf(f, "\"/>\n");
        if (k == 1)
            for (i = 0; i < cs[k]->n; i++)
                if (isfinite(cs[k]->y[i]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(cs[k]->x[i]), PY(cs[k]->y[i]), colors[k]);
        fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2\"/>", W - R - 130, W - R - 110,
                T + 16 + 18.0 * k, T + 16 + 18.0 * k, colors[k]);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n", W - R - 104, T + 20 + 18.0 * k, names[k]);
    }
    for (i = 0; i < plans->n; i++) { /* depth-plan switches: a dashed line, labelled with the new depth */
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"#2ca02c\" stroke-dasharray=\"5,4\"/>",
                PX(plans->x[i]), PX(plans->x[i]), T, H - B);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" fill=\"#2ca02c\">%.0f layers</text>\n", PX(plans->x[i]) + 4, T + 14, plans->y[i]);
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
    if (fclose(f) != 0 || !svg) { free(svg); snprintf(msg->text, sizeof msg->text, "out of memory drawing '%.200s'", path); return -1; }
    rc = utg_write_file(path, svg, svg_size, msg) == UTG_OK ? 0 : -1;
    free(svg);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* evaluation: disjoint windows (train_gpt.py's eval_val) or a sliding window with a stride */

typedef struct evaluator {
    const int32_t *tok; /* the validation stream */
    size_t n_tok;
    int seq_len, stride, batch_seqs;
    int32_t *x, *y;
    float *loss;
} evaluator;

/* Score positions [s0, s0+len) of rows of length `len` starting at `starts`: n rows, all of the same
   length, and add positions whose offset in the row is >= score_from to the accumulator. */
static utg_result eval_rows(utg_model *m, const utg_tokenizer *tk, evaluator *ev, const size_t *starts, int n,
                            int len, const int *score_from, utg_bpb *acc) {
    int r, i;
    double mean;
    utg_result res;
    for (r = 0; r < n; r++) {
        memcpy(ev->x + (size_t)r * len, ev->tok + starts[r], sizeof(int32_t) * len);
        memcpy(ev->y + (size_t)r * len, ev->tok + starts[r] + 1, sizeof(int32_t) * len);
    }
    res = utg_model_eval(m, ev->x, ev->y, n, len, ev->loss, &mean);
    if (res != UTG_OK) return res;
    for (r = 0; r < n; r++) {
        size_t o = (size_t)r * len + score_from[r];
        i = len - score_from[r];
        res = utg_bpb_add(acc, tk, ev->x + o, ev->y + o, ev->loss + o, (size_t)i);
        if (res != UTG_OK) return res;
    }
    return UTG_OK;
}

static utg_result evaluate(utg_model *m, const utg_tokenizer *tk, evaluator *ev, double *val_loss, double *val_bpb,
                           utg_msg *msg) {
    utg_bpb acc;
    size_t N = ev->n_tok - 1; /* scoreable targets */
    size_t *starts = (size_t *)malloc(sizeof(size_t) * ev->batch_seqs);
    int *from = (int *)malloc(sizeof(int) * ev->batch_seqs), n = 0;
    utg_result res = UTG_OK;
    int T = ev->seq_len;
    memset(&acc, 0, sizeof acc);
    if (!starts || !from) { free(starts); free(from); return UTG_ERR_NOMEM; }
    if (ev->stride <= 0) {
        /* disjoint rows of T over the stream truncated to whole rows, as train_gpt.py */
        size_t rows = N / T, s;
        for (s = 0; s < rows && res == UTG_OK; s++) {
            starts[n] = s * T;
            from[n] = 0;
            if (++n == ev->batch_seqs || s + 1 == rows) { res = eval_rows(m, tk, ev, starts, n, T, from, &acc); n = 0; }
        }
    } else {
        /* windows start every stride while ws + T - stride < N; the first scores every position,
           later ones their last `stride`; a window running past the stream is shortened */
        size_t ws;
        int S = ev->stride;
        for (ws = 0; ws + (size_t)(T - S) < N && res == UTG_OK; ws += (size_t)S) {
            size_t end = ws + (size_t)T < N ? ws + (size_t)T : N;
            int len = (int)(end - ws), sf = ws == 0 ? 0 : T - S;
            if (len < T) { /* shortened tail window: on its own */
                if (n) { res = eval_rows(m, tk, ev, starts, n, T, from, &acc); n = 0; }
                if (res == UTG_OK) {
                    starts[0] = ws;
                    from[0] = sf;
                    res = eval_rows(m, tk, ev, starts, 1, len, from, &acc);
                }
                continue;
            }
            starts[n] = ws;
            from[n] = sf;
            if (++n == ev->batch_seqs) { res = eval_rows(m, tk, ev, starts, n, T, from, &acc); n = 0; }
        }
        if (n && res == UTG_OK) res = eval_rows(m, tk, ev, starts, n, T, from, &acc);
    }
    free(starts);
    free(from);
    if (res != UTG_OK) {
        snprintf(msg->text, sizeof msg->text, "evaluation: %.200s", utg_model_message(m));
        return res;
    }
    *val_loss = utg_bpb_loss(&acc);
    *val_bpb = utg_bpb_value(&acc);
    return UTG_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* command line */

/* ---------------------------------------------------------------------------------------------- */
/* the artifact: calibrate -> quantize -> write -> reload -> evaluate, and the byte budget */

/* The code bytes a submission counts: each file raw, and the whole brotli-compressed then base85
   encoded, as the records' self-extracting wrappers ship it (5 characters per 4 bytes). */
static int count_code(const char *files, size_t *raw, size_t *wrapped, char *names, size_t names_n) {
    char list[1024], *p, *save = NULL;
    unsigned char *all = NULL;
    size_t n_all = 0;
    utg_codec br = utg_codec_brotli();
    *raw = *wrapped = 0;
    names[0] = 0;
    snprintf(list, sizeof list, "%s", files);
    for (p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        void *b;
        size_t n;
        utg_msg msg;
        unsigned char *grown;
        if (utg_read_file(p, (size_t)1 << 30, &b, &n, &msg) != UTG_OK) { errf_("code bytes: %s (set --code)", msg.text); free(all); return -1; }
        grown = (unsigned char *)realloc(all, n_all + n + 1);
        if (!grown) { free(b); free(all); return -1; }
        all = grown;
        memcpy(all + n_all, b, n);
        n_all += n;
        free(b);
        snprintf(names + strlen(names), names_n - strlen(names), "%s%s", names[0] ? ", " : "", p);
    }
    *raw = n_all;
    {
        size_t cap = br.max_packed(n_all, NULL), got = cap;
        unsigned char *out = (unsigned char *)malloc(cap ? cap : 1);
        if (!out || br.compress(all, n_all, out, &got, NULL) != UTG_OK) { free(out); free(all); return -1; }
        *wrapped = (got + 3) / 4 * 5;
        free(out);
    }
    free(all);
    return 0;
}

/* Hessians from GPTQ_CALIBRATION_BATCHES sequences of training data, self-generated text or
   uniform random tokens. */
static utg_hessians *calibrate(utg_model *m, utg_loader *loader, int micro_seqs, int32_t *bx, int32_t *by) {
    const utg_config *cfg = utg_model_config(m);
    utg_hessians *h = NULL;
    utg_msg msg;
    int T = cfg->train_seq_len, done = 0, b, s, t;
    double t0 = now_ms(), loss;
    uint64_t rs = 0x5eed0000u + (uint64_t)UTG__OFF0(cfg->seed);
    int32_t *gen = NULL;
    if (utg_hessians_create(m, &h) != UTG_OK) { errf_("gptq: %s", utg_model_message(m)); return NULL; }
    if (!strcmp(cfg->gptq_calibration, "self")) {
        gen = (int32_t *)malloc(sizeof(int32_t) * (size_t)micro_seqs * (size_t)(T + 1));
        if (!gen) { utg_hessians_destroy(h); return NULL; }
    }
    for (b = 0; done < cfg->gptq_calibration_batches; b++) {
        int n = cfg->gptq_calibration_batches - done < micro_seqs ? cfg->gptq_calibration_batches - done : micro_seqs;
        if (!strcmp(cfg->gptq_calibration, "train")) {
            if (utg_loader_next(loader, bx, by, n, &msg) != UTG_OK) { errf_("gptq calibration: %s", msg.text); goto fail; }
        } else if (!strcmp(cfg->gptq_calibration, "self")) {
            if (utg_model_generate(m, n, T + 1, cfg->gptq_selfgen_temperature, rs + (uint64_t)b, gen) != UTG_OK) { errf_("gptq: %s", utg_model_message(m)); goto fail; }
            for (s = 0; s < n; s++)
                for (t = 0; t < T; t++) { bx[s * T + t] = gen[s * (T + 1) + t]; by[s * T + t] = gen[s * (T + 1) + t + 1]; }
        } else {
            uint64_t x = rs + (uint64_t)b * 0x9e3779b97f4a7c15ull;
            for (s = 0; s < n * (T + 1); s++) {
                int v;
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                v = (int)((x >> 33) % (uint64_t)cfg->vocab_size);
                if (s % (T + 1) < T) bx[(s / (T + 1)) * T + s % (T + 1)] = v;
                if (s % (T + 1) > 0) by[(s / (T + 1)) * T + s % (T + 1) - 1] = v;
            }
        }
        if (utg_model_forward(m, bx, by, n, &loss) != UTG_OK || utg_hessians_accumulate(h) != UTG_OK) { errf_("gptq: %s", utg_model_message(m)); goto fail; }
        done += n;
    }
    logf_("gptq:calibration source:%s sequences:%d forwards:%d time:%.0fms", cfg->gptq_calibration, done, b, now_ms() - t0);
    free(gen);
    return h;
fail:
    free(gen);
    utg_hessians_destroy(h);
    return NULL;
}

static void describe_bits(utg_model *m, const utg_tensor_quant *plan, char *buf, size_t n) {
    static const char *groups[] = {"embed", "attn", "mlp", "other"};
    int g, i;
    buf[0] = 0;
    for (g = 0; g < 4; g++) {
        double bits = 0, numel = 0;
        int lo = 9, hi = 0;
        for (i = 0; i < utg_model_tensor_count(m); i++) {
            const utg_tensor_info *t = utg_model_tensor(m, i);
            int gi = t->role == UTG_ROLE_EMBED || t->role == UTG_ROLE_HEAD ? 0 : strstr(t->name, "attn") ? 1 : strstr(t->name, "mlp") ? 2 : 3;
            if (plan[i].dtype != UTG_DT_Q || gi != g) continue;
            bits += plan[i].bits * (double)t->numel;
            numel += (double)t->numel;
            if (plan[i].bits < lo) lo = plan[i].bits;
            if (plan[i].bits > hi) hi = plan[i].bits;
        }
        if (numel > 0)
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s:%.2f(%d..%d)", buf[0] ? " " : "", groups[g], bits / numel, lo, hi);
    }
}

static int finish_artifact(utg_model *m, utg_loader *loader, int micro_seqs, int32_t *bx, int32_t *by, const utg_tokenizer *tok,
                           evaluator *ev, double pre_loss, double pre_bpb, const char *path, const char *code_files, sink *metrics) {
    const utg_config *cfg = utg_model_config(m);
    utg_hessians *h = NULL;
    utg_tensor_quant *plan = NULL;
    utg_export_report rep;
    utg_codec codec = strcmp(cfg->compressor, "stored") ? utg_codec_brotli() : utg_codec_stored();
    utg_artifact *a = NULL;
    utg_model *m2 = NULL;
    utg_msg msg;
    void *bytes = NULL, *back = NULL;
    size_t size = 0, back_n = 0, code_raw = 0, code_wrapped = 0;
    int n = utg_model_tensor_count(m), rc = -1, round;
    double tq, q_loss = 0, q_bpb = 0;
    char names[1024], bits[256], prov[1024];
    if (count_code(code_files, &code_raw, &code_wrapped, names, sizeof names) != 0) return -1;
    tq = now_ms();
    if ((cfg->gptq_enabled > 0 || cfg->budget_mode > 0) && !(h = calibrate(m, loader, micro_seqs, bx, by))) return -1;
    plan = (utg_tensor_quant *)calloc((size_t)n, sizeof *plan);
    if (!plan) goto out;
    utg_model_quant_plan(m, h, plan, n);
    snprintf(prov, sizeof prov, "tool=utgolf %s train\nrun_id=%s\nseed=%d\nsteps_val_bpb=%.6f\nquant_clip=%s\ngptq=%d\ncodec=%s\n",
             utg_version(), cfg->run_id ? cfg->run_id : "", UTG__OFF0(cfg->seed), pre_bpb, cfg->quant_clip, cfg->gptq_enabled > 0, codec.name);
    if (cfg->budget_mode > 0) { /* bit widths chosen to fit: block matrices start at 8 bits and lose bits where it costs least */
        double target = (double)cfg->artifact_budget_bytes - (double)code_wrapped - 0.001 * cfg->artifact_budget_bytes, ratio;
        int i;
        for (i = 0; i < n; i++) if (plan[i].dtype == UTG_DT_Q && utg_model_tensor(m, i)->role == UTG_ROLE_MATRIX) plan[i].bits = 8;
        if (utg_model_export(m, h, &codec, prov, plan, &bytes, &size, &rep) != UTG_OK) { errf_("artifact: %s", utg_model_message(m)); goto out; }
        if ((double)rep.artifact_bytes <= target) logf_("budget_mode: everything at 8 bits fits the target of %.0f bytes (%zu)", target, rep.artifact_bytes);
        for (round = 1; round <= 4; round++) {
            /* replan while over the target, and once more when the first plan left more than 0.5%
               unused (the codec ratio measured at 8 bits overestimates lower widths) */
            double slack = target - (double)rep.artifact_bytes;
            if (slack >= 0 && (round > 2 || slack < 0.005 * target)) break;
            /* the codec's bytes per estimated byte (order-0 entropy of the symbols + scales + floats), measured */
            ratio = (double)rep.artifact_bytes / (rep.entropy_bytes + (double)rep.scale_bytes + (double)rep.float_bytes);
            for (i = 0; i < n; i++) if (plan[i].dtype == UTG_DT_Q && utg_model_tensor(m, i)->role == UTG_ROLE_MATRIX) plan[i].bits = 8;
            if (utg_model_budget_plan(m, h, plan, n, cfg->budget_min_bits, target, ratio) != UTG_OK) { errf_("budget_mode: %s", utg_model_message(m)); goto out; }
            utg_model_free_bytes(m, bytes);
            bytes = NULL;
            if (utg_model_export(m, h, &codec, prov, plan, &bytes, &size, &rep) != UTG_OK) { errf_("artifact: %s", utg_model_message(m)); goto out; }
            describe_bits(m, plan, bits, sizeof bits);
            logf_("budget_mode: round %d target:%.0f bytes (codec ratio %.3f) -> artifact:%zu bytes, bits %s", round, target, ratio, rep.artifact_bytes, bits);
            if ((double)rep.artifact_bytes > target) target -= (double)rep.artifact_bytes - target + 1000.0;
        }
        if ((double)rep.artifact_bytes + (double)code_wrapped > (double)cfg->artifact_budget_bytes) { errf_("budget_mode: could not fit %d bytes", cfg->artifact_budget_bytes); goto out; }
    } else if (utg_model_export(m, h, &codec, prov, plan, &bytes, &size, &rep) != UTG_OK) { errf_("artifact: %s", utg_model_message(m)); goto out; }
    if (utg_write_file(path, bytes, size, &msg) != UTG_OK) { errf_("artifact: %s", msg.text); goto out; }
    describe_bits(m, plan, bits, sizeof bits);
    logf_("quant: clip:%s gptq:%d bits %s; %d tensors quantized, %d kept float; weighted relative error %.3g; %.1fs",
          cfg->quant_clip, cfg->gptq_enabled > 0, bits, rep.n_quantized, rep.n_float, rep.weighted_err, (now_ms() - tq) / 1000.0);
    logf_("artifact: %s %zu bytes (%s; payload %zu: symbols %zu, order-0 entropy %.0f, scales %zu, floats %zu)", path, rep.artifact_bytes,
          codec.name, rep.raw_bytes, rep.symbol_bytes, rep.entropy_bytes, rep.scale_bytes, rep.float_bytes);
    logf_("budget: artifact %zu + code %zu (%s: %zu raw, brotli+base85) = %zu of %d bytes, headroom %lld%s", rep.artifact_bytes, code_wrapped, names,
          code_raw, rep.artifact_bytes + code_wrapped, cfg->artifact_budget_bytes,
          (long long)cfg->artifact_budget_bytes - (long long)(rep.artifact_bytes + code_wrapped),
          rep.artifact_bytes + code_wrapped > (size_t)cfg->artifact_budget_bytes ? "  OVER BUDGET" : "");
    /* reload what was written, into a model built from the artifact alone, and evaluate it */
    if (utg_read_file_magic(path, "UTGA", 4, (size_t)1 << 32, &back, &back_n, &msg) != UTG_OK) { errf_("artifact: %s", msg.text); goto out; }
    if (utg_artifact_parse(back, back_n, NULL, NULL, &a, &msg) != UTG_OK) { errf_("artifact reload: %s", msg.text); goto out; }
    if (utg_model_create_from_artifact(a, NULL, &m2) != UTG_OK || utg_model_reserve(m2, micro_seqs) != UTG_OK) {
        errf_("artifact reload: %s", utg_model_message(m2));
        goto out;
    }
    if (evaluate(m2, tok, ev, &q_loss, &q_bpb, &msg) != UTG_OK) { errf_("%s", msg.text); goto out; }
    logf_("final_quant val_loss:%.4f val_bpb:%.4f pre_quant_val_bpb:%.4f gap:%+.4f artifact:%zu bytes total:%zu", q_loss, q_bpb, pre_bpb,
          q_bpb - pre_bpb, rep.artifact_bytes, rep.artifact_bytes + code_wrapped);
    logf_("final_quant_exact val_loss:%.8f val_bpb:%.8f", q_loss, q_bpb);
    if (metrics)
        sink_printf(metrics, "{\"final_quant_val_loss\":%.6f,\"final_quant_val_bpb\":%.6f,\"pre_quant_val_bpb\":%.6f,\"artifact_bytes\":%zu,\"code_bytes\":%zu}\n",
                q_loss, q_bpb, pre_bpb, rep.artifact_bytes, code_wrapped);
    (void)pre_loss;
    rc = 0;
out:
    utg_model_destroy(m2);
    utg_artifact_free(a);
    free(back);
    if (bytes) utg_model_free_bytes(m, bytes);
    free(plan);
    utg_hessians_destroy(h);
    return rc;
}

static void usage(FILE *f) {
    int i;
    fprintf(f,
            "usage: train [options] [KEY=VALUE ...]\n"
            "\n"
            "Trains a utgolf model as Parameter Golf's train_gpt.py does: Muon + Adam, warmdown under a\n"
            "wallclock cap, val_loss and val_bpb on the validation shards, then quantizes the weights into a\n"
            "UTGA artifact, reloads it and evaluates it again (the score Parameter Golf counts).\n"
            "\n"
            "options:\n"
            "  --config FILE          KEY=VALUE lines (# comments), applied before the environment;\n"
            "                         repeatable: later files override earlier ones (e.g. data, then a recipe)\n"
            "  --out DIR              run directory (default runs/RUN_ID): train.log, metrics.jsonl,\n"
            "                         loss.svg, checkpoint.utgc, model.safetensors\n"
            "  --resume FILE          continue from a checkpoint (same model knobs required)\n"
            "  --force                start over in an --out directory that holds a checkpoint (replaces it)\n"
            "  --checkpoint-every N   also write the checkpoint every N steps (default: at the end); a state\n"
            "                         is written only after a forward pass has given a finite loss with it\n"
            "  --no-progress          no progress bar even on a terminal\n"
            "  --max-steps N          stop after N steps of this invocation (for tests and resumes)\n"
            "  --code FILES           the code a submission counts in its 16,000,000 bytes, comma-separated\n"
            "                         (default utgolf.h,examples/train.c; counted brotli + base85 compressed)\n"
            "  --no-artifact          skip the quantized artifact and its round-trip evaluation\n"
            "  --help                 this text\n"
            "\n"
            "Knobs come from defaults < --config < environment < arguments. An argument is KEY=VALUE,\n"
            "--KEY=VALUE or --KEY VALUE with the environment name (NUM_LAYERS) or the field name\n"
            "(num_layers, or --num-layers). TOKENIZER_PATH may be a SentencePiece .model or byte260.\n"
            "\n"
            "A non-finite loss or gradient norm stops the run (exit status 1) without touching the last good\n"
            "checkpoint; ON_NONFINITE=rollback reloads that checkpoint and halves the learning rates instead.\n"
            "SIGINT and SIGTERM stop after the current step with a checkpoint (exit status 130, 143).\n"
            "\n"
            "knobs (environment name, default, meaning):\n");
    for (i = 0; i < utg_config_knob_count(); i++) {
        char line[512];
        fprintf(f, "%s\n", utg_config_help_line(i, line, sizeof line));
    }
}

static int set_knob(utg_config *cfg, const char *key, const char *value, utg_msg *msg) {
    char name[128];
    size_t i, n = strlen(key);
    if (n >= sizeof name) { snprintf(msg->text, sizeof msg->text, "knob name too long: %.40s...", key); return 0; }
    for (i = 0; i <= n; i++) name[i] = key[i] == '-' ? '_' : key[i];
    return utg_config_set(cfg, name, value, msg) == UTG_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* ---------------------------------------------------------------------------------------------- */

typedef struct run_files {
    char dir[2048], log[2304], metrics[2304], svg[2304], ckpt[2304], weights[2304], artifact[2304];
} run_files;

/* Writes the checkpoint only when the state in it gives a finite loss on the batch bx/by (a forward
   pass, no update), so that a diverged state never replaces the last good checkpoint. Returns 0 when
   written, 1 when the state is not finite (*loss says what it gave; nothing written), -1 when the
   write failed (message printed; the previous file is intact). */
static int save_checkpoint(utg_model *m, utg_optim *o, utg_loader *ld, const utg_train_state *ts, const char *path, const int32_t *bx,
                           const int32_t *by, int n_seqs, double *loss) {
    void *bytes = NULL;
    size_t size = 0;
    utg_msg msg;
    utg_result r;
    *loss = 0.0;
    r = utg_model_forward(m, bx, by, n_seqs, loss);
    if (!isfinite(*loss)) return 1; /* (the forward refuses a non-finite loss) */
    if (r != UTG_OK) { errf_("checkpoint: %s", utg_model_message(m)); return -1; }
    r = utg_checkpoint_save(m, o, ld, ts, &bytes, &size);
    if (r != UTG_OK) { errf_("checkpoint: %s", utg_model_message(m)); return -1; }
    r = utg_write_file(path, bytes, size, &msg);
    utg_model_free_bytes(m, bytes);
    if (r != UTG_OK) { errf_("checkpoint: %s", msg.text); return -1; }
    logf_("checkpoint: %s (%.1f MB, step %lld)", path, size / 1e6, (long long)ts->step);
    return 0;
}

/* Loads a checkpoint into the model, optimizer and loader (--resume, and ON_NONFINITE=rollback). */
static int load_checkpoint(utg_model *m, utg_optim *o, utg_loader *ld, utg_train_state *ts, const char *path) {
    void *buf;
    size_t n;
    utg_msg msg;
    if (utg_read_file_magic(path, "UTGCKPT1", 8, (size_t)1 << 40, &buf, &n, &msg) != UTG_OK) { errf_("resume: %s", msg.text); return -1; }
    if (utg_checkpoint_load(m, o, ld, ts, buf, n) != UTG_OK) {
        free(buf);
        errf_("resume: %s: %s", path, utg_model_message(m));
        return -1;
    }
    free(buf);
    if (ts->step >= INT_MAX) { /* the loop counts steps in int, as ITERATIONS does */
        errf_("resume: %s is at step %lld, past the trainer's step counter (%d)", path, (long long)ts->step, INT_MAX - 1);
        return -1;
    }
    return 0;
}

/* The knob dump of the log: one write for all of it (a log of one line per knob would give a failed
   write as many chances). */
static void log_config(const utg_config *cfg) {
    size_t cap = 1024, at = 0;
    char *all = (char *)malloc(cap);
    int a;
    for (a = 0; all && a < utg_config_knob_count(); a++) {
        char val[512], line[640];
        int n;
        utg_config_format(cfg, a, val, sizeof val);
        n = snprintf(line, sizeof line, "config %s=%s\n", utg_config_knob(a)->env_name, val);
        if (n < 0) continue;
        if (at + (size_t)n + 1 > cap) {
            char *grown = (char *)realloc(all, 2 * cap + (size_t)n);
            if (!grown) { free(all); all = NULL; break; }
            all = grown;
            cap = 2 * cap + (size_t)n;
        }
        memcpy(all + at, line, (size_t)n);
        at += (size_t)n;
    }
    if (!all) { errf_("out of memory logging the config"); return; }
    clear_progress();
    fwrite(all, 1, at, stdout);
    fflush(stdout);
    sink_write(&g_log, all, at);
    free(all);
}

/* 1 (after printing why) when the log or the metrics file could not be written */
static int sink_failed(const sink *metrics) {
    const sink *s = g_log.err ? &g_log : metrics && metrics->err ? metrics : NULL;
    if (!s) return 0;
    errf_("cannot write '%s': %s", s->path, strerror(s->err));
    return 1;
}

int main(int argc, char **argv) {
    utg_model_desc desc;
    utg_model *m = NULL;
    utg_optim *opt = NULL;
    utg_dataset *train_ds = NULL, *val_ds = NULL;
    utg_loader *loader = NULL;
    utg_tokenizer tok;
    evaluator ev;
    utg_msg msg;
    utg_train_state ts;
    const utg_config *cfg;
    const char *config_paths[8], *resume_path = NULL, *out_dir = NULL, *code_files = "utgolf.h,examples/train.c";
    int no_artifact = 0, qat_on = 0, force = 0;
    utg_qat *qat = NULL;
    int n_configs = 0, ci;
    char *config_texts[8] = {0}, train_glob[2048], val_glob[2048], run_id[128];
    int32_t *val_tokens = NULL, *bx = NULL, *by = NULL;
    size_t n_val = 0;
    float *init_params = NULL;
    sink metrics = {-1, NULL, 0};
    curve train_curve, val_curve, plan_curve;
    run_files rf;
    int a, rc = 1, progress_on, checkpoint_every = 0, max_steps = 0, micro_seqs, accum, stop_after = -1, step_start;
    double t_start_wall, training_ms = 0.0, t0, val_loss = 0, val_bpb = 0, phase_ms = 0.0;
    int phase_step = 0; /* where the current depth plan began (its step time drives a wallclock warmdown) */
    int64_t tokens_per_step;
    /* divergence: the last checkpoint known good, rollbacks so far, the LR factor they left, and the
       first logged train loss with the count of log lines since that stayed 1.5x above it */
    const char *good_ckpt = NULL;
    int rollbacks = 0, high_loss_lines = 0, write_failed = 0;
    double lr_factor = 1.0, first_logged_loss = -1.0;

    memset(&desc, 0, sizeof desc);
    memset(&tok, 0, sizeof tok);
    memset(&ev, 0, sizeof ev);
    memset(&ts, 0, sizeof ts);
    memset(&train_curve, 0, sizeof train_curve);
    memset(&val_curve, 0, sizeof val_curve);
    memset(&plan_curve, 0, sizeof plan_curve);
    memset(&msg, 0, sizeof msg);
    progress_on = isatty(2);
    t_start_wall = now_ms();

    /* pass 1: options */
    for (a = 1; a < argc; a++) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); return 0; }
        if (!strcmp(o, "--no-progress")) { progress_on = 0; continue; }
        if (!strcmp(o, "--no-artifact")) { no_artifact = 1; continue; }
        if (!strcmp(o, "--force")) { force = 1; continue; }
        if (!strcmp(o, "--config") || !strcmp(o, "--out") || !strcmp(o, "--resume") || !strcmp(o, "--checkpoint-every") ||
            !strcmp(o, "--max-steps") || !strcmp(o, "--code")) {
            if (!v) { fprintf(stderr, "train: %s needs a value\n", o); return 2; }
            if (!strcmp(o, "--config")) {
                if (n_configs == 8) { fprintf(stderr, "train: at most 8 --config files\n"); return 2; }
                config_paths[n_configs++] = v;
            }
            else if (!strcmp(o, "--out")) out_dir = v;
            else if (!strcmp(o, "--resume")) resume_path = v;
            else if (!strcmp(o, "--code")) code_files = v;
            else {
                char *end;
                long n = strtol(v, &end, 10);
                if (*end || n < 0 || n > 1000000000L) { fprintf(stderr, "train: %s wants a count, got '%s'\n", o, v); return 2; }
                if (!strcmp(o, "--checkpoint-every")) checkpoint_every = (int)n;
                else max_steps = (int)n;
            }
            a++;
        }
    }
    /* knobs: config file, environment, arguments */
    for (ci = 0; ci < n_configs; ci++) { /* in order: a later file overrides an earlier one */
        size_t n;
        void *buf;
        if (utg_read_file(config_paths[ci], 1 << 20, &buf, &n, &msg) != UTG_OK) { fprintf(stderr, "train: %s\n", msg.text); goto usage_error; }
        if (memchr(buf, 0, n)) { /* the parser would stop there and ignore the rest */
            fprintf(stderr, "train: %s: byte %zu is NUL: a config file is text (KEY=VALUE lines)\n", config_paths[ci],
                    (size_t)((char *)memchr(buf, 0, n) - (char *)buf));
            free(buf);
            goto usage_error;
        }
        config_texts[ci] = (char *)realloc(buf, n + 1);
        if (!config_texts[ci]) { free(buf); goto usage_error; }
        config_texts[ci][n] = 0;
        if (utg_config_parse_text(&desc.config, config_texts[ci], &msg) != UTG_OK) {
            fprintf(stderr, "train: %s: %s\n", config_paths[ci], msg.text);
            goto usage_error;
        }
    }
    if (utg_config_apply_env(&desc.config, &msg) != UTG_OK) { fprintf(stderr, "train: environment: %s\n", msg.text); goto usage_error; }
    for (a = 1; a < argc; a++) {
        const char *o = argv[a], *eq;
        char key[128];
        if (!strcmp(o, "--no-progress") || !strcmp(o, "--no-artifact") || !strcmp(o, "--force")) continue;
        if (!strcmp(o, "--config") || !strcmp(o, "--out") || !strcmp(o, "--resume") || !strcmp(o, "--checkpoint-every") ||
            !strcmp(o, "--max-steps") || !strcmp(o, "--code")) { a++; continue; }
        while (*o == '-') o++;
        eq = strchr(o, '=');
        if (eq) {
            if ((size_t)(eq - o) >= sizeof key) { fprintf(stderr, "train: argument too long: %.40s\n", argv[a]); goto usage_error; }
            memcpy(key, o, (size_t)(eq - o));
            key[eq - o] = 0;
            if (!set_knob(&desc.config, key, eq + 1, &msg)) { fprintf(stderr, "train: %s\n", msg.text); goto usage_error; }
        } else if (argv[a][0] == '-' && a + 1 < argc) {
            if (!set_knob(&desc.config, o, argv[a + 1], &msg)) { fprintf(stderr, "train: %s (try --help)\n", msg.text); goto usage_error; }
            a++;
        } else {
            fprintf(stderr, "train: unexpected argument '%s' (try --help)\n", argv[a]);
            goto usage_error;
        }
    }
    desc.config = utg_config_resolve(&desc.config);
    if (utg_config_validate(&desc.config, &msg) != UTG_OK) { fprintf(stderr, "train: %s\n", msg.text); goto usage_error; }
    cfg = &desc.config;

    /* run directory and files */
    if (cfg->run_id && cfg->run_id[0]) snprintf(run_id, sizeof run_id, "%s", cfg->run_id);
    else {
        time_t t = time(NULL);
        struct tm tmv;
        localtime_r(&t, &tmv);
        strftime(run_id, sizeof run_id, "run-%Y%m%d-%H%M%S", &tmv);
    }
    if (out_dir && strlen(out_dir) >= sizeof rf.dir) {
        fprintf(stderr, "train: --out path has %zu bytes, more than the %zu this trainer takes\n", strlen(out_dir), sizeof rf.dir - 1);
        goto usage_error;
    }
    if (out_dir) snprintf(rf.dir, sizeof rf.dir, "%s", out_dir);
    else snprintf(rf.dir, sizeof rf.dir, "runs/%s", run_id);
    if (mkdir_p(rf.dir) != 0) { fprintf(stderr, "train: cannot create run directory '%s'\n", rf.dir); goto done; }
    snprintf(rf.log, sizeof rf.log, "%s/train.log", rf.dir);
    snprintf(rf.metrics, sizeof rf.metrics, "%s/metrics.jsonl", rf.dir);
    snprintf(rf.svg, sizeof rf.svg, "%s/loss.svg", rf.dir);
    snprintf(rf.ckpt, sizeof rf.ckpt, "%s/checkpoint.utgc", rf.dir);
    snprintf(rf.weights, sizeof rf.weights, "%s/model.safetensors", rf.dir);
    snprintf(rf.artifact, sizeof rf.artifact, "%s/final_model.utga", rf.dir);
    if (!resume_path && !force && access(rf.ckpt, F_OK) == 0) { /* an earlier run's state is not replaced by accident */
        fprintf(stderr, "train: '%s' holds a checkpoint from an earlier run: continue it with --resume %s, or start over with --force\n",
                rf.dir, rf.ckpt);
        goto usage_error;
    }
    if (!sink_open(&g_log, rf.log, 0)) { /* appended: a failed start never wipes an earlier run's log */
        fprintf(stderr, "train: cannot write in '%s': %s\n", rf.dir, strerror(errno));
        goto done;
    }

    logf_("utgolf %s trainer  run_id:%s  out:%s", utg_version(), run_id, rf.dir);
    log_config(cfg);

    /* data */
    if (cfg->train_files && cfg->train_files[0]) snprintf(train_glob, sizeof train_glob, "%s", cfg->train_files);
    else snprintf(train_glob, sizeof train_glob, "%s/fineweb_train_*.bin", cfg->data_path);
    if (cfg->val_files && cfg->val_files[0]) snprintf(val_glob, sizeof val_glob, "%s", cfg->val_files);
    else snprintf(val_glob, sizeof val_glob, "%s/fineweb_val_*.bin", cfg->data_path);
    if (!strcmp(cfg->tokenizer_path, "byte260")) {
        if (utg_tokenizer_byte260(&tok, cfg->vocab_size, NULL, &msg) != UTG_OK) { errf_("tokenizer: %s", msg.text); goto done; }
    } else {
        void *buf;
        size_t n;
        if (!ends_with(cfg->tokenizer_path, ".model")) { errf_("TOKENIZER_PATH must be a SentencePiece .model file or byte260 (got '%s')", cfg->tokenizer_path); goto done; }
        if (utg_read_file(cfg->tokenizer_path, 64u << 20, &buf, &n, &msg) != UTG_OK) { errf_("tokenizer: %s", msg.text); goto done; }
        if (utg_tokenizer_load_spm(&tok, buf, n, cfg->vocab_size, NULL, &msg) != UTG_OK) {
            free(buf);
            errf_("tokenizer: %s: %s", cfg->tokenizer_path, msg.text);
            goto done;
        }
        free(buf);
        if (tok.space_piece_id < 0) {
            errf_("tokenizer: %s has no standalone '\xe2\x96\x81' piece: every space would count as byte-fallback "
                  "bytes and val_bpb would be wrong (Parameter Golf issue #897)", cfg->tokenizer_path);
            goto done;
        }
    }
    if (tok.n_pieces > cfg->vocab_size) {
        errf_("tokenizer has %d pieces but VOCAB_SIZE is %d", tok.n_pieces, cfg->vocab_size);
        goto done;
    }
    logf_("val_bpb:enabled tokenizer_kind=%s tokenizer_path=%s pieces:%d", tok.kind == UTG_TOKENIZER_SPM ? "sentencepiece" : "byte260",
          cfg->tokenizer_path, tok.n_pieces);
    if (utg_dataset_open(train_glob, cfg->vocab_size, NULL, &train_ds, &msg) != UTG_OK) { errf_("train data: %s", msg.text); goto done; }
    if (utg_dataset_open(val_glob, cfg->vocab_size, NULL, &val_ds, &msg) != UTG_OK) { errf_("val data: %s", msg.text); goto done; }
    {
        uint64_t nv = utg_dataset_tokens(val_ds);
        if (nv < 2 || nv > (uint64_t)1 << 34) { errf_("val data: %llu tokens is not a usable validation stream", (unsigned long long)nv); goto done; }
        n_val = (size_t)nv;
        val_tokens = (int32_t *)malloc(sizeof(int32_t) * n_val);
        if (!val_tokens) { errf_("out of memory for %zu validation tokens", n_val); goto done; }
        if (utg_dataset_read(val_ds, 0, n_val, val_tokens, &msg) != UTG_OK) { errf_("val data: %s", msg.text); goto done; }
    }
    logf_("train_loader:%s shards:%d tokens:%llu  val_loader:shards:%d tokens:%zu", train_glob, utg_dataset_shard_count(train_ds),
          (unsigned long long)utg_dataset_tokens(train_ds), utg_dataset_shard_count(val_ds), n_val - 1);

    /* model, optimizer, loader */
    if (utg_model_create(&desc, &m) != UTG_OK) { errf_("model: %s", utg_model_message(m)); goto done; }
    if (utg_optim_create(m, &opt) != UTG_OK) { errf_("optimizer: %s", utg_model_message(m)); goto done; }
    if (strcmp(cfg->qat, "none") && utg_qat_create(m, &qat) != UTG_OK) { errf_("QAT: %s", utg_model_message(m)); goto done; }
    accum = cfg->grad_accum_steps;
    micro_seqs = cfg->train_batch_tokens / accum / cfg->train_seq_len; /* train_gpt.py's integer divisions */
    if (micro_seqs < 1) {
        errf_("TRAIN_BATCH_TOKENS=%d over GRAD_ACCUM_STEPS=%d micro-batches holds no whole TRAIN_SEQ_LEN=%d sequence",
              cfg->train_batch_tokens, accum, cfg->train_seq_len);
        goto done;
    }
    if ((int64_t)micro_seqs * accum * cfg->train_seq_len != cfg->train_batch_tokens)
        logf_("note: TRAIN_BATCH_TOKENS=%d rounds down to %d tokens per step (%d x %d sequences of %d)", cfg->train_batch_tokens,
              micro_seqs * accum * cfg->train_seq_len, accum, micro_seqs, cfg->train_seq_len);
    tokens_per_step = (int64_t)micro_seqs * accum * cfg->train_seq_len;
    if (utg_loader_create(train_ds, strcmp(cfg->train_loader, "shuffled") ? UTG_LOADER_SEQUENTIAL : UTG_LOADER_SHUFFLED,
                          cfg->train_seq_len, 0, 1, (uint64_t)UTG__OFF0(cfg->seed), NULL, &loader, &msg) != UTG_OK) {
        errf_("train loader: %s", msg.text);
        goto done;
    }
    ev.seq_len = cfg->eval_seq_len > 0 ? cfg->eval_seq_len : cfg->train_seq_len;
    ev.stride = cfg->eval_stride;
    ev.tok = val_tokens;
    ev.n_tok = n_val;
    if (n_val - 1 < (size_t)ev.seq_len && ev.stride <= 0) { errf_("validation stream (%zu targets) is shorter than one window of %d", n_val - 1, ev.seq_len); goto done; }
    {
        int vb = cfg->val_batch_size / ev.seq_len, cap = (micro_seqs * cfg->train_seq_len) / ev.seq_len;
        if (cap < 1) cap = 1;
        ev.batch_seqs = vb < 1 ? 1 : vb > cap ? cap : vb; /* eval batches no larger than a training micro-batch */
    }
    ev.x = (int32_t *)malloc(sizeof(int32_t) * (size_t)ev.batch_seqs * ev.seq_len);
    ev.y = (int32_t *)malloc(sizeof(int32_t) * (size_t)ev.batch_seqs * ev.seq_len);
    ev.loss = (float *)malloc(sizeof(float) * (size_t)ev.batch_seqs * ev.seq_len);
    /* zeroed: a checkpoint before the first step checks its state on this batch */
    bx = (int32_t *)calloc((size_t)micro_seqs * cfg->train_seq_len, sizeof(int32_t));
    by = (int32_t *)calloc((size_t)micro_seqs * cfg->train_seq_len, sizeof(int32_t));
    if (!ev.x || !ev.y || !ev.loss || !bx || !by) { errf_("out of memory for batches"); goto done; }
    if (utg_model_reserve(m, micro_seqs) != UTG_OK) { errf_("model: %s", utg_model_message(m)); goto done; }
    {
        int np = utg_model_plan_count(m), i, vmax = 0;
        char pbuf[1024];
        for (i = 0; i < np; i++) if (utg_model_plan_at(m, i)->n_layers > vmax) vmax = utg_model_plan_at(m, i)->n_layers;
        logf_("model_params:%zu physical_layers:%d virtual_layers:%d", utg_model_param_count(m), utg_model_physical_blocks(m), vmax);
        for (i = 0; i < np; i++) { /* the depth plans the schedule can reach, all built already */
            const utg_plan *pl = utg_model_plan_at(m, i);
            char when[64];
            if (i == 0) snprintf(when, sizeof when, "from the start");
            else if (pl->start_step >= 0) snprintf(when, sizeof when, "from step %d", pl->start_step);
            else snprintf(when, sizeof when, "from %.0f%% of training", 100.0 * pl->start_frac);
            logf_("depth_plan:%d %s: %s", i, when, utg_plan_describe(pl, pbuf, sizeof pbuf));
        }
        logf_("world_size:1 grad_accum_steps:%d micro_batch:%dx%d tokens_per_step:%lld threads:%d", accum, micro_seqs,
              cfg->train_seq_len, (long long)tokens_per_step, utg_thread_count());
        logf_("eval: seq_len:%d stride:%d batch:%d windows", ev.seq_len, ev.stride, ev.batch_seqs);
    }

    /* priming steps, then everything is put back (train_gpt.py's WARMUP_STEPS) */
    if (UTG__OFF0(cfg->warmup_steps) > 0 && !resume_path) {
        int w, mi;
        init_params = (float *)malloc(sizeof(float) * utg_model_arena_floats(m));
        if (!init_params) { errf_("out of memory"); goto done; }
        utg_model_get(m, UTG_ARENA_PARAMS, -1, init_params, utg_model_arena_floats(m));
        for (w = 0; w < cfg->warmup_steps; w++) {
            double l;
            utg_model_zero_grads(m);
            for (mi = 0; mi < accum; mi++) {
                if (utg_loader_next(loader, bx, by, micro_seqs, &msg) != UTG_OK) { errf_("train data: %s", msg.text); goto done; }
                if (utg_model_forward(m, bx, by, micro_seqs, &l) != UTG_OK || utg_model_backward(m, 1.0f / accum) != UTG_OK) {
                    errf_("warmup: %s", utg_model_message(m));
                    goto done;
                }
            }
            if (utg_optim_step(opt, w, 1.0, NULL) != UTG_OK) { errf_("warmup: %s", utg_model_message(m)); goto done; }
            if (cfg->warmup_steps <= 20 || (w + 1) % 10 == 0 || w + 1 == cfg->warmup_steps) logf_("warmup_step:%d/%d", w + 1, cfg->warmup_steps);
        }
        utg_model_set(m, UTG_ARENA_PARAMS, -1, init_params, utg_model_arena_floats(m));
        utg_model_zero_grads(m);
        utg_optim_reset(opt);
        utg_loader_reset(loader);
    }

    if (resume_path) {
        if (load_checkpoint(m, opt, loader, &ts, resume_path) != 0) goto done;
        good_ckpt = resume_path;
        training_ms = ts.train_ms;
        logf_("resumed from %s at step %lld (train_time %.0fms, depth_plan:%d)", resume_path, (long long)ts.step, ts.train_ms,
              utg_model_phase(m));
    }

    /* everything checked: only now is an earlier run's metrics file replaced (or, resuming, extended) */
    if (!sink_open(&metrics, rf.metrics, !resume_path)) { errf_("cannot write '%s': %s", rf.metrics, strerror(errno)); goto done; }
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    step_start = (int)ts.step;
    if (utg_model_phase(m) > 0) { /* resumed inside a later plan: its step time from here on */
        phase_step = step_start;
        phase_ms = training_ms;
    }
    t0 = now_ms();
    for (;;) {
        int step = (int)ts.step;
        int last_step = step >= cfg->iterations || (stop_after >= 0 && step >= stop_after);
        int budget_stop = max_steps > 0 && step - step_start >= max_steps;
        double elapsed, scale, train_loss = 0.0, gnorm = 0.0, approx_ms, bad_value = 0.0;
        const char *bad = NULL; /* what turned out not finite in this step */
        int mi;
        if ((!budget_stop || last_step) &&
            (last_step || (UTG__OFF0(cfg->val_loss_every) > 0 && step % cfg->val_loss_every == 0))) {
            double te;
            training_ms += now_ms() - t0;
            te = now_ms();
            if (last_step && utg_optim_apply_average(opt)) logf_("loaded the %s weights for the final evaluation", cfg->ema_enabled > 0 ? "EMA" : "SWA");
            if (evaluate(m, &tok, &ev, &val_loss, &val_bpb, &msg) != UTG_OK) { errf_("%s", msg.text); goto done; }
            logf_("step:%d/%d val_loss:%.4f val_bpb:%.4f train_time:%.0fms step_avg:%.2fms eval_time:%.0fms", step, cfg->iterations,
                  val_loss, val_bpb, training_ms, training_ms / (step > 0 ? step : 1), now_ms() - te);
            sink_printf(&metrics, "{\"step\":%d,\"val_loss\":%.6f,\"val_bpb\":%.6f,\"train_time_ms\":%.0f}\n", step, val_loss, val_bpb, training_ms);
            t0 = now_ms();
        }
        if (last_step) {
            if (stop_after >= 0 && step < cfg->iterations)
                logf_("stopping_early: wallclock_cap train_time:%.0fms step:%d/%d", training_ms, step, cfg->iterations);
            break;
        }
        if (budget_stop || g_interrupted || write_failed) { /* a failed log write stops the run too, with its state saved */
            double l;
            int w;
            training_ms += now_ms() - t0;
            ts.train_ms = training_ms;
            logf_("%s at step %d; resume with --resume %s", g_interrupted ? "interrupted" : write_failed ? "stopping" : "step budget reached",
                  step, rf.ckpt);
            if ((w = save_checkpoint(m, opt, loader, &ts, rf.ckpt, bx, by, micro_seqs, &l)) > 0)
                errf_("step %d: the state gives a loss of %g: no checkpoint written%s%s", step, l, good_ckpt ? "; the last good one is " : "",
                      good_ckpt ? good_ckpt : "");
            rc = w != 0 || write_failed ? 1 : g_interrupted ? 128 + g_interrupted : 0;
            goto finish_picture;
        }

        elapsed = training_ms + (now_ms() - t0);
        {   /* the depth schedule: switch plans between steps (nothing is allocated) */
            int want = utg_model_schedule_phase(m, step, utg_train_frac(cfg, step, elapsed));
            if (want > utg_model_phase(m)) {
                char pbuf[1024];
                if (utg_model_set_phase(m, want, 1) != UTG_OK) { errf_("step %d: %s", step, utg_model_message(m)); goto done; }
                phase_step = step;
                phase_ms = elapsed;
                logf_("depth_plan:%d active at step:%d train_time:%.0fms: %s", want, step, elapsed,
                      utg_plan_describe(utg_model_plan(m), pbuf, sizeof pbuf));
                sink_printf(&metrics, "{\"step\":%d,\"depth_plan\":%d,\"virtual_layers\":%d}\n", step, want, utg_model_plan(m)->n_layers);
            }
        }
        scale = utg_lr_scale_phase(cfg, step, elapsed, phase_step, phase_ms);
        if (qat && !qat_on && utg_qat_wanted(cfg, step, scale)) { /* once on, QAT stays on */
            qat_on = 1;
            logf_("qat:%s active at step:%d lr_scale:%.4f train_time:%.0fms", cfg->qat, step, scale, elapsed);
            sink_printf(&metrics, "{\"step\":%d,\"qat\":1}\n", step);
        }
        if (qat_on) utg_qat_begin(qat, step); /* forward and backward see the quantized weights */
        utg_model_zero_grads(m);
        for (mi = 0; mi < accum; mi++) {
            double l = 0.0;
            utg_result fr;
            if (utg_loader_next(loader, bx, by, micro_seqs, &msg) != UTG_OK) { errf_("train data: %s", msg.text); goto done; }
            fr = utg_model_forward(m, bx, by, micro_seqs, &l);
            if (!isfinite(l)) { bad = "training loss"; bad_value = l; break; } /* the forward refuses it: no backward */
            if (fr != UTG_OK || utg_model_backward(m, 1.0f / accum) != UTG_OK) {
                errf_("step %d: %s", step, utg_model_message(m));
                goto done;
            }
            train_loss += l / accum;
        }
        if (qat_on) utg_qat_end(qat); /* the optimizer updates the full-precision masters */
        if (bad) goto nonfinite;
        if (utg_optim_step(opt, step, scale * lr_factor, &gnorm) != UTG_OK) { /* a non-finite norm: refused before any update */
            if (!isfinite(gnorm)) { bad = "gradient norm"; bad_value = gnorm; goto nonfinite; }
            errf_("step %d: %s", step, utg_model_message(m));
            goto done;
        }
        ts.step = ++step;
        utg_optim_average(opt, step, scale);
        ts.tokens_seen += tokens_per_step;
        approx_ms = training_ms + (now_ms() - t0);
        ts.train_ms = approx_ms;
        {
            double step_avg = approx_ms / step, tok_s = (double)tokens_per_step / (step_avg / 1000.0);
            if (UTG__OFF0(cfg->train_log_every) > 0 && (step <= 10 || step % cfg->train_log_every == 0 || stop_after >= 0)) {
                logf_("step:%d/%d train_loss:%.4f lr_scale:%.4f grad_norm:%.3f train_time:%.0fms step_avg:%.2fms tok/s:%.0f", step,
                      cfg->iterations, train_loss, scale * lr_factor, gnorm, approx_ms, step_avg, tok_s);
                /* a finite blow-up (an absurd LR) runs on: say so once, after three log lines in a row */
                if (first_logged_loss < 0) first_logged_loss = train_loss;
                high_loss_lines = train_loss > 1.5 * first_logged_loss ? high_loss_lines + 1 : 0;
                if (high_loss_lines == 3)
                    errf_("warning: step %d: the train loss (%.4f) has stayed above 1.5 x the first logged one (%.4f) for 3 log lines: "
                          "the run is diverging (check the learning rates)", step, train_loss, first_logged_loss);
            }
            sink_printf(&metrics, "{\"step\":%d,\"train_loss\":%.6f,\"lr_scale\":%.6f,\"grad_norm\":%.6f,\"train_time_ms\":%.0f,\"tokens_per_s\":%.0f}\n",
                    step, train_loss, scale * lr_factor, gnorm, approx_ms, tok_s);
            if (progress_on) {
                double frac_it = (double)step / cfg->iterations, frac = frac_it, eta;
                if (cfg->max_wallclock_seconds > 0) {
                    double ft = approx_ms / (1000.0 * cfg->max_wallclock_seconds);
                    if (ft > frac) frac = ft;
                }
                eta = frac > 0 ? (approx_ms / 1000.0) * (1 - frac) / frac : -1;
                progress(frac, step, eta, train_loss, tok_s);
            }
        }
        if (sink_failed(&metrics)) { write_failed = 1; continue; }
        if (checkpoint_every > 0 && step % checkpoint_every == 0) {
            double tc = now_ms(), l;
            int w;
            ts.train_ms = approx_ms;
            if ((w = save_checkpoint(m, opt, loader, &ts, rf.ckpt, bx, by, micro_seqs, &l)) < 0) goto done;
            if (w == 0) good_ckpt = rf.ckpt;
            t0 += now_ms() - tc; /* checkpoint time is not training time */
            if (w > 0) { bad = "loss of the state to checkpoint"; bad_value = l; goto nonfinite; }
        }
        if (stop_after < 0 && cfg->max_wallclock_seconds > 0 && approx_ms >= 1000.0 * cfg->max_wallclock_seconds) stop_after = step;
        continue;
    nonfinite: /* stop, or go back to the last good checkpoint with half the learning rates */
        clear_progress();
        if (strcmp(cfg->on_nonfinite, "rollback") || !good_ckpt || rollbacks >= cfg->on_nonfinite_max_rollbacks) {
            errf_("step %d: the %s is %g: stopping (ON_NONFINITE=%s%s). %s%s", step, bad, bad_value, cfg->on_nonfinite,
                  strcmp(cfg->on_nonfinite, "rollback") ? "" : !good_ckpt ? ", and no good checkpoint to go back to: use --checkpoint-every"
                                                                          : ", and ON_NONFINITE_MAX_ROLLBACKS is spent",
                  good_ckpt ? "The last good checkpoint is " : "No checkpoint was written", good_ckpt ? good_ckpt : "");
            goto finish_picture;
        }
        if (load_checkpoint(m, opt, loader, &ts, good_ckpt) != 0) goto done;
        rollbacks++;
        lr_factor *= 0.5;
        training_ms = ts.train_ms;
        phase_step = utg_model_phase(m) > 0 ? (int)ts.step : 0;
        phase_ms = utg_model_phase(m) > 0 ? training_ms : 0.0;
        stop_after = -1;
        logf_("step %d: the %s is %g: rolled back to %s (step %lld), learning rates now x%g (rollback %d of %d)", step, bad, bad_value,
              good_ckpt, (long long)ts.step, lr_factor, rollbacks, cfg->on_nonfinite_max_rollbacks);
        sink_printf(&metrics, "{\"step\":%lld,\"rollback\":%d,\"lr_factor\":%g}\n", (long long)ts.step, rollbacks, lr_factor);
        t0 = now_ms();
    }
    clear_progress();

    /* the end: weights, checkpoint, summary */
    {
        void *bytes = NULL;
        size_t size = 0;
        double wall = (now_ms() - t_start_wall) / 1000.0;
        long long steps_run = ts.step;
        double l;
        int w;
        if (utg_model_save_safetensors(m, UTG_ARENA_PARAMS, &bytes, &size) != UTG_OK) { errf_("weights: %s", utg_model_message(m)); goto done; }
        w = utg_write_file(rf.weights, bytes, size, &msg) == UTG_OK;
        utg_model_free_bytes(m, bytes);
        if (!w) { errf_("weights: %s", msg.text); goto done; }
        ts.train_ms = training_ms;
        if ((w = save_checkpoint(m, opt, loader, &ts, rf.ckpt, bx, by, micro_seqs, &l)) != 0) {
            if (w > 0) errf_("the final state gives a loss of %g: no checkpoint written", l);
            goto done;
        }
        logf_("final val_loss:%.4f val_bpb:%.4f steps:%lld train_time:%.1fs tokens/s:%.0f wall:%.1fs", val_loss, val_bpb, steps_run,
              training_ms / 1000.0, steps_run > 0 ? (double)(ts.tokens_seen) / (training_ms / 1000.0) : 0.0, wall);
        logf_("final_exact val_loss:%.8f val_bpb:%.8f", val_loss, val_bpb);
        logf_("wrote %s, %s, %s, %s", rf.weights, rf.ckpt, rf.metrics, rf.svg);
    }
    if (!no_artifact && finish_artifact(m, loader, micro_seqs, bx, by, &tok, &ev, val_loss, val_bpb, rf.artifact, code_files, &metrics) != 0)
        goto done;
    rc = sink_failed(&metrics) ? 1 : 0;
finish_picture: {
    char title[256];
    snprintf(title, sizeof title, "%s: %d layers x %d, %zu params, val_bpb %.4f", run_id, cfg->num_layers, cfg->model_dim,
             utg_model_param_count(m), val_bpb);
    load_curves(rf.metrics, &train_curve, &val_curve, &plan_curve);
    if (train_curve.n + val_curve.n > 0 && write_svg(rf.svg, &train_curve, &val_curve, &plan_curve, title, &msg) != 0) {
        errf_("picture: %s", msg.text);
        if (rc == 0) rc = 1;
    }
}
    goto done;
usage_error:
    rc = 2;
done:
    clear_progress();
    if (metrics.fd >= 0 && sink_close(&metrics) != 0 && (rc == 0 || rc >= 128)) {
        errf_("cannot write '%s': %s", metrics.path, strerror(metrics.err));
        rc = 1;
    }
    if (g_log.fd >= 0 && sink_close(&g_log) != 0 && (rc == 0 || rc >= 128)) {
        fprintf(stderr, "train: cannot write '%s': %s\n", g_log.path, strerror(g_log.err));
        rc = 1;
    }
    utg_loader_destroy(loader);
    utg_dataset_close(train_ds);
    utg_dataset_close(val_ds);
    utg_tokenizer_free(&tok);
    utg_optim_destroy(opt);
    utg_qat_destroy(qat);
    utg_model_destroy(m);
    free(val_tokens);
    free(bx);
    free(by);
    free(ev.x);
    free(ev.y);
    free(ev.loss);
    free(init_params);
    for (ci = 0; ci < 8; ci++) free(config_texts[ci]);
    free(train_curve.x);
    free(train_curve.y);
    free(val_curve.x);
    free(val_curve.y);
    free(plan_curve.x);
    free(plan_curve.y);
    return rc;
}
