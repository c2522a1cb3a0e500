"""The CUDA GEMMs (fused kernel, every tile variant, and the CUTLASS baseline) against the
CPU ops: gemm bit for bit, qmatmul/linear against the fp64 product of the dequantized
operands. Run wherever a CUDA device and a CUDA build exist; skipped cleanly otherwise."""

import itertools

import pytest
import torch

import apq_torch
from apq_torch import reference as ref
from helpers import POISON, poison_allocator, random_activation, random_codes, random_weight

pytestmark = pytest.mark.cuda

KERNELS = [f"{k},{o}{s}" for k in ("wide", "narrow") for o in ("noswap", "swap") for s in ("", ",splitk")]


@pytest.fixture(params=["table"] + KERNELS + ["baseline"])
def gemm_path(request, monkeypatch):
    """Every fused variant forced through APQ_GEMM_KERNEL, the mapping table, and the baseline."""
    if request.param == "baseline":
        monkeypatch.setenv("APQ_GEMM_PATH", "baseline")
    elif request.param != "table":
        monkeypatch.setenv("APQ_GEMM_KERNEL", request.param)
    return request.param


def packed(R, K, bits, gen):
    codes = random_codes(R, K, bits, gen)
    return apq_torch.pack(codes, bits)[0]


def check_gemm(M, N, K, bx, bw, gen):
    xp, wp = packed(M, K, bx, gen), packed(N, K, bw, gen)
    want = apq_torch.gemm(xp, wp, K)
    poison_allocator("cuda")
    got = apq_torch.gemm(xp.cuda(), wp.cuda(), K)
    assert got.dtype == torch.int32 and got.shape == (M, N)
    assert torch.equal(got.cpu(), want), (M, N, K, bx, bw)
    assert not (got == POISON).any()


def test_gemm_all_64_bit_pairs(gemm_path, gen):
    for bx, bw in itertools.product(range(1, 9), repeat=2):
        check_gemm(37, 13, 1000, bx, bw, gen)


@pytest.mark.parametrize("M", [1, 2, 5, 16, 17, 64, 129, 1000, 4096])
def test_gemm_m_from_1_to_4096(M, gemm_path, gen):
    for bx, bw in [(1, 1), (4, 4), (3, 5), (8, 8)]:
        check_gemm(M, 67, 520, bx, bw, gen)


@pytest.mark.parametrize("K", [1, 31, 255, 256, 257, 511, 513, 4097])
def test_gemm_edges_k_n1_m1(K, gemm_path, gen):
    for M, N in [(1, 1), (1, 33), (33, 1), (7, 300)]:
        check_gemm(M, N, K, 2, 3, gen)


def qmatmul_inputs(M, N, K, bx, bw, x_fmt, w_fmt, group_size, gen):
    w = random_weight(N, K, bw, w_fmt, group_size, gen)
    xq = apq_torch.quantize_pack(random_activation(M, K, torch.float32, gen), bx, x_fmt, group_size)
    return xq, w


def fp64_product(xq, w, K, group_size, bias):
    x = ref.dequantize(xq[0], K, xq[2], xq[3], group_size)
    y = x @ ref.dequantize(w[0], K, w[2], w[3], group_size).T
    return y + bias.double() if bias is not None else y


TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.mark.parametrize("group_size", [0, 64, 128, 256, 512, 1024])
@pytest.mark.parametrize("x_fmt,w_fmt", [("unsigned", "bipolar"), ("signed", "signed"), ("bipolar", "unsigned")])
def test_qmatmul_matches_fp64_reference(group_size, x_fmt, w_fmt, gemm_path, gen):
    if gemm_path == "baseline" and group_size % 128:
        pytest.skip("the CUTLASS baseline takes 16-byte aligned K-slices (group_size % 128 == 0)")
    for (M, N, K, bx, bw) in [(1, 300, 1000, 8, 4), (33, 67, 2048, 4, 2), (300, 5, 777, 3, 8)]:
        xq, w = qmatmul_inputs(M, N, K, bx, bw, x_fmt, w_fmt, group_size, gen)
        for out_dtype, bias_dtype in [(torch.float32, torch.float32), (torch.float16, torch.float16),
                                      (torch.bfloat16, None)]:
            bias = None if bias_dtype is None else torch.randn(N, generator=gen).to(bias_dtype)
            want = fp64_product(xq, w, K, group_size, bias)
            poison_allocator("cuda")
            got = apq_torch.qmatmul(*[t.cuda() for t in xq], *[t.cuda() for t in w], K, group_size,
                                    None if bias is None else bias.cuda(), out_dtype)
            assert got.dtype == out_dtype and got.shape == (M, N)
            scale = want.abs().max().item() + 1
            torch.testing.assert_close(got.cpu().double(), want.to(out_dtype).double(), rtol=TOL[out_dtype],
                                       atol=TOL[out_dtype] * scale)


