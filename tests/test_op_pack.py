"""pack / unpack / quantize_pack equal the reference bit for bit, on every device."""

import pytest
import torch

import apq_torch
from apq_torch import reference as ref
from apq_torch.ops.layout import padded_words
from helpers import FORMAT_BITS, FORMATS, FLOAT_DTYPES, poison_allocator, random_activation, random_codes

SHAPES = [(1, 1), (3, 31), (17, 255), (5, 257), (64, 1000), (2, 4097)]
SHAPE_IDS = [f"R{r}xK{k}" for r, k in SHAPES]


@pytest.mark.parametrize("R,K", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("group_size", [0, 64, 128, 192])
@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_matches_reference_and_round_trips(bits, group_size, R, K, backend, gen):
    for dtype in (torch.uint8, torch.int32, torch.int64):
        codes = random_codes(R, K, bits, gen).to(dtype)
        poison_allocator(backend.device)
        planes, rowsum = apq_torch.pack(backend.to(codes), bits, group_size)
        ref_planes, ref_rowsum = ref.pack(codes, bits, group_size)
        assert planes.shape == (bits, R, padded_words(K)) and planes.device.type == backend.device
        assert torch.equal(planes.cpu(), ref_planes), dtype
        assert torch.equal(rowsum.cpu(), ref_rowsum), dtype
        poison_allocator(backend.device)
        assert torch.equal(apq_torch.unpack(planes, K).cpu(), codes.to(torch.int32))
        assert torch.equal(ref.unpack(ref_planes, K), codes.to(torch.int32))


def test_pack_layout_is_lsb_first_words(backend):
    codes = torch.zeros(1, 300, dtype=torch.int64)
    codes[0, 0] = 1  # plane 0, word 0, bit 0
    codes[0, 33] = 2  # plane 1, word 1, bit 1
    codes[0, 299] = 3  # planes 0 and 1, word 9, bit 11
    planes, rowsum = apq_torch.pack(backend.to(codes), 2)
    expected = torch.zeros(2, 1, 16, dtype=torch.int32)
    expected[0, 0, 0] = 1
    expected[1, 0, 1] = 2
    expected[0, 0, 9] = 1 << 11
    expected[1, 0, 9] = 1 << 11
    assert torch.equal(planes.cpu(), expected)
    assert rowsum.tolist() == [[6]]


@pytest.mark.parametrize("M,K", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("fmt,bits", FORMAT_BITS)
def test_quantize_pack_matches_reference_exactly(fmt, bits, dtype, M, K, backend, gen):
    for group_size in (0, 128):
        x = random_activation(M, K, dtype, gen)
        poison_allocator(backend.device)
        got = apq_torch.quantize_pack(backend.to(x), bits, fmt, group_size)
        want = ref.quantize_pack(x, bits, fmt, group_size)
        for name, a, b in zip(("planes", "rowsum", "scale", "offset"), got, want):
            assert a.device.type == backend.device
            assert torch.equal(a.cpu(), b), (name, group_size)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_pack_error_is_within_half_a_step(fmt, backend, gen):
    bits = 4
    x = random_activation(33, 500, torch.float32, gen)
    planes, _, scale, offset = (t.cpu() for t in apq_torch.quantize_pack(backend.to(x), bits, fmt))
    x_hat = ref.dequantize(planes, 500, scale, offset, 0)
    step = scale.double().unsqueeze(1)
    # symmetric formats clip nothing; unsigned may round its zero point by half a step
    slack = 1.0 if fmt == "unsigned" else 0.5
    assert ((x_hat - x.double()).abs() <= slack * step * (1 + 2**-16)).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_pack_special_rows(fmt, backend):
    x = torch.zeros(4, 70)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    x[3] = 1e-39  # subnormal everywhere
    planes, rowsum, scale, offset = (t.cpu() for t in apq_torch.quantize_pack(backend.to(x), 3, fmt))
    want = ref.quantize_pack(x, 3, fmt)
    assert torch.equal(planes, want[0]) and torch.equal(rowsum, want[1])
    torch.testing.assert_close(scale, want[2], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(offset, want[3], rtol=0, atol=0)
    assert scale[1].isnan() and scale[2].isnan(), "non-finite rows must give a NaN scale"
    assert scale[0] > 0 and torch.isfinite(scale[0])
    assert (rowsum[1:3] == 0).all()


def test_quantize_pack_empty_batch(backend):
    planes, rowsum, scale, offset = apq_torch.quantize_pack(backend.to(torch.zeros(0, 100)), 4, "bipolar", 64)
    assert planes.shape == (4, 0, 8) and rowsum.shape == (0, 2) and scale.shape == (0,)


@pytest.mark.parametrize("clip", [1.0, 0.9, 0.5, 2**-20])
@pytest.mark.parametrize("fmt,bits", [("unsigned", 4), ("signed", 4), ("bipolar", 4), ("unsigned", 8), ("bipolar", 1)])
def test_quantize_pack_clip_matches_reference_exactly(fmt, bits, clip, backend, gen):
    for dtype, group_size in ((torch.float32, 0), (torch.bfloat16, 64)):
        x = random_activation(17, 300, dtype, gen)
        poison_allocator(backend.device)
        got = apq_torch.quantize_pack(backend.to(x), bits, fmt, group_size, None, clip)
        want = ref.quantize_pack(x, bits, fmt, group_size, clip=clip)
        for name, a, b in zip(("planes", "rowsum", "scale", "offset"), got, want):
            assert torch.equal(a.cpu(), b), (name, dtype)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_pack_clip_scales_the_range_and_saturates(fmt, backend, gen):
    """clip c: the step is c times the unclipped one (exactly, for a power of two c), values
    inside the clipped range are within half a step, and those beyond it take the end codes."""
    bits, c = 4, 0.5
    x = random_activation(9, 256, torch.float32, gen)
    full = apq_torch.quantize_pack(backend.to(x), bits, fmt)
    planes, _, scale, offset = (t.cpu() for t in apq_torch.quantize_pack(backend.to(x), bits, fmt, 0, None, c))
    assert torch.equal(scale, full[2].cpu() * c)
    codes = ref.unpack(planes, 256)
    x_hat = ref.dequantize(planes, 256, scale, offset, 0)
    lo, hi = scale * offset, scale * (offset + 2**bits - 1)  # the grid's ends
    inside = (x >= lo.unsqueeze(1)) & (x <= hi.unsqueeze(1))
    slack = 1.0 if fmt == "unsigned" else 0.5
    err = (x_hat - x.double()).abs()
    assert (err[inside] <= (slack * scale.double().unsqueeze(1).expand_as(err))[inside] * (1 + 2**-16)).all()
    assert (codes[x > hi.unsqueeze(1)] == 2**bits - 1).all() and (codes[x < lo.unsqueeze(1)] == 0).all()
    assert (~inside).any(), "a clip of 0.5 must saturate some values"
