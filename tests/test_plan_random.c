/* Random recurrence configurations against an independent oracle of the depth plans.

   Each case draws a tiny model (MODEL_DIM 16, VOCAB_SIZE 32, TRAIN_SEQ_LEN 8) with a random mix of
   the recurrence knobs (RECUR_LAYERS, NUM_LOOPS/LOOP_START/LOOP_END, ENCODER_LAYERS/DECODER_LAYERS,
   UNIVERSAL_*, NUM_LAYER_SCHEDULE, ENABLE_LOOPING_AT, LOOP_PHASE2_AT, RECUR_START_STEP, UNET_SKIPS,
   CONTROL_SCOPE, REPEAT_UNTIE_MLP*, PARALLEL_*, BLOCK_ATTNS, MLP_LAYERS, DISABLE_LAYER0_ATTN and a
   few per-depth features), mostly valid, some not. Either utg_model_create refuses it (a non-OK
   result and a message), or every plan the schedule can reach passes the oracle below from the
   public utg_plan alone, and a forward and backward of batch 2 in that phase give a finite loss,
   finite gradients, zero gradients for what the plan never runs, and the same loss bit for bit
   when the phase is selected again after the others ran.

   The oracle (per plan): blocks name physical blocks, control owners follow CONTROL_SCOPE, visits
   are counted, untied MLP sets are keyed by (block, visit) and copied by the first plan that uses
   them, lanes follow PARALLEL_RESIDUAL, and the U-Net skip stack is sound: every pop reads a slot a
   STRICTLY earlier layer pushed (a push happens at the end of its layer, a pop at its start), slots
   are below n_slots, pops are LIFO, pushes are the encoder's (UNET_SKIPS=half) or the stem's
   (UNET_SKIPS=loop) and pops the decoder's or the tail's. The plans' block lists are the records'
   lists, recomputed here from the knobs (a NUM_LAYER_SCHEDULE phase is a prefix of the full list).

   build/test_plan_random [--seed N | --seed time] [--count N] [--only K] [--print N] [--run-bad] [--stats]
                          [--threads N (default 1; 0: OpenMP's default)] [-v]
   UTG_PLAN_SEED=N or UTG_PLAN_SEED=time does what --seed does. Cases 0..NFIXED-1 are fixed
   configurations (case 0: the UNET_SKIPS=loop + shallow NUM_LAYER_SCHEDULE reproduction); case K
   >= NFIXED depends only on (seed, K), so "--seed S --only K" replays one. --run-bad runs the
   forward even of plans the oracle found unsafe (to watch the crash). */
#define _POSIX_C_SOURCE 200809L
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "test.h"
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- options, crash context */

static uint64_t opt_seed = 20260611ull;
static int opt_count = 5000, opt_only = -1, opt_print = 6, opt_run_bad = 0, opt_verbose = 0, opt_stats = 0, opt_threads = 1;
static char crash_ctx[4096]; /* what was running: printed if the process dies */

static void crash_print(void) {
    static const char head[] = "\n*** test_plan_random died while running:\n";
    ssize_t w;
    fflush(stdout); /* (not async-signal-safe, but the process is dying anyway: keep the report) */
    w = write(2, head, sizeof head - 1);
    w = write(2, crash_ctx, strlen(crash_ctx));
    (void)w;
}
static void on_signal(int sig) {
    crash_print();
    signal(sig, SIG_DFL);
    raise(sig);
}
#if defined(__GNUC__)
/* the sanitizers' runtime (when linked) calls this before it exits on an ASan report */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));
#endif
#if defined(__SANITIZE_ADDRESS__)
/* UBSan's non-recoverable reports exit without the death callback: make them abort (SIGABRT, whose
   handler names the case) and print a stack; UBSAN_OPTIONS still overrides this */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) { return "print_stacktrace=1:abort_on_error=1"; }
#endif

/* ---------------------------------------------------------------- random numbers */

static uint64_t rng_s;
static uint64_t rnd64(void) {
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int rnd(int lo, int hi) { return hi <= lo ? lo : lo + (int)(rnd64() % (uint64_t)(hi - lo + 1)); } /* inclusive */
static int pct(int p) { return (int)(rnd64() % 100) < p; }
static double urand(void) { return (double)(rnd64() >> 11) * (2.0 / 9007199254740992.0) - 1.0; }

/* ---------------------------------------------------------------- a drawn configuration */

enum { F_FLAT, F_RECUR, F_LOOP, F_LISTS, F_UT };
enum { SK_HALF, SK_LOOP, SK_NONE, SK_BAD };
enum { TR_NONE, TR_STEP, TR_FRAC, TR_PROGRESSIVE };
#define MAXV 512

typedef struct {
    char text[2048];
    size_t at;
    /* what the oracle needs to know (meaningful when the model is accepted) */
    int form, L, loops, ls, le, skips, trig, ctrl_virtual, untie, n_untie, untie_list[8];
    int lane_mode, par_start, dis0, n_enc_lists;
    int full[MAXV], n_full;
    int n_sched, sched_step[4], sched_depth[4];
} gcase;

static void add(gcase *g, const char *fmt, ...) {
    va_list ap;
    int w;
    va_start(ap, fmt);
    w = vsnprintf(g->text + g->at, sizeof g->text - g->at, fmt, ap);
    va_end(ap);
    if (w > 0 && g->at + (size_t)w < sizeof g->text) g->at += (size_t)w;
}

static void add_list(gcase *g, const char *key, const int *v, int n) {
    int i;
    add(g, "%s=", key);
    for (i = 0; i < n; i++) add(g, i ? ",%d" : "%d", v[i]);
    add(g, "\n");
}

/* Fixed cases: the known bug's reproduction first, then edges the random draw reaches rarely. */
static const char *const FIXED[] = {
    /* tools/utg-grad reproduction: phase 0 is one layer, inside the stem; it popped slot 1 */
    "NUM_LAYERS=4\nNUM_HEADS=2\nNUM_KV_HEADS=1\nNUM_LOOPS=1\nLOOP_START=2\nLOOP_END=2\nUNET_SKIPS=loop\nNUM_LAYER_SCHEDULE=0:1,3:5\n",
    /* a phase ending in the loop, and one holding the tail's head only */
    "NUM_LAYERS=5\nNUM_LOOPS=2\nLOOP_START=2\nLOOP_END=2\nUNET_SKIPS=loop\nNUM_LAYER_SCHEDULE=0:2,5:4,9:6\n",
    "NUM_LAYERS=6\nNUM_LOOPS=1\nLOOP_START=3\nLOOP_END=3\nUNET_SKIPS=loop\nNUM_LAYER_SCHEDULE=0:3,10:4,20:5\n",
    /* the loop at 0 (no stem: nothing pushes) and at the last layer (no tail: nothing pops) */
    "NUM_LAYERS=3\nNUM_LOOPS=2\nLOOP_START=0\nLOOP_END=1\nUNET_SKIPS=loop\nNUM_LAYER_SCHEDULE=0:1,4:7\n",
    "NUM_LAYERS=3\nNUM_LOOPS=1\nLOOP_START=2\nLOOP_END=2\nUNET_SKIPS=loop\nNUM_LAYER_SCHEDULE=0:1,4:3\n",
    /* depth 1 in every form */
    "NUM_LAYERS=1\n",
    "NUM_LAYERS=4\nRECUR_LAYERS=1,2\nNUM_LAYER_SCHEDULE=0:1,5:6\nREPEAT_UNTIE_MLP=full\n",
    "UNIVERSAL_UNIQUE_BLOCKS=2\nUNIVERSAL_ITERATIONS=3\nNUM_LAYER_SCHEDULE=0:1,3:6\nITER_EMBED=1\n",
    "NUM_LAYERS=3\nENCODER_LAYERS=0,1,2,1\nDECODER_LAYERS=2,0\nNUM_LAYER_SCHEDULE=0:1,4:3,8:6\n",
    /* progressive loops with the stem/tail skips and two lanes */
    "NUM_LAYERS=5\nNUM_LOOPS=2\nLOOP_START=1\nLOOP_END=2\nENABLE_LOOPING_AT=0.2\nLOOP_PHASE2_AT=0.5\nUNET_SKIPS=loop\n"
    "PARALLEL_RESIDUAL=two_lane\nPARALLEL_START_LAYER=3\n",
};
#define NFIXED ((int)(sizeof FIXED / sizeof FIXED[0]))

/* the full (deepest) virtual->physical list of the drawn recurrence form, as the records build it */
static void full_list(gcase *g, const int *recur, int n_recur, const int *enc, int n_enc, const int *dec, int n_dec, int iters) {
    int i, j, cut = 0;
    g->n_full = 0;
#define PUT(x) do { if (g->n_full < MAXV) g->full[g->n_full++] = (x); } while (0)
    switch (g->form) {
    case F_RECUR:
        for (i = 0; i < n_recur; i++) if (recur[i] + 1 > cut) cut = recur[i] + 1;
        for (i = 0; i < cut; i++) PUT(i);
        for (i = 0; i < n_recur; i++) PUT(recur[i]);
        for (i = cut; i < g->L; i++) PUT(i);
        break;
    case F_LOOP:
        if (g->loops <= 0) { for (i = 0; i < g->L; i++) PUT(i); break; } /* NUM_LOOPS=0: no loop */
        for (i = 0; i < g->ls; i++) PUT(i);
        for (j = 0; j <= g->loops; j++) for (i = g->ls; i <= g->le; i++) PUT(i);
        for (i = g->le + 1; i < g->L; i++) PUT(i);
        break;
    case F_LISTS:
        for (i = 0; i < n_enc; i++) PUT(enc[i]);
        for (i = 0; i < n_dec; i++) PUT(dec[i]);
        break;
    case F_UT:
        for (i = 0; i < g->L * iters; i++) PUT(i % g->L);
        break;
    default:
        for (i = 0; i < g->L; i++) PUT(i);
    }
#undef PUT
}

/* "4,5" (pairs: "0:2,10:4") -> ints; -1 on anything else. The fixed cases' lists, read back. */
static int parse_list(const char *s, int *out, int cap, int pairs) {
    int n = 0;
    if (!s || !*s) return 0;
    for (;;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || n >= cap) return -1;
        out[n++] = (int)v;
        s = end;
        if (pairs && (n & 1)) { if (*s != ':') return -1; s++; continue; }
        if (!*s) return n;
        if (*s != ',') return -1;
        s++;
    }
}

