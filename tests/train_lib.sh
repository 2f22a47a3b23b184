# Shared by the trainer suites that make many short runs (test_faults.sh, test_train_guard.sh):
# sourced after lib.sh (it writes into $T). Cuts a 4,096-token validation shard from Persuasion so
# that a run's final evaluation takes a fraction of a second, and sets TINY, the knobs of a tiny
# model that trains 512 tokens a step with everything slow (warmup steps, GPTQ) off.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # threads spinning at barriers slow a shared machine
export OMP_WAIT_POLICY
python3 - "$T/val_000000.bin" <<'PYEOF' || { no "cut a small validation shard"; summary; exit 1; }
import struct, sys
b = open("data/austen/austen_val_000000.bin", "rb").read()
h = list(struct.unpack("<256i", b[:1024]))
h[2] = 4097
open(sys.argv[1], "wb").write(struct.pack("<256i", *h) + b[1024:1024 + 2 * 4097])
PYEOF
TINY="NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=2 NUM_KV_HEADS=1 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=512
GRAD_ACCUM_STEPS=1 MAX_WALLCLOCK_SECONDS=0 WARMDOWN_ITERS=10 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1
TRAIN_LOADER=sequential EMA_ENABLED=0 MUON_WD=0 EMBED_WD=0 MATMUL_BF16=0 WARMUP_STEPS=0 GPTQ_ENABLED=0
VAL_FILES=$T/val_*.bin"
