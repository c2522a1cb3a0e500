"""apq::linear under torch.compile(fullgraph=True): no graph break, no recompile on batch."""

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


def test_compiled_linear_dynamic_batch(gen):
    torch._dynamo.reset()
    K, gs = 256, 128
    module = QuantLinear(random_weight(12, K, 2, "bipolar", gs, gen), K, gs)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=counter)
    for batch in (3, 5, 17):
        x = torch.randn(batch, 2, K, generator=gen)
        torch.testing.assert_close(compiled(x), module(x), rtol=0, atol=0)
    assert counter.frame_count == 1, f"recompiled {counter.frame_count} times"
    # size 1 is specialized by dynamo (0/1 specialization): one more graph, still correct
    x = torch.randn(1, 2, K, generator=gen)
    torch.testing.assert_close(compiled(x), module(x), rtol=0, atol=0)


def test_dynamo_sees_one_graph(gen):
    torch._dynamo.reset()
    K = 128
    module = QuantLinear(random_weight(4, K, 3, "signed", 0, gen), K, 0)
    explanation = torch._dynamo.explain(module)(torch.randn(2, K, generator=gen))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
