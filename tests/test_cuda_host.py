"""The host side of the CUDA GEMM (csrc/cuda/gemm_plan.cpp: orientation, parameters, launch
geometry and refusals), run without a GPU through the emulator build, which compiles that
file unchanged. A variant that cannot run a call is refused with the reason, never launched
and never swapped for another."""

import pytest
import torch

import apq_torch
import emulated_kernel as emu
from helpers import POISON, random_codes, random_weight

pytestmark = pytest.mark.skipif(emu.cuda_include_dirs() is None, reason="no CUDA toolkit headers")

SM86 = (86, 84, 101376, 2**31 - 1, 65535, 65535)  # 99 KiB of shared memory per block


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return emu.build(str(tmp_path_factory.mktemp("emulator")))


def gemm_operands(M, N, K, bx, bw, gen):
    xp = apq_torch.pack(random_codes(M, K, bx, gen), bx)[0]
    wp = apq_torch.pack(random_codes(N, K, bw, gen), bw)[0]
    return xp, wp, torch.full((M, N), POISON, dtype=torch.int32)


def qmatmul_operands(M, N, K, group_size, gen):
    xq = apq_torch.quantize_pack(torch.randn(M, K, generator=gen), 4, "unsigned", group_size)
    w = random_weight(N, K, 3, "bipolar", group_size, gen)
    return xq, w, torch.full((M, N), float("nan"))


@pytest.mark.parametrize("group_size", [64, 192])
def test_baseline_refuses_groups_its_128_bit_loads_cannot_start(lib, group_size, gen):
    xq, w, out = qmatmul_operands(3, 5, 1000, group_size, gen)
    with pytest.raises(emu.Refused, match=rf"'group_size' must be 0 or a multiple of 128, got {group_size}"):
        emu.run(lib, "baseline", xq[0], w[0], 1000, out, xq[1:], w[1:], group_size)


@pytest.mark.parametrize("N,w_bits", [(5, 3), (7, 1), (1, 1)])
def test_baseline_pads_its_workspace_rows_instead_of_refusing(lib, N, w_bits, gen):
    # w_bits * N is CUTLASS's output leading dimension: not a multiple of 4 here, padded.
    xp, wp, out = gemm_operands(3, N, 700, 2, w_bits, gen)
    assert emu.run(lib, "baseline", xp, wp, 700, out)  # accepted (not emulated: CUTLASS device code)


def test_large_tile_is_refused_where_shared_memory_is_short(lib, gen):
    xp, wp, out = gemm_operands(5, 9, 300, 2, 2, gen)
    with pytest.raises(emu.Refused, match="bytes of shared memory, this GPU gives a block 101376"):
        emu.run(lib, "large,noswap", xp, wp, 300, out, device=SM86)
    emu.run(lib, "skinny,noswap", xp, wp, 300, out, device=SM86)
    assert torch.equal(out, apq_torch.gemm(xp, wp, 300))


def test_a_grid_beyond_the_device_limit_is_refused(lib, gen):
    xp, wp, out = gemm_operands(5, 40, 300, 2, 8, gen)
    tiny_grid = (80, 108, 166912, 2**31 - 1, 2, 65535)  # grid y at most 2 blocks
    with pytest.raises(emu.Refused, match=r"launch grid \(1 x 3 blocks\) exceeds the GPU's limit"):
        emu.run(lib, "large,noswap", xp, wp, 300, out, device=tiny_grid)
    emu.run(lib, "large,swap", xp, wp, 300, out, device=tiny_grid)  # 40 weight rows on x
    assert torch.equal(out, apq_torch.gemm(xp, wp, 300))


def test_arch_without_b1_tensor_cores_is_refused(lib, gen):
    xp, wp, out = gemm_operands(2, 2, 64, 1, 1, gen)
    blackwell = (100, 148, 232448, 2**31 - 1, 65535, 65535)
    with pytest.raises(emu.Refused, match="sm_80 ... sm_90, this GPU is sm_100"):
        emu.run(lib, "skinny,swap", xp, wp, 64, out, device=blackwell)
    with pytest.raises(emu.Refused, match="this GPU is sm_100"):
        emu.run(lib, "baseline", xp, wp, 64, out, device=blackwell)


def test_unknown_variant_is_named(lib, gen):
    xp, wp, out = gemm_operands(2, 2, 64, 1, 1, gen)
    with pytest.raises(emu.Refused, match="unknown variant; one of large,noswap"):
        emu.run(lib, "medium,noswap", xp, wp, 64, out)


@pytest.mark.cuda
def test_autotune_skips_candidates_that_cannot_launch(tmp_path, monkeypatch, gen):
    # N = 1.1M weight rows at 8 bits: large,noswap and skinny,noswap exceed grid y; autotune
    # must time only the swapped variants, not fail on the others.
    monkeypatch.setenv("APQ_AUTOTUNE", "1")
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(tmp_path / "autotune.txt"))
    N, K = 1_100_000, 64
    xp = apq_torch.pack(random_codes(2, K, 2, gen), 2)[0].cuda()
    wp = torch.zeros(8, N, 8, dtype=torch.int32, device="cuda")  # K = 64: two words, the rest padding
    wp[:, :, :2] = torch.randint(-2**31, 2**31 - 1, (8, N, 2), dtype=torch.int32, device="cuda")
    got = apq_torch.gemm(xp, wp, K)
    want = apq_torch.gemm(xp.cpu(), wp.cpu(), K)
    assert torch.equal(got.cpu(), want)
    variant = (tmp_path / "autotune.txt").read_text().split()[1]
    assert variant.endswith(",swap"), variant
