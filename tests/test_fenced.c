/* The library on a fenced, counting backend (tests/fenced_backend.h): every backend buffer is
   PROT_NONE between ops and every op's pointer arguments are range-checked against its contract, so
   a host access to backend memory dies with SIGSEGV naming the buffer, and a wrong extent aborts
   naming the op and the argument.
   - The wrapper itself: alignment, zero fill, counting, NULL ops kept NULL, the storage types copied,
     the concurrency flag cleared, bf16 operands of their exact extents passed, and (in child
     processes) a host access, an out-of-range argument (f32, and bf16 at 2 bytes an element), a
     storage type that is not one or that the inner table does not list, a double free and an
     overlapping output each caught with their message; an op it does not know refused.
   - Every recipe (each recipes/NAME.env on top of data/austen/run.env, and run.env alone), shrunk to a tiny
     width with its architecture kept, runs the public API end to end: reserve, training steps with
     two micro-batches, clipping, EMA and SWA, QAT on the last steps, the recipe's phase switch,
     evaluation at two lengths, generation, Hessians, export, parse, a model from the artifact,
     loading the artifact, and a checkpoint saved and loaded. Every call must return UTG_OK, and the
     host waits of each training step (download + synchronize, from qat_begin to optim_average) must
     be at most 2; they are printed per step, with the stages of the last step. Each recipe runs
     twice: as it is (ACTIVATION_DTYPE=auto, fp32 on the CPU backend), then with ACTIVATION_DTYPE=bf16,
     whose ops must see bf16 operands and whose losses must stay within LOSS_TOL of the fp32 run's.
   Run from the repository root (the recipes are read at run time). */
#define _DEFAULT_SOURCE /* mmap's MAP_ANONYMOUS, fork, pipe, opendir */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "test.h"
#include "fenced_backend.h"
#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* ---------------------------------------------------------------- the wrapper itself */

static utg_backend *fenced_cpu(void) {
    utg_backend *cpu = NULL, *be = NULL;
    fenced_backend_opts opts;
    memset(&opts, 0, sizeof opts);
    if (utg_backend_cpu_create(NULL, &cpu) != UTG_OK) return NULL;
    if (fenced_backend_create(cpu, opts, &be) != UTG_OK) utg_backend_destroy(cpu);
    return be;
}

/* Runs fn in a child process (no core file) with its stderr in buf; returns the wait status. The
   children run no OpenMP region, and these tests run before any: libgomp's pool does not survive
   fork. */
static int in_child(void (*fn)(void), char *buf, size_t size) {
    int fd[2], status = 0;
    size_t got = 0;
    ssize_t k;
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    if (pipe(fd) != 0) return -1;
    pid = fork();
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    while (got + 1 < size && (k = read(fd[0], buf + got, size - 1 - got)) > 0) got += (size_t)k;
    buf[got] = 0;
    close(fd[0]);
    waitpid(pid, &status, 0);
    return status;
}

static void child_host_read(void) {
    utg_backend *be = fenced_cpu();
    float *b = (float *)be->buf_alloc(be, 256), one = 1.0f;
    be->upload(be, b + 3, &one, sizeof one);
    printf("%g\n", (double)b[3]); /* the host reads backend memory between ops */
}
static void child_matmul_short_b(void) {
    utg_backend *be = fenced_cpu();
    float *c = (float *)be->buf_alloc(be, 4 * 4 * 4), *a = (float *)be->buf_alloc(be, 4 * 8 * 4),
          *b = (float *)be->buf_alloc(be, 8 * 4 * 4 - 4);
    be->matmul(be, UTG_MM_F32, c, a, b, 4, 4, 8, UTG_NO_TRANS, UTG_TRANS, 1.0f, 0.0f); /* B: 31 of 32 */
}
/* bf16 operands are 2 bytes an element: one element too many runs 2 bytes past */
static void child_bf16_overrun(void) {
    utg_backend *be = fenced_cpu();
    void *y = be->buf_alloc(be, 2 * 33), *x = be->buf_alloc(be, 2 * 32);
    be->relu2_fwd(be, UTG_DT_BF16, y, x, 33, 0.0f); /* x holds 32 bf16 elements */
}
static void child_matmul_bf16_short_a(void) {
    utg_backend *be = fenced_cpu();
    void *c = be->buf_alloc(be, 4 * 4 * 4), *a = be->buf_alloc(be, 4 * 8 * 2 - 2),
         *b = be->buf_alloc(be, 8 * 4 * 4);
    be->matmul(be, UTG_MM_TYPES(UTG_DT_F32, UTG_DT_BF16, UTG_DT_F32), c, a, b, 4, 4, 8, UTG_TRANS,
               UTG_NO_TRANS, 1.0f, 0.0f); /* A: 31 of 32 bf16 elements */
}
static void child_fill_bf16_overrun(void) {
    utg_backend *be = fenced_cpu();
    void *b = be->buf_alloc(be, 2 * 10);
    be->fill(be, b, UTG_DT_BF16, 1.0f, 11);
}
static void child_at_f16(void) {
    utg_backend *be = fenced_cpu();
    void *y = be->buf_alloc(be, 64), *x = be->buf_alloc(be, 64);
    be->relu2_fwd(be, UTG_DT_F16, y, x, 8, 0.0f); /* F16 is no storage type */
}
/* an inner backend without bf16 storage: bf16 operands refused */
static void child_bf16_not_listed(void) {
    utg_backend *cpu = NULL, *be = NULL;
    fenced_backend_opts opts = {0};
    void *y, *x;
    utg_backend_cpu_create(NULL, &cpu);
    cpu->storage_dtypes = 1u << UTG_DT_F32;
    cpu->auto_activation_dtype = UTG_DT_F32;
    if (fenced_backend_create(cpu, opts, &be) != UTG_OK) _exit(2);
    y = be->buf_alloc(be, 64), x = be->buf_alloc(be, 64);
    be->relu2_fwd(be, UTG_DT_BF16, y, x, 8, 0.0f);
}
static void child_double_free(void) {
    utg_backend *be = fenced_cpu();
    void *b = be->buf_alloc(be, 64);
    be->buf_free(be, b);
    be->buf_free(be, b);
}
static void child_overlap(void) {
    utg_backend *be = fenced_cpu();
    float *b = (float *)be->buf_alloc(be, 64 * 4);
    be->copy(be, b + 8, b, 16 * sizeof(float)); /* copy's contract: no overlap */
}

