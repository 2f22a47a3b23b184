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

/* an ENUM knob's word, as a config file writes it */
static const char *knob_word(const utg_config *cfg, const char *name, char *buf, size_t n) {
    return utg_config_format(cfg, utg_config_find_knob(name), buf, n);
}

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
        if (w <= 0) {
            s->err = w < 0 ? errno : EIO;
            break;
        }
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
        const char *ps = strstr(line, "\"step\":"), *pt = strstr(line, "\"train_loss\":"),
                   *pv = strstr(line, "\"val_loss\":");
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

/* The chart's size and margins in pixels, and the ranges its axes show. */
#define SVG_W 720.0
#define SVG_H 420.0
#define SVG_L 64.0
#define SVG_R 20.0
#define SVG_T 40.0
#define SVG_B 50.0
typedef struct svg_frame {
    double x0, x1, y0, y1;
} svg_frame;
#define SVG_PLOT_W (SVG_W - SVG_L - SVG_R)
#define SVG_PLOT_H (SVG_H - SVG_T - SVG_B)
/* a step and a loss as pixels; losses above the range are drawn at its top edge */
#define PX(v) (SVG_L + ((v) - fr->x0) / (fr->x1 - fr->x0) * SVG_PLOT_W)
#define PY(v) (SVG_H - SVG_B - (((v) < fr->y1 ? (v) : fr->y1) - fr->y0) / (fr->y1 - fr->y0) * SVG_PLOT_H)

/* The ranges of the train (cs[0]) and val (cs[1]) curves: steps from 0, losses rounded out to whole
   ticks. The y range leaves out the train loss of the first 2% of steps (the early transient would
   flatten everything else). Returns the step between y ticks. */
static double svg_frame_of(const curve *const *cs, svg_frame *fr) {
    double st;
    int k, i;
    fr->x0 = 0;
    fr->x1 = 1;
    fr->y0 = 1e300;
    fr->y1 = -1e300;
    for (k = 0; k < 2; k++)
        for (i = 0; i < cs[k]->n; i++)
            if (cs[k]->x[i] > fr->x1) fr->x1 = cs[k]->x[i];
    for (k = 0; k < 2; k++)
        for (i = 0; i < cs[k]->n; i++) {
            if (k == 0 && cs[k]->x[i] < 0.02 * fr->x1 && cs[k]->n > 50) continue;
            if (isfinite(cs[k]->y[i])) {
                if (cs[k]->y[i] < fr->y0) fr->y0 = cs[k]->y[i];
                if (cs[k]->y[i] > fr->y1) fr->y1 = cs[k]->y[i];
            }
        }
    if (fr->y0 > fr->y1) {
        fr->y0 = 0;
        fr->y1 = 1;
    }
    if (fr->y1 - fr->y0 < 1e-6) {
        fr->y0 -= 0.5;
        fr->y1 += 0.5;
    }
    st = nice_step(fr->y1 - fr->y0, 6);
    fr->y0 = floor(fr->y0 / st) * st;
    fr->y1 = ceil(fr->y1 / st) * st;
    return st;
}

/* The page, the title (escaped), the grid with its labels every yst in y, the frame. */
static void svg_axes(FILE *f, const svg_frame *fr, double yst, const char *title) {
    double st = nice_step(fr->x1 - fr->x0, 8);
    int i;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", SVG_W, SVG_H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"24\" font-size=\"15\">", SVG_L);
    for (i = 0; title[i]; i++) {
        if (title[i] == '<') fputs("&lt;", f);
        else if (title[i] == '&') fputs("&amp;", f);
        else if (title[i] == '>') fputs("&gt;", f);
        else fputc(title[i], f);
    }
    fprintf(f, "</text>\n");
    for (i = 0; fr->y0 + i * yst <= fr->y1 + yst * 1e-9; i++) {
        double v = fr->y0 + i * yst;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", SVG_L,
                SVG_W - SVG_R, PY(v), PY(v));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", SVG_L - 6, PY(v) + 4, v);
    }
    for (i = 0; fr->x0 + i * st <= fr->x1 + st * 1e-9; i++) {
        double v = fr->x0 + i * st;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", PX(v), PX(v),
                SVG_T, SVG_H - SVG_B);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", PX(v),
                SVG_H - SVG_B + 16, v);
    }
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n",
            SVG_L, SVG_T, SVG_PLOT_W, SVG_PLOT_H);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">step</text>\n",
            (SVG_L + SVG_W - SVG_R) / 2, SVG_H - 12);
    fprintf(f, "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" text-anchor=\"middle\">"
               "loss (nats/token)</text>\n", (SVG_T + SVG_H - SVG_B) / 2, (SVG_T + SVG_H - SVG_B) / 2);
}

/* The train (cs[0]) and val (cs[1], with a dot per point) curves, each with its legend entry. */
static void svg_curves(FILE *f, const svg_frame *fr, const curve *const *cs) {
    const char *colors[2] = {"#1f77b4", "#d62728"}, *names[2] = {"train loss", "val loss"};
    int k, i;
    for (k = 0; k < 2; k++) {
        double legend_y = SVG_T + 16 + 18.0 * k;
        if (cs[k]->n == 0) continue;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" points=\"", colors[k],
                k ? "2" : "1.2");
        for (i = 0; i < cs[k]->n; i++)
            if (isfinite(cs[k]->y[i])) fprintf(f, "%.1f,%.1f ", PX(cs[k]->x[i]), PY(cs[k]->y[i]));
        fprintf(f, "\"/>\n");
        for (i = 0; k == 1 && i < cs[k]->n; i++)
            if (isfinite(cs[k]->y[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(cs[k]->x[i]),
                        PY(cs[k]->y[i]), colors[k]);
        fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2\"/>",
                SVG_W - SVG_R - 130, SVG_W - SVG_R - 110, legend_y, legend_y, colors[k]);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n", SVG_W - SVG_R - 104, SVG_T + 20 + 18.0 * k,
                names[k]);
    }
}

/* Depth-plan switches: a dashed line each, labelled with the new depth. */
static void svg_plans(FILE *f, const svg_frame *fr, const curve *plans) {
    int i;
    for (i = 0; i < plans->n; i++) {
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" "
                   "stroke=\"#2ca02c\" stroke-dasharray=\"5,4\"/>",
                PX(plans->x[i]), PX(plans->x[i]), SVG_T, SVG_H - SVG_B);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" fill=\"#2ca02c\">%.0f layers</text>\n", PX(plans->x[i]) + 4,
                SVG_T + 14, plans->y[i]);
    }
}
#undef PX
#undef PY

/* The picture is drawn into memory and written with utg_write_file: loss.svg is replaced whole or
   not at all. 0, or -1 with the reason in msg. */
static int write_svg(const char *path, const curve *train, const curve *val, const curve *plans,
                     const char *title, utg_msg *msg) {
    const curve *cs[2];
    svg_frame fr;
    double yst;
    FILE *f;
    char *svg = NULL;
    size_t svg_size = 0;
    int rc;
    cs[0] = train;
    cs[1] = val;
    yst = svg_frame_of(cs, &fr);
    f = open_memstream(&svg, &svg_size);
    if (!f) {
        snprintf(msg->text, sizeof msg->text, "out of memory drawing '%.200s'", path);
        return -1;
    }
    svg_axes(f, &fr, yst, title);
    svg_curves(f, &fr, cs);
    svg_plans(f, &fr, plans);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0 || !svg) {
        free(svg);
        snprintf(msg->text, sizeof msg->text, "out of memory drawing '%.200s'", path);
        return -1;
    }
    rc = utg_write_file(path, svg, svg_size, msg) == UTG_OK ? 0 : -1;
    free(svg);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* evaluation: the library's pass (utg_model_eval_bpb) over the validation stream */

