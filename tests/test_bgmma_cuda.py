"""The BGMMA kernel in the op path: forced through APQ_GEMM_KERNEL=bgmma,..., chosen by the
table for prefill on sm_90, refused with a clear error elsewhere. The device tests run on a
GPU only (marked cuda); on sm_90 they compare with the CPU ops bit for bit."""

import itertools

import pytest
import torch

import apq_torch
from helpers import POISON, poison_allocator, random_activation, random_codes, random_weight

pytestmark = pytest.mark.skipif(not apq_torch.cuda_built(), reason="CPU-only build: no CUDA kernels to map")


def choice(M, x_bits=4, w_bits=4, N=4096, K=4096):
    return torch.ops.apq._cuda_kernel_choice(M, N, K, x_bits, w_bits, False)


def test_bgmma_can_be_forced(monkeypatch):
    for variant in ("bgmma,noswap", "bgmma,swap"):
        monkeypatch.setenv("APQ_GEMM_KERNEL", variant)
        assert choice(2048) == variant


def is_sm90():
    return torch.cuda.get_device_capability() == (9, 0)


@pytest.mark.cuda
def test_table_runs_bgmma_for_prefill_on_sm90_only():
    want = "bgmma,noswap" if is_sm90() else "large,noswap"
    assert choice(2048) == want
    assert choice(33, x_bits=4) == want        # 132 stacked activation rows
    assert choice(32, x_bits=4) == "large,swap"


@pytest.mark.cuda
def test_forced_bgmma_is_refused_off_sm90(monkeypatch, gen):
    if is_sm90():
        pytest.skip("sm_90 runs it")
    monkeypatch.setenv("APQ_GEMM_KERNEL", "bgmma,noswap")
    xp = apq_torch.pack(random_codes(4, 300, 2, gen), 2)[0].cuda()
    with pytest.raises(NotImplementedError, match="needs an sm_90 GPU"):
        apq_torch.gemm(xp, xp, 300)


@pytest.fixture(params=["bgmma,noswap", "bgmma,swap"])
def bgmma(request, monkeypatch):
    if not is_sm90():
        pytest.skip("the BGMMA kernel needs sm_90")
    monkeypatch.setenv("APQ_GEMM_KERNEL", request.param)


@pytest.mark.cuda
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (37, 13, 1000), (300, 70, 4097), (2048, 512, 8192)])
def test_bgmma_gemm_all_bit_pairs(bgmma, M, N, K, gen):
    for bx, bw in itertools.product(range(1, 9), repeat=2):
        xp = apq_torch.pack(random_codes(M, K, bx, gen), bx)[0]
        wp = apq_torch.pack(random_codes(N, K, bw, gen), bw)[0]
        poison_allocator("cuda")
        got = apq_torch.gemm(xp.cuda(), wp.cuda(), K).cpu()
        assert torch.equal(got, apq_torch.gemm(xp, wp, K)), (M, N, K, bx, bw)
        assert not (got == POISON).any()


@pytest.mark.cuda
@pytest.mark.parametrize("group_size", [0, 64, 128, 256])
def test_bgmma_qmatmul_groups(bgmma, group_size, gen):
    for bx, bw, out_dtype in [(4, 2, torch.float16), (2, 2, torch.float32), (8, 4, torch.bfloat16), (1, 1, torch.float32)]:
        w = random_weight(96, 1100, bw, "unsigned", group_size, gen)
        xp, xs, xsc, xo = apq_torch.quantize_pack(random_activation(70, 1100, torch.float32, gen), bx, "unsigned",
                                                  group_size)
        want = apq_torch.qmatmul(xp, xs, xsc, xo, *w, 1100, group_size, None, out_dtype).double()
        args = [t.cuda() for t in (xp, xs, xsc, xo, *w)]
        got = apq_torch.qmatmul(*args, 1100, group_size, None, out_dtype).cpu().double()
        tol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}[out_dtype]
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * (want.abs().max().item() + 1))
