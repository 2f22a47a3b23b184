/* A CPU emulator of the CUDA programming model, for running a .cu file compiled by g++ as C++ (through
   compat.h, which includes this header). Header-only C++17; the extern "C" runtime functions are weak so
   that several translation units may include it.

   Execution: the blocks of a launch are spread over OpenMP threads, one block at a time per OS thread.
   Each CUDA thread of a block is a fiber on its own mmap'd stack (guard page below it), and a per-OS-
   thread scheduler switches fibers round-robin only inside emulator calls (barriers, shuffles, votes).
   threadIdx/blockIdx/blockDim/gridDim are thread_local and rewritten on every switch; the switch is an
   opaque call, so compiled code reloads them after it.

   Checks: __syncthreads deadlocks (a full round of waiting fibers with no progress) and shuffles or votes
   in a partial warp abort with a message naming the kernel and the block. Device memory lives in its own
   mappings, PROT_NONE except inside launches and the copy calls, with a guard page after the end of each
   buffer, so a host dereference or a device overrun dies with a message from the SIGSEGV handler. The
   buffer's end meets the guard exactly when its size is a multiple of the alignment; otherwise an overrun
   of fewer than (alignment - size % alignment) bytes lands in padding and goes unseen. Copies outside a
   buffer, or with a device pointer on the host side of the kind, fail with a message.

   Run-time switches: UTG_EMU_ORDER=reverse (or utg_emu::set_order) runs blocks and fibers in reverse
   order; UTG_EMU_SERIAL=1 (or utg_emu::set_parallel(false)) runs blocks on the calling thread only;
   UTG_EMU_DEVICES=0 makes cudaGetDeviceCount report no device; UTG_EMU_ALIGN sets cudaMalloc's
   alignment (default 16 bytes: float4 loads stay aligned; CUDA's own is 256). Not emulated: spin-waits
   on memory (a fiber is never preempted), partial shuffle masks, concurrency between streams (every call
   is synchronous), inline PTX; ASan and valgrind need fiber annotations this header does not make. */
#ifndef UTG_CUDA_EMU_H
#define UTG_CUDA_EMU_H

#include <cuda_runtime.h>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <vector>
#if !defined(__x86_64__) || defined(UTG_EMU_UCONTEXT)
#include <ucontext.h>
#define UTG_EMU_USE_UCONTEXT 1
#endif

// the built-in variables: one copy per OS thread, rewritten by the scheduler on every fiber switch
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace utg_emu {

enum class Order { forward, reverse };

struct Config {
    Order order;
    bool parallel;
};

inline bool env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

inline Config &config() {
    static Config c = {env_is("UTG_EMU_ORDER", "reverse") ? Order::reverse : Order::forward,
                       !env_is("UTG_EMU_SERIAL", "1")};
    return c;
}
inline void set_order(Order o) { config().order = o; }
// false: no OpenMP region at all (what a forked child needs: libgomp's pool does not survive fork)
inline void set_parallel(bool on) { config().parallel = on; }

[[noreturn]] inline void die(const char *msg) {
    fprintf(stderr, "utg-emu: %s\n", msg);
    fflush(stderr);
    abort();
}

/* ---- fiber context switch ---- */

#ifdef UTG_EMU_USE_UCONTEXT
struct Ctx {
    ucontext_t uc;
};
#else
struct Ctx {
    void *sp;
};
} // namespace utg_emu
// x86-64 SysV: saves the callee-saved registers, MXCSR and the x87 control word on the old stack
extern "C" void utg_emu_switch(void **save_sp, void *load_sp);
asm(R"(.pushsection .text
.weak utg_emu_switch
.type utg_emu_switch, @function
utg_emu_switch:
  pushq %rbp; pushq %rbx; pushq %r12; pushq %r13; pushq %r14; pushq %r15
  subq $8, %rsp; stmxcsr (%rsp); fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp); fldcw 4(%rsp); addq $8, %rsp
  popq %r15; popq %r14; popq %r13; popq %r12; popq %rbx; popq %rbp
  ret
