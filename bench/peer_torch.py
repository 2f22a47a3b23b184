#!/usr/bin/env python3
"""The PyTorch peer of `make bench`: train_gpt.py's baseline model and optimizer, timed on the CPU.

The model is Parameter Golf's train_gpt.py GPT written for PyTorch 1.13 (Debian's python3-torch: no
F.rms_norm, no scaled_dot_product_attention): tied embedding, RMSNorm (fp32 machine epsilon, as
utgolf and tests/torch_ref.py), GQA attention with per-head q/k RMSNorm, split-half RoPE and q_gain,
ReLU^2 MLP, U-Net skips with skip_weights, resid_mix, attn_scale/mlp_scale, logit softcap 30, mean
cross-entropy on fp32 logits. Attention is explicit (QK^T, causal mask, softmax, PV) with the query
heads of one kv head stacked into one batched matmul (no repeat of k and v) and 1/sqrt(head_dim)
folded into q. The optimizer is train_gpt.py's: Muon (Nesterov momentum, Newton-Schulz 5 steps in
bf16, the max(1, rows/cols)^0.5 scale, the bf16 update buffer) for the blocks' matrices, Adam
(betas 0.9/0.95, eps 1e-8; foreach, since fused Adam is CUDA-only in 1.13) for the tied embedding
(lr 0.05) and for the scalars and control tensors (lr 0.04); momentum warmup 0.85 -> 0.95.

Before timing, the model is checked against tests/torch_ref.py (the independent functional
reference the parity tests use) in float64 on a tiny shape: loss and every gradient must agree.

Timed (median of --steps after warm-up steps, torch.set_num_threads(--threads)):
  train: one full step: zero_grad, forward (under bf16 CPU autocast for prec bf16), backward,
         Muon + Adam step;
  eval:  forward only, torch.inference_mode() (and autocast for bf16), over one more batch.
A new batch of tokens every step, the same as bench/bench_train.c's.
Shapes (2,048 tokens per step, vocab 1024, MLP 2x):
  A: 4 layers, 256 wide, 4/2 heads, 8 x 256;   B: 9 layers, 512 wide, 8/4 heads, 4 x 512.
FLOPs are counted as bench/bench_train.c counts them (see its header comment).

Torch links libblas.so.3; on Debian that is reference BLAS (~8 GFLOP/s) unless OpenBLAS is put in
front (bench/run.sh does, with LD_LIBRARY_PATH, and unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE).
The BLAS actually loaded is printed, and the allocator: with glibc malloc every tensor of 32 MiB or
more (shape B's fp32 attention scores) is mmapped afresh and page-faulted on each use, which costs
seconds per step on a VM; bench/run.sh preloads jemalloc with purging off. Output lines for run.sh:
  peer torch shape:A prec:fp32 threads:2 tokens:2048 train_tok_s:... eval_tok_s:... step_ms:... ...
Options: --shapes A,B  --precs fp32,bf16  --steps N  --warmup N  --quick  --threads N  --peak GFLOPS
         --no-check
"""
import argparse
import math
import os
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = torch.finfo(torch.float32).eps
SHAPES = {
    "A": dict(num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2, seq_len=256, batch=8),
    "B": dict(num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, seq_len=512, batch=4),
}
VOCAB, MLP_MULT, SOFTCAP, ROPE_BASE, QK_GAIN_INIT, TIED_EMBED_INIT_STD = 1024, 2, 30.0, 10000.0, 1.5, 0.005
# train_gpt.py's optimizer defaults
MATRIX_LR, SCALAR_LR, TIED_EMBED_LR, BETA1, BETA2, ADAM_EPS = 0.04, 0.04, 0.05, 0.9, 0.95, 1e-8
MUON_MOMENTUM, MUON_MOMENTUM_WARMUP_START, MUON_MOMENTUM_WARMUP_STEPS, MUON_BACKEND_STEPS = 0.95, 0.85, 500, 5
CONTROL_TENSOR_NAME_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix",
                                "resid_mixes", "q_gain", "skip_weight", "skip_weights")


# --------------------------------------------------------------------------------------- model

def rms_norm(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)


