"""CUDA bit-plane GEMM sweep (issue 3), for a lent GPU. Every ratio is against baselines
timed in the same run: cuBLAS fp16 (torch.matmul), int8 torch._int_mm, and the kernel map's
own choice ("table"); bandwidth against a device-to-device copy. Each kernel variant of
tools/gpu/kernel_variants.py (the forced fused tiles, the CUTLASS b1 baseline, ...) is timed at every
point it supports, per channel and with weight groups of 64 and 128.

    python bench/bench_cuda_gemm.py [--quick] [--reps 20] [--out bench/results/<gpu>-gemm.json]
        [--shapes 4096x4096,11008x4096] [--ms 1,16,2048] [--bits 1/1,4/8] [--group-sizes 0,64,128]
        [--variants 'table wide,swap baseline' | all]

Timed op: apq.qmatmul (fp16 out; activations packed once outside the timing, as for a layer
whose input is already quantized; apq.linear adds one quantize_pack). Each repetition first
overwrites a 256 MiB buffer so no operand stays in L2; the median of per-repetition
CUDA-event times is reported. Repetitions shrink for slow points (at most --point-seconds
each) so that a whole sweep fits a time limit; the JSON is rewritten after every point.
  effective TOPS   = 2*M*N*K (the original MACs) / time
  weight GB/s      = bytes of packed weight planes + weight metadata / time
  copy fraction    = weight GB/s / device-to-device copy GB/s (decode target: >= 0.85)
"""

import argparse
import json
import os
import statistics
import sys

import torch

import apq_torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "gpu"))
import kernel_variants  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # (N, K)
MS = [1, 16, 256, 2048]
BIT_PAIRS = [(1, 1), (2, 2), (2, 8), (4, 4), (4, 8), (8, 8)]  # (w_bits, a_bits)
GROUP_SIZES = [0, 64, 128]
AGREEMENT = 1e-2  # fp16 outputs of two variants: same integers, float epilogues in another order


class Timer:
    """Median CUDA-event time of fn over reps repetitions, each after an L2 flush; at most
    about `budget` seconds per call (the warm-up call sets how many repetitions fit)."""

    def __init__(self, reps, budget=float("inf")):
        self.reps, self.budget = reps, budget
        self.flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")

    def once(self, fn):
        self.flush.zero_()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3

    def __call__(self, fn):
        first = self.once(fn)  # warm-up (and autotune, when enabled)
        reps = max(3, min(self.reps, int(self.budget / max(first, 1e-6))))
        return statistics.median(self.once(fn) for _ in range(reps))


def copy_bandwidth(timer, nbytes=1 << 30):
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / timer(lambda: dst.copy_(src))  # read + write


def kernel_choice(M, N, K, a_bits, w_bits, grouped):
    """The kernel map's pick for this shape, where the build exposes it."""
    try:
        return torch.ops.apq._cuda_kernel_choice(M, N, K, a_bits, w_bits, grouped)
    except (AttributeError, RuntimeError):
        return "?"


def float_baselines(timer, M, N, K):
    """cuBLAS fp16 and torch._int_mm times at one (M, N, K)."""
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    w16 = torch.randn(N, K, device="cuda", dtype=torch.float16)
    t_fp16 = timer(lambda: torch.matmul(x, w16.T))
    m8 = max(M, 32)  # torch._int_mm needs M > 16 (and multiples of 8): decode rows are padded to 32
    x8 = torch.randint(-128, 127, (m8, K), device="cuda", dtype=torch.int8)
    w8 = torch.randint(-128, 127, (N, K), device="cuda", dtype=torch.int8)
    t_int8 = timer(lambda: torch._int_mm(x8, w8.T))
    return dict(cublas_fp16_s=t_fp16, int_mm_s=t_int8, int_mm_rows=m8)


