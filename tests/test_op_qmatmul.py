"""qmatmul and linear against the fp64 product of the dequantized operands, within the error
bound of each device's arithmetic (helpers.qmatmul_error_bound), on every device and kernel."""

import copy

import pytest
import torch

import apq_torch
from apq_torch import reference as ref
from backends import cuda_variant_skip_reason
from helpers import (FLOAT_DTYPES, FORMATS, Fp64Product, assert_within, poison_allocator, qmatmul_error_bound,
                     random_activation, random_weight)

CASES = [(1, 7, 1000, 8, 4), (17, 33, 257, 4, 2), (64, 1, 600, 3, 3), (5, 9, 1024, 2, 8), (1, 300, 1000, 8, 4),
         (33, 67, 2048, 4, 2), (300, 5, 777, 3, 8)]
CASE_IDS = ["M{}xN{}xK{}-A{}W{}".format(*c) for c in CASES]
GROUP_SIZES = [0, 64, 128, 192, 256, 512]
# (out dtype, bias dtype or None)
OUTPUTS = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float16, None),
           (torch.float32, torch.float16), (torch.float16, torch.float64)]


def skip_unsupported(backend, group_size):
    reason = backend.device == "cuda" and cuda_variant_skip_reason(backend.kernel, group_size)
    if reason:
        pytest.skip(reason)


def check_qmatmul(backend, M, N, K, bx, bw, x_fmt, w_fmt, group_size, outputs, gen):
    """qmatmul of random operands for each (out dtype, bias dtype) of ``outputs``."""
    w = random_weight(N, K, bw, w_fmt, group_size, gen)
    xq = apq_torch.quantize_pack(random_activation(M, K, torch.float32, gen), bx, x_fmt, group_size)
    product = Fp64Product(xq, w, K, group_size)
    for out_dtype, bias_dtype in outputs:
        bias = None if bias_dtype is None else torch.randn(N, generator=gen).to(bias_dtype)
        poison_allocator(backend.device)
        y = apq_torch.qmatmul(*backend.to(*xq), *backend.to(*w), K, group_size, backend.to(bias), out_dtype)
        assert y.dtype == out_dtype and y.shape == (M, N) and y.device.type == backend.device
        want = product
        if bias is not None:  # the kernels read a float64 bias as fp32 (docs/ops.md)
            want = copy.copy(product)
            want.y, want.mag = product.plus_bias(bias.float() if bias.dtype == torch.float64 else bias)
        bound = qmatmul_error_bound(want, out_dtype, backend.device)
        assert_within(y, want.y, bound, f"qmatmul to {out_dtype}, bias {bias_dtype}")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("w_fmt", FORMATS)
@pytest.mark.parametrize("x_fmt", FORMATS)
def test_qmatmul_matches_fp64_dequantized_product(x_fmt, w_fmt, group_size, case, gemm_backend, gen):
    skip_unsupported(gemm_backend, group_size)
    check_qmatmul(gemm_backend, *case, x_fmt, w_fmt, group_size, OUTPUTS, gen)


@pytest.mark.parametrize("group_size", [0, 1024])
def test_qmatmul_long_k_stays_within_bound(group_size, gemm_backend, gen):
    # 8x8 bits over K = 40000: one int32 window would overflow; the sums must not.
    check_qmatmul(gemm_backend, 3, 70, 40000, 8, 8, "unsigned", "unsigned", group_size, [(torch.float32, None)], gen)


def test_qmatmul_accumulates_exactly_where_fp32_would_not(backend, gen):
    """8x8-bit codes with large offsets: the affine terms cancel; the result must not."""
    K = 4096
    wp, wr = apq_torch.pack(torch.randint(0, 256, (3, K), generator=gen), 8)
    w = (wp, wr, torch.full((3, 1), 1e-3), torch.full((3, 1), -127.5))
    x = torch.full((2, K), 5.0) + torch.randn(2, K, generator=gen) * 1e-2
    xq = apq_torch.quantize_pack(x, 8, "unsigned")
    y = apq_torch.qmatmul(*backend.to(*xq), *backend.to(*w), K, 0, None, torch.float32)
    want = Fp64Product(xq, w, K, 0)
    assert_within(y, want.y, qmatmul_error_bound(want, torch.float32, backend.device))
    # the cancellation is real: the affine terms are two orders of magnitude above the result,
    # so one fp32 rounding of them would be ~100x the bound
    assert (want.terms > 100 * want.y.abs()).all()