.popsection
)");
namespace utg_emu {
#endif

inline void ctx_switch(Ctx *from, Ctx *to) {
#ifdef UTG_EMU_USE_UCONTEXT
    swapcontext(&from->uc, &to->uc);
#else
    utg_emu_switch(&from->sp, to->sp);
#endif
}

/* ---- the per-OS-thread scheduler ---- */

enum Wait : unsigned char { WAIT_NONE, WAIT_BLOCK, WAIT_WARP };

struct Fiber {
    Ctx ctx;
    unsigned char *stack; // lowest usable byte; the guard page is just below it
    uint3 tid;
    bool done;
    Wait wait;
};

struct Bar {
    int count;
    unsigned gen;
};

constexpr size_t STACK_BYTES = 256 << 10;
constexpr int MAX_THREADS = 1024;

struct Sched {
    std::vector<Fiber> f;
    int n = 0, cur = 0, nlive = 0;
    unsigned long idle = 0; // yields of waiting fibers since the last arrival, release or exit
    Ctx launcher;
    Bar block_bar;
    Bar warp_bar[MAX_THREADS / 32];
    int warp_live[MAX_THREADS / 32];
    uint64_t xchg[MAX_THREADS]; // one exchange slot per thread for shuffles and votes
    void (*fn)(void *) = nullptr;
    void *ctx = nullptr;
    const char *kernel = "";
    unsigned char *smem = nullptr;
    size_t smem_cap = 0;
    bool altstack = false;
};

inline thread_local Sched S;

inline int lin_tid() {
    return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

inline unsigned char *dyn_smem() { return S.smem; }

[[noreturn]] inline void die_in_block(const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s in kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), thread (%u,%u,%u)",
             what, S.kernel, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z,
             threadIdx.x, threadIdx.y, threadIdx.z);
    die(msg);
}

// the next fiber to run after the current one: round robin, ascending or descending by thread index
inline int next_live() {
    int step = config().order == Order::forward ? 1 : S.n - 1;
    for (int i = 1, k = S.cur; i <= S.n; i++) {
        k = (k + step) % S.n;
        if (!S.f[k].done) return k;
    }
    return -1;
}

// the only place threadIdx changes inside a block: code after a switch reads the new fiber's value
inline void switch_to(int n) {
    Fiber &from = S.f[S.cur];
    S.cur = n;
    threadIdx = S.f[n].tid;
    ctx_switch(&from.ctx, &S.f[n].ctx);
}

// counts the waiting fibers by barrier kind, so the message says which threads diverged
[[noreturn]] inline void deadlock() {
    int nblock = 0, nwarp = 0;
    for (int t = 0; t < S.n; t++) {
        nblock += !S.f[t].done && S.f[t].wait == WAIT_BLOCK;
        nwarp += !S.f[t].done && S.f[t].wait == WAIT_WARP;
    }
    char what[160];
    snprintf(what, sizeof what,
             "deadlock: %d threads wait at __syncthreads, %d at a warp barrier (__syncwarp, shuffle, "
             "vote), %d exited",
             nblock, nwarp, S.n - S.nlive);
    die_in_block(what);
}

// after an exit: the fibers still waiting may now be all the live ones
inline void release_if_ready(Bar &b, int live) {
    if (b.count > 0 && b.count >= live) {
        b.count = 0;
        b.gen++;
    }
}

// A generation barrier over the live fibers: the last to arrive opens it; the others yield until then.
inline void bar_wait(Bar &b, const int &live, Wait kind) {
    unsigned g = b.gen;
    S.idle = 0;
    if (++b.count >= live) {
        b.count = 0;
        b.gen++;
        return;
    }
    S.f[S.cur].wait = kind;
    while (b.gen == g) {
        if (++S.idle > 2 * (unsigned long)S.nlive) deadlock();
        switch_to(next_live());
    }
    S.f[S.cur].wait = WAIT_NONE;
}

// an early return (or the end of the kernel) counts as arriving at every barrier still to come
[[noreturn]] inline void fiber_exit() {
    int w = lin_tid() / 32;
    S.f[S.cur].done = true;
    S.nlive--;
    S.warp_live[w]--;
    S.idle = 0;
    release_if_ready(S.block_bar, S.nlive);
    release_if_ready(S.warp_bar[w], S.warp_live[w]);
    int n = next_live();
    if (n < 0) ctx_switch(&S.f[S.cur].ctx, &S.launcher);
    else switch_to(n);
    __builtin_unreachable();
}