def test_qmatmul_long_k_stays_exact(gemm_path, gen):
    # 8x8 bits over K = 40000: the int32 sum of one window would overflow; windows must not.
    xq, w = qmatmul_inputs(3, 70, 40000, 8, 8, "unsigned", "unsigned", 0, gen)
    want = fp64_product(xq, w, 40000, 0, None)
    got = apq_torch.qmatmul(*[t.cuda() for t in xq], *[t.cuda() for t in w], 40000, 0, None, torch.float32)
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_results_identical_across_runs(gen):
    xq, w = qmatmul_inputs(300, 500, 4096, 4, 4, "unsigned", "bipolar", 128, gen)
    args = [t.cuda() for t in xq] + [t.cuda() for t in w]
    first = apq_torch.qmatmul(*args, 4096, 128, None, torch.float16)
    for _ in range(3):
        assert torch.equal(apq_torch.qmatmul(*args, 4096, 128, None, torch.float16), first)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("group_size", [0, 128])
def test_linear_cuda_matches_cpu_and_reference(dtype, group_size, gen):
    K, N = 1000, 96
    w = random_weight(N, K, 4, "bipolar", group_size, gen)
    x = torch.randn(2, 9, K, generator=gen).to(dtype)
    bias = torch.randn(N, generator=gen).to(dtype)
    got = apq_torch.linear(x.cuda(), *[t.cuda() for t in w], K, group_size, 8, "unsigned", bias.cuda())
    assert got.shape == (2, 9, N) and got.dtype == dtype
    xq = apq_torch.quantize_pack(x.reshape(-1, K), 8, "unsigned", group_size)  # bit-equal on both devices
    want = fp64_product(xq, w, K, group_size, bias).view(2, 9, N)
    scale = want.abs().max().item() + 1
    torch.testing.assert_close(got.cpu().double(), want.to(dtype).double(), rtol=TOL[dtype], atol=TOL[dtype] * scale)


def test_linear_is_two_launches(gen):
    K, N = 512, 64
    w = [t.cuda() for t in random_weight(N, K, 4, "bipolar", 0, gen)]
    x = torch.randn(4, K, device="cuda", dtype=torch.float16)
    apq_torch.linear(x, *w, K, 0, 8, "unsigned", None)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        apq_torch.linear(x, *w, K, 0, 8, "unsigned", None)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 2, [e.name for e in kernels]


def test_linear_cuda_graph_capture_and_replay(gen):
    K, N = 768, 130
    w = [t.cuda() for t in random_weight(N, K, 3, "bipolar", 128, gen)]
    x = torch.randn(5, K, device="cuda", dtype=torch.float16)
    apq_torch.linear(x, *w, K, 128, 8, "unsigned", None)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = apq_torch.linear(x, *w, K, 128, 8, "unsigned", None)
    x.copy_(torch.randn(5, K, generator=gen).half().cuda())
    graph.replay()
    assert torch.equal(y, apq_torch.linear(x, *w, K, 128, 8, "unsigned", None))


def test_autotune_caches_its_choice_on_disk(tmp_path, monkeypatch, gen):
    cache = tmp_path / "autotune.txt"
    monkeypatch.setenv("APQ_AUTOTUNE", "1")
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(cache))
    xp, wp = packed(24, 2048, 2, gen), packed(512, 2048, 2, gen)
    got = apq_torch.gemm(xp.cuda(), wp.cuda(), 2048)
    assert torch.equal(got.cpu(), apq_torch.gemm(xp, wp, 2048))
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sm") and ":m32:n512:k2048:x2:w2:c " in lines[0]
    choice = lines[0].split()[1]
    assert torch.ops.apq._cuda_kernel_choice(24, 512, 2048, 2, 2, False) == choice


def test_unsupported_gemm_path_is_named(monkeypatch, gen):
    monkeypatch.setenv("APQ_GEMM_PATH", "fastest")
    xp = packed(2, 64, 2, gen).cuda()
    with pytest.raises(RuntimeError, match="APQ_GEMM_PATH must be 'fused' or 'baseline'"):
        apq_torch.gemm(xp, xp, 64)


def test_planes_view_at_odd_offset_is_named():
    flat = torch.zeros(2 * 3 * 8 + 1, dtype=torch.int32, device="cuda")
    view = flat[1:].view(2, 3, 8)  # contiguous, but 4 bytes past a 16-byte boundary
    with pytest.raises(RuntimeError, match="'x_planes' must start on a 16-byte boundary"):
        apq_torch.gemm(view, view.clone(), 256)
