"""Bad input gets a clear error that names the argument, on every device; nothing crashes.
The Python-side rules (apq_torch.ops.layout) accept and refuse what the kernels do."""

import pytest
import torch

import apq_torch
from apq_torch.ops import layout
from helpers import random_codes, random_weight

K = 300


@pytest.fixture
def operands(gen, backend):
    w = backend.to(*random_weight(6, K, 3, "bipolar", 64, gen))
    xq = apq_torch.quantize_pack(backend.to(torch.randn(4, K, generator=gen)), 4, "unsigned", 64)
    return xq, w


def call_qmatmul(xq, w, **change):
    args = dict(x_planes=xq[0], x_rowsum=xq[1], x_scale=xq[2], x_offset=xq[3], w_planes=w[0],
                w_rowsum=w[1], w_scale=w[2], w_offset=w[3], K=K, group_size=64, bias=None,
                out_dtype=torch.float32)
    args.update(change)
    return apq_torch.qmatmul(**args)


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_pack_bits_out_of_range(bits, backend, gen):
    with pytest.raises(RuntimeError, match="'bits' must be between 1 and 8"):
        apq_torch.pack(backend.to(random_codes(2, 10, 1, gen)), bits)


def test_pack_rejects_codes_out_of_range_dtype_and_rank(backend):
    t = lambda *a, **k: backend.to(torch.tensor(*a, **k))
    with pytest.raises(RuntimeError, match=r"'codes' must hold unsigned 2-bit codes in \[0, 3\]"):
        apq_torch.pack(t([[0, 4]]), 2)
    with pytest.raises(RuntimeError, match=r"'codes'.*\[-1, 1\]"):
        apq_torch.pack(t([[-1, 1]]), 2)
    with pytest.raises(RuntimeError, match="'codes' must be an integer tensor"):
        apq_torch.pack(backend.to(torch.zeros(2, 3)), 2)
    with pytest.raises(RuntimeError, match="'codes' must be 2-D"):
        apq_torch.pack(backend.to(torch.zeros(2, 3, 4, dtype=torch.int32)), 2)
    with pytest.raises(RuntimeError, match="'group_size' must be 0 .* multiple of 64"):
        apq_torch.pack(backend.to(torch.zeros(2, 3, dtype=torch.int32)), 2, 32)