/* create refuses a table from another ABI, and one with a nonzero byte where no field it knows
   lies (the padding after auto_activation_dtype, on LP64: as an op added to utgolf.h but not to
   FB_OPS would) */
static void child_bad_abi(void) {
    utg_backend *cpu = NULL, *be = NULL;
    fenced_backend_opts opts = {0};
    utg_backend_cpu_create(NULL, &cpu);
    cpu->abi_version++;
    _exit(fenced_backend_create(cpu, opts, &be) == UTG_ERR_BACKEND ? 1 : 2);
}
static void child_unknown_field(void) {
    utg_backend *cpu = NULL, *be = NULL;
    fenced_backend_opts opts = {0};
    size_t pad = offsetof(utg_backend, auto_activation_dtype) + sizeof cpu->auto_activation_dtype;
    utg_backend_cpu_create(NULL, &cpu);
    if (pad == offsetof(utg_backend, buf_alloc)) _exit(3); /* no padding there on this ABI */
    ((unsigned char *)cpu)[pad] = 1;
    _exit(fenced_backend_create(cpu, opts, &be) == UTG_ERR_BACKEND ? 1 : 2);
}

/* Each child dies as it should, with the message that names the fault. */
static void test_faults_are_caught(void) {
    static const struct {
        void (*fn)(void);
        int sig; /* 0: exit status 1 (the SIGSEGV handler, or a refusal), else the signal */
        const char *says[2];
    } cases[] = {
        {child_host_read, 0, {"SIGSEGV at", "between ops (the last op was upload)"}},
        {child_matmul_short_b, SIGABRT, {"matmul: argument B", "runs 4 bytes past the end"}},
        {child_bf16_overrun, SIGABRT, {"relu2_fwd: argument x", "runs 2 bytes past the end"}},
        {child_matmul_bf16_short_a, SIGABRT, {"matmul: argument A", "runs 2 bytes past the end"}},
        {child_fill_bf16_overrun, SIGABRT, {"fill: argument dst", "runs 2 bytes past the end"}},
        {child_at_f16, SIGABRT, {"relu2_fwd: at 1", "is neither F32 nor BF16"}},
        {child_bf16_not_listed, SIGABRT, {"relu2_fwd: at BF16", "not in the inner backend's storage_dtypes"}},
        {child_double_free, SIGABRT, {"buf_free", "is not a live buffer"}},
        {child_overlap, SIGABRT, {"copy: dst", "overlaps src"}},
        {child_bad_abi, 0, {"inner table has ABI", "this build has"}},
        {child_unknown_field, 0, {"does not know", "before buf_alloc"}},
    };
    char out[8192];
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = in_child(cases[i].fn, out, sizeof out);
        int died = cases[i].sig ? WIFSIGNALED(st) && WTERMSIG(st) == cases[i].sig
                                : WIFEXITED(st) && WEXITSTATUS(st) == 1;
        CHECK(died, "case %zu: wait status 0x%x", i, (unsigned)st);
        CHECK(strstr(out, cases[i].says[0]) && strstr(out, cases[i].says[1]), "case %zu said: %s", i, out);
    }
}