/* the recurrence form's own lists, drawn before the full list is built from them */
typedef struct {
    int recur[4], n_recur, enc[8], n_enc, dec[8], n_dec, iters, u;
} form_draw;

/* Draws each form's knobs (a mixed draw may write two); returns the form the model sees. */
static int draw_forms(gcase *g, form_draw *d, int mixed) {
    int i, L = g->L, n_forms = 0, form = F_FLAT;
    if (g->form == F_RECUR || (mixed && pct(50))) {
        d->n_recur = rnd(1, 3);
        for (i = 0; i < d->n_recur; i++) d->recur[i] = pct(3) ? L : rnd(0, L - 1);
        add_list(g, "RECUR_LAYERS", d->recur, d->n_recur);
        n_forms++; form = F_RECUR;
    }
    if (g->form == F_LOOP || (mixed && pct(50))) {
        int loops = pct(3) ? 0 : rnd(1, 3), ls, le;
        i = rnd(0, 9);
        ls = i < 2 ? 0 : i < 4 ? L - 1 : rnd(0, L - 1); /* the loop at the first and last layer often */
        le = pct(40) ? ls : rnd(ls, L - 1);
        if (pct(3)) le = L;          /* past the end: refused */
        if (pct(2)) le = ls - 1;     /* empty segment: refused */
        add(g, "NUM_LOOPS=%d\nLOOP_START=%d\nLOOP_END=%d\n", loops, ls, le);
        g->loops = loops; g->ls = ls; g->le = le;
        if (loops > 0) { n_forms++; form = F_LOOP; }
    }
    if (g->form == F_LISTS || (mixed && pct(40))) {
        d->n_enc = rnd(0, 5);
        d->n_dec = rnd(d->n_enc ? 0 : 1, 6);
        for (i = 0; i < d->n_enc; i++) d->enc[i] = pct(1) ? L : rnd(0, L - 1);
        for (i = 0; i < d->n_dec; i++) d->dec[i] = pct(1) ? L : rnd(0, L - 1);
        if (d->n_enc) add_list(g, "ENCODER_LAYERS", d->enc, d->n_enc);
        if (d->n_dec) add_list(g, "DECODER_LAYERS", d->dec, d->n_dec);
        g->n_enc_lists = d->n_enc;
        n_forms++; form = F_LISTS;
    }
    if (g->form == F_UT || (mixed && pct(40))) {
        d->u = rnd(1, 4);
        d->iters = rnd(1, 4);
        add(g, "UNIVERSAL_UNIQUE_BLOCKS=%d\nUNIVERSAL_ITERATIONS=%d\n", d->u, d->iters);
        n_forms++; form = F_UT;
    }
    return n_forms == 0 ? F_FLAT : form; /* (two or more: refused, the oracle is not asked) */
}

/* Draws a NUM_LAYER_SCHEDULE: 1..3 depths from the loop's edges and the full list, mostly sorted. */
static void draw_schedule(gcase *g) {
    int n = rnd(1, 3), step = 0, p, sorted = pct(70), d;
    int cand[8];
    cand[0] = 1;
    cand[1] = g->ls >= 0 ? g->ls : 1;
    cand[2] = g->ls >= 0 ? g->ls + 1 : 2;
    cand[3] = g->ls >= 0 ? g->ls + (g->le - g->ls + 1) * (g->loops + 1) : g->n_full / 2;
    cand[4] = g->n_full - 1;
    cand[5] = g->n_full;
    cand[6] = rnd(1, g->n_full);
    cand[7] = rnd(1, g->n_full);
    g->n_sched = n;
    for (p = 0; p < n; p++) {
        d = cand[rnd(0, 7)];
        if (d < 1) d = 1;
        if (d > g->n_full) d = g->n_full;
        g->sched_depth[p] = d;
    }
    if (sorted) /* a curriculum: depths grow */
        for (p = 1; p < n; p++) {
            int q, t;
            for (q = p; q > 0 && g->sched_depth[q - 1] > g->sched_depth[q]; q--) {
                t = g->sched_depth[q]; g->sched_depth[q] = g->sched_depth[q - 1]; g->sched_depth[q - 1] = t;
            }
        }
    if (pct(3)) g->sched_depth[rnd(0, n - 1)] = g->n_full + 1; /* too deep: refused */
    add(g, "NUM_LAYER_SCHEDULE=");
    for (p = 0; p < n; p++) {
        if (p) step += pct(3) ? 0 : rnd(1, 1000); /* equal steps: refused */
        g->sched_step[p] = (p == 0 && pct(2)) ? 7 : step; /* not from step 0: refused */
        add(g, p ? ",%d:%d" : "%d:%d", g->sched_step[p], g->sched_depth[p]);
    }
    add(g, "\n");
    if (pct(4)) add(g, "RECUR_START_STEP=%d\n", rnd(1, 100)); /* with a schedule: refused */
}

/* Draws a trigger: progressive loops, a fraction or a step (now and then both: refused). */
static void draw_trigger(gcase *g) {
    int t = rnd(0, 99);
    if (g->form == F_LOOP && t < 35 && g->loops >= 2) {
        double a = rnd(1, 5) / 10.0;
        g->trig = TR_PROGRESSIVE;
        add(g, "ENABLE_LOOPING_AT=%g\nLOOP_PHASE2_AT=%g\n", a, pct(5) ? a : a + rnd(1, 4) / 10.0);
    } else if (t < 60) {
        g->trig = TR_FRAC;
        add(g, "ENABLE_LOOPING_AT=%g\n", rnd(1, 9) / 10.0);
    } else {
        g->trig = TR_STEP;
        add(g, "RECUR_START_STEP=%d\n", rnd(1, 5000));
    }
    if (pct(3)) add(g,
            g->trig == TR_STEP ? "ENABLE_LOOPING_AT=0.5\n" : "RECUR_START_STEP=9\n"); /* both: refused */
}

