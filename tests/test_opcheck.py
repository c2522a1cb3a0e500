"""torch.library.opcheck on every op: schema, fake tensors, AOT dispatch."""

import pytest
import torch

from helpers import random_activation, random_codes, random_weight


def sample_inputs(gen):
    K, gs = 300, 64
    w = random_weight(7, K, 3, "bipolar", gs, gen)
    x = random_activation(5, K, torch.float32, gen)
    codes = random_codes(5, K, 4, gen)
    xq = torch.ops.apq.quantize_pack(x, 4, "unsigned", gs)
    return [
        (torch.ops.apq.pack.default, (codes, 4, gs)),
        (torch.ops.apq.unpack.default, (w[0], K)),
        (torch.ops.apq.quantize_pack.default, (x, 4, "unsigned", gs)),
        (torch.ops.apq.gemm.default, (xq[0], w[0], K)),
        (torch.ops.apq.qmatmul.default, (*xq, *w, K, gs, torch.randn(7, generator=gen), torch.bfloat16)),
        (torch.ops.apq.qmatmul.default, (*xq, *w, K, gs, None, torch.float32)),
        (torch.ops.apq.linear.default, (x.view(1, 5, K), *w, K, gs, 4, "bipolar", None)),
        (torch.ops.apq.linear.default, (x.half(), *w, K, gs, 8, "signed", torch.randn(7, generator=gen))),
    ]


@pytest.mark.parametrize("index", range(8))
def test_opcheck(index, gen):
    op, args = sample_inputs(gen)[index]
    torch.library.opcheck(op, args)
