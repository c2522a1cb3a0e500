"""CPU apq.gemm vs fp32 torch.matmul at one shape, same threads, same run.

    python bench/bench_cpu_gemm.py [--size 2048] [--reps 7] [--kernel auto|avx512|portable]

Prints a table of speedups (fp32 time / gemm time) and writes bench/results/cpu-gemm.json.
The bit-serial work grows with b_x * b_w, so the targets below are one budget.
"""

import argparse
import json
import os
import sys

import torch

import apq_torch
from apq_torch.tools.benchmark import cpu_gemm_vs_matmul, cpu_name

TARGETS = {"W1A1": 15.0, "W2A2": 3.5, "W4A4": 0.9}  # foundation issue, ratios to fp32 matmul


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="M = N = K")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--kernel", default="auto", choices=["auto", "avx512", "portable"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu-gemm.json"))
    args = parser.parse_args()

    kernel = apq_torch.cpu_kernel(args.kernel)
    n = args.size
    pairs = [(1, 1), (2, 2), (4, 4), (8, 8)]
    rows, base = cpu_gemm_vs_matmul(n, n, n, pairs, reps=args.reps)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, kernel {kernel}")
    print(f"M=N=K={n}: fp32 torch.matmul {base * 1e3:.1f} ms (median of {args.reps})")
    print(f"{'bits':>6} {'apq.gemm ms':>12} {'speedup':>8} {'target':>7}")
    failed = []
    for r in rows:
        target = TARGETS.get(r["name"])
        mark = "" if target is None else ("ok" if r["speedup"] >= target else "MISSED")
        if mark == "MISSED":
            failed.append(r["name"])
        print(f"{r['name']:>6} {r['seconds'] * 1e3:12.1f} {r['speedup']:7.2f}x "
              f"{'' if target is None else f'>={target}x':>7} {mark}")
        r["target"] = target
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__,
                       kernel=kernel, M=n, N=n, K=n, fp32_matmul_seconds=base, results=rows), f, indent=2)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
