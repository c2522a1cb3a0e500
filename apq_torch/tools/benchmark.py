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


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list]:
    """What each fn returns, ``reps`` times; repetition r runs every fn once before r + 1."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    results = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            results[name].append(fn())
    return results


def interleaved_medians(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds of each fn, timed with :func:`interleaved`. ``clock`` time.thread_time
    counts only this thread's CPU time (one torch thread on a shared machine)."""
    def timed(fn):
        start = clock()
        fn()
        return clock() - start

    samples = interleaved({name: (lambda fn=fn: timed(fn)) for name, fn in fns.items()}, reps, warmup)
    return {name: statistics.median(s) for name, s in samples.items()}


def cpu_gemm_vs_matmul(M: int, N: int, K: int, bit_pairs, reps: int = 7, seed: int = 0,
                       clock: Callable[[], float] = time.perf_counter):
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
    medians = interleaved_medians(fns, reps, clock=clock)
    base = medians.pop("fp32 matmul")
    rows = [dict(name=name, x_bits=bx, w_bits=bw, seconds=medians[name], speedup=base / medians[name])
            for (bx, bw), name in zip(bit_pairs, medians)]
    return rows, base


def gemm_sweep(shapes, bit_pairs, reps: int = 5, seed: int = 0, progress: bool = True):
    """apq.gemm over (M, N, K) shapes and (x bits, w bits) pairs on the CPU, each shape against
    fp32 torch.matmul and int8 torch._int_mm timed interleaved with it. One row per point."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for M, N, K in tqdm(shapes, desc="gemm sweep", disable=not progress, leave=False):
        a, b = torch.randn(M, K, generator=gen), torch.randn(N, K, generator=gen)
        a8 = torch.randint(-128, 128, (M, K), generator=gen, dtype=torch.int8)
        b8 = torch.randint(-128, 128, (K, N), generator=gen, dtype=torch.int8)
        fns = {"fp32": lambda: torch.matmul(a, b.T), "int8": lambda: torch._int_mm(a8, b8)}
        for bx, bw in bit_pairs:
            xp = apq_torch.pack(torch.randint(0, 2**bx, (M, K), generator=gen), bx)[0]
            wp = apq_torch.pack(torch.randint(0, 2**bw, (N, K), generator=gen), bw)[0]
            fns[(bx, bw)] = lambda xp=xp, wp=wp: apq_torch.gemm(xp, wp, K)
        med = interleaved_medians(fns, reps)
        for bx, bw in bit_pairs:
            s = med[(bx, bw)]
            rows.append(dict(M=M, N=N, K=K, x_bits=bx, w_bits=bw, seconds=s, fp32_seconds=med["fp32"],
                             int8_seconds=med["int8"], speedup_vs_fp32=med["fp32"] / s,
                             speedup_vs_int8=med["int8"] / s, effective_tops=2 * M * N * K / s / 1e12))
    return rows


def write_sweep(rows, prefix: str) -> list[str]:
    """rows as <prefix>.json, <prefix>.csv and a <prefix>.png plot of speedup vs bits per shape."""
    import csv
    import json
    import os

    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    meta = dict(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__,
                kernel=apq_torch.cpu_kernel())
    with open(prefix + ".json", "w") as f:
        json.dump(dict(meta, rows=rows), f, indent=1)
    with open(prefix + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for shape in sorted({(r["M"], r["N"], r["K"]) for r in rows}):
        pts = [r for r in rows if (r["M"], r["N"], r["K"]) == shape]
        ax.plot([f"W{r['w_bits']}A{r['x_bits']}" for r in pts], [r["speedup_vs_fp32"] for r in pts],
                marker="o", label="M=%d N=%d K=%d" % shape)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speedup vs fp32 torch.matmul (same run)")
    ax.set_title(f"apq.gemm on {meta['cpu']}, {meta['threads']} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(prefix + ".png", dpi=120)
    plt.close(fig)
    return [prefix + ext for ext in (".json", ".csv", ".png")]