extern "C" inline void utg_emu_fiber_main() {
    S.fn(S.ctx);
    fiber_exit();
}

/* ---- fiber stacks and the block runner ---- */

inline size_t page_size() { return (size_t)sysconf(_SC_PAGESIZE); }

inline unsigned char *new_stack() {
    size_t pg = page_size();
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    void *p = mmap(nullptr, STACK_BYTES + pg, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) die("cannot map a fiber stack");
    mprotect(p, pg, PROT_NONE); // the guard page: an overflow faults instead of corrupting a neighbour
    return (unsigned char *)p + pg;
}

void install_segv_handler();

// the SIGSEGV handler needs its own stack: a fiber stack overflow leaves none
inline void ensure_altstack() {
    if (S.altstack) return;
    stack_t ss = {};
    ss.ss_size = 64 << 10;
    ss.ss_sp = mmap(nullptr, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ss.ss_sp == MAP_FAILED || sigaltstack(&ss, nullptr) != 0) die("cannot set up a signal stack");
    S.altstack = true;
}

// a fresh context at the top of the fiber's stack that starts in utg_emu_fiber_main
inline void init_fiber(Fiber &f) {
#ifdef UTG_EMU_USE_UCONTEXT
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack;
    f.ctx.uc.uc_stack.ss_size = STACK_BYTES;
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, utg_emu_fiber_main, 0);
#else
    uint64_t *sp = (uint64_t *)(f.stack + STACK_BYTES);
    *--sp = 0;                                  // fake return address: entry sees rsp % 16 == 8
    *--sp = (uint64_t)(void *)&utg_emu_fiber_main; // where utg_emu_switch's ret goes
    for (int i = 0; i < 6; i++) *--sp = 0;      // rbp rbx r12 r13 r14 r15
    *--sp = 0x037F00001F80ull;                  // default MXCSR, x87 control word above it
    f.ctx.sp = sp;
#endif
}

// grows this OS thread's fiber pool and dynamic shared memory to the launch; both are reused
inline void setup_block(int n, size_t smem) {
    ensure_altstack();
    while ((int)S.f.size() < n) {
        S.f.emplace_back();
        S.f.back().stack = new_stack();
    }
    if (smem > S.smem_cap) {
        free(S.smem);
        S.smem = (unsigned char *)aligned_alloc(128, (smem + 127) / 128 * 128);
        if (!S.smem) die("cannot allocate dynamic shared memory");
        S.smem_cap = smem;
    }
    if (smem) memset(S.smem, 0xff, smem); // never initialized on a GPU: reads show up as NaN or -1
}

// runs every CUDA thread of one block to its end, on the calling OS thread
inline void run_block(const char *kernel, uint3 bid, dim3 grid, dim3 block, size_t smem, void (*fn)(void *),
                      void *ctx) {
    int n = (int)(block.x * block.y * block.z);
    setup_block(n, smem);
    S.n = S.nlive = n;
    S.fn = fn;
    S.ctx = ctx;
    S.kernel = kernel;
    S.block_bar = Bar{0, 0};
    blockIdx = bid, gridDim = grid, blockDim = block;
    for (int w = 0; w < (n + 31) / 32; w++) {
        S.warp_bar[w] = Bar{0, 0};
        S.warp_live[w] = n - 32 * w < 32 ? n - 32 * w : 32;
    }
    for (int t = 0; t < n; t++) {
        Fiber &f = S.f[t];
        f.tid = make_uint3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
        f.done = false;
        f.wait = WAIT_NONE;
        init_fiber(f);
    }
    S.cur = config().order == Order::forward ? 0 : n - 1;
    threadIdx = S.f[S.cur].tid;
    ctx_switch(&S.launcher, &S.f[S.cur].ctx);
}

/* ---- warp operations: full warps and full masks only ---- */

// masks and partial warps that the emulator cannot give GPU semantics to abort instead of guessing
inline void check_full_warp(unsigned mask, const char *op) {
    int w = lin_tid() / 32;
    if (mask != 0xffffffffu) {
        char what[96];
        snprintf(what, sizeof what, "%s with mask 0x%08x: only full masks are emulated", op, mask);
        die_in_block(what);
    }
    if (S.warp_live[w] != 32) {
        char what[128];
        snprintf(what, sizeof what, "%s in warp %d with only %d live lanes: undefined on a GPU", op, w,
                 S.warp_live[w]);
        die_in_block(what);
    }
}

