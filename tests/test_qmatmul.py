"""qmatmul and linear against an fp64 product of the dequantized operands."""

import pytest
import torch

import apq_torch
from apq_torch import reference as ref
from helpers import random_activation, random_weight

FORMATS = ["unsigned", "signed", "bipolar"]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
       torch.float16: dict(rtol=1e-3, atol=1e-3)}


def fp64_product(xp, xs, xo, wp, ws, wo, K, group_size, bias):
    x = ref.dequantize(xp, K, xs, xo, group_size)
    w = ref.dequantize(wp, K, ws, wo, group_size)
    y = x @ w.T
    return y + bias.double() if bias is not None else y


@pytest.mark.parametrize("w_fmt", FORMATS)
@pytest.mark.parametrize("a_fmt", FORMATS)
@pytest.mark.parametrize("group_size", [0, 64, 128, 192, 256, 512])
def test_qmatmul_matches_fp64_dequantized_product(w_fmt, a_fmt, group_size, cpu_kernel, gen):
    for (M, N, K, bx, bw) in [(1, 7, 1000, 8, 4), (17, 33, 257, 4, 2), (64, 1, 600, 3, 3), (5, 9, 1024, 2, 8)]:
        w = random_weight(N, K, bw, w_fmt, group_size, gen)
        x = random_activation(M, K, torch.float32, gen)
        xp, xs, xsc, xo = apq_torch.quantize_pack(x, bx, a_fmt, group_size)
        bias = torch.randn(N, generator=gen)
        want = fp64_product(xp, xsc, xo, w[0], w[2], w[3], K, group_size, bias)
        for out_dtype in (torch.float32, torch.bfloat16, torch.float16):
            y = apq_torch.qmatmul(xp, xs, xsc, xo, *w, K, group_size, bias, out_dtype)
            assert y.dtype == out_dtype and y.shape == (M, N)
            scale = want.abs().max().item() + 1
            tol = TOL[out_dtype]
            torch.testing.assert_close(y.double(), want.to(out_dtype).double(),
                                       rtol=tol["rtol"], atol=tol["atol"] * scale)


def test_qmatmul_without_bias_and_matches_reference_module(gen):
    K, group_size = 384, 128
    w = random_weight(11, K, 3, "bipolar", group_size, gen)
    x = random_activation(6, K, torch.float32, gen)
    xq = apq_torch.quantize_pack(x, 5, "unsigned", group_size)
    y = apq_torch.qmatmul(*xq, *w, K, group_size, None, torch.float32)
    want = ref.qmatmul(*xq, *w, K, group_size, None, torch.float64)
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5)


def test_qmatmul_accumulates_exactly_where_fp32_would_not(gen):
    """8x8-bit codes with large offsets: the affine terms cancel; the result must not."""
    K = 4096
    codes_w = torch.randint(0, 256, (3, K), generator=gen)
    wp, wr = apq_torch.pack(codes_w, 8)
    ws, wo = torch.full((3, 1), 1e-3), torch.full((3, 1), -127.5)
    x = torch.full((2, K), 5.0) + torch.randn(2, K, generator=gen) * 1e-2
    xq = apq_torch.quantize_pack(x, 8, "unsigned")
    y = apq_torch.qmatmul(*xq, wp, wr, ws, wo, K, 0, None, torch.float32)
    want = fp64_product(xq[0], xq[2], xq[3], wp, ws, wo, K, 0, None)
    torch.testing.assert_close(y.double(), want, rtol=1e-6, atol=1e-6 * want.abs().max().item())


@pytest.mark.parametrize("a_fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group_size", [0, 64])
def test_linear_equals_quantize_pack_then_qmatmul(a_fmt, dtype, group_size, cpu_kernel, gen):
    K, N, a_bits = 320, 24, 4
    w = random_weight(N, K, 2, "bipolar", group_size, gen)
    x = (torch.randn(2, 3, K, generator=gen)).to(dtype)
    bias = torch.randn(N, generator=gen).to(dtype)
    y = apq_torch.linear(x, *w, K, group_size, a_bits, a_fmt, bias)
    assert y.shape == (2, 3, N) and y.dtype == dtype
    want = ref.linear(x, *w, K, group_size, a_bits, a_fmt, bias)
    tol = TOL[dtype]
    scale = want.abs().max().item() + 1
    torch.testing.assert_close(y.double(), want.double(), rtol=tol["rtol"], atol=tol["atol"] * scale)
    # and it is the fp64 product of the dequantized operands
    xq = apq_torch.quantize_pack(x.reshape(-1, K), a_bits, a_fmt, group_size)
    exact = fp64_product(xq[0], xq[2], xq[3], w[0], w[2], w[3], K, group_size, bias).view(2, 3, N)
    torch.testing.assert_close(y.double(), exact.to(dtype).double(), rtol=tol["rtol"], atol=tol["atol"] * scale)


def test_linear_accepts_non_contiguous_input(gen):
    K, N = 256, 8
    w = random_weight(N, K, 4, "signed", 0, gen)
    x = torch.randn(K, 5, generator=gen).T  # [5, K], not contiguous
    y = apq_torch.linear(x, *w, K, 0, 8, "unsigned", None)
    torch.testing.assert_close(y, apq_torch.linear(x.contiguous(), *w, K, 0, 8, "unsigned", None), rtol=0, atol=0)


def test_linear_quantization_error_is_small_at_8_bits(gen):
    """A sanity bound on the whole path: W8A8 bipolar/unsigned vs the float matmul."""
    K, N = 512, 16
    wf = torch.randn(N, K, generator=gen)
    scale = wf.abs().amax(1, keepdim=True) / 255 * 2
    codes = ((wf / scale) + 127.5).round().clamp(0, 255).long()
    wp, wr = apq_torch.pack(codes, 8)
    ws, wo = scale, torch.full((N, 1), -127.5)
    x = torch.randn(4, K, generator=gen)
    y = apq_torch.linear(x, wp, wr, ws, wo, K, 0, 8, "unsigned", None)
    exact = x @ wf.T
    assert ((y - exact).norm() / exact.norm()).item() < 0.02
