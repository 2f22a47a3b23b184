"""Parity test: utgolf's loss and parameter gradients (build/utg-grad) vs PyTorch autograd.

Run with /usr/bin/python3 from anywhere. For each tiny config it writes random weights (every
tensor random and nonzero, so every gradient path carries signal) as safetensors plus a token
shard, runs utg-grad, and recomputes loss and gradients in float64 PyTorch (tests/torch_ref.py)
from the same stored (rounded) weights. Env UTG_GRAD overrides the tool path.

Tolerances (utgolf computes in float32; the reference in float64):
  loss:  |loss_utg - loss_torch| <= 1e-5 * max(1, |loss_torch|)
  grads: per parameter, max|g_utg - g_torch| <= 2e-4 * max|g_torch| + 1e-7
Prints one PASS/FAIL line per test, then "N passed, M failed"; exits 1 on any failure.
"""
import os
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:
    print("torch not available: skipped")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_ref as ref  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTG_GRAD = os.environ.get("UTG_GRAD", os.path.join(REPO, "build", "utg-grad"))
LOSS_RTOL = 1e-5
GRAD_RTOL, GRAD_ATOL = 2e-4, 1e-7

# (name, config, batch sequences, stored weight dtype, check gradients, embedding/head scale)
CASES = [
    ("L2_gqa_tied", dict(NUM_LAYERS=2, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=2,
                         VOCAB_SIZE=64, TIE_EMBEDDINGS=1, TRAIN_SEQ_LEN=16), 2, "F32", True, 0.3),
    ("L3_mha_untied", dict(NUM_LAYERS=3, MODEL_DIM=48, NUM_HEADS=4, NUM_KV_HEADS=4, MLP_MULT=3,
                           VOCAB_SIZE=50, TIE_EMBEDDINGS=0, TRAIN_SEQ_LEN=12), 3, "F32", True, 0.3),
    # large logits (embedding std 1 -> logit std ~5.7) so that the softcap of 5 saturates
    ("L4_mqa_softcap5", dict(NUM_LAYERS=4, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=1, MLP_MULT=2,
                             VOCAB_SIZE=64, TIE_EMBEDDINGS=1, LOGIT_SOFTCAP=5.0,
                             TRAIN_SEQ_LEN=16), 2, "F32", True, 1.0),
    ("L2_bf16_weights", dict(NUM_LAYERS=2, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=2,
                             VOCAB_SIZE=64, TRAIN_SEQ_LEN=16), 2, "BF16", False, 0.3),
    ("L3_f16_weights", dict(NUM_LAYERS=3, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=2,
                            VOCAB_SIZE=64, TIE_EMBEDDINGS=0, TRAIN_SEQ_LEN=16),
     2, "F16", False, 0.3),
]

results = []  # one bool per test


def report(ok, name, detail):
    results.append(ok)
    print("%s %s: %s" % ("PASS" if ok else "FAIL", name, detail))


def run_utg_grad(tmp, cfg, B, weights_path, tokens_path, grads_path):
    """Run the tool; return (loss or None, error text)."""
    cmd = [UTG_GRAD, "--weights", weights_path, "--tokens", tokens_path, "--batch-seqs", str(B),
           "--grads-out", grads_path] + cfg.args()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    losses = [l.split()[1] for l in proc.stdout.splitlines() if l.startswith("loss ")]
    if proc.returncode == 0 and losses:
        return float(losses[-1]), ""
    stderr = proc.stderr.strip()[-400:]
    return None, "exit %d, no 'loss' line; stderr: %s" % (proc.returncode, stderr)


def compare_grads(name, shapes, got, want):
    """Names/shapes test, then per-parameter value test."""
    same = set(got) == set(shapes) and all(tuple(got[k].shape) == shapes[k] for k in shapes)
    missing, extra = sorted(set(shapes) - set(got)), sorted(set(got) - set(shapes))
    bad_shapes = [k for k in shapes if k in got and tuple(got[k].shape) != shapes[k]]
    report(same, name + ": grad names/shapes",
           "%d tensors" % len(got) if same else
           "missing %s extra %s bad shapes %s" % (missing, extra, bad_shapes))
    rows = []  # (err/tol, name, err, max|g_torch|)
    for k, g_ref in want.items():
        if k not in got or tuple(got[k].shape) != shapes[k]:
            rows.append((float("inf"), k, float("nan"), float("nan")))
            continue
        err = (got[k].double() - g_ref).abs().max().item()
        scale = g_ref.abs().max().item()
        rows.append((err / (GRAD_RTOL * scale + GRAD_ATOL), k, err, scale))
    rows.sort(reverse=True)
    failing = [r for r in rows if r[0] > 1]
    ratio, worst, err, scale = rows[0]
    detail = "worst %s err/tol %.3f (err %.2e, max|g| %.2e)" % (worst, ratio, err, scale)
    if failing:  # the five worst, enough to see which term disagrees
        detail += "; %d failing: " % len(failing) + ", ".join(
            "%s %.1f" % (r[1], r[0]) for r in failing[:5]) + (" ..." if len(failing) > 5 else "")
    report(not failing, name + ": grads", detail)