/* Alignment and zero fill, the counters, NULL ops kept NULL, the flag cleared, an unknown op refused. */
static void test_wrapper_basics(void) {
    utg_backend *cpu = NULL, *be = NULL;
    fenced_backend_opts opts;
    fenced_stats st;
    float host[25], *b;
    int i, zero = 1;
    memset(&opts, 0, sizeof opts);
    CHECK(utg_backend_cpu_create(NULL, &cpu) == UTG_OK, "cpu");
    CHECK(fb__first_unknown(cpu, -1) == -1, "every field of the CPU table is known");
    CHECK(fb__first_unknown(cpu, FB_OP_matmul) == (long)offsetof(utg_backend, matmul),
          "an unknown op is found");
    cpu->matmul_bf16 = NULL;
    cpu->auto_activation_dtype = UTG_DT_BF16;
    CHECK(fenced_backend_create(cpu, opts, &be) == UTG_OK, "create");
    CHECK(be->matmul_bf16 == NULL && be->matmul != NULL, "a NULL op stays NULL");
    CHECK(be->storage_dtypes == (1u << UTG_DT_F32 | 1u << UTG_DT_BF16) &&
          be->auto_activation_dtype == UTG_DT_BF16, "storage types copied: 0x%x, %d",
          (unsigned)be->storage_dtypes, (int)be->auto_activation_dtype);
    CHECK(!(be->flags & UTG_BACKEND_CONCURRENT) && be->abi_version == UTG_BACKEND_ABI_VERSION, "flags, ABI");
    b = (float *)be->buf_alloc(be, 100);
    CHECK(((uintptr_t)b & 63) == 0, "64-byte aligned");
    be->download(be, host, b, 100);
    for (i = 0; i < 25; i++) zero &= host[i] == 0.0f;
    CHECK(zero, "zero-filled");
    be->upload(be, b, host, 40);
    be->synchronize(be);
    st = fenced_backend_stats(be);
    CHECK(st.host_waits == 2 && st.downloads == 1 && st.download_bytes == 100 && st.synchronizes == 1,
          "waits %llu", (unsigned long long)st.host_waits);
    CHECK(st.uploads == 1 && st.upload_bytes == 40 && st.live_buffers == 1 && st.calls[FB_OP_upload] == 1,
          "uploads");
    fenced_backend_reset_stats(be);
    be->buf_free(be, b);
    st = fenced_backend_stats(be);
    CHECK(st.host_waits == 0 && st.ops == 1 && st.live_buffers == 0 && st.live_bytes == 0, "reset, free");
    utg_backend_destroy(be);
}

/* bf16 operands of their exact extents pass, and each op's result is rounded to bf16 once: fill
   stores -1.5 (0xbfc0), leaky relu2 with slope 0.5 gives 0.5625 (0x3f10), and a matmul of bf16 C,
   f32 A of ones and bf16 B of 0.5625 over K = 4 gives 2.25 (0x4010). */
static void test_bf16_operands(void) {
    utg_backend *be = fenced_cpu();
    uint16_t host[32];
    void *x, *y, *a, *c;
    int i, ok = 1;
    CHECK(be != NULL, "create");
    if (!be) return;
    x = be->buf_alloc(be, 2 * 32), y = be->buf_alloc(be, 2 * 32);
    a = be->buf_alloc(be, 4 * 16), c = be->buf_alloc(be, 2 * 16);
    be->fill(be, x, UTG_DT_BF16, -1.5f, 32);
    be->relu2_fwd(be, UTG_DT_BF16, y, x, 32, 0.5f);
    be->fill(be, a, UTG_DT_F32, 1.0f, 16);
    be->matmul(be, UTG_MM_TYPES(UTG_DT_BF16, UTG_DT_F32, UTG_DT_BF16), c, a, y, 4, 4, 4, UTG_NO_TRANS,
               UTG_NO_TRANS, 1.0f, 0.0f);
    be->download(be, host, x, sizeof host);
    for (i = 0; i < 32; i++) ok &= host[i] == 0xbfc0;
    be->download(be, host, y, sizeof host);
    for (i = 0; i < 32; i++) ok &= host[i] == 0x3f10;
    be->download(be, host, c, 2 * 16);
    for (i = 0; i < 16; i++) ok &= host[i] == 0x4010;
    CHECK(ok, "bf16 results");
    CHECK(fenced_backend_stats(be).bf16_calls == 3, "%llu calls with bf16 operands",
          (unsigned long long)fenced_backend_stats(be).bf16_calls);
    be->buf_free(be, x), be->buf_free(be, y), be->buf_free(be, a), be->buf_free(be, c);
    utg_backend_destroy(be);
}

/* Unfenced, the host may read a buffer between ops (range checks and counting stay). */
static void test_unfenced(void) {
    utg_backend *cpu = NULL, *be = NULL;
    fenced_backend_opts opts = {1};
    float *b, two = 2.0f;
    CHECK(utg_backend_cpu_create(NULL, &cpu) == UTG_OK && fenced_backend_create(cpu, opts, &be) == UTG_OK,
          "create");
    if (!be) return;
    b = (float *)be->buf_alloc(be, 64);
    be->upload(be, b + 1, &two, sizeof two);
    CHECK(b[0] == 0.0f && b[1] == 2.0f, "read between ops");
    be->buf_free(be, b);
    utg_backend_destroy(be);
}