// a barrier over the live lanes of the caller's warp
inline void warp_sync() {
    int w = lin_tid() / 32;
    bar_wait(S.warp_bar[w], S.warp_live[w], WAIT_WARP);
}

// publishes v, waits for the warp, returns the 32 lanes' slots (read before anyone may overwrite them)
inline void warp_exchange(unsigned mask, uint64_t v, uint64_t out[32], const char *op) {
    int t = lin_tid(), base = t & ~31;
    check_full_warp(mask, op);
    S.xchg[t] = v;
    warp_sync();
    check_full_warp(mask, op); // a lane may have exited instead of arriving
    memcpy(out, &S.xchg[base], 32 * sizeof(uint64_t));
    warp_sync();
}

// the value of lane src_lane (0-31) of the caller's warp; the callers below map CUDA's lane rules
template <class T> inline T shfl_from(unsigned mask, T v, int src_lane, const char *op) {
    static_assert(sizeof(T) <= 8, "shuffles of at most 8 bytes");
    uint64_t slot = 0, all[32];
    memcpy(&slot, &v, sizeof(T));
    warp_exchange(mask, slot, all, op);
    T r;
    memcpy(&r, &all[src_lane & 31], sizeof(T));
    return r;
}

inline int lane_id() { return lin_tid() & 31; }

/* ---- device memory ---- */

struct Alloc {
    uintptr_t map;   // the whole mapping: guard page, data pages, guard page
    size_t map_len;
    uintptr_t data;  // the data pages, opened during launches and copies
    size_t data_len;
    uintptr_t user;  // what cudaMalloc returned, its end as close to the guard as alignment allows
    size_t size;
};

struct Memory {
    std::mutex lock;
    std::vector<Alloc> allocs;
    size_t used = 0;
    volatile sig_atomic_t in_launch = 0;
};

inline Memory &mem() {
    static Memory m;
    return m;
}

// cudaMalloc's alignment: small, so that an overrun reaches the guard page for most sizes
inline size_t alloc_align() {
    const char *v = getenv("UTG_EMU_ALIGN");
    long a = v ? atol(v) : 16;
    return a >= 1 && (a & (a - 1)) == 0 ? (size_t)a : 16;
}

// the allocation whose data (or, with_guards, whole mapping) holds p; one past the end counts
inline const Alloc *find_alloc(uintptr_t p, bool with_guards) {
    for (const Alloc &a : mem().allocs) {
        if (with_guards ? p - a.map < a.map_len : p - a.user < a.size + 1) return &a;
    }
    return nullptr;
}

