"""Independent PyTorch reference of the Parameter Golf baseline GPT.

Used by tests/test_torch_parity.py to check utgolf's loss and gradients. The model is written
functionally: `gpt_loss(params, cfg, x, y)` takes a dict {state-dict name: tensor}, so any dtype
(float64 for the parity reference) and autograd work without nn.Module plumbing.

Also here: a minimal safetensors reader/writer (F32, F16, BF16, F64, I32) and a writer of
Parameter Golf token shards. Running this file directly runs its self-checks.
Targets PyTorch >= 1.13 (Debian's python3-torch): no F.rms_norm, no SDPA enable_gqa.
"""
import ctypes
import json
import math
import struct

import torch
import torch.nn.functional as F

EPS = torch.finfo(torch.float32).eps  # F.rms_norm(eps=None) under fp32 autocast


class Config:
    """Hyperparameters, named like train_gpt.py's environment variables."""
    DEFAULTS = dict(NUM_LAYERS=9, MODEL_DIM=512, NUM_HEADS=8, NUM_KV_HEADS=4, MLP_MULT=2,
                    VOCAB_SIZE=1024, TIE_EMBEDDINGS=1, LOGIT_SOFTCAP=30.0, TRAIN_SEQ_LEN=1024,
                    ROPE_BASE=10000.0, QK_GAIN_INIT=1.5)

    def __init__(self, **kw):
        for k, v in {**self.DEFAULTS, **kw}.items():
            if k not in self.DEFAULTS:
                raise KeyError(k)
            setattr(self, k, type(self.DEFAULTS[k])(v))
        self.head_dim = self.MODEL_DIM // self.NUM_HEADS
        self.n_enc = self.NUM_LAYERS // 2
        self.n_dec = self.NUM_LAYERS - self.n_enc
        self.n_skip = min(self.n_enc, self.n_dec)
        assert self.head_dim * self.NUM_HEADS == self.MODEL_DIM and self.head_dim % 2 == 0
        assert self.NUM_HEADS % self.NUM_KV_HEADS == 0 and self.LOGIT_SOFTCAP > 0

    def args(self):
        """KEY=VALUE command-line arguments (as utg-grad takes them)."""
        return ["%s=%g" % (k, getattr(self, k)) for k in self.DEFAULTS]


def param_shapes(cfg):
    """Ordered {name: shape} exactly as the PyTorch state dict of train_gpt.GPT."""
    d, V, kv = cfg.MODEL_DIM, cfg.VOCAB_SIZE, cfg.NUM_KV_HEADS * cfg.head_dim
    hidden = cfg.MLP_MULT * d
    shapes = {"tok_emb.weight": (V, d), "skip_weights": (cfg.n_skip, d)}
    for i in range(cfg.NUM_LAYERS):
        p = "blocks.%d." % i
        shapes.update({
            p + "attn_scale": (d,), p + "mlp_scale": (d,), p + "resid_mix": (2, d),
            p + "attn.q_gain": (cfg.NUM_HEADS,),
            p + "attn.c_q.weight": (d, d), p + "attn.c_k.weight": (kv, d),
            p + "attn.c_v.weight": (kv, d), p + "attn.proj.weight": (d, d),
            p + "mlp.fc.weight": (hidden, d), p + "mlp.proj.weight": (d, hidden)})
    if not cfg.TIE_EMBEDDINGS:
        shapes["lm_head.weight"] = (V, d)
    return shapes


def init_params_pg(cfg, gen=None, dtype=torch.float32):
    """Parameter Golf's own initialisation (zero output projections, ones for scales)."""
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name == "tok_emb.weight":  # N(0, 0.005^2) when tied, nn.Embedding's N(0, 1) if not
            std = 0.005 if cfg.TIE_EMBEDDINGS else 1.0
            t = torch.randn(shape, generator=gen, dtype=dtype) * std
        elif name.endswith(("attn.proj.weight", "mlp.proj.weight")) or name == "lm_head.weight":
            t = torch.zeros(shape, dtype=dtype)
        elif name.endswith(".weight"):  # nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(shape[1])
            t = (torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1) * bound
        elif name.endswith("resid_mix"):
            t = torch.stack([torch.ones(shape[1]), torch.zeros(shape[1])]).to(dtype)
        elif name.endswith("q_gain"):
            t = torch.full(shape, cfg.QK_GAIN_INIT, dtype=dtype)
        else:  # attn_scale, mlp_scale, skip_weights
            t = torch.ones(shape, dtype=dtype)
        params[name] = t
    return params


# ---------------------------------------------------------------------------------- model

