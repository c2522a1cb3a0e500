"""The CUDA objects are built wherever nvcc and a CUDA torch exist, GPU or not."""

import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess

import pytest
import torch

import apq_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def nvcc_available():
    return shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


def find_cuobjdump():
    candidates = [shutil.which("cuobjdump")]
    import nvidia

    for base in nvidia.__path__:
        candidates += glob.glob(os.path.join(base, "cu*", "bin", "cuobjdump"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def expect_cuda_build():
    return nvcc_available() and torch.version.cuda is not None and \
        os.environ.get("APQ_BUILD_CUDA", "auto") not in ("0", "false", "no")


def test_cuda_build_matches_the_toolchain():
    assert apq_torch.cuda_built() == expect_cuda_build()


@pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")
def test_cuda_objects_hold_both_default_archs():
    tool = find_cuobjdump()
    assert tool, "cuobjdump not found (pip install nvidia-cuda-cuobjdump)"
    listing = subprocess.run([tool, "--list-elf", apq_torch._C.__file__], capture_output=True,
                             text=True, check=True).stdout
    archs = os.environ.get("APQ_CUDA_ARCHS", "80;90a").replace(",", ";").split(";")
    for arch in archs:
        assert f"sm_{arch.strip().replace('sm_', '')}" in listing, listing


# the fused b1 kernel (wide, narrow), CUTLASS's b1 GEMM, and the integer-MMA kernel (mma.sync:
# ImmaSync; wgmma: ImmaWarpgroup, an empty body off sm_90a)
GEMM_KERNELS = ("bitplane_gemm_kernel", "OpAndPopc", "imma_gemm_kernel")


@functools.lru_cache(maxsize=None)  # one dump of the binary (tens of seconds) for all the tests reading it
def cuobjdump_sections(flag):
    """{arch: {function: text}} from `cuobjdump <flag>` of the extension (SASS or resource usage)."""
    tool = find_cuobjdump()
    assert tool, "cuobjdump not found (pip install nvidia-cuda-cuobjdump)"
    env = dict(os.environ)
    # cuobjdump -sass calls nvdisasm; triton (a torch dependency) ships one next to its ptxas.
    import triton

    env["PATH"] = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin") + os.pathsep + env["PATH"]
    text = subprocess.run([tool, flag, apq_torch._C.__file__], capture_output=True, text=True, check=True,
                          env=env).stdout
    sections, arch, function = {}, None, None
    for line in text.splitlines():
        words = line.split()
        if line.startswith("arch = "):
            arch, function = line.split("=")[1].strip(), None
        elif words[:1] == ["Function"]:
            function = words[-1].rstrip(":")
            sections.setdefault(arch, {})[function] = []
        elif function is not None:
            sections[arch][function].append(line)
    return {a: {f: "\n".join(lines) + "\n" for f, lines in fs.items()} for a, fs in sections.items()}


def gemm_functions(functions):
    return {name: body for name, body in functions.items() if any(k in name for k in GEMM_KERNELS)}


def built_archs():
    return ["sm_" + a.strip().replace("sm_", "") for a in os.environ.get("APQ_CUDA_ARCHS", "80;90a").replace(",", ";").split(";") if a.strip()]


@pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")
def test_gemm_kernels_use_and_popc_tensor_cores_on_every_arch():
    sass = cuobjdump_sections("-sass")
    for arch in built_archs():
        kernels = gemm_functions(sass.get(arch, {}))
        # the wide and narrow fused tiles, the CUTLASS baseline, IMMA and IGMMA
        assert len(kernels) == 5, (arch, list(kernels))
        for name, body in kernels.items():
            if "ImmaWarpgroup" in name:  # wgmma m64n128k32 .u8.u8 on sm_90a, nothing elsewhere
                assert ("IGMMA.64x128x32.U8.U8" in body) == (arch == "sm_90a") and "IMMA." not in body, (arch, name)
                continue
            if "imma_gemm_kernel" in name:  # u8 codes: mma.sync m16n8k32 .u8.u8
                assert "IMMA.16832.U8.U8" in body and "BMMA" not in body, (arch, name)
                continue
            assert "BMMA.168256.AND.POPC" in body, (arch, name)
            assert "XOR.POPC" not in body, (arch, name)


def threads_of(kernel):
    """Threads per block of a GEMM kernel, from its template arguments."""
    m = re.search(r"RegisterTileILi(\d+)ELi(\d+)E", kernel)
    return 32 * int(m.group(1)) * int(m.group(2)) if m else 256  # CUTLASS's 128 x 256 tile, IMMA: 8 warps


@pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")
def test_gemm_kernels_do_not_spill_and_fit_one_block_per_sm():
    # ptxas' "-v" report, read back from the binary: LOCAL and STACK are spill/stack memory;
    # a block's registers (allocated 8 per thread at a time) must fit the SM's 64K.
    usage = cuobjdump_sections("-res-usage")
    for arch in built_archs():
        kernels = gemm_functions(usage.get(arch, {}))
        assert len(kernels) == 5, (arch, list(kernels))
        for name, line in kernels.items():
            assert " LOCAL:0 " in line and " STACK:0 " in line, (arch, name, line)
            registers = int(re.search(r"REG:(\d+)", line).group(1))
            assert registers <= 255 and -(-registers // 8) * 8 * threads_of(name) <= 65536, (arch, name, line)


@functools.lru_cache(maxsize=None)
def steady_state_mix():
    """bench/sass_mix.py's static count of each GEMM kernel's steady-state k-tile
    (bench/results/sass-mix.md), from the built extension."""
    spec = importlib.util.spec_from_file_location("sass_mix", os.path.join(ROOT, "bench", "sass_mix.py"))
    sass_mix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sass_mix)
    return sass_mix.analyse(sass_mix.cuobjdump("-sass", apq_torch._C.__file__), "")


@pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")
def test_fused_main_loops_issue_at_most_two_other_instructions_per_mma():
    report = steady_state_mix()
    fused = [e for e in report if "bitplane_gemm_kernel" in e["function"]]
    assert len(fused) == 2 * len(built_archs()), [e["kernel"] for e in report]
    for e in fused:
        assert e["mma"] >= 32 and e["by_kind"]["ldgsts"] > 0, e
        assert e["non_mma_per_mma"] <= 2.0, (e["arch"], e["kernel"], e["by_kind"])


@pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")
def test_imma_main_loop_expands_and_multiplies_one_k_tile():
    # one steady-state 128-bit k-tile: a warp's 4 steps of 4 x 4 u8 MMAs (IGMMA: 4 wgmma
    # m64n128k32, the same work), the copies and the expansion of one row (stores of the codes).
    # The bound keeps the expansion's cost near today's (5.7 other instructions per m16n8k32 of
    # work, IGMMA 6.3): an m16n8k32 u8 MMA leaves a sub-partition 7 issue slots on sm_80.
    # (bench/results/sass-mix.md)
    report = steady_state_mix()
    imma = [e for e in report if "ImmaSync" in e["function"]]
    igmma = [e for e in report if "ImmaWarpgroup" in e["function"]]
    assert len(imma) == len(built_archs()), [e["kernel"] for e in report]
    assert len(igmma) == ("sm_90a" in built_archs()), [e["kernel"] for e in report]
    for e in imma:
        assert e["mma"] == 64 and e["by_kind"]["ldgsts"] > 0 and e["by_kind"]["ldsm"] == 24, e
        assert e["non_mma_per_mma"] <= 6.0, (e["arch"], e["by_kind"])
    for e in igmma:
        assert e["mma"] == 4 and e["by_kind"]["ldgsts"] > 0 and e["by_kind"].get("ldsm", 0) == 0, e
        assert e["non_mma"] / 64 <= 6.5, (e["arch"], e["by_kind"])


@pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")
def test_hadamard_kernels_round_every_product_and_sum():
    # apq::hadamard matches the CPU and the reference to the bit only without contracted FMAs
    sass = cuobjdump_sections("-sass")
    for arch in built_archs():
        kernels = {n: body for n, body in sass.get(arch, {}).items() if "hadamard_kernel" in n}
        assert len(kernels) == 4, (arch, list(kernels))  # fp32, fp64, fp16, bf16 inputs
        for name, body in kernels.items():
            assert "FADD" in body and "FMUL" in body and "FFMA" not in body, (arch, name)