// opens (read-write) or closes (no access) an allocation's data pages; the guards stay closed
inline void protect(const Alloc &a, bool open) {
    if (mprotect((void *)a.data, a.data_len, open ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
        die("mprotect of device memory failed");
}

inline void protect_all(bool open) {
    std::lock_guard<std::mutex> g(mem().lock);
    for (const Alloc &a : mem().allocs) protect(a, open);
    mem().in_launch = open;
}

/* ---- launch ---- */

inline cudaError_t &last_error() {
    static cudaError_t e = cudaSuccess;
    return e;
}

// the launch limits of current GPUs: 1024 threads per block, 228 KiB of shared memory per block
inline bool valid_config(dim3 grid, dim3 block, size_t smem) {
    unsigned long nt = (unsigned long)block.x * block.y * block.z;
    return grid.x && grid.y && grid.z && grid.y < 65536 && grid.z < 65536 && nt && nt <= MAX_THREADS &&
           block.z <= 64 && smem <= (228 << 10);
}

// the linear block number b as blockIdx, x fastest
inline uint3 block_index(long b, dim3 grid) {
    return make_uint3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                      (unsigned)(b / ((long)grid.x * grid.y)));
}

// every block once; blocks of a launch are independent, so OpenMP may run them in any order
inline void run_grid(const char *kernel, dim3 grid, dim3 block, size_t smem, void (*fn)(void *), void *ctx) {
    long nb = (long)grid.x * grid.y * grid.z;
    bool rev = config().order == Order::reverse;
    if (!config().parallel || nb == 1) {
        for (long i = 0; i < nb; i++)
            run_block(kernel, block_index(rev ? nb - 1 - i : i, grid), grid, block, smem, fn, ctx);
        return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < nb; i++)
        run_block(kernel, block_index(rev ? nb - 1 - i : i, grid), grid, block, smem, fn, ctx);
}

// what UTG_LAUNCH expands to: synchronous, device memory opened for the kernel's duration
template <class F> void launch(const char *kernel, dim3 grid, dim3 block, size_t smem, F body) {
    if (!valid_config(grid, block, smem)) {
        last_error() = cudaErrorInvalidConfiguration;
        return;
    }
    install_segv_handler();
    protect_all(true);
    run_grid(kernel, grid, block, smem, [](void *c) { (*(F *)c)(); }, &body);
    protect_all(false);
}

/* ---- the SIGSEGV report ---- */

inline struct sigaction &old_segv() {
    static struct sigaction sa;
    return sa;
}

inline bool in_stack_guard(uintptr_t p) {
    for (const Fiber &f : S.f)
        if (p < (uintptr_t)f.stack && (uintptr_t)f.stack - p <= page_size()) return true;
    return false;
}

// what a faulting address is: before, in or past a device buffer, a fiber guard page, or unknown
inline void describe_fault(uintptr_t p, char *buf, size_t cap) {
    const Alloc *a = find_alloc(p, true);
    if (!a && in_stack_guard(p)) {
        snprintf(buf, cap, "address %#lx: fiber stack overflow (%zu KiB of stack per CUDA thread)",
                 (unsigned long)p, STACK_BYTES >> 10);
    } else if (!a) {
        snprintf(buf, cap, "address %#lx is not emulated device memory", (unsigned long)p);
    } else if (p < a->user) {
        snprintf(buf, cap, "address %#lx is %lu bytes before a %lu-byte cudaMalloc buffer", (unsigned long)p,
                 (unsigned long)(a->user - p), (unsigned long)a->size);
    } else if (p >= a->user + a->size) {
        snprintf(buf, cap, "address %#lx is %lu bytes past the end of a %lu-byte cudaMalloc buffer "
                 "(guard page)", (unsigned long)p, (unsigned long)(p - a->user - a->size),
                 (unsigned long)a->size);
    } else {
        snprintf(buf, cap, "address %#lx is emulated device memory (byte %lu of a %lu-byte cudaMalloc "
                 "buffer), closed to host code", (unsigned long)p, (unsigned long)(p - a->user),
                 (unsigned long)a->size);
    }
}

// prints where the fault was, in host code or in which kernel thread, then lets the signal kill
inline void on_segv(int sig, siginfo_t *si, void *uc) {
    char what[256], msg[512];
    describe_fault((uintptr_t)si->si_addr, what, sizeof what);
    if (mem().in_launch && S.fn)
        snprintf(msg, sizeof msg, "segfault in kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s\n",
                 S.kernel, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, what);
    else
        snprintf(msg, sizeof msg, "segfault in host code: %s\n", what);
    if (write(2, "utg-emu: ", 9) < 0 || write(2, msg, strlen(msg)) < 0) {}
    // hand the fault on: the previous handler, or the default action when the instruction runs again
    struct sigaction &old = old_segv();
    if (old.sa_flags & SA_SIGINFO && old.sa_sigaction) return old.sa_sigaction(sig, si, uc);
    sigaction(SIGSEGV, &old, nullptr);
}

inline void install_segv_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa = {};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv());
    });
}

} // namespace utg_emu

/* ---- device functions ---- */