def run_case(tmp, case_idx, name, cfg_kw, B, dtype, check_grads, emb_scale):
    cfg = ref.Config(ROPE_BASE=10000.0, QK_GAIN_INIT=1.5, **cfg_kw)
    T, V = cfg.TRAIN_SEQ_LEN, cfg.VOCAB_SIZE
    gen = torch.Generator().manual_seed(1000 + case_idx)
    params = ref.random_params(cfg, gen)
    for k in ("tok_emb.weight", "lm_head.weight"):
        if k in params:
            params[k] = params[k] * (emb_scale / 0.3)
    # reference sees exactly what the file stores
    params = {k: v.to(ref.ST_DTYPES[dtype]).double() for k, v in params.items()}
    tokens = torch.randint(0, V, (B * T + 1,), generator=gen)
    x, y = tokens[:-1].reshape(B, T), tokens[1:].reshape(B, T)  # train_gpt.py loader layout

    paths = [os.path.join(tmp, name + ext) for ext in (".w.safetensors", ".bin", ".g.safetensors")]
    ref.save_safetensors(paths[0], params, dtype)
    ref.write_token_shard(paths[1], tokens.tolist())
    loss_utg, err = run_utg_grad(tmp, cfg, B, *paths)
    if loss_utg is None:
        report(False, name + ": loss", "utg-grad failed: " + err)
        return
    loss_ref, grads_ref = ref.loss_and_grads(params, cfg, x, y)
    diff = abs(loss_utg - loss_ref)
    report(diff <= LOSS_RTOL * max(1.0, abs(loss_ref)), name + ": loss",
           "utg %.8f torch %.8f |diff| %.2e (%s weights)" % (loss_utg, loss_ref, diff, dtype))
    if check_grads:
        if not os.path.exists(paths[2]):
            report(False, name + ": grads", "no grads file written")
            return
        got, _ = ref.load_safetensors(paths[2])
        compare_grads(name, ref.param_shapes(cfg), got, grads_ref)


def run_export_case(tmp):
    """utgolf -> PyTorch: weights utgolf initialises (seeded, train_gpt.py's scheme) and writes with
    --weights-out load into the PyTorch reference and give the loss utgolf printed."""
    cfg = ref.Config(NUM_LAYERS=3, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=2, VOCAB_SIZE=64,
                     TRAIN_SEQ_LEN=16, ROPE_BASE=10000.0, QK_GAIN_INIT=1.5)
    B, gen = 2, torch.Generator().manual_seed(77)
    tokens = torch.randint(0, cfg.VOCAB_SIZE, (B * cfg.TRAIN_SEQ_LEN + 1,), generator=gen)
    tok_path, w_path = os.path.join(tmp, "export.bin"), os.path.join(tmp, "export.w.safetensors")
    ref.write_token_shard(tok_path, tokens.tolist())
    cmd = [UTG_GRAD, "--tokens", tok_path, "--batch-seqs", str(B), "--weights-out", w_path,
           "SEED=4242"] + cfg.args()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp)
    losses = [float(l.split()[1]) for l in proc.stdout.splitlines() if l.startswith("loss ")]
    if proc.returncode != 0 or not losses or not os.path.exists(w_path):
        report(False, "utgolf_weights_in_torch", "utg-grad failed: " + proc.stderr.strip()[-300:])
        return
    params, _ = ref.load_safetensors(w_path)
    shapes = ref.param_shapes(cfg)
    if set(params) != set(shapes) or any(tuple(params[k].shape) != shapes[k] for k in shapes):
        report(False, "utgolf_weights_in_torch", "names/shapes differ from the state dict")
        return
    params = {k: v.double() for k, v in params.items()}
    x, y = tokens[:-1].reshape(B, -1), tokens[1:].reshape(B, -1)
    loss_ref = ref.gpt_loss(params, cfg, x, y).item()
    diff = abs(losses[-1] - loss_ref)
    report(diff <= LOSS_RTOL * max(1.0, abs(loss_ref)), "utgolf_weights_in_torch",
           "utg %.8f torch %.8f |diff| %.2e (%d tensors)" % (losses[-1], loss_ref, diff, len(params)))


def main():
    if not os.path.exists(UTG_GRAD):
        print("FAIL %s not found: build it first (make), or set UTG_GRAD" % UTG_GRAD)
        print("0 passed, 1 failed")
        return 1
    with tempfile.TemporaryDirectory(prefix="utg_parity_") as tmp:
        for i, case in enumerate(CASES):
            run_case(tmp, i, *case)
        run_export_case(tmp)
    n_pass = sum(results)
    print("%d passed, %d failed" % (n_pass, len(results) - n_pass))
    return 0 if n_pass == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