/* ---------------------------------------------------------------- recipes, tiny */

/* The steps of a run: steps 0 .. N_STEPS-1; the recipe's schedule switches phase at step 2 (the
   overrides below put its switch there); QAT runs from QAT_FROM on. */
#define N_STEPS 5
#define QAT_FROM 3
#define N_SEQS 2 /* sequences per micro-batch */

typedef struct knob {
    const char *key, *value;
} knob;

/* Every recipe: tiny width, vocabulary and sequences (head dim 16), two micro-batches, the schedules
   on the step count (ITERATIONS=5: ENABLE_LOOPING_AT=0.35 switches at step 2), matrices of 64x64
   quantized (QAT and export have work), EMA and SWA on, the stored codec, two calibration batches. */
static const knob tiny[] = {
    {"VOCAB_SIZE", "64"},
    {"MODEL_DIM", "64"},
    {"NUM_HEADS", "4"},
    {"NUM_KV_HEADS", "2"},
    {"TRAIN_SEQ_LEN", "16"},
    {"GRAD_ACCUM_STEPS", "2"},
    {"ITERATIONS", "5"},
    {"MAX_WALLCLOCK_SECONDS", "0"},
    {"QUANT_PASSTHROUGH_NUMEL", "256"},
    {"QAT", "ste"},
    {"EMA_ENABLED", "1"},
    {"SWA_ENABLED", "1"},
    {"SWA_EVERY", "1"},
    {"SWA_START_LR_FRAC", "1"},
    {"COMPRESSOR", "stored"},
    {"GPTQ_CALIBRATION_BATCHES", "2"},
    {"SEED", "7"},
};

static int set_knob(utg_config *c, const char *key, const char *value) {
    utg_msg msg;
    utg_result r = utg_config_set(c, key, value, &msg);
    CHECK(r == UTG_OK, "%s=%s: %s", key, value, msg.text);
    return r == UTG_OK;
}

/* NUM_LAYER_SCHEDULE with every later entry's step moved to 2 ("0:2,2000:6" -> "0:2,2:6") */
static const char *schedule_at_2(const char *s, char *buf, size_t size) {
    size_t o = 0;
    while (*s && o + 16 < size) {
        long step = strtol(s, (char **)&s, 10);
        o += (size_t)snprintf(buf + o, size - o, "%ld", step > 0 ? 2L : 0L);
        while (*s && *s != ',' && o + 1 < size) buf[o++] = *s++;
        if (*s == ',' && o + 1 < size) buf[o++] = *s++;
    }
    buf[o] = 0;
    return buf;
}

/* The knobs that only some recipes set, shrunk where they are set (as tests/recipe_bits.sh does):
   partial RoPE stays partial, BigramHash and the value embedding narrow, the depth switches at
   step 2, NTK keeps its ratio to TRAIN_SEQ_LEN; clipping on where the recipe has none. */
static int shrink_set_knobs(utg_config *c, char *sched, size_t sched_size) {
    int ok = 1;
    if (c->rope_dims) ok &= set_knob(c, "ROPE_DIMS", "8");
    if (c->bigram_vocab_size) ok &= set_knob(c, "BIGRAM_VOCAB_SIZE", "64") && set_knob(c, "BIGRAM_DIM", "16");
    if (c->ve_enabled > 0) ok &= set_knob(c, "VE_DIM", "16");
    if (c->recur_start_step) ok &= set_knob(c, "RECUR_START_STEP", "2");
    if (c->rope_train_seq_len) ok &= set_knob(c, "ROPE_TRAIN_SEQ_LEN", "8");
    if (c->eval_seq_len) ok &= set_knob(c, "EVAL_SEQ_LEN", "32");
    if (c->eval_stride) ok &= set_knob(c, "EVAL_STRIDE", "16");
    if (c->num_layer_schedule && *c->num_layer_schedule)
        ok &= set_knob(c, "NUM_LAYER_SCHEDULE", schedule_at_2(c->num_layer_schedule, sched, sched_size));
    if (!(c->grad_clip_norm > 0.0)) ok &= set_knob(c, "GRAD_CLIP_NORM", "0.3");
    return ok;
}

/* A whole file as a NUL-terminated string (the config keeps pointers into it). */
static char *read_text(const char *path) {
    void *p = NULL;
    size_t n = 0;
    utg_msg msg;
    char *t;
    if (utg_read_file(path, 1u << 20, &p, &n, &msg) != UTG_OK) {
        CHECK(0, "%s: %s", path, msg.text);
        return NULL;
    }
    t = (char *)malloc(n + 1);
    if (t) { memcpy(t, p, n); t[n] = 0; }
    utg_free(NULL, p);
    return t;
}

/* The texts and the schedule string the config points into. */
typedef struct recipe_cfg {
    utg_config cfg;
    char *text[2];
    char sched[64];
} recipe_cfg;

