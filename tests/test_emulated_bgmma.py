"""The sm_90a BGMMA kernel's own source (csrc/cuda/bgmma_gemm_kernel.cuh) run on the CPU by
tests/emulator: every thread of every block, wgmma, TMA and mbarriers emulated after the PTX
ISA (tests/emulator/sm90_machine.h), independently of the kernel's fragment and descriptor
code. Half of the TMA copies land only when a thread first waits on their barrier and every
wgmma reads its operands and writes its accumulators only when a wait retires it, so missing
waits, early stage releases and register reuse show up as wrong results. Exact sums are
compared with ==, outputs and shared memory are poisoned first. What only a GPU can tell
(timing, the real TMA/wgmma units, bank conflicts, speed) is left to the op tests' cuda-bgmma,*
cases on an sm_90 GPU."""

import itertools

import pytest
import torch

import apq_torch
import emulated_bgmma as emu
import emulated_kernel
from helpers import POISON, random_activation, random_codes, random_weight

pytestmark = pytest.mark.skipif(emulated_kernel.cuda_include_dirs() is None, reason="no CUDA toolkit headers")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return emu.build(str(tmp_path_factory.mktemp("bgmma_emulator")))


def exact_case(lib, M, N, K, bx, bw, swap, gen, seed=0):
    xp = apq_torch.pack(random_codes(M, K, bx, gen), bx)[0]
    wp = apq_torch.pack(random_codes(N, K, bw, gen), bw)[0]
    out = torch.full((M, N), POISON, dtype=torch.int32)
    emu.run(lib, swap, xp, wp, K, out, seed=seed)
    assert torch.equal(out, apq_torch.gemm(xp, wp, K)), (M, N, K, bx, bw, swap)


def test_gemm_all_64_bit_pairs(lib, gen):
    # K: a partial stage, or (equal bits) two stages and a partial one; swap-AB on every other pair
    for i, (bx, bw) in enumerate(itertools.product(range(1, 9), repeat=2)):
        exact_case(lib, 9, 13, 2333 if bx == bw else 300, bx, bw, i % 2 == 1, gen, seed=i)


@pytest.mark.parametrize("swap", [False, True])
def test_gemm_blocks_ragged_edges_and_stage_ring(lib, swap, gen):
    exact_case(lib, 37, 29, 5000, 3, 5, swap, gen)   # several blocks each way, more stages than the ring
    exact_case(lib, 1, 1, 1, 1, 1, swap, gen)        # M = N = K = 1
    exact_case(lib, 1, 70, 513, 8, 1, swap, gen)     # M = 1
    exact_case(lib, 300, 2, 4097, 2, 2, swap, gen)   # two blocks of 128 rows and a ragged third


@pytest.mark.parametrize("seed", range(2))
def test_gemm_with_every_copy_landing_late_or_early(lib, seed, gen):
    # the same product under different orders of TMA completion
    exact_case(lib, 40, 33, 6000, 2, 3, False, gen, seed=100 + seed)


def fp32_error_bound(xp, x_meta, w, K, group_size):
    """The epilogue adds one fp32 term per K-window (sigma_x sigma_w (U + affine terms)): each
    rounding costs at most 2^-24 of the sum of the terms' magnitudes, which for 8-bit codes is
    far larger than the result they cancel down to."""
    x_codes, w_codes = apq_torch.unpack(xp, K).double(), apq_torch.unpack(w[0], K).double()
    _, x_scale, x_offset = x_meta
    _, _, w_scale, w_offset = w
    step = group_size or K
    magnitude = 0
    for g, k0 in enumerate(range(0, K, step)):
        xs, ws = x_codes[:, k0:k0 + step], w_codes[:, k0:k0 + step]
        zw, zx = w_offset[:, g].double().abs(), x_offset.double().abs()[:, None]
        terms = xs @ ws.T + zw * xs.sum(1)[:, None] + zx * ws.sum(1) + zx * zw * xs.shape[1]
        magnitude = magnitude + (x_scale.double()[:, None] * w_scale[:, g].double()).abs() * terms
    windows = -(-K // step) + K // 32768 + 1
    return (windows + 2) * 2.0**-24 * magnitude


def qmatmul_case(lib, M, N, K, bx, bw, x_fmt, w_fmt, group_size, out_dtype, bias_dtype, swap, gen):
    w = random_weight(N, K, bw, w_fmt, group_size, gen)
    xp, xs, xsc, xo = apq_torch.quantize_pack(random_activation(M, K, torch.float32, gen), bx, x_fmt, group_size)
    bias = None if bias_dtype is None else torch.randn(N, generator=gen).to(bias_dtype)
    out = torch.full((M, N), float("nan"), dtype=out_dtype)
    emu.run(lib, swap, xp, w[0], K, out, (xs, xsc, xo), (w[1], w[2], w[3]), group_size, bias)
    want = apq_torch.qmatmul(xp, xs, xsc, xo, *w, K, group_size, bias, out_dtype).double()
    rounding = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[out_dtype]  # ~2 ulp of the output
    bound = fp32_error_bound(xp, (xs, xsc, xo), w, K, group_size) + rounding * (want.abs() + 1)
    error = (out.double() - want).abs()
    assert bool((error <= bound).all()), (error - bound).max()


@pytest.mark.parametrize("group_size,K", [(0, 1100), (64, 1100), (128, 1100), (256, 1100), (1024, 3500)])
def test_qmatmul_groups_formats_dtypes(lib, group_size, K, gen):
    # groups end inside 256-bit steps (64, 128), on them (256), on stages (1024: the steady
    # loop stops at a window end) or nowhere (0); the last group is short, the last stage partial
    cases = [(4, 3, "unsigned", "bipolar", torch.float32, None, False),
             (2, 4, "signed", "unsigned", torch.float16, torch.float32, True),
             (1, 1, "bipolar", "unsigned", torch.bfloat16, torch.bfloat16, False),
             (8, 2, "unsigned", "signed", torch.float32, torch.float16, True)]
    for bx, bw, x_fmt, w_fmt, out_dtype, bias_dtype, swap in cases:
        qmatmul_case(lib, 5, 7, K, bx, bw, x_fmt, w_fmt, group_size, out_dtype, bias_dtype, swap, gen)


def test_qmatmul_long_K_splits_into_exact_windows(lib, gen):
    # K > 32768 at 8x8 bits: one int32 window would overflow; two windows must not.
    qmatmul_case(lib, 3, 5, 33000, 8, 8, "unsigned", "unsigned", 0, torch.float32, torch.float32, False, gen)