/* val_loss and val_bpb over the validation stream, with the run's window options. */
static utg_result evaluate(utg_model *m, const utg_tokenizer *tk, const int32_t *val, size_t n_val,
                           const utg_eval_opts *ev, double *val_loss, double *val_bpb, utg_msg *msg) {
    utg_bpb acc;
    utg_result res;
    memset(&acc, 0, sizeof acc);
    res = utg_model_eval_bpb(m, tk, val, n_val, ev, &acc);
    if (res != UTG_OK) {
        snprintf(msg->text, sizeof msg->text, "%.240s", utg_model_message(m));
        return res;
    }
    *val_loss = utg_bpb_loss(&acc);
    *val_bpb = utg_bpb_value(&acc);
    return UTG_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* a run: everything it holds, so that each of its steps takes one pointer */

typedef struct run_files {
    char dir[2048], log[2304], metrics[2304], svg[2304], ckpt[2304], weights[2304], artifact[2304];
} run_files;

typedef struct train_run {
    /* the command line */
    const char *config_paths[8], *resume_path, *out_dir, *code_files;
    char *config_texts[8]; /* the --config files, read */
    int n_configs, no_artifact, force, progress_on, checkpoint_every, max_steps;
    /* the knobs, the run's name and files */
    utg_model_desc desc;
    const utg_config *cfg; /* &desc.config once resolved and valid */
    char run_id[128], train_glob[2048], val_glob[2048];
    run_files rf;
    sink metrics; /* rf.metrics (train.log is g_log) */
    /* data, model, optimizer, loader, the evaluator and the training batch */
    utg_tokenizer tok;
    utg_dataset *train_ds, *val_ds;
    int32_t *val_tokens;
    size_t n_val;
    utg_model *m;
    utg_optim *opt;
    utg_qat *qat;
    utg_loader *loader;
    utg_eval_opts ev; /* the validation windows */
    int micro_seqs, accum; /* sequences per micro-batch, micro-batches per step */
    int64_t tokens_per_step;
    int32_t *bx, *by;
    float *init_params; /* the weights before the warmup steps */
    /* timers and counters */
    utg_train_state ts;
    double t_start_wall, training_ms, t0, val_loss, val_bpb;
    int step_start, stop_after, qat_on;
    int phase_step;  /* where the current depth plan began (its step time drives a wallclock warmdown) */
    double phase_ms; /* and the training time there */
    /* divergence: the last checkpoint known good, rollbacks so far, the LR factor they left, and the
       first logged train loss with the count of log lines since that stayed 1.5x above it */
    const char *good_ckpt;
    int rollbacks, high_loss_lines, write_failed;
    double lr_factor, first_logged_loss;
    int picture; /* the run ended in a way that still draws loss.svg */
    utg_msg msg;
} train_run;

/* What a step of the run returns: RUN_ON to go on with the next one, or else the exit status. */
#define RUN_ON (-1)

/* ---------------------------------------------------------------------------------------------- */
/* the artifact: calibrate -> quantize -> write -> reload -> evaluate, and the byte budget */

/* the size of `all` brotli-compressed then base85 encoded (5 characters per 4 bytes); 0, or -1 */
static int wrapped_size(const unsigned char *all, size_t n_all, size_t *wrapped) {
    utg_codec br = utg_codec_brotli();
    size_t cap = br.max_packed(n_all, NULL), got = cap;
    unsigned char *out = (unsigned char *)malloc(cap ? cap : 1);
    if (!out || br.compress(all, n_all, out, &got, NULL) != UTG_OK) {
        free(out);
        return -1;
    }
    *wrapped = (got + 3) / 4 * 5;
    free(out);
    return 0;
}

/* The code bytes a submission counts: each file raw, and the whole brotli-compressed then base85
   encoded, as the records' self-extracting wrappers ship it. */
static int count_code(const char *files, size_t *raw, size_t *wrapped, char *names, size_t names_n) {
    char list[1024], *p, *save = NULL;
    unsigned char *all = NULL;
    size_t n_all = 0;
    int rc;
    *raw = *wrapped = 0;
    names[0] = 0;
    snprintf(list, sizeof list, "%s", files);
    for (p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        void *b;
        size_t n;
        utg_msg msg;
        unsigned char *grown;
        if (utg_read_file(p, (size_t)1 << 30, &b, &n, &msg) != UTG_OK) {
            errf_("code bytes: %s (set --code)", msg.text);
            free(all);
            return -1;
        }
        grown = (unsigned char *)realloc(all, n_all + n + 1);
        if (!grown) {
            free(b);
            free(all);
            return -1;
        }
        all = grown;
        memcpy(all + n_all, b, n);
        n_all += n;
        free(b);
        snprintf(names + strlen(names), names_n - strlen(names), "%s%s", names[0] ? ", " : "", p);
    }
    *raw = n_all;
    rc = wrapped_size(all, n_all, wrapped);
    free(all);
    return rc;
}

/* Hessians from GPTQ_CALIBRATION_BATCHES sequences of training data, self-generated text or
   uniform random tokens (utg_model_calibrate), with a log line. */
static utg_hessians *calibrate(utg_model *m, utg_loader *loader, int micro_seqs) {
    const utg_config *cfg = utg_model_config(m);
    utg_hessians *h = NULL;
    char source[32];
    double t0 = now_ms();
    if (utg_model_calibrate(m, loader, micro_seqs, &h) != UTG_OK) {
        errf_("gptq: %s", utg_model_message(m));
        return NULL;
    }
    logf_("gptq:calibration source:%s sequences:%d forwards:%d time:%.0fms",
          knob_word(cfg, "GPTQ_CALIBRATION", source, sizeof source), cfg->gptq_calibration_batches,
          utg_hessians_batches(h), now_ms() - t0);
    return h;
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
            int gi = 3;
            if (t->role == UTG_ROLE_EMBED || t->role == UTG_ROLE_HEAD) gi = 0;
            else if (strstr(t->name, "attn")) gi = 1;
            else if (strstr(t->name, "mlp")) gi = 2;
            if (plan[i].dtype != UTG_DT_Q || gi != g) continue;
            bits += plan[i].bits * (double)t->numel;
            numel += (double)t->numel;
            if (plan[i].bits < lo) lo = plan[i].bits;
            if (plan[i].bits > hi) hi = plan[i].bits;
        }
        if (numel > 0)
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s:%.2f(%d..%d)", buf[0] ? " " : "", groups[g],
                     bits / numel, lo, hi);
    }
}

/* The artifact being made: the Hessians and the plan, the export and its report, the code bytes. */
typedef struct export_job {
    utg_hessians *h;
    utg_tensor_quant *plan;
    int n; /* tensors */
    utg_codec codec;
    utg_export_report rep;
    void *bytes; /* the exported artifact */
    size_t size, code_raw, code_wrapped;
    char names[1024], prov[1024];
} export_job;

/* Exports the model as job->plan says into job->bytes (freeing an earlier export). 0, or -1. */
static int export_plan(train_run *r, export_job *job) {
    if (job->bytes) utg_free(utg_model_allocator(r->m), job->bytes);
    job->bytes = NULL;
    if (utg_model_export(r->m, job->h, &job->codec, job->prov, job->plan, &job->bytes, &job->size,
                         &job->rep) != UTG_OK) {
        errf_("artifact: %s", utg_model_message(r->m));
        return -1;
    }
    return 0;
}

/* every quantized block matrix of the plan at 8 bits */
static void matrices_at_8_bits(utg_model *m, utg_tensor_quant *plan, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (plan[i].dtype == UTG_DT_Q && utg_model_tensor(m, i)->role == UTG_ROLE_MATRIX) plan[i].bits = 8;
}

/* BUDGET_MODE: bit widths chosen to fit; block matrices start at 8 bits and lose bits where it
   costs least. 0, or -1 after saying why. */
static int budget_export(train_run *r, export_job *job) {
    const utg_config *cfg = r->cfg;
    double target =
        (double)cfg->artifact_budget_bytes - (double)job->code_wrapped - 0.001 * cfg->artifact_budget_bytes;
    double ratio;
    char bits[256];
    int round;
    matrices_at_8_bits(r->m, job->plan, job->n);
    if (export_plan(r, job) != 0) return -1;
    if ((double)job->rep.artifact_bytes <= target)
        logf_("budget_mode: everything at 8 bits fits the target of %.0f bytes (%zu)", target,
              job->rep.artifact_bytes);
    for (round = 1; round <= 4; round++) {
        /* replan while over the target, and once more when the first plan left more than 0.5%
           unused (the codec ratio measured at 8 bits overestimates lower widths) */
        double slack = target - (double)job->rep.artifact_bytes;
        if (slack >= 0 && (round > 2 || slack < 0.005 * target)) break;
        /* the codec's bytes per estimated byte (order-0 entropy of the symbols + scales + floats),
           measured */
        ratio = (double)job->rep.artifact_bytes /
                (job->rep.entropy_bytes + (double)job->rep.scale_bytes + (double)job->rep.float_bytes);
        matrices_at_8_bits(r->m, job->plan, job->n);
        if (utg_model_budget_plan(r->m, job->h, job->plan, job->n, cfg->budget_min_bits, target, ratio) !=
            UTG_OK) {
            errf_("budget_mode: %s", utg_model_message(r->m));
            return -1;
        }
        if (export_plan(r, job) != 0) return -1;
        describe_bits(r->m, job->plan, bits, sizeof bits);
        logf_("budget_mode: round %d target:%.0f bytes (codec ratio %.3f) -> artifact:%zu bytes, bits %s",
              round, target, ratio, job->rep.artifact_bytes, bits);
        if ((double)job->rep.artifact_bytes > target)
            target -= (double)job->rep.artifact_bytes - target + 1000.0;
    }
    if ((double)job->rep.artifact_bytes + (double)job->code_wrapped > (double)cfg->artifact_budget_bytes) {
        errf_("budget_mode: could not fit %d bytes", cfg->artifact_budget_bytes);
        return -1;
    }
    return 0;
}

