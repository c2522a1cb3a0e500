"""apq::gemm is exact: it equals the int64 product of the codes, for every bit pair."""

import pytest
import torch

import apq_torch
from helpers import K_SIZES, M_SIZES, N_SIZES, poison_allocator, random_codes

BIT_PAIRS = [(bx, bw) for bx in range(1, 9) for bw in range(1, 9)]


def exact_product(ux, uw):
    return (ux.to(torch.int64) @ uw.to(torch.int64).T).to(torch.int32)


@pytest.mark.parametrize("bx,bw", BIT_PAIRS)
def test_gemm_exact_all_bit_pairs_odd_shapes(bx, bw, cpu_kernel, gen):
    for M in M_SIZES:
        for N in N_SIZES:
            for K in K_SIZES:
                ux, uw = random_codes(M, K, bx, gen), random_codes(N, K, bw, gen)
                xp, _ = apq_torch.pack(ux, bx)
                wp, _ = apq_torch.pack(uw, bw)
                poison_allocator("cpu")
                y = apq_torch.gemm(xp, wp, K)
                assert y.dtype == torch.int32 and y.shape == (M, N)
                assert torch.equal(y, exact_product(ux, uw)), (M, N, K)


@pytest.mark.parametrize("M,N,K", [(129, 67, 700), (66, 130, 5000), (5, 260, 2048), (1, 513, 4096)])
@pytest.mark.parametrize("bx,bw", [(1, 1), (3, 5), (8, 8)])
def test_gemm_exact_block_edges_and_long_k(M, N, K, bx, bw, cpu_kernel, gen):
    ux, uw = random_codes(M, K, bx, gen), random_codes(N, K, bw, gen)
    xp, _ = apq_torch.pack(ux, bx)
    wp, _ = apq_torch.pack(uw, bw)
    assert torch.equal(apq_torch.gemm(xp, wp, K), exact_product(ux, uw))


def test_gemm_extreme_codes_reach_exact_maximum(cpu_kernel):
    K = 1000
    ux = torch.full((3, K), 255)
    uw = torch.full((2, K), 255)
    y = apq_torch.gemm(apq_torch.pack(ux, 8)[0], apq_torch.pack(uw, 8)[0], K)
    assert torch.equal(y, torch.full((3, 2), 255 * 255 * K, dtype=torch.int32))


def test_gemm_ignores_padding_bits(cpu_kernel, gen):
    """Bits past K are zero by contract; the kernel must not depend on it."""
    K = 300
    ux, uw = random_codes(9, K, 3, gen), random_codes(5, K, 2, gen)
    xp, _ = apq_torch.pack(ux, 3)
    wp, _ = apq_torch.pack(uw, 2)
    xp_dirty, wp_dirty = xp.clone(), wp.clone()
    xp_dirty[:, :, K // 32] |= -(1 << (K % 32))  # set every bit above K in the partial word
    xp_dirty[:, :, K // 32 + 1:] = -1
    wp_dirty[:, :, K // 32 + 1:] = -1
    assert torch.equal(apq_torch.gemm(xp_dirty, wp_dirty, K), exact_product(ux, uw))


def test_gemm_empty_rows():
    xp = torch.zeros(2, 0, 8, dtype=torch.int32)
    wp = torch.zeros(3, 4, 8, dtype=torch.int32)
    assert apq_torch.gemm(xp, wp, 100).shape == (0, 4)


def test_kernel_paths_agree_on_a_larger_product(gen):
    ux, uw = random_codes(70, 3000, 4, gen), random_codes(90, 3000, 3, gen)
    xp, wp = apq_torch.pack(ux, 4)[0], apq_torch.pack(uw, 3)[0]
    results = {}
    for path in ("avx512", "portable"):
        try:
            apq_torch.cpu_kernel(path)
        except RuntimeError:
            continue
        results[path] = apq_torch.gemm(xp, wp, 3000)
    apq_torch.cpu_kernel("auto")
    assert results, "no CPU kernel ran"
    for y in results.values():
        assert torch.equal(y, exact_product(ux, uw))


def test_cpu_kernel_selection():
    assert apq_torch.cpu_kernel() in ("auto", "avx512", "vnni", "vnni-decode", "portable")
    assert apq_torch.cpu_kernel("portable") == "portable"
    assert apq_torch.cpu_kernel() == "portable"
    apq_torch.cpu_kernel("auto")
    with pytest.raises(RuntimeError, match="request"):
        apq_torch.cpu_kernel("sse9")
