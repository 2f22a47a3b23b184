#!/bin/sh
# make bench: utgolf's CPU speed as ratios against peers measured in the same run.
#
#   1. bench_matmul   utgolf's be->matmul at the model's shapes vs OpenBLAS cblas_sgemm vs the measured
#                     FMA peak, 1 and 2 threads
#   2. bench_step     utgolf forward + backward at shapes A and B (no optimizer)
#   3. bench_depth    utgolf step cost against virtual depth (Universal Transformer, shape A)
#   4. bench_train    utgolf full training step (forward, backward, Muon + Adam) and eval, tokens/s, MFU
#   5. peer_torch.py  the same model and optimizer in PyTorch 1.13 + OpenBLAS, fp32 and bf16 autocast
#   6. a summary table of ratios (utgolf / peer; above 1 means utgolf is faster)
#
# Peers are installed when missing and this runs as root: Debian's python3-torch (apt-get install) and
# Debian's OpenBLAS (libopenblas0-openmp), which is only downloaded and unpacked under $PEERS_DIR
# (apt-get download + dpkg-deb -x), never installed, so the system's default BLAS (update-alternatives
# for libblas.so.3) stays what it was for every other program. The peer commands alone run with that
# directory first in LD_LIBRARY_PATH, which puts OpenBLAS in front of torch's libblas.so.3, and with
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (this environment sets CORETYPE=Haswell, which halves
# OpenBLAS on an AVX-512 machine); the torch peer also gets jemalloc preloaded (see below; Debian's
# libjemalloc2, installed when missing). utgolf's own programs run in the environment as it is.
# Threads: 2 everywhere for the training figures (OpenMP: libgomp for utgolf, torch and OpenBLAS), not
# pinned unless the caller sets OMP_PROC_BIND / OMP_PLACES (then for utgolf and the peers alike).
#
# Nothing here asserts speed: shared machines are noisy. Usage (make bench runs it with BUILD set):
#   BUILD=build sh bench/run.sh [--quick] [--no-install] [--skip-torch] [--skip-depth]
# Environment: BUILD (binaries), PYTHON (default /usr/bin/python3), PEERS_DIR (default $BUILD/peers),
# BENCH_LOG (default $BUILD/bench.log: every line of this run, parsed for the summary).
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
PEERS_DIR=${PEERS_DIR:-$BUILD/peers}
LOG=${BENCH_LOG:-$BUILD/bench.log}
HERE=$(cd "$(dirname "$0")" && pwd)
QUICK=0 INSTALL=1 TORCH=1 DEPTH=1 SUMMARY_OF=
for a in "$@"; do
    case $a in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --skip-torch) TORCH=0 ;;
    --skip-depth) DEPTH=0 ;;
    --summary=*) SUMMARY_OF=${a#--summary=} ;;
    *) echo "usage: BUILD=dir sh bench/run.sh [--quick] [--no-install] [--skip-torch] [--skip-depth] [--summary=LOG]"; exit 2 ;;
    esac
done
say() { echo "$*" | tee -a "$LOG"; }
# Contention: CPU time the whole machine spent busy (/proc/stat) minus what this script's own children
# used (/proc/$$/stat cutime + cstime), over wall time: how many cores other processes took meanwhile.
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_mark() { # prints "wall_ms busy_ticks own_ticks"
    echo "$(($(date +%s%N) / 1000000)) $(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat) $(awk '{ print $16 + $17 }' "/proc/$$/stat")"
}
others_since() { # cores used by other processes since the mark "$1" ("-" for less than 2 s: too coarse)
    echo "$1 $(cpu_mark)" | awk -v hz="$HZ" '{ w = ($4 - $1) / 1000; o = (($5 - $2) - ($6 - $3)) / hz; if (o < 0) o = 0; if (w < 2) print "-"; else printf "%.2f", o / w }'
}
STAGE_MARK=
stage() {
    if [ -n "$STAGE_MARK" ]; then
        o=$(others_since "$STAGE_MARK")
        if [ "$o" != - ]; then
            say "(other processes used $o cores during this stage)"
            awk -v o="$o" 'BEGIN { exit !(o > 0.15) }' && CONTENDED="$CONTENDED $STAGE_NAME"
        fi
    fi
    say ""; say "=== [$(($(date +%s) - T_START)) s] $*"
    STAGE_MARK=$(cpu_mark) STAGE_NAME=$(echo "$*" | cut -d' ' -f1)
}
CONTENDED=
# run a command, its output to the terminal and the log
run() { "$@" 2>&1 | tee -a "$LOG"; }

