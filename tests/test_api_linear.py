"""APQLinear: its product, repr, state dict, and behaving like an nn.Module under .to()/.half()."""

import pytest
import torch
from torch import nn

import apq_torch
from apq_torch import APQConfig, APQLinear
from apq_torch import reference as ref
from helpers import Fp64Product, assert_within, qmatmul_error_bound

CONFIGS = [APQConfig(w_bits=4, a_bits=8, w_format="bipolar", a_format="unsigned", group_size=64),
           APQConfig(w_bits=3, a_bits=6, w_format="signed", a_format="signed", group_size=0, clip_search=True),
           # refitted zero points are not integers: every kernel must take them as they are
           APQConfig(w_bits=2, a_bits=4, w_format="unsigned", a_format="bipolar", group_size=128, refit_scales=True),
           APQConfig(w_bits=4, a_bits=4, w_format="bipolar", a_format="unsigned", group_size=64, a_clip=0.9)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.label())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_apqlinear_matches_fp64_product_of_its_quantized_operands(config, dtype, device, gen):
    linear = nn.Linear(200, 33).to(dtype)
    q = APQLinear.from_float(linear, config).to(device)
    x = torch.randn(2, 5, 200, generator=gen).to(dtype)
    y = q(x.to(device))
    assert y.dtype == dtype and y.shape == (2, 5, 33)
    xq = apq_torch.quantize_pack(x.reshape(-1, 200), config.a_bits, config.a_format, config.group_size, None,
                                 config.a_clip)
    w = (q.w_planes, q.w_rowsum, q.w_scale, q.w_offset)
    want = Fp64Product(xq, w, 200, config.group_size, linear.bias)
    w_hat = ref.dequantize(q.w_planes.cpu(), 200, q.w_scale.cpu(), q.w_offset.cpu(), config.group_size)
    assert torch.equal(q.dequantized_weight().cpu(), w_hat.float())
    bound = qmatmul_error_bound(want, dtype, device)
    assert_within(y.reshape(-1, 33), want.y, bound, "APQLinear")


def test_apqlinear_repr_footprint_and_state_dict_round_trip(gen):
    config = APQConfig(w_bits=3, a_bits=8, group_size=64)
    q = APQLinear.from_float(nn.Linear(300, 20), config)
    text = repr(q)
    assert "w_bits=3 (bipolar)" in text and "a_bits=8 (unsigned)" in text and "group_size=64" in text
    G = 5
    assert q.nbytes == 3 * 20 * 16 * 4 + 20 * G * (4 + 4 + 4) + 20 * 4
    fresh = APQLinear(300, 20, True, config)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(7, 300, generator=gen)
    assert torch.equal(fresh(x), q(x))


@pytest.mark.parametrize("cast", ["to_bf16", "half", "to_device_and_fp16", "double_then_float"])
def test_dtype_casts_keep_fp32_scales_and_the_model_runs(cast, device, gen):
    config = APQConfig(w_bits=4, a_bits=8, group_size=64)
    model = nn.Sequential(nn.Linear(256, 64), nn.GELU(), nn.Linear(64, 16))
    apq_torch.quantize_(model, config)
    scales = [m.w_scale.clone() for m in model if isinstance(m, APQLinear)]
    cast_model = {"to_bf16": lambda m: m.to(device, torch.bfloat16), "half": lambda m: m.to(device).half(),
                  "to_device_and_fp16": lambda m: m.to(device=device, dtype=torch.float16),
                  "double_then_float": lambda m: m.double().float().to(device)}[cast]
    cast_model(model)
    layers = [m for m in model if isinstance(m, APQLinear)]
    for layer, before in zip(layers, scales):
        assert layer.w_scale.dtype == torch.float32 and layer.w_offset.dtype == torch.float32
        assert torch.equal(layer.w_scale.cpu(), before), "a cast must not round the scales"
        assert layer.w_planes.dtype == torch.int32 and layer.w_planes.device.type == device
    dtype = layers[0].bias.dtype
    y = model(torch.randn(3, 256, generator=gen).to(device, dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