/* Draws the rest of the recurrence knobs: control scope, untied MLPs, lanes, attention. */
static void draw_recur_rest(gcase *g) {
    int i;
    g->ctrl_virtual = pct(30);
    if (g->ctrl_virtual || pct(10)) add(g, "CONTROL_SCOPE=%s\n", g->ctrl_virtual ? "virtual" : "physical");
    if (pct(1)) add(g, "CONTROL_SCOPE=global\n");
    if (pct(15)) add(g, "MLP_LAYERS=%d\n", pct(95) ? 3 : 4);
    i = rnd(0, 99);
    g->untie = i < 30 ? 1 : i < 50 ? 2 : 0;
    if (g->untie || pct(10))
        add(g, "REPEAT_UNTIE_MLP=%s\n", g->untie == 1 ? "full" : g->untie == 2 ? "down" : "none");
    if (g->untie && pct(50)) {
        g->n_untie = rnd(1, 3);
        for (i = 0; i < g->n_untie; i++) g->untie_list[i] = pct(3) ? g->L : rnd(0, g->L - 1);
        add_list(g, "REPEAT_UNTIE_MLP_LAYERS", g->untie_list, g->n_untie);
    }
    i = rnd(0, 99);
    g->lane_mode = i < 40 ? UTG_LANE_SINGLE : i < 60 ? UTG_LANE_GPTJ
                 : i < 80 ? UTG_LANE_TWO : UTG_LANE_PARALLEL;
    g->par_start = 8;
    if (g->lane_mode != UTG_LANE_SINGLE) {
        static const char *names[] = {"none", "gptj", "two_lane", "parallel"};
        g->par_start = pct(20) ? 0 : pct(20) ? g->L - 1 : rnd(0, g->L);
        add(g, "PARALLEL_RESIDUAL=%s\nPARALLEL_START_LAYER=%d\n", names[g->lane_mode], g->par_start);
        if (pct(30)) add(g, "PARALLEL_FINAL_LANE=%s\n", pct(50) ? "attn" : "mlp");
    }
    /* double attention works on one lane (refused with parallel residuals: rarely drawn there) */
    if (pct(g->lane_mode == UTG_LANE_SINGLE ? 20 : 2)) add(g, "BLOCK_ATTNS=%d\n", pct(95) ? 2 : 3);
    g->dis0 = pct(12);
    if (g->dis0) add(g, "DISABLE_LAYER0_ATTN=1\n");
}

/* Draws the per-depth features, sized by the deepest plan and read per virtual layer (one lane). */
static void draw_features(gcase *g) {
    int i = (g->lane_mode == UTG_LANE_TWO || g->lane_mode == UTG_LANE_PARALLEL) && pct(90) ? 99 : rnd(0, 99);
    if (i < 6) add(g, "ITER_EMBED=1\n");
    else if (i < 12) add(g, "ITER_SCALE=1\n");
    else if (i < 16) add(g, "FILM=1\n");
    else if (i < 20) add(g, "SHC_ENABLED=1\n");
    if (pct(8)) add(g, "NORM_BIAS=1\n");
    if (pct(10)) add(g, "SKIP_GATES_ENABLED=1\n");
    if (!g->dis0 && pct(6)) add(g, "VALUE_RESIDUAL=1\n");
    if (pct(6)) add(g, "LN_SCALE=1\n");
    if (pct(6)) add(g, "XSA_LAST_N=%d\n", rnd(1, 4));
    if (pct(6)) add(g, "Q_GAIN_SCOPE=control\n");
    if (pct(6)) {
        int v[2], n = rnd(1, 2);
        for (i = 0; i < n; i++) v[i] = rnd(0, g->n_full - 1);
        if (n == 2 && v[0] == v[1]) n = 1;
        add(g, "VE_ENABLED=1\nVE_DIM=8\n");
        add_list(g, "VE_LAYERS", v, n);
    }
    if (pct(10)) add(g, "TIE_EMBEDDINGS=0\n");
}

/* Draws case k of the seed. */
static void draw(gcase *g, uint64_t seed, int k) {
    form_draw d;
    int i, L, mixed;
    memset(g, 0, sizeof *g);
    memset(&d, 0, sizeof d);
    d.iters = d.u = 1;
    rng_s = seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(k + 1));
    rnd64();
    L = g->L = rnd(1, 6);
    add(g, "NUM_HEADS=%d\nNUM_KV_HEADS=%d\n", pct(50) ? 2 : 4, pct(50) ? 1 : 2);
    i = rnd(0, 99);
    g->form = i < 8 ? F_FLAT : i < 23 ? F_RECUR : i < 65 ? F_LOOP : i < 80 ? F_LISTS : F_UT;
    mixed = pct(3); /* a second recurrence form: refused */
    add(g, "NUM_LAYERS=%d\n", L);
    /* each form's knobs; what the model sees is decided by what was written (a mixed draw may
       still hold one form only, e.g. NUM_LOOPS=0 beside RECUR_LAYERS) */
    g->ls = g->le = -1;
    g->form = draw_forms(g, &d, mixed);
    if (g->form == F_UT) g->L = d.u;
    if (g->form != F_LOOP) g->ls = g->le = -1;
    full_list(g, d.recur, d.n_recur, d.enc, d.n_enc, d.dec, d.n_dec, d.iters);
    /* U-Net skips: the stem/tail form needs a loop; draw it often there */
    if (g->form == F_LOOP) { i = rnd(0, 99); g->skips = i < 55 ? SK_LOOP : i < 78 ? SK_HALF : SK_NONE; }
    else { i = rnd(0, 99); g->skips = i < 55 ? SK_HALF : i < 95 ? SK_NONE : i < 98 ? SK_LOOP : SK_BAD; }
    if (g->skips != SK_HALF || pct(30))
        add(g, "UNET_SKIPS=%s\n", g->skips == SK_HALF ? "half" : g->skips == SK_LOOP ? "loop"
                                 : g->skips == SK_NONE ? "none" : "stack");
    /* phases: a depth schedule, or a trigger (progressive with loops), or neither */
    i = rnd(0, 99);
    if (i < (g->skips == SK_LOOP ? 60 : 40)) draw_schedule(g);
    else if (i < (g->form == F_FLAT ? 43 : 75)) draw_trigger(g);
    draw_recur_rest(g);
    draw_features(g);
}

/* ---------------------------------------------------------------- failures */

typedef struct { const char *kind; int count, first_case; } tally_t;
static tally_t tally[64];
static int n_tally;

typedef struct {
    int k, n, n_kinds;
    const char *kinds[16]; /* the kinds seen in this case: the tally counts cases */
    char buf[3072];
    size_t at;
} fails_t;

static void fail(fails_t *f, const char *kind, const char *fmt, ...) {
    va_list ap;
    int i, w;
    for (i = 0; i < f->n_kinds && strcmp(f->kinds[i], kind); i++) {}
    if (i == f->n_kinds) {
        if (f->n_kinds < 16) f->kinds[f->n_kinds++] = kind;
        for (i = 0; i < n_tally && strcmp(tally[i].kind, kind); i++) {}
        if (i == n_tally && n_tally < 64) { tally[i].kind = kind; tally[i].count = 0; tally[i].first_case = f->k; n_tally++; }
        if (i < n_tally) tally[i].count++;
    }
    f->n++;
    if (f->n > 8) return;
    w = snprintf(f->buf + f->at, sizeof f->buf - f->at, "      [%s] ", kind);
    if (w > 0 && f->at + (size_t)w < sizeof f->buf) f->at += (size_t)w;
    va_start(ap, fmt);
    w = vsnprintf(f->buf + f->at, sizeof f->buf - f->at, fmt, ap);
    va_end(ap);
    if (w > 0 && f->at + (size_t)w < sizeof f->buf) f->at += (size_t)w;
    if (f->at + 1 < sizeof f->buf) { f->buf[f->at++] = '\n'; f->buf[f->at] = 0; }
}

static void one_line(const char *text, char *out, size_t n) {
    size_t i, j = 0;
    for (i = 0; text[i] && j + 1 < n; i++) out[j++] = text[i] == '\n' ? ' ' : text[i];
    while (j > 0 && out[j - 1] == ' ') j--;
    out[j] = 0;
}

/* "0 1 2 | 3 4" with push/pop marks: 0>s pushes slot s, s>3 pops slot s */
static void print_plan(const utg_plan *p, int idx) {
    int i;
    printf("        plan %d: %d layers, n_encoder %d, n_slots %d, lanes_from %d:", idx, p->n_layers, p->n_encoder, p->n_slots,
           p->lanes_from);
    for (i = 0; i < p->n_layers && i < 64; i++) {
        const utg_plan_layer *l = &p->layers[i];
        printf(" ");
        if (l->pop_slot >= 0) printf("%d>", l->pop_slot);
        printf("%d", l->block);
        if (l->push_slot >= 0) printf(">%d", l->push_slot);
    }
    printf("\n");
}

