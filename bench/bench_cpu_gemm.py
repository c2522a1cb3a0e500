"""CPU apq.gemm and apq.linear vs fp32 torch.matmul, same threads, same run (interleaved medians).

    python bench/bench_cpu_gemm.py [--size 2048] [--reps 7] [--threads N] [--clock wall|cpu]
                                   [--kernel auto|avx512|vnni|vnni-decode|portable]

1. M = N = K = --size: apq.gemm per bit pair (the kernel map's choice, or --kernel) against
   fp32 torch.matmul, with the issue's targets.
2. SmolLM2-135M's linear shapes at M = 1 (decode) and M = 256 (prefill): apq.linear (activation
   quantization included) at W4A8 and W8A8, per channel and g64, against fp32 torch.matmul
   x @ W.T. "hot" reuses one weight, as a microbenchmark does; "30 layers" cycles through 30
   weights of the shape, as a 30-layer model does, so fp32 weights come from memory.

--clock cpu times this thread's CPU time (needs --threads 1): on a shared machine it leaves out
the time other processes hold the core, which wall-clock medians of 2 threads cannot.
Prints tables and writes bench/results/cpu-gemm.json (cpu-gemm-<N>threads[-cpu].json otherwise).
"""

import argparse
import json
import os
import sys
import time

import torch

import apq_torch
from apq_torch.tools.benchmark import cpu_gemm_vs_matmul, cpu_name, interleaved_medians

TARGETS = {"W1A1": 20.0, "W2A2": 6.0, "W4A8": 2.0, "W8A8": 2.0}  # issue 14, ratios to fp32 matmul
PAIRS = [(1, 1), (2, 2), (4, 4), (8, 4), (8, 8)]  # (x bits, w bits)
SMOLLM2_SHAPES = {"q/o": (576, 576), "k/v": (192, 576), "gate/up": (1536, 576), "down": (576, 1536)}  # (N, K)
LAYERS = 30


def square_gemm(n, reps, clock):
    rows, base = cpu_gemm_vs_matmul(n, n, n, PAIRS, reps=reps, clock=clock)
    print(f"M=N=K={n}: fp32 torch.matmul {base * 1e3:.1f} ms (median of {reps})")
    print(f"{'bits':>6} {'kernel':>12} {'apq.gemm ms':>12} {'speedup':>8} {'target':>7}")
    missed = []
    for r in rows:
        r["kernel"] = torch.ops.apq._cpu_kernel_choice(n, r["x_bits"], r["w_bits"], 0)
        r["target"] = TARGETS.get(r["name"])
        mark = "" if r["target"] is None else ("met" if r["speedup"] >= r["target"] else "MISSED")
        if mark == "MISSED":
            missed.append(r["name"])
        target = "" if r["target"] is None else f">={r['target']}x"
        print(f"{r['name']:>6} {r['kernel']:>12} {r['seconds'] * 1e3:12.2f} {r['speedup']:7.2f}x {target:>7} {mark}")
    return dict(M=n, N=n, K=n, fp32_matmul_seconds=base, results=rows), missed


def quantized_weight(N, K, bits, group_size, gen):
    G = 1 if group_size == 0 else -(-K // group_size)
    planes, rowsum = apq_torch.pack(torch.randint(0, 2**bits, (N, K), generator=gen), bits, group_size)
    return planes, rowsum, torch.rand(N, G, generator=gen) * 0.01, torch.full((N, G), -(2**bits - 1) / 2)


def smollm2_linears(reps, gen, clock):
    variants = [(4, 0), (4, 64), (8, 0), (8, 64)]  # (w bits, group size), 8-bit activations
    rows = []
    print(f"\nSmolLM2-135M linears, apq.linear W?A8 vs fp32 x @ W.T ({LAYERS} layers: distinct weights per call)")
    print(f"{'shape':>8} {'M':>4} {'weights':>9} {'fp32 ms':>8} " + " ".join(f"{f'W{b}A8 g{g}':>16}" for b, g in variants))
    for name, (N, K) in SMOLLM2_SHAPES.items():
        for M in (1, 256):
            x = torch.randn(M, K, generator=gen)
            for layers in (1, LAYERS):
                fp32 = [torch.randn(N, K, generator=gen) for _ in range(layers)]
                quant = {v: [quantized_weight(N, K, v[0], v[1], gen) for _ in range(layers)] for v in variants}
                step = {"i": 0}

                def cycle(fn, step=step, layers=layers):
                    def call():
                        step["i"] = (step["i"] + 1) % layers
                        fn(step["i"])
                    return call

                fns = {"fp32": cycle(lambda i: torch.matmul(x, fp32[i].T))}
                for (bits, gs), ws in quant.items():
                    fns[(bits, gs)] = cycle(lambda i, ws=ws, gs=gs: apq_torch.linear(x, *ws[i], K, gs, 8, "unsigned", None))
                calls = layers * max(1, reps // layers) if layers > 1 else reps * (20 if M == 1 else 1)
                med = interleaved_medians(fns, calls, clock=clock)
                base = med["fp32"]
                cells = []
                for (bits, gs) in variants:
                    kernel = torch.ops.apq._cpu_kernel_choice(M, 8, bits, gs)
                    rows.append(dict(shape=name, M=M, N=N, K=K, layers=layers, w_bits=bits, x_bits=8, group_size=gs,
                                     kernel=kernel, seconds=med[(bits, gs)], fp32_seconds=base,
                                     speedup=base / med[(bits, gs)]))
                    cells.append(f"{base / med[(bits, gs)]:5.2f}x {kernel[:10]:>10}")
                label = "hot" if layers == 1 else f"{layers} layers"
                print(f"{name:>8} {M:4d} {label:>9} {base * 1e3:8.3f} " + " ".join(f"{c:>16}" for c in cells))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="M = N = K of the square gemm")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--kernel", default="auto", choices=["auto", "avx512", "vnni", "vnni-decode", "portable"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument("--out", default=None, help="JSON file (default: bench/results/cpu-gemm[-<N>threads][-cpu].json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        parser.error("--clock cpu measures one thread: add --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.out is None:
        name = "cpu-gemm" + (f"-{args.threads}threads" if args.threads else "") + ("-cpu" if args.clock == "cpu" else "")
        args.out = os.path.join(os.path.dirname(__file__), "results", name + ".json")

    kernel = apq_torch.cpu_kernel(args.kernel)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU kernel {kernel}, "
          f"{args.clock} clock")
    square, missed = square_gemm(args.size, args.reps, clock)
    linears = smollm2_linears(args.reps, torch.Generator().manual_seed(0), clock)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__, kernel=kernel, clock=args.clock,
                       square_gemm=square, smollm2_linear=linears), f, indent=1)
    print(f"wrote {args.out}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
