"""torch.library.opcheck on every op and device: schema, fake tensors, AOT dispatch."""

import pytest
import torch

from apq_torch.quantization.hadamard import mix_matrix
from helpers import random_activation, random_codes, random_weight

K, GS = 300, 64


def sample_inputs(gen, to):
    w = to(*random_weight(7, K, 3, "bipolar", GS, gen))
    x = to(random_activation(5, K, torch.float32, gen))
    codes = to(random_codes(5, K, 4, gen))
    xq = torch.ops.apq.quantize_pack(x, 4, "unsigned", GS)
    bias = to(torch.randn(7, generator=gen))
    ones, mix12 = to(torch.ones(1, 1)), to(mix_matrix(192))  # 192 = 12 * 16
    wh = to(*random_weight(7, 192, 4, "bipolar", GS, gen))
    xh = to(random_activation(5, 192, torch.float32, gen))
    return {
        "pack": (torch.ops.apq.pack.default, (codes, 4, GS)),
        "unpack": (torch.ops.apq.unpack.default, (w[0], K)),
        "quantize_pack": (torch.ops.apq.quantize_pack.default, (x, 4, "unsigned", GS)),
        "gemm": (torch.ops.apq.gemm.default, (xq[0], w[0], K)),
        "qmatmul-bias-bf16": (torch.ops.apq.qmatmul.default, (*xq, *w, K, GS, bias, torch.bfloat16)),
        "qmatmul-fp32": (torch.ops.apq.qmatmul.default, (*xq, *w, K, GS, None, torch.float32)),
        "linear-3d": (torch.ops.apq.linear.default, (x.view(1, 5, K), *w, K, GS, 4, "bipolar", None)),
        "linear-half-bias": (torch.ops.apq.linear.default, (x.half(), *w, K, GS, 8, "signed", bias)),
        "hadamard": (torch.ops.apq.hadamard.default, (x[:, :256], ones)),
        "hadamard-mix-3d-half": (torch.ops.apq.hadamard.default, (xh.reshape(1, 5, 192).half(), mix12)),
        "quantize_pack-hadamard": (torch.ops.apq.quantize_pack.default, (xh, 4, "bipolar", GS, mix12)),
        "linear-hadamard": (torch.ops.apq.linear.default, (xh.view(1, 5, 192), *wh, 192, GS, 8, "unsigned", None, mix12)),
        "quantize_pack-clip": (torch.ops.apq.quantize_pack.default, (x, 4, "unsigned", GS, None, 0.9)),
        "linear-clip": (torch.ops.apq.linear.default, (x.view(1, 5, K), *w, K, GS, 4, "unsigned", None, None, 0.75)),
    }


@pytest.mark.parametrize("name", list(sample_inputs(torch.Generator(), lambda *t: t if len(t) > 1 else t[0])))
def test_opcheck(name, backend, gen):
    op, args = sample_inputs(gen, backend.to)[name]
    torch.library.opcheck(op, args)


def test_fakes_refuse_inconsistent_shapes_while_tracing(gen):
    from torch._subclasses.fake_tensor import FakeTensorMode

    w = random_weight(7, K, 3, "bipolar", GS, gen)
    xq = torch.ops.apq.quantize_pack(random_activation(5, K, torch.float32, gen), 4, "unsigned", GS)
    with FakeTensorMode() as mode:
        fw = [mode.from_tensor(t) for t in w]
        fx = [mode.from_tensor(t) for t in xq]
        with pytest.raises(RuntimeError, match="'x_planes' has 16 words per row but K=700 needs 24"):
            torch.ops.apq.gemm(fx[0], fw[0], 700)
        with pytest.raises(RuntimeError, match=r"'w_scale' must have shape \[7, 5\], got \[7, 3\]"):
            torch.ops.apq.qmatmul(*fx, fw[0], fw[1], fw[2][:, :3], fw[3], K, GS, None, torch.float32)
        with pytest.raises(RuntimeError, match=r"'x_rowsum' must have shape \[5, 5\]"):
            torch.ops.apq.qmatmul(fx[0], fx[1][:, :2], fx[2], fx[3], *fw, K, GS, None, torch.float32)
        with pytest.raises(RuntimeError, match="'x' must have last dimension K=300"):
            torch.ops.apq.linear(fx[2].view(5, 1)[:, :1], *fw, K, GS, 4, "bipolar", None)