/* ---------------------------------------------------------------- the oracle */

/* tensor `name` exists */
static int has(const utg_model *m, const char *fmt, int i) {
    char nm[UTG_MAX_NAME];
    snprintf(nm, sizeof nm, fmt, i);
    return utg_model_find_tensor(m, nm) >= 0;
}
static int64_t rows(const utg_model *m, const char *name) {
    int t = utg_model_find_tensor(m, name);
    return t < 0 ? -1 : utg_model_tensor(m, t)->shape[0];
}

/* The expected block list of phase p (NULL when the oracle does not know one) and its source list
   (the whole list the phase is a prefix of) for the U-Net positions. */
static int expected_phase(const gcase *g, int p, int n_plans, int *list, int *n_src, int *is_full) {
    int i, j, n = 0;
    *is_full = 0;
    if (g->n_sched) {
        if (p >= g->n_sched) return -1;
        for (i = 0; i < g->sched_depth[p]; i++) list[n++] = g->full[i];
        *n_src = g->n_full;
        *is_full = n == g->n_full;
        return n;
    }
    if (g->trig != TR_NONE && p == 0) {
        for (i = 0; i < g->L; i++) list[n++] = i;
        *n_src = n;
        return n;
    }
    if (g->trig == TR_PROGRESSIVE && p == 1 && n_plans == 3) {
        for (i = 0; i < g->ls; i++) list[n++] = i;
        for (j = 0; j < 2; j++) for (i = g->ls; i <= g->le; i++) list[n++] = i;
        for (i = g->le + 1; i < g->L; i++) list[n++] = i;
        *n_src = n;
        return n;
    }
    for (i = 0; i < g->n_full; i++) list[n++] = g->full[i];
    *n_src = n;
    *is_full = 1;
    return n;
}

typedef struct { int block, visit, set; } rset_seen;

/* what the oracle carries across the plans of one model */
typedef struct {
    const utg_model *m;
    const gcase *g;
    fails_t *f;
    int np, nb, n_seen, max_depth;
    int64_t skip_rows, gate_rows;
    rset_seen seen[4096];
    unsigned char set_used_before[4096];
} oracle_t;

/* what the walk of one plan carries from layer to layer */
typedef struct {
    const utg_plan *P;
    int p, *unsafe;
    int stack[MAXV], sp, pushed_at[MAXV], popped[MAXV], exp[MAXV], n_exp, n_src, first_lane;
    int n_push, n_pop, pop_first, skip_seen[MAXV], is_full;
    unsigned char set_used_here[4096];
} plan_walk;

/* The block list: the plan runs the blocks the recurrence form gives its phase. */
static void oracle_list(oracle_t *o, plan_walk *w) {
    const utg_plan *P = w->P;
    int i, p = w->p;
    w->n_exp = expected_phase(o->g, p, o->np, w->exp, &w->n_src, &w->is_full);
    if (w->n_exp < 0)
        fail(o->f, "plan list", "plan %d is one more than the schedule's %d phases", p, o->g->n_sched);
    else {
        int same = w->n_exp == P->n_layers;
        for (i = 0; same && i < w->n_exp; i++) same = w->exp[i] == P->layers[i].block;
        if (!same) {
            char a[512], b[512];
            size_t x = 0, y = 0;
            a[0] = b[0] = 0;
            for (i = 0; i < w->n_exp && x + 8 < sizeof a; i++)
                x += (size_t)snprintf(a + x, sizeof a - x, "%d ", w->exp[i]);
            for (i = 0; i < P->n_layers && y + 8 < sizeof b; i++)
                y += (size_t)snprintf(b + y, sizeof b - y, "%d ", P->layers[i].block);
            fail(o->f, "plan list", "plan %d runs blocks [%s], the recurrence form gives [%s]", p, b, a);
        }
    }
}

/* Block, control owner and visit of layer i; returns -1 (skip the layer) when the block is out of range. */
static int oracle_block(oracle_t *o, plan_walk *w, int i) {
    const utg_plan_layer *l = &w->P->layers[i];
    const utg_model *m = o->m;
    const gcase *g = o->g;
    fails_t *f = o->f;
    int j, p = w->p, visit = 0;
    if (l->block < 0 || l->block >= o->nb) {
        fail(f, "block", "plan %d layer %d: block %d outside 0..%d", p, i, l->block, o->nb - 1);
        *w->unsafe = 1;
        return -1;
    }
    if (!has(m, "blocks.%d.mlp.fc.weight", l->block) || !has(m, "blocks.%d.mlp.proj.weight", l->block) ||
        (!(l->block == 0 && g->dis0) && !has(m, "blocks.%d.attn.c_q.weight", l->block))) {
        fail(f, "block tensors", "plan %d layer %d: block %d lacks its matrices", p, i, l->block);
        *w->unsafe = 1;
    }
    if (l->ctrl != (g->ctrl_virtual ? i : l->block))
        fail(f, "ctrl", "plan %d layer %d: control owner %d, CONTROL_SCOPE=%s gives %d", p, i, l->ctrl,
             g->ctrl_virtual ? "virtual" : "physical", g->ctrl_virtual ? i : l->block);
    if (l->ctrl < 0 || !has(m, "blocks.%d.attn_scale", l->ctrl) || !has(m, "blocks.%d.mlp_scale", l->ctrl)) {
        fail(f, "ctrl tensors", "plan %d layer %d: no control tensors blocks.%d.*", p, i, l->ctrl);
        *w->unsafe = 1;
    }
    for (j = 0; j < i; j++) visit += w->P->layers[j].block == l->block;
    if (l->visit != visit)
        fail(f, "visit", "plan %d layer %d: visit %d, block %d ran %d times before", p, i, l->visit, l->block,
             visit);
    return visit;
}

/* An untied set's tensors, and one set per (block, visit) across the plans. */
static void oracle_set(oracle_t *o, plan_walk *w, int i, int visit) {
    const utg_plan_layer *l = &w->P->layers[i];
    fails_t *f = o->f;
    int t, j, p = w->p;
    char nm[UTG_MAX_NAME];
    snprintf(nm, sizeof nm, "repeat_mlp.%d.proj.weight", l->mlp_set);
    t = utg_model_find_tensor(o->m, nm);
    if (t < 0 || (o->g->untie == 1) != has(o->m, "repeat_mlp.%d.fc.weight", l->mlp_set)) {
        fail(f, "mlp_set tensors", "plan %d layer %d: untied MLP %d lacks its tensors", p, i, l->mlp_set);
        *w->unsafe = 1;
    } else if (utg_model_tensor(o->m, t)->block != l->block)
        fail(f, "mlp_set", "plan %d layer %d: repeat_mlp.%d belongs to block %d, the layer runs block %d", p,
             i, l->mlp_set, utg_model_tensor(o->m, t)->block, l->block);
    for (j = 0; j < o->n_seen && !(o->seen[j].block == l->block && o->seen[j].visit == visit); j++) {}
    if (j < o->n_seen && o->seen[j].set != l->mlp_set)
        fail(f, "mlp_set", "plan %d layer %d: block %d visit %d uses set %d here, set %d elsewhere", p, i,
             l->block, visit, l->mlp_set, o->seen[j].set);
    else if (j == o->n_seen && o->n_seen < 4096) {
        for (j = 0; j < o->n_seen && o->seen[j].set != l->mlp_set; j++) {}
        if (j < o->n_seen)
            fail(f, "mlp_set", "plan %d layer %d: set %d serves two (block, visit) pairs", p, i, l->mlp_set);
        o->seen[o->n_seen].block = l->block;
        o->seen[o->n_seen].visit = visit;
        o->seen[o->n_seen].set = l->mlp_set;
        o->n_seen++;
    }
    w->set_used_here[l->mlp_set] = 1;
}

/* Untied repeat MLPs: layer i has a set exactly when REPEAT_UNTIE_MLP(_LAYERS) unties its visit. */
static void oracle_untie(oracle_t *o, plan_walk *w, int i, int visit) {
    const utg_plan_layer *l = &w->P->layers[i];
    const gcase *g = o->g;
    int j, p = w->p, listed = g->untie && visit > 0;
    if (listed && g->n_untie) {
        listed = 0;
        for (j = 0; j < g->n_untie; j++) listed |= g->untie_list[j] == l->block;
    }
    if (listed != (l->mlp_set >= 0))
        fail(o->f, "mlp_set", "plan %d layer %d (block %d, visit %d): mlp_set %d, REPEAT_UNTIE_MLP %s it", p,
             i, l->block, visit, l->mlp_set, listed ? "unties" : "does not untie");
    if (l->mlp_set < -1 || l->mlp_set >= 4096) {
        fail(o->f, "mlp_set", "plan %d layer %d: mlp_set %d", p, i, l->mlp_set);
        *w->unsafe = 1;
    } else if (l->mlp_set >= 0) oracle_set(o, w, i, visit);
}

