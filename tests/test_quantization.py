"""Weight quantizers (RTN, clip search, GPTQ), layer-wise mixed precision, APQConfig validation."""

import dataclasses

import pytest
import torch

from apq_torch import APQConfig, quantize_
from apq_torch.api.quantize import quantized_layers
from apq_torch.quantization import (allocate_bits, cosine_importance, gptq_quantize, group_params,
                                    mixed_precision_overrides, mixed_precision_plan, outlier_importance,
                                    quantize_weight)
from apq_torch.tools.models import decoder_linear_filter, tiny_llama

FORMAT_BITS = [(f, b) for f in ("unsigned", "signed", "bipolar") for b in (1, 2, 3, 4, 8)
               if not (f == "signed" and b == 1)]


@pytest.mark.parametrize("fmt,bits", FORMAT_BITS)
@pytest.mark.parametrize("group_size", [0, 64, 128])
def test_rtn_error_is_at_most_half_a_step(fmt, bits, group_size, gen):
    w = torch.randn(24, 200, generator=gen)
    q = quantize_weight(w, bits, fmt, group_size)
    assert q.codes.min() >= 0 and q.codes.max() < 2**bits
    span = 200 if group_size == 0 else group_size
    step = q.scale[:, torch.arange(200) // span]
    err = (q.dequantize() - w).abs()
    # signed clips its most negative values by at most one step; the rest round to nearest
    bound = 1.0 if fmt == "signed" else 0.5
    assert (err <= bound * step + 1e-6).all()


@pytest.mark.parametrize("fmt,bits", [("bipolar", 3), ("signed", 4), ("unsigned", 2)])
def test_values_on_the_grid_are_reproduced_exactly(fmt, bits, gen):
    q = quantize_weight(torch.randn(8, 128, generator=gen), bits, fmt, 64)
    w_grid = q.dequantize()
    again = quantize_weight(w_grid, bits, fmt, 64)
    torch.testing.assert_close(again.dequantize(), w_grid, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt,bits", [("bipolar", 2), ("signed", 3), ("unsigned", 3)])
def test_clip_search_never_increases_group_error(fmt, bits, gen):
    w = torch.randn(16, 256, generator=gen) ** 3  # heavy tails: clipping pays
    plain = quantize_weight(w, bits, fmt, 64)
    clipped = quantize_weight(w, bits, fmt, 64, clip_search=True)
    per_group = lambda q: ((q.dequantize() - w) ** 2).view(16, 4, 64).sum(-1)
    assert (per_group(clipped) <= per_group(plain) + 1e-6).all()
    assert per_group(clipped).sum() < 0.97 * per_group(plain).sum()


def test_gptq_with_identity_hessian_is_rtn(gen):
    w = torch.randn(12, 192, generator=gen)
    rtn = quantize_weight(w, 3, "bipolar", 64, clip_search=True)
    gptq = gptq_quantize(w, torch.eye(192), 3, "bipolar", 64, clip_search=True)
    assert torch.equal(gptq.codes, rtn.codes)
    assert torch.equal(gptq.scale, rtn.scale) and torch.equal(gptq.offset, rtn.offset)


@pytest.mark.parametrize("fmt", ["bipolar", "signed", "unsigned"])
def test_gptq_beats_rtn_on_correlated_inputs(fmt, gen):
    K, N, T = 128, 32, 2048
    mix = torch.randn(K, K, generator=gen) / K**0.5 + torch.eye(K)
    x = torch.randn(T, K, generator=gen) @ mix
    x[:, 5] *= 20  # one massive channel
    w = torch.randn(N, K, generator=gen)
    H = x.T @ x
    out_err = lambda q: ((x @ (q.dequantize() - w).T) ** 2).mean().item()
    rtn = quantize_weight(w, 3, fmt, 64)
    gptq = gptq_quantize(w, H, 3, fmt, 64)
    assert out_err(gptq) < 0.7 * out_err(rtn)
    assert gptq.codes.min() >= 0 and gptq.codes.max() < 8


def test_importance_weighted_clipping_favours_important_columns(gen):
    w = torch.randn(4, 64, generator=gen)
    importance = torch.ones(64)
    importance[0] = 1e6
    s_plain, _ = group_params(w, 2, "bipolar", 64, clip_search=True)
    s_imp, o_imp = group_params(w, 2, "bipolar", 64, clip_search=True, importance=importance)
    col0 = lambda s, o: (s[:, 0] * ((w[:, 0] / s[:, 0] - o[:, 0]).round().clamp(0, 3) + o[:, 0]) - w[:, 0]).abs()
    assert (col0(s_imp, o_imp) <= col0(s_plain, torch.full_like(s_plain, -1.5)) + 1e-6).all()


@pytest.mark.parametrize("field,value,match", [
    ("w_bits", 0, "w_bits must be an int between 1 and 8"),
    ("a_bits", 9, "a_bits must be an int between 1 and 8"),
    ("w_bits", 2.0, "w_bits must be an int"),
    ("w_format", "int", "w_format must be one of"),
    ("a_format", "fp8", "a_format must be one of"),
    ("group_size", 32, "group_size must be 0 .* multiple of 64"),
    ("group_size", -64, "group_size must be 0"),
    ("method", "awq", "method must be 'rtn' or 'gptq'"),
    ("clip_search", 1, "clip_search must be a bool"),
    ("refit_scales", "yes", "refit_scales must be a bool"),
    ("a_clip", 0.0, r"a_clip must be a clipping ratio in \(0, 1\]"),
    ("a_clip", 1.1, "a_clip must be a clipping ratio"),
    ("a_clip", float("nan"), "a_clip must be a clipping ratio"),
    ("a_clip", True, "a_clip must be a clipping ratio"),
    ("a_clip", "0.9", "a_clip must be a clipping ratio"),
])
def test_config_validation_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=f"APQConfig.{match}"):
        APQConfig(**{field: value})


def test_config_signed_needs_two_bits_and_round_trips():
    with pytest.raises(ValueError, match="APQConfig.w_format='signed' needs at least 2 bits"):
        APQConfig(w_bits=1, w_format="signed")
    c = APQConfig(w_bits=3, a_bits=6, w_format="signed", a_format="bipolar", group_size=0, clip_search=True,
                  method="gptq", a_clip=0.9)
    assert APQConfig.from_dict(c.to_dict()) == c and c.label().endswith(" aclip0.9")
    # a config saved before a_clip existed reads as no clipping
    old = {k: v for k, v in c.to_dict().items() if k != "a_clip"}
    assert APQConfig.from_dict(old).a_clip == 1.0
    assert dataclasses.replace(c, w_bits=2).w_bits == 2
    with pytest.raises(ValueError, match="no field"):
        APQConfig.from_dict({"version": APQConfig.VERSION, "w_bit": 3})
    with pytest.raises(ValueError, match="version None is not supported"):
        APQConfig.from_dict({"w_bits": 3})


@pytest.mark.parametrize("group_size", [32, 100, -64])
def test_weight_quantizers_share_the_kernels_group_rule(group_size, gen):
    with pytest.raises(ValueError, match="group_size must be 0 .* multiple of 64"):
        quantize_weight(torch.randn(4, 256, generator=gen), 4, "bipolar", group_size)
    with pytest.raises(ValueError, match="group_size must be 0 .* multiple of 64"):
        gptq_quantize(torch.randn(4, 256, generator=gen), torch.eye(256), 4, "bipolar", group_size)


def test_allocate_bits_meets_budget_and_follows_importance():
    importance = [0.1, 0.9, 0.5, 0.3]
    sizes = [100, 100, 100, 100]
    assert allocate_bits(importance, sizes, 2.5) == [2, 3, 3, 2]
    assert allocate_bits(importance, sizes, 3.0) == [2, 4, 4, 2]
    assert sum(b * s for b, s in zip(allocate_bits(importance, [10, 300, 50, 7], 3.3), [10, 300, 50, 7])) <= 3.3 * 367
    with pytest.raises(ValueError, match="outside the bit choices"):
        allocate_bits(importance, sizes, 5.0, choices=(2, 4))


@torch.no_grad()
def test_cosine_importance_is_one_minus_the_cosine_of_each_layers_input_and_output(gen):
    pytest.importorskip("transformers")
    model = tiny_llama(layers=4, hidden=64, intermediate=128, vocab=96)
    ids = torch.randint(0, 96, (1, 32), generator=gen)
    hidden = model(ids, output_hidden_states=True).hidden_states  # embeddings, then after each layer
    # the last entry is after the final norm: the last layer's output is recomputed by the hook
    want = [1 - torch.nn.functional.cosine_similarity(hidden[i], hidden[i + 1], dim=-1).mean().item()
            for i in range(3)]
    scores = cosine_importance(model, ids)
    assert len(scores) == 4
    assert scores[:3] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert len(set(round(s, 6) for s in scores)) == 4  # the layers differ


def test_mixed_precision_on_a_small_llama(gen):
    pytest.importorskip("transformers")
    model = tiny_llama(layers=4, hidden=64, intermediate=128, vocab=96)
    ids = torch.randint(0, 96, (1, 32), generator=gen)
    assert len(outlier_importance(list(model.model.layers))) == 4
    plan = mixed_precision_plan(model, 3.0, ids)
    assert plan.layer_names == [f"model.layers.{i}" for i in range(4)] and plan.average_bits <= 3.0
    overrides = mixed_precision_overrides(model, 3.0, ids)
    assert len(overrides) == 4 * 7
    quantize_(model, APQConfig(w_bits=4, a_bits=8, group_size=64), overrides=overrides, filter_fn=decoder_linear_filter)
    layers = quantized_layers(model)
    for name, m in layers.items():
        assert m.config.w_bits == plan.bits[int(name.split(".")[2])]
    assert {m.config.w_bits for m in layers.values()} == {2, 4}
