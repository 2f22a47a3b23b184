#!/bin/sh
# utg-grad end to end: --help, usage errors, weights and gradients written and read back, bad files
# refused with a message, identical runs giving identical bytes; and the README example runs.
B=${1:-build}
. "$(dirname "$0")/lib.sh"

G="$B/utg-grad"
TINY="NUM_LAYERS=3 MODEL_DIM=32 NUM_HEADS=4 NUM_KV_HEADS=2 VOCAB_SIZE=64 TRAIN_SEQ_LEN=16"

# a shard of 65 tokens below 64, written with printf (magic 20240520 = bytes 210 330 064 001 octal)
{
    printf '\210\330\064\001\001\000\000\000\101\000\000\000'
    head -c 1012 /dev/zero
    i=0
    while [ $i -lt 65 ]; do
        v=$(( (i * 37 + 5) % 64 ))
        printf "\\$(printf '%03o' $v)\\000"
        i=$((i + 1))
    done
} > "$T/tok.bin"

check "--help lists every knob" sh -c "'$G' --help | grep -q TIED_EMBED_INIT_STD && '$G' --help | grep -q NUM_KV_HEADS"
"$G" >"$T/out" 2>&1; st=$?
check "no --tokens: usage error (exit 2)" sh -c "[ $st -eq 2 ] && grep -q 'tokens is required' '$T/out'"
"$G" --tokens "$T/tok.bin" --bogus 1 >"$T/out" 2>&1; st=$?
check "unknown option: exit 2 with its name" sh -c "[ $st -eq 2 ] && grep -q 'bogus' '$T/out'"
"$G" --tokens "$T/tok.bin" NUM_LAYERZ=3 >"$T/out" 2>&1; st=$?
check "unknown knob: exit 2 with its name" sh -c "[ $st -eq 2 ] && grep -q NUM_LAYERZ '$T/out'"

# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 4 --weights-out "$T/w.st" --grads-out "$T/g1.st" $TINY >"$T/l1" 2>"$T/e1"
check "loss at init is about ln 64" sh -c "awk '/^loss/ { d = \$2 - log(64); found = (d < 0.02 && d > -0.02) } END { exit !found }' '$T/l1'"
# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 4 --weights "$T/w.st" --grads-out "$T/g2.st" $TINY >"$T/l2" 2>"$T/e2"
check "weights written then read give the same loss" sh -c "grep -q '^loss' '$T/l1' && cmp -s '$T/l1' '$T/l2'"
check "same weights, same batch: identical gradient bytes" cmp -s "$T/g1.st" "$T/g2.st"
# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 4 --weights "$T/g1.st" $TINY >"$T/l3" 2>&1
check "a gradients file has the parameters' names and shapes" grep -q '^loss' "$T/l3"
printf 'NUM_LAYERS=3\nMODEL_DIM=32\n# comment\nNUM_HEADS=4\nNUM_KV_HEADS=2\nVOCAB_SIZE=64\nTRAIN_SEQ_LEN=16\n' > "$T/tiny.cfg"
"$G" --tokens "$T/tok.bin" --batch-seqs 4 --config "$T/tiny.cfg" --weights "$T/w.st" >"$T/l4" 2>/dev/null
check "--config file gives the same result as KEY=VALUE" cmp -s "$T/l1" "$T/l4"
NUM_LAYERS=3 MODEL_DIM=32 NUM_HEADS=4 NUM_KV_HEADS=2 VOCAB_SIZE=64 TRAIN_SEQ_LEN=16 \
    "$G" --tokens "$T/tok.bin" --batch-seqs 4 --weights "$T/w.st" >"$T/l5" 2>/dev/null
check "environment variables work like train_gpt.py's" cmp -s "$T/l1" "$T/l5"

head -c 100 "$T/w.st" > "$T/trunc.st"
# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 4 --weights "$T/trunc.st" $TINY >"$T/out" 2>&1; st=$?
check "truncated safetensors: refused with a message" sh -c "[ $st -eq 1 ] && grep -q 'safetensors' '$T/out'"
# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 4 --weights "$T/w.st" NUM_LAYERS=2 MODEL_DIM=32 NUM_HEADS=4 NUM_KV_HEADS=2 VOCAB_SIZE=64 TRAIN_SEQ_LEN=16 >"$T/out" 2>&1; st=$?
check "checkpoint of another shape: refused, naming the tensor" sh -c "[ $st -eq 1 ] && grep -q 'blocks.2' '$T/out'"
# a tensor name holding ESC [ 2 J (clear screen), written as \u001b in the JSON header (same length)
python3 - "$T/w.st" "$T/esc.st" <<'PYEOF'
import sys
b = open(sys.argv[1], "rb").read()
assert b.count(b'"tok_emb.weight"') == 1
open(sys.argv[2], "wb").write(b.replace(b'"tok_emb.weight"', b'"\\u001b[2Jemb.w"'))
PYEOF
# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 4 --weights "$T/esc.st" $TINY >"$T/out" 2>&1; st=$?
no_raw_esc() { ! grep -q "$(printf '\033')" "$1"; }
check "a tensor name with a terminal escape: refused, printed as \\x1b, no raw ESC byte" \
    sh -c "[ $st -eq 1 ] && grep -q 'x1b\[2Jemb.w' '$T/out'"
check "... and no raw ESC byte reaches the terminal" no_raw_esc "$T/out"
# shellcheck disable=SC2086
"$G" --tokens "$T/w.st" $TINY >"$T/out" 2>&1; st=$?
check "a non-shard token file: refused" sh -c "[ $st -eq 1 ] && grep -q 'magic' '$T/out'"
# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 5 $TINY >"$T/out" 2>&1; st=$?
check "batch larger than the shard: refused" sh -c "[ $st -eq 1 ] && grep -q 'holds 65 tokens' '$T/out'"
# shellcheck disable=SC2086
"$G" --tokens "$T/tok.bin" --batch-seqs 1 VOCAB_SIZE=32 NUM_LAYERS=3 MODEL_DIM=32 NUM_HEADS=4 NUM_KV_HEADS=2 TRAIN_SEQ_LEN=16 >"$T/out" 2>&1; st=$?
check "token ids beyond VOCAB_SIZE: refused" sh -c "[ $st -eq 1 ] && grep -q 'vocabulary' '$T/out'"

# the README's vendoring snippet, extracted verbatim, compiles warning-free and runs
awk '/^```c$/ { on = 1; next } /^```$/ { if (on) exit } on' README.md > "$T/readme.c"
check "README vendoring snippet compiles and runs" sh -c "grep -q UTGOLF_IMPLEMENTATION '$T/readme.c' && \
    ${CC:-cc} -std=c99 -O1 -Wall -Wextra -Werror -I. '$T/readme.c' -o '$T/readme' -lm && '$T/readme'"

"$B/minimal" >"$T/out" 2>&1
check "the README vendoring example runs" grep -q 'loss at init 6.9' "$T/out"

summary