/* Lanes of layer i follow PARALLEL_RESIDUAL and PARALLEL_START_LAYER. */
static void oracle_lane(oracle_t *o, plan_walk *w, int i) {
    const utg_plan_layer *l = &w->P->layers[i];
    const gcase *g = o->g;
    fails_t *f = o->f;
    int p = w->p;
    if (l->lane < UTG_LANE_SINGLE || l->lane > UTG_LANE_PARALLEL) {
        fail(f, "lane", "plan %d layer %d: lane %d", p, i, l->lane);
        *w->unsafe = 1;
    } else if (l->lane != UTG_LANE_SINGLE && l->lane != g->lane_mode)
        fail(f, "lane", "plan %d layer %d: lane mode %d, PARALLEL_RESIDUAL gives %d", p, i, l->lane,
             g->lane_mode);
    if (l->lane != UTG_LANE_SINGLE && w->first_lane < 0) {
        w->first_lane = i;
        if (l->block < g->par_start)
            fail(f, "lane",
                 "plan %d: the first parallel layer %d runs block %d, below PARALLEL_START_LAYER=%d", p, i,
                 l->block, g->par_start);
        if (g->skips != SK_NONE && i < w->P->n_encoder)
            fail(f, "lane", "plan %d: parallel residuals from encoder layer %d", p, i);
    }
    if (w->first_lane >= 0 && (g->lane_mode == UTG_LANE_TWO || g->lane_mode == UTG_LANE_PARALLEL) &&
        l->lane == UTG_LANE_SINGLE) {
        fail(f, "lane", "plan %d layer %d: one lane after the two lanes began at layer %d", p, i,
             w->first_lane);
        *w->unsafe = 1;
    }
    if (l->lane != UTG_LANE_SINGLE && l->push_slot >= 0) {
        fail(f, "lane push",
             "plan %d layer %d: a parallel-residual layer pushes (its forward never stores the slot)", p, i);
        *w->unsafe = 1;
    }
    if (l->block == 0 && g->dis0 && l->lane != UTG_LANE_SINGLE) {
        fail(f, "lane", "plan %d layer %d: attention-free block 0 on lane mode %d", p, i, l->lane);
        *w->unsafe = 1;
    }
}

/* The pop of layer i (at its start): a slot an earlier layer pushed, LIFO, and an unused skip row. */
static void oracle_pop(oracle_t *o, plan_walk *w, int i) {
    const utg_plan_layer *l = &w->P->layers[i];
    fails_t *f = o->f;
    int p = w->p;
    w->n_pop++;
    if (w->pop_first < 0) w->pop_first = i;
    if (l->pop_slot < 0 || l->pop_slot >= w->P->n_slots || l->pop_slot >= MAXV) {
        fail(f, "pop slot range", "plan %d layer %d: pops slot %d, n_slots %d", p, i, l->pop_slot,
             w->P->n_slots);
        *w->unsafe = 1;
    } else if (w->pushed_at[l->pop_slot] < 0) {
        fail(f, "pop unpushed", "plan %d layer %d: pops slot %d, which no earlier layer of the plan pushed%s",
             p, i, l->pop_slot,
             l->push_slot == l->pop_slot ? " (the layer pushes it itself, after the pop)" : "");
        *w->unsafe = 1;
    } else {
        if (w->popped[l->pop_slot])
            fail(f, "pop twice", "plan %d layer %d: slot %d popped again", p, i, l->pop_slot);
        w->popped[l->pop_slot] = 1;
        if (w->sp == 0 || w->stack[w->sp - 1] != l->pop_slot)
            fail(f, "pop order", "plan %d layer %d: pops slot %d, the top of the stack is %d", p, i,
                 l->pop_slot, w->sp ? w->stack[w->sp - 1] : -1);
        else w->sp--;
    }
    if (l->skip_index < 0 || l->skip_index >= o->skip_rows ||
        (o->gate_rows >= 0 && l->skip_index >= o->gate_rows)) {
        fail(f, "skip row", "plan %d layer %d: skip_weights row %d of %lld", p, i, l->skip_index,
             (long long)o->skip_rows);
        *w->unsafe = 1;
    } else if (l->skip_index < MAXV) {
        if (w->skip_seen[l->skip_index])
            fail(f, "skip row", "plan %d layer %d: skip_weights row %d used twice", p, i, l->skip_index);
        w->skip_seen[l->skip_index] = 1;
    }
}

/* The skip stack of layer i (pop at its start, push at its end); which layers push and pop (UNET_SKIPS). */
static void oracle_stack(oracle_t *o, plan_walk *w, int i) {
    const utg_plan_layer *l = &w->P->layers[i];
    const gcase *g = o->g;
    fails_t *f = o->f;
    int p = w->p, n_enc = w->P->n_encoder;
    if (l->pop_slot != -1) oracle_pop(o, w, i);
    if (l->push_slot != -1) {
        w->n_push++;
        if (l->push_slot < 0 || l->push_slot >= w->P->n_slots || l->push_slot >= MAXV) {
            fail(f, "push slot range", "plan %d layer %d: pushes slot %d, n_slots %d", p, i, l->push_slot,
                 w->P->n_slots);
            *w->unsafe = 1;
        } else {
            if (w->pushed_at[l->push_slot] >= 0)
                fail(f, "push twice", "plan %d layer %d: slot %d pushed again", p, i, l->push_slot);
            w->pushed_at[l->push_slot] = i;
            if (w->sp < MAXV) w->stack[w->sp++] = l->push_slot;
        }
    }
    /* which layers push and pop (UNET_SKIPS) */
    if (g->skips == SK_NONE && (l->push_slot != -1 || l->pop_slot != -1))
        fail(f, "unet", "plan %d layer %d: UNET_SKIPS=none, yet it pushes %d / pops %d", p, i, l->push_slot,
             l->pop_slot);
    if (g->skips == SK_HALF && (l->push_slot >= 0) != (i < n_enc))
        fail(f, "unet", "plan %d layer %d: %s, n_encoder %d", p, i,
             l->push_slot >= 0 ? "pushes" : "does not push", n_enc);
    if (g->skips == SK_LOOP && (l->push_slot >= 0) != (i < g->ls))
        fail(f, "unet", "plan %d layer %d: %s; the stem is layers 0..%d", p, i,
             l->push_slot >= 0 ? "pushes" : "does not push", g->ls - 1);
    if (g->skips == SK_HALF && l->pop_slot >= 0 && i < n_enc)
        fail(f, "unet", "plan %d layer %d: an encoder layer pops (n_encoder %d)", p, i, n_enc);
    if (g->skips == SK_LOOP && l->pop_slot >= 0 && w->n_exp >= 0 && i < w->n_src - (g->L - 1 - g->le))
        fail(f, "unet", "plan %d layer %d: pops before the tail (tail from layer %d)", p, i,
             w->n_src - (g->L - 1 - g->le));
}

/* The U-Net pairs as many pushes and pops as both sides have: the decoder's (tail's) first layers pop. */
static void oracle_pairs(oracle_t *o, plan_walk *w) {
    const utg_plan *P = w->P;
    const gcase *g = o->g;
    fails_t *f = o->f;
    int p = w->p, dec_from = g->skips == SK_HALF ? P->n_encoder : w->n_src - (g->L - 1 - g->le);
    int dec_n = P->n_layers - dec_from, want;
    if (dec_n < 0) dec_n = 0;
    want = w->n_push < dec_n ? w->n_push : dec_n;
    if (w->n_exp >= 0 && w->n_pop != want)
        fail(f, "unet", "plan %d: %d pops, %d pushes and %d decoder/tail layers (from %d) want %d", p,
             w->n_pop, w->n_push, dec_n, dec_from, want);
    if (g->skips == SK_HALF && g->form == F_LISTS && w->is_full && P->n_encoder != g->n_enc_lists)
        fail(f, "unet", "plan %d: n_encoder %d, ENCODER_LAYERS has %d", p, P->n_encoder, g->n_enc_lists);
    if (g->skips == SK_HALF && !(g->form == F_LISTS && w->is_full) && w->n_exp >= 0 &&
        P->n_encoder != P->n_layers / 2)
        fail(f, "unet", "plan %d: n_encoder %d, half of %d layers is %d", p, P->n_encoder, P->n_layers,
             P->n_layers / 2);
}

