"""Least-squares refit of group scales (apq_torch.quantization.refit): optimal for its codes,
never worse than the scales it starts from, codes untouched."""

import pytest
import torch

from apq_torch import APQConfig, quantize_
from apq_torch.api.quantize import quantized_layers
from apq_torch.quantization import gptq_quantize, quantize_weight
from apq_torch.quantization.refit import refit_scales
from apq_torch.quantization.rtn import QuantizedWeight

FORMATS = ["bipolar", "signed", "unsigned"]


def _weighted_error(q, w, H):
    d = (q.dequantize() - w).double()
    return (d * (d @ H.double())).sum(-1)  # per row


def _correlated(gen, K, T=1024):
    mix = torch.randn(K, K, generator=gen) / K**0.5 + torch.eye(K)
    x = torch.randn(T, K, generator=gen) @ mix
    x[:, 3] *= 10
    return x.T @ x


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("K,group_size", [(200, 64), (130, 0), (256, 128)])
@pytest.mark.parametrize("weighted", [False, True], ids=["identity", "hessian"])
def test_refit_keeps_codes_and_never_raises_any_rows_error(fmt, K, group_size, weighted, gen):
    w = torch.randn(24, K, generator=gen) ** 3
    H = _correlated(gen, K) if weighted else torch.eye(K)
    q = quantize_weight(w, 3, fmt, group_size, clip_search=True)
    r = refit_scales(q, w, H if weighted else None)
    assert torch.equal(r.codes, q.codes)
    before, after = _weighted_error(q, w, H), _weighted_error(r, w, H)
    assert (after <= before * (1 + 1e-6)).all()
    # rounding for one scale leaves a gain error the fit removes; under a correlated H the
    # per-group clipping search (blind to H) leaves much more
    assert after.sum() < (0.97 if weighted else 1.0) * before.sum()
    assert (r.scale > 0).all()
    if fmt != "unsigned":  # the symmetric formats keep their fixed offset
        assert torch.equal(r.offset, q.offset)


@pytest.mark.parametrize("fmt", FORMATS)
def test_refit_recovers_the_scales_of_weights_on_a_grid(fmt, gen):
    """w exactly on a grid of known codes: the refit finds that grid's scale (and, unsigned,
    its non-integer offset) from any starting scale."""
    N, K, g = 6, 192, 64
    codes = torch.randint(0, 8, (N, K), generator=gen)
    codes[:, ::g] = 0  # each group holds both ends of the code range
    codes[:, 1::g] = 7
    true_scale = torch.rand(N, K // g, generator=gen) + 0.5
    start = QuantizedWeight(codes, true_scale * 1.3, torch.full_like(true_scale, -3.5), 3, fmt, g)
    if fmt == "unsigned":
        true_offset = -torch.rand(N, K // g, generator=gen) * 7  # not an integer zero point
    else:
        true_offset = start.offset
    w = QuantizedWeight(codes, true_scale, true_offset, 3, fmt, g).dequantize()
    r = refit_scales(start, w, _correlated(gen, K))
    torch.testing.assert_close(r.scale, true_scale, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.offset, true_offset, rtol=1e-5, atol=1e-5)


def test_refit_lowers_the_output_error_of_gptq(gen):
    K = 128
    H = _correlated(gen, K)
    w = torch.randn(32, K, generator=gen)
    plain = gptq_quantize(w, H, 2, "bipolar", 64, clip_search=True)
    refit = gptq_quantize(w, H, 2, "bipolar", 64, clip_search=True, refit=True)
    assert torch.equal(refit.codes, plain.codes)
    assert _weighted_error(refit, w, H).sum() < 0.97 * _weighted_error(plain, w, H).sum()


def test_refit_scales_config_reaches_every_layer():
    from apq_torch.tools.models import decoder_linear_filter, tiny_llama

    make = lambda: tiny_llama(layers=1, hidden=128, intermediate=256, vocab=64)
    floats = {n: m.weight.detach().clone() for n, m in make().named_modules() if hasattr(m, "weight")}
    base = dict(w_bits=3, a_bits=8, w_format="unsigned", group_size=64)
    plain = quantized_layers(quantize_(make(), APQConfig(**base), decoder_linear_filter))
    refit = quantized_layers(quantize_(make(), APQConfig(**base, refit_scales=True), decoder_linear_filter))
    assert plain.keys() == refit.keys() and len(refit) == 7
    error = lambda layers, n: ((layers[n].dequantized_weight() - floats[n]) ** 2).sum().item()
    for name in refit:
        assert refit[name].config.refit_scales
        assert error(refit, name) < error(plain, name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rtn_refit_never_raises_a_groups_error(fmt, gen):
    w = torch.randn(16, 320, generator=gen) ** 3
    plain = quantize_weight(w, 3, fmt, 64, clip_search=True)
    refit = quantize_weight(w, 3, fmt, 64, clip_search=True, refit=True)
    per_group = lambda q: ((q.dequantize() - w) ** 2).view(16, 5, 64).sum(-1)
    assert (per_group(refit) <= per_group(plain) * (1 + 1e-6)).all()
    assert per_group(refit).sum() < per_group(plain).sum()
    assert refit.codes.min() >= 0 and refit.codes.max() < 8