inline void __syncthreads() {
    utg_emu::bar_wait(utg_emu::S.block_bar, utg_emu::S.nlive, utg_emu::WAIT_BLOCK);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) utg_emu::check_full_warp(mask, "__syncwarp");
    utg_emu::warp_sync();
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    int lane = utg_emu::lane_id(), seg = lane & ~(width - 1);
    return utg_emu::shfl_from(mask, v, seg + (src & (width - 1)), "__shfl_sync");
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = utg_emu::lane_id(), src = lane ^ lane_mask;
    if (src >= ((lane & ~(width - 1)) + width)) src = lane;
    return utg_emu::shfl_from(mask, v, src, "__shfl_xor_sync");
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = utg_emu::lane_id(), in_seg = lane & (width - 1);
    int src = in_seg + (int)delta < width ? lane + (int)delta : lane;
    return utg_emu::shfl_from(mask, v, src, "__shfl_down_sync");
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = utg_emu::lane_id(), in_seg = lane & (width - 1);
    int src = in_seg >= (int)delta ? lane - (int)delta : lane;
    return utg_emu::shfl_from(mask, v, src, "__shfl_up_sync");
}

inline unsigned __ballot_sync(unsigned mask, int pred) {
    uint64_t all[32];
    utg_emu::warp_exchange(mask, pred != 0, all, "__ballot_sync");
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= (unsigned)(all[i] != 0) << i;
    return r;
}
// the lanes of the caller's warp that have not exited
inline unsigned __activemask() {
    int base = utg_emu::lin_tid() & ~31;
    unsigned m = 0;
    for (int l = 0; l < 32 && base + l < utg_emu::S.n; l++) m |= (unsigned)!utg_emu::S.f[base + l].done << l;
    return m;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == 0xffffffffu; }

/* ---- intrinsics: the host's correctly rounded functions stand in for the GPU's fast ones ---- */

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline int __float_as_int(float x) {
    int i;
    memcpy(&i, &x, 4);
    return i;
}
inline float __int_as_float(int i) {
    float x;
    memcpy(&x, &i, 4);
    return x;
}
inline unsigned __float_as_uint(float x) { return (unsigned)__float_as_int(x); }
inline float __uint_as_float(unsigned u) { return __int_as_float((int)u); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> inline T __ldg(const T *p) { return *p; }
inline long long clock64() { // nanoseconds: a monotonic count, as the GPU's cycle counter is
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#define UTG_EMU_MINMAX(T)                                \
    inline T min(T a, T b) { return b < a ? b : a; }     \
    inline T max(T a, T b) { return a < b ? b : a; }
UTG_EMU_MINMAX(int)
UTG_EMU_MINMAX(unsigned)
UTG_EMU_MINMAX(long long)
UTG_EMU_MINMAX(unsigned long long)
UTG_EMU_MINMAX(float)
UTG_EMU_MINMAX(double)
#undef UTG_EMU_MINMAX

/* ---- atomics: blocks on different OS threads do run concurrently ---- */

#define UTG_EMU_ATOMIC_INT(T)                                                                          \
    inline T atomicAdd(T *p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }              \
    inline T atomicSub(T *p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }              \
    inline T atomicExch(T *p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }            \
    inline T atomicCAS(T *p, T cmp, T v) {                                                             \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);            \
        return cmp;                                                                                    \
    }                                                                                                  \
    inline T atomicMax(T *p, T v) {                                                                    \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                  \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,                \
                                                       __ATOMIC_RELAXED)) {}                           \
        return old;                                                                                    \
    }                                                                                                  \
    inline T atomicMin(T *p, T v) {                                                                    \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                  \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,                \
                                                       __ATOMIC_RELAXED)) {}                           \
        return old;                                                                                    \
    }
UTG_EMU_ATOMIC_INT(int)
UTG_EMU_ATOMIC_INT(unsigned)
UTG_EMU_ATOMIC_INT(unsigned long long)
#undef UTG_EMU_ATOMIC_INT

