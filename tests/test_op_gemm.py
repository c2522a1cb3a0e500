"""apq::gemm is exact: it equals the int64 product of the codes, for every bit pair, every
device and every GEMM kernel (CPU kernels; CUDA's mapping table, each forced variant and
the CUTLASS baseline)."""

import pytest
import torch

import apq_torch
from helpers import BIT_PAIRS, exact_product, poison_allocator, random_codes

# Odd shapes: a partial word, one partial 256-bit step, several steps, ragged blocks.
SHAPES = [(1, 1, 1), (3, 7, 31), (17, 33, 257), (64, 1, 1000)]
EDGE_SHAPES = [(129, 67, 700), (66, 130, 5000), (5, 260, 2048), (1, 513, 4096), (1000, 67, 520), (4096, 67, 520),
               (2, 70, 513), (33, 1, 255), (7, 300, 256), (1, 33, 511), (16, 1, 4097), (17, 5, 1)]


def shape_id(shape):
    return "M{}xN{}xK{}".format(*shape)


def check_gemm(backend, M, N, K, bx, bw, gen):
    ux, uw = random_codes(M, K, bx, gen), random_codes(N, K, bw, gen)
    xp, wp = backend.to(apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0])
    poison_allocator(backend.device)
    y = apq_torch.gemm(xp, wp, K)
    assert y.dtype == torch.int32 and y.shape == (M, N) and y.device.type == backend.device
    assert torch.equal(y.cpu(), exact_product(ux, uw))


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("bx,bw", BIT_PAIRS, ids=[f"W{bw}A{bx}" for bx, bw in BIT_PAIRS])
def test_gemm_exact_all_bit_pairs(bx, bw, shape, gemm_backend, gen):
    check_gemm(gemm_backend, *shape, bx, bw, gen)


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("bx,bw", [(1, 1), (3, 5), (8, 8), (2, 3)], ids=["W1A1", "W5A3", "W8A8", "W3A2"])
def test_gemm_exact_block_edges_and_long_k(bx, bw, shape, gemm_backend, gen):
    check_gemm(gemm_backend, *shape, bx, bw, gen)


def test_gemm_extreme_codes_reach_exact_maximum(gemm_backend):
    K = 1000
    xp = apq_torch.pack(torch.full((3, K), 255), 8)[0]
    wp = apq_torch.pack(torch.full((2, K), 255), 8)[0]
    y = apq_torch.gemm(*gemm_backend.to(xp, wp), K)
    assert torch.equal(y.cpu(), torch.full((3, 2), 255 * 255 * K, dtype=torch.int32))


def test_gemm_ignores_padding_bits(gemm_backend, gen):
    """Bits past K are zero by contract; the kernel must not depend on it."""
    K = 300
    ux, uw = random_codes(9, K, 3, gen), random_codes(5, K, 2, gen)
    xp, wp = apq_torch.pack(ux, 3)[0], apq_torch.pack(uw, 2)[0]
    xp[:, :, K // 32] |= -(1 << (K % 32))  # set every bit above K in the partial word
    xp[:, :, K // 32 + 1:] = -1
    wp[:, :, K // 32 + 1:] = -1
    assert torch.equal(apq_torch.gemm(*gemm_backend.to(xp, wp), K).cpu(), exact_product(ux, uw))


def test_gemm_empty_rows(gemm_backend):
    xp, wp = gemm_backend.to(torch.zeros(2, 0, 8, dtype=torch.int32), torch.zeros(3, 4, 8, dtype=torch.int32))
    assert apq_torch.gemm(xp, wp, 100).shape == (0, 4)
    assert apq_torch.gemm(wp, xp, 100).shape == (4, 0)


def test_gemm_is_deterministic(gemm_backend, gen):
    xp = apq_torch.pack(random_codes(300, 4096, 4, gen), 4)[0]
    wp = apq_torch.pack(random_codes(500, 4096, 4, gen), 4)[0]
    xp, wp = gemm_backend.to(xp, wp)
    first = apq_torch.gemm(xp, wp, 4096)
    for _ in range(3):
        assert torch.equal(apq_torch.gemm(xp, wp, 4096), first)


def test_cpu_kernel_selection():
    assert apq_torch.cpu_kernel() in ("auto", "avx512", "vnni", "vnni-decode", "portable")
    assert apq_torch.cpu_kernel("portable") == "portable"
    assert apq_torch.cpu_kernel() == "portable"
    apq_torch.cpu_kernel("auto")
    with pytest.raises(RuntimeError, match="request"):
        apq_torch.cpu_kernel("sse9")