static const char *g_dtype; /* ACTIVATION_DTYPE of the runs, NULL: the recipe's own (auto) */

/* data/austen/run.env, then the recipe on top (as the recipes' "Use:" lines say), then the shrink
   and g_dtype. */
static int recipe_config(const char *path, recipe_cfg *rc) {
    const char *files[2] = {"data/austen/run.env", path};
    int i, n = strcmp(path, files[0]) ? 2 : 1, ok = 1;
    size_t k;
    utg_msg msg;
    memset(rc, 0, sizeof *rc);
    for (i = 0; i < n && ok; i++) {
        ok = (rc->text[i] = read_text(files[i])) != NULL;
        if (ok && utg_config_parse_text(&rc->cfg, rc->text[i], &msg) != UTG_OK) {
            CHECK(0, "%s: %s", files[i], msg.text);
            ok = 0;
        }
    }
    for (k = 0; ok && k < sizeof tiny / sizeof tiny[0]; k++)
        ok = set_knob(&rc->cfg, tiny[k].key, tiny[k].value);
    if (ok && g_dtype) ok = set_knob(&rc->cfg, "ACTIVATION_DTYPE", g_dtype);
    return ok && shrink_set_knobs(&rc->cfg, rc->sched, sizeof rc->sched);
}

/* ---------------------------------------------------------------- one run */

/* the stages of a training step whose waits are reported */
enum { ST_QAT_BEGIN, ST_ZERO, ST_FORWARD, ST_BACKWARD, ST_QAT_END, ST_OPTIM, ST_AVERAGE, N_STAGES };
static const char *const stage_names[N_STAGES] = {"qat_begin", "zero_grads", "forward", "backward", "qat_end",
                                                  "optim_step", "average"};
/* the calls after training whose waits are printed (for information: no target) */
enum { OT_EVAL, OT_EVAL_LONG, OT_EVAL_BPB, OT_GENERATE, OT_EXPORT, OT_CHECKPOINT, N_OTHER };
static const char *const other_names[N_OTHER] = {"eval", "eval at 2x length", "sliding bpb", "generate 8 tokens",
                                                 "Hessians + export + reload", "checkpoint save + load"};

typedef struct run {
    const char *name;
    utg_backend *be;
    utg_model *m;
    utg_optim *o;
    utg_qat *q;
    const utg_config *cfg;
    int T, V;
    int32_t x[N_SEQS * 64], y[N_SEQS * 64];
    uint64_t rng, last;
    int waits[N_STEPS], uploads[N_STEPS], stage[N_STAGES], switch_waits, switched_at, other[N_OTHER];
    double loss[N_STEPS + 1]; /* each step's training loss, then the evaluation's */
} run;

#define OK(r, call)                                                                                      \
    do {                                                                                                 \
        utg_result r_ = (call);                                                                          \
        CHECK(r_ == UTG_OK, "%s: %s: %s (%s)", (r)->name, #call, utg_result_string(r_),                   \
              utg_model_message((r)->m));                                                                \
    } while (0)

static void random_tokens(run *r) {
    int i;
    for (i = 0; i < N_SEQS * r->T; i++) {
        r->rng = r->rng * 6364136223846793005ull + 1442695040888963407ull;
        r->x[i] = (int32_t)((r->rng >> 33) % (uint64_t)r->V);
        r->y[i] = (int32_t)((r->rng >> 45) % (uint64_t)r->V);
    }
}

/* host waits since the last call */
static int waits_since(run *r) {
    uint64_t now = fenced_backend_stats(r->be).host_waits;
    int d = (int)(now - r->last);
    r->last = now;
    return d;
}

/* The fenced backend, the model on it, the optimizer and QAT; 0 when something failed. */
static int run_open(run *r, const char *name, const utg_config *cfg) {
    utg_model_desc d;
    utg_result res;
    memset(r, 0, sizeof *r);
    r->name = name;
    r->rng = 12345;
    if (!(r->be = fenced_cpu())) { CHECK(0, "%s: fenced backend", name); return 0; }
    memset(&d, 0, sizeof d);
    d.config = *cfg;
    d.backend = r->be;
    res = utg_model_create(&d, &r->m);
    CHECK(res == UTG_OK, "%s: create: %s", name, utg_model_message(r->m));
    if (res != UTG_OK) return 0;
    r->cfg = utg_model_config(r->m);
    r->T = r->cfg->train_seq_len;
    r->V = r->cfg->vocab_size;
    OK(r, utg_model_reserve(r->m, N_SEQS));
    CHECK(utg_model_activation_dtype(r->m) == (g_dtype ? UTG_DT_BF16 : r->be->auto_activation_dtype),
          "%s: activations stored as dtype %d", name, (int)utg_model_activation_dtype(r->m));
    OK(r, utg_optim_create(r->m, &r->o));
    OK(r, utg_qat_create(r->m, &r->q));
    return r->o && r->q && r->T <= 64;
}

