"""apq::linear under torch.compile(fullgraph=True) on every device: no graph break, no
recompile on batch, CUDA graphs (mode="reduce-overhead") on cuda."""

import pytest
import torch
import torch._dynamo.testing

import apq_torch
from helpers import random_weight


class QuantLinear(torch.nn.Module):
    def __init__(self, w, K, group_size):
        super().__init__()
        self.w, self.K, self.group_size = w, K, group_size

    def forward(self, x):
        return apq_torch.linear(x, *self.w, self.K, self.group_size, 4, "bipolar", None).relu()


def test_compiled_linear_dynamic_batch(device, gen):
    torch._dynamo.reset()
    K, gs = 256, 128
    module = QuantLinear([t.to(device) for t in random_weight(12, K, 2, "bipolar", gs, gen)], K, gs)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=counter)
    for batch in (3, 5, 17):
        x = torch.randn(batch, 2, K, generator=gen).to(device)
        assert torch.equal(compiled(x), module(x))
    assert counter.frame_count == 1, f"recompiled {counter.frame_count} times"
    # size 1 is specialized by dynamo (0/1 specialization): one more graph, still correct
    x = torch.randn(1, 2, K, generator=gen).to(device)
    assert torch.equal(compiled(x), module(x))


def test_dynamo_sees_one_graph(device, gen):
    torch._dynamo.reset()
    K = 128
    module = QuantLinear([t.to(device) for t in random_weight(4, K, 3, "signed", 0, gen)], K, 0)
    explanation = torch._dynamo.explain(module)(torch.randn(2, K, generator=gen).to(device))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.cuda
def test_cuda_graphs_replay_the_linear(gen):
    torch._dynamo.reset()
    K, gs = 768, 128
    module = QuantLinear([t.cuda() for t in random_weight(130, K, 3, "bipolar", gs, gen)], K, gs)
    compiled = torch.compile(module, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # warm-up, record, replay
        x = torch.randn(5, K, generator=gen).half().cuda()
        assert torch.equal(compiled(x), module(x))


def test_cache_key_of_the_sharing_pass_follows_the_op_schemas(monkeypatch):
    # Inductor's FX graph cache does not key on custom ops: code compiled against an older
    # schema of apq::linear crashed (C++ wrapper) when a newer apq_torch ran it from the cache.
    from apq_torch.api.compile import ShareActivationQuantization

    before = ShareActivationQuantization().uuid()
    real = torch._C._jit_get_all_schemas
    changed = [s for s in real() if s.name == "apq::gemm"][0]
    monkeypatch.setattr(torch._C, "_jit_get_all_schemas",
                        lambda: [s if s.name != "apq::linear" else changed for s in real()])
    assert ShareActivationQuantization().uuid() != before
    monkeypatch.undo()
    assert ShareActivationQuantization().uuid() == before


@pytest.mark.parametrize("a_clip", [1.0, 0.9])
def test_clipped_apqlinear_compiles_in_one_trace(a_clip, device, gen):
    """The clip reaches the op as a constant: a float traced as a graph input would make
    torch.compile trace the frame twice to specialize it."""
    torch._dynamo.reset()
    config = apq_torch.APQConfig(w_bits=4, a_bits=4, group_size=128, a_clip=a_clip)
    module = apq_torch.APQLinear.from_float(torch.nn.Linear(256, 12), config).to(device)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=counter)
    for batch in (3, 5):
        x = torch.randn(batch, 2, 256, generator=gen).to(device)
        assert torch.equal(compiled(x), module(x))
    assert counter.frame_count == 1, f"traced {counter.frame_count} times"
