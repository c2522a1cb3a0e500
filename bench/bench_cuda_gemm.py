"""CUDA bit-plane GEMM sweep (issue 3), for a lent GPU. Every ratio is against baselines
timed in the same run: cuBLAS fp16 (torch.matmul), int8 torch._int_mm, and the CUTLASS b1
baseline path (APQ_GEMM_PATH=baseline); bandwidth against a device-to-device copy.

    python bench/bench_cuda_gemm.py [--quick] [--reps 20] [--out bench/results/<gpu>-gemm.json]

Timed op: apq.qmatmul (fp16 out, per-channel weights; activations packed once outside the
timing, as for a layer whose input is already quantized; apq.linear adds one quantize_pack).
Each repetition first overwrites a 256 MiB buffer so no operand stays in L2; the median of
per-repetition CUDA-event times is reported.
  effective TOPS   = 2*M*N*K (the original MACs) / time
  weight GB/s      = bytes of packed weight planes + weight metadata / time
  copy fraction    = weight GB/s / device-to-device copy GB/s (decode target: >= 0.85)
"""

import argparse
import json
import os
import statistics

import torch

import apq_torch

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # (N, K)
MS = [1, 16, 256, 2048]
BIT_PAIRS = [(1, 1), (2, 2), (2, 8), (4, 4), (4, 8), (8, 8)]  # (w_bits, a_bits)


class Timer:
    def __init__(self, reps):
        self.reps = reps
        self.flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")

    def __call__(self, fn):
        fn()  # warm-up (and autotune, when enabled)
        times = []
        for _ in range(self.reps):
            self.flush.zero_()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        return statistics.median(times)


def copy_bandwidth(timer, nbytes=1 << 30):
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / timer(lambda: dst.copy_(src))  # read + write


def with_env(name, value, fn):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return fn()
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def bench_point(timer, M, N, K, w_bits, a_bits, copy_gbs):
    gen = torch.Generator(device="cuda").manual_seed(0)
    codes = torch.randint(0, 2**w_bits, (N, K), device="cuda", generator=gen, dtype=torch.int32)
    w_planes, w_rowsum = apq_torch.pack(codes, w_bits)
    w_scale = torch.rand(N, 1, device="cuda") * 0.01
    w_offset = torch.full((N, 1), -(2**w_bits - 1) / 2, device="cuda")
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    xq = apq_torch.quantize_pack(x, a_bits, "unsigned")
    w = (w_planes, w_rowsum, w_scale, w_offset)

    def fused():
        return apq_torch.qmatmul(*xq, *w, K, 0, None, torch.float16)

    t_fused = timer(fused)
    t_base = with_env("APQ_GEMM_PATH", "baseline", lambda: timer(fused))
    kernel = torch.ops.apq._cuda_kernel_choice(M, N, K, a_bits, w_bits, False)

    w16 = torch.randn(N, K, device="cuda", dtype=torch.float16)
    t_fp16 = timer(lambda: torch.matmul(x, w16.T))
    # torch._int_mm needs M > 16 (and multiples of 8): decode rows are padded to 32.
    m8 = max(M, 32)
    x8 = torch.randint(-128, 127, (m8, K), device="cuda", dtype=torch.int8)
    w8 = torch.randint(-128, 127, (K, N), device="cuda", dtype=torch.int8).t().contiguous().t()
    t_int8 = timer(lambda: torch._int_mm(x8, w8))

    weight_bytes = w_planes.numel() * 4 + (w_rowsum.numel() + w_scale.numel() + w_offset.numel()) * 4
    flops = 2 * M * N * K
    return dict(M=M, N=N, K=K, w_bits=w_bits, a_bits=a_bits, kernel=kernel,
                fused_s=t_fused, baseline_s=t_base, cublas_fp16_s=t_fp16, int_mm_s=t_int8,
                int_mm_rows=m8, effective_tops=flops / t_fused / 1e12,
                weight_gbs=weight_bytes / t_fused / 1e9, copy_fraction=weight_bytes / t_fused / copy_gbs,
                vs_cublas_fp16=t_fp16 / t_fused, vs_int_mm=t_int8 / t_fused, vs_baseline=t_base / t_fused)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one shape, M in (1, 2048), two bit pairs")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not (torch.cuda.is_available() and apq_torch.cuda_built()):
        raise SystemExit("bench_cuda_gemm.py needs a CUDA device and a CUDA build of apq_torch")

    gpu = torch.cuda.get_device_name()
    timer = Timer(args.reps)
    copy_gbs = copy_bandwidth(timer)
    shapes, ms, pairs = (SHAPES[:1], [1, 2048], [(1, 1), (4, 4)]) if args.quick else (SHAPES, MS, BIT_PAIRS)
    print(f"{gpu}, torch {torch.__version__}, device-to-device copy {copy_gbs / 1e9:.0f} GB/s")
    print(f"{'M':>5} {'N':>6} {'K':>6} {'W/A':>5} {'kernel':>14} {'us':>9} {'TOPS':>7} {'wGB/s':>7} "
          f"{'%copy':>6} {'/fp16':>6} {'/int8':>6} {'/base':>6}")
    rows = []
    for N, K in shapes:
        for M in ms:
            for w_bits, a_bits in pairs:
                r = bench_point(timer, M, N, K, w_bits, a_bits, copy_gbs)
                rows.append(r)
                print(f"{M:5d} {N:6d} {K:6d} {w_bits}/{a_bits:<3d} {r['kernel']:>14} {r['fused_s'] * 1e6:9.1f} "
                      f"{r['effective_tops']:7.1f} {r['weight_gbs']:7.0f} {r['copy_fraction'] * 100:5.0f}% "
                      f"{r['vs_cublas_fp16']:5.2f}x {r['vs_int_mm']:5.2f}x {r['vs_baseline']:5.2f}x")
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   gpu.lower().replace(" ", "-") + "-gemm.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(gpu=gpu, torch=torch.__version__, copy_gbs=copy_gbs / 1e9, reps=args.reps,
                       timed_op="apq.qmatmul fp16 out, per-channel", results=rows), f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
