"""Activation clipping chosen on calibration data (APQConfig.a_clip_search,
apq_torch.quantization.act_clip): what it picks, that readers of one tensor agree, and how
quantize_ / prepare / convert carry it."""

import pytest
import torch
from torch import nn

import apq_torch
from apq_torch import APQConfig, APQLinear, quantize_
from apq_torch import reference as ref
from apq_torch.quantization.act_clip import ACT_CLIP_RATIOS, ActivationClipRecorder

pytest.importorskip("transformers")
from apq_torch.tools.models import decoder_linear_filter, tiny_llama  # noqa: E402


def output_error(x, w, bits, fmt, clip):
    scale, offset = ref.quant_params(x, bits, fmt, clip)
    x_hat = scale.unsqueeze(-1) * (ref.quantize(x, scale, offset, bits).float() + offset.unsqueeze(-1))
    return ((x_hat - x).double() @ w.double().T).pow(2).sum().item()


def searched_clip(x, w, bits, fmt):
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    layer.weight.data = w
    model = nn.Sequential(layer)
    recorder = ActivationClipRecorder(model, {"0": (bits, fmt)})
    model(x)
    recorder.remove()
    return recorder.choose()["0"]


@pytest.mark.parametrize("fmt", ["unsigned", "signed", "bipolar"])
def test_uniform_activations_are_not_clipped(fmt, gen):
    """Every clipped ratio saturates a uniform token's tails for no finer step worth it."""
    x = torch.rand(512, 64, generator=gen) * 2 - 1
    assert searched_clip(x, torch.randn(16, 64, generator=gen), 8, fmt) == 1.0


@pytest.mark.parametrize("fmt", ["unsigned", "signed", "bipolar"])
def test_heavy_tailed_activations_are_clipped_to_the_least_output_error(fmt, gen):
    x = torch.distributions.StudentT(2.0).sample((1024, 128))
    w = torch.randn(32, 128, generator=gen)
    clip = searched_clip(x, w, 3, fmt)
    assert clip < 1.0
    rows = x[::apq_torch.quantization.act_clip.TOKEN_STRIDE]
    errors = {c: output_error(rows, w, 3, fmt, c) for c in ACT_CLIP_RATIOS}
    assert errors[clip] == min(errors.values())


def test_recorder_drops_non_finite_tokens_and_names_unknown_layers(gen):
    """A NaN token has no scale to choose: it counts as nothing (as an all-zero token does)."""
    x = torch.distributions.StudentT(2.0).sample((512, 64))
    w = torch.randn(8, 64, generator=gen)
    poisoned, zeroed = x.clone(), x.clone()
    poisoned[8] = float("nan")  # a sampled token (every 8th)
    zeroed[8] = 0.0
    assert searched_clip(poisoned, w, 3, "unsigned") == searched_clip(zeroed, w, 3, "unsigned")
    with pytest.raises(ValueError, match="no such layers for the activation clipping search"):
        ActivationClipRecorder(nn.Sequential(nn.Linear(2, 2)), {"1": (4, "unsigned")})


def llama():
    return tiny_llama(layers=2, hidden=64, intermediate=128, vocab=96)


def calibration(n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 96, (2, 32), generator=g) for _ in range(n)]


SEARCH = APQConfig(w_bits=4, a_bits=4, group_size=64, a_clip_search=True)


def clips(model):
    return {name: m.config.a_clip for name, m in model.named_modules() if isinstance(m, APQLinear)}


def test_readers_of_one_tensor_share_one_searched_clip():
    model = quantize_(llama(), SEARCH, decoder_linear_filter, calibration=calibration())
    c = clips(model)
    assert len(c) == 14 and set(c.values()) <= set(ACT_CLIP_RATIOS)
    for i in range(2):
        p = f"model.layers.{i}."
        assert c[p + "self_attn.q_proj"] == c[p + "self_attn.k_proj"] == c[p + "self_attn.v_proj"]
        assert c[p + "mlp.gate_proj"] == c[p + "mlp.up_proj"]
    assert all(m.config.a_clip_search for m in model.modules() if isinstance(m, APQLinear))
    assert set(c.values()) != {1.0}, "4-bit activations of a random model: some input must clip"


def test_prepare_convert_searches_as_quantize_does():
    batches = calibration()
    direct = clips(quantize_(llama(), SEARCH, decoder_linear_filter, calibration=batches))
    model = apq_torch.prepare(llama(), SEARCH, decoder_linear_filter)
    with torch.no_grad():
        for ids in batches:
            model(ids)
    assert clips(apq_torch.convert(model)) == direct


def test_search_needs_calibration_input_ids():
    with pytest.raises(ValueError, match="a_clip_search=True needs calibration= input ids"):
        quantize_(llama(), SEARCH, decoder_linear_filter)
    with pytest.raises(ValueError, match="a_clip_search=True needs calibration= input ids"):
        quantize_(llama(), SEARCH, decoder_linear_filter, calibration={"model.layers.0.mlp.up_proj": torch.eye(64)})
    model = apq_torch.prepare(llama(), SEARCH, decoder_linear_filter)
    with pytest.raises(ValueError, match="no calibration data reached"):
        apq_torch.convert(model)


def test_search_feeds_gptq_and_the_compiled_model_shares_quantize_pack():
    """GPTQ layers with searched clips (sequential: the layers after a quantized one see its
    clipped activations) still stack q/k/v, and torch.compile still shares their quantize_pack."""
    from torch._inductor.utils import run_and_get_code

    config = APQConfig(w_bits=4, a_bits=4, group_size=64, a_clip_search=True, method="gptq")
    model = quantize_(llama(), config, decoder_linear_filter, calibration=calibration())
    torch._dynamo.reset()
    compiled = apq_torch.compile(model, fullgraph=True, dynamic=True)
    ids = torch.randint(0, 96, (2, 16))
    with torch.no_grad():
        logits, codes = run_and_get_code(lambda: compiled(ids).logits)
        torch.testing.assert_close(logits, model(ids).logits, rtol=1e-3, atol=5e-3)
    assert "\n".join(codes).count("torch.ops.apq.quantize_pack.default(") == 4