// floating-point atomicAdd as a CAS loop on the bits
template <class F, class U> inline F utg_emu_atomic_add_fp(F *p, F v) {
    U *u = (U *)p, old = __atomic_load_n(u, __ATOMIC_RELAXED), next;
    F f;
    do {
        memcpy(&f, &old, sizeof f);
        F sum = f + v;
        memcpy(&next, &sum, sizeof next);
    } while (!__atomic_compare_exchange_n(u, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return f;
}
inline float atomicAdd(float *p, float v) { return utg_emu_atomic_add_fp<float, uint32_t>(p, v); }
inline double atomicAdd(double *p, double v) { return utg_emu_atomic_add_fp<double, uint64_t>(p, v); }
inline float atomicExch(float *p, float v) {
    uint32_t b, o;
    memcpy(&b, &v, 4);
    o = __atomic_exchange_n((uint32_t *)p, b, __ATOMIC_RELAXED);
    float r;
    memcpy(&r, &o, 4);
    return r;
}

/* ---- the runtime API: the exact prototypes of cuda_runtime_api.h, weak, libcudart not linked ---- */

namespace utg_emu {

inline cudaError_t fail(cudaError_t e) {
    last_error() = e;
    return e;
}

// guard page, data pages, guard page; the buffer placed so that its end meets the second guard
inline cudaError_t malloc_pages(void **out, size_t size) {
    size_t pg = page_size(), al = alloc_align();
    size_t span = (size + al - 1) / al * al; // from the aligned start to the end of the data pages
    size_t data_len = (span + pg - 1) / pg * pg;
    void *m = mmap(nullptr, data_len + 2 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
    Alloc a;
    a.map = (uintptr_t)m, a.map_len = data_len + 2 * pg;
    a.data = a.map + pg, a.data_len = data_len;
    a.user = a.data + data_len - span, a.size = size;
    std::lock_guard<std::mutex> g(mem().lock);
    mem().allocs.push_back(a);
    mem().used += size;
    *out = (void *)a.user;
    return cudaSuccess;
}

// the allocation holding [p, p+n), or null with a message naming the call
inline const Alloc *device_range(const void *p, size_t n, const char *call) {
    const Alloc *a = find_alloc((uintptr_t)p, false);
    if (a && (uintptr_t)p + n <= a->user + a->size) return a;
    fprintf(stderr, "utg-emu: %s: [%p, +%zu) is %s\n", call, p, n,
            a ? "past the end of its cudaMalloc buffer" : "not emulated device memory");
    return nullptr;
}

inline bool is_device(const void *p) { return find_alloc((uintptr_t)p, false) != nullptr; }

inline void copy_open(const Alloc *a, const Alloc *b, bool open) {
    std::lock_guard<std::mutex> g(mem().lock);
    if (a) protect(*a, open);
    if (b && b != a) protect(*b, open);
}

// cudaMemcpy: checks both sides against the kind, opens the device side for the memmove only
inline cudaError_t copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    if (n == 0) return cudaSuccess;
    if (kind == cudaMemcpyDefault)
        kind = is_device(dst) ? (is_device(src) ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                              : (is_device(src) ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    const Alloc *da = dd ? device_range(dst, n, "cudaMemcpy dst") : nullptr;
    const Alloc *sa = sd ? device_range(src, n, "cudaMemcpy src") : nullptr;
    if ((dd && !da) || (sd && !sa)) return fail(cudaErrorInvalidValue);
    if ((!dd && is_device(dst)) || (!sd && is_device(src))) {
        fprintf(stderr, "utg-emu: cudaMemcpy: a device pointer on the host side of kind %d\n", (int)kind);
        return fail(cudaErrorInvalidValue);
    }
    copy_open(da, sa, true);
    memmove(dst, src, n);
    copy_open(da, sa, false);
    return cudaSuccess;
}

inline cudaError_t set(void *p, int value, size_t n) {
    if (n == 0) return cudaSuccess;
    const Alloc *a = device_range(p, n, "cudaMemset");
    if (!a) return fail(cudaErrorInvalidValue);
    copy_open(a, nullptr, true);
    memset(p, value, n);
    copy_open(a, nullptr, false);
    return cudaSuccess;
}

inline int device_count() { return env_is("UTG_EMU_DEVICES", "0") ? 0 : 1; }

} // namespace utg_emu

#define UTG_EMU_API extern "C" __attribute__((weak))

UTG_EMU_API cudaError_t cudaMalloc(void **devPtr, size_t size) {
    *devPtr = nullptr;
    return size ? utg_emu::malloc_pages(devPtr, size) : cudaSuccess;
}
UTG_EMU_API cudaError_t cudaFree(void *devPtr) {
    if (!devPtr) return cudaSuccess;
    utg_emu::Memory &m = utg_emu::mem();
    std::lock_guard<std::mutex> g(m.lock);
    for (size_t i = 0; i < m.allocs.size(); i++) {
        if (m.allocs[i].user != (uintptr_t)devPtr) continue;
        munmap((void *)m.allocs[i].map, m.allocs[i].map_len);
        m.used -= m.allocs[i].size;
        m.allocs.erase(m.allocs.begin() + (long)i);
        return cudaSuccess;
    }
    fprintf(stderr, "utg-emu: cudaFree(%p): not a live cudaMalloc pointer\n", devPtr);
    return utg_emu::fail(cudaErrorInvalidValue);
}
UTG_EMU_API cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    return utg_emu::copy(dst, src, count, kind);
}
UTG_EMU_API cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                                        cudaStream_t) {
    return utg_emu::copy(dst, src, count, kind);
}
UTG_EMU_API cudaError_t cudaMemset(void *devPtr, int value, size_t count) {
    return utg_emu::set(devPtr, value, count);
}
UTG_EMU_API cudaError_t cudaMemsetAsync(void *devPtr, int value, size_t count, cudaStream_t) {
    return utg_emu::set(devPtr, value, count);
}
UTG_EMU_API cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
UTG_EMU_API cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
UTG_EMU_API cudaError_t cudaGetLastError(void) {
    cudaError_t e = utg_emu::last_error();
    utg_emu::last_error() = cudaSuccess;
    return e;
}
UTG_EMU_API cudaError_t cudaPeekAtLastError(void) { return utg_emu::last_error(); }
UTG_EMU_API cudaError_t cudaGetDeviceCount(int *count) {
    *count = utg_emu::device_count();
    return *count ? cudaSuccess : cudaErrorNoDevice;
}
UTG_EMU_API cudaError_t cudaSetDevice(int device) {
    return device >= 0 && device < utg_emu::device_count() ? cudaSuccess : cudaErrorInvalidDevice;
}
UTG_EMU_API cudaError_t cudaMemGetInfo(size_t *free, size_t *total) {
    *total = (size_t)16 << 30; // an arbitrary emulated capacity
    *free = *total - utg_emu::mem().used;
    return cudaSuccess;
}
UTG_EMU_API const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error (emulated runtime)";
    }
}
UTG_EMU_API cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return utg_emu::device_count() ? cudaSuccess : cudaErrorNoDevice;
}
// __constant__ and __device__ variables are plain host globals in the emulated build
UTG_EMU_API cudaError_t cudaMemcpyToSymbol(const void *symbol, const void *src, size_t count, size_t offset,
                                           enum cudaMemcpyKind) {
    memcpy((char *)symbol + offset, src, count);
    return cudaSuccess;
}
UTG_EMU_API cudaError_t cudaMemcpyFromSymbol(void *dst, const void *symbol, size_t count, size_t offset,
                                             enum cudaMemcpyKind) {
    memcpy(dst, (const char *)symbol + offset, count);
    return cudaSuccess;
}
// accepted and ignored: every launch may use up to the 228 KiB that valid_config allows
UTG_EMU_API cudaError_t cudaFuncSetAttribute(const void *, enum cudaFuncAttribute, int) {
    return cudaSuccess;
}

