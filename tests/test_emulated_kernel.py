"""The register-tile kernels' own source (csrc/cuda/bitplane_gemm_kernel.cuh: wide, narrow;
csrc/cuda/imma_gemm_kernel.cuh: imma, and igmma, its wgmma form) and the host code that
launches them (csrc/cuda/gemm_plan.cpp), run on the CPU by tests/emulator: every thread of every
block, with ldmatrix from the PTX definition, the b1 MMA from CuTe's fragment layouts, the u8
mma.sync from the PTX ISA's (checked against CuTe's), the u8 wgmma from the ISA's descriptor
and fragment layouts, executed only when a wait_group retires it (tests/emulator/sm90_machine.h),
and cp.async landing only at its wait_group. It checks the kernel's plane slots,
copy plan, pipeline, K-windows, register recovery, epilogue, swap-AB and split-K bit for bit
without a GPU: gemm with `==` against the CPU op, qmatmul within fp32/fp16/bf16 rounding of
it. What it cannot see: the timing of real hardware (bank conflicts, the memory order of
blocks running at once); the op tests' cuda-* cases cover those on a device."""

import itertools

import pytest
import torch

import apq_torch
import emulated_kernel as emu
from helpers import POISON, random_activation, random_codes, random_weight

KERNELS = ["wide", "narrow", "imma", "igmma"]
VARIANTS = [f"{k},{s}" for k in KERNELS for s in ("noswap", "swap", "noswap,splitk", "swap,splitk")]
# A device with many SMs: split-K then splits as much as the shape allows.
MANY_SMS = (90, 4096, 232448, 2**31 - 1, 65535, 65535)

pytestmark = pytest.mark.skipif(emu.cuda_include_dirs() is None, reason="no CUDA toolkit headers")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return emu.build(str(tmp_path_factory.mktemp("emulator")))


def device_for(variant):
    return MANY_SMS if variant.endswith("splitk") else emu.H100


def exact_case(lib, M, N, K, bx, bw, variant, gen, seed=0):
    xp = apq_torch.pack(random_codes(M, K, bx, gen), bx)[0]
    wp = apq_torch.pack(random_codes(N, K, bw, gen), bw)[0]
    out = torch.full((M, N), POISON, dtype=torch.int32)
    splits = emu.run(lib, variant, xp, wp, K, out, device=device_for(variant), block_order_seed=seed)
    assert torch.equal(out, apq_torch.gemm(xp, wp, K)), (M, N, K, bx, bw, variant)
    return splits


@pytest.mark.parametrize("kernel", KERNELS)
def test_gemm_all_64_bit_pairs(lib, kernel, gen):
    # every pair on each kernel, the orientation and split alternating; K = about 1.5 k-tiles
    # (512 bits; imma, igmma: 128)
    variants = [v for v in VARIANTS if v.startswith(kernel)]
    K = 200 if "imma" in kernel else 700
    for i, (bx, bw) in enumerate(itertools.product(range(1, 9), repeat=2)):
        exact_case(lib, 9, 13, K, bx, bw, variants[i % len(variants)], gen)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gemm_many_blocks_and_pipeline_wraparound(lib, variant, gen):
    # several blocks along both sides, ragged edges, more k-tiles than stages, idle slots
    # (3 and 5 bits leave 2 of 8 and 1 of 16 slots unused), a half k-tile at the end
    splits = exact_case(lib, 37, 29, 3300, 3, 5, variant, gen, seed=7)
    assert (splits > 1) == variant.endswith("splitk")
    exact_case(lib, 1, 1, 1, 1, 1, variant, gen)
    exact_case(lib, 2, 70, 513, 8, 1, variant, gen)


