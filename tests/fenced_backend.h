/* A fenced, counting wrapper around a backend whose memory is host memory (the CPU backend), for
   tests: fenced_backend_create(inner, opts, &be) returns a utg_backend that calls `inner` op by op
   and, around each call:
   - Fence. Every buf_alloc gets its own mmap'd region: a PROT_NONE guard page, the data pages, a
     PROT_NONE guard page; the buffer ends where the data pages end (rounded to 64 bytes, so the
     table's 64-byte alignment holds and an overrun meets the guard page at once), and fresh
     anonymous pages are the table's zero fill. Between ops every buffer is PROT_NONE, so any host
     access to backend memory outside an op dies with SIGSEGV, and a handler names the address,
     the buffer and the last op before it exits 1. An op opens (PROT_READ|PROT_WRITE) only the
     buffers its pointer arguments lie in, and closes them on return: a stronger fence than opening
     every live buffer, and far fewer mprotect calls per op (they are most of tests/test_fenced.c's
     time).
   - Range checks. Each op computes, from its shape arguments and the contract written above its
     field in utgolf.h, the bytes each pointer argument will touch (4-byte floats and int32 ids, an
     8-byte double where the op says fp64; activation operands by the op's `at`, matmul's operands
     each by its type in `types`, fill's by its dtype: 2 bytes for BF16), and checks that they lie
     inside one live buffer; NULL only where the contract allows it. A storage type that is neither
     F32 nor BF16, or that the inner table does not list in storage_dtypes, is refused. Outputs must
     not overlap other arguments unless the contract says they may alias. A violation prints the op,
     the argument and the range, then abort()s.
   - Counting. Calls per op, uploads and downloads with their bytes, and host waits: the calls that
     make the host wait for the device (download and synchronize; an op that returned a value to the
     host would count too). fenced_backend_stats reads them, fenced_backend_reset_stats zeroes them.
   The wrapper clears UTG_BACKEND_CONCURRENT in its table, so the library calls it from one thread
   at a time (the optimizer then runs Muon tensors one after another); the mprotect state is global
   to the process, and a concurrent caller would open and close buffers under another op's feet.
   Every op of utg_backend must be listed in FB_OPS with a wrapper fb__op_<name>: create refuses an
   inner table with a non-NULL field the wrapper does not know, so no op bypasses the fence.
   Include after utgolf.h, in a file that defines _DEFAULT_SOURCE before any header (mmap's
   MAP_ANONYMOUS, sigaction). POSIX (mmap, mprotect, sigaction); the backtrace needs glibc. */
#ifndef UTG_TEST_FENCED_BACKEND_H
#define UTG_TEST_FENCED_BACKEND_H
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __GLIBC__
#include <execinfo.h>
#endif

/* Every field of utg_backend after its header (abi_version .. flags), in declaration order:
   X(op, waits), waits = 1 for a call that makes the host wait for the device. A new op is one entry
   here and one wrapper fb__op_<op> below (declare its arguments' ranges, then FB__RUN). */
#define FB_OPS(X)                                                                                    \
    X(buf_alloc, 0) X(buf_free, 0) X(upload, 0) X(download, 1) X(fill, 0) X(copy, 0)                 \
    X(all_reduce, 0) X(broadcast, 0) X(all_gather, 0)                                                \
    X(matmul, 0) X(embed_fwd, 0) X(embed_bwd, 0) X(rmsnorm_fwd, 0) X(rmsnorm_bwd, 0)                 \
    X(qk_norm_rope_fwd, 0) X(qk_norm_rope_bwd, 0) X(attn_fwd, 0) X(attn_bwd, 0)                      \
    X(relu2_fwd, 0) X(relu2_bwd, 0) X(mix_fwd, 0) X(mix_bwd, 0) X(mix_rmsnorm_fwd, 0)                \
    X(xent_fwd, 0) X(matmul_bf16, 0) X(xsa_fwd, 0) X(xsa_bwd, 0) X(lerp_fwd, 0) X(lerp_bwd, 0)       \
    X(gate_fwd, 0) X(gate_bwd, 0) X(smear_fwd, 0) X(smear_bwd, 0) X(fake_quant_rows, 0)              \
    X(reduce_f64, 0) X(normalize_frob, 0) X(axpby, 0) X(muon_momentum, 0) X(row_normalize, 0)        \
    X(adam_step, 0) X(synchronize, 1) X(destroy, 0)
/* the data fields among the ops (copied from the inner table as they are) */
#define FB_FIELDS(X) X(storage_dtypes) X(auto_activation_dtype) X(rank) X(world)

#define FB__ENUM(op, waits) FB_OP_##op,
enum { FB_OPS(FB__ENUM) FB_N_OPS };

#if defined(__GNUC__)
#define FB__MAYBE_UNUSED __attribute__((unused))
#else
#define FB__MAYBE_UNUSED
#endif

typedef struct fenced_backend_opts {
    int unfenced; /* 1: buffers stay accessible between ops (range checks and counting only) */
} fenced_backend_opts;

typedef struct fenced_stats {
    uint64_t host_waits;                   /* calls of the ops marked waits in FB_OPS */
    uint64_t downloads, download_bytes;
    uint64_t uploads, upload_bytes;
    uint64_t synchronizes;
    uint64_t ops;                          /* every call, buf_alloc and buf_free included */
    uint64_t bf16_calls;                   /* calls with a BF16 operand (at, a matmul type, fill) */
    uint64_t calls[FB_N_OPS];              /* per op, FB_OP_<name> order */
    uint64_t live_buffers, live_bytes, peak_bytes;
} fenced_stats;

typedef struct fb__buf {
    unsigned char *map, *ptr; /* the mapping (guard, data, guard) and the buffer handed out */
    size_t map_len, data_len, size;
    int open;                 /* accessible now (inside an op, or unfenced) */
} fb__buf;

#define FB__MAX_ARGS 16
typedef struct fb__arg {
    const char *name;
    uintptr_t p;
    size_t n;
    int out; /* written, added to or updated in place */
} fb__arg;

typedef struct fb__state {
    utg_backend *inner;
    fenced_backend_opts opts;
    size_t page;
    fb__buf *bufs; /* sorted by ptr */
    int n_bufs, cap_bufs;
    int opened[FB__MAX_ARGS], n_opened;
    volatile int in_op, cur_op, last_op; /* read by the SIGSEGV handler */
    fenced_stats st;
} fb__state;

/* One op call: its arguments' ranges, and the pairs the contract lets alias. */
typedef struct fb__call {
    fb__state *s;
    utg_backend *in;
    int op;
    int n_args, n_alias;
    int bf16;       /* an operand is BF16 (counted in bf16_calls) */
    size_t at_size; /* bytes per element of the op's activation type (fb__at), 0 before */
    fb__arg a[FB__MAX_ARGS];
    const char *alias[2][2];
} fb__call;

#define FB__NAME(op, waits) #op,
static const char *const fb__op_names[FB_N_OPS] = {FB_OPS(FB__NAME)};
#define FB__WAITS(op, waits) waits,
static const int fb__op_waits[FB_N_OPS] = {FB_OPS(FB__WAITS)};

FB__MAYBE_UNUSED static const char *fenced_backend_op_name(int op) {
    return op >= 0 && op < FB_N_OPS ? fb__op_names[op] : "?";
}

/* ---------------------------------------------------------------- the SIGSEGV handler */

/* the live fenced backends, for the handler */
#define FB__MAX_STATES 16
static fb__state *fb__states[FB__MAX_STATES];

/* async-signal-safe output: write(2) of fixed text, hex and decimal numbers */
static void fb__say(const char *t) {
    ssize_t r = write(2, t, strlen(t));
    (void)r;
}
static void fb__say_num(uint64_t v, int hex) {
    char b[24];
    int i = 23;
    b[i] = 0;
    do { b[--i] = "0123456789abcdef"[v % (hex ? 16 : 10)]; v /= hex ? 16 : 10; } while (v && i > 2);
    if (hex) { b[--i] = 'x'; b[--i] = '0'; }
    fb__say(b + i);
}

