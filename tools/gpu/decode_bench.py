"""End-to-end batch-1 decode of a Llama-7B-shaped decoder stack (random weights built on the
GPU: hidden 4096, intermediate 11008, 32 heads, vocabulary 32000, a static KV cache), fp16
against W4A8 and W2A8 layers from apq_torch.quantize_, eager and compiled.

    python3 tools/gpu/decode_bench.py --layers 4 --out bench/results/<gpu>-decode.json

Only --layers decoder layers are built (7B's 32 take ~13 GB in fp16 and as long to time):
per-layer time = (step time - step time of the same model with no layers) / layers, and the
32-layer rate is extrapolated from it. Every mode starts decoding at the same position after
one prefill, so each attends over the same cache length. Modes: eager; compile =
torch.compile(fullgraph, CUDA graphs); apq-compile = apq_torch.compile (one activation
quantization shared by q/k/v and by gate/up), also with CUDA graphs. The JSON is rewritten
after every measurement, so a run stopped at its time limit keeps what it measured.
Checks recorded with the numbers: quantized vs fp16 logits (cosine), compiled vs eager logits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

import apq_torch


@dataclass(frozen=True)
class Shape:
    hidden: int = 4096
    intermediate: int = 11008
    heads: int = 32
    vocab: int = 32000
    layers: int = 4
    max_seq: int = 512
    rope_theta: float = 10000.0


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope(x, cos, sin):
    """Rotary embedding of x [B, T, H, D] over interleaved pairs; cos/sin [T, D/2]."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.heads, self.head_dim = s.heads, s.hidden // s.heads
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, name, nn.Linear(s.hidden, s.hidden, bias=False))
        cache = (1, s.heads, s.max_seq, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(cache), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache), persistent=False)

    def forward(self, x, cos, sin, pos, mask):
        B, T, _ = x.shape
        q, k, v = (p(x).view(B, T, self.heads, self.head_dim) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        self.k_cache[:, :, pos] = k
        self.v_cache[:, :, pos] = v
        y = F.scaled_dot_product_attention(q, self.k_cache, self.v_cache, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden, s.intermediate, bias=False)
        self.up_proj = nn.Linear(s.hidden, s.intermediate, bias=False)
        self.down_proj = nn.Linear(s.intermediate, s.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.input_norm, self.attn = RMSNorm(s.hidden), Attention(s)
        self.post_norm, self.mlp = RMSNorm(s.hidden), MLP(s)

    def forward(self, x, cos, sin, pos, mask):
        x = x + self.attn(self.input_norm(x), cos, sin, pos, mask)
        return x + self.mlp(self.post_norm(x))


class Decoder(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.embed = nn.Embedding(s.vocab, s.hidden)
        self.layers = nn.ModuleList(Layer(s) for _ in range(s.layers))
        self.norm, self.lm_head = RMSNorm(s.hidden), nn.Linear(s.hidden, s.vocab, bias=False)
        half = s.hidden // s.heads // 2
        freqs = s.rope_theta ** (-torch.arange(half, dtype=torch.float32) / half)
        angles = torch.outer(torch.arange(s.max_seq, dtype=torch.float32), freqs)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        causal = torch.tril(torch.ones(s.max_seq, s.max_seq, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, tokens, pos):
        """Logits [B, T, vocab] of tokens [B, T] at positions pos [T]; fills the KV caches."""
        x = self.embed(tokens)
        cos, sin, mask = self.cos[pos], self.sin[pos], self.causal[pos][None, None]
        for layer in self.layers:
            x = layer(x, cos, sin, pos, mask)
        return self.lm_head(self.norm(x))


def build(shape: Shape, config, seed: int, device="cuda", dtype=torch.float16) -> Decoder:
    """Random model made on `device` in `dtype` (the same weights for the same seed; rope tables
    stay fp32), its decoder layers quantized by config (None: left in float)."""
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Decoder(shape).eval()
    finally:
        torch.set_default_dtype(default)
    if config is not None:
        apq_torch.quantize_(model, config, filter_fn=lambda module, name: name.startswith("layers."))
    return model


def layer_bytes(model: Decoder) -> int:
    if not len(model.layers):
        return 0
    state = model.layers[0].state_dict()
    return sum(t.numel() * t.element_size() for t in state.values())


def compiled(model, mode):
    torch._dynamo.reset()  # each model compiles afresh: no recompile limit across variants
    options = {"triton.cudagraphs": True}  # = mode="reduce-overhead"; apq_torch.compile takes options
    if mode == "compile":
        return torch.compile(model, fullgraph=True, options=options)
    return apq_torch.compile(model, fullgraph=True, options=options)


@torch.no_grad()
def time_decode(step, token, start, steps, warmup):
    """Seconds per token of `steps` greedy decode steps from position `start` (after `warmup` steps
    there, which also compile and record the CUDA graph), and the first step's logits."""
    positions = torch.arange(start, start + max(steps, warmup), device=token.device)
    first = None
    for i in range(warmup):
        torch.compiler.cudagraph_mark_step_begin()
        logits = step(token, positions[i:i + 1])
        first = logits.float().clone() if first is None else first
    cuda = token.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
    began = time.perf_counter()
    for i in range(steps):
        torch.compiler.cudagraph_mark_step_begin()
        logits = step(token, positions[i:i + 1])
        token = logits[:, -1].argmax(-1, keepdim=True)
    if not cuda:
        return (time.perf_counter() - began) / steps, first
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3 / steps, first


def cudagraph_skips() -> int:
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


def cosine(a, b):
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=128, help="prefill length")
    parser.add_argument("--steps", type=int, default=64, help="timed decode steps per mode")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--modes", default="eager,compile,apq-compile")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tiny", action="store_true", help="hidden 128, on the CPU: a smoke test of this script")
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    if not args.tiny and not (torch.cuda.is_available() and apq_torch.cuda_built()):
        raise SystemExit("decode_bench.py needs a CUDA device and a CUDA build of apq_torch")
    dims = dict(hidden=128, intermediate=192, heads=4, vocab=64) if args.tiny else {}
    shape = Shape(layers=args.layers, max_seq=args.prompt + max(args.steps, args.warmup) + 1, **dims)
    modes = args.modes.split(",")
    variants = [("fp16", None)] + [(f"W{w}A8 g{args.group_size}",
                                    apq_torch.APQConfig(w_bits=w, a_bits=8, group_size=args.group_size))
                                   for w in (4, 2)]
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "results",
                                   gpu.lower().replace(" ", "-") + "-decode.json")
    report = dict(gpu=gpu, torch=torch.__version__, shape=asdict(shape), prompt=args.prompt, steps=args.steps,
                  head={}, results=[])

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(report, f, indent=1)

    gen = torch.Generator(device=device).manual_seed(1)
    prompt = torch.randint(0, shape.vocab, (1, args.prompt), device=device, generator=gen)
    token = torch.randint(0, shape.vocab, (1, 1), device=device, generator=gen)
    dtype = torch.float32 if args.tiny else torch.float16

    # The part of a step that is not a layer (embedding, final norm, fp16 lm_head).
    head = build(dataclasses.replace(shape, layers=0), None, seed=0, device=device, dtype=dtype)
    for mode in [m for m in modes if m != "apq-compile"]:
        step = head if mode == "eager" else compiled(head, mode)
        report["head"][mode] = time_decode(step, token, args.prompt, args.steps, args.warmup)[0]
    del head
    print("head (embedding + norm + lm_head) s/token:", report["head"], flush=True)

    # eager and compile for every variant first; apq-compile (lowest priority) last
    jobs = [(name, config, [m for m in modes if m != "apq-compile"]) for name, config in variants]
    jobs += [(name, config, ["apq-compile"]) for name, config in variants if config and "apq-compile" in modes]
    fp16_logits, eager_first = None, {}
    for name, config, job_modes in jobs:
        model = build(shape, config, seed=0, device=device, dtype=dtype)
        with torch.no_grad():
            prefill = model(prompt, torch.arange(args.prompt, device=device))[:, -1].float()
        fp16_logits = prefill if config is None else fp16_logits
        for mode in job_modes:
            row = dict(variant=name, mode=mode, layers=shape.layers, layer_weight_bytes=layer_bytes(model),
                       prefill_cosine_vs_fp16=cosine(prefill, fp16_logits))
            try:
                began = time.perf_counter()
                skips = cudagraph_skips()
                step = model if mode == "eager" else compiled(model, mode)
                seconds, first = time_decode(step, token, args.prompt, args.steps, args.warmup)
                if mode != "eager":
                    row["cudagraph_skips"] = cudagraph_skips() - skips  # > 0: ran without CUDA graphs
                head_s = report["head"].get("eager" if mode == "eager" else "compile", 0.0)
                per_layer = (seconds - head_s) / shape.layers
                row.update(wall_s=time.perf_counter() - began, step_s=seconds, tokens_per_s=1 / seconds,
                           per_layer_s=per_layer, layer_weight_gbs=row["layer_weight_bytes"] / per_layer / 1e9,
                           tokens_per_s_32_layers=1 / (head_s + 32 * per_layer),
                           finite=bool(torch.isfinite(first).all()))
                if mode == "eager":
                    eager_first[name] = first
                elif name in eager_first:
                    ref = eager_first[name]
                    row["max_rel_diff_vs_eager"] = ((first - ref).abs().max() / ref.abs().max()).item()
            except Exception as e:  # noqa: BLE001 - one mode failing must not lose the others
                row["error"] = f"{type(e).__name__}: {str(e)[:500]}"
            report["results"].append(row)
            save()
            print(json.dumps(row), flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    print(f"{'variant':>12} {'mode':>12} {'tok/s':>8} {'ms/layer':>9} {'GB/s/layer':>10} {'tok/s@32':>9}")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['variant']:>12} {r['mode']:>12} ERROR {r['error'][:80]}")
        else:
            print(f"{r['variant']:>12} {r['mode']:>12} {r['tokens_per_s']:8.1f} {r['per_layer_s'] * 1e3:9.3f} "
                  f"{r['layer_weight_gbs']:10.0f} {r['tokens_per_s_32_layers']:9.1f}")
    save()
    print(f"wrote {out}")
    bad = [r for r in report["results"] if "error" in r or not r.get("finite", False)
           or not math.isfinite(r.get("prefill_cosine_vs_fp16", float("nan")))]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