/* Untied sets first used here are the ones this plan copies when the schedule switches to it. */
static void oracle_init_sets(oracle_t *o, plan_walk *w) {
    const utg_plan *P = w->P;
    int j, p = w->p;
    unsigned char listed[4096];
    if (P->n_init_sets < 0 || P->n_init_sets > P->n_layers || (P->n_init_sets > 0 && !P->init_sets)) {
        fail(o->f, "init sets", "plan %d: %d init sets", p, P->n_init_sets);
        return;
    }
    memset(listed, 0, sizeof listed);
    for (j = 0; j < P->n_init_sets; j++) {
        int s = P->init_sets[j];
        if (s < 0 || s >= 4096 || !w->set_used_here[s] || o->set_used_before[s] || listed[s])
            fail(o->f, "init sets", "plan %d copies set %d (used here %d, by an earlier plan %d)", p, s,
                 s >= 0 && s < 4096 ? w->set_used_here[s] : -1,
                 s >= 0 && s < 4096 ? o->set_used_before[s] : -1);
        else listed[s] = 1;
    }
    for (j = 0; j < 4096; j++)
        if (w->set_used_here[j] && !o->set_used_before[j] && !listed[j])
            fail(o->f, "init sets", "plan %d first uses untied set %d but does not copy it", p, j);
    for (j = 0; j < 4096; j++) o->set_used_before[j] |= w->set_used_here[j];
}

/* Checks plan p: its shape and start, its block list, each layer, the U-Net pairs, lanes_from, init sets. */
static void oracle_plan(oracle_t *o, int p, int *unsafe) {
    static plan_walk w;
    const utg_plan *P = utg_model_plan_at(o->m, p);
    const gcase *g = o->g;
    fails_t *f = o->f;
    int i, visit, two_lanes = g->lane_mode == UTG_LANE_TWO || g->lane_mode == UTG_LANE_PARALLEL;
    memset(&w, 0, sizeof w);
    w.P = P; w.p = p; w.unsafe = unsafe; w.first_lane = -1; w.pop_first = -1;
    *unsafe = 0;
    if (!P || !P->layers || P->n_layers < 1 || P->n_layers > MAXV) {
        fail(f, "plan shape", "plan %d: %d layers", p, P ? P->n_layers : -1);
        *unsafe = 1;
        return;
    }
    if (P->n_layers > o->max_depth) o->max_depth = P->n_layers;
    if (P->n_encoder < 0 || P->n_encoder > P->n_layers)
        fail(f, "n_encoder", "plan %d: n_encoder %d outside 0..%d (the encoder is a part of the layers)", p,
             P->n_encoder, P->n_layers);
    if (P->n_slots < 0 || P->n_slots > MAXV) {
        fail(f, "n_slots", "plan %d: n_slots %d", p, P->n_slots);
        *unsafe = 1;
    }
    /* start of the phase */
    if (p == 0 && P->start_step != 0) fail(f, "schedule", "plan 0 starts at step %d", P->start_step);
    if (p > 0 && !(P->start_step > 0) && !(P->start_frac > 0 && P->start_frac < 1))
        fail(f, "schedule", "plan %d has no trigger (step %d, fraction %g)", p, P->start_step, P->start_frac);
    oracle_list(o, &w);
    for (i = 0; i < MAXV; i++) { w.pushed_at[i] = -1; w.popped[i] = 0; w.skip_seen[i] = 0; }
    for (i = 0; i < P->n_layers; i++) {
        if ((visit = oracle_block(o, &w, i)) < 0) continue;
        oracle_untie(o, &w, i, visit);
        oracle_lane(o, &w, i);
        oracle_stack(o, &w, i);
    }
    if (g->skips == SK_HALF || g->skips == SK_LOOP) oracle_pairs(o, &w);
    if (P->lanes_from != (two_lanes ? w.first_lane : -1))
        fail(f, "lanes_from", "plan %d: lanes_from %d, the first two-lane layer is %d", p, P->lanes_from,
             w.first_lane);
    if (two_lanes && w.first_lane >= 0 && rows(o->m, "parallel_post_lambdas") < o->nb) {
        fail(f, "lane tensors", "plan %d: two lanes without parallel_post_lambdas", p);
        *unsafe = 1;
    }
    oracle_init_sets(o, &w);
}

/* Per-virtual-layer tensors cover the deepest plan; returns 1 when one is too short. */
static int oracle_depth_tensors(oracle_t *o) {
    static const char *pv[] = {"iter_embed", "iter_scale", "film", "hc_alpha", "hc_beta"};
    int i, bad = 0;
    for (i = 0; i < 5; i++) {
        int64_t r = rows(o->m, pv[i]);
        if (r >= 0 && r < o->max_depth) {
            fail(o->f, "depth tensors", "%s has %lld rows, the deepest plan %d layers", pv[i], (long long)r,
                 o->max_depth);
            bad = 1;
        }
    }
    if (rows(o->m, "vrl_alphas") >= 0 && rows(o->m, "vrl_alphas") < o->max_depth - 1) {
        fail(o->f, "depth tensors", "vrl_alphas too short");
        bad = 1;
    }
    return bad;
}

/* The schedule starts at phase 0, ends at the last, and reaches each phase, in order, at its trigger. */
static void oracle_phases(oracle_t *o) {
    const utg_model *m = o->m;
    int p, np = o->np;
    if (utg_model_schedule_phase(m, 0, 0.0) != 0)
        fail(o->f, "schedule", "step 0 asks for phase %d", utg_model_schedule_phase(m, 0, 0.0));
    if (utg_model_schedule_phase(m, 1 << 30, 0.999) != np - 1)
        fail(o->f, "schedule", "the end of training asks for phase %d of %d", utg_model_schedule_phase(m,
             1 << 30, 0.999),
             np);
    for (p = 1; p < np; p++) {
        const utg_plan *P = utg_model_plan_at(m, p);
        int at, before;
        if (P->start_step > 0) {
            at = utg_model_schedule_phase(m, P->start_step, 0.0);
            before = utg_model_schedule_phase(m, P->start_step - 1, 0.0);
        } else if (P->start_frac > 0) {
            at = utg_model_schedule_phase(m, 0, P->start_frac);
            before = utg_model_schedule_phase(m, 0, P->start_frac * (1 - 1e-9));
        } else continue;
        if (at != p || before != p - 1)
            fail(o->f, "schedule", "plan %d: the schedule gives phase %d at its trigger, %d just before", p,
                 at, before);
    }
}

/* Checks every plan of m; unsafe[p] = 1 when plan p must not run (an unpushed pop, an index out of
   range: the forward would read memory it does not own). */
static int oracle(const utg_model *m, const gcase *g, fails_t *f, int *unsafe) {
    static oracle_t o;
    int p, bad;
    o.m = m; o.g = g; o.f = f;
    o.np = utg_model_plan_count(m);
    o.nb = utg_model_physical_blocks(m);
    o.skip_rows = rows(m, "skip_weights");
    o.gate_rows = rows(m, "skip_gates");
    o.n_seen = 0;
    o.max_depth = 0;
    memset(o.set_used_before, 0, sizeof o.set_used_before);
    if (o.np < 1 || o.np > 64) { fail(f, "plan count", "%d plans", o.np); return 1; }
    if (o.nb != g->L) fail(f, "physical blocks", "%d physical blocks, the knobs give %d", o.nb, g->L);
    for (p = 0; p < o.np; p++) oracle_plan(&o, p, &unsafe[p]);
    bad = oracle_depth_tensors(&o);
    oracle_phases(&o);
    return bad;
}

/* ---------------------------------------------------------------- running a phase */

static int32_t X[16], Y[16];

static int all_finite(const float *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) if (!isfinite(v[i])) return 0;
    return 1;
}

/* What plan P never runs gets no gradient: blocks.N.* for N neither a block nor a control owner
   of the plan, repeat_mlp.k.* for k no layer uses, skip_weights rows no pop reads, the per-virtual
   rows past the plan's depth. */
