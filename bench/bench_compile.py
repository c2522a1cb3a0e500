"""Eager vs torch.compile latency of a quantized model on the CPU, timed interleaved in one run.

    python bench/bench_compile.py [--model smollm2|tiny] [--tokens 128] [--reps 7]

Compares eager, torch.compile (Inductor) and apq_torch.compile (Inductor plus the pass that
quantizes each shared activation once). Writes bench/results/cpu-compile-<model>.json.
"""

import argparse
import json
import os
import time

import torch

import apq_torch
from apq_torch import APQConfig, quantize_
from apq_torch.tools.benchmark import cpu_name, interleaved_medians


def load(name):
    if name == "smollm2":
        from apq_torch.tools.models import load_smollm2

        return load_smollm2()[0]
    from apq_torch.tools.models import tiny_llama

    return tiny_llama(layers=4, hidden=512, intermediate=1536, vocab=4096, heads=8, kv_heads=4)


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=["smollm2", "tiny"])
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    model = load(args.model)
    config = APQConfig(w_bits=4, a_bits=8, w_format="bipolar", group_size=64)
    quantize_(model, config, filter_fn=lambda m, n: ".layers." in n)
    ids = torch.randint(0, model.config.vocab_size, (1, args.tokens))
    variants = {"eager": model,
                "torch.compile": torch.compile(model, fullgraph=True),
                "apq_torch.compile": apq_torch.compile(model, fullgraph=True)}
    compile_s, max_diff = {}, {}
    eager_logits = model(ids).logits
    for name, fn in variants.items():
        t = time.perf_counter()
        logits = fn(ids).logits  # fullgraph=True: a graph break would raise here
        compile_s[name] = time.perf_counter() - t
        max_diff[name] = (logits - eager_logits).abs().max().item()
    med = interleaved_medians({n: (lambda f=f: f(ids)) for n, f in variants.items()}, args.reps)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, {args.model} {config.label()}, input [1, {args.tokens}]")
    for name, s in med.items():
        print(f"{name:>18}: {s * 1e3:8.1f} ms  {med['eager'] / s:5.2f}x eager  (first call {compile_s[name]:.1f} s, "
              f"max |logit - eager| {max_diff[name]:.2e})")
    os.makedirs("bench/results", exist_ok=True)
    out = f"bench/results/cpu-compile-{args.model}.json"
    with open(out, "w") as f:
        json.dump(dict(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__, model=args.model,
                       config=config.to_dict(), tokens=args.tokens, median_seconds=med, first_call_seconds=compile_s, max_abs_logit_diff_vs_eager=max_diff,
                       speedup_vs_eager={n: med["eager"] / s for n, s in med.items()}), f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
