#!/bin/sh
# The trainer under file-system faults, one at a time, at every write, fsync and rename it makes in
# its run directory (checkpoint, artifact, weights, picture, log, metrics), through the LD_PRELOAD
# shim tests/iofault.c:
# - fail: the operation returns an error. The run must exit non-zero with a message, leave no
#   temporary behind, a checkpoint that resumes (a failed log write stops the run with its state
#   saved), and the artifact and weights must each hold either their bytes from before the run or
#   those of a clean run; the file whose write, fsync or rename failed holds its bytes from before
#   (loss.svg is drawn from what metrics.jsonl holds, so it may be a third picture).
# - kill: the process is killed at the operation. The directory must still hold a checkpoint that
#   resumes, and every file except the two append-only ones (train.log, metrics.jsonl) must be whole.
# The run under test resumes a 4-step run for 2 more steps in the same directory.
# Usage: sh tests/test_faults.sh BUILD_DIR   (needs BUILD_DIR/train and BUILD_DIR/libiofault.so)
B=${1:-build}
TR="$B/train"
SHIM="$(cd "$B" && pwd)/libiofault.so"
. "$(dirname "$0")/lib.sh"
start=$(date +%s)
OMP_NUM_THREADS=1
export OMP_NUM_THREADS
# an ASan build's runtime must come first among the libraries, which LD_PRELOAD changes
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
export ASAN_OPTIONS

. "$(dirname "$0")/train_lib.sh"
train() { # DIR ARGS...: a tiny run into DIR; --code names a small file so that the budget line is quick
    _d=$1
    shift
    # shellcheck disable=SC2086
    "$TR" --config data/austen/run.env $TINY --no-progress --code tests/lib.sh --out "$_d" "$@"
}
FILES="checkpoint.utgc final_model.utga model.safetensors loss.svg"

train "$T/base" ITERATIONS=4 >"$T/base.out" 2>&1
check "the 4-step run to resume exits 0 with a checkpoint and an artifact" \
    sh -c "[ -s '$T/base/checkpoint.utgc' ] && [ -s '$T/base/final_model.utga' ]"
# the run under test, clean: its files are the other allowed state of each file
fresh() { rm -rf "$T/w" && mkdir -p "$T/w" && cp "$T"/base/* "$T/w/"; }
fresh
W=$(cd "$T/w" && pwd -P)
IOFAULT_DIR=$W IOFAULT_LOG=$T/ops.log LD_PRELOAD=$SHIM train "$T/w" ITERATIONS=6 --resume "$T/w/checkpoint.utgc" >"$T/clean.out" 2>&1
check "the resumed run under the shim, no fault: exit 0" grep -q '^final_quant_exact' "$T/clean.out"
mkdir -p "$T/new"
cp "$T"/w/* "$T/new/"
n=$(wc -l <"$T/ops.log")
for op in write fsync rename; do
    check "the run makes $op calls in its directory" grep -q " $op " "$T/ops.log"
done
for f in $FILES train.log metrics.jsonl; do
    check "the clean run writes $f" grep -q "/$f" "$T/ops.log"
done

# same_state A B: two checkpoints equal but for the training time in STAT (wall-clock) and the CRC
cat >"$T/same_state.py" <<'PYEOF'
import struct, sys
a, b = (bytearray(open(p, "rb").read()) for p in sys.argv[1:3])
if len(a) != len(b) or a[:8] != b"UTGCKPT1":
    sys.exit(1)
pos = 24
for _ in range(struct.unpack_from("<I", a, 12)[0]):
    tag, size = a[pos:pos + 4], struct.unpack_from("<Q", a, pos + 8)[0]
    if tag == b"STAT":  # u64 step, then the f64 training time
        a[pos + 24:pos + 32] = b[pos + 24:pos + 32] = bytes(8)
    pos += 16 + (size + 7) // 8 * 8
sys.exit(0 if a[:-8] == b[:-8] else 1)
PYEOF
# is_old_or_new FILE: FILE holds the bytes it had before the run, or those of the clean run
is_old_or_new() {
    cmp -s "$T/w/$1" "$T/base/$1" || cmp -s "$T/w/$1" "$T/new/$1" ||
        { [ "$1" = checkpoint.utgc ] && python3 "$T/same_state.py" "$T/w/$1" "$T/new/$1"; }
}
# target OP PATH: the file an operation was for (a temporary's name ends in .PID-N.utgtmp)
target() { basename "$2" | sed 's/\.[0-9]*-[0-9]*\.utgtmp$//'; }

bad_fail=0 bad_kill=0 i=1
while [ "$i" -le "$n" ]; do
    line=$(sed -n "${i}p" "$T/ops.log")
    op=$(echo "$line" | cut -d' ' -f2)
    path=$(echo "$line" | cut -d' ' -f3-)
    tgt=$(target "$op" "$path")
    # fail
    fresh
    IOFAULT_DIR=$W IOFAULT_AT=$i IOFAULT_MODE=fail LD_PRELOAD=$SHIM train "$T/w" ITERATIONS=6 --resume "$T/w/checkpoint.utgc" \
        >"$T/f.out" 2>"$T/f.err"
    rc=$?
    why=""
    [ "$rc" -ne 0 ] || why="$why exit 0;"
    grep -q '^train: ' "$T/f.err" || why="$why no message;"
    ls "$T/w" | grep -q 'utgtmp' && why="$why a temporary left;"
    for f in final_model.utga model.safetensors; do is_old_or_new "$f" || why="$why $f neither old nor new;"; done
    case "$tgt" in # the file the failed operation was writing keeps its old bytes
    checkpoint.utgc | final_model.utga | model.safetensors | loss.svg)
        cmp -s "$T/w/$tgt" "$T/base/$tgt" || why="$why $tgt changed;" ;;
    esac
    train "$T/w" ITERATIONS=6 --resume "$T/w/checkpoint.utgc" --max-steps 1 --no-artifact >"$T/r.out" 2>&1 ||
        why="$why the checkpoint does not resume;"
    if [ -n "$why" ]; then bad_fail=$((bad_fail + 1)); echo "   fail at $line:$why"; fi
    # kill
    fresh
    IOFAULT_DIR=$W IOFAULT_AT=$i IOFAULT_MODE=kill LD_PRELOAD=$SHIM train "$T/w" ITERATIONS=6 --resume "$T/w/checkpoint.utgc" \
        >"$T/k.out" 2>&1
    rc=$?
    why=""
    [ "$rc" -eq 137 ] || why="$why exit $rc, not killed;"
    for f in $FILES; do is_old_or_new "$f" || why="$why $f neither old nor new;"; done
    train "$T/w" ITERATIONS=6 --resume "$T/w/checkpoint.utgc" --max-steps 1 --no-artifact >"$T/r.out" 2>&1 ||
        why="$why the checkpoint does not resume;"
    if [ -n "$why" ]; then bad_kill=$((bad_kill + 1)); echo "   kill at $line:$why"; fi
    i=$((i + 1))
done
check "a failure at each of the $n operations: non-zero exit, a message, a checkpoint that resumes, the failing file old" [ "$bad_fail" -eq 0 ]
check "a kill at each of the $n operations: a checkpoint that resumes, old or new files" [ "$bad_kill" -eq 0 ]
echo "(test_faults.sh: $(($(date +%s) - start)) s, $n operations)"
summary