/* The lines that tell what the export did: bit widths, sizes, the byte budget (tq: when it began). */
static void log_export(train_run *r, const export_job *job, double tq) {
    const utg_config *cfg = r->cfg;
    const utg_export_report *rep = &job->rep;
    size_t total = rep->artifact_bytes + job->code_wrapped;
    char bits[256], clip[32];
    describe_bits(r->m, job->plan, bits, sizeof bits);
    knob_word(cfg, "QUANT_CLIP", clip, sizeof clip);
    logf_("quant: clip:%s gptq:%d bits %s; %d tensors quantized, %d kept float; "
          "weighted relative error %.3g; %.1fs",
          clip, cfg->gptq_enabled > 0, bits, rep->n_quantized, rep->n_float, rep->weighted_err,
          (now_ms() - tq) / 1000.0);
    logf_("artifact: %s %zu bytes (%s; payload %zu: symbols %zu, order-0 entropy %.0f, scales %zu, "
          "floats %zu)",
          r->rf.artifact, rep->artifact_bytes, job->codec.name, rep->raw_bytes, rep->symbol_bytes,
          rep->entropy_bytes, rep->scale_bytes, rep->float_bytes);
    logf_("budget: artifact %zu + code %zu (%s: %zu raw, brotli+base85) = %zu of %d bytes, headroom %lld%s",
          rep->artifact_bytes, job->code_wrapped, job->names, job->code_raw, total,
          cfg->artifact_budget_bytes, (long long)cfg->artifact_budget_bytes - (long long)total,
          total > (size_t)cfg->artifact_budget_bytes ? "  OVER BUDGET" : "");
}

/* GPTQ calibration, the quantization plan, the export (fitted to the budget with BUDGET_MODE), and
   final_model.utga written. 0, or -1. */
static int export_artifact(train_run *r, export_job *job) {
    const utg_config *cfg = r->cfg;
    utg_msg msg;
    char clip[32];
    double tq = now_ms();
    if (cfg->gptq_enabled > 0 || cfg->budget_mode > 0) {
        job->h = calibrate(r->m, r->loader, r->micro_seqs);
        if (!job->h) return -1;
    }
    job->plan = (utg_tensor_quant *)calloc((size_t)job->n, sizeof *job->plan);
    if (!job->plan) return -1;
    utg_model_quant_plan(r->m, job->h, job->plan, job->n);
    snprintf(job->prov, sizeof job->prov,
             "tool=utgolf %s train\nrun_id=%s\nseed=%d\nsteps_val_bpb=%.6f\nquant_clip=%s\ngptq=%d\n"
             "codec=%s\n",
             utg_version(), cfg->run_id ? cfg->run_id : "", UTG_OFF0(cfg->seed), r->val_bpb,
             knob_word(cfg, "QUANT_CLIP", clip, sizeof clip),
             cfg->gptq_enabled > 0, job->codec.name);
    if (cfg->budget_mode > 0) {
        if (budget_export(r, job) != 0) return -1;
    } else if (export_plan(r, job) != 0) {
        return -1;
    }
    if (utg_write_file(r->rf.artifact, job->bytes, job->size, &msg) != UTG_OK) {
        errf_("artifact: %s", msg.text);
        return -1;
    }
    log_export(r, job, tq);
    return 0;
}

/* The reload check: what was written, read back into a model built from the artifact alone and
   evaluated on the training backend (the score Parameter Golf counts). 0, or -1. */
static int check_artifact(train_run *r, const export_job *job) {
    utg_artifact *a = NULL;
    utg_model *m2 = NULL;
    utg_msg msg;
    void *back = NULL;
    size_t back_n = 0, bytes = job->rep.artifact_bytes;
    double q_loss = 0, q_bpb = 0, pre_bpb = r->val_bpb;
    int rc = -1;
    utg_model_desc base; /* the reloaded model runs on the backend that trained it */
    memset(&base, 0, sizeof base);
    base.backend = utg_model_backend(r->m);
    if (utg_read_file_magic(r->rf.artifact, "UTGA", 4, (size_t)1 << 32, &back, &back_n, &msg) != UTG_OK) {
        errf_("artifact: %s", msg.text);
    } else if (utg_artifact_parse(back, back_n, NULL, NULL, &a, &msg) != UTG_OK) {
        errf_("artifact reload: %s", msg.text);
    } else if (utg_model_create_from_artifact(a, &base, &m2) != UTG_OK ||
               utg_model_reserve(m2, r->micro_seqs) != UTG_OK) {
        errf_("artifact reload: %s", utg_model_message(m2));
    } else if (evaluate(m2, &r->tok, r->val_tokens, r->n_val, &r->ev, &q_loss, &q_bpb, &msg) != UTG_OK) {
        errf_("%s", msg.text);
    } else {
        logf_("final_quant val_loss:%.4f val_bpb:%.4f pre_quant_val_bpb:%.4f gap:%+.4f "
              "artifact:%zu bytes total:%zu",
              q_loss, q_bpb, pre_bpb, q_bpb - pre_bpb, bytes, bytes + job->code_wrapped);
        logf_("final_quant_exact val_loss:%.8f val_bpb:%.8f", q_loss, q_bpb);
        sink_printf(&r->metrics,
                    "{\"final_quant_val_loss\":%.6f,\"final_quant_val_bpb\":%.6f,\"pre_quant_val_bpb\":%.6f,"
                    "\"artifact_bytes\":%zu,\"code_bytes\":%zu}\n",
                    q_loss, q_bpb, pre_bpb, bytes, job->code_wrapped);
        rc = 0;
    }
    utg_model_destroy(m2);
    utg_artifact_free(a);
    free(back);
    return rc;
}

