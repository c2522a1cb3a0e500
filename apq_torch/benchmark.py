"""Timing helpers shared by the demo and bench/: ratios against a baseline timed in the
same run, with interleaved repetitions so that machine noise hits every contender alike."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import torch

import apq_torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def interleaved_medians(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each fn; repetition r times every fn once before r + 1."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def cpu_gemm_vs_matmul(M: int, N: int, K: int, bit_pairs, reps: int = 7, seed: int = 0):
    """Times apq.gemm for each (x bits, w bits) against fp32 torch.matmul of the same shape.

    Returns (rows, baseline_seconds); each row has bits, seconds and speedup (> 1: faster)."""
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(M, K, generator=gen), torch.randn(N, K, generator=gen)
    fns = {"fp32 matmul": lambda: torch.matmul(a, b.T)}
    for bx, bw in bit_pairs:
        ux = torch.randint(0, 2**bx, (M, K), generator=gen)
        uw = torch.randint(0, 2**bw, (N, K), generator=gen)
        xp, wp = apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0]
        fns[f"W{bw}A{bx}"] = lambda xp=xp, wp=wp: apq_torch.gemm(xp, wp, K)
    medians = interleaved_medians(fns, reps)
    base = medians.pop("fp32 matmul")
    rows = [dict(name=name, x_bits=bx, w_bits=bw, seconds=medians[name], speedup=base / medians[name])
            for (bx, bw), name in zip(bit_pairs, medians)]
    return rows, base