def test_qmatmul_matches_reference_module(backend, gen):
    K, group_size = 384, 128
    w = random_weight(11, K, 3, "bipolar", group_size, gen)
    xq = apq_torch.quantize_pack(random_activation(6, K, torch.float32, gen), 5, "unsigned", group_size)
    y = apq_torch.qmatmul(*backend.to(*xq), *backend.to(*w), K, group_size, None, torch.float32)
    want = Fp64Product(xq, w, K, group_size)
    assert torch.equal(ref.qmatmul(*xq, *w, K, group_size, None, torch.float64), want.y)
    assert_within(y, want.y, qmatmul_error_bound(want, torch.float32, backend.device))


@pytest.mark.parametrize("group_size", [0, 64])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("a_fmt", FORMATS)
def test_linear_is_quantize_pack_then_qmatmul(a_fmt, dtype, group_size, gemm_backend, gen):
    skip_unsupported(gemm_backend, group_size)
    K, N, a_bits = 320, 24, 4
    w = random_weight(N, K, 2, "bipolar", group_size, gen)
    x = torch.randn(2, 3, K, generator=gen).to(dtype)
    bias = torch.randn(N, generator=gen).to(dtype)
    y = apq_torch.linear(backend_x := gemm_backend.to(x), *gemm_backend.to(*w), K, group_size, a_bits, a_fmt,
                         gemm_backend.to(bias))
    assert y.shape == (2, 3, N) and y.dtype == dtype and y.device == backend_x.device
    # quantize_pack is bit-exact on every device (test_op_pack.py): the same operands
    xq = apq_torch.quantize_pack(x.reshape(-1, K), a_bits, a_fmt, group_size)
    want = Fp64Product(xq, w, K, group_size, bias)
    bound = qmatmul_error_bound(want, dtype, gemm_backend.device)
    assert_within(y.reshape(-1, N), want.y, bound, "linear")


@pytest.mark.parametrize("a_clip", [0.9, 0.5])
def test_linear_with_clip_is_clipped_quantize_pack_then_qmatmul(a_clip, gemm_backend, gen):
    skip_unsupported(gemm_backend, 64)
    K, N, a_bits = 320, 24, 4
    w = random_weight(N, K, 3, "signed", 64, gen)
    x = torch.randn(7, K, generator=gen)
    y = apq_torch.linear(gemm_backend.to(x), *gemm_backend.to(*w), K, 64, a_bits, "unsigned", None, None, a_clip)
    xq = apq_torch.quantize_pack(x, a_bits, "unsigned", 64, None, a_clip)
    assert not torch.equal(xq[2], apq_torch.quantize_pack(x, a_bits, "unsigned", 64)[2])
    want = Fp64Product(xq, w, K, 64, None)
    assert_within(y, want.y, qmatmul_error_bound(want, torch.float32, gemm_backend.device), "linear")


def test_linear_accepts_non_contiguous_input(backend, gen):
    K, N = 256, 8
    w = backend.to(*random_weight(N, K, 4, "signed", 0, gen))
    x = backend.to(torch.randn(K, 5, generator=gen)).T  # [5, K], not contiguous
    assert not x.is_contiguous()
    assert torch.equal(apq_torch.linear(x, *w, K, 0, 8, "unsigned", None),
                       apq_torch.linear(x.contiguous(), *w, K, 0, 8, "unsigned", None))


def test_linear_quantization_error_is_small_at_8_bits(backend, gen):
    """A sanity bound on the whole path: W8A8 bipolar/unsigned vs the float matmul."""
    K, N = 512, 16
    wf = torch.randn(N, K, generator=gen)
    scale = wf.abs().amax(1, keepdim=True) / 255 * 2
    codes = ((wf / scale) + 127.5).round().clamp(0, 255).long()
    wp, wr = apq_torch.pack(codes, 8)
    x = torch.randn(4, K, generator=gen)
    y = apq_torch.linear(*backend.to(x, wp, wr, scale, torch.full((N, 1), -127.5)), K, 0, 8, "unsigned", None)
    exact = x @ wf.T
    assert ((y.cpu() - exact).norm() / exact.norm()).item() < 0.02