class Rotary(nn.Module):
    """cos/sin tables [T, hd/2] in float32 (train_gpt.py's Rotary), cached per length and dtype."""

    def __init__(self, dim, base):
        super().__init__()
        self.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.cache = {}

    def forward(self, seq_len, dtype):
        key = (seq_len, dtype)
        if key not in self.cache:
            freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), self.inv_freq)
            self.cache[key] = (freqs.cos().to(dtype), freqs.sin().to(dtype))
        return self.cache[key]


def apply_rotary_emb(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, num_heads, num_kv_heads):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, kv_dim, bias=False)
        self.c_v = nn.Linear(dim, kv_dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((num_heads,), QK_GAIN_INIT, dtype=torch.float32))
        self.rotary = Rotary(self.head_dim, ROPE_BASE)
        self.masks = {}

    def causal_mask(self, T, G, device):
        """True above the diagonal, for G query heads stacked along the rows: [G*T, T]."""
        key = (T, G)
        if key not in self.masks:
            self.masks[key] = torch.ones(T, T, dtype=torch.bool, device=device).triu(1).repeat(G, 1)
        return self.masks[key]

    def forward(self, x):
        B, T, dim = x.shape
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        G = H // Hkv
        q = F.linear(x, self.c_q.weight).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(x, self.c_k.weight).view(B, T, Hkv, hd).transpose(1, 2)
        v = F.linear(x, self.c_v.weight).view(B, T, Hkv, hd).transpose(1, 2)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = self.rotary(T, q.dtype)
        q = apply_rotary_emb(q, cos, sin) * (self.q_gain.to(q.dtype) / math.sqrt(hd))[None, :, None, None]
        k = apply_rotary_emb(k, cos, sin)
        # query head h reads kv head h // G (SDPA's enable_gqa): stack each kv head's G query heads
        s = q.reshape(B, Hkv, G * T, hd) @ k.transpose(-2, -1)                # [B, Hkv, G*T, T]
        s = s.masked_fill(self.causal_mask(T, G, x.device), float("-inf"))
        y = torch.softmax(s, dim=-1) @ v                                      # [B, Hkv, G*T, hd]
        y = y.view(B, H, T, hd).transpose(1, 2).reshape(B, T, dim)
        return F.linear(y, self.proj.weight)


class MLP(nn.Module):
    def __init__(self, dim, mlp_mult):
        super().__init__()
        self.fc = nn.Linear(dim, mlp_mult * dim, bias=False)
        self.proj = nn.Linear(mlp_mult * dim, dim, bias=False)
        self.proj._zero_init = True

    def forward(self, x):
        return F.linear(torch.relu(F.linear(x, self.fc.weight)).square(), self.proj.weight)


class Block(nn.Module):
    def __init__(self, dim, num_heads, num_kv_heads, mlp_mult):
        super().__init__()
        self.attn = CausalSelfAttention(dim, num_heads, num_kv_heads)
        self.mlp = MLP(dim, mlp_mult)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def forward(self, x, x0):
        mix = self.resid_mix.to(dtype=x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        x = x + self.attn_scale.to(dtype=x.dtype)[None, None, :] * self.attn(rms_norm(x))
        x = x + self.mlp_scale.to(dtype=x.dtype)[None, None, :] * self.mlp(rms_norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, num_layers, model_dim, num_heads, num_kv_heads, vocab=VOCAB, mlp_mult=MLP_MULT, softcap=SOFTCAP):
        super().__init__()
        self.softcap = softcap
        self.tok_emb = nn.Embedding(vocab, model_dim)
        self.num_encoder_layers = num_layers // 2
        self.num_decoder_layers = num_layers - self.num_encoder_layers
        self.num_skip_weights = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = nn.Parameter(torch.ones(self.num_skip_weights, model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(model_dim, num_heads, num_kv_heads, mlp_mult) for _ in range(num_layers)])
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=TIED_EMBED_INIT_STD)
        for module in self.modules():
            if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)

    def forward(self, input_ids, target_ids):
        x = rms_norm(self.tok_emb(input_ids))
        x0 = x
        skips = []
        for i in range(self.num_encoder_layers):
            x = self.blocks[i](x, x0)
            skips.append(x)
        for i in range(self.num_decoder_layers):
            if skips:
                x = x + self.skip_weights[i].to(dtype=x.dtype)[None, None, :] * skips.pop()
            x = self.blocks[self.num_encoder_layers + i](x, x0)
        x = rms_norm(x).reshape(-1, x.size(-1))
        logits = self.softcap * torch.tanh(F.linear(x, self.tok_emb.weight) / self.softcap)
        if logits.dtype in (torch.bfloat16, torch.float16):  # train_gpt.py's logits.float() (float64 stays)
            logits = logits.float()
        return F.cross_entropy(logits, target_ids.reshape(-1), reduction="mean")