static void unused_zero(const utg_model *m, const utg_plan *P, int p, const float *grads, fails_t *f) {
    int t, i, n = utg_model_tensor_count(m);
    for (t = 0; t < n; t++) {
        const utg_tensor_info *ti = utg_model_tensor(m, t);
        const float *gr = grads + ti->offset;
        size_t k, per = ti->shape[0] ? ti->numel / (size_t)ti->shape[0] : 0;
        int idx, len = 0, used = 0, rowwise = 0;
        unsigned char row_used[MAXV];
        if (sscanf(ti->name, "blocks.%d.%n", &idx, &len) == 1 && len > 0) {
            for (i = 0; i < P->n_layers && !used; i++) used = P->layers[i].block == idx || P->layers[i].ctrl == idx;
        } else if (sscanf(ti->name, "repeat_mlp.%d.%n", &idx, &len) == 1 && len > 0) {
            for (i = 0; i < P->n_layers && !used; i++) used = P->layers[i].mlp_set == idx;
        } else if (!strcmp(ti->name, "skip_weights") || !strcmp(ti->name, "skip_gates")) {
            memset(row_used, 0, sizeof row_used);
            for (i = 0; i < P->n_layers; i++)
                if (P->layers[i].pop_slot >= 0 && P->layers[i].skip_index >= 0 && P->layers[i].skip_index < MAXV) row_used[P->layers[i].skip_index] = 1;
            rowwise = 1;
        } else if (!strcmp(ti->name, "iter_embed") || !strcmp(ti->name, "iter_scale") || !strcmp(ti->name, "film")) {
            memset(row_used, 0, sizeof row_used);
            for (i = 0; i < P->n_layers && i < MAXV; i++) row_used[i] = 1;
            rowwise = 1;
        } else continue;
        if (rowwise) {
            for (i = 0; i < ti->shape[0] && i < MAXV; i++) {
                if (row_used[i]) continue;
                for (k = 0; k < per; k++)
                    if (gr[(size_t)i * per + k] != 0.0f) { fail(f, "unused gradient", "phase %d: %s row %d has a gradient, no layer reads it", p, ti->name, i); break; }
            }
            continue;
        }
        if (used) continue;
        for (k = 0; k < ti->numel; k++)
            if (gr[k] != 0.0f) { fail(f, "unused gradient", "phase %d: %s has a gradient, the plan never runs it", p, ti->name); break; }
    }
}

/* ---------------------------------------------------------------- one case */

/* refusal messages, cut at the first digit or quote (--stats) */
static struct { char why[72]; int count; } refusals[256];
static int n_refusals;
static void note_refusal(const char *why) {
    char key[72];
    int i;
    for (i = 0; why[i] && i < 70 && !(why[i] >= '0' && why[i] <= '9') && why[i] != '\''; i++) key[i] = why[i];
    key[i] = 0;
    for (i = 0; i < n_refusals && strcmp(refusals[i].why, key); i++) {}
    if (i == n_refusals) { if (n_refusals == 256) return; snprintf(refusals[i].why, sizeof refusals[i].why, "%s", key); n_refusals++; }
    refusals[i].count++;
}

static int n_cases, n_refused_parse, n_refused_create, n_accepted, n_phases_run, n_failed_cases, n_printed, n_fixed_failed;
static int n_unsafe_skipped;

static void set_ctx(int k, int phase, const char *what, const char *text) {
    char line[2048];
    one_line(text, line, sizeof line);
    snprintf(crash_ctx, sizeof crash_ctx, "  case %d, seed %llu, phase %d, %s\n  config: %s\n  reproduce: test_plan_random --seed %llu --only %d\n",
             k, (unsigned long long)opt_seed, phase, what, line, (unsigned long long)opt_seed, k);
}

static void report(fails_t *f, const gcase *g, const utg_model *m) {
    char line[2048];
    int p;
    n_failed_cases++;
    if (n_printed >= opt_print && !opt_verbose) return;
    n_printed++;
    one_line(g->text, line, sizeof line);
    printf("    case %d (seed %llu): %d failure%s\n      config: %s\n%s", f->k, (unsigned long long)opt_seed, f->n, f->n == 1 ? "" : "s", line, f->buf);
    if (f->n > 8) printf("      ... %d more\n", f->n - 8);
    if (m) for (p = 0; p < utg_model_plan_count(m) && p < 8; p++) print_plan(utg_model_plan_at(m, p), p);
    printf("      reproduce: build/test_plan_random --seed %llu --only %d\n", (unsigned long long)opt_seed, f->k);
}

