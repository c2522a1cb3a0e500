"""Speed regressions of gemm, qmatmul and linear (pytest-benchmark). Not part of `make test`:

    make bench-check      # compare with the committed baseline, fail on a real regression
    make bench-baseline   # re-record the baseline (commit bench/baseline afterwards)

Shapes are mid-sized so that one round takes milliseconds: long enough to time, short
enough for the whole file to run in about a minute.
"""

import pytest
import torch

import apq_torch
from apq_torch.reference import num_groups

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and apq_torch.cuda_built() else [])


def packed_weight(N, K, bits, group_size, device, gen):
    planes, rowsum = apq_torch.pack(torch.randint(0, 2**bits, (N, K), generator=gen), bits, group_size)
    G = num_groups(K, group_size)
    scale = torch.rand(N, G, generator=gen) * 0.01
    offset = torch.full((N, G), -(2**bits - 1) / 2)
    return [t.to(device) for t in (planes, rowsum, scale, offset)]


def run(benchmark, device, fn):
    if device == "cuda":
        def fn_synced():
            fn()
            torch.cuda.synchronize()
        benchmark(fn_synced)
    else:
        benchmark(fn)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_gemm_1024(benchmark, device, bits):
    gen = torch.Generator().manual_seed(0)
    K = 1024
    xp = apq_torch.pack(torch.randint(0, 2**bits, (1024, K), generator=gen), bits)[0].to(device)
    wp = apq_torch.pack(torch.randint(0, 2**bits, (1024, K), generator=gen), bits)[0].to(device)
    run(benchmark, device, lambda: apq_torch.gemm(xp, wp, K))


@pytest.mark.parametrize("device", DEVICES)
def test_qmatmul_w4a8_g128(benchmark, device):
    gen = torch.Generator().manual_seed(0)
    M, N, K, gs = 256, 1024, 1024, 128
    w = packed_weight(N, K, 4, gs, device, gen)
    xq = apq_torch.quantize_pack(torch.randn(M, K, generator=gen).to(device), 8, "unsigned", gs)
    run(benchmark, device, lambda: apq_torch.qmatmul(*xq, *w, K, gs, None, torch.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tokens", [1, 64])
def test_linear_w4a8_g64(benchmark, device, tokens):
    gen = torch.Generator().manual_seed(0)
    N, K, gs = 2048, 1024, 64
    w = packed_weight(N, K, 4, gs, device, gen)
    x = torch.randn(tokens, K, generator=gen).to(device)
    run(benchmark, device, lambda: apq_torch.linear(x, *w, K, gs, 8, "unsigned", None))


# The int8 kernels (vnni for many rows, vnni-decode for a few) at SmolLM2's gate/up shape;
# on a CPU without them the kernel map runs the popcount kernels and these time those.
@pytest.mark.parametrize("tokens,w_bits,group_size", [(1, 4, 64), (1, 8, 0), (256, 4, 64), (256, 8, 0)])
def test_linear_smollm2_gate_a8(benchmark, tokens, w_bits, group_size):
    gen = torch.Generator().manual_seed(0)
    N, K = 1536, 576
    w = packed_weight(N, K, w_bits, group_size, "cpu", gen)
    x = torch.randn(tokens, K, generator=gen)
    benchmark(lambda: apq_torch.linear(x, *w, K, group_size, 8, "unsigned", None))


@torch.no_grad()
def test_decode_step_tiny_llama_w4a8(benchmark):
    """One eager decode step (1 token, static KV cache, the same position every round so each
    round does the same work) of the tiny W4A8 Llama: kernels plus per-op overhead."""
    pytest.importorskip("transformers")
    from transformers import StaticCache

    from apq_torch.tools.model_bench import build_model
    from apq_torch.tools.models import tiny_llama

    model = build_model(tiny_llama(), "W4A8", lm_head_bits=8)
    cache = StaticCache(config=model.config, max_cache_len=128)
    model(torch.arange(64).unsqueeze(0), past_key_values=cache, cache_position=torch.arange(64))
    token, position = torch.tensor([[7]]), torch.tensor([64])
    benchmark(lambda: model(token, past_key_values=cache, cache_position=position))