def test_unpack_checks_planes(backend):
    planes = backend.to(torch.zeros(2, 3, 8, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="'planes' has 8 words per row but K=300 needs 16"):
        apq_torch.unpack(planes, 300)
    with pytest.raises(RuntimeError, match="'planes' must be int32"):
        apq_torch.unpack(planes.float(), 100)
    with pytest.raises(RuntimeError, match="'planes' must be packed planes of shape"):
        apq_torch.unpack(planes[0], 100)
    with pytest.raises(RuntimeError, match=r"'planes.size\(0\) \(bits\)' must be between 1 and 8"):
        apq_torch.unpack(backend.to(torch.zeros(9, 3, 8, dtype=torch.int32)), 100)
    with pytest.raises(RuntimeError, match="'planes' must be contiguous"):
        apq_torch.unpack(backend.to(torch.zeros(2, 8, 3, dtype=torch.int32)).transpose(1, 2), 100)
    with pytest.raises(RuntimeError, match="'K' must be >= 1"):
        apq_torch.unpack(planes, 0)


def test_quantize_pack_checks(backend):
    z = lambda *shape, dtype=torch.float32: backend.to(torch.zeros(*shape, dtype=dtype))
    with pytest.raises(RuntimeError, match="'x' must be float32, float16 or bfloat16"):
        apq_torch.quantize_pack(z(2, 3, dtype=torch.int32), 4, "unsigned")
    with pytest.raises(RuntimeError, match="'x' must be 2-D"):
        apq_torch.quantize_pack(z(2, 3, 4), 4, "unsigned")
    with pytest.raises(RuntimeError, match="'x' must be contiguous"):
        apq_torch.quantize_pack(z(8, 3).T, 4, "unsigned")
    with pytest.raises(RuntimeError, match="'format' must be 'unsigned', 'signed' or 'bipolar', got 'int4'"):
        apq_torch.quantize_pack(z(2, 3), 4, "int4")
    with pytest.raises(RuntimeError, match="'format'='signed' needs at least 2 bits"):
        apq_torch.quantize_pack(z(2, 3), 1, "signed")
    with pytest.raises(RuntimeError, match="'bits' must be between 1 and 8"):
        apq_torch.quantize_pack(z(2, 3), 12, "signed")
    for clip in (0.0, -0.5, 1.5, float("nan"), float("inf")):
        with pytest.raises(RuntimeError, match=r"'clip' must be a clipping ratio in \(0, 1\]"):
            apq_torch.quantize_pack(z(2, 3), 4, "unsigned", 0, None, clip)


def test_gemm_checks(operands, backend):
    (xq, w) = operands
    x700 = apq_torch.pack(backend.to(torch.zeros(4, 700, dtype=torch.int32)), 4)[0]
    with pytest.raises(RuntimeError, match="'w_planes' has 16 words per row but K=700 needs 24"):
        apq_torch.gemm(x700, w[0], 700)
    with pytest.raises(RuntimeError, match="'x_planes' must be int32"):
        apq_torch.gemm(xq[0].to(torch.int64), w[0], K)
    with pytest.raises(RuntimeError, match="'x_planes' must be contiguous"):
        apq_torch.gemm(xq[0].transpose(0, 1).contiguous().transpose(0, 1), w[0], K)


def test_ops_refuse_operands_on_two_devices(operands):
    xq, w = operands
    if xq[0].device.type == "cpu":
        pytest.skip("needs a second device")
    with pytest.raises(RuntimeError, match="'w_planes' is on cpu but 'x_planes' is on cuda"):
        apq_torch.gemm(xq[0], w[0].cpu(), K)


def test_gemm_refuses_int32_overflow(backend):
    K = 40000  # 255 * 255 * 40000 > 2^31 - 1
    xp = backend.to(torch.zeros(8, 1, (K + 255) // 256 * 8, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="'K'=40000 is too large for an exact int32 result"):
        apq_torch.gemm(xp, xp, K)
    assert apq_torch.gemm(xp[:4], xp[:4], K).shape == (1, 1)  # 15 * 15 * 40000 fits


def test_qmatmul_checks(operands, backend):
    xq, w = operands
    z = lambda *shape, dtype=torch.float32: backend.to(torch.zeros(*shape, dtype=dtype))
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
        call_qmatmul(xq, w, bias=z(5))
    with pytest.raises(RuntimeError, match="'bias' must be a floating tensor"):
        call_qmatmul(xq, w, bias=z(6, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="'out_dtype' must be float32, float16 or bfloat16"):
        call_qmatmul(xq, w, out_dtype=torch.float64)
    with pytest.raises(RuntimeError, match="'x_scale' must be contiguous"):
        call_qmatmul(xq, w, x_scale=z(8)[::2])


def test_linear_checks(operands, backend, gen):
    _, w = operands
    x = backend.to(torch.randn(3, K, generator=gen))
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
    with pytest.raises(RuntimeError, match=r"'a_clip' must be a clipping ratio in \(0, 1\]"):
        apq_torch.linear(x, *w, K, 64, 4, "unsigned", None, None, 1.01)


@pytest.mark.parametrize("group_size", [0, 32, 64, 100, 128, 192, -64])
@pytest.mark.parametrize("fmt,bits", [("signed", 1), ("signed", 2), ("bipolar", 1), ("unsigned", 8)])
def test_python_rules_agree_with_the_kernels(fmt, bits, group_size):
    """apq_torch.ops.layout refuses exactly what the C++ checks refuse."""
    def python_accepts():
        try:
            layout.check_bits(bits)
            layout.check_format(fmt, bits)
            layout.check_group_size(group_size)
            return True
        except ValueError:
            return False

    try:
        apq_torch.quantize_pack(torch.zeros(2, 300), bits, fmt, group_size)
        kernel_accepts = True
    except RuntimeError:
        kernel_accepts = False
    assert python_accepts() == kernel_accepts
