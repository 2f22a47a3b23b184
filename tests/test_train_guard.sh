#!/bin/sh
# The trainer guarding a run: a diverged state never replaces the last good checkpoint; a
# non-finite loss stops the run with the step named, or (ON_NONFINITE=rollback) goes back to the
# last good checkpoint with halved learning rates; a finite blow-up is warned about; SIGTERM stops
# with a checkpoint as SIGINT does; and invocations that would lose or corrupt something are refused
# (an existing run directory without --resume or --force, an --out path too long, a config file with
# a NUL byte, a checkpoint whose step the trainer cannot count, a checkpoint holding NaN).
# Usage: sh tests/test_train_guard.sh BUILD_DIR   (from the repository root; runs BUILD_DIR/train)
B=${1:-build}
TR="$B/train"
. "$(dirname "$0")/lib.sh"
start=$(date +%s)

. "$(dirname "$0")/train_lib.sh"
TINY="$TINY ITERATIONS=8"
# run NAME DIR [args...]: a tiny run into DIR; output in $T/NAME.out and .err, exit status in $T/NAME.rc
run() {
    _n=$1 _d=$2
    shift 2
    # shellcheck disable=SC2086
    "$TR" --config data/austen/run.env $TINY --no-progress --no-artifact --out "$_d" "$@" >"$T/$_n.out" 2>"$T/$_n.err"
    echo $? >"$T/$_n.rc"
}
said() { cat "$T/$1.out" "$T/$1.err" | grep -v '^config ' | grep -Eq "$2"; }
resumes() { # DIR: its checkpoint resumes for one more step
    "$TR" --config data/austen/run.env $TINY --no-progress --no-artifact --out "$1" --resume "$1/checkpoint.utgc" --max-steps 1 \
        >"$T/resume.out" 2>&1
}

# ---- divergence ----------------------------------------------------------------------------------
# a good 2-step state, then the same run with an absurd scalar LR and a checkpoint after every step
run good "$T/g" --max-steps 2
check "a 2-step run leaves a checkpoint" sh -c "[ \"\$(cat '$T/good.rc')\" = 0 ] && [ -s '$T/g/checkpoint.utgc' ]"
cp "$T/g/checkpoint.utgc" "$T/good.utgc"
run blowup "$T/g" --resume "$T/g/checkpoint.utgc" --checkpoint-every 1 SCALAR_LR=1e30
check "SCALAR_LR=1e30, --checkpoint-every 1: exit 1, the step and the cause named" \
    sh -c "[ \"\$(cat '$T/blowup.rc')\" = 1 ] && grep -Eq '^train: step 3: the .* is (nan|inf|-inf): stopping \\(ON_NONFINITE=stop\\)' '$T/blowup.err'"
check "... the message names the last good checkpoint" grep -q "The last good checkpoint is $T/g/checkpoint.utgc" "$T/blowup.err"
check "... and that checkpoint is byte for byte the good one" cmp -s "$T/good.utgc" "$T/g/checkpoint.utgc"
check "... which resumes" resumes "$T/g"

cp "$T/good.utgc" "$T/g/checkpoint.utgc"
run rollback "$T/g" --resume "$T/g/checkpoint.utgc" --checkpoint-every 1 SCALAR_LR=1e14 ON_NONFINITE=rollback ON_NONFINITE_MAX_ROLLBACKS=30
check "ON_NONFINITE=rollback: rolled back to the last good checkpoint with half the learning rates" \
    said rollback "rolled back to $T/g/checkpoint.utgc \\(step [0-9]+\\), learning rates now x0.5 \\(rollback 1 of 30\\)"
check "... and went on to the end: exit 0, a final val_bpb" sh -c "[ \"\$(cat '$T/rollback.rc')\" = 0 ] && grep -q '^final_exact ' '$T/rollback.out'"
check "... with the rollbacks in metrics.jsonl" grep -q '"rollback":1,"lr_factor":0.5' "$T/g/metrics.jsonl"

cp "$T/good.utgc" "$T/g/checkpoint.utgc"
run spent "$T/g" --resume "$T/g/checkpoint.utgc" --checkpoint-every 1 SCALAR_LR=1e30 ON_NONFINITE=rollback ON_NONFINITE_MAX_ROLLBACKS=2
check "ON_NONFINITE_MAX_ROLLBACKS=2 spent: exit 1 after two rollbacks, saying so" \
    sh -c "[ \"\$(cat '$T/spent.rc')\" = 1 ] && [ \$(grep -c 'rolled back to' '$T/spent.out') = 2 ] &&
           grep -q 'ON_NONFINITE_MAX_ROLLBACKS is spent' '$T/spent.err'"
run nogood "$T/n" --checkpoint-every 1 SCALAR_LR=1e30 ON_NONFINITE=rollback
check "ON_NONFINITE=rollback with no good checkpoint yet: exit 1, no checkpoint written, saying why" \
    sh -c "[ \"\$(cat '$T/nogood.rc')\" = 1 ] && [ ! -e '$T/n/checkpoint.utgc' ] && grep -q 'no good checkpoint to go back to' '$T/nogood.err'"
