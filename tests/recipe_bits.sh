#!/bin/sh
# The bits of a short fixed-step training run of every recipe, to show that a refactor changes no
# arithmetic: run it with the trainer built before and after, and compare the two outputs (diff).
# Usage: sh tests/recipe_bits.sh TRAIN_BINARY OUT_DIR   (from any directory; about 4 minutes
# on 2 cores, 5.5 when they are shared)
# For each recipes/*.env (on top of data/austen/run.env, as the recipes' "Use:" lines say) and for
# data/austen/run.env alone, it trains into OUT_DIR/NAME and prints one line:
#   NAME  sha256(final_model.utga)  sha256(model.safetensors)  sha256(the log's loss lines)
# final_model.utga is the quantized artifact (GPTQ and the quantizer's bits), model.safetensors the
# fp32 weights after the last step (the EMA weights: run.env turns EMA on), and the loss lines are the
# train.log lines with train_loss, lr_scale, grad_norm, val_loss/val_bpb (%.8f in final_exact and
# final_quant_exact), the depth-plan switches and the quantizer's weighted error, with every timing
# field cut out. checkpoint.utgc is not compared (it stores the training time) and is deleted; the
# log's code-size ("budget:") line is not compared (it counts the utgolf.h of the working directory).
# A run that fails prints "NAME FAILED (exit N)" and the script exits 1 at the end.
#
# What is kept of each recipe: every architecture and optimizer knob it sets (layers, heads, loops,
# recurrence, parallel residuals, gates, bigram/smear/VE, XSA, RoPE, EMA, Muon variants, WD, clip,
# quantizer and GPTQ settings) and the data config's loader, EMA and bf16 matmuls. What is changed,
# all of it to make a run take seconds, and nothing depending on the clock:
#   VOCAB_SIZE=1024          the embedded corpus's tokenizer (loop3_1493 and top_1855 say 8192)
#   ITERATIONS=3 WARMUP_STEPS=1 MAX_WALLCLOCK_SECONDS=0 WARMDOWN_ITERS=2
#                            three steps (one priming step first), no wallclock cap: every schedule
#                            (LR warmdown, WARMDOWN_FRAC, ENABLE_LOOPING_AT) runs on the step count
#   TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=256 GRAD_ACCUM_STEPS=2   two micro-batches of 2 x 64 tokens
#   VAL_FILES=<tests/train_lib.sh's 4,096-token cut of Persuasion> VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1
#   SEED=1337 RUN_ID=NAME    (the run id goes into the artifact's provenance text)
# and only where the recipe sets the knob:
#   MODEL_DIM above 256 -> 256 (head counts kept: head dim 32, 16 for ut_1088; ROPE_DIMS=16 stays
#       partial), with QUANT_PASSTHROUGH_NUMEL scaled by (256/MODEL_DIM)^2 so that the same tensors
#       are quantized as at full width (67 in top_1855)
#   EVAL_STRIDE -> EVAL_SEQ_LEN=64 EVAL_STRIDE=32 (still the sliding-window evaluation)
#   ROPE_TRAIN_SEQ_LEN -> 32 (half of TRAIN_SEQ_LEN, as 1024 of 2048 in the recipes: NTK stays on)
#   RECUR_START_STEP -> 2, NUM_LAYER_SCHEDULE steps > 0 -> 2 (the switch happens in the run; the
#       untied repeat MLPs get copied); ENABLE_LOOPING_AT=0.35 switches at step 2 by itself
#   GPTQ_CALIBRATION_BATCHES -> 2 (two sequences; self-generated ones for recur_1204)
#   GPTQ_ENABLED=1 -> COMPRESSOR=stored (brotli quality 11 takes about half a minute on these 8 MB
#       artifacts; the codec is libbrotli, outside utgolf.h, and the runs without GPTQ keep it)
# The environment is emptied (env -i) so that no knob leaks in from it; OMP_NUM_THREADS=2,
# OMP_DYNAMIC=false. Compare outputs only from builds made on the same machine (-march=native and
# the CPU kernel chosen at run time decide the bits), and note that the artifact holds the version
# string (utg_version) in its provenance text.
set -u
if [ $# -ne 2 ]; then
    echo "usage: sh tests/recipe_bits.sh TRAIN_BINARY OUT_DIR" >&2
    exit 2
fi
case $1 in /*) TR=$1 ;; *) TR=$(pwd)/$1 ;; esac
case $2 in /*) OUT=$2 ;; *) OUT=$(pwd)/$2 ;; esac
[ -x "$TR" ] || { echo "recipe_bits: $TR is not an executable" >&2; exit 2; }
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT" || exit 2

. tests/lib.sh       # $T, a temporary directory removed on exit
. tests/train_lib.sh # $T/val_000000.bin: the first 4,096 tokens of Persuasion

COMMON="VOCAB_SIZE=1024 ITERATIONS=3 WARMUP_STEPS=1 MAX_WALLCLOCK_SECONDS=0 WARMDOWN_ITERS=2
TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=256 GRAD_ACCUM_STEPS=2 VAL_FILES=$T/val_000000.bin VAL_LOSS_EVERY=0
TRAIN_LOG_EVERY=1 SEED=1337"

# KEY FILE: the value FILE gives KEY (the last KEY= line), empty if none
knob() { sed -n "s/^$1=//p" "$2" | tail -n 1; }

# the knobs changed for one recipe file (see the list above)
overrides() {
    _f=$1 _o=""
    _dim=$(knob MODEL_DIM "$_f")
    if [ -n "$_dim" ] && [ "$_dim" -gt 256 ]; then
        _o="$_o MODEL_DIM=256 QUANT_PASSTHROUGH_NUMEL=$((65536 * 256 * 256 / (_dim * _dim)))"
    fi
    [ -n "$(knob EVAL_STRIDE "$_f")" ] && _o="$_o EVAL_SEQ_LEN=64 EVAL_STRIDE=32"
    [ -n "$(knob ROPE_TRAIN_SEQ_LEN "$_f")" ] && _o="$_o ROPE_TRAIN_SEQ_LEN=32"
    [ -n "$(knob RECUR_START_STEP "$_f")" ] && _o="$_o RECUR_START_STEP=2"
    _s=$(knob NUM_LAYER_SCHEDULE "$_f")
    [ -n "$_s" ] && _o="$_o NUM_LAYER_SCHEDULE=$(echo "$_s" | sed -E 's/(^|,)[1-9][0-9]*:/\12:/g')"
    [ -n "$(knob GPTQ_CALIBRATION_BATCHES "$_f")" ] && _o="$_o GPTQ_CALIBRATION_BATCHES=2"
    [ "$(knob GPTQ_ENABLED "$_f")" = 1 ] && _o="$_o COMPRESSOR=stored"
    echo "$_o"
}

# the loss lines of a train.log without timings
loss_lines() {
    grep -E '^(model_params:|warmup_step:|step:|depth_plan:[0-9]+ active|loaded the |final_exact |final_quant_exact |quant: )' "$1" |
        sed -E 's/ (train_time|step_avg|tok\/s|eval_time|tokens\/s|wall):[^ ]*//g; s/; [0-9.]+s$//'
}
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

status=0
for f in recipes/*.env data/austen/run.env; do
    if [ "$f" = data/austen/run.env ]; then
        name=austen_run
        configs="--config data/austen/run.env"
    else
        name=$(basename "$f" .env)
        configs="--config data/austen/run.env --config $f"
    fi
    dir=$OUT/$name
    rm -rf "$dir"
    # shellcheck disable=SC2086
    env -i PATH="$PATH" OMP_NUM_THREADS=2 OMP_DYNAMIC=false OMP_WAIT_POLICY=passive \
        "$TR" $configs --no-progress --force --out "$dir" $COMMON $(overrides "$f") RUN_ID="$name" \
        >"$OUT/$name.out" 2>"$OUT/$name.err"
    rc=$?
    rm -f "$dir/checkpoint.utgc"
    if [ $rc -ne 0 ] || [ ! -f "$dir/final_model.utga" ]; then
        echo "$name FAILED (exit $rc; see $OUT/$name.err)"
        status=1
        continue
    fi
    loss_lines "$dir/train.log" >"$dir/loss_lines.txt"
    echo "$name $(sha "$dir/final_model.utga") $(sha "$dir/model.safetensors") $(sha "$dir/loss_lines.txt")"
done
exit $status