/* The artifact: calibrate, quantize, write, reload, evaluate. 0, or -1 after saying why. */
static int finish_artifact(train_run *r) {
    const utg_config *cfg = r->cfg;
    export_job job;
    int rc = -1;
    memset(&job, 0, sizeof job);
    job.codec = cfg->compressor == UTG_COMPRESSOR_STORED ? utg_codec_stored() : utg_codec_brotli();
    job.n = utg_model_tensor_count(r->m);
    if (count_code(r->code_files, &job.code_raw, &job.code_wrapped, job.names, sizeof job.names) != 0)
        return -1;
    if (export_artifact(r, &job) == 0 && check_artifact(r, &job) == 0) rc = 0;
    if (job.bytes) utg_free(utg_model_allocator(r->m), job.bytes);
    free(job.plan);
    utg_hessians_destroy(job.h);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* command line */

static void usage(FILE *f) {
    int i;
    fprintf(
        f,
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
    if (n >= sizeof name) {
        snprintf(msg->text, sizeof msg->text, "knob name too long: %.40s...", key);
        return 0;
    }
    for (i = 0; i <= n; i++) name[i] = key[i] == '-' ? '_' : key[i];
    return utg_config_set(cfg, name, value, msg) == UTG_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* the options that stand alone, and those that take the next argument as their value */
static int is_flag(const char *o) {
    return !strcmp(o, "--no-progress") || !strcmp(o, "--no-artifact") || !strcmp(o, "--force");
}
static int takes_value(const char *o) {
    return !strcmp(o, "--config") || !strcmp(o, "--out") || !strcmp(o, "--resume") ||
           !strcmp(o, "--checkpoint-every") || !strcmp(o, "--max-steps") || !strcmp(o, "--code");
}

/* One option that takes a value, with its value. RUN_ON, or 2 after saying what is wrong. */
static int take_option(train_run *r, const char *o, const char *v) {
    char *end;
    long n;
    if (!strcmp(o, "--config")) {
        if (r->n_configs == 8) {
            fprintf(stderr, "train: at most 8 --config files\n");
            return 2;
        }
        r->config_paths[r->n_configs++] = v;
    } else if (!strcmp(o, "--out")) {
        r->out_dir = v;
    } else if (!strcmp(o, "--resume")) {
        r->resume_path = v;
    } else if (!strcmp(o, "--code")) {
        r->code_files = v;
    } else {
        n = strtol(v, &end, 10);
        if (*end || n < 0 || n > 1000000000L) {
            fprintf(stderr, "train: %s wants a count, got '%s'\n", o, v);
            return 2;
        }
        if (!strcmp(o, "--checkpoint-every")) r->checkpoint_every = (int)n;
        else r->max_steps = (int)n;
    }
    return RUN_ON;
}

/* The options, a first pass over the arguments (the knobs come in the second, read_knobs). RUN_ON,
   or the exit status: 0 after --help, 2 after a usage error. */
static int parse_options(train_run *r, int argc, char **argv) {
    int a;
    for (a = 1; a < argc; a++) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(o, "--no-progress")) r->progress_on = 0;
        else if (!strcmp(o, "--no-artifact")) r->no_artifact = 1;
        else if (!strcmp(o, "--force")) r->force = 1;
        else if (takes_value(o)) {
            if (!v) {
                fprintf(stderr, "train: %s needs a value\n", o);
                return 2;
            }
            if (take_option(r, o, v) != RUN_ON) return 2;
            a++;
        }
    }
    return RUN_ON;
}

/* The --config file number ci, read and applied. RUN_ON, or 2 after saying why. */
static int read_config_file(train_run *r, int ci) {
    const char *path = r->config_paths[ci];
    size_t n;
    void *buf;
    if (utg_read_file(path, 1 << 20, &buf, &n, &r->msg) != UTG_OK) {
        fprintf(stderr, "train: %s\n", r->msg.text);
        return 2;
    }
    if (memchr(buf, 0, n)) { /* the parser would stop there and ignore the rest */
        fprintf(stderr, "train: %s: byte %zu is NUL: a config file is text (KEY=VALUE lines)\n", path,
                (size_t)((char *)memchr(buf, 0, n) - (char *)buf));
        free(buf);
        return 2;
    }
    r->config_texts[ci] = (char *)realloc(buf, n + 1);
    if (!r->config_texts[ci]) {
        free(buf);
        return 2;
    }
    r->config_texts[ci][n] = 0;
    if (utg_config_parse_text(&r->desc.config, r->config_texts[ci], &r->msg) != UTG_OK) {
        fprintf(stderr, "train: %s: %s\n", path, r->msg.text);
        return 2;
    }
    return RUN_ON;
}

/* A knob given as KEY=VALUE: o is the argument arg without its leading dashes. RUN_ON, or 2. */
static int set_knob_pair(train_run *r, const char *o, const char *arg) {
    const char *eq = strchr(o, '=');
    char key[128];
    if ((size_t)(eq - o) >= sizeof key) {
        fprintf(stderr, "train: argument too long: %.40s\n", arg);
        return 2;
    }
    memcpy(key, o, (size_t)(eq - o));
    key[eq - o] = 0;
    if (!set_knob(&r->desc.config, key, eq + 1, &r->msg)) {
        fprintf(stderr, "train: %s\n", r->msg.text);
        return 2;
    }
    return RUN_ON;
}

/* The knobs of the command line, a second pass over the arguments: KEY=VALUE, --KEY=VALUE and
   --KEY VALUE. RUN_ON, or 2 after saying what is wrong. */
static int apply_arguments(train_run *r, int argc, char **argv) {
    int a;
    for (a = 1; a < argc; a++) {
        const char *o = argv[a];
        if (is_flag(o)) continue;
        if (takes_value(o)) {
            a++;
            continue;
        }
        while (*o == '-') o++;
        if (strchr(o, '=')) {
            if (set_knob_pair(r, o, argv[a]) != RUN_ON) return 2;
        } else if (argv[a][0] == '-' && a + 1 < argc) {
            if (!set_knob(&r->desc.config, o, argv[a + 1], &r->msg)) {
                fprintf(stderr, "train: %s (try --help)\n", r->msg.text);
                return 2;
            }
            a++;
        } else {
            fprintf(stderr, "train: unexpected argument '%s' (try --help)\n", argv[a]);
            return 2;
        }
    }
    return RUN_ON;
}

/* The knobs: defaults < --config files (in order) < environment < arguments, resolved and checked.
   RUN_ON, or 2 after saying what is wrong. */
static int read_knobs(train_run *r, int argc, char **argv) {
    int ci, rc;
    for (ci = 0; ci < r->n_configs; ci++) { /* in order: a later file overrides an earlier one */
        rc = read_config_file(r, ci);
        if (rc != RUN_ON) return rc;
    }
    if (utg_config_apply_env(&r->desc.config, &r->msg) != UTG_OK) {
        fprintf(stderr, "train: environment: %s\n", r->msg.text);
        return 2;
    }
    rc = apply_arguments(r, argc, argv);
    if (rc != RUN_ON) return rc;
    r->desc.config = utg_config_resolve(&r->desc.config);
    if (utg_config_validate(&r->desc.config, &r->msg) != UTG_OK) {
        fprintf(stderr, "train: %s\n", r->msg.text);
        return 2;
    }
    r->cfg = &r->desc.config;
    return RUN_ON;
}

/* ---------------------------------------------------------------------------------------------- */
/* checkpoints, the config dump, failed writes */

/* Writes the checkpoint only when the state in it gives a finite loss on the batch bx/by (a forward
   pass, no update), so that a diverged state never replaces the last good checkpoint. Returns 0 when
   written, 1 when the state is not finite (*loss says what it gave; nothing written), -1 when the
   write failed (message printed; the previous file is intact). */
static int save_checkpoint(train_run *r, double *loss) {
    void *bytes = NULL;
    size_t size = 0;
    utg_msg msg;
    utg_result res;
    *loss = 0.0;
    res = utg_model_forward(r->m, r->bx, r->by, r->micro_seqs, loss);
    if (!isfinite(*loss)) return 1; /* (the forward refuses a non-finite loss) */
    if (res != UTG_OK) {
        errf_("checkpoint: %s", utg_model_message(r->m));
        return -1;
    }
    res = utg_checkpoint_save(r->m, r->opt, r->loader, &r->ts, &bytes, &size);
    if (res != UTG_OK) {
        errf_("checkpoint: %s", utg_model_message(r->m));
        return -1;
    }
    res = utg_write_file(r->rf.ckpt, bytes, size, &msg);
    utg_free(utg_model_allocator(r->m), bytes);
    if (res != UTG_OK) {
        errf_("checkpoint: %s", msg.text);
        return -1;
    }
    logf_("checkpoint: %s (%.1f MB, step %lld)", r->rf.ckpt, size / 1e6, (long long)r->ts.step);
    return 0;
}

/* Loads a checkpoint into the model, optimizer and loader (--resume, and ON_NONFINITE=rollback). */
static int load_checkpoint(train_run *r, const char *path) {
    void *buf;
    size_t n;
    utg_msg msg;
    if (utg_read_file_magic(path, "UTGCKPT1", 8, (size_t)1 << 40, &buf, &n, &msg) != UTG_OK) {
        errf_("resume: %s", msg.text);
        return -1;
    }
    if (utg_checkpoint_load(r->m, r->opt, r->loader, &r->ts, buf, n) != UTG_OK) {
        free(buf);
        errf_("resume: %s: %s", path, utg_model_message(r->m));
        return -1;
    }
    free(buf);
    if (r->ts.step >= INT_MAX) { /* the loop counts steps in int, as ITERATIONS does */
        errf_("resume: %s is at step %lld, past the trainer's step counter (%d)", path, (long long)r->ts.step,
              INT_MAX - 1);
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
            if (!grown) {
                free(all);
                all = NULL;
                break;
            }
            all = grown;
            cap = 2 * cap + (size_t)n;
        }
        memcpy(all + at, line, (size_t)n);
        at += (size_t)n;
    }
    if (!all) {
        errf_("out of memory logging the config");
        return;
    }
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

/* ---------------------------------------------------------------------------------------------- */
/* the steps of a run, in the order main takes them; each returns RUN_ON or the exit status */

static void run_init(train_run *r) {
    memset(r, 0, sizeof *r);
    r->code_files = "utgolf.h,examples/train.c";
    r->metrics.fd = -1;
    r->progress_on = isatty(2);
    r->stop_after = -1;
    r->lr_factor = 1.0;
    r->first_logged_loss = -1.0;
    r->t_start_wall = now_ms();
}

/* RUN_ID, or one made of the local time */
static void name_run(train_run *r) {
    time_t t;
    struct tm tmv;
    if (r->cfg->run_id && r->cfg->run_id[0]) {
        snprintf(r->run_id, sizeof r->run_id, "%s", r->cfg->run_id);
        return;
    }
    t = time(NULL);
    localtime_r(&t, &tmv);
    strftime(r->run_id, sizeof r->run_id, "run-%Y%m%d-%H%M%S", &tmv);
}

static void name_files(run_files *rf) {
    snprintf(rf->log, sizeof rf->log, "%s/train.log", rf->dir);
    snprintf(rf->metrics, sizeof rf->metrics, "%s/metrics.jsonl", rf->dir);
    snprintf(rf->svg, sizeof rf->svg, "%s/loss.svg", rf->dir);
    snprintf(rf->ckpt, sizeof rf->ckpt, "%s/checkpoint.utgc", rf->dir);
    snprintf(rf->weights, sizeof rf->weights, "%s/model.safetensors", rf->dir);
    snprintf(rf->artifact, sizeof rf->artifact, "%s/final_model.utga", rf->dir);
}

/* The run directory and its files: an earlier run's checkpoint is not replaced by accident; opens
   train.log (appended: a failed start never wipes an earlier run's log) and logs the config. */
static int open_run_dir(train_run *r) {
    run_files *rf = &r->rf;
    name_run(r);
    if (r->out_dir && strlen(r->out_dir) >= sizeof rf->dir) {
        fprintf(stderr, "train: --out path has %zu bytes, more than the %zu this trainer takes\n",
                strlen(r->out_dir), sizeof rf->dir - 1);
        return 2;
    }
    if (r->out_dir) snprintf(rf->dir, sizeof rf->dir, "%s", r->out_dir);
    else snprintf(rf->dir, sizeof rf->dir, "runs/%s", r->run_id);
    if (mkdir_p(rf->dir) != 0) {
        fprintf(stderr, "train: cannot create run directory '%s'\n", rf->dir);
        return 1;
    }
    name_files(rf);
    if (!r->resume_path && !r->force && access(rf->ckpt, F_OK) == 0) {
        fprintf(stderr, "train: '%s' holds a checkpoint from an earlier run: continue it with --resume %s, "
                "or start over with --force\n", rf->dir, rf->ckpt);
        return 2;
    }
    if (!sink_open(&g_log, rf->log, 0)) {
        fprintf(stderr, "train: cannot write in '%s': %s\n", rf->dir, strerror(errno));
        return 1;
    }
    logf_("utgolf %s trainer  run_id:%s  out:%s", utg_version(), r->run_id, rf->dir);
    log_config(r->cfg);
    return RUN_ON;
}

/* TOKENIZER_PATH as a SentencePiece model. 0, or -1 after saying why. */
static int load_spm(train_run *r) {
    const char *path = r->cfg->tokenizer_path;
    void *buf;
    size_t n;
    if (!ends_with(path, ".model")) {
        errf_("TOKENIZER_PATH must be a SentencePiece .model file or byte260 (got '%s')", path);
        return -1;
    }
    if (utg_read_file(path, 64u << 20, &buf, &n, &r->msg) != UTG_OK) {
        errf_("tokenizer: %s", r->msg.text);
        return -1;
    }
    if (utg_tokenizer_load_spm(&r->tok, buf, n, r->cfg->vocab_size, NULL, &r->msg) != UTG_OK) {
        free(buf);
        errf_("tokenizer: %s: %s", path, r->msg.text);
        return -1;
    }
    free(buf);
    if (r->tok.space_piece_id < 0) {
        errf_("tokenizer: %s has no standalone '\xe2\x96\x81' piece: every space would count as "
              "byte-fallback bytes and val_bpb would be wrong (Parameter Golf issue #897)",
              path);
        return -1;
    }
    return 0;
}

/* The tokenizer (byte260 or a SentencePiece model), which val_bpb counts bytes with. */
static int open_tokenizer(train_run *r) {
    const utg_config *cfg = r->cfg;
    if (!strcmp(cfg->tokenizer_path, "byte260")) {
        if (utg_tokenizer_byte260(&r->tok, cfg->vocab_size, NULL, &r->msg) != UTG_OK) {
            errf_("tokenizer: %s", r->msg.text);
            return 1;
        }
    } else if (load_spm(r) != 0) {
        return 1;
    }
    if (r->tok.n_pieces > cfg->vocab_size) {
        errf_("tokenizer has %d pieces but VOCAB_SIZE is %d", r->tok.n_pieces, cfg->vocab_size);
        return 1;
    }
    logf_("val_bpb:enabled tokenizer_kind=%s tokenizer_path=%s pieces:%d",
          r->tok.kind == UTG_TOKENIZER_SPM ? "sentencepiece" : "byte260", cfg->tokenizer_path,
          r->tok.n_pieces);
    return RUN_ON;
}

/* TRAIN_FILES or VAL_FILES, or else DATA_PATH's fineweb shards of that kind */
static void data_glob(char *buf, size_t n, const char *files, const char *data_path, const char *kind) {
    if (files && files[0]) snprintf(buf, n, "%s", files);
    else snprintf(buf, n, "%s/fineweb_%s_*.bin", data_path, kind);
}

/* The training shards, and the validation stream read whole into memory. */
static int open_data(train_run *r) {
    const utg_config *cfg = r->cfg;
    uint64_t nv;
    data_glob(r->train_glob, sizeof r->train_glob, cfg->train_files, cfg->data_path, "train");
    data_glob(r->val_glob, sizeof r->val_glob, cfg->val_files, cfg->data_path, "val");
    if (utg_dataset_open(r->train_glob, cfg->vocab_size, NULL, &r->train_ds, &r->msg) != UTG_OK) {
        errf_("train data: %s", r->msg.text);
        return 1;
    }
    if (utg_dataset_open(r->val_glob, cfg->vocab_size, NULL, &r->val_ds, &r->msg) != UTG_OK) {
        errf_("val data: %s", r->msg.text);
        return 1;
    }
    nv = utg_dataset_tokens(r->val_ds);
    if (nv < 2 || nv > (uint64_t)1 << 34) {
        errf_("val data: %llu tokens is not a usable validation stream", (unsigned long long)nv);
        return 1;
    }
    r->n_val = (size_t)nv;
    r->val_tokens = (int32_t *)malloc(sizeof(int32_t) * r->n_val);
    if (!r->val_tokens) {
        errf_("out of memory for %zu validation tokens", r->n_val);
        return 1;
    }
    if (utg_dataset_read(r->val_ds, 0, r->n_val, r->val_tokens, &r->msg) != UTG_OK) {
        errf_("val data: %s", r->msg.text);
        return 1;
    }
    logf_("train_loader:%s shards:%d tokens:%llu  val_loader:shards:%d tokens:%zu", r->train_glob,
          utg_dataset_shard_count(r->train_ds), (unsigned long long)utg_dataset_tokens(r->train_ds),
          utg_dataset_shard_count(r->val_ds), r->n_val - 1);
    return RUN_ON;
}

/* The model, the optimizer, QAT when asked for, the batch split, the training loader. */
static int build_model(train_run *r) {
    const utg_config *cfg = r->cfg;
    int accum = cfg->grad_accum_steps, micro_seqs, T = cfg->train_seq_len;
    if (utg_model_create(&r->desc, &r->m) != UTG_OK) {
        errf_("model: %s", utg_model_message(r->m));
        return 1;
    }
    if (utg_optim_create(r->m, &r->opt) != UTG_OK) {
        errf_("optimizer: %s", utg_model_message(r->m));
        return 1;
    }
    if (cfg->qat != UTG_QAT_NONE && utg_qat_create(r->m, &r->qat) != UTG_OK) {
        errf_("QAT: %s", utg_model_message(r->m));
        return 1;
    }
    micro_seqs = cfg->train_batch_tokens / accum / T; /* train_gpt.py's integer divisions */
    if (micro_seqs < 1) {
        errf_("TRAIN_BATCH_TOKENS=%d over GRAD_ACCUM_STEPS=%d micro-batches holds no whole "
              "TRAIN_SEQ_LEN=%d sequence", cfg->train_batch_tokens, accum, T);
        return 1;
    }
    if ((int64_t)micro_seqs * accum * T != cfg->train_batch_tokens)
        logf_("note: TRAIN_BATCH_TOKENS=%d rounds down to %d tokens per step (%d x %d sequences of %d)",
              cfg->train_batch_tokens, micro_seqs * accum * T, accum, micro_seqs, T);
    r->accum = accum;
    r->micro_seqs = micro_seqs;
    r->tokens_per_step = (int64_t)micro_seqs * accum * T;
    if (utg_loader_create(r->train_ds,
                          cfg->train_loader == UTG_TRAIN_LOADER_SHUFFLED ? UTG_LOADER_SHUFFLED
                                                                         : UTG_LOADER_SEQUENTIAL,
                          T, 0, 1, (uint64_t)UTG_OFF0(cfg->seed), NULL, &r->loader, &r->msg) != UTG_OK) {
        errf_("train loader: %s", r->msg.text);
        return 1;
    }
    return RUN_ON;
}

/* The validation windows (EVAL_SEQ_LEN, EVAL_STRIDE; batches no larger than a training
   micro-batch) and the buffers of the training batch. */
static int build_evaluator(train_run *r) {
    const utg_config *cfg = r->cfg;
    size_t n_train = (size_t)r->micro_seqs * cfg->train_seq_len;
    r->ev = utg_eval_opts_from_config(cfg, (int64_t)n_train);
    if (r->n_val - 1 < (size_t)r->ev.seq_len && r->ev.stride <= 0) {
        errf_("validation stream (%zu targets) is shorter than one window of %d", r->n_val - 1, r->ev.seq_len);
        return 1;
    }
    /* zeroed: a checkpoint before the first step checks its state on this batch */
    r->bx = (int32_t *)calloc(n_train, sizeof(int32_t));
    r->by = (int32_t *)calloc(n_train, sizeof(int32_t));
    if (!r->bx || !r->by) {
        errf_("out of memory for batches");
        return 1;
    }
    if (utg_model_reserve(r->m, r->micro_seqs) != UTG_OK) {
        errf_("model: %s", utg_model_message(r->m));
        return 1;
    }
    return RUN_ON;
}

/* The model's size, the depth plans the schedule can reach (all built already), the batch shapes. */
static int log_model(train_run *r) {
    utg_model *m = r->m;
    int np = utg_model_plan_count(m), i, vmax = 0;
    char pbuf[1024], when[64];
    for (i = 0; i < np; i++)
        if (utg_model_plan_at(m, i)->n_layers > vmax) vmax = utg_model_plan_at(m, i)->n_layers;
    logf_("model_params:%zu physical_layers:%d virtual_layers:%d", utg_model_param_count(m),
          utg_model_physical_blocks(m), vmax);
    for (i = 0; i < np; i++) {
        const utg_plan *pl = utg_model_plan_at(m, i);
        if (i == 0) snprintf(when, sizeof when, "from the start");
        else if (pl->start_step >= 0) snprintf(when, sizeof when, "from step %d", pl->start_step);
        else snprintf(when, sizeof when, "from %.0f%% of training", 100.0 * pl->start_frac);
        logf_("depth_plan:%d %s: %s", i, when, utg_plan_describe(pl, pbuf, sizeof pbuf));
    }
    logf_("world_size:1 grad_accum_steps:%d micro_batch:%dx%d tokens_per_step:%lld threads:%d", r->accum,
          r->micro_seqs, r->cfg->train_seq_len, (long long)r->tokens_per_step, utg_thread_count());
    logf_("eval: seq_len:%d stride:%d batch:%d windows", r->ev.seq_len, r->ev.stride, r->ev.batch_seqs);
    logf_("activations:%s %.1f KB/token (fp32 storage: %.1f KB/token, bf16: %.1f KB/token)",
          utg_model_activation_dtype(m) == UTG_DT_BF16 ? "bf16" : "fp32",
          utg_model_activation_bytes_per_token(m, utg_model_activation_dtype(m)) / 1024.0,
          utg_model_activation_bytes_per_token(m, UTG_DT_F32) / 1024.0,
          utg_model_activation_bytes_per_token(m, UTG_DT_BF16) / 1024.0);
    return RUN_ON;
}

/* One priming step (number w): the micro-batches and the update. 0, or -1 after saying why. */
static int prime_step(train_run *r, int w) {
    int mi;
    utg_model_zero_grads(r->m);
    for (mi = 0; mi < r->accum; mi++) {
        if (utg_loader_next(r->loader, r->bx, r->by, r->micro_seqs, &r->msg) != UTG_OK) {
            errf_("train data: %s", r->msg.text);
            return -1;
        }
        if (utg_model_forward(r->m, r->bx, r->by, r->micro_seqs, NULL) != UTG_OK ||
            utg_model_backward(r->m, 1.0f / r->accum) != UTG_OK) {
            errf_("warmup: %s", utg_model_message(r->m));
            return -1;
        }
    }
    if (utg_optim_step(r->opt, w, 1.0, NULL) != UTG_OK) {
        errf_("warmup: %s", utg_model_message(r->m));
        return -1;
    }
    return 0;
}

/* train_gpt.py's WARMUP_STEPS: priming steps, then the weights, the optimizer and the loader are
   put back as they were. Not when resuming. */
static int prime(train_run *r) {
    const utg_config *cfg = r->cfg;
    size_t n;
    int w;
    if (UTG_OFF0(cfg->warmup_steps) <= 0 || r->resume_path) return RUN_ON;
    n = utg_model_arena_floats(r->m);
    r->init_params = (float *)malloc(sizeof(float) * n);
    if (!r->init_params) {
        errf_("out of memory");
        return 1;
    }
    utg_model_get(r->m, UTG_ARENA_PARAMS, -1, r->init_params, n);
    for (w = 0; w < cfg->warmup_steps; w++) {
        if (prime_step(r, w) != 0) return 1;
        if (cfg->warmup_steps <= 20 || (w + 1) % 10 == 0 || w + 1 == cfg->warmup_steps)
            logf_("warmup_step:%d/%d", w + 1, cfg->warmup_steps);
    }
    utg_model_set(r->m, UTG_ARENA_PARAMS, -1, r->init_params, n);
    utg_model_zero_grads(r->m);
    utg_optim_reset(r->opt);
    utg_loader_reset(r->loader);
    return RUN_ON;
}

/* --resume: the model, optimizer, loader and counters from the checkpoint. */
static int resume(train_run *r) {
    if (!r->resume_path) return RUN_ON;
    if (load_checkpoint(r, r->resume_path) != 0) return 1;
    r->good_ckpt = r->resume_path;
    r->training_ms = r->ts.train_ms;
    logf_("resumed from %s at step %lld (train_time %.0fms, depth_plan:%d)", r->resume_path,
          (long long)r->ts.step, r->ts.train_ms, utg_model_phase(r->m));
    return RUN_ON;
}

/* Everything is checked: only now is an earlier run's metrics file replaced (or, resuming,
   extended). SIGINT and SIGTERM stop the run after the current step from here on. */
static int start_training(train_run *r) {
    if (!sink_open(&r->metrics, r->rf.metrics, !r->resume_path)) {
        errf_("cannot write '%s': %s", r->rf.metrics, strerror(errno));
        return 1;
    }
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    r->step_start = (int)r->ts.step;
    if (utg_model_phase(r->m) > 0) { /* resumed inside a later plan: its step time from here on */
        r->phase_step = r->step_start;
        r->phase_ms = r->training_ms;
    }
    r->t0 = now_ms();
    return RUN_ON;
}

/* What one training step computed. */
typedef struct step_out {
    double scale, train_loss, gnorm; /* the LR scale of the schedule, the mean loss, the gradient norm */
    const char *bad;                 /* what turned out not finite in this step, NULL when nothing did */
    double bad_value;
} step_out;

/* Validation at `step`, at the last step with the EMA or SWA weights where there are; its time is
   not training time. RUN_ON, or 1 after saying why. */
static int validate(train_run *r, int step, int last_step) {
    const utg_config *cfg = r->cfg;
    double te;
    r->training_ms += now_ms() - r->t0;
    te = now_ms();
    if (last_step && utg_optim_apply_average(r->opt))
        logf_("loaded the %s weights for the final evaluation", cfg->ema_enabled > 0 ? "EMA" : "SWA");
    if (evaluate(r->m, &r->tok, r->val_tokens, r->n_val, &r->ev, &r->val_loss, &r->val_bpb, &r->msg) != UTG_OK) {
        errf_("%s", r->msg.text);
        return 1;
    }
    logf_("step:%d/%d val_loss:%.4f val_bpb:%.4f train_time:%.0fms step_avg:%.2fms eval_time:%.0fms", step,
          cfg->iterations, r->val_loss, r->val_bpb, r->training_ms, r->training_ms / (step > 0 ? step : 1),
          now_ms() - te);
    sink_printf(&r->metrics, "{\"step\":%d,\"val_loss\":%.6f,\"val_bpb\":%.6f,\"train_time_ms\":%.0f}\n",
                step, r->val_loss, r->val_bpb, r->training_ms);
    r->t0 = now_ms();
    return RUN_ON;
}

/* The stop before `step` that --max-steps, a signal or a failed log write asks for, with a
   checkpoint. Returns the exit status; loss.svg is drawn. */
static int stop_with_checkpoint(train_run *r, int step) {
    const char *why = g_interrupted ? "interrupted" : r->write_failed ? "stopping" : "step budget reached";
    double l;
    int w;
    r->training_ms += now_ms() - r->t0;
    r->ts.train_ms = r->training_ms;
    logf_("%s at step %d; resume with --resume %s", why, step, r->rf.ckpt);
    w = save_checkpoint(r, &l);
    if (w > 0)
        errf_("step %d: the state gives a loss of %g: no checkpoint written%s%s", step, l,
              r->good_ckpt ? "; the last good one is " : "", r->good_ckpt ? r->good_ckpt : "");
    r->picture = 1;
    return w != 0 || r->write_failed ? 1 : g_interrupted ? 128 + g_interrupted : 0;
}

/* The depth schedule: switches plans between steps (nothing is allocated). 0, or -1 after an error. */
static int switch_plan(train_run *r, int step, double elapsed) {
    int want = utg_model_schedule_phase(r->m, step, utg_train_frac(r->cfg, step, elapsed));
    char pbuf[1024];
    if (want <= utg_model_phase(r->m)) return 0;
    if (utg_model_set_phase(r->m, want, 1) != UTG_OK) {
        errf_("step %d: %s", step, utg_model_message(r->m));
        return -1;
    }
    r->phase_step = step;
    r->phase_ms = elapsed;
    logf_("depth_plan:%d active at step:%d train_time:%.0fms: %s", want, step, elapsed,
          utg_plan_describe(utg_model_plan(r->m), pbuf, sizeof pbuf));
    sink_printf(&r->metrics, "{\"step\":%d,\"depth_plan\":%d,\"virtual_layers\":%d}\n", step, want,
                utg_model_plan(r->m)->n_layers);
    return 0;
}

/* The micro-batches of a step: forward and backward, with no wait for the backend (their losses
   are summed there; utg_optim_step reads them). 0, or -1 after an error. */
static int accumulate(train_run *r, int step) {
    int mi;
    for (mi = 0; mi < r->accum; mi++) {
        if (utg_loader_next(r->loader, r->bx, r->by, r->micro_seqs, &r->msg) != UTG_OK) {
            errf_("train data: %s", r->msg.text);
            return -1;
        }
        if (utg_model_forward(r->m, r->bx, r->by, r->micro_seqs, NULL) != UTG_OK ||
            utg_model_backward(r->m, 1.0f / r->accum) != UTG_OK) {
            errf_("step %d: %s", step, utg_model_message(r->m));
            return -1;
        }
    }
    return 0;
}

/* The work of a step: the depth schedule, QAT, the micro-batches, the update. 0, or -1 after an
   error; a non-finite loss or gradient norm is no error: out->bad names it, and nothing changed. */
static int compute_step(train_run *r, int step, step_out *out) {
    const utg_config *cfg = r->cfg;
    utg_result res;
    double elapsed = r->training_ms + (now_ms() - r->t0);
    if (switch_plan(r, step, elapsed) != 0) return -1;
    out->scale = utg_lr_scale_phase(cfg, step, elapsed, r->phase_step, r->phase_ms);
    if (r->qat && !r->qat_on && utg_qat_wanted(cfg, step, out->scale)) { /* once on, QAT stays on */
        r->qat_on = 1;
        char mode[32];
        logf_("qat:%s active at step:%d lr_scale:%.4f train_time:%.0fms",
              knob_word(cfg, "QAT", mode, sizeof mode), step, out->scale, elapsed);
        sink_printf(&r->metrics, "{\"step\":%d,\"qat\":1}\n", step);
    }
    if (r->qat_on) utg_qat_begin(r->qat, step); /* forward and backward see the quantized weights */
    utg_model_zero_grads(r->m);
    if (accumulate(r, step) != 0) return -1;
    if (r->qat_on) utg_qat_end(r->qat); /* the optimizer updates the full-precision masters */
    /* the step's one wait: the gradient norm and the loss come back together */
    res = utg_optim_step(r->opt, step, out->scale * r->lr_factor, &out->gnorm);
    out->train_loss = utg_optim_last_loss(r->opt);
    if (res == UTG_OK) return 0;
    if (!isfinite(out->train_loss) || !isfinite(out->gnorm)) { /* refused before any update */
        out->bad = isfinite(out->train_loss) ? "gradient norm" : "training loss";
        out->bad_value = isfinite(out->train_loss) ? out->gnorm : out->train_loss;
        return 0;
    }
    errf_("step %d: %s", step, utg_model_message(r->m));
    return -1;
}

/* A finite blow-up (an absurd LR) runs on: say so once, after three log lines in a row. */
static void watch_divergence(train_run *r, int step, double train_loss) {
    if (r->first_logged_loss < 0) r->first_logged_loss = train_loss;
    r->high_loss_lines = train_loss > 1.5 * r->first_logged_loss ? r->high_loss_lines + 1 : 0;
    if (r->high_loss_lines == 3)
        errf_("warning: step %d: the train loss (%.4f) has stayed above 1.5 x the first logged one (%.4f) "
              "for 3 log lines: the run is diverging (check the learning rates)", step, train_loss,
              r->first_logged_loss);
}

/* the progress bar: steps done, or the wallclock used where that is further along */
static void show_progress(train_run *r, int step, double loss, double approx_ms, double tok_s) {
    const utg_config *cfg = r->cfg;
    double frac = (double)step / cfg->iterations, eta;
    if (cfg->max_wallclock_seconds > 0) {
        double ft = approx_ms / (1000.0 * cfg->max_wallclock_seconds);
        if (ft > frac) frac = ft;
    }
    eta = frac > 0 ? (approx_ms / 1000.0) * (1 - frac) / frac : -1;
    progress(frac, step, eta, loss, tok_s);
}

/* Step `step` done: its line in the log (every TRAIN_LOG_EVERY), its metrics record, the progress bar. */
static void log_step(train_run *r, int step, const step_out *so, double approx_ms) {
    const utg_config *cfg = r->cfg;
    double lr = so->scale * r->lr_factor, step_avg = approx_ms / step;
    double tok_s = (double)r->tokens_per_step / (step_avg / 1000.0);
    if (UTG_OFF0(cfg->train_log_every) > 0 &&
        (step <= 10 || step % cfg->train_log_every == 0 || r->stop_after >= 0)) {
        logf_("step:%d/%d train_loss:%.4f lr_scale:%.4f grad_norm:%.3f train_time:%.0fms step_avg:%.2fms "
              "tok/s:%.0f", step, cfg->iterations, so->train_loss, lr, so->gnorm, approx_ms, step_avg, tok_s);
        watch_divergence(r, step, so->train_loss);
    }
    sink_printf(&r->metrics,
                "{\"step\":%d,\"train_loss\":%.6f,\"lr_scale\":%.6f,\"grad_norm\":%.6f,"
                "\"train_time_ms\":%.0f,\"tokens_per_s\":%.0f}\n",
                step, so->train_loss, lr, so->gnorm, approx_ms, tok_s);
    if (r->progress_on) show_progress(r, step, so->train_loss, approx_ms, tok_s);
}

/* Why a non-finite value stops the run rather than rolling back. */
static const char *nonfinite_stop_reason(const train_run *r) {
    if (r->cfg->on_nonfinite != UTG_ON_NONFINITE_ROLLBACK) return "";
    if (!r->good_ckpt) return ", and no good checkpoint to go back to: use --checkpoint-every";
    return ", and ON_NONFINITE_MAX_ROLLBACKS is spent";
}

/* The non-finite guard: `what` came out as `value` at `step`. Stops the run (exit status 1, loss.svg
   drawn), or with ON_NONFINITE=rollback goes back to the last good checkpoint with half the learning
   rates (RUN_ON). */
static int on_nonfinite(train_run *r, int step, const char *what, double value) {
    const utg_config *cfg = r->cfg;
    clear_progress();
    char mode[32];
    if (cfg->on_nonfinite != UTG_ON_NONFINITE_ROLLBACK || !r->good_ckpt ||
        r->rollbacks >= cfg->on_nonfinite_max_rollbacks) {
        errf_("step %d: the %s is %g: stopping (ON_NONFINITE=%s%s). %s%s", step, what, value,
              knob_word(cfg, "ON_NONFINITE", mode, sizeof mode), nonfinite_stop_reason(r),
              r->good_ckpt ? "The last good checkpoint is " : "No checkpoint was written",
              r->good_ckpt ? r->good_ckpt : "");
        r->picture = 1;
        return 1;
    }
    if (load_checkpoint(r, r->good_ckpt) != 0) return 1;
    r->rollbacks++;
    r->lr_factor *= 0.5;
    r->training_ms = r->ts.train_ms;
    r->phase_step = utg_model_phase(r->m) > 0 ? (int)r->ts.step : 0;
    r->phase_ms = utg_model_phase(r->m) > 0 ? r->training_ms : 0.0;
    r->stop_after = -1;
    logf_("step %d: the %s is %g: rolled back to %s (step %lld), learning rates now x%g (rollback %d of %d)",
          step, what, value, r->good_ckpt, (long long)r->ts.step, r->lr_factor, r->rollbacks,
          cfg->on_nonfinite_max_rollbacks);
    sink_printf(&r->metrics, "{\"step\":%lld,\"rollback\":%d,\"lr_factor\":%g}\n", (long long)r->ts.step,
                r->rollbacks, r->lr_factor);
    r->t0 = now_ms();
    return RUN_ON;
}

/* The --checkpoint-every checkpoint; its time is not training time. As save_checkpoint: 0 written,
   1 the state is not finite (*loss), -1 the write failed. */
static int periodic_checkpoint(train_run *r, double approx_ms, double *loss) {
    double tc = now_ms();
    int w;
    r->ts.train_ms = approx_ms;
    w = save_checkpoint(r, loss);
    if (w < 0) return -1;
    if (w == 0) r->good_ckpt = r->rf.ckpt;
    r->t0 += now_ms() - tc;
    return w;
}

/* One training step at `step`, and what follows it: counters, the log, a checkpoint, the wallclock
   cap. RUN_ON, or the exit status. */
static int train_step(train_run *r, int step) {
    const utg_config *cfg = r->cfg;
    step_out so = {0.0, 0.0, 0.0, NULL, 0.0};
    double approx_ms, l;
    int w;
    if (compute_step(r, step, &so) != 0) return 1;
    if (so.bad) return on_nonfinite(r, step, so.bad, so.bad_value);
    r->ts.step = ++step;
    utg_optim_average(r->opt, step, so.scale);
    r->ts.tokens_seen += r->tokens_per_step;
    approx_ms = r->training_ms + (now_ms() - r->t0);
    r->ts.train_ms = approx_ms;
    log_step(r, step, &so, approx_ms);
    if (sink_failed(&r->metrics)) { /* the next turn of the loop stops the run, with its state saved */
        r->write_failed = 1;
        return RUN_ON;
    }
    if (r->checkpoint_every > 0 && step % r->checkpoint_every == 0) {
        w = periodic_checkpoint(r, approx_ms, &l);
        if (w < 0) return 1;
        if (w > 0) return on_nonfinite(r, step, "loss of the state to checkpoint", l);
    }
    if (r->stop_after < 0 && cfg->max_wallclock_seconds > 0 &&
        approx_ms >= 1000.0 * cfg->max_wallclock_seconds)
        r->stop_after = step;
    return RUN_ON;
}

/* The training loop, with validation every VAL_LOSS_EVERY steps and at the last step. RUN_ON after
   the last step; otherwise the exit status (r->picture says whether loss.svg is still drawn). */
static int train_loop(train_run *r) {
    const utg_config *cfg = r->cfg;
    for (;;) {
        int step = (int)r->ts.step, rc;
        int last_step = step >= cfg->iterations || (r->stop_after >= 0 && step >= r->stop_after);
        int budget_stop = r->max_steps > 0 && step - r->step_start >= r->max_steps;
        int val_due = last_step || (UTG_OFF0(cfg->val_loss_every) > 0 && step % cfg->val_loss_every == 0);
        if ((!budget_stop || last_step) && val_due && validate(r, step, last_step) != RUN_ON) return 1;
        if (last_step) {
            if (r->stop_after >= 0 && step < cfg->iterations)
                logf_("stopping_early: wallclock_cap train_time:%.0fms step:%d/%d", r->training_ms, step,
                      cfg->iterations);
            clear_progress();
            return RUN_ON;
        }
        if (budget_stop || g_interrupted || r->write_failed) return stop_with_checkpoint(r, step);
        rc = train_step(r, step);
        if (rc != RUN_ON) return rc;
    }
}

/* The end of training: the weights, the checkpoint, the summary lines. */
static int save_final(train_run *r) {
    void *bytes = NULL;
    size_t size = 0;
    double wall = (now_ms() - r->t_start_wall) / 1000.0, l, secs = r->training_ms / 1000.0;
    long long steps_run = r->ts.step;
    int w;
    if (utg_model_save_safetensors(r->m, UTG_ARENA_PARAMS, &bytes, &size) != UTG_OK) {
        errf_("weights: %s", utg_model_message(r->m));
        return 1;
    }
    w = utg_write_file(r->rf.weights, bytes, size, &r->msg) == UTG_OK;
    utg_free(utg_model_allocator(r->m), bytes);
    if (!w) {
        errf_("weights: %s", r->msg.text);
        return 1;
    }
    r->ts.train_ms = r->training_ms;
    w = save_checkpoint(r, &l);
    if (w != 0) {
        if (w > 0) errf_("the final state gives a loss of %g: no checkpoint written", l);
        return 1;
    }
    logf_("final val_loss:%.4f val_bpb:%.4f steps:%lld train_time:%.1fs tokens/s:%.0f wall:%.1fs",
          r->val_loss, r->val_bpb, steps_run, secs, steps_run > 0 ? (double)(r->ts.tokens_seen) / secs : 0.0,
          wall);
    logf_("final_exact val_loss:%.8f val_bpb:%.8f", r->val_loss, r->val_bpb);
    logf_("wrote %s, %s, %s, %s", r->rf.weights, r->rf.ckpt, r->rf.metrics, r->rf.svg);
    return RUN_ON;
}

/* The quantized artifact and its reload check, unless --no-artifact. The exit status: 0, or 1 when
   something failed (loss.svg is drawn when only a write of the log or the metrics did). */
static int export_and_check(train_run *r) {
    if (!r->no_artifact && finish_artifact(r) != 0) return 1;
    r->picture = 1;
    return sink_failed(&r->metrics) ? 1 : 0;
}

/* loss.svg from the whole metrics.jsonl, resumes included. Returns the exit status rc, 1 instead of
   0 when the picture could not be written. */
static int draw_picture(train_run *r, int rc) {
    curve train, val, plans;
    char title[256];
    memset(&train, 0, sizeof train);
    memset(&val, 0, sizeof val);
    memset(&plans, 0, sizeof plans);
    snprintf(title, sizeof title, "%s: %d layers x %d, %zu params, val_bpb %.4f", r->run_id,
             r->cfg->num_layers, r->cfg->model_dim, utg_model_param_count(r->m), r->val_bpb);
    load_curves(r->rf.metrics, &train, &val, &plans);
    if (train.n + val.n > 0 && write_svg(r->rf.svg, &train, &val, &plans, title, &r->msg) != 0) {
        errf_("picture: %s", r->msg.text);
        if (rc == 0) rc = 1;
    }
    free(train.x);
    free(train.y);
    free(val.x);
    free(val.y);
    free(plans.x);
    free(plans.y);
    return rc;
}

/* The log and the metrics file closed (a failed write turns a success or a stop by signal into exit
   status 1), everything freed. Returns the exit status. */
static int close_run(train_run *r, int rc) {
    int ci;
    clear_progress();
    if (r->metrics.fd >= 0 && sink_close(&r->metrics) != 0 && (rc == 0 || rc >= 128)) {
        errf_("cannot write '%s': %s", r->metrics.path, strerror(r->metrics.err));
        rc = 1;
    }
    if (g_log.fd >= 0 && sink_close(&g_log) != 0 && (rc == 0 || rc >= 128)) {
        fprintf(stderr, "train: cannot write '%s': %s\n", g_log.path, strerror(g_log.err));
        rc = 1;
    }
    utg_loader_destroy(r->loader);
    utg_dataset_close(r->train_ds);
    utg_dataset_close(r->val_ds);
    utg_tokenizer_free(&r->tok);
    utg_optim_destroy(r->opt);
    utg_qat_destroy(r->qat);
    utg_model_destroy(r->m);
    free(r->val_tokens);
    free(r->bx);
    free(r->by);
    free(r->init_params);
    for (ci = 0; ci < 8; ci++) free(r->config_texts[ci]);
    return rc;
}

/* A run is these steps in order, each going on (RUN_ON) or giving the exit status; a run that
   stopped early (a signal, --max-steps, a non-finite value, a failed log write) still draws loss.svg. */
int main(int argc, char **argv) {
    static int (*const steps[])(train_run *) = {open_run_dir, open_tokenizer, open_data, build_model,
                                                build_evaluator, log_model, prime, resume, start_training,
                                                train_loop, save_final, export_and_check};
    train_run run;
    train_run *r = &run;
    size_t i;
    int rc;
    run_init(r);
    rc = parse_options(r, argc, argv);
    if (rc == RUN_ON) rc = read_knobs(r, argc, argv);
    for (i = 0; rc == RUN_ON && i < sizeof steps / sizeof steps[0]; i++) rc = steps[i](r);
    if (r->picture) rc = draw_picture(r, rc);
    return close_run(r, rc);
}