/* Where a faulting address lies relative to one buffer's mapping; 0 when outside it. */
static int fb__say_where(const fb__state *s, const fb__buf *b, uintptr_t a) {
    uintptr_t data = (uintptr_t)b->map + s->page, end = data + b->data_len, p = (uintptr_t)b->ptr;
    if (a < (uintptr_t)b->map || a >= (uintptr_t)b->map + b->map_len) return 0;
    fb__say(a < data ? "in the guard page before " : a >= end ? "in the guard page after "
            : a < p ? "before the start of " : a < p + b->size ? "inside " : "in the tail padding of ");
    fb__say("backend buffer ");
    fb__say_num(p, 1);
    fb__say(" (");
    fb__say_num(b->size, 0);
    fb__say(a < p ? " bytes), offset -" : " bytes), offset +");
    fb__say_num(a < p ? p - a : a - p, 0);
    return 1;
}

static void fb__on_segv(int sig, siginfo_t *si, void *uc) {
    uintptr_t a = (uintptr_t)si->si_addr;
    int k, i;
    (void)sig, (void)uc;
    fb__say("\nfenced backend: SIGSEGV at ");
    fb__say_num(a, 1);
    fb__say(": ");
    for (k = 0; k < FB__MAX_STATES; k++) {
        const fb__state *s = fb__states[k];
        for (i = 0; s && i < s->n_bufs; i++) {
            if (!fb__say_where(s, &s->bufs[i], a)) continue;
            fb__say(s->in_op ? ", during op " : ", between ops (the last op was ");
            fb__say(fb__op_names[s->in_op ? s->cur_op : s->last_op]);
            fb__say(s->in_op ? ": the op touched a buffer none of its arguments lies in\n"
                             : "): the host touched backend memory outside an op\n");
            goto trace;
        }
    }
    fb__say("not backend memory (an ordinary invalid access)\n");
trace:
#ifdef __GLIBC__
    {
        void *frames[48];
        int n = backtrace(frames, 48);
        fb__say("backtrace (addr2line -f -e <binary> <offset>, or run the test under gdb):\n");
        backtrace_symbols_fd(frames, n, 2);
    }
#endif
    _exit(1);
}

/* Installed once per process; backtrace is called once first so that its lazy loading of libgcc
   does not happen inside the handler. */
