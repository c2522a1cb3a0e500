"""The fused CUDA kernel's own source (csrc/cuda/bitplane_gemm_kernel.cuh) and the host code
that launches it (csrc/cuda/gemm_plan.cpp), run on the CPU by tests/emulator: every thread
of every block, with ldmatrix from the PTX definition and the b1 MMA from CuTe's fragment
layouts. It checks the kernel's addressing, plane stacking, K-windows, shift-add recovery,
epilogue, swap-AB and grid bit for bit without a GPU. It cannot see timing hazards of the
cp.async pipeline (copies complete at once here); tests/test_cuda_gemm.py covers those on a
device."""

import itertools

import pytest
import torch

import apq_torch
import emulated_kernel as emu
from helpers import POISON, random_activation, random_codes, random_weight

VARIANTS = ["large,noswap", "large,swap", "skinny,noswap", "skinny,swap"]

pytestmark = pytest.mark.skipif(emu.cuda_include_dirs() is None, reason="no CUDA toolkit headers")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return emu.build(str(tmp_path_factory.mktemp("emulator")))


def exact_case(lib, M, N, K, bx, bw, variant, gen):
    xp = apq_torch.pack(random_codes(M, K, bx, gen), bx)[0]
    wp = apq_torch.pack(random_codes(N, K, bw, gen), bw)[0]
    out = torch.full((M, N), POISON, dtype=torch.int32)
    emu.run(lib, variant, xp, wp, K, out)
    assert torch.equal(out, apq_torch.gemm(xp, wp, K)), (M, N, K, bx, bw, variant)


def test_gemm_all_64_bit_pairs(lib, gen):
    for i, (bx, bw) in enumerate(itertools.product(range(1, 9), repeat=2)):
        exact_case(lib, 9, 13, 300, bx, bw, VARIANTS[i % len(VARIANTS)], gen)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gemm_many_blocks_and_pipeline_wraparound(lib, variant, gen):
    # several blocks along both sides, ragged edges, more k-tiles than stages, 3-bit stacking
    exact_case(lib, 37, 29, 4000, 3, 5, variant, gen)
    exact_case(lib, 1, 1, 1, 1, 1, variant, gen)
    exact_case(lib, 2, 70, 513, 8, 1, variant, gen)


def qmatmul_case(lib, M, N, K, bx, bw, x_fmt, w_fmt, group_size, out_dtype, bias_dtype, variant, gen):
    w = random_weight(N, K, bw, w_fmt, group_size, gen)
    xp, xs, xsc, xo = apq_torch.quantize_pack(random_activation(M, K, torch.float32, gen), bx, x_fmt, group_size)
    bias = None if bias_dtype is None else torch.randn(N, generator=gen).to(bias_dtype)
    out = torch.full((M, N), float("nan"), dtype=out_dtype)
    emu.run(lib, variant, xp, w[0], K, out, (xs, xsc, xo), (w[1], w[2], w[3]), group_size, bias)
    want = apq_torch.qmatmul(xp, xs, xsc, xo, *w, K, group_size, bias, out_dtype)
    scale = want.double().abs().max().item() + 1
    tol = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[out_dtype]
    torch.testing.assert_close(out.double(), want.double(), rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("group_size", [0, 64, 128, 192, 256, 512])
def test_qmatmul_groups_formats_dtypes(lib, group_size, gen):
    fmts = ["unsigned", "signed", "bipolar"]
    dtypes = [torch.float32, torch.float16, torch.bfloat16]
    for i, (x_fmt, w_fmt) in enumerate(itertools.product(fmts, fmts)):
        qmatmul_case(lib, 5, 7, 1000, 4, 3, x_fmt, w_fmt, group_size, dtypes[i % 3],
                     [None, torch.float32, torch.float16, torch.bfloat16][i % 4], VARIANTS[i % len(VARIANTS)], gen)


@pytest.mark.parametrize("variant", ["skinny,swap", "large,noswap"])
def test_qmatmul_long_K_splits_into_exact_windows(lib, variant, gen):
    # K > 32768 at 8x8 bits: one int32 window would overflow; two windows must not.
    qmatmul_case(lib, 3, 5, 40000, 8, 8, "unsigned", "unsigned", 0, torch.float32, torch.float32, variant, gen)
