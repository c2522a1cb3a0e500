"""CUDA kernels against the CPU ones, bit for bit. Skipped cleanly without a GPU."""

import pytest
import torch

import apq_torch
from helpers import poison_allocator, random_activation, random_codes

pytestmark = pytest.mark.cuda

SHAPES = [(1, 1), (3, 31), (17, 255), (5, 257), (64, 1000), (300, 4097)]
FORMAT_BITS = [(f, b) for f in ("unsigned", "signed", "bipolar") for b in range(1, 9)
               if not (f == "signed" and b == 1)]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("group_size", [0, 64, 192])
def test_pack_unpack_cuda_equal_cpu(bits, group_size, gen):
    for R, K in SHAPES:
        for dtype in (torch.uint8, torch.int16, torch.int64):
            codes = random_codes(R, K, bits, gen).to(dtype)
            want = apq_torch.pack(codes, bits, group_size)
            poison_allocator("cuda")
            got = apq_torch.pack(codes.cuda(), bits, group_size)
            assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
            poison_allocator("cuda")
            assert torch.equal(apq_torch.unpack(got[0], K).cpu(), codes.to(torch.int32))


@pytest.mark.parametrize("fmt,bits", FORMAT_BITS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_pack_cuda_equal_cpu(fmt, bits, dtype, gen):
    for M, K in SHAPES:
        for group_size in (0, 128):
            x = random_activation(M, K, dtype, gen)
            want = apq_torch.quantize_pack(x, bits, fmt, group_size)
            poison_allocator("cuda")
            got = apq_torch.quantize_pack(x.cuda(), bits, fmt, group_size)
            for a, b in zip(got, want):
                torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0, equal_nan=True)


def test_quantize_pack_under_cuda_graph(gen):
    x = random_activation(16, 512, torch.float16, gen).cuda()
    apq_torch.quantize_pack(x, 4, "bipolar", 128)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = apq_torch.quantize_pack(x, 4, "bipolar", 128)
    x.copy_(random_activation(16, 512, torch.float16, gen).cuda())
    graph.replay()
    want = apq_torch.quantize_pack(x.cpu(), 4, "bipolar", 128)
    for a, b in zip(out, want):
        assert torch.equal(a.cpu(), b)


def test_pack_cuda_rejects_out_of_range_codes():
    with pytest.raises(RuntimeError, match=r"'codes' must hold unsigned 2-bit codes"):
        apq_torch.pack(torch.tensor([[0, 7]], device="cuda"), 2)