static int run_case(int k) {
    gcase g;
    fails_t *f = (fails_t *)calloc(1, sizeof(fails_t));
    char text[2200];
    utg_config cfg;
    utg_model_desc d;
    utg_model *m = NULL;
    utg_msg msg;
    utg_result r;
    int unsafe[64], ran[64], np, p, bad, model_unsafe;
    double loss[64];
    size_t n = 0, i;
    float *buf = NULL;
    f->k = k;
    if (k < NFIXED) {
        memset(&g, 0, sizeof g);
        snprintf(g.text, sizeof g.text, "%s", FIXED[k]);
        /* the fixed cases go through the same oracle: recover its knowledge by parsing them back */
        {
            utg_config c0;
            utg_msg m0;
            char t0[2048];
            int recur[8], enc[16], dec[16], nr, ne, nd;
            memset(&c0, 0, sizeof c0); memset(&m0, 0, sizeof m0);
            snprintf(t0, sizeof t0, "%s", FIXED[k]);
            utg_config_parse_text(&c0, t0, &m0);
            c0 = utg_config_resolve(&c0);
            g.L = c0.universal_unique_blocks > 0 ? c0.universal_unique_blocks : c0.num_layers;
            nr = parse_list(c0.recur_layers, recur, 8, 0);
            ne = parse_list(c0.encoder_layers, enc, 16, 0);
            nd = parse_list(c0.decoder_layers, dec, 16, 0);
            g.form = c0.universal_unique_blocks > 0 ? F_UT : nr > 0 ? F_RECUR : c0.num_loops > 0 ? F_LOOP : (ne > 0 || nd > 0) ? F_LISTS : F_FLAT;
            g.loops = c0.num_loops;
            g.ls = c0.loop_start < 0 ? 0 : c0.loop_start;
            g.le = c0.loop_end < 0 ? 0 : c0.loop_end;
            g.n_enc_lists = ne;
            full_list(&g, recur, nr, enc, ne, dec, nd, c0.universal_iterations);
            g.skips = c0.unet_skips == UTG_UNET_SKIPS_LOOP ? SK_LOOP : c0.unet_skips == UTG_UNET_SKIPS_NONE ? SK_NONE : SK_HALF;
            g.trig = c0.loop_phase2_at > 0 ? TR_PROGRESSIVE : c0.enable_looping_at > 0 ? TR_FRAC : c0.recur_start_step > 0 ? TR_STEP : TR_NONE;
            g.ctrl_virtual = c0.control_scope == UTG_CONTROL_SCOPE_VIRTUAL;
            g.untie = c0.repeat_untie_mlp == UTG_REPEAT_UNTIE_MLP_FULL ? 1 : c0.repeat_untie_mlp == UTG_REPEAT_UNTIE_MLP_DOWN ? 2 : 0;
            g.lane_mode = c0.parallel_residual == UTG_PARALLEL_RESIDUAL_GPTJ ? UTG_LANE_GPTJ
                        : c0.parallel_residual == UTG_PARALLEL_RESIDUAL_TWO_LANE ? UTG_LANE_TWO
                        : c0.parallel_residual == UTG_PARALLEL_RESIDUAL_PARALLEL ? UTG_LANE_PARALLEL : UTG_LANE_SINGLE;
            g.par_start = c0.parallel_start_layer < 0 ? 0 : c0.parallel_start_layer;
            g.dis0 = c0.disable_layer0_attn > 0;
            if (c0.num_layer_schedule[0]) {
                int v[8], nv = parse_list(c0.num_layer_schedule, v, 8, 1);
                for (p = 0; p + 1 < nv; p += 2) { g.sched_step[g.n_sched] = v[p]; g.sched_depth[g.n_sched] = v[p + 1]; g.n_sched++; }
            }
        }
    } else {
        draw(&g, opt_seed, k);
    }
    n_cases++;
    snprintf(text, sizeof text, "MODEL_DIM=16\nVOCAB_SIZE=32\nTRAIN_SEQ_LEN=8\n%s", g.text);
    memset(&cfg, 0, sizeof cfg);
    memset(&msg, 0, sizeof msg);
    set_ctx(k, -1, "parsing", g.text);
    if (utg_config_parse_text(&cfg, text, &msg) != UTG_OK) {
        if (!msg.text[0]) fail(f, "silent refusal", "utg_config_parse_text refused without a message");
        else { n_refused_parse++; note_refusal(msg.text); }
        if (opt_verbose) printf("      refused by the parser: %s\n", msg.text);
        goto out;
    }
    memset(&d, 0, sizeof d);
    d.config = cfg;
    set_ctx(k, -1, "utg_model_create", g.text);
    r = utg_model_create(&d, &m);
    if (r != UTG_OK) {
        const char *why = utg_model_message(m);
        if (!why || !why[0] || !m) fail(f, "silent refusal", "utg_model_create returned %d with message '%s'", (int)r, why ? why : "(null)");
        else { n_refused_create++; note_refusal(why); }
        if (opt_verbose) printf("      refused: %s\n", why ? why : "");
        goto out;
    }
    if (!m) { fail(f, "create", "UTG_OK without a model"); goto out; }
    n_accepted++;
    np = utg_model_plan_count(m);
    if (np > 64) np = 64;
    for (p = 0; p < 64; p++) { unsafe[p] = 0; ran[p] = 0; }
    set_ctx(k, -1, "the oracle", g.text);
    model_unsafe = oracle(m, &g, f, unsafe);
    /* random parameters near the model's init: every path carries signal */
    n = utg_model_arena_floats(m);
    buf = (float *)malloc(n * sizeof(float));
    if (!buf) { fail(f, "alloc", "%zu floats", n); goto out; }
    utg_model_get(m, UTG_ARENA_PARAMS, -1, buf, n);
    for (i = 0; i < n; i++) buf[i] += (float)(0.1 * urand());
    utg_model_set(m, UTG_ARENA_PARAMS, -1, buf, n);
    for (p = 0; p < np; p++) {
        const utg_plan *P = utg_model_plan_at(m, p);
        if ((unsafe[p] || model_unsafe) && !opt_run_bad) { n_unsafe_skipped++; continue; }
        set_ctx(k, p, "utg_model_set_phase / forward / backward", g.text);
        if ((r = utg_model_set_phase(m, p, 1)) != UTG_OK) { fail(f, "set_phase", "phase %d: %s", p, utg_model_message(m)); continue; }
        utg_model_zero_grads(m);
        if ((r = utg_model_forward(m, X, Y, 2, &loss[p])) != UTG_OK) { fail(f, "forward", "phase %d: %s", p, utg_model_message(m)); continue; }
        if (!isfinite(loss[p])) fail(f, "loss", "phase %d: loss %g", p, loss[p]);
        if ((r = utg_model_backward(m, 1.0f)) != UTG_OK) { fail(f, "backward", "phase %d: %s", p, utg_model_message(m)); continue; }
        utg_model_get(m, UTG_ARENA_GRADS, -1, buf, n);
        if (!all_finite(buf, n)) fail(f, "gradient", "phase %d: a non-finite gradient", p);
        unused_zero(m, P, p, buf, f);
        ran[p] = 1;
        n_phases_run++;
    }
    /* each phase again, selected after the others ran: the same loss bit for bit */
    for (p = np - 1; p >= 0; p--) {
        double l2 = 0.0;
        if (!ran[p]) continue;
        set_ctx(k, p, "the forward again", g.text);
        if (utg_model_set_phase(m, p, 0) != UTG_OK || utg_model_forward(m, X, Y, 2, &l2) != UTG_OK) { fail(f, "forward", "phase %d again: %s", p, utg_model_message(m)); continue; }
        if (!(l2 == loss[p])) fail(f, "replay", "phase %d: loss %.9g, %.9g before the other phases ran", p, l2, loss[p]);
    }
out:
    bad = f->n > 0;
    if (bad) { report(f, &g, m); if (k < NFIXED) n_fixed_failed++; }
    else if (opt_verbose) {
        char line[2048];
        one_line(g.text, line, sizeof line);
        printf("    case %d ok: %s\n", k, line);
        if (m) for (p = 0; p < utg_model_plan_count(m) && p < 8; p++) print_plan(utg_model_plan_at(m, p), p);
    }
    crash_ctx[0] = 0;
    utg_model_destroy(m);
    free(buf);
    free(f);
    return bad;
}

/* ---------------------------------------------------------------- tests */

static void test_fixed_configs(void) {
    int k, bad = 0;
    for (k = 0; k < NFIXED; k++) bad += run_case(k);
    CHECK(bad == 0, "%d of %d fixed configurations failed", bad, NFIXED);
}

static void test_random_configs(void) {
    int k, bad = 0, a0 = n_accepted, r0 = n_phases_run, p0 = n_refused_parse, c0 = n_refused_create;
    clock_t t0 = clock();
    for (k = NFIXED; k < NFIXED + opt_count; k++) bad += run_case(k);
    printf("      %d random cases: %d accepted (%d phases run), %d refused by the parser, %d by utg_model_create; %.1f s CPU\n", opt_count,
           n_accepted - a0, n_phases_run - r0, n_refused_parse - p0, n_refused_create - c0, (double)(clock() - t0) / CLOCKS_PER_SEC);
    CHECK(bad == 0, "%d of %d random configurations failed (seed %llu)", bad, opt_count, (unsigned long long)opt_seed);
}

static void print_tally(void) {
    int i;
    if (!n_tally) return;
    printf("    failures by kind (cases; first case):");
    for (i = 0; i < n_tally; i++) printf("%s %s %d (case %d)", i ? "," : "", tally[i].kind, tally[i].count, tally[i].first_case);
    printf("\n");
    if (n_unsafe_skipped) printf("    %d unsafe phase%s not run (--run-bad runs them)\n", n_unsafe_skipped, n_unsafe_skipped == 1 ? "" : "s");
}

static uint64_t parse_seed(const char *s) {
    if (!strcmp(s, "time")) return (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    return strtoull(s, NULL, 10);
}

int main(int argc, char **argv) {
    const char *filter = NULL, *env = getenv("UTG_PLAN_SEED");
    int i;
    if (env && *env) opt_seed = parse_seed(env);
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) opt_seed = parse_seed(argv[++i]);
        else if (!strcmp(argv[i], "--count") && i + 1 < argc) opt_count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) opt_only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--print") && i + 1 < argc) opt_print = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--run-bad")) opt_run_bad = 1;
        else if (!strcmp(argv[i], "-v")) opt_verbose = 1;
        else if (!strcmp(argv[i], "--stats")) opt_stats = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) opt_threads = atoi(argv[++i]);
        else if (argv[i][0] != '-') filter = argv[i];
        else { fprintf(stderr, "usage: %s [--seed N|time] [--count N] [--only K] [--print N] [--run-bad] [--stats] [--threads N] [-v] [test filter]\n", argv[0]); return 2; }
    }
    printf("seed %llu (replay: --seed %llu; a fresh one: --seed time or UTG_PLAN_SEED=time)\n", (unsigned long long)opt_seed,
           (unsigned long long)opt_seed);
    fflush(stdout);
#ifdef _OPENMP
    /* tiny models: OpenMP threads mostly wait on each other, far more so on a busy machine */
    if (opt_threads > 0) omp_set_num_threads(opt_threads);
#endif
    signal(SIGABRT, on_signal);
#if !defined(__SANITIZE_ADDRESS__)
    signal(SIGSEGV, on_signal);
    signal(SIGBUS, on_signal);
    signal(SIGFPE, on_signal);
#endif
#if defined(__GNUC__)
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(crash_print);
#endif
    for (i = 0; i < 16; i++) { X[i] = (i * 7 + 3) % 32; Y[i] = (i * 11 + 1) % 32; }
    if (opt_only >= 0) {
        opt_verbose = 1;
        printf("%s case %d\n", run_case(opt_only) ? "FAIL " : "ok   ", opt_only);
        print_tally();
        return n_failed_cases ? 1 : 0;
    }
    RUN(test_fixed_configs);
    RUN(test_random_configs);
    print_tally();
    if (opt_stats)
        for (i = 0; i < n_refusals; i++) printf("    refused %5d x  %s\n", refusals[i].count, refusals[i].why);
    return TEST_SUMMARY();
}