def rms_norm(x):
    """Weightless RMSNorm over the last dimension."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)


def rope_tables(cfg, T, dtype):
    """cos/sin [T, hd/2], computed in float32 like train_gpt.py's Rotary, then cast."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.ROPE_BASE ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Split-half rotary: pairs (i, i+hd/2); x is [B, heads, T, hd]."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos), dim=-1)


def attention(p, pre, cfg, x, cos, sin):
    """Causal GQA self-attention with QK RMSNorm, RoPE and per-head q_gain."""
    B, T, d = x.shape
    H, Hkv, hd = cfg.NUM_HEADS, cfg.NUM_KV_HEADS, cfg.head_dim
    q = F.linear(x, p[pre + "c_q.weight"]).view(B, T, H, hd).transpose(1, 2)
    k = F.linear(x, p[pre + "c_k.weight"]).view(B, T, Hkv, hd).transpose(1, 2)
    v = F.linear(x, p[pre + "c_v.weight"]).view(B, T, Hkv, hd).transpose(1, 2)
    q = apply_rope(rms_norm(q), cos, sin) * p[pre + "q_gain"].view(1, H, 1, 1)
    k = apply_rope(rms_norm(k), cos, sin)
    # query head h reads kv head h // (H/Hkv), as SDPA's enable_gqa does
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v                  # [B, H, T, hd]
    y = y.transpose(1, 2).reshape(B, T, d)
    return F.linear(y, p[pre + "proj.weight"])


def block(p, i, cfg, h, x0, cos, sin):
    pre = "blocks.%d." % i
    mix = p[pre + "resid_mix"]
    h = mix[0] * h + mix[1] * x0
    h = h + p[pre + "attn_scale"] * attention(p, pre + "attn.", cfg, rms_norm(h), cos, sin)
    m = F.relu(F.linear(rms_norm(h), p[pre + "mlp.fc.weight"])).square()
    return h + p[pre + "mlp_scale"] * F.linear(m, p[pre + "mlp.proj.weight"])


def gpt_loss(p, cfg, x, y):
    """Mean cross-entropy of the baseline GPT on ids x[B,T] with targets y[B,T]."""
    emb = p["tok_emb.weight"]
    h = rms_norm(F.embedding(x, emb))
    x0 = h
    cos, sin = rope_tables(cfg, x.size(1), emb.dtype)
    skips = []
    for i in range(cfg.n_enc):                             # encoder half: push outputs
        h = block(p, i, cfg, h, x0, cos, sin)
        skips.append(h)
    for j in range(cfg.n_dec):                             # decoder half: pop U-Net skips
        if skips:
            h = h + p["skip_weights"][j] * skips.pop()
        h = block(p, cfg.n_enc + j, cfg, h, x0, cos, sin)
    h = rms_norm(h).reshape(-1, h.size(-1))
    head = emb if cfg.TIE_EMBEDDINGS else p["lm_head.weight"]
    c = cfg.LOGIT_SOFTCAP
    logits = c * torch.tanh(F.linear(h, head) / c)
    return F.cross_entropy(logits, y.reshape(-1), reduction="mean")


def loss_and_grads(params, cfg, x, y):
    """Loss and {name: dloss/dparam} by autograd (inputs are not modified)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    loss = gpt_loss(leaves, cfg, x, y)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.item(), dict(zip(leaves.keys(), grads))


# ---------------------------------------------------------------------------- safetensors

ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
             "BF16": torch.bfloat16, "I32": torch.int32}


def _tensor_bytes(t):
    """Raw little-endian bytes of a tensor without numpy (host is little-endian x86/arm)."""
    t = t.detach().contiguous().cpu()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


def save_safetensors(path, tensors, dtype="F32", metadata=None):
    """Write {name: tensor} converting every tensor to `dtype` (a safetensors dtype name)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        data = _tensor_bytes(t.to(ST_DTYPES[dtype]))
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)) + hjson + b"".join(blobs))


