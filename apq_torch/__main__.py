"""python -m apq_torch demo: the exact bit-plane GEMM against the reference, and its speed
against torch.matmul on this machine's CPU."""

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="apq-torch", description="apq_torch command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="exact GEMM vs reference and its CPU speed vs torch.matmul")
    p_demo.add_argument("--size", type=int, default=2048, help="M = N = K of the speed test")
    p_demo.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