def qmatmul_case(lib, M, N, K, bx, bw, x_fmt, w_fmt, group_size, out_dtype, bias_dtype, variant, gen, seed=0):
    w = random_weight(N, K, bw, w_fmt, group_size, gen)
    xp, xs, xsc, xo = apq_torch.quantize_pack(random_activation(M, K, torch.float32, gen), bx, x_fmt, group_size)
    bias = None if bias_dtype is None else torch.randn(N, generator=gen).to(bias_dtype)
    out = torch.full((M, N), float("nan"), dtype=out_dtype)
    splits = emu.run(lib, variant, xp, w[0], K, out, (xs, xsc, xo), (w[1], w[2], w[3]), group_size, bias,
                     device=device_for(variant), block_order_seed=seed)
    want = apq_torch.qmatmul(xp, xs, xsc, xo, *w, K, group_size, bias, out_dtype)
    scale = want.double().abs().max().item() + 1
    tol = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[out_dtype]
    torch.testing.assert_close(out.double(), want.double(), rtol=tol, atol=tol * scale)
    return out, splits


@pytest.mark.parametrize("group_size", [0, 64, 128, 192, 256, 512])
def test_qmatmul_groups_formats_dtypes(lib, group_size, gen):
    fmts = ["unsigned", "signed", "bipolar"]
    dtypes = [torch.float32, torch.float16, torch.bfloat16]
    for i, (x_fmt, w_fmt) in enumerate(itertools.product(fmts, fmts)):
        qmatmul_case(lib, 5, 7, 700, 4, 3, x_fmt, w_fmt, group_size, dtypes[i % 3],
                     [None, torch.float32, torch.float16, torch.bfloat16][i % 4], VARIANTS[i % len(VARIANTS)], gen)


@pytest.mark.parametrize("variant", ["wide,noswap", "narrow,swap,splitk", "imma,noswap,splitk", "igmma,swap"])
@pytest.mark.parametrize("group_size", [64, 128, 256])
def test_qmatmul_groups_all_bit_pairs_sampled(lib, variant, group_size, gen):
    # group cuts inside k-tiles and k-steps, with the widest and the idlest slot layouts
    for bx, bw in [(1, 1), (8, 8), (3, 7), (5, 2), (6, 6)]:
        qmatmul_case(lib, 11, 6, 900, bx, bw, "unsigned", "bipolar", group_size, torch.float32, None, variant, gen)


@pytest.mark.parametrize("variant", ["narrow,swap", "narrow,swap,splitk", "imma,swap,splitk"])
def test_qmatmul_long_K_splits_into_exact_windows(lib, variant, gen):
    # K > 32768 at 8x8 bits: one int32 window would overflow; windows of 32768 bits must not
    # (and split-K splits between them).
    _, splits = qmatmul_case(lib, 3, 5, 40000, 8, 8, "unsigned", "unsigned", 0, torch.float32, torch.float32,
                             variant, gen)
    assert splits == (2 if variant.endswith("splitk") else 1)


@pytest.mark.parametrize("variant", ["narrow,swap,splitk", "wide,noswap,splitk", "imma,swap,splitk"])
def test_split_k_result_does_not_depend_on_block_order(lib, variant, gen):
    # the partials are added in split order by a second kernel, whichever block ends last
    args = (lib, 6, 40, 2900, 4, 3, "unsigned", "bipolar", 128, torch.float32, None, variant)
    first, splits = qmatmul_case(*args, torch.Generator().manual_seed(5), seed=1)
    again, _ = qmatmul_case(*args, torch.Generator().manual_seed(5), seed=2)
    assert splits > 1 and torch.equal(first, again)


@pytest.mark.parametrize("variant", ["imma,noswap", "imma,swap,splitk", "igmma,noswap", "igmma,swap,splitk"])
def test_imma_blocks_along_both_operands(lib, variant, gen):
    # 128 x 128 real rows per block: 2 x 2 blocks with ragged edges (a 9-row last block of x),
    # 8 x 8 and 1 x 1 bits (no stacking: the block is the same for every bit width)
    exact_case(lib, 137, 130, 300, 8, 8, variant, gen, seed=3)
    exact_case(lib, 129, 257, 45, 1, 1, variant, gen)


def test_emulated_cp_async_lands_only_at_its_wait(lib):
    # the emulator's own contract: a read before cp.async.wait_group sees garbage
    assert lib.apq_emulator_cp_async_probe() == 0