run badknob "$T/k" ON_NONFINITE=retry
check "ON_NONFINITE=retry is refused with the choices" sh -c "[ \"\$(cat '$T/badknob.rc')\" = 2 ] && grep -q 'ON_NONFINITE must be one of stop|rollback (got .retry.)' '$T/badknob.err'"

run finite "$T/f" TIED_EMBED_LR=1e6
check "a finite blow-up (TIED_EMBED_LR=1e6) runs to the end but warns that the run is diverging" \
    sh -c "[ \"\$(cat '$T/finite.rc')\" = 0 ] && grep -q '^train: warning: step [0-9]*: the train loss .* the run is diverging' '$T/finite.err'"
run calm "$T/c"
check "... and a normal run does not warn" sh -c "[ \"\$(cat '$T/calm.rc')\" = 0 ] && ! grep -q warning '$T/calm.err'"

# ---- SIGTERM -------------------------------------------------------------------------------------
# shellcheck disable=SC2086
"$TR" --config data/austen/run.env $TINY ITERATIONS=100000 --no-progress --no-artifact --out "$T/s" >"$T/term.out" 2>"$T/term.err" &
pid=$!
i=0
while [ $i -lt 600 ] && ! grep -q '^step:3/' "$T/term.out" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -TERM $pid
wait $pid
st=$?
check "SIGTERM: exit 143 after the current step, with a checkpoint" \
    sh -c "[ $st -eq 143 ] && grep -q '^interrupted at step [0-9]*; resume with --resume' '$T/term.out' && [ -s '$T/s/checkpoint.utgc' ]"
check "... which resumes" resumes "$T/s"

# ---- refusals ------------------------------------------------------------------------------------
run again "$T/c"
check "a second run into a directory holding a checkpoint, without --resume: exit 2, the checkpoint kept" \
    sh -c "[ \"\$(cat '$T/again.rc')\" = 2 ] && grep -q 'holds a checkpoint from an earlier run' '$T/again.err' && [ -s '$T/c/checkpoint.utgc' ]"
run force "$T/c" --force
check "... and with --force it starts over" sh -c "[ \"\$(cat '$T/force.rc')\" = 0 ]"

long=$(printf '%02100d' 0 | tr 0 x)
run longout "$T/$long"
check "an --out path of 2,100 bytes: exit 2 with a message, nothing created" \
    sh -c "[ \"\$(cat '$T/longout.rc')\" = 2 ] && grep -q -- '--out path has 2' '$T/longout.err' && [ ! -e '$T/$long' ]"

printf 'NUM_LAYERS=2\n\000MODEL_DIM=999999\n' >"$T/nul.env"
run nul "$T/u" --config "$T/nul.env"
check "a config file with a NUL byte: exit 2, the byte's offset named" \
    sh -c "[ \"\$(cat '$T/nul.rc')\" = 2 ] && grep -q 'byte 13 is NUL' '$T/nul.err'"

# a checkpoint patched (CRC fixed up) to hold step 2^32 + 2, or a NaN parameter
patch_ckpt() { # IN OUT step|nan
    python3 - "$@" <<'EOF'
import struct, sys, zlib
b = bytearray(open(sys.argv[1], "rb").read())
pos = 24
for _ in range(struct.unpack_from("<I", b, 12)[0]):
    tag, size = bytes(b[pos:pos + 4]), struct.unpack_from("<Q", b, pos + 8)[0]
    if tag == b"STAT" and sys.argv[3] == "step":
        struct.pack_into("<Q", b, pos + 16, 2**32 + 2)
    if tag == b"PARM" and sys.argv[3] == "nan":
        struct.pack_into("<f", b, pos + 16, float("nan"))
    pos += 16 + (size + 7) // 8 * 8
struct.pack_into("<I", b, len(b) - 8, zlib.crc32(bytes(b[:-8])))
open(sys.argv[2], "wb").write(b)
EOF
}
patch_ckpt "$T/good.utgc" "$T/big_step.utgc" step
run bigstep "$T/h" --resume "$T/big_step.utgc"
check "a checkpoint at step 2^32 + 2: refused, not resumed at step 2" \
    sh -c "[ \"\$(cat '$T/bigstep.rc')\" = 1 ] && grep -q 'is at step 4294967298, past the trainer' '$T/bigstep.err'"
patch_ckpt "$T/good.utgc" "$T/nan.utgc" nan
run nanck "$T/h2" --resume "$T/nan.utgc"
check "a checkpoint holding a NaN parameter: refused, the tensor named" \
    sh -c "[ \"\$(cat '$T/nanck.rc')\" = 1 ] && grep -Eq 'checkpoint parameter [a-z_.0-9]+\\[0\\] is not finite' '$T/nanck.err'"

check "no sanitizer reports anywhere" sh -c "! cat '$T'/*.err | grep -Eq 'Sanitizer|runtime error:'"
echo "(test_train_guard.sh: $(($(date +%s) - start)) s)"
summary