# ------------------------------------------------------------------------------------ optimizer

def zeropower_via_newtonschulz5(G, steps=10, eps=1e-7):
    """train_gpt.py's Newton-Schulz orthogonalisation, in bf16."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()
    X /= X.norm() + eps
    transposed = G.size(0) > G.size(1)
    if transposed:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if transposed else X


class Muon(torch.optim.Optimizer):
    """train_gpt.py's Muon on one process (world size 1)."""

    def __init__(self, params, lr, momentum, backend_steps, nesterov=True):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            lr, momentum = group["lr"], group["momentum"]
            total_params = sum(int(p.numel()) for p in params)
            updates_flat = torch.zeros(total_params, device=params[0].device, dtype=torch.bfloat16)
            curr = 0
            for p in params:
                if p.grad is not None:
                    g = p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(g)
                    if group["nesterov"]:
                        g = g.add(buf, alpha=momentum)
                    g = zeropower_via_newtonschulz5(g, steps=group["backend_steps"])
                    g *= max(1, g.size(0) / g.size(1)) ** 0.5
                    updates_flat[curr:curr + p.numel()] = g.reshape(-1)
                curr += p.numel()
            curr = 0
            for p in params:
                g = updates_flat[curr:curr + p.numel()].view_as(p).to(dtype=p.dtype)
                p.add_(g, alpha=-lr)
                curr += p.numel()


def make_optimizers(model):
    """train_gpt.py's three optimizers: Adam (tied embedding), Muon (block matrices), Adam (scalars)."""
    block_named_params = list(model.blocks.named_parameters())
    matrix_params = [p for name, p in block_named_params
                     if p.ndim == 2 and not any(pat in name for pat in CONTROL_TENSOR_NAME_PATTERNS)]
    scalar_params = [p for name, p in block_named_params
                     if p.ndim < 2 or any(pat in name for pat in CONTROL_TENSOR_NAME_PATTERNS)]
    if model.skip_weights.numel() > 0:
        scalar_params.append(model.skip_weights)
    opt_tok = torch.optim.Adam([{"params": [model.tok_emb.weight], "lr": TIED_EMBED_LR, "base_lr": TIED_EMBED_LR}],
                               betas=(BETA1, BETA2), eps=ADAM_EPS, foreach=True)
    opt_muon = Muon(matrix_params, lr=MATRIX_LR, momentum=MUON_MOMENTUM, backend_steps=MUON_BACKEND_STEPS)
    for group in opt_muon.param_groups:
        group["base_lr"] = MATRIX_LR
    opt_scalar = torch.optim.Adam([{"params": scalar_params, "lr": SCALAR_LR, "base_lr": SCALAR_LR}],
                                  betas=(BETA1, BETA2), eps=ADAM_EPS, foreach=True)
    return [opt_tok, opt_muon, opt_scalar], opt_muon


# ------------------------------------------------------------------------------------- figures

