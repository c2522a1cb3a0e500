"""Bad input gets a clear error that names the argument; nothing crashes."""

import pytest
import torch

import apq_torch
from helpers import random_codes, random_weight

K = 300


@pytest.fixture
def operands(gen):
    w = random_weight(6, K, 3, "bipolar", 64, gen)
    xq = apq_torch.quantize_pack(torch.randn(4, K, generator=gen), 4, "unsigned", 64)
    return xq, w


def call_qmatmul(xq, w, **change):
    args = dict(x_planes=xq[0], x_rowsum=xq[1], x_scale=xq[2], x_offset=xq[3], w_planes=w[0],
                w_rowsum=w[1], w_scale=w[2], w_offset=w[3], K=K, group_size=64, bias=None,
                out_dtype=torch.float32)
    args.update(change)
    return apq_torch.qmatmul(**args)


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_pack_bits_out_of_range(bits, gen):
    with pytest.raises(RuntimeError, match="'bits' must be between 1 and 8"):
        apq_torch.pack(random_codes(2, 10, 1, gen), bits)


def test_pack_rejects_codes_out_of_range_dtype_and_rank(gen):
    with pytest.raises(RuntimeError, match=r"'codes' must hold unsigned 2-bit codes in \[0, 3\]"):
        apq_torch.pack(torch.tensor([[0, 4]]), 2)
    with pytest.raises(RuntimeError, match=r"'codes'.*\[-1, 1\]"):
        apq_torch.pack(torch.tensor([[-1, 1]]), 2)
    with pytest.raises(RuntimeError, match="'codes' must be an integer tensor"):
        apq_torch.pack(torch.zeros(2, 3), 2)
    with pytest.raises(RuntimeError, match="'codes' must be 2-D"):
        apq_torch.pack(torch.zeros(2, 3, 4, dtype=torch.int32), 2)
    with pytest.raises(RuntimeError, match="'group_size' must be 0 .* multiple of 64"):
        apq_torch.pack(torch.zeros(2, 3, dtype=torch.int32), 2, 32)


def test_unpack_checks_planes():
    planes = torch.zeros(2, 3, 8, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="'planes' has 8 words per row but K=300 needs 16"):
        apq_torch.unpack(planes, 300)
    with pytest.raises(RuntimeError, match="'planes' must be int32"):
        apq_torch.unpack(planes.float(), 100)
    with pytest.raises(RuntimeError, match="'planes' must be packed planes of shape"):
        apq_torch.unpack(planes[0], 100)
    with pytest.raises(RuntimeError, match=r"'planes.size\(0\) \(bits\)' must be between 1 and 8"):
        apq_torch.unpack(torch.zeros(9, 3, 8, dtype=torch.int32), 100)
    with pytest.raises(RuntimeError, match="'planes' must be contiguous"):
        apq_torch.unpack(torch.zeros(2, 8, 3, dtype=torch.int32).transpose(1, 2), 100)
    with pytest.raises(RuntimeError, match="'K' must be >= 1"):
        apq_torch.unpack(planes, 0)


def test_quantize_pack_checks():
    with pytest.raises(RuntimeError, match="'x' must be float32, float16 or bfloat16"):
        apq_torch.quantize_pack(torch.zeros(2, 3, dtype=torch.int32), 4, "unsigned")
    with pytest.raises(RuntimeError, match="'x' must be 2-D"):
        apq_torch.quantize_pack(torch.zeros(2, 3, 4), 4, "unsigned")
    with pytest.raises(RuntimeError, match="'x' must be contiguous"):
        apq_torch.quantize_pack(torch.zeros(8, 3).T, 4, "unsigned")
    with pytest.raises(RuntimeError, match="'format' must be 'unsigned', 'signed' or 'bipolar', got 'int4'"):
        apq_torch.quantize_pack(torch.zeros(2, 3), 4, "int4")
    with pytest.raises(RuntimeError, match="'format'='signed' needs at least 2 bits"):
        apq_torch.quantize_pack(torch.zeros(2, 3), 1, "signed")
    with pytest.raises(RuntimeError, match="'bits' must be between 1 and 8"):
        apq_torch.quantize_pack(torch.zeros(2, 3), 12, "signed")


