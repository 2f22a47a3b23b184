#!/bin/sh
# Runs every suite, echoes its output, and adds up the "N passed, N failed" lines into one closing
# line, which is always the last line. A suite whose summary reports skipped checks (a missing
# optional dependency) is named on the line before it. Exit status is non-zero when anything failed.
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
total_pass=0
total_fail=0
total_skip=0
skipped_suites=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT

suite() { # name, command...
    name=$1
    shift
    echo "== $name"
    "$@" >"$log" 2>&1
    status=$?
    cat "$log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        # a suite that died before its summary counts as one failure
        echo "   ($name printed no summary; exit status $status)"
        total_fail=$((total_fail + 1))
        return
    fi
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + ${s:-0}))
    if [ "${s:-0}" -gt 0 ]; then skipped_suites="${skipped_suites:+$skipped_suites, }$name"; fi
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "   ($name exited with status $status)"
        total_fail=$((total_fail + 1))
    fi
}

compile_check() {
    if make -s --no-print-directory BUILD="$BUILD" compile-check; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
}

cuda_emu() { # the emulator's suite exists only where make found the CUDA headers
    if [ -x "$BUILD/test_cuda_emu" ]; then "$BUILD/test_cuda_emu"; return; fi
    echo "no CUDA headers (\$CUDA_HOME/include/cuda_runtime.h), $BUILD/test_cuda_emu not built: skipped"
    echo "0 passed, 0 failed, 1 skipped"
}

suite "header compiles as C99 and C++17 (-Werror -pedantic)" compile_check
suite "ops: finite-difference gradient checks" "$BUILD/test_ops"
suite "ops again, portable C paths (UTG_NO_VECTOR_EXT)" "$BUILD/test_ops_portable"
suite "model: config, arena, whole-model gradients" "$BUILD/test_model"
suite "depth plans: recipes, schedules, gradients through recurrence" "$BUILD/test_plan"
suite "depth plans: random recurrence configurations against a plan oracle" "$BUILD/test_plan_random"
suite "quantizers: fp16, per-row intN, percentile, SDClip, GPTQ-lite" "$BUILD/test_quant"
suite "artifact parser: truncations, bit flips, structural mutants rejected" "$BUILD/test_artifact_mut"
suite "record-stack features: partial RoPE, LN scale, LeakyReLU², XSA (gradients)" "$BUILD/test_features"
suite "artifact: UTGA round trip, export and load, Hessians, GPTQ, QAT, budget" "$BUILD/test_artifact"
suite "io: safetensors and shards" "$BUILD/test_io"
suite "fuzz corpora replayed: artifact, spm, safetensors, shard, checkpoint, config" "$BUILD/fuzz_replay" tests/corpus
suite "cli: utg-grad and the vendoring example" sh tests/test_cli.sh "$BUILD"
suite "utg-shards: text and ids to shards" sh tests/test_shards_tool.sh "$BUILD"
suite "utg-inspect: artifact views, verify, budget, strip" sh tests/test_inspect.sh "$BUILD"
suite "optimizers: Newton-Schulz, Muon, Adam, schedules, EMA/SWA" "$BUILD/test_optim"
suite "fenced backend: every recipe on guarded memory, op ranges checked, host waits per step" "$BUILD/test_fenced"
suite "bf16 activation storage: every op against rounded fp32, a bf16 model" "$BUILD/test_storage"
suite "CUDA emulator: barriers, deadlocks, warp ops, atomics, orders, guarded device memory" cuda_emu
suite "datasets and loaders" "$BUILD/test_loader"
suite "trainer: CLI, resume bit for bit, checkpoint refusals" sh tests/test_train.sh "$BUILD"
suite "trainer guards: divergence, rollback, SIGTERM, risky invocations refused" sh tests/test_train_guard.sh "$BUILD"
suite "trainer under file faults: every write, fsync and rename fails or is killed" sh tests/test_faults.sh "$BUILD"
suite "tokenizer: SentencePiece reader, byte tables, bpb" "$BUILD/test_tokenizer"
suite "docs: every name they quote exists in the code" "$PYTHON" tests/test_docs.py
suite "tokenizer parity with python3-sentencepiece" "$PYTHON" tests/test_spm_parity.py
suite "parity with PyTorch autograd" env UTG_GRAD="$(cd "$BUILD" && pwd)/utg-grad" "$PYTHON" tests/test_torch_parity.py

if [ "$total_skip" -gt 0 ]; then
    echo "skipped: $skipped_suites (install their dependencies with: make deps)"
    echo "$total_pass passed, $total_fail failed, $total_skip skipped"
else
    echo "$total_pass passed, $total_fail failed"
fi
[ "$total_fail" -eq 0 ]