def count_flops(s, tokens, vocab=VOCAB, mlp_mult=MLP_MULT, ns_steps=MUON_BACKEND_STEPS):
    """bench/bench_train.c's counts: (train model FLOPs, eval FLOPs, Newton-Schulz FLOPs) per step."""
    L, d, T = s["num_layers"], s["model_dim"], s["seq_len"]
    kv, Fd = s["num_kv_heads"] * (d // s["num_heads"]), mlp_mult * d
    n_mm = L * (2 * d * d + 2 * kv * d + 2 * Fd * d) + vocab * d
    train = tokens * (6 * n_mm + 12 * L * T * d)
    ev = tokens * (2 * n_mm + 4 * L * T * d)
    ns = 0
    for r, c, count in ((d, d, 2), (kv, d, 2), (Fd, d, 1), (d, Fd, 1)):
        mn, mx = min(r, c), max(r, c)
        ns += count * L * ns_steps * (4 * mn * mn * mx + 2 * mn ** 3)
    return train, ev, ns


def loaded_libs(pattern):
    """Paths of the shared libraries mapped into this process whose path matches pattern."""
    with open("/proc/self/maps") as f:
        return sorted(set(re.findall(r"(/\S*(?:%s)\S*)" % pattern, f.read())))


def mm_gflops(n, dtype, reps=5):
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


def check_against_reference():
    """Loss and gradients against tests/torch_ref.py in float64 on a tiny shape; returns a message or
    None when the reference is not found."""
    here = os.path.dirname(os.path.abspath(__file__))
    tests = os.path.join(os.path.dirname(here), "tests")
    if not os.path.exists(os.path.join(tests, "torch_ref.py")):
        return None
    sys.path.insert(0, tests)
    try:
        import torch_ref
    finally:
        sys.path.pop(0)
    cfg = torch_ref.Config(NUM_LAYERS=5, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=MLP_MULT, VOCAB_SIZE=64,
                           TIE_EMBEDDINGS=1, LOGIT_SOFTCAP=SOFTCAP, TRAIN_SEQ_LEN=16, ROPE_BASE=ROPE_BASE,
                           QK_GAIN_INIT=QK_GAIN_INIT)
    gen = torch.Generator().manual_seed(1)
    params = torch_ref.random_params(cfg, gen, torch.float64)
    x = torch.randint(0, 64, (3, 16), generator=gen)
    y = torch.randint(0, 64, (3, 16), generator=gen)
    ref_loss, ref_grads = torch_ref.loss_and_grads(params, cfg, x, y)
    model = GPT(5, 32, 4, 2, vocab=64).double()
    names = [n for n, _ in model.named_parameters()]
    if sorted(names) != sorted(params):
        raise SystemExit("peer_torch: parameter names differ from tests/torch_ref.py: %s" % sorted(set(names) ^ set(params)))
    model.load_state_dict(params)
    loss = model(x, y)
    loss.backward()
    worst = max((p.grad - ref_grads[n]).abs().max().item() / max(ref_grads[n].abs().max().item(), 1e-12)
                for n, p in model.named_parameters())
    dl = abs(loss.item() - ref_loss)
    if dl > 1e-10 or worst > 1e-8:
        raise SystemExit("peer_torch: model differs from tests/torch_ref.py: loss diff %.3e, worst grad rel diff %.3e"
                         % (dl, worst))
    return "same as tests/torch_ref.py in float64 (loss diff %.1e, worst gradient rel diff %.1e)" % (dl, worst)


def token_hash(k):
    """bench/bench_train.c's token_hash: the top 10 bits of the lowbias32 hash of k."""
    k &= 0xFFFFFFFF
    k ^= k >> 16
    k = (k * 0x7FEB352D) & 0xFFFFFFFF
    k ^= k >> 15
    k = (k * 0x846CA68B) & 0xFFFFFFFF
    k ^= k >> 16
    return k >> 22


def bench_shape(name, prec, steps, warmup, threads, peak):
    s = SHAPES[name]
    torch.manual_seed(0)
    model = GPT(s["num_layers"], s["model_dim"], s["num_heads"], s["num_kv_heads"])
    optimizers, opt_muon = make_optimizers(model)
    B, T = s["batch"], s["seq_len"]
    tokens = B * T

    def batch(step):  # bench/bench_train.c's make_batch: a new window of one pseudo-random stream
        t = [token_hash(step * (tokens + 1) + k) for k in range(tokens + 1)]
        return torch.tensor(t[:-1]).view(B, T), torch.tensor(t[1:]).view(B, T)
    use_amp = prec == "bf16"

    def autocast():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=use_amp)

    t_step, t_fwd, t_bwd, t_opt = [], [], [], []
    for step in range(warmup + steps):
        x, y = batch(step)
        t0 = time.perf_counter()
        with autocast():
            loss = model(x, y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        frac = min(step / MUON_MOMENTUM_WARMUP_STEPS, 1.0)
        for group in opt_muon.param_groups:
            group["momentum"] = (1 - frac) * MUON_MOMENTUM_WARMUP_START + frac * MUON_MOMENTUM
        for opt in optimizers:
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if step >= warmup:
            t_step.append(t3 - t0); t_fwd.append(t1 - t0); t_bwd.append(t2 - t1); t_opt.append(t3 - t2)
    t_eval = []
    x, y = batch(warmup + steps)
    for step in range(1 + steps):
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast():
            eval_loss = model(x, y)
        if step >= 1:
            t_eval.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in
           dict(step=t_step, fwd=t_fwd, bwd=t_bwd, opt=t_opt, eval=t_eval).items()}
    f_train, f_eval, f_ns = count_flops(s, tokens)
    train_tok_s, eval_tok_s = tokens / (med["step"] / 1e3), tokens / (med["eval"] / 1e3)
    print("shape %s %s: step %.1f ms (fwd %.1f, bwd %.1f, opt %.1f), %.0f tok/s train, eval %.1f ms, %.0f tok/s eval"
          % (name, prec, med["step"], med["fwd"], med["bwd"], med["opt"], train_tok_s, med["eval"], eval_tok_s))
    line = ("peer torch shape:%s prec:%s threads:%d tokens:%d train_tok_s:%.1f eval_tok_s:%.1f step_ms:%.2f fwd_ms:%.2f "
            "bwd_ms:%.2f opt_ms:%.2f eval_ms:%.2f model_gflop:%.2f ns_gflop:%.2f eval_gflop:%.2f"
            % (name, prec, threads, tokens, train_tok_s, eval_tok_s, med["step"], med["fwd"], med["bwd"], med["opt"],
               med["eval"], f_train / 1e9, f_ns / 1e9, f_eval / 1e9))
    if peak > 0:
        line += " peak_gflops:%.1f mfu:%.3f mfu_ns:%.3f eval_mfu:%.3f" % (
            peak, f_train / (med["step"] / 1e3) / (peak * 1e9), (f_train + f_ns) / (med["step"] / 1e3) / (peak * 1e9),
            f_eval / (med["eval"] / 1e3) / (peak * 1e9))
    print(line + " loss:%.4f" % eval_loss.item(), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="A,B", help="comma-separated: A, B")
    ap.add_argument("--precs", default="fp32,bf16", help="comma-separated: fp32, bf16 (CPU autocast)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median), default 5")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first, default 2")
    ap.add_argument("--quick", action="store_true", help="3 timed steps (after the 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads, default 2")
    ap.add_argument("--peak", type=float, default=0.0, help="measured fp32 peak GFLOP/s, for MFU")
    ap.add_argument("--no-check", action="store_true", help="skip the float64 check against tests/torch_ref.py")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 2
    torch.set_num_threads(args.threads)
    backend = re.search(r"ATen parallel backend: (\S+)", torch.__config__.parallel_info())
    print("PyTorch %s, %d threads (%s), OPENBLAS_CORETYPE=%s" % (
        torch.__version__, torch.get_num_threads(), backend.group(1) if backend else "?",
        os.environ.get("OPENBLAS_CORETYPE", "(unset)")))
    if not args.no_check:
        msg = check_against_reference()
        print("model check: %s" % (msg or "tests/torch_ref.py not found, skipped"), flush=True)
    g32, g16 = mm_gflops(1024, torch.float32), mm_gflops(1024, torch.bfloat16)
    blas = loaded_libs("blas|lapack")
    malloc = loaded_libs("jemalloc|tcmalloc")
    openblas = any("openblas" in p for p in blas)
    print("BLAS loaded: %s" % (", ".join(blas) or "none found in /proc/self/maps"))
    print("allocator: %s" % (", ".join(malloc) if malloc else
                             "glibc malloc (blocks of 32 MiB and more are mmapped afresh on every allocation)"))
    print("peer torch-mm threads:%d n:1024 fp32_gflops:%.1f bf16_gflops:%.1f openblas:%d malloc:%s" % (
        torch.get_num_threads(), g32, g16, openblas,
        "jemalloc" if any("jemalloc" in p for p in malloc) else "tcmalloc" if malloc else "glibc"), flush=True)
    if not openblas:
        print("warning: torch is not using OpenBLAS (reference BLAS is ~8 GFLOP/s); run through bench/run.sh")
    for name in [s for s in args.shapes.split(",") if s]:
        if name not in SHAPES:
            raise SystemExit("unknown shape %r (A or B)" % name)
        for prec in [p for p in args.precs.split(",") if p]:
            if prec not in ("fp32", "bf16"):
                raise SystemExit("unknown precision %r (fp32 or bf16)" % prec)
            bench_shape(name, prec, args.steps, args.warmup, torch.get_num_threads(), args.peak)


if __name__ == "__main__":
    main()
