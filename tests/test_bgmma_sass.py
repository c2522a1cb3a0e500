"""The sm_90a BGMMA kernel in the built extension, read with cuobjdump (no GPU needed): the b1
warpgroup MMA with AND-popc, TMA and mbarriers in its sm_90a code, nothing in its sm_80 code
(the launch refuses other GPUs), no local memory, one block per SM, and a steady-state loop
that keeps wgmma groups in flight (ptxas serializes them when it cannot)."""

import os
import sys

import pytest

from test_build import built_archs, cuobjdump_sections, expect_cuda_build

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import sass_mix  # noqa: E402

pytestmark = pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")

KERNEL = "bgmma_gemm_kernel"
THREADS = 384  # BgmmaTile::kThreads


@pytest.fixture(scope="module")
def sass():
    """{arch: [(address, opcode, text)]} of the BGMMA kernel, one cuobjdump for the module."""
    import apq_torch

    functions = sass_mix.parse_functions(sass_mix.cuobjdump("-sass", apq_torch._C.__file__))
    kernels = {arch: [i for name, i in fs.items() if KERNEL in name] for arch, fs in functions.items()}
    assert all(len(k) == 1 for k in kernels.values()), {arch: len(k) for arch, k in kernels.items()}
    return {arch: k[0] for arch, k in kernels.items()}


def test_bgmma_runs_the_b1_warpgroup_mma_on_sm90a_and_is_empty_elsewhere(sass):
    for arch in built_archs():
        body = "\n".join(text for _, _, text in sass[arch])
        if arch == "sm_90a":
            assert "BGMMA.64x64x256.AND.POPC" in body
            assert "XOR.POPC" not in body
            for instruction in ("UTMALDG.3D", "SYNCS.PHASECHK", "SYNCS.ARRIVE", "USETMAXREG", "LDSM"):
                assert instruction in body, instruction
        else:
            assert "GMMA" not in body and "LDSM" not in body and "EXIT" in body, arch


def test_bgmma_fits_one_block_per_sm_without_local_memory():
    usage = cuobjdump_sections("-res-usage")
    for arch in built_archs():
        (line,) = [body for name, body in usage.get(arch, {}).items() if KERNEL in name]
        assert " LOCAL:0 " in line and " STACK:0 " in line, (arch, line)
        registers = int(line.split("REG:")[1].split()[0])
        assert registers * THREADS <= 65536, (arch, line)  # setmaxnreg moves 232 to the consumers


@pytest.mark.skipif("sm_90a" not in built_archs(), reason="sm_90a not built")
def test_bgmma_steady_state_keeps_wgmma_groups_in_flight(sass):
    loops = sass_mix.bgmma_steady_loops(sass["sm_90a"])
    assert [loop["mma"] for loop in loops] == [16, 12], loops  # 4 steps of 4 (or 3) m64 tiles
    lo, hi = (int(a, 16) for a in loops[0]["loop"])
    waits = [text for a, op, text in sass["sm_90a"] if lo <= a <= hi and op.startswith("WARPGROUP.DEPBAR")]
    assert waits and all(t.endswith("0x1") for t in waits), waits  # one group stays in flight
    assert loops[0]["non_mma_per_mma"] <= 5, loops[0]