def bench_point(timer, M, N, K, w_bits, a_bits, group_size, chosen, capability, copy_gbs, base, device="cuda"):
    """One (shape, bits, group size): every variant in `chosen` that supports it, timed by `timer`."""
    gen = torch.Generator(device=device).manual_seed(0)
    codes = torch.randint(0, 2**w_bits, (N, K), device=device, generator=gen, dtype=torch.int32)
    w_planes, w_rowsum = apq_torch.pack(codes, w_bits, group_size)
    G = w_rowsum.shape[1]
    w_scale = torch.rand(N, G, device=device) * 0.01
    w_offset = torch.full((N, G), -(2**w_bits - 1) / 2, device=device)
    x = torch.randn(M, K, device=device, dtype=torch.float16)
    xq = apq_torch.quantize_pack(x, a_bits, "unsigned", group_size)
    w = (w_planes, w_rowsum, w_scale, w_offset)
    weight_bytes = sum(t.numel() * t.element_size() for t in w)
    times, errors, first = {}, {}, None

    def run():
        return apq_torch.qmatmul(*xq, *w, K, group_size, None, torch.float16)

    for variant in chosen:
        if not variant.supports(group_size, capability):
            continue
        with kernel_variants.forced(variant):
            try:
                # a fast wrong kernel must not become "best": every variant must agree with the first
                y = run().float()
                first = first or (variant.name, y)
                diff = ((y - first[1]).abs().max() / first[1].abs().max().clamp(min=1e-30)).item()
                if not diff <= AGREEMENT:
                    errors[variant.name] = f"differs from {first[0]} by {diff:.1e} (relative to max |y|)"
                    continue
                times[variant.name] = timer(run)
            except RuntimeError as e:
                errors[variant.name] = str(e).splitlines()[0]
    row = dict(M=M, N=N, K=K, w_bits=w_bits, a_bits=a_bits, group_size=group_size,
               kernel=kernel_choice(M, N, K, a_bits, w_bits, group_size > 0), times_s=times, errors=errors, **base)
    if times:
        best_name = min(times, key=times.get)
        best = times[best_name]
        row.update(best=best_name, best_s=best, effective_tops=2 * M * N * K / best / 1e12,
                   weight_gbs=weight_bytes / best / 1e9, copy_fraction=weight_bytes / best / copy_gbs,
                   vs_cublas_fp16=base["cublas_fp16_s"] / best, vs_int_mm=base["int_mm_s"] / best)
        if "table" in times:
            row["table_vs_best"] = times["table"] / best
    return row


def parse_pairs(text, sep, cast=int):
    return [tuple(cast(v) for v in item.split(sep)) for item in text.split(",") if item]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one shape, M in (1, 2048), two bit pairs, g0/g128")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--point-seconds", type=float, default=0.25, help="time budget of one timing")
    parser.add_argument("--shapes", help="NxK list, e.g. 4096x4096,11008x4096")
    parser.add_argument("--ms", help="M list, e.g. 1,16,2048")
    parser.add_argument("--bits", help="w_bits/a_bits list, e.g. 1/1,4/8")
    parser.add_argument("--group-sizes", help="e.g. 0,64,128")
    parser.add_argument("--variants", default="all", help="space-separated names from tools/gpu/kernel_variants.py, or all")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not (torch.cuda.is_available() and apq_torch.cuda_built()):
        raise SystemExit("bench_cuda_gemm.py needs a CUDA device and a CUDA build of apq_torch")

    if args.quick:
        shapes, ms, pairs, groups = SHAPES[:1], [1, 2048], [(1, 1), (4, 8)], [0, 128]
    else:
        shapes, ms, pairs, groups = SHAPES, MS, BIT_PAIRS, GROUP_SIZES
    shapes = parse_pairs(args.shapes, "x") if args.shapes else shapes
    ms = [int(m) for m in args.ms.split(",")] if args.ms else ms
    pairs = parse_pairs(args.bits, "/") if args.bits else pairs
    groups = [int(g) for g in args.group_sizes.split(",")] if args.group_sizes else groups
    chosen = kernel_variants.select(args.variants)
    capability = kernel_variants.capability()

    gpu = torch.cuda.get_device_name()
    timer = Timer(args.reps, args.point_seconds)
    copy_gbs = copy_bandwidth(timer)
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   gpu.lower().replace(" ", "-") + "-gemm.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    print(f"{gpu}, torch {torch.__version__}, device-to-device copy {copy_gbs / 1e9:.0f} GB/s")
    print(f"{'M':>5} {'N':>6} {'K':>6} {'W/A':>5} {'g':>4} {'best':>14} {'us':>9} {'TOPS':>7} {'wGB/s':>7} "
          f"{'%copy':>6} {'/fp16':>6} {'/int8':>6} {'table/best':>10}", flush=True)
    rows = []
    for N, K in shapes:
        for M in ms:
            base = float_baselines(timer, M, N, K)
            for w_bits, a_bits in pairs:
                for group_size in groups:
                    r = bench_point(timer, M, N, K, w_bits, a_bits, group_size, chosen, capability, copy_gbs, base)
                    rows.append(r)
                    if "best" in r:
                        print(f"{M:5d} {N:6d} {K:6d} {w_bits}/{a_bits:<3d} {group_size:4d} {r['best']:>14} "
                              f"{r['best_s'] * 1e6:9.1f} {r['effective_tops']:7.1f} {r['weight_gbs']:7.0f} "
                              f"{r['copy_fraction'] * 100:5.0f}% {r['vs_cublas_fp16']:5.2f}x {r['vs_int_mm']:5.2f}x "
                              f"{r.get('table_vs_best', float('nan')):9.2f}x", flush=True)
                    for name, error in r["errors"].items():
                        print(f"{M:5d} {N:6d} {K:6d} {w_bits}/{a_bits:<3d} {group_size:4d} {name}: {error}", flush=True)
                    with open(out, "w") as f:
                        json.dump(dict(gpu=gpu, torch=torch.__version__, copy_gbs=copy_gbs / 1e9, reps=args.reps,
                                       variants=[v.name for v in chosen],
                                       timed_op="apq.qmatmul fp16 out", results=rows), f, indent=1)
    print(f"wrote {out}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