// streams are tags (every call is synchronous); events hold the host time of their record
namespace utg_emu {
struct Stream {
    int unused;
};
struct Event {
    double ms;
};
} // namespace utg_emu
UTG_EMU_API cudaError_t cudaStreamCreate(cudaStream_t *pStream) {
    *pStream = reinterpret_cast<cudaStream_t>(new utg_emu::Stream());
    return cudaSuccess;
}
UTG_EMU_API cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    delete reinterpret_cast<utg_emu::Stream *>(stream);
    return cudaSuccess;
}
UTG_EMU_API cudaError_t cudaEventCreate(cudaEvent_t *event) {
    *event = reinterpret_cast<cudaEvent_t>(new utg_emu::Event());
    return cudaSuccess;
}
UTG_EMU_API cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    reinterpret_cast<utg_emu::Event *>(event)->ms = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
    return cudaSuccess;
}
UTG_EMU_API cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
UTG_EMU_API cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    using utg_emu::Event;
    *ms = (float)(reinterpret_cast<Event *>(end)->ms - reinterpret_cast<Event *>(start)->ms);
    return cudaSuccess;
}
UTG_EMU_API cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete reinterpret_cast<utg_emu::Event *>(event);
    return cudaSuccess;
}
#undef UTG_EMU_API

#endif
