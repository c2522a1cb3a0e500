"""The host side of the CUDA GEMM (csrc/cuda/gemm_plan.cpp: orientation, parameters, launch
geometry, split-K and refusals), run without a GPU through the emulator build, which compiles
that file unchanged. A variant that cannot run a call is refused with the reason, never
launched and never swapped for another."""

import pytest
import torch

import apq_torch
import emulated_kernel as emu
from helpers import POISON, random_codes, random_weight

pytestmark = pytest.mark.skipif(emu.cuda_include_dirs() is None, reason="no CUDA toolkit headers")

SM86 = (86, 84, 101376, 2**31 - 1, 65535, 65535)  # 99 KiB of shared memory per block
VARIANTS = [f"{k},{o}{s}" for k in ("wide", "narrow") for o in ("noswap", "swap") for s in ("", ",splitk")]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return emu.build(str(tmp_path_factory.mktemp("emulator")))


def gemm_operands(M, N, K, bx, bw, gen):
    xp = apq_torch.pack(random_codes(M, K, bx, gen), bx)[0]
    wp = apq_torch.pack(random_codes(N, K, bw, gen), bw)[0]
    return xp, wp, torch.full((M, N), POISON, dtype=torch.int32)


def qmatmul_operands(M, N, K, group_size, gen, x_bits=4, w_bits=3):
    xq = apq_torch.quantize_pack(torch.randn(M, K, generator=gen), x_bits, "unsigned", group_size)
    w = random_weight(N, K, w_bits, "bipolar", group_size, gen)
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
    assert emu.run(lib, "baseline", xp, wp, 700, out) == "baseline"  # accepted; CUTLASS's device code is not emulated


def test_every_variant_fits_one_block_per_sm_on_sm80_to_sm90(lib):
    # per-channel calls: the pipeline alone; sm_86 / sm_89 give a block 99 KiB
    for variant in VARIANTS:
        for device in (emu.A100, emu.H100, SM86):
            p = emu.plan(lib, variant, 4096, 4096, 4096, 4, 4, device=device)
            assert p["smem_bytes"] <= device[2], (variant, device)


def test_wide_tile_group_results_refused_where_shared_memory_is_short(lib, gen):
    # K-groups keep fp32 results per output: the wide tile holds them in shared memory
    # (256 threads x 2 x 5 outputs here), the narrow one in registers.
    xq, w, out = qmatmul_operands(5, 9, 300, 64, gen)
    with pytest.raises(emu.Refused, match="108544 bytes of shared memory, this GPU gives a block 101376"):
        emu.run(lib, "wide,noswap", xq[0], w[0], 300, out, xq[1:], w[1:], 64, device=SM86)
    emu.run(lib, "narrow,noswap", xq[0], w[0], 300, out, xq[1:], w[1:], 64, device=SM86)
    want = apq_torch.qmatmul(*xq, *w, 300, 64, None, torch.float32)
    torch.testing.assert_close(out, want, rtol=2e-6, atol=2e-6 * (want.abs().max().item() + 1))


def test_a_grid_beyond_the_device_limit_is_refused(lib, gen):
    xp, wp, out = gemm_operands(5, 40, 300, 2, 8, gen)
    tiny_grid = (80, 108, 166912, 2**31 - 1, 1, 65535)  # grid y: 1 block
    with pytest.raises(emu.Refused, match=r"launch grid \(1 x 2 x 1 blocks\) exceeds the GPU's limit"):
        emu.run(lib, "wide,noswap", xp, wp, 300, out, device=tiny_grid)
    emu.run(lib, "wide,swap", xp, wp, 300, out, device=tiny_grid)  # the 40 weight rows go to x
    assert torch.equal(out, apq_torch.gemm(xp, wp, 300))


def test_split_k_plans_a_wave_for_decode(lib):
    # W4A8 decode of a 4096 x 4096 layer on an H100 (132 SMs): 64 weight tiles of 64 rows;
    # K = 8 k-tiles gives at most 4 splits of 2 k-tiles each.
    p = emu.plan(lib, "narrow,swap,splitk", 1, 4096, 4096, 8, 4, device=emu.H100)
    assert (p["grid_x"], p["grid_y"], p["grid_z"]) == (64, 1, 4)
    assert p["workspace_bytes"] == 4 * 4096 * 4 and p["reduce_blocks"] == 16  # one thread per output
    # enough output tiles: no split, no workspace
    p = emu.plan(lib, "wide,noswap,splitk", 4096, 4096, 4096, 8, 4, device=emu.H100)
    assert p["grid_z"] == 1 and p["workspace_bytes"] == 0 and p["reduce_blocks"] == 0
    # K-groups: splits end on group ends (192 bits: every 3 k-tiles)
    p = emu.plan(lib, "narrow,swap,splitk", 1, 4096, 192 * 40, 8, 4, 192, torch.float16, device=emu.H100)
    assert p["grid_z"] == 5  # 15 k-tiles in granules of 3, at least 2 k-tiles each