/* One training step in the documented order, its host waits by stage (phase switch excluded). */
static void train_step(run *r, int step, double lr) {
    int k, st[N_STAGES] = {0};
    double norm = 0.0;
    waits_since(r);
    r->uploads[step] = -(int)fenced_backend_stats(r->be).uploads;
    if (step >= QAT_FROM) utg_qat_begin(r->q, step);
    st[ST_QAT_BEGIN] = waits_since(r);
    utg_model_zero_grads(r->m);
    st[ST_ZERO] = waits_since(r);
    for (k = 0; k < 2; k++) {
        random_tokens(r);
        OK(r, utg_model_forward(r->m, r->x, r->y, N_SEQS, NULL));
        st[ST_FORWARD] += waits_since(r);
        OK(r, utg_model_backward(r->m, 0.5f));
        st[ST_BACKWARD] += waits_since(r);
    }
    utg_qat_end(r->q);
    st[ST_QAT_END] = waits_since(r);
    OK(r, utg_optim_step(r->o, step, lr, &norm));
    st[ST_OPTIM] = waits_since(r);
    utg_optim_average(r->o, step, lr);
    st[ST_AVERAGE] = waits_since(r);
    r->uploads[step] += (int)fenced_backend_stats(r->be).uploads;
    for (k = 0, r->waits[step] = 0; k < N_STAGES; k++) r->waits[step] += st[k];
    memcpy(r->stage, st, sizeof st);
    r->loss[step] = utg_optim_last_loss(r->o);
    CHECK(isfinite(norm) && isfinite(r->loss[step]), "%s step %d: norm %g, loss %g", r->name, step, norm,
          r->loss[step]);
}

/* N_STEPS steps with the schedule's phase switches, then the waits printed and checked. */
static void run_train(run *r) {
    int64_t adam_steps = 0, swa_samples = 0;
    uint64_t bf16_calls;
    int step, k, worst = 0;
    char line[256];
    size_t o = 0;
    r->switched_at = -1;
    for (step = 0; step < N_STEPS; step++) {
        int p = utg_model_schedule_phase(r->m, step, utg_train_frac(r->cfg, step, 0.0));
        if (p != utg_model_phase(r->m)) {
            waits_since(r);
            OK(r, utg_model_set_phase(r->m, p, 1));
            r->switch_waits = waits_since(r);
            r->switched_at = step;
        }
        train_step(r, step, utg_lr_scale(r->cfg, step, 0.0));
        if (r->waits[step] > worst) worst = r->waits[step];
    }
    for (step = 0; step < N_STEPS; step++)
        o += (size_t)snprintf(line + o, sizeof line - o, " %d", r->waits[step]);
    printf("      %s: %d virtual layers; host waits per step:%s (QAT from step %d); uploads per step %d",
           r->name, utg_model_plan(r->m)->n_layers, line, QAT_FROM, r->uploads[N_STEPS - 1]);
    if (r->switched_at >= 0) printf("; phase switch at step %d: %d waits", r->switched_at, r->switch_waits);
    printf("\n        last step by stage:");
    for (k = 0; k < N_STAGES; k++)
        printf(" %s %d%s", stage_names[k], r->stage[k], k + 1 < N_STAGES ? "," : "\n");
    CHECK(worst <= 2, "%s: %d host waits in a training step (the target is at most 2)", r->name, worst);
    utg_optim_get_counters(r->o, &adam_steps, &swa_samples);
    CHECK(adam_steps == N_STEPS && swa_samples > 0, "%s: %lld Adam steps, %lld SWA samples", r->name,
          (long long)adam_steps, (long long)swa_samples);
    CHECK(fenced_backend_stats(r->be).calls[FB_OP_fake_quant_rows] > 0, "%s: QAT quantized nothing", r->name);
    bf16_calls = fenced_backend_stats(r->be).bf16_calls;
    CHECK((bf16_calls > 0) == (utg_model_activation_dtype(r->m) == UTG_DT_BF16),
          "%s: %llu calls with bf16 operands", r->name, (unsigned long long)bf16_calls);
}

/* The library's validation pass (utg_model_eval_bpb) with sliding windows of TRAIN_SEQ_LEN every
   half window over the batch's inputs as a stream, bytes counted by the byte-level tokenizer:
   every target is scored exactly once. */
static void run_eval_bpb(run *r) {
    utg_tokenizer tok;
    utg_eval_opts o;
    utg_bpb acc;
    utg_msg msg;
    size_t n = (size_t)N_SEQS * (size_t)r->T;
    memset(&tok, 0, sizeof tok);
    memset(&acc, 0, sizeof acc);
    if (utg_tokenizer_byte260(&tok, 64, NULL, &msg) != UTG_OK) {
        CHECK(0, "%s: byte tokenizer: %s", r->name, msg.text);
        return;
    }
    o = utg_eval_opts_from_config(utg_model_config(r->m), (int64_t)n);
    o.seq_len = r->T;
    o.stride = r->T / 2;
    OK(r, utg_model_eval_bpb(r->m, &tok, r->x, n, &o, &acc));
    CHECK(acc.tokens == (double)(n - 1) && isfinite(utg_bpb_value(&acc)), "%s: sliding windows scored %.0f of %zu",
          r->name, acc.tokens, n - 1);
    r->other[OT_EVAL_BPB] = waits_since(r);
    utg_tokenizer_free(&tok);
}