def load_safetensors(path):
    """Read a safetensors file -> ({name: tensor in its stored dtype}, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    body = memoryview(raw)[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        dt = ST_DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        if e == b:
            t = torch.empty(0, dtype=dt)
        else:
            t = torch.frombuffer(bytearray(body[b:e]), dtype=dt)
        out[name] = t.reshape(info["shape"])
    return out, meta


# --------------------------------------------------------------------------- token shards

SHARD_MAGIC, SHARD_VERSION = 20240520, 1


def write_token_shard(path, tokens):
    """Parameter Golf shard: 256 int32 LE header (magic, version, count), then uint16 LE ids."""
    tokens = [int(t) for t in tokens]
    assert all(0 <= t < 65536 for t in tokens)
    header = [SHARD_MAGIC, SHARD_VERSION, len(tokens)] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack("<%dH" % len(tokens), *tokens))


def read_token_shard(path):
    with open(path, "rb") as f:
        raw = f.read()
    magic, version, n = struct.unpack_from("<3i", raw, 0)
    assert magic == SHARD_MAGIC and version == SHARD_VERSION and len(raw) == 1024 + 2 * n
    return list(struct.unpack_from("<%dH" % n, raw, 1024))


# ----------------------------------------------------------------------------- self-checks

def random_params(cfg, gen, dtype=torch.float64):
    """All-random nonzero parameters so every gradient path carries signal."""
    params = {}
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 2 and not name.endswith(("resid_mix", "skip_weights")):
            params[name] = torch.randn(shape, generator=gen, dtype=dtype) * 0.3
        else:  # scales, gains, resid_mix, skip_weights
            params[name] = 1 + 0.1 * torch.randn(shape, generator=gen, dtype=dtype)
    return params


def _selfcheck():
    import os
    import tempfile
    gen = torch.Generator().manual_seed(0)
    failures = 0

    # 1. autograd vs central finite differences (float64) on a few entries of every parameter
    cfg = Config(NUM_LAYERS=3, MODEL_DIM=16, NUM_HEADS=4, NUM_KV_HEADS=2, VOCAB_SIZE=32,
                 TIE_EMBEDDINGS=0, LOGIT_SOFTCAP=3.0, TRAIN_SEQ_LEN=8)
    params = random_params(cfg, gen)
    x = torch.randint(0, 32, (2, 8), generator=gen)
    y = torch.randint(0, 32, (2, 8), generator=gen)
    _, grads = loss_and_grads(params, cfg, x, y)
    worst, h = 0.0, 1e-6
    for name, t in params.items():
        flat = t.view(-1)
        for idx in torch.randint(0, flat.numel(), (3,), generator=gen).tolist():
            old = flat[idx].item()
            flat[idx] = old + h
            lp = gpt_loss(params, cfg, x, y).item()
            flat[idx] = old - h
            lm = gpt_loss(params, cfg, x, y).item()
            flat[idx] = old
            fd, ad = (lp - lm) / (2 * h), grads[name].view(-1)[idx].item()
            worst = max(worst, abs(fd - ad) / max(1e-3, abs(ad)))
    ok = worst < 1e-5
    failures += not ok
    print("%s finite-difference check: worst rel err %.2e" % ("PASS" if ok else "FAIL", worst))

    # 2. PG init: zero output projections + tiny embedding -> loss close to ln(V)
    cfg = Config(NUM_LAYERS=4, MODEL_DIM=64, NUM_HEADS=4, NUM_KV_HEADS=2, VOCAB_SIZE=256,
                 TRAIN_SEQ_LEN=32)
    x = torch.randint(0, 256, (2, 32), generator=gen)
    y = torch.randint(0, 256, (2, 32), generator=gen)
    loss = gpt_loss(init_params_pg(cfg, gen), cfg, x, y).item()
    ok = abs(loss - math.log(256)) < 0.02
    failures += not ok
    print("%s init loss %.5f vs ln(V) %.5f" % ("PASS" if ok else "FAIL", loss, math.log(256)))

    # 3. safetensors and shard round trips
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        src = {"a": torch.randn(3, 5, generator=gen), "b.c": torch.randn(7, generator=gen)}
        for dt in ("F32", "F16", "BF16"):
            save_safetensors(path, src, dt, metadata={"format": "pt"})
            got, meta = load_safetensors(path)
            with open(path, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
            ok = (n % 8 == 0 and meta == {"format": "pt"} and list(got) == list(src) and
                  all(got[k].dtype == ST_DTYPES[dt] and
                      torch.equal(got[k], src[k].to(ST_DTYPES[dt])) for k in src))
            failures += not ok
            print("%s safetensors round trip %s" % ("PASS" if ok else "FAIL", dt))
        spath = os.path.join(tmp, "s.bin")
        toks = torch.randint(0, 65536, (100,), generator=gen).tolist()
        write_token_shard(spath, toks)
        ok = read_token_shard(spath) == toks and os.path.getsize(spath) == 1024 + 200
        failures += not ok
        print("%s token shard round trip" % ("PASS" if ok else "FAIL"))
    return failures


if __name__ == "__main__":
    raise SystemExit(1 if _selfcheck() else 0)