def test_gemm_checks(operands):
    (xq, w) = operands
    x700 = apq_torch.pack(torch.zeros(4, 700, dtype=torch.int32), 4)[0]
    with pytest.raises(RuntimeError, match="'w_planes' has 16 words per row but K=700 needs 24"):
        apq_torch.gemm(x700, w[0], 700)
    with pytest.raises(RuntimeError, match="'x_planes' must be int32"):
        apq_torch.gemm(xq[0].to(torch.int64), w[0], K)
    with pytest.raises(RuntimeError, match="'x_planes' must be contiguous"):
        apq_torch.gemm(xq[0].transpose(0, 1).contiguous().transpose(0, 1), w[0], K)


def test_gemm_refuses_int32_overflow():
    K = 40000  # 255 * 255 * 40000 > 2^31 - 1
    xp = torch.zeros(8, 1, (K + 255) // 256 * 8, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="'K'=40000 is too large for an exact int32 result"):
        apq_torch.gemm(xp, xp, K)
    assert apq_torch.gemm(xp[:4], xp[:4], K).shape == (1, 1)  # 15 * 15 * 40000 fits


def test_qmatmul_checks(operands, gen):
    xq, w = operands
    with pytest.raises(RuntimeError, match=r"'x_rowsum' must have shape \[4, 5\], got \[4, 4\]"):
        call_qmatmul(xq, w, x_rowsum=xq[1][:, :4].contiguous())
    with pytest.raises(RuntimeError, match="'w_scale' must be Float, got Half"):
        call_qmatmul(xq, w, w_scale=w[2].half())
    with pytest.raises(RuntimeError, match=r"'w_offset' must have shape \[6, 5\]"):
        call_qmatmul(xq, w, w_offset=w[3][:3].contiguous())
    with pytest.raises(RuntimeError, match=r"'x_rowsum' must have shape \[4, 3\]"):
        call_qmatmul(xq, w, group_size=128)
    with pytest.raises(RuntimeError, match="'group_size' must be 0 .* multiple of 64"):
        call_qmatmul(xq, w, group_size=100)
    with pytest.raises(RuntimeError, match=r"'bias' must have shape \[6\]"):
        call_qmatmul(xq, w, bias=torch.zeros(5))
    with pytest.raises(RuntimeError, match="'bias' must be a floating tensor"):
        call_qmatmul(xq, w, bias=torch.zeros(6, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="'out_dtype' must be float32, float16 or bfloat16"):
        call_qmatmul(xq, w, out_dtype=torch.float64)
    with pytest.raises(RuntimeError, match="'x_scale' must be contiguous"):
        call_qmatmul(xq, w, x_scale=torch.zeros(8)[::2])


def test_linear_checks(operands, gen):
    _, w = operands
    x = torch.randn(3, K, generator=gen)
    with pytest.raises(RuntimeError, match="'x' must have last dimension K=300, got 299"):
        apq_torch.linear(x[:, :299], *w, K, 64, 4, "unsigned", None)
    with pytest.raises(RuntimeError, match="'a_bits' must be between 1 and 8"):
        apq_torch.linear(x, *w, K, 64, 0, "unsigned", None)
    with pytest.raises(RuntimeError, match="'a_format' must be 'unsigned', 'signed' or 'bipolar'"):
        apq_torch.linear(x, *w, K, 64, 4, "fp4", None)
    with pytest.raises(RuntimeError, match="'x' must be float32, float16 or bfloat16"):
        apq_torch.linear(x.double(), *w, K, 64, 4, "unsigned", None)
    with pytest.raises(RuntimeError, match=r"'w_rowsum' must have shape \[6, 3\]"):
        apq_torch.linear(x, *w, K, 128, 4, "unsigned", None)