/* Evaluation at TRAIN_SEQ_LEN and at twice it (RoPE tables built on first use), the sliding-window
   pass, then generation. */
static void run_eval(run *r) {
    float losses[N_SEQS * 64];
    int32_t gen[8];
    double loss = 0.0;
    waits_since(r);
    OK(r, utg_model_eval(r->m, r->x, r->y, N_SEQS, r->T, losses, &loss));
    r->other[OT_EVAL] = waits_since(r);
    r->loss[N_STEPS] = loss;
    CHECK(isfinite(loss), "%s: eval loss %g", r->name, loss);
    OK(r, utg_model_eval(r->m, r->x, r->y, 1, 2 * r->T, NULL, &loss));
    r->other[OT_EVAL_LONG] = waits_since(r);
    CHECK(isfinite(loss), "%s: eval loss at %d tokens %g", r->name, 2 * r->T, loss);
    run_eval_bpb(r);
    OK(r, utg_model_generate(r->m, 1, 8, 0.8, 5, gen));
    r->other[OT_GENERATE] = waits_since(r);
}

static void print_other(const run *r) {
    int k;
    printf("        after training:");
    for (k = 0; k < N_OTHER; k++)
        printf(" %s %d%s", other_names[k], r->other[k], k + 1 < N_OTHER ? "," : " waits\n");
}

/* A model built from the artifact alone, on the same backend, evaluated. */
static void from_artifact(run *r, const utg_artifact *a) {
    utg_model_desc base;
    utg_model *m2 = NULL;
    utg_result res;
    double loss = 0.0;
    memset(&base, 0, sizeof base);
    base.backend = r->be;
    res = utg_model_create_from_artifact(a, &base, &m2);
    CHECK(res == UTG_OK, "%s: from artifact: %s", r->name, utg_model_message(m2));
    if (res == UTG_OK) {
        res = utg_model_eval(m2, r->x, r->y, N_SEQS, r->T, NULL, &loss);
        CHECK(res == UTG_OK && isfinite(loss), "%s: eval from artifact: %s", r->name, utg_model_message(m2));
    }
    utg_model_destroy(m2);
}

/* Hessians from two forwards, the average applied, export (stored codec), parse, a model from the
   artifact, and the artifact loaded back into the model. */
static void run_export(run *r) {
    utg_hessians *h = NULL;
    utg_artifact *a = NULL;
    utg_codec st = utg_codec_stored();
    utg_export_report rep;
    utg_msg msg;
    void *bytes = NULL;
    size_t n = 0;
    int k;
    OK(r, utg_hessians_create(r->m, &h));
    for (k = 0; k < 2 && h; k++) {
        random_tokens(r);
        OK(r, utg_model_forward(r->m, r->x, r->y, N_SEQS, NULL));
        OK(r, utg_hessians_accumulate(h));
    }
    utg_optim_apply_average(r->o);
    OK(r, utg_model_export(r->m, h, &st, "fenced backend test\n", NULL, &bytes, &n, &rep));
    utg_hessians_destroy(h);
    if (!bytes) return;
    CHECK(utg_artifact_parse(bytes, n, &st, NULL, &a, &msg) == UTG_OK, "%s: parse: %s", r->name, msg.text);
    if (a) {
        from_artifact(r, a);
        OK(r, utg_model_load_artifact(r->m, a));
    }
    utg_artifact_free(a);
    utg_free(utg_model_allocator(r->m), bytes);
}

/* The training state saved and loaded again into the same model and optimizer. */
static void run_checkpoint(run *r) {
    utg_train_state ts = {N_STEPS, 12.5, 1000}, back;
    void *bytes = NULL;
    size_t n = 0;
    memset(&back, 0, sizeof back);
    OK(r, utg_checkpoint_save(r->m, r->o, NULL, &ts, &bytes, &n));
    if (!bytes) return;
    OK(r, utg_checkpoint_load(r->m, r->o, NULL, &back, bytes, n));
    CHECK(back.step == ts.step && back.tokens_seen == ts.tokens_seen, "%s: state back", r->name);
    utg_free(utg_model_allocator(r->m), bytes);
}

/* Everything destroyed; the library must have freed every buffer it allocated. */
static void run_close(run *r) {
    utg_qat_destroy(r->q);
    utg_optim_destroy(r->o);
    utg_model_destroy(r->m);
    if (!r->be) return;
    CHECK(fenced_backend_stats(r->be).live_buffers == 0, "%s: %llu buffers left after destroy", r->name,
          (unsigned long long)fenced_backend_stats(r->be).live_buffers);
    utg_backend_destroy(r->be);
}

static const char *g_recipe; /* the file test_recipe runs */