def test_bgmma_is_planned_on_sm90_only(lib):
    # 2-bit operands: a thread holds 4 real rows of a (block: 128) and 4 column blocks of b
    # (block: 2 x 32); 3 warpgroups, the whole ring and the output arrays in shared memory
    p = emu.plan(lib, "bgmma,noswap", 300, 70, 4097, 2, 2, device=emu.H100)
    assert (p["grid_x"], p["grid_y"], p["grid_z"], p["threads"]) == (3, 2, 1, 384)
    assert p["smem_bytes"] == 3 * 384 * 128 + 2 * 32 * 256 * 4 + 2 * 3 * 8 + 1024 and p["workspace_bytes"] == 0
    p = emu.plan(lib, "bgmma,swap", 300, 70, 4097, 2, 2, device=emu.H100)  # the 70 weight rows on x
    assert (p["grid_x"], p["grid_y"]) == (1, 5)
    for device in (emu.A100, SM86):
        with pytest.raises(emu.Refused, match=r"wgmma b1 tensor cores of sm_90a \(H100, H200\), this GPU is sm_8"):
            emu.plan(lib, "bgmma,noswap", 300, 70, 4097, 2, 2, device=device)


def test_imma_plan_tiles_real_rows_and_refuses_short_shared_memory(lib):
    # 128 x 128 real rows per block whatever the bits; two 32 KiB code tiles and 3 stages of 8
    # planes of 16 bytes per row (csrc/cuda/imma_gemm.h): 160 KiB, more than sm_86 / sm_89 give
    p = emu.plan(lib, "imma,noswap", 300, 70, 4097, 8, 8, device=emu.A100)
    assert (p["grid_x"], p["grid_y"], p["grid_z"], p["threads"]) == (3, 1, 1, 256)
    assert p["smem_bytes"] == 2 * 32768 + 3 * 8 * 256 * 16 == 163840
    p = emu.plan(lib, "imma,swap", 300, 70, 4097, 1, 1, device=emu.A100)  # the 70 weight rows on a
    assert (p["grid_x"], p["grid_y"]) == (1, 3) and p["smem_bytes"] == 163840
    with pytest.raises(emu.Refused, match="163840 bytes of shared memory, this GPU gives a block 101376"):
        emu.plan(lib, "imma,noswap", 300, 70, 4097, 2, 2, device=SM86)
    # decode, split: 32 weight tiles of 128 rows on an H100; K = 8 plan k-tiles of 512 bits, 2 per split
    p = emu.plan(lib, "imma,swap,splitk", 1, 4096, 4096, 8, 4, device=emu.H100)
    assert (p["grid_x"], p["grid_y"], p["grid_z"]) == (32, 1, 4)


def test_igmma_is_planned_on_sm90_only(lib):
    # the same block as IMMA, 1 KiB more shared memory to align the code tiles for wgmma's descriptors
    p = emu.plan(lib, "igmma,noswap,splitk", 300, 70, 4097, 8, 8, device=emu.H100)
    assert (p["grid_x"], p["grid_y"], p["threads"], p["smem_bytes"]) == (3, 1, 256, 163840 + 1024)
    for device in (emu.A100, SM86):
        with pytest.raises(emu.Refused, match=r"wgmma u8 tensor cores of sm_90a \(H100, H200\), this GPU is sm_8"):
            emu.plan(lib, "igmma,noswap", 300, 70, 4097, 8, 8, device=device)


def test_arch_without_b1_tensor_cores_is_refused(lib, gen):
    xp, wp, out = gemm_operands(2, 2, 64, 1, 1, gen)
    blackwell = (100, 148, 232448, 2**31 - 1, 65535, 65535)
    with pytest.raises(emu.Refused, match="sm_80 ... sm_90, this GPU is sm_100"):
        emu.run(lib, "narrow,swap", xp, wp, 64, out, device=blackwell)
    with pytest.raises(emu.Refused, match="this GPU is sm_100"):
        emu.run(lib, "baseline", xp, wp, 64, out, device=blackwell)


def test_unknown_variant_is_named(lib, gen):
    xp, wp, out = gemm_operands(2, 2, 64, 1, 1, gen)
    with pytest.raises(emu.Refused, match="unknown variant; one of wide,noswap"):
        emu.run(lib, "medium,noswap", xp, wp, 64, out)


@pytest.mark.cuda
def test_autotune_skips_candidates_that_cannot_launch(tmp_path, monkeypatch, gen):
    # N = 2.2M weight rows at 8 bits: the noswap variants exceed grid y (wide: 32 weight rows
    # per block); autotune must time only the swapped ones, not fail on the others.
    monkeypatch.setenv("APQ_AUTOTUNE", "1")
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(tmp_path / "autotune.txt"))
    N, K = 2_200_000, 64
    xp = apq_torch.pack(random_codes(2, K, 2, gen), 2)[0].cuda()
    wp = torch.zeros(8, N, 8, dtype=torch.int32, device="cuda")  # K = 64: two words, the rest padding
    wp[:, :, :2] = torch.randint(-2**31, 2**31 - 1, (8, N, 2), dtype=torch.int32, device="cuda")
    got = apq_torch.gemm(xp, wp, K)
    want = apq_torch.gemm(xp.cpu(), wp.cpu(), K)
    assert torch.equal(got.cpu(), want)
    variant = (tmp_path / "autotune.txt").read_text().split()[1]
    assert ",swap" in variant, variant