# the summary table, from a log of this script's lines
summary() {
    awk '
function kv(line, key,    n, i, f, a) { # value of key:value in a line, "" when absent
    n = split(line, f, " ")
    for (i = 1; i <= n; i++) if (index(f[i], key ":") == 1) return substr(f[i], length(key) + 2)
    return ""
}
function r(a, b) { return (a != "" && b != "" && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
function v(a, fmt) { return a == "" ? "-" : sprintf(fmt, a) }
/^peak threads:/ { peak[kv($0, "threads")] = kv($0, "fp32_gflops"); peak16[kv($0, "threads")] = kv($0, "bf16_gflops") }
/^matmul-mix / { k = kv($0, "threads") SUBSEP kv($0, "shape") SUBSEP kv($0, "set"); mu[k] = kv($0, "utgolf_gflops"); mo[k] = kv($0, "openblas_gflops"); mp[k] = kv($0, "peak_gflops"); mb[k] = kv($0, "utgolf_bf16_gflops"); mbp[k] = kv($0, "bf16_peak_gflops") }
/^matmul-cube / { k = kv($0, "threads"); cu[k] = kv($0, "utgolf_gflops"); co[k] = kv($0, "openblas_gflops"); cp[k] = kv($0, "peak_gflops"); cb[k] = kv($0, "utgolf_bf16_gflops"); cbp[k] = kv($0, "bf16_peak_gflops") }
/^utgolf shape:/ { k = kv($0, "shape") SUBSEP kv($0, "prec"); ut[k] = kv($0, "train_tok_s"); ue[k] = kv($0, "eval_tok_s"); um[k] = kv($0, "mfu"); un[k] = kv($0, "mfu_ns"); uem[k] = kv($0, "eval_mfu") }
/^peer torch shape:/ { k = kv($0, "shape") SUBSEP kv($0, "prec"); tt[k] = kv($0, "train_tok_s"); te[k] = kv($0, "eval_tok_s"); tm[k] = kv($0, "mfu"); tn[k] = kv($0, "mfu_ns"); tem[k] = kv($0, "eval_mfu") }
/^peer torch-mm / { tmm32 = kv($0, "fp32_gflops"); tmm16 = kv($0, "bf16_gflops"); tob = kv($0, "openblas"); tmal = kv($0, "malloc") }
END {
    printf "\nmatmul GFLOP/s                      threads   utgolf  OpenBLAS     peak   utg/OB  utg/peak   utg bf16  /bf16 peak\n"
    for (t = 1; t <= 2; t++) {
        for (si = 1; si <= 2; si++) {
            s = si == 1 ? "B" : "A"
            split("fwd+bwd,ns,fwd,dX,dW", sets, ",")
            for (j = 1; j <= 5; j++) {
                k = t SUBSEP s SUBSEP sets[j]
                if (!(k in mu)) continue
                label = sprintf("shape %s %s mix", s, (sets[j] == "ns" ? "Newton-Schulz" : sets[j]))
                printf "%-36s %7d %8s %9s %8s %8s %9s %10s %11s\n", label, t, v(mu[k], "%.1f"), v((mo[k] > 0 ? mo[k] : ""), "%.1f"), v(mp[k], "%.1f"),
                    r(mu[k], mo[k]), r(mu[k], mp[k]), v((mb[k] > 0 ? mb[k] : ""), "%.1f"), r(mb[k], mbp[k])
            }
        }
        if (t in cu) printf "%-36s %7d %8s %9s %8s %8s %9s %10s %11s\n", "2048^3", t, v(cu[t], "%.1f"), v((co[t] > 0 ? co[t] : ""), "%.1f"), v(cp[t], "%.1f"), r(cu[t], co[t]), r(cu[t], cp[t]), v((cb[t] > 0 ? cb[t] : ""), "%.1f"), r(cb[t], cbp[t])
    }
    for (t = 1; t <= 2; t++) if (t in peak) printf "measured peak, %d thread%s: fp32 %.1f GFLOP/s, bf16 (vdpbf16ps) %.1f GFLOP/s\n", t, (t > 1 ? "s" : ""), peak[t], peak16[t]
    if ((1 in peak) && (2 in peak) && peak[2] < 1.6 * peak[1])
        printf "WARNING: the 2-thread peak is only %.2fx the 1-thread peak: another process held a core, so the\n         2-thread figures (and MFU) of this run are not meaningful; run again on an idle machine\n", peak[2] / peak[1]
    if (tmm32 != "") printf "torch mm 1024^3, 2 threads: fp32 %.1f GFLOP/s (%s), bf16 %.1f GFLOP/s; torch allocator: %s\n", tmm32, (tob == 1 ? "OpenBLAS" : "NOT OpenBLAS"), tmm16, tmal

    printf "\ntokens/s, 2 threads, 2,048 tok/step    prec    utgolf     torch  utg/torch   target\n"
    for (si = 1; si <= 2; si++) {
        s = si == 1 ? "A" : "B"
        d = s == "A" ? "shape A (4L d256 T256 x8)" : "shape B (9L d512 T512 x4)"
        for (pi = 1; pi <= 2; pi++) {
            p = pi == 1 ? "fp32" : "bf16"
            tg = p == "bf16" ? "1.3" : (s == "A" ? "2.0" : "1.5")
            printf "%-26s train  %6s %9s %9s %10s %8s\n", (pi == 1 ? d : ""), p, v(ut[s, p], "%.0f"), v(tt[s, p], "%.0f"), r(ut[s, p], tt[s, p]), tg
            printf "%-26s eval   %6s %9s %9s %10s %8s\n", "", p, v(ue[s, p], "%.0f"), v(te[s, p], "%.0f"), r(ue[s, p], te[s, p]), "-"
        }
    }
    printf "\nMFU: model FLOPs/s over the 2-thread fp32 peak (%s GFLOP/s)   utgolf fp32  torch fp32  utgolf bf16  torch bf16\n", v(peak[2], "%.1f")
    for (si = 1; si <= 2; si++) {
        s = si == 1 ? "A" : "B"
        printf "shape %s train (6N + attention)                      %11s %11s %12s %11s\n", s, v(um[s, "fp32"], "%.3f"), v(tm[s, "fp32"], "%.3f"), v(um[s, "bf16"], "%.3f"), v(tm[s, "bf16"], "%.3f")
        printf "shape %s train incl. Newton-Schulz FLOPs             %11s %11s %12s %11s\n", s, v(un[s, "fp32"], "%.3f"), v(tn[s, "fp32"], "%.3f"), v(un[s, "bf16"], "%.3f"), v(tn[s, "bf16"], "%.3f")
        printf "shape %s eval (2N + attention)                       %11s %11s %12s %11s\n", s, v(uem[s, "fp32"], "%.3f"), v(tem[s, "fp32"], "%.3f"), v(uem[s, "bf16"], "%.3f"), v(tem[s, "bf16"], "%.3f")
    }
    printf "(FLOP counts: bench/bench_train.c header; the bf16 columns run their matmuls in bf16, whose peak is about twice fp32;\n target: the issue-7 goal for utg/torch train, same precision)\n"
}' "$1"
}

if [ -n "$SUMMARY_OF" ]; then summary "$SUMMARY_OF"; exit 0; fi
mkdir -p "$BUILD" "$PEERS_DIR"
PEERS_DIR=$(cd "$PEERS_DIR" && pwd)
: >"$LOG"
T_START=$(date +%s)
RUN_MARK=$(cpu_mark)

# ------------------------------------------------------------------------------------------ machine
stage "machine"
say "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores online;" \
    "avx512f: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no), avx512_bf16: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no)"
say "environment: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-(unset)}" \
    "OMP_NUM_THREADS=${OMP_NUM_THREADS:-(unset)} OMP_PROC_BIND=${OMP_PROC_BIND:-(unset)} (threads are not pinned unless OMP_PROC_BIND is set)"
LOAD=$(cut -d' ' -f1 /proc/loadavg)
say "load average (1 min): $LOAD"
if awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }'; then
    say "warning: the machine is busy (load $LOAD): 2-thread figures will be noisy, OpenMP barriers wait on"
    say "         threads that another process has descheduled; run again on an idle machine"
fi

# ------------------------------------------------------------------------------------------ peers
as_root() { [ "$(id -u)" = 0 ]; }
apt_get() { # apt-get with one `apt-get update` retry (a fresh machine has no package lists)
    DEBIAN_FRONTEND=noninteractive apt-get "$@" >/dev/null 2>&1 && return 0
    DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get "$@" >/dev/null 2>&1
}

stage "peers"
# OpenBLAS (OpenMP build, so torch's and OpenBLAS's threads are the same libgomp pool)
OB_DIR=
find_openblas() {
    for d in "$PEERS_DIR"/openblas/usr/lib/*/openblas-openmp /usr/lib/*/openblas-openmp /usr/lib/*/openblas-pthread; do
        if [ -e "$d/libopenblas.so.0" ] && [ -e "$d/libblas.so.3" ]; then OB_DIR=$d; return 0; fi
    done
    return 1
}
if ! find_openblas && [ $INSTALL = 1 ]; then
    if as_root || command -v apt-get >/dev/null; then
        say "OpenBLAS: downloading Debian's libopenblas0-openmp into $PEERS_DIR (not installed system-wide)"
        (cd "$PEERS_DIR" && rm -f libopenblas0-openmp_*.deb && apt_get download libopenblas0-openmp &&
            dpkg-deb -x libopenblas0-openmp_*.deb openblas) || say "OpenBLAS: apt-get download libopenblas0-openmp failed"
        # its runtime dependencies (plain libraries, no BLAS alternative)
        if as_root && ! ldconfig -p | grep -q 'libgfortran.so.5'; then apt_get install -y libgfortran5; fi
    fi
    find_openblas || true
fi
if [ -n "$OB_DIR" ]; then say "OpenBLAS: $OB_DIR"; else say "OpenBLAS: not found (the OpenBLAS columns stay empty; torch keeps its reference BLAS)"; fi
PEER_ENV="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
[ -n "$OB_DIR" ] && PEER_ENV="$PEER_ENV LD_LIBRARY_PATH=$OB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The allocator of the torch peer. glibc malloc mmaps every block of 32 MiB or more afresh and unmaps
# it on free, so each such tensor (shape B's fp32 attention scores are 32 MiB) pays a page fault per
# 4 KiB on every use: about 100 ms per 32 MiB on this VM, seconds per training step. jemalloc with
# purging off (Debian's libjemalloc2, a plain library; preloaded into the peer alone) keeps freed
# memory, as utgolf keeps its activations. BENCH_TORCH_MALLOC=glibc measures torch with glibc malloc.
TORCH_MALLOC=${BENCH_TORCH_MALLOC:-jemalloc}
JEMALLOC=
if [ $TORCH = 1 ] && [ "$TORCH_MALLOC" = jemalloc ]; then
    find_jemalloc() { JEMALLOC=$(ldconfig -p 2>/dev/null | awk '/libjemalloc\.so\.2 / { print $NF; exit }'); [ -n "$JEMALLOC" ]; }
    if ! find_jemalloc && [ $INSTALL = 1 ] && as_root; then
        say "jemalloc: installing Debian's libjemalloc2 (apt-get install; a library only, nothing uses it unless preloaded)"
        apt_get install -y libjemalloc2 || say "jemalloc: apt-get install libjemalloc2 failed"
        find_jemalloc || true
    fi
    if [ -n "$JEMALLOC" ]; then say "torch allocator: jemalloc ($JEMALLOC, purging off)"; else say "torch allocator: glibc malloc (jemalloc not found)"; fi
fi
TORCH_ENV=$PEER_ENV
[ -n "$JEMALLOC" ] && TORCH_ENV="$TORCH_ENV LD_PRELOAD=$JEMALLOC MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1"

# PyTorch (Debian's python3-torch)
if [ $TORCH = 1 ] && ! "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    if [ $INSTALL = 1 ] && as_root; then
        say "PyTorch: installing Debian's python3-torch (apt-get install)"
        apt_get install -y python3-torch || say "PyTorch: apt-get install python3-torch failed"
    fi
    "$PYTHON" -c 'import torch' >/dev/null 2>&1 || { say "PyTorch: not available for $PYTHON; the torch peer is skipped"; TORCH=0; }
fi
[ $TORCH = 1 ] && say "PyTorch: $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null) ($PYTHON)"

# ------------------------------------------------------------------------------------------ runs
REPS=3 Q=''
[ $QUICK = 1 ] && Q=--quick

stage "1/5 matmul: utgolf be->matmul vs OpenBLAS cblas_sgemm vs peak (peer env: $PEER_ENV)"
OB_ARG=
[ -n "$OB_DIR" ] && OB_ARG="--openblas $OB_DIR/libopenblas.so.0"
# shellcheck disable=SC2086
run $PEER_ENV "$BUILD/bench_matmul" $Q $OB_ARG
PEAK2=$(awk '$1 == "peak" && $2 == "threads:2" { sub("fp32_gflops:", "", $3); print $3 }' "$LOG" | tail -1)

stage "2/5 utgolf forward + backward (bench_step)"
run "$BUILD/bench_step" $REPS

if [ $DEPTH = 1 ]; then
    stage "3/5 utgolf cost against virtual depth (bench_depth)"
    run "$BUILD/bench_depth" $REPS
else
    stage "3/5 bench_depth skipped (--skip-depth)"
fi

stage "4/5 utgolf full training step and eval (bench_train)"
# shellcheck disable=SC2086
run "$BUILD/bench_train" $Q ${PEAK2:+--peak $PEAK2}

if [ $TORCH = 1 ]; then
    stage "5/5 PyTorch peer: the same model and optimizer, fp32 and bf16 autocast (peer_torch.py)"
    say "(peer env: $TORCH_ENV)"
    # shellcheck disable=SC2086
    run $TORCH_ENV "$PYTHON" "$HERE/peer_torch.py" $Q ${PEAK2:+--peak $PEAK2}
else
    stage "5/5 PyTorch peer skipped"
fi

# ------------------------------------------------------------------------------------------ summary
stage "summary (utgolf / peer: above 1 means utgolf is faster)"
summary "$LOG" | tee -a "$LOG"
say "other processes used $(others_since "$RUN_MARK") cores on average during this run (0 on an idle machine)"
[ -n "$CONTENDED" ] && say "WARNING: other processes took more than 0.15 cores during stage(s)$CONTENDED: their figures are noisy"
say "bench: done in $(($(date +%s) - T_START)) s; log in $LOG"