static void fb__install_handler(void) {
    static int done;
    struct sigaction sa;
    if (done) return;
    done = 1;
#ifdef __GLIBC__
    {
        void *f[2];
        (void)backtrace(f, 2);
    }
#endif
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fb__on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

/* ---------------------------------------------------------------- buffers and the fence */

static void fb__die(const fb__call *c, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "fenced backend: %s: ", fb__op_names[c->op]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

/* Index of the last buffer whose ptr <= p, or -1. */
static int fb__below(const fb__state *s, uintptr_t p) {
    int lo = 0, hi = s->n_bufs - 1, best = -1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if ((uintptr_t)s->bufs[mid].ptr <= p) { best = mid; lo = mid + 1; }
        else hi = mid - 1;
    }
    return best;
}

static void fb__protect(fb__state *s, fb__buf *b, int open) {
    if (mprotect(b->map + s->page, b->data_len, open ? PROT_READ | PROT_WRITE : PROT_NONE) != 0) {
        perror("fenced backend: mprotect");
        abort();
    }
    b->open = open;
}

/* Opens buffer i for the current op (once per op). */
static void fb__open(fb__state *s, int i) {
    if (s->bufs[i].open) return;
    fb__protect(s, &s->bufs[i], 1);
    s->opened[s->n_opened++] = i;
}

/* ---------------------------------------------------------------- one op call */

static void fb__begin(fb__call *c, utg_backend *be, int op) {
    fb__state *s = (fb__state *)be->impl;
    memset(c, 0, sizeof *c);
    c->s = s;
    c->in = s->inner;
    c->op = op;
#ifdef _OPENMP
    if (omp_in_parallel())
        fb__die(c, "called from a parallel region (the table has no UTG_BACKEND_CONCURRENT)");
#endif
    if (s->in_op) fb__die(c, "called while op %s runs", fb__op_names[s->cur_op]);
    s->in_op = 1;
    s->cur_op = op;
    s->st.ops++;
    s->st.calls[op]++;
    if (fb__op_waits[op]) s->st.host_waits++;
}

/* Closes what the op opened. */
static void fb__end(fb__call *c) {
    fb__state *s = c->s;
    int k;
    for (k = 0; k < s->n_opened; k++) fb__protect(s, &s->bufs[s->opened[k]], 0);
    s->n_opened = 0;
    if (c->bf16) s->st.bf16_calls++;
    s->last_op = c->op;
    s->in_op = 0;
}

/* a*b*d elements of es bytes (es <= 8), in bytes; a negative or overflowing shape dies */
static size_t fb__bytes(const fb__call *c, size_t es, long long a, long long b, long long d) {
    if (a < 0 || b < 0 || d < 0) fb__die(c, "negative shape (%lld x %lld x %lld)", a, b, d);
    if (b && a > (long long)(SIZE_MAX / 8) / b) fb__die(c, "shape %lld x %lld overflows", a, b);
    if (d && a * b > (long long)(SIZE_MAX / 8) / d) fb__die(c, "shape %lld x %lld x %lld overflows", a, b, d);
    return (size_t)(a * b * d) * es;
}
/* floats (weights, weight gradients, per-row statistics) and int32 ids */
static size_t fb__b4(const fb__call *c, long long a, long long b, long long d) {
    return fb__bytes(c, 4, a, b, d);
}

/* The element size of a storage type: dtype must be F32 or BF16 and listed in the inner table's
   storage_dtypes (what names it in the message). */
static size_t fb__dtype_size(fb__call *c, const char *what, utg_dtype dtype) {
    if (dtype != UTG_DT_F32 && dtype != UTG_DT_BF16)
        fb__die(c, "%s %d is neither F32 nor BF16", what, (int)dtype);
    if (!(c->in->storage_dtypes & (1u << dtype)))
        fb__die(c, "%s %s is not in the inner backend's storage_dtypes (0x%x)", what,
                dtype == UTG_DT_BF16 ? "BF16" : "F32", (unsigned)c->in->storage_dtypes);
    c->bf16 |= dtype == UTG_DT_BF16;
    return dtype == UTG_DT_BF16 ? 2 : 4;
}
/* The op's activation type `at`, checked; fb__ba sizes its activation operands by it. */
static void fb__at(fb__call *c, utg_dtype at) { c->at_size = fb__dtype_size(c, "at", at); }
static size_t fb__ba(const fb__call *c, long long a, long long b, long long d) {
    if (!c->at_size) fb__die(c, "an activation range before fb__at (a bug of the wrapper)");
    return fb__bytes(c, c->at_size, a, b, d);
}

/* Checks that [p, p + n) lies in one live buffer, opens that buffer and records the range.
   NULL is refused unless nullable; an empty range touches nothing and is not checked. */
static void fb__range(fb__call *c, const char *name, const void *p, size_t n, int out, int nullable) {
    fb__state *s = c->s;
    uintptr_t a = (uintptr_t)p;
    int i;
    if (!p) {
        if (!nullable && n) fb__die(c, "argument %s is NULL (%zu bytes expected)", name, n);
        return;
    }
    if (!n) return;
    i = fb__below(s, a);
    if (i < 0 || a >= (uintptr_t)s->bufs[i].ptr + s->bufs[i].size)
        fb__die(c, "argument %s: [%p, +%zu bytes) is not inside any live buffer", name, p, n);
    if (n > (uintptr_t)s->bufs[i].ptr + s->bufs[i].size - a)
        fb__die(c, "argument %s: [%p, +%zu bytes) runs %zu bytes past the end of buffer %p (%zu bytes; "
                "the range starts at offset %zu)", name, p, n,
                (size_t)(a + n - ((uintptr_t)s->bufs[i].ptr + s->bufs[i].size)), (void *)s->bufs[i].ptr,
                s->bufs[i].size, (size_t)(a - (uintptr_t)s->bufs[i].ptr));
    if (c->n_args == FB__MAX_ARGS) fb__die(c, "more than %d arguments", FB__MAX_ARGS);
    c->a[c->n_args].name = name;
    c->a[c->n_args].p = a;
    c->a[c->n_args].n = n;
    c->a[c->n_args].out = out;
    c->n_args++;
    fb__open(s, i);
}
static void fb__in(fb__call *c, const char *name, const void *p, size_t n) { fb__range(c, name, p, n, 0, 0); }
static void fb__out(fb__call *c, const char *name, const void *p, size_t n) {
    fb__range(c, name, p, n, 1, 0);
}
static void fb__in_opt(fb__call *c, const char *name, const void *p, size_t n) {
    fb__range(c, name, p, n, 0, 1);
}
static void fb__out_opt(fb__call *c, const char *name, const void *p, size_t n) {
    fb__range(c, name, p, n, 1, 1);
}

/* A host pointer (upload's source, download's destination) must not be backend memory. */
static void fb__host(fb__call *c, const char *name, const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    int i;
    if (!n) return;
    if (!p) fb__die(c, "host argument %s is NULL (%zu bytes)", name, n);
    for (i = 0; i < c->s->n_bufs; i++) {
        uintptr_t b = (uintptr_t)c->s->bufs[i].map, e = b + c->s->bufs[i].map_len;
        if (a < e && b < a + n) fb__die(c, "host argument %s [%p, +%zu bytes) is backend memory", name, p, n);
    }
}

/* The contract lets these two arguments be the same range. */
static void fb__may_alias(fb__call *c, const char *x, const char *y) {
    if (c->n_alias == 2) fb__die(c, "more than 2 aliasing pairs");
    c->alias[c->n_alias][0] = x;
    c->alias[c->n_alias][1] = y;
    c->n_alias++;
}
static int fb__aliased_ok(const fb__call *c, const fb__arg *x, const fb__arg *y) {
    int k;
    if (x->p != y->p || x->n != y->n) return 0;
    for (k = 0; k < c->n_alias; k++)
        if ((!strcmp(c->alias[k][0], x->name) && !strcmp(c->alias[k][1], y->name)) ||
            (!strcmp(c->alias[k][0], y->name) && !strcmp(c->alias[k][1], x->name)))
            return 1;
    return 0;
}

/* "Outputs do not overlap inputs unless the op says they may" (utgolf.h, >>backend_api): checked for
   every pair with an output in it, once all arguments are declared. */
static void fb__ready(fb__call *c) {
    int i, j;
    for (i = 0; i < c->n_args; i++)
        for (j = i + 1; j < c->n_args; j++) {
            const fb__arg *x = &c->a[i], *y = &c->a[j];
            if (!x->out && !y->out) continue;
            if (x->p < y->p + y->n && y->p < x->p + x->n && !fb__aliased_ok(c, x, y))
                fb__die(c, "%s [%#lx, +%zu) overlaps %s [%#lx, +%zu)", x->name, (unsigned long)x->p, x->n,
                        y->name, (unsigned long)y->p, y->n);
        }
}

/* the call of the inner op between the checks and the closing of the fence */
#define FB__RUN(c, op, args)   \
    do {                       \
        fb__ready(&(c));       \
        (c).in->op args;       \
        fb__end(&(c));         \
    } while (0)


/* ---------------------------------------------------------------- memory */

/* Inserts b at its sorted place; 0 when the table cannot grow. */
static int fb__insert(fb__state *s, const fb__buf *b) {
    int i;
    if (s->n_bufs == s->cap_bufs) {
        int cap = s->cap_bufs ? 2 * s->cap_bufs : 64;
        fb__buf *nb = (fb__buf *)realloc(s->bufs, sizeof(fb__buf) * (size_t)cap);
        if (!nb) return 0;
        s->bufs = nb;
        s->cap_bufs = cap;
    }
    i = fb__below(s, (uintptr_t)b->ptr) + 1;
    memmove(&s->bufs[i + 1], &s->bufs[i], sizeof(fb__buf) * (size_t)(s->n_bufs - i));
    s->bufs[i] = *b;
    s->n_bufs++;
    if (s->opts.unfenced) fb__protect(s, &s->bufs[i], 1);
    s->st.live_buffers++;
    s->st.live_bytes += b->size;
    if (s->st.live_bytes > s->st.peak_bytes) s->st.peak_bytes = s->st.live_bytes;
    return 1;
}

/* guard page, data pages, guard page; the buffer ends where the data pages end (64-byte aligned) */
static void *fb__op_buf_alloc(utg_backend *be, size_t size) {
    fb__call c;
    fb__buf b;
    size_t room, pg;
    fb__begin(&c, be, FB_OP_buf_alloc);
    pg = c.s->page;
    memset(&b, 0, sizeof b);
    if (size > SIZE_MAX / 2) { fb__end(&c); return NULL; }
    room = (size ? size + 63 : 64) / 64 * 64;
    b.data_len = (room + pg - 1) / pg * pg;
    b.map_len = b.data_len + 2 * pg;
    b.map =
        (unsigned char *)mmap(NULL, b.map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (b.map == (unsigned char *)MAP_FAILED) { fb__end(&c); return NULL; }
    b.ptr = b.map + pg + b.data_len - room;
    b.size = size;
    if (!fb__insert(c.s, &b)) { munmap(b.map, b.map_len); b.ptr = NULL; }
    fb__end(&c);
    return b.ptr;
}

/* NULL does nothing (the contract does not say; the CPU backend accepts it and the library's
   destroy paths pass it) */
static void fb__op_buf_free(utg_backend *be, void *buf) {
    fb__call c;
    fb__state *s;
    int i;
    fb__begin(&c, be, FB_OP_buf_free);
    s = c.s;
    if (buf) {
        i = fb__below(s, (uintptr_t)buf);
        if (i < 0 || s->bufs[i].ptr != (unsigned char *)buf)
            fb__die(&c, "%p is not a live buffer (freed twice, or not from buf_alloc)", buf);
        s->st.live_buffers--;
        s->st.live_bytes -= s->bufs[i].size;
        munmap(s->bufs[i].map, s->bufs[i].map_len);
        memmove(&s->bufs[i], &s->bufs[i + 1], sizeof(fb__buf) * (size_t)(s->n_bufs - i - 1));
        s->n_bufs--;
    }
    fb__end(&c);
}

static void fb__op_upload(utg_backend *be, void *dst, const void *host_src, size_t n) {
    fb__call c;
    fb__begin(&c, be, FB_OP_upload);
    fb__out(&c, "dst", dst, n);
    fb__host(&c, "host_src", host_src, n);
    c.s->st.uploads++;
    c.s->st.upload_bytes += n;
    FB__RUN(c, upload, (c.in, dst, host_src, n));
}

static void fb__op_download(utg_backend *be, void *host_dst, const void *src, size_t n) {
    fb__call c;
    fb__begin(&c, be, FB_OP_download);
    fb__in(&c, "src", src, n);
    fb__host(&c, "host_dst", host_dst, n);
    c.s->st.downloads++;
    c.s->st.download_bytes += n;
    FB__RUN(c, download, (c.in, host_dst, src, n));
}

/* n elements of dtype (F32, or a storage type of the inner backend) */
static void fb__op_fill(utg_backend *be, void *dst, utg_dtype dtype, float v, size_t n) {
    fb__call c;
    fb__begin(&c, be, FB_OP_fill);
    fb__out(&c, "dst", dst, fb__bytes(&c, fb__dtype_size(&c, "dtype", dtype), (long long)n, 1, 1));
    FB__RUN(c, fill, (c.in, dst, dtype, v, n));
}

static void fb__op_copy(utg_backend *be, void *dst, const void *src, size_t n) {
    fb__call c;
    fb__begin(&c, be, FB_OP_copy);
    fb__out(&c, "dst", dst, n);
    fb__in(&c, "src", src, n);
    FB__RUN(c, copy, (c.in, dst, src, n));
}

/* ---------------------------------------------------------------- collectives */

static void fb__op_all_reduce(utg_backend *be, void *buf, utg_dtype dtype, size_t n) {
    fb__call c;
    fb__begin(&c, be, FB_OP_all_reduce);
    if (dtype != UTG_DT_F32 && dtype != UTG_DT_F64)
        fb__die(&c, "dtype %d is neither F32 nor F64", (int)dtype);
    fb__out(&c, "buf", buf, fb__b4(&c, (long long)n, dtype == UTG_DT_F64 ? 2 : 1, 1));
    FB__RUN(c, all_reduce, (c.in, buf, dtype, n));
}

static void fb__op_broadcast(utg_backend *be, void *buf, size_t size_bytes, int root) {
    fb__call c;
    fb__begin(&c, be, FB_OP_broadcast);
    if (root < 0 || root >= c.in->world) fb__die(&c, "root %d outside the world of %d", root, c.in->world);
    fb__out(&c, "buf", buf, size_bytes);
    FB__RUN(c, broadcast, (c.in, buf, size_bytes, root));
}

static void fb__op_all_gather(utg_backend *be, void *dst, const void *src, size_t size_bytes) {
    fb__call c;
    fb__begin(&c, be, FB_OP_all_gather);
    if (c.in->world < 1 || size_bytes > SIZE_MAX / (size_t)c.in->world)
        fb__die(&c, "world %d x %zu bytes", c.in->world, size_bytes);
    fb__out(&c, "dst", dst, size_bytes * (size_t)c.in->world);
    fb__in(&c, "src", src, size_bytes);
    FB__RUN(c, all_gather, (c.in, dst, src, size_bytes));
}

/* ---------------------------------------------------------------- core ops */

/* matmul and matmul_bf16: op(A) is [M,K] and op(B) [K,N] whether stored transposed or not, so the
   extents do not depend on ta and tb; beta 1 reads C too (it is one output either way). Each operand
   is sized by its own type in `types`. */
static void fb__mm(fb__call *c, int types, const void *C, const void *A, const void *B, int M, int N, int K,
                   utg_trans ta, utg_trans tb, float beta) {
    size_t sc, sa, sb;
    if (types & ~0xfff) fb__die(c, "types 0x%x has bits beyond C's, A's and B's", (unsigned)types);
    sc = fb__dtype_size(c, "C's type", UTG_MM_TYPE_C(types));
    sa = fb__dtype_size(c, "A's type", UTG_MM_TYPE_A(types));
    sb = fb__dtype_size(c, "B's type", UTG_MM_TYPE_B(types));
    if ((unsigned)ta > 3u || (unsigned)tb > 1u) fb__die(c, "ta %d, tb %d", (int)ta, (int)tb);
    if (beta != 0.0f && beta != 1.0f) fb__die(c, "beta %g is neither 0 nor 1", (double)beta);
    if ((ta & 2) && (M != N || beta != 0.0f))
        fb__die(c, "a symmetric product needs M == N and beta 0 (M %d, N %d, beta %g)", M, N, (double)beta);
    fb__out(c, "C", C, fb__bytes(c, sc, M, N, 1));
    fb__in(c, "A", A, fb__bytes(c, sa, M, K, 1));
    fb__in(c, "B", B, fb__bytes(c, sb, K, N, 1));
}
static void fb__op_matmul(utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N,
                          int K, utg_trans ta, utg_trans tb, float alpha, float beta) {
    fb__call c;
    fb__begin(&c, be, FB_OP_matmul);
    fb__mm(&c, types, C, A, B, M, N, K, ta, tb, beta);
    FB__RUN(c, matmul, (c.in, types, C, A, B, M, N, K, ta, tb, alpha, beta));
}
static void fb__op_matmul_bf16(utg_backend *be, int types, void *C, const void *A, const void *B, int M,
                               int N, int K, utg_trans ta, utg_trans tb, float alpha, float beta) {
    fb__call c;
    fb__begin(&c, be, FB_OP_matmul_bf16);
    fb__mm(&c, types, C, A, B, M, N, K, ta, tb, beta);
    FB__RUN(c, matmul_bf16, (c.in, types, C, A, B, M, N, K, ta, tb, alpha, beta));
}

/* The table's extent comes from the ids (read here: the wrapper is the backend): rows 0 .. max id. */
static void fb__embed(fb__call *c, const char *tname, const float *table, int table_out, const int32_t *ids,
                      int n, int d) {
    int32_t mx = -1;
    int k;
    fb__in(c, "ids", ids, fb__b4(c, n, 1, 1));
    for (k = 0; k < n; k++) {
        if (ids[k] < 0) fb__die(c, "ids[%d] = %d is negative", k, (int)ids[k]);
        if (ids[k] > mx) mx = ids[k];
    }
    fb__range(c, tname, table, fb__b4(c, (long long)mx + 1, d, 1), table_out, 0);
}
static void fb__op_embed_fwd(utg_backend *be, utg_dtype at, void *out, const float *table, const int32_t *ids,
                             int n, int d) {
    fb__call c;
    fb__begin(&c, be, FB_OP_embed_fwd);
    fb__at(&c, at);
    fb__out(&c, "out", out, fb__ba(&c, n, d, 1));
    fb__embed(&c, "table", table, 0, ids, n, d);
    FB__RUN(c, embed_fwd, (c.in, at, out, table, ids, n, d));
}
static void fb__op_embed_bwd(utg_backend *be, utg_dtype at, float *dtable, const void *dout,
                             const int32_t *ids, int n, int d) {
    fb__call c;
    fb__begin(&c, be, FB_OP_embed_bwd);
    fb__at(&c, at);
    fb__in(&c, "dout", dout, fb__ba(&c, n, d, 1));
    fb__embed(&c, "dtable", dtable, 1, ids, n, d);
    FB__RUN(c, embed_bwd, (c.in, at, dtable, dout, ids, n, d));
}

static void fb__op_rmsnorm_fwd(utg_backend *be, utg_dtype at, void *y, float *rstd, const void *x, int rows,
                               int cols, float eps) {
    fb__call c;
    fb__begin(&c, be, FB_OP_rmsnorm_fwd);
    fb__at(&c, at);
    fb__out(&c, "y", y, fb__ba(&c, rows, cols, 1));
    fb__out(&c, "rstd", rstd, fb__b4(&c, rows, 1, 1));
    fb__in(&c, "x", x, fb__ba(&c, rows, cols, 1));
    FB__RUN(c, rmsnorm_fwd, (c.in, at, y, rstd, x, rows, cols, eps));
}
static void fb__op_rmsnorm_bwd(utg_backend *be, utg_dtype at, void *dx, const void *dy, const void *y,
                               const float *rstd, int rows, int cols) {
    fb__call c;
    fb__begin(&c, be, FB_OP_rmsnorm_bwd);
    fb__at(&c, at);
    fb__out(&c, "dx", dx, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "dy", dy, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "y", y, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "rstd", rstd, fb__b4(&c, rows, 1, 1));
    FB__RUN(c, rmsnorm_bwd, (c.in, at, dx, dy, y, rstd, rows, cols));
}

/* cos_sin holds [seq_len, rot_dims/2] cosines, then as many sines; gain is per head or NULL */
static void fb__qk_tables(fb__call *c, const float *cos_sin, const float *gain, int seq_len, int n_heads,
                          int head_dim, int rot_dims) {
    if (seq_len <= 0 || rot_dims < 0 || rot_dims > head_dim || rot_dims % 2)
        fb__die(c, "seq_len %d, rot_dims %d, head_dim %d", seq_len, rot_dims, head_dim);
    fb__in(c, "cos_sin", cos_sin, fb__b4(c, seq_len, rot_dims / 2, 2));
    fb__in_opt(c, "gain", gain, fb__b4(c, n_heads, 1, 1));
}
static void fb__op_qk_norm_rope_fwd(utg_backend *be, utg_dtype at, void *y, void *xn, float *rstd,
                                    const void *x, const float *cos_sin, const float *gain, int n_tok,
                                    int seq_len, int n_heads, int head_dim, int rot_dims, float eps) {
    fb__call c;
    fb__begin(&c, be, FB_OP_qk_norm_rope_fwd);
    fb__at(&c, at);
    fb__out(&c, "y", y, fb__ba(&c, n_tok, n_heads, head_dim));
    fb__out(&c, "xn", xn, fb__ba(&c, n_tok, n_heads, head_dim));
    fb__out(&c, "rstd", rstd, fb__b4(&c, n_tok, n_heads, 1));
    fb__in(&c, "x", x, fb__ba(&c, n_tok, n_heads, head_dim));
    fb__qk_tables(&c, cos_sin, gain, seq_len, n_heads, head_dim, rot_dims);
    FB__RUN(c, qk_norm_rope_fwd, (c.in, at, y, xn, rstd, x, cos_sin, gain, n_tok, seq_len, n_heads, head_dim,
                                  rot_dims, eps));
}
/* dgain may be NULL (nothing to add into; the contract only says it is added to "with a gain") */
static void fb__op_qk_norm_rope_bwd(utg_backend *be, utg_dtype at, void *dx, float *dgain, const void *dy,
                                    const void *xn, const float *rstd, const float *cos_sin,
                                    const float *gain, int n_tok, int seq_len, int n_heads, int head_dim,
                                    int rot_dims) {
    fb__call c;
    fb__begin(&c, be, FB_OP_qk_norm_rope_bwd);
    fb__at(&c, at);
    fb__out(&c, "dx", dx, fb__ba(&c, n_tok, n_heads, head_dim));
    fb__out_opt(&c, "dgain", dgain, fb__b4(&c, n_heads, 1, 1));
    fb__in(&c, "dy", dy, fb__ba(&c, n_tok, n_heads, head_dim));
    fb__in(&c, "xn", xn, fb__ba(&c, n_tok, n_heads, head_dim));
    fb__in(&c, "rstd", rstd, fb__b4(&c, n_tok, n_heads, 1));
    fb__qk_tables(&c, cos_sin, gain, seq_len, n_heads, head_dim, rot_dims);
    FB__RUN(c, qk_norm_rope_bwd, (c.in, at, dx, dgain, dy, xn, rstd, cos_sin, gain, n_tok, seq_len, n_heads,
                                  head_dim, rot_dims));
}

/* q, y (and their gradients): [B*T, H*hd]; k, v: [B*T, Hkv*hd]; lse: [B*T*H] */
static long long fb__bt(fb__call *c, int B, int T, int H, int Hkv) {
    if (B < 0 || T < 0 || H <= 0 || Hkv <= 0 || H % Hkv) fb__die(c, "B %d, T %d, H %d, Hkv %d", B, T, H, Hkv);
    return (long long)B * T;
}
static void fb__op_attn_fwd(utg_backend *be, utg_dtype at, void *y, float *lse, const void *q, const void *k,
                            const void *v, int B, int T, int H, int Hkv, int hd, float scale) {
    fb__call c;
    long long bt;
    fb__begin(&c, be, FB_OP_attn_fwd);
    fb__at(&c, at);
    bt = fb__bt(&c, B, T, H, Hkv);
    fb__out(&c, "y", y, fb__ba(&c, bt, H, hd));
    fb__out(&c, "lse", lse, fb__b4(&c, bt, H, 1));
    fb__in(&c, "q", q, fb__ba(&c, bt, H, hd));
    fb__in(&c, "k", k, fb__ba(&c, bt, Hkv, hd));
    fb__in(&c, "v", v, fb__ba(&c, bt, Hkv, hd));
    FB__RUN(c, attn_fwd, (c.in, at, y, lse, q, k, v, B, T, H, Hkv, hd, scale));
}
static void fb__op_attn_bwd(utg_backend *be, utg_dtype at, void *dq, void *dk, void *dv, const void *dy,
                            const void *q, const void *k, const void *v, const void *y, const float *lse,
                            int B, int T, int H, int Hkv, int hd, float scale) {
    fb__call c;
    long long bt;
    fb__begin(&c, be, FB_OP_attn_bwd);
    fb__at(&c, at);
    bt = fb__bt(&c, B, T, H, Hkv);
    fb__out(&c, "dq", dq, fb__ba(&c, bt, H, hd));
    fb__out(&c, "dk", dk, fb__ba(&c, bt, Hkv, hd));
    fb__out(&c, "dv", dv, fb__ba(&c, bt, Hkv, hd));
    fb__in(&c, "dy", dy, fb__ba(&c, bt, H, hd));
    fb__in(&c, "q", q, fb__ba(&c, bt, H, hd));
    fb__in(&c, "k", k, fb__ba(&c, bt, Hkv, hd));
    fb__in(&c, "v", v, fb__ba(&c, bt, Hkv, hd));
    fb__in(&c, "y", y, fb__ba(&c, bt, H, hd));
    fb__in(&c, "lse", lse, fb__b4(&c, bt, H, 1));
    FB__RUN(c, attn_bwd, (c.in, at, dq, dk, dv, dy, q, k, v, y, lse, B, T, H, Hkv, hd, scale));
}

static void fb__op_relu2_fwd(utg_backend *be, utg_dtype at, void *y, const void *x, size_t n, float slope) {
    fb__call c;
    fb__begin(&c, be, FB_OP_relu2_fwd);
    fb__at(&c, at);
    fb__out(&c, "y", y, fb__ba(&c, (long long)n, 1, 1));
    fb__in(&c, "x", x, fb__ba(&c, (long long)n, 1, 1));
    FB__RUN(c, relu2_fwd, (c.in, at, y, x, n, slope));
}
static void fb__op_relu2_bwd(utg_backend *be, utg_dtype at, void *dx, const void *dy, const void *x, size_t n,
                             float slope) {
    fb__call c;
    fb__begin(&c, be, FB_OP_relu2_bwd);
    fb__at(&c, at);
    fb__out(&c, "dx", dx, fb__ba(&c, (long long)n, 1, 1));
    fb__in(&c, "dy", dy, fb__ba(&c, (long long)n, 1, 1));
    fb__in(&c, "x", x, fb__ba(&c, (long long)n, 1, 1));
    FB__RUN(c, relu2_bwd, (c.in, at, dx, dy, x, n, slope));
}

/* The mix ops' inputs: x [rows, cols] and z [rows, cols] or NULL, activations; each weight a vector of
   cols floats, one scalar under its *_SCALAR flag, or NULL. The backward needs x only for dwx (NULL
   otherwise). */
static void fb__mix_in(fb__call *c, const void *x, int x_nullable, const float *wx, const void *z,
                       const float *wz, int rows, int cols, int flags, int allowed) {
    if (flags & ~allowed) fb__die(c, "unknown flags 0x%x", (unsigned)(flags & ~allowed));
    if ((flags & UTG_MIX_WZ_SIGMOID) && !(flags & UTG_MIX_WZ_SCALAR))
        fb__die(c, "UTG_MIX_WZ_SIGMOID without UTG_MIX_WZ_SCALAR");
    fb__range(c, "x", x, fb__ba(c, rows, cols, 1), 0, x_nullable);
    fb__in_opt(c, "wx", wx, fb__b4(c, (flags & UTG_MIX_WX_SCALAR) ? 1 : cols, 1, 1));
    fb__in_opt(c, "z", z, fb__ba(c, rows, cols, 1));
    fb__in_opt(c, "wz", wz, fb__b4(c, (flags & UTG_MIX_WZ_SCALAR) ? 1 : cols, 1, 1));
}
#define FB__MIX_FWD_FLAGS (UTG_MIX_WX_SCALAR | UTG_MIX_WZ_SCALAR | UTG_MIX_WZ_SIGMOID)
static void fb__op_mix_fwd(utg_backend *be, utg_dtype at, void *out, const void *x, const float *wx,
                           const void *z, const float *wz, int rows, int cols, int flags) {
    fb__call c;
    fb__begin(&c, be, FB_OP_mix_fwd);
    fb__at(&c, at);
    fb__out(&c, "out", out, fb__ba(&c, rows, cols, 1));
    fb__mix_in(&c, x, 0, wx, z, wz, rows, cols, flags, FB__MIX_FWD_FLAGS);
    fb__may_alias(&c, "out", "x");
    FB__RUN(c, mix_fwd, (c.in, at, out, x, wx, z, wz, rows, cols, flags));
}
static void fb__op_mix_bwd(utg_backend *be, utg_dtype at, void *dx, void *dz, float *dwx, float *dwz,
                           const void *dout, const void *x, const float *wx, const void *z, const float *wz,
                           int rows, int cols, int flags) {
    fb__call c;
    fb__begin(&c, be, FB_OP_mix_bwd);
    fb__at(&c, at);
    fb__out_opt(&c, "dx", dx, fb__ba(&c, rows, cols, 1));
    fb__out_opt(&c, "dz", dz, fb__ba(&c, rows, cols, 1));
    fb__out_opt(&c, "dwx", dwx, fb__b4(&c, (flags & UTG_MIX_WX_SCALAR) ? 1 : cols, 1, 1));
    fb__out_opt(&c, "dwz", dwz, fb__b4(&c, (flags & UTG_MIX_WZ_SCALAR) ? 1 : cols, 1, 1));
    fb__in(&c, "dout", dout, fb__ba(&c, rows, cols, 1));
    fb__mix_in(&c, x, dwx == NULL, wx, z, wz, rows, cols, flags,
               FB__MIX_FWD_FLAGS | UTG_MIX_DX_SET | UTG_MIX_DZ_SET);
    FB__RUN(c, mix_bwd, (c.in, at, dx, dz, dwx, dwz, dout, x, wx, z, wz, rows, cols, flags));
}
static void fb__op_mix_rmsnorm_fwd(utg_backend *be, utg_dtype at, void *out, void *y, float *rstd,
                                   const void *x, const float *wx, const void *z, const float *wz, int rows,
                                   int cols, int flags, float eps) {
    fb__call c;
    fb__begin(&c, be, FB_OP_mix_rmsnorm_fwd);
    fb__at(&c, at);
    fb__out(&c, "out", out, fb__ba(&c, rows, cols, 1));
    fb__out(&c, "y", y, fb__ba(&c, rows, cols, 1));
    fb__out(&c, "rstd", rstd, fb__b4(&c, rows, 1, 1));
    fb__mix_in(&c, x, 0, wx, z, wz, rows, cols, flags, FB__MIX_FWD_FLAGS);
    fb__may_alias(&c, "out", "x");
    FB__RUN(c, mix_rmsnorm_fwd, (c.in, at, out, y, rstd, x, wx, z, wz, rows, cols, flags, eps));
}

/* the logits are read and overwritten; every target indexes its row */
static void fb__op_xent_fwd(utg_backend *be, utg_dtype at, void *logits, float *row_loss,
                            const int32_t *targets, int rows, int V, float softcap, float dscale) {
    fb__call c;
    int r;
    fb__begin(&c, be, FB_OP_xent_fwd);
    fb__at(&c, at);
    fb__out(&c, "logits", logits, fb__ba(&c, rows, V, 1));
    fb__out(&c, "row_loss", row_loss, fb__b4(&c, rows, 1, 1));
    fb__in(&c, "targets", targets, fb__b4(&c, rows, 1, 1));
    for (r = 0; r < rows; r++)
        if (targets[r] < 0 || targets[r] >= V)
            fb__die(&c, "targets[%d] = %d outside [0, %d)", r, (int)targets[r], V);
    FB__RUN(c, xent_fwd, (c.in, at, logits, row_loss, targets, rows, V, softcap, dscale));
}

/* ---------------------------------------------------------------- feature ops */

static void fb__op_xsa_fwd(utg_backend *be, utg_dtype at, void *y, const void *x, const void *v, int n_tok,
                           int H, int Hkv, int hd) {
    fb__call c;
    fb__begin(&c, be, FB_OP_xsa_fwd);
    fb__at(&c, at);
    fb__bt(&c, 1, n_tok, H, Hkv);
    fb__out(&c, "y", y, fb__ba(&c, n_tok, H, hd));
    fb__in(&c, "x", x, fb__ba(&c, n_tok, H, hd));
    fb__in(&c, "v", v, fb__ba(&c, n_tok, Hkv, hd));
    FB__RUN(c, xsa_fwd, (c.in, at, y, x, v, n_tok, H, Hkv, hd));
}
static void fb__op_xsa_bwd(utg_backend *be, utg_dtype at, void *dx, void *dv, const void *dy, const void *x,
                           const void *v, int n_tok, int H, int Hkv, int hd) {
    fb__call c;
    fb__begin(&c, be, FB_OP_xsa_bwd);
    fb__at(&c, at);
    fb__bt(&c, 1, n_tok, H, Hkv);
    fb__out(&c, "dx", dx, fb__ba(&c, n_tok, H, hd));
    fb__out(&c, "dv", dv, fb__ba(&c, n_tok, Hkv, hd));
    fb__in(&c, "dy", dy, fb__ba(&c, n_tok, H, hd));
    fb__in(&c, "x", x, fb__ba(&c, n_tok, H, hd));
    fb__in(&c, "v", v, fb__ba(&c, n_tok, Hkv, hd));
    FB__RUN(c, xsa_bwd, (c.in, at, dx, dv, dy, x, v, n_tok, H, Hkv, hd));
}

static void fb__op_lerp_fwd(utg_backend *be, utg_dtype at, void *out, const void *x, const void *z,
                            const float *g, const float *s, int rows, int cols) {
    fb__call c;
    fb__begin(&c, be, FB_OP_lerp_fwd);
    fb__at(&c, at);
    fb__out(&c, "out", out, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "x", x, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "z", z, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "g", g, fb__b4(&c, cols, 1, 1));
    fb__in_opt(&c, "s", s, fb__b4(&c, cols, 1, 1));
    FB__RUN(c, lerp_fwd, (c.in, at, out, x, z, g, s, rows, cols));
}
static void fb__op_lerp_bwd(utg_backend *be, utg_dtype at, void *dx, void *dz, float *dg, float *ds,
                            const void *dout, const void *y, const void *z, const float *g, const float *s,
                            int rows, int cols) {
    fb__call c;
    fb__begin(&c, be, FB_OP_lerp_bwd);
    fb__at(&c, at);
    if (!s && ds) fb__die(&c, "ds is not NULL although s is");
    fb__out(&c, "dx", dx, fb__ba(&c, rows, cols, 1));
    fb__out(&c, "dz", dz, fb__ba(&c, rows, cols, 1));
    fb__out(&c, "dg", dg, fb__b4(&c, cols, 1, 1));
    fb__out_opt(&c, "ds", ds, fb__b4(&c, cols, 1, 1));
    fb__in(&c, "dout", dout, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "y", y, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "z", z, fb__ba(&c, rows, cols, 1));
    fb__in(&c, "g", g, fb__b4(&c, cols, 1, 1));
    fb__in_opt(&c, "s", s, fb__b4(&c, cols, 1, 1));
    fb__may_alias(&c, "dx", "dout");
    FB__RUN(c, lerp_bwd, (c.in, at, dx, dz, dg, ds, dout, y, z, g, s, rows, cols));
}

/* yin, y: [n_tok, H*hd] and x: [n_tok, x_cols] (of which the first win are read), activations;
   g: [n_tok, H] and W: [H, win], floats */
static void fb__gate_shape(fb__call *c, int x_cols, int win) {
    if (win < 0 || win > x_cols) fb__die(c, "win %d of x_cols %d", win, x_cols);
}
static void fb__op_gate_fwd(utg_backend *be, utg_dtype at, void *y, float *g, const void *yin, const void *x,
                            const float *W, int n_tok, int H, int hd, int x_cols, int win, float scale,
                            float mult) {
    fb__call c;
    fb__begin(&c, be, FB_OP_gate_fwd);
    fb__at(&c, at);
    fb__gate_shape(&c, x_cols, win);
    fb__out(&c, "y", y, fb__ba(&c, n_tok, H, hd));
    fb__out(&c, "g", g, fb__b4(&c, n_tok, H, 1));
    fb__in(&c, "yin", yin, fb__ba(&c, n_tok, H, hd));
    fb__in(&c, "x", x, fb__ba(&c, n_tok, x_cols, 1));
    fb__in(&c, "W", W, fb__b4(&c, H, win, 1));
    FB__RUN(c, gate_fwd, (c.in, at, y, g, yin, x, W, n_tok, H, hd, x_cols, win, scale, mult));
}
static void fb__op_gate_bwd(utg_backend *be, utg_dtype at, void *dyin, void *dx, float *dW, const void *dy,
                            const void *yin, const void *x, const float *W, const float *g, int n_tok,
                            int H, int hd, int x_cols, int win, float scale, float mult) {
    fb__call c;
    fb__begin(&c, be, FB_OP_gate_bwd);
    fb__at(&c, at);
    fb__gate_shape(&c, x_cols, win);
    fb__out(&c, "dyin", dyin, fb__ba(&c, n_tok, H, hd));
    fb__out(&c, "dx", dx, fb__ba(&c, n_tok, x_cols, 1));
    fb__out(&c, "dW", dW, fb__b4(&c, H, win, 1));
    fb__in(&c, "dy", dy, fb__ba(&c, n_tok, H, hd));
    fb__in(&c, "yin", yin, fb__ba(&c, n_tok, H, hd));
    fb__in(&c, "x", x, fb__ba(&c, n_tok, x_cols, 1));
    fb__in(&c, "W", W, fb__b4(&c, H, win, 1));
    fb__in(&c, "g", g, fb__b4(&c, n_tok, H, 1));
    FB__RUN(c, gate_bwd, (c.in, at, dyin, dx, dW, dy, yin, x, W, g, n_tok, H, hd, x_cols, win, scale, mult));
}

/* x, y: [n_tok, d], activations; w: [win] and lam: one float; ids: [n_tok] (compared with bos only) */
static void fb__smear_in(fb__call *c, const void *x, const float *w, const float *lam, const int32_t *ids,
                         int n_tok, int seq_len, int d, int win) {
    if (seq_len <= 0 || win < 0 || win > d) fb__die(c, "seq_len %d, win %d of d %d", seq_len, win, d);
    fb__in(c, "x", x, fb__ba(c, n_tok, d, 1));
    fb__in(c, "w", w, fb__b4(c, win, 1, 1));
    fb__in(c, "lam", lam, 4);
    fb__in(c, "ids", ids, fb__b4(c, n_tok, 1, 1));
}
static void fb__op_smear_fwd(utg_backend *be, utg_dtype at, void *y, const void *x, const float *w,
                             const float *lam, const int32_t *ids, int n_tok, int seq_len, int d, int win,
                             int bos) {
    fb__call c;
    fb__begin(&c, be, FB_OP_smear_fwd);
    fb__at(&c, at);
    fb__out(&c, "y", y, fb__ba(&c, n_tok, d, 1));
    fb__smear_in(&c, x, w, lam, ids, n_tok, seq_len, d, win);
    FB__RUN(c, smear_fwd, (c.in, at, y, x, w, lam, ids, n_tok, seq_len, d, win, bos));
}
static void fb__op_smear_bwd(utg_backend *be, utg_dtype at, void *dx, float *dw, float *dlam, const void *dy,
                             const void *x, const float *w, const float *lam, const int32_t *ids, int n_tok,
                             int seq_len, int d, int win, int bos) {
    fb__call c;
    fb__begin(&c, be, FB_OP_smear_bwd);
    fb__at(&c, at);
    fb__out(&c, "dx", dx, fb__ba(&c, n_tok, d, 1));
    fb__out(&c, "dw", dw, fb__b4(&c, win, 1, 1));
    fb__out(&c, "dlam", dlam, 4);
    fb__in(&c, "dy", dy, fb__ba(&c, n_tok, d, 1));
    fb__smear_in(&c, x, w, lam, ids, n_tok, seq_len, d, win);
    FB__RUN(c, smear_bwd, (c.in, at, dx, dw, dlam, dy, x, w, lam, ids, n_tok, seq_len, d, win, bos));
}

static void fb__op_fake_quant_rows(utg_backend *be, float *out, const float *w, int rows, int cols, int bits,
                                   int clip, double clip_param, uint64_t noise_key) {
    fb__call c;
    fb__begin(&c, be, FB_OP_fake_quant_rows);
    if (bits < 2 || bits > 8) fb__die(&c, "bits %d outside 2..8", bits);
    fb__out(&c, "out", out, fb__b4(&c, rows, cols, 1));
    fb__in(&c, "w", w, fb__b4(&c, rows, cols, 1));
    FB__RUN(c, fake_quant_rows, (c.in, out, w, rows, cols, bits, clip, clip_param, noise_key));
}

/* ---------------------------------------------------------------- optimizer and reductions */

static void fb__op_reduce_f64(utg_backend *be, double *out, const float *x, size_t n, double scale,
                              int flags) {
    fb__call c;
    fb__begin(&c, be, FB_OP_reduce_f64);
    if (flags & ~(UTG_REDUCE_SQUARES | UTG_REDUCE_ADD)) fb__die(&c, "unknown flags 0x%x", (unsigned)flags);
    fb__out(&c, "out", out, sizeof(double));
    fb__in(&c, "x", x, fb__b4(&c, (long long)n, 1, 1));
    FB__RUN(c, reduce_f64, (c.in, out, x, n, scale, flags));
}

static void fb__op_normalize_frob(utg_backend *be, float *x, size_t n, double eps) {
    fb__call c;
    fb__begin(&c, be, FB_OP_normalize_frob);
    fb__out(&c, "x", x, fb__b4(&c, (long long)n, 1, 1));
    FB__RUN(c, normalize_frob, (c.in, x, n, eps));
}

static void fb__op_axpby(utg_backend *be, float *y, float alpha, const float *x, float beta, size_t n) {
    fb__call c;
    fb__begin(&c, be, FB_OP_axpby);
    fb__out(&c, "y", y, fb__b4(&c, (long long)n, 1, 1));
    fb__range(&c, "x", x, fb__b4(&c, (long long)n, 1, 1), 0, alpha == 0.0f);
    FB__RUN(c, axpby, (c.in, y, alpha, x, beta, n));
}

static void fb__op_muon_momentum(utg_backend *be, float *u, float *m, const float *g, float mu, int nesterov,
                                 size_t n) {
    fb__call c;
    fb__begin(&c, be, FB_OP_muon_momentum);
    fb__out(&c, "u", u, fb__b4(&c, (long long)n, 1, 1));
    fb__out(&c, "m", m, fb__b4(&c, (long long)n, 1, 1));
    fb__in(&c, "g", g, fb__b4(&c, (long long)n, 1, 1));
    FB__RUN(c, muon_momentum, (c.in, u, m, g, mu, nesterov, n));
}

static void fb__op_row_normalize(utg_backend *be, float *x, int rows, int cols, float eps) {
    fb__call c;
    fb__begin(&c, be, FB_OP_row_normalize);
    fb__out(&c, "x", x, fb__b4(&c, rows, cols, 1));
    FB__RUN(c, row_normalize, (c.in, x, rows, cols, eps));
}

static void fb__op_adam_step(utg_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                             float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2) {
    fb__call c;
    fb__begin(&c, be, FB_OP_adam_step);
    fb__out(&c, "p", p, fb__b4(&c, (long long)n, 1, 1));
    fb__out(&c, "m", m, fb__b4(&c, (long long)n, 1, 1));
    fb__out(&c, "v", v, fb__b4(&c, (long long)n, 1, 1));
    fb__in(&c, "g", g, fb__b4(&c, (long long)n, 1, 1));
    FB__RUN(c, adam_step, (c.in, p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2));
}

/* ---------------------------------------------------------------- life */

static void fb__op_synchronize(utg_backend *be) {
    fb__call c;
    fb__begin(&c, be, FB_OP_synchronize);
    c.s->st.synchronizes++;
    FB__RUN(c, synchronize, (c.in));
}

/* Unmaps what is left (named on stderr: the library must free its buffers first), destroys the
   inner backend and the wrapper. */
static void fb__op_destroy(utg_backend *be) {
    fb__state *s = (fb__state *)be->impl;
    int k;
    if (s->n_bufs)
        fprintf(stderr, "fenced backend: destroyed with %d buffers (%llu bytes) still allocated\n", s->n_bufs,
                (unsigned long long)s->st.live_bytes);
    for (k = 0; k < s->n_bufs; k++) munmap(s->bufs[k].map, s->bufs[k].map_len);
    for (k = 0; k < FB__MAX_STATES; k++)
        if (fb__states[k] == s) fb__states[k] = NULL;
    utg_backend_destroy(s->inner);
    free(s->bufs);
    free(s);
    free(be);
}

/* ---------------------------------------------------------------- create, stats */

#define FB__OFFSET(op, waits) offsetof(utg_backend, op),
static const size_t fb__op_offsets[FB_N_OPS] = {FB_OPS(FB__OFFSET)};

/* The byte offset of the first field of t after the header that is set but not in FB_OPS or
   FB_FIELDS (op `as_unknown` is treated as unknown, for the suite's own test), or -1. A backend
   that leaves padding bytes nonzero would be refused too; the CPU backend zeroes its table. */
static long fb__first_unknown(const utg_backend *t, int as_unknown) {
    utg_backend rest;
    const unsigned char *p = (const unsigned char *)&rest;
    size_t o, from = offsetof(utg_backend, flags) + sizeof t->flags;
    memcpy(&rest, t, sizeof rest);
#define FB__CLEAR(op, waits) if (FB_OP_##op != as_unknown) rest.op = NULL;
    FB_OPS(FB__CLEAR)
#undef FB__CLEAR
#define FB__CLEAR_FIELD(f) memset(&rest.f, 0, sizeof rest.f);
    FB_FIELDS(FB__CLEAR_FIELD)
#undef FB__CLEAR_FIELD
    for (o = from; o < sizeof rest; o++)
        if (p[o]) return (long)o;
    return -1;
}

/* Where byte offset o of the table lies: "at OP", "after OP" (the last known op before it) or
   "before buf_alloc" (between the header and the first op). */
static void fb__op_near(long o, char *buf, size_t size) {
    int k, best = -1;
    for (k = 0; k < FB_N_OPS; k++)
        if ((long)fb__op_offsets[k] <= o && (best < 0 || fb__op_offsets[k] > fb__op_offsets[best])) best = k;
    if (best < 0) snprintf(buf, size, "before %s", fb__op_names[0]);
    else snprintf(buf, size, "%s %s", (long)fb__op_offsets[best] == o ? "at" : "after", fb__op_names[best]);
}

/* The wrapper's table: the inner one with each known op replaced by its wrapper (NULL stays NULL, so
   the library sees the same optional ops), the concurrency flag cleared. */
static utg_backend *fb__table(utg_backend *inner, fb__state *s) {
    utg_backend *w = (utg_backend *)malloc(sizeof *w);
    if (!w) return NULL;
    memcpy(w, inner, sizeof *w);
#define FB__SET(op, waits) w->op = inner->op ? fb__op_##op : NULL;
    FB_OPS(FB__SET)
#undef FB__SET
    w->abi_version = UTG_BACKEND_ABI_VERSION;
    w->struct_size = (uint32_t)sizeof(utg_backend);
    w->name = "fenced";
    w->impl = s;
    w->flags = inner->flags & ~UTG_BACKEND_CONCURRENT;
    return w;
}

/* On success the wrapper owns inner (its destroy destroys inner); on failure inner stays the
   caller's. UTG_ERR_BACKEND, with the reason on stderr, for an inner table from another ABI or with a
   field FB_OPS does not know. */
FB__MAYBE_UNUSED static utg_result fenced_backend_create(utg_backend *inner, fenced_backend_opts opts,
                                                         utg_backend **out) {
    fb__state *s;
    long unknown;
    char near[64];
    int k;
    if (!out || !inner) return UTG_ERR_INVALID;
    *out = NULL;
    if (inner->abi_version != UTG_BACKEND_ABI_VERSION || inner->struct_size != sizeof(utg_backend)) {
        fprintf(stderr, "fenced backend: inner table has ABI %u, size %u; this build has %u, %u\n",
                inner->abi_version, inner->struct_size, UTG_BACKEND_ABI_VERSION,
                (unsigned)sizeof(utg_backend));
        return UTG_ERR_BACKEND;
    }
    if ((unknown = fb__first_unknown(inner, -1)) >= 0) {
        fb__op_near(unknown, near, sizeof near);
        fprintf(stderr, "fenced backend: inner table sets a field the wrapper does not know (byte %ld, %s): "
                "add it to FB_OPS with a wrapper\n", unknown, near);
        return UTG_ERR_BACKEND;
    }
    for (k = 0; k < FB__MAX_STATES && fb__states[k]; k++) {}
    if (k == FB__MAX_STATES) return UTG_ERR_NOMEM;
    s = (fb__state *)calloc(1, sizeof *s);
    if (!s || !(*out = fb__table(inner, s))) { free(s); return UTG_ERR_NOMEM; }
    s->inner = inner;
    s->opts = opts;
    s->page = (size_t)sysconf(_SC_PAGESIZE);
    fb__states[k] = s;
    fb__install_handler();
    return UTG_OK;
}

static const fb__state *fb__of(const utg_backend *be) {
    if (!be || be->destroy != fb__op_destroy) {
        fprintf(stderr, "fenced backend: %s is not a fenced backend\n", be && be->name ? be->name : "(null)");
        abort();
    }
    return (const fb__state *)be->impl;
}

FB__MAYBE_UNUSED static fenced_stats fenced_backend_stats(const utg_backend *be) { return fb__of(be)->st; }

/* Zeroes the counters; the live buffer counts stay, and the peak restarts from them. */
FB__MAYBE_UNUSED static void fenced_backend_reset_stats(utg_backend *be) {
    fb__state *s = (fb__state *)fb__of(be);
    fenced_stats keep = s->st;
    memset(&s->st, 0, sizeof s->st);
    s->st.live_buffers = keep.live_buffers;
    s->st.live_bytes = keep.live_bytes;
    s->st.peak_bytes = keep.live_bytes;
}

#endif