static int g_index; /* the file's index in g_files */
static double g_fp32_loss[64][N_STEPS + 1]; /* each recipe's losses with fp32 activations */
static int g_have_fp32[64];

/* The fp32 run's losses kept; a bf16 run's printed and compared with them, relative to them. At
   step 0 (the forward at initialisation) rounding the activations to bf16 moves the loss by 3e-5
   at most over the recipes, and later (after training on bf16 activations) by 1.5e-3:
   LOSS_TOL_INIT and LOSS_TOL leave room for that, and catch an operand misplaced inside a buffer,
   which the fence cannot see (the library carves its activations from one arena): reading the
   static SmearGate's shifted rows half a row off moves step 0's loss by 2e-3. */
#define LOSS_TOL_INIT 5e-4
#define LOSS_TOL 1e-2
static void compare_losses(const run *r) {
    double worst = 0.0, d0 = 0.0;
    int k;
    if (!g_dtype) {
        memcpy(g_fp32_loss[g_index], r->loss, sizeof r->loss);
        g_have_fp32[g_index] = 1;
        return;
    }
    if (!g_have_fp32[g_index]) return; /* the fp32 run was filtered out or failed */
    printf("        losses, %s (fp32):", g_dtype);
    for (k = 0; k <= N_STEPS; k++) {
        double d = fabs(r->loss[k] - g_fp32_loss[g_index][k]) / fabs(g_fp32_loss[g_index][k]);
        if (k == 0) d0 = d;
        else if (!(d <= worst)) worst = d;
        printf(" %.4f (%.4f)%s", r->loss[k], g_fp32_loss[g_index][k], k < N_STEPS ? "" : " eval");
    }
    printf("; relative difference %.1e at step 0, %.1e after\n", d0, worst);
    CHECK(d0 <= LOSS_TOL_INIT && worst <= LOSS_TOL, "%s: losses %.1e (step 0) and %.1e (after) away from "
          "fp32's, relative (at most %g and %g)", r->name, d0, worst, LOSS_TOL_INIT, LOSS_TOL);
}

static void test_recipe(void) {
    recipe_cfg rc;
    run r;
    const char *slash = strrchr(g_recipe, '/');
    char name[128];
    snprintf(name, sizeof name, "%s%s%s", slash ? slash + 1 : g_recipe, g_dtype ? " " : "",
             g_dtype ? g_dtype : "");
    memset(&r, 0, sizeof r);
    if (recipe_config(g_recipe, &rc) && run_open(&r, name, &rc.cfg)) {
        run_train(&r);
        run_eval(&r);
        waits_since(&r);
        run_export(&r);
        r.other[OT_EXPORT] = waits_since(&r);
        run_checkpoint(&r);
        r.other[OT_CHECKPOINT] = waits_since(&r);
        print_other(&r);
        compare_losses(&r);
    }
    run_close(&r);
    free(rc.text[0]);
    free(rc.text[1]);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *g_files[64]; /* the recipe files, found by test_recipes_found */
static int g_n_files;

/* the recipes/NAME.env files sorted, then data/austen/run.env */
static void test_recipes_found(void) {
    DIR *dir = opendir("recipes");
    struct dirent *e;
    int n = 0;
    CHECK(dir != NULL, "recipes/ not found: run from the repository root");
    while (dir && (e = readdir(dir)) != NULL && n + 1 < 64) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".env")) continue;
        g_files[n] = (char *)malloc(len + 9);
        if (g_files[n]) sprintf(g_files[n++], "recipes/%s", e->d_name);
    }
    if (dir) closedir(dir);
    CHECK(n > 0, "no recipes/NAME.env");
    qsort(g_files, (size_t)n, sizeof *g_files, by_name);
    g_files[n] = (char *)malloc(32);
    if (g_files[n]) strcpy(g_files[n++], "data/austen/run.env");
    g_n_files = n;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    char name[300];
    int i;
#ifdef _OPENMP
    /* One thread unless asked otherwise: the fence runs ops one at a time anyway, the ops are tiny,
       and on a shared 2-core machine a team's spinning barriers made the suite 15 times slower. */
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
#endif
    RUN(test_faults_are_caught); /* first: its children fork before any OpenMP region */
    RUN(test_wrapper_basics);
    RUN(test_unfenced);
    RUN(test_bf16_operands);
    t__run("test_recipes_found", test_recipes_found, NULL);
    for (i = 0; i < 2 * g_n_files; i++) { /* every recipe as it is, then with bf16 activations */
        g_index = i % g_n_files;
        g_recipe = g_files[g_index];
        g_dtype = i < g_n_files ? NULL : "bf16";
        snprintf(name, sizeof name, "test_recipe %s%s", g_recipe, g_dtype ? " ACTIVATION_DTYPE=bf16" : "");
        t__run(name, test_recipe, filter);
    }
    for (i = 0; i < g_n_files; i++) free(g_files[i]);
    return TEST_SUMMARY();
}
