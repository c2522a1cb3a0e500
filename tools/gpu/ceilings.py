"""Ceilings of the GPU, measured in one run: the tensor-core probe (tc_ceiling.cu: mma.sync and
wgmma, b1 AND-popc / s8 / f16, instructions per clock per SM and TOPS), device-to-device copy
bandwidth, cuBLAS fp16 (torch.matmul) and torch._int_mm, large and at the GEMM sweep's shapes.

    python3 tools/gpu/ceilings.py --arch 90a --out bench/results/<gpu>-ceilings.json

The probe is compiled here for --arch (wgmma probes on 90a only) and its SASS is checked for
the instructions each probe is meant to issue; `--compile-only DIR` stops after that (no GPU).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCE = os.path.join(HERE, "tc_ceiling.cu")

# SASS each probe must contain: mma.sync always, wgmma on sm_90a.
SASS_MMA_SYNC = ("BMMA.168256.AND.POPC", "IMMA.16832.S8.S8", "HMMA.16816.F32")
SASS_WGMMA = ("BGMMA.64x128x256.AND.POPC", "IGMMA.64x128x32.S8.S8", "HGMMA.64x128x16.F32")


def has_wgmma(arch: str) -> bool:
    return arch == "90a"


def compile_probe(arch: str, out_dir: str) -> str:
    binary = os.path.join(out_dir, "tc_ceiling")
    cmd = ["nvcc", "-O3", "-std=c++17", "-gencode", f"arch=compute_{arch},code=sm_{arch}", SOURCE, "-o", binary]
    if has_wgmma(arch):
        cmd.insert(-3, "-DWITH_WGMMA")
    subprocess.run(cmd, check=True)
    return binary


def find_tool(name: str):
    """`name` on the PATH, else from the pip wheels that carry it (nvidia-cuda-cuobjdump; triton's nvdisasm)."""
    found = shutil.which(name)
    if found:
        return found
    patterns = []
    try:
        import nvidia

        patterns += [os.path.join(base, "cu*", "bin", name) for base in nvidia.__path__]
    except ImportError:
        pass
    try:
        import triton

        patterns.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name))
    except ImportError:
        pass
    return next((c for p in patterns for c in sorted(glob.glob(p)) if os.access(c, os.X_OK)), None)


def sass_counts(binary: str, arch: str) -> dict:
    """{instruction: count in the binary's SASS} for every instruction the probes must issue."""
    cuobjdump, nvdisasm = find_tool("cuobjdump"), find_tool("nvdisasm")
    if not (cuobjdump and nvdisasm):
        raise RuntimeError("cuobjdump and nvdisasm are needed to read SASS (nvidia-cuda-cuobjdump, triton)")
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    sass = subprocess.run([cuobjdump, "-sass", binary], capture_output=True, text=True, check=True, env=env).stdout
    expected = SASS_MMA_SYNC + (SASS_WGMMA if has_wgmma(arch) else ())
    return {instr: sass.count(instr) for instr in expected}


def run_probe(binary: str, timeout: float) -> list:
    proc = subprocess.run([binary], capture_output=True, text=True, timeout=timeout)
    rows = []
    for line in proc.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append({"unparsed": line})
    if proc.returncode:
        rows.append({"error": f"tc_ceiling exited {proc.returncode}: {proc.stderr[-2000:]}"})
    return rows


def torch_ceilings(reps: int) -> dict:
    import torch

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from bench_cuda_gemm import MS, SHAPES, Timer, copy_bandwidth

    timer = Timer(reps)
    out = dict(copy_gbs=copy_bandwidth(timer) / 1e9, matmul=[])
    shapes = [(8192, 8192, 8192)] + [(M, N, K) for N, K in SHAPES for M in MS]
    for M, N, K in shapes:
        x = torch.randn(M, K, device="cuda", dtype=torch.float16)
        w = torch.randn(N, K, device="cuda", dtype=torch.float16)
        t_fp16 = timer(lambda: torch.matmul(x, w.T))
        m8 = max(M, 32)  # torch._int_mm needs M > 16
        x8 = torch.randint(-128, 127, (m8, K), device="cuda", dtype=torch.int8)
        w8 = torch.randint(-128, 127, (N, K), device="cuda", dtype=torch.int8)
        t_int8 = timer(lambda: torch._int_mm(x8, w8.T))
        out["matmul"].append(dict(M=M, N=N, K=K, cublas_fp16_s=t_fp16, cublas_fp16_tflops=2 * M * N * K / t_fp16 / 1e12,
                                  int_mm_rows=m8, int_mm_s=t_int8, int_mm_tops=2 * m8 * N * K / t_int8 / 1e12))
        print(f"M={M:5d} N={N:6d} K={K:6d}  fp16 {out['matmul'][-1]['cublas_fp16_tflops']:7.1f} TFLOP/s  "
              f"_int_mm {out['matmul'][-1]['int_mm_tops']:7.1f} TOPS", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="nvcc target, e.g. 90a or 80")
    parser.add_argument("--out", help="JSON result file")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build", "gpu-probe"))
    parser.add_argument("--compile-only", action="store_true", help="compile and check SASS, no GPU")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--probe-timeout", type=float, default=120)
    args = parser.parse_args(argv)
    os.makedirs(args.build_dir, exist_ok=True)
    binary = compile_probe(args.arch, args.build_dir)
    try:
        result = dict(arch=args.arch, sass=sass_counts(binary, args.arch))
        missing = [instr for instr, n in result["sass"].items() if n == 0]
    except (RuntimeError, subprocess.CalledProcessError) as e:  # no disassembler: still run the probe
        result, missing = dict(arch=args.arch, sass={"error": str(e)}), ["(SASS not read)"]
    print("SASS:", json.dumps(result["sass"]), flush=True)
    if not args.compile_only:
        result["probe"] = run_probe(binary, args.probe_timeout)
        for row in result["probe"]:
            print(json.dumps(row), flush=True)
        try:
            result["torch"] = torch_ceilings(args.reps)
        except Exception as e:  # noqa: BLE001 - the probe's numbers are still worth writing
            result["torch"] = {"error": f"{type(e).__name__}: {e}"}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    failed = missing or "error" in result.get("torch", {}) or any("error" in row for row in result.get("probe", []))
    if missing:
        print("missing from the SASS:", missing)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
