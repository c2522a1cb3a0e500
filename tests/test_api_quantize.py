"""quantize_ (filter, overrides, warnings, GPTQ through calibration), prepare/convert, and the
weight footprint."""

import warnings

import pytest
import torch
from torch import nn

import apq_torch
from apq_torch import APQConfig, APQLinear, convert, prepare, quantize_, weight_footprint
from apq_torch.api.quantize import quantized_layers
from apq_torch.quantization import collect_hessians, gptq_quantize, quantize_weight
from apq_torch.tools.models import decoder_linear_filter, tiny_llama

pytest.importorskip("transformers")
GPTQ = APQConfig(w_bits=3, a_bits=8, group_size=64, clip_search=True, method="gptq")


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(200, 96), nn.GELU(), nn.Linear(96, 40, bias=False))


def small_llama(layers=3):
    return tiny_llama(layers=layers, hidden=64, intermediate=128, vocab=96, tie_word_embeddings=True)


def correlated_batches(gen, count=4, rows=64, K=200):
    mix = torch.randn(K, K, generator=gen) / K**0.5 + torch.eye(K)
    batches = [torch.randn(rows, K, generator=gen) @ mix for _ in range(count)]
    for b in batches:
        b[:, 5] *= 20  # one massive channel: where GPTQ beats rounding
    return batches


def test_quantize_replaces_linears_with_filter_and_overrides(gen):
    model = mlp()
    x = torch.randn(4, 200, generator=gen)
    float_out = model(x)
    quantize_(model, APQConfig(w_bits=8, a_bits=8, group_size=64), overrides={"2": {"w_bits": 4}})
    assert isinstance(model[0], APQLinear) and model[0].config.w_bits == 8
    assert isinstance(model[2], APQLinear) and model[2].config.w_bits == 4
    assert ((model(x) - float_out).norm() / float_out.norm()).item() < 0.1

    model = mlp()
    quantize_(model, APQConfig(), filter_fn=lambda m, name: name != "0")
    assert isinstance(model[0], nn.Linear) and not isinstance(model[0], APQLinear) and isinstance(model[2], APQLinear)

    model = mlp()
    quantize_(model, APQConfig(), overrides=lambda name, m: None if m.out_features == 40 else APQConfig(w_bits=2))
    assert model[0].config.w_bits == 2 and not isinstance(model[2], APQLinear)


def test_quantize_errors_and_warnings():
    with pytest.raises(ValueError, match=r"overrides name modules that do not exist: \['nope'\]"):
        quantize_(mlp(), APQConfig(), overrides={"nope": {"w_bits": 2}})
    with pytest.raises(TypeError, match="config must be an APQConfig"):
        quantize_(mlp(), {"w_bits": 4})
    with pytest.raises(ValueError, match="APQConfig.w_bits"):
        quantize_(mlp(), APQConfig(), overrides={"0": {"w_bits": 12}})
    with pytest.raises(ValueError, match="method='gptq' needs calibration"):
        quantize_(mlp(), APQConfig(method="gptq"))
    with pytest.raises(TypeError):
        APQConfig(4, 8)  # keyword-only

    class Conv1D(nn.Module):  # the GPT-2 style layer quantize_ cannot take
        def forward(self, x):
            return x

    model = nn.Sequential(nn.Linear(64, 64), Conv1D())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_(model, APQConfig())
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "1 (Conv1D is not an nn.Linear)" in messages[0]


def output_error(model, batches, reference):
    return sum(((model(x) - reference(x)) ** 2).sum().item() for x in batches)


def test_gptq_through_quantize_uses_the_calibration_and_beats_rounding(gen):
    batches = correlated_batches(gen)
    reference = mlp()
    gptq_model = quantize_(mlp(), GPTQ, calibration=batches)
    rtn_model = quantize_(mlp(), APQConfig(w_bits=3, a_bits=8, group_size=64, clip_search=True))
    # GPTQ ran (not a silent fall-back to rounding): other codes, and a smaller output error
    codes = lambda m: apq_torch.unpack(m[0].w_planes, 200)
    assert (codes(gptq_model) != codes(rtn_model)).float().mean() > 0.05
    with torch.no_grad():
        assert output_error(gptq_model, batches, reference) < 0.8 * output_error(rtn_model, batches, reference)


def test_prepare_calibrate_convert_equals_one_call(gen):
    batches = correlated_batches(gen)
    one_call = quantize_(mlp(), GPTQ, calibration=batches)
    model = prepare(mlp(), GPTQ)
    with torch.no_grad():
        for x in batches:  # the user's own loop, any batch shapes
            model(x)
    convert(model)
    assert not hasattr(model, "_apq_prepared")
    for a, b in zip(quantized_layers(model).values(), quantized_layers(one_call).values()):
        assert torch.equal(a.w_planes, b.w_planes) and torch.equal(a.w_scale, b.w_scale)
    with pytest.raises(ValueError, match="was not prepared"):
        convert(model)
    with pytest.raises(ValueError, match="no calibration data reached"):
        convert(prepare(mlp(), GPTQ))


def test_weight_footprint_counts_planes_and_float_rest():
    model = small_llama()
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    quantize_(model, APQConfig(w_bits=2, a_bits=8, group_size=64), filter_fn=decoder_linear_filter)
    fp = weight_footprint(model)
    assert fp["quantized_bytes"] == sum(m.nbytes for m in quantized_layers(model).values())
    assert fp["total_bytes"] < float_bytes
    assert fp["other_bytes"] > 0  # embeddings (tied with lm_head) and norms stay fp32


def test_gptq_layers_sharing_an_input_are_solved_together_with_the_same_result(gen):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k = nn.Linear(128, 48), nn.Linear(128, 16)

        def forward(self, x):
            return self.q(x).sum() + self.k(x).sum()

    torch.manual_seed(0)
    model = TwoHeads()
    batches = [torch.randn(32, 128, generator=gen) @ torch.randn(128, 128, generator=gen) for _ in range(3)]
    hessians = collect_hessians(model, batches, progress=False)
    assert hessians["q"] is hessians["k"]
    torch.testing.assert_close(hessians["q"], sum(x.T @ x for x in batches), rtol=1e-4, atol=1e-2)
    separate = {n: gptq_quantize(getattr(model, n).weight, hessians[n], 3, "bipolar", 64, True) for n in ("q", "k")}
    assert (separate["q"].codes != quantize_weight(model.q.weight, 3, "bipolar", 64, True).codes).any()
    quantize_(model, GPTQ, calibration=hessians)
    for n in ("q", "k"):
        codes = apq_torch.unpack(getattr(model, n).w_planes, 128)
        mismatch = (codes != separate[n].codes).float().mean().item()
        assert mismatch < 1e-3, (n, mismatch)  # identical up to float summation order
