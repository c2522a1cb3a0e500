"""What only CUDA has: launch counts, CUDA-graph capture and replay, the autotune cache on
disk, the GEMM path switch and the 16-byte alignment cp.async needs. (The ops' results are
checked on every device by the test_op_*.py files.)"""

import pytest
import torch

import apq_torch
from helpers import random_activation, random_codes, random_weight

pytestmark = pytest.mark.cuda


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


def test_quantize_pack_and_linear_under_cuda_graph_capture(gen):
    K, N = 768, 130
    w = [t.cuda() for t in random_weight(N, K, 3, "bipolar", 128, gen)]
    x = random_activation(5, K, torch.float16, gen).cuda()
    apq_torch.linear(x, *w, K, 128, 8, "unsigned", None)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        packed = apq_torch.quantize_pack(x, 4, "bipolar", 128)
        y = apq_torch.linear(x, *w, K, 128, 8, "unsigned", None)
    x.copy_(random_activation(5, K, torch.float16, gen).cuda())
    graph.replay()
    for a, b in zip(packed, apq_torch.quantize_pack(x.cpu(), 4, "bipolar", 128)):
        assert torch.equal(a.cpu(), b)
    assert torch.equal(y, apq_torch.linear(x, *w, K, 128, 8, "unsigned", None))


def test_autotune_caches_its_choice_on_disk(tmp_path, monkeypatch, gen):
    cache = tmp_path / "autotune.txt"
    monkeypatch.setenv("APQ_AUTOTUNE", "1")
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(cache))
    xp, wp = (apq_torch.pack(random_codes(r, 2048, 2, gen), 2)[0] for r in (24, 512))
    got = apq_torch.gemm(xp.cuda(), wp.cuda(), 2048)
    assert torch.equal(got.cpu(), apq_torch.gemm(xp, wp, 2048))
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sm") and ":m32:n512:k2048:x2:w2:c " in lines[0]
    assert torch.ops.apq._cuda_kernel_choice(24, 512, 2048, 2, 2, False) == lines[0].split()[1]


def test_unsupported_gemm_path_is_named(monkeypatch, gen):
    monkeypatch.setenv("APQ_GEMM_PATH", "fastest")
    xp = apq_torch.pack(random_codes(2, 64, 2, gen), 2)[0].cuda()
    with pytest.raises(RuntimeError, match="APQ_GEMM_PATH must be 'fused' or 'baseline'"):
        apq_torch.gemm(xp, xp, 64)


def test_planes_view_at_odd_offset_is_named():
    flat = torch.zeros(2 * 3 * 8 + 1, dtype=torch.int32, device="cuda")
    view = flat[1:].view(2, 3, 8)  # contiguous, but 4 bytes past a 16-byte boundary
    with pytest.raises(RuntimeError, match="'x_planes' must start on a 16-byte boundary"):
        apq_torch.gemm(view, view.clone(), 256)
