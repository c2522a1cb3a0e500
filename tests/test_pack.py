"""pack / unpack / quantize_pack equal the reference bit for bit."""

import pytest
import torch

import apq_torch
from apq_torch import reference as ref
from helpers import random_activation, random_codes

SHAPES = [(1, 1), (3, 31), (17, 255), (5, 257), (64, 1000), (2, 4097)]
FORMATS = ["unsigned", "signed", "bipolar"]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("group_size", [0, 64, 128, 192])
def test_pack_matches_reference_and_round_trips(bits, group_size, cpu_kernel, gen):
    for R, K in SHAPES:
        for dtype in (torch.uint8, torch.int32, torch.int64):
            codes = random_codes(R, K, bits, gen).to(dtype)
            planes, rowsum = apq_torch.pack(codes, bits, group_size)
            ref_planes, ref_rowsum = ref.pack(codes, bits, group_size)
            assert planes.shape == (bits, R, ref.padded_words(K))
            assert torch.equal(planes, ref_planes), (R, K, dtype)
            assert torch.equal(rowsum, ref_rowsum), (R, K, dtype)
            assert torch.equal(apq_torch.unpack(planes, K), codes.to(torch.int32))
            assert torch.equal(ref.unpack(planes, K), codes.to(torch.int32))


def test_pack_layout_is_lsb_first_words():
    codes = torch.zeros(1, 300, dtype=torch.int64)
    codes[0, 0] = 1  # plane 0, word 0, bit 0
    codes[0, 33] = 2  # plane 1, word 1, bit 1
    codes[0, 299] = 3  # planes 0 and 1, word 9, bit 11
    planes, rowsum = apq_torch.pack(codes, 2)
    assert planes.shape == (2, 1, 16)
    expected = torch.zeros(2, 1, 16, dtype=torch.int32)
    expected[0, 0, 0] = 1
    expected[1, 0, 1] = 2
    expected[0, 0, 9] = 1 << 11
    expected[1, 0, 9] = 1 << 11
    assert torch.equal(planes, expected)
    assert rowsum.tolist() == [[6]]


# signed needs 2 bits; its 1-bit request is an error (test_errors.py)
FORMAT_BITS = [(f, b) for f in FORMATS for b in range(1, 9) if not (f == "signed" and b == 1)]


@pytest.mark.parametrize("fmt,bits", FORMAT_BITS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_pack_matches_reference_exactly(fmt, bits, dtype, cpu_kernel, gen):
    for M, K in SHAPES:
        for group_size in (0, 128):
            x = random_activation(M, K, dtype, gen)
            got = apq_torch.quantize_pack(x, bits, fmt, group_size)
            want = ref.quantize_pack(x, bits, fmt, group_size)
            for name, a, b in zip(("planes", "rowsum", "scale", "offset"), got, want):
                assert torch.equal(a, b), (name, M, K, group_size)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_pack_error_is_within_half_a_step(fmt, gen):
    bits = 4
    x = random_activation(33, 500, torch.float32, gen)
    planes, _, scale, offset = apq_torch.quantize_pack(x, bits, fmt)
    x_hat = ref.dequantize(planes, 500, scale, offset, 0)
    step = scale.double().unsqueeze(1)
    # symmetric formats clip nothing; unsigned may round its zero point
    slack = 1.0 if fmt == "unsigned" else 0.5
    assert ((x_hat - x.double()).abs() <= slack * step + 1e-6).all()


def test_quantize_pack_special_rows():
    x = torch.zeros(4, 70)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    x[3] = 1e-39  # subnormal everywhere
    for fmt in FORMATS:
        planes, rowsum, scale, offset = apq_torch.quantize_pack(x, 3, fmt)
        want = ref.quantize_pack(x, 3, fmt)
        assert torch.equal(planes, want[0]) and torch.equal(rowsum, want[1])
        torch.testing.assert_close(scale, want[2], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(offset, want[3], rtol=0, atol=0)
        assert scale[1].isnan() and scale[2].isnan(), "non-finite rows must give a NaN scale"
        assert scale[0] > 0 and torch.isfinite(scale[0])
        assert (rowsum[1:3] == 0).all()


def test_quantize_pack_empty_batch():
    planes, rowsum, scale, offset = apq_torch.quantize_pack(torch.zeros(0, 100), 4, "bipolar", 64)
    assert planes.shape == (4, 0, 8) and rowsum.shape == (0, 2) and scale.shape == (0,)
