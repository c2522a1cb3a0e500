"""Hadamard matrices, the rotation of a decoder's residual stream (the rotated float model
computes the same logits), its refusals, and rotated models quantized, compiled and saved."""

import pytest
import torch
from torch import nn

import apq_torch
from apq_torch import APQConfig, APQLinear, quantize_
from apq_torch.quantization.hadamard import factor, paley, random_hadamard, sylvester
from apq_torch.quantization.rotation import HadamardLinear, RotationConfig, online_hadamard_linear, rotate_
from apq_torch.tools.models import decoder_linear_filter, tiny_llama

pytest.importorskip("transformers")


def small_llama(tie=True, seed=0):
    # hidden 96 = 12 * 8 and intermediate 160 = 20 * 8: Paley factors, as in SmolLM2 (576, 1536)
    return tiny_llama(seed=seed, layers=2, hidden=96, intermediate=160, vocab=80, heads=4, kv_heads=2,
                      tie_word_embeddings=tie)


def with_outliers(model):
    """Give the embeddings a few huge channels, as real LLMs have: rotation's reason to exist."""
    with torch.no_grad():
        model.model.embed_tokens.weight[:, :3] *= 40
    return model


def channel_spread(w):
    """Largest over median per-channel maximum of |w|."""
    a = w.abs().amax(0)
    return (a.max() / a.median()).item()


@pytest.mark.parametrize("n", [4, 8, 12, 20, 28, 36, 44, 60])
def test_paley_matrices_are_hadamard(n):
    h = paley(n)
    assert h is not None and set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n,m", [(64, 1), (576, 36), (1536, 12), (96, 12), (11008, 43), (14336, 28)])
def test_factor_and_random_hadamard(n, m):
    assert factor(n)[0] == m
    q = random_hadamard(n, seed=3) if n <= 2048 else None
    if q is not None:
        torch.testing.assert_close(q @ q.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)
        if m != 43:  # a true Hadamard matrix: every entry +-1/sqrt(n)
            torch.testing.assert_close(q.abs(), torch.full_like(q, n**-0.5), rtol=0, atol=1e-12)
    assert torch.equal(sylvester(4) @ sylvester(4), 4 * torch.eye(4, dtype=torch.float64))


@torch.no_grad()
def test_rotated_float_model_computes_the_same_logits(gen):
    model = with_outliers(small_llama(tie=True))
    ids = torch.randint(0, 80, (2, 24), generator=gen)
    before = model(ids).logits
    rotate_(model, RotationConfig(seed=5))
    after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())
    layer = model.model.layers[0]
    assert torch.equal(layer.input_layernorm.weight, torch.ones(96))  # folded into q/k/v
    assert torch.equal(model.model.norm.weight, torch.ones(96))
    assert model.lm_head.weight is not model.model.embed_tokens.weight and not model.config.tie_word_embeddings
    assert isinstance(layer.mlp.down_proj, HadamardLinear) and layer.mlp.down_proj.hadamard.shape == (20, 20)
    assert isinstance(layer.self_attn.o_proj, HadamardLinear) and layer.self_attn.o_proj.hadamard.shape == (12, 12)
    # the outlier channels are gone from the residual stream
    assert channel_spread(model.model.embed_tokens.weight) < 4 < 20 < channel_spread(with_outliers(small_llama()).model.embed_tokens.weight)


@torch.no_grad()
def test_rotation_as_a_quantize_step_then_quantized_compiled_and_saved(tmp_path, gen):
    model = with_outliers(small_llama(tie=True))
    ids = torch.randint(0, 80, (1, 16), generator=gen)
    reference = model(ids).logits
    quantize_(model, RotationConfig())
    quantize_(model, APQConfig(w_bits=8, a_bits=8, group_size=64), decoder_linear_filter)
    down = model.model.layers[1].mlp.down_proj
    assert isinstance(down, APQLinear) and down.hadamard is not None and "hadamard=20x8" in repr(down)
    out = model(ids).logits
    assert ((out - reference).norm() / reference.norm()).item() < 0.05
    path = tmp_path / "rotated.safetensors"
    apq_torch.save_quantized(model, path)
    reloaded = apq_torch.load_quantized(small_llama(tie=True, seed=9), path)
    saved, loaded = model.state_dict(), reloaded.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert torch.equal(reloaded(ids).logits, out)
    compiled = apq_torch.compile(model, fullgraph=True)  # the fused transform traces: no graph break
    got = compiled(ids).logits  # inductor's float order may flip a few activation codes
    assert ((got - out).norm() / out.norm()).item() < 1e-3
    assert model.half().model.layers[0].mlp.down_proj.hadamard.dtype == torch.float32


@torch.no_grad()
@pytest.mark.parametrize("w_bits,a_bits,ratio", [(8, 4, 0.75), (4, 4, 0.9)])
def test_rotation_lowers_the_quantization_error_of_a_model_with_outliers(w_bits, a_bits, ratio, gen):
    """The outliers are in the residual stream, so 4-bit activations gain (1.6-2.4x at W8A4,
    1.2-1.4x at W4A4 over seeds); this model's weights are Gaussian, without outliers to spread,
    so at W4A8 rotation only reshuffles the rounding (0.8-1.3x over seeds): not asserted."""
    ids = torch.randint(0, 80, (2, 24), generator=gen)
    reference = with_outliers(small_llama())(ids).logits
    config = APQConfig(w_bits=w_bits, a_bits=a_bits, group_size=64)

    def error(rotate):
        model = with_outliers(small_llama())
        if rotate:
            quantize_(model, RotationConfig())
        quantize_(model, config, decoder_linear_filter)
        return ((model(ids).logits - reference).norm() / reference.norm()).item()

    plain, rotated = error(False), error(True)
    assert rotated <= ratio * plain, (plain, rotated)


@torch.no_grad()
@pytest.mark.parametrize("K", [256, 576])
def test_online_hadamard_makes_4_bit_activations_with_outliers_usable(K, gen):
    linear = nn.Linear(K, 48)
    x = torch.randn(64, K, generator=gen)
    x[:, [3, 77]] *= 30  # massive channels, as in LLM activations, which the weights read softly
    linear.weight.data[:, [3, 77]] /= 30
    want = linear(x)
    online = online_hadamard_linear(linear)
    torch.testing.assert_close(online(x), want, rtol=1e-4, atol=1e-3)  # the same function in float
    config = APQConfig(w_bits=8, a_bits=4, group_size=64)
    plain, rotated = APQLinear.from_float(linear, config), APQLinear.from_float(online, config)
    error = lambda layer: ((layer(x) - want).norm() / want.norm()).item()
    assert error(rotated) < 0.5 * error(plain)


def test_rotation_refuses_what_it_cannot_handle():
    model = small_llama()
    model.model.layers[1].input_layernorm = nn.LayerNorm(96)
    with pytest.raises(ValueError, match=r"model.layers.1.input_layernorm \(LayerNorm\) (is not|does not compute)"):
        rotate_(model)
    model = small_llama()
    model.model.layers[0].extra = nn.Linear(96, 96)
    with pytest.raises(ValueError, match=r"cannot handle model.layers.0.extra \(Linear\)"):
        rotate_(model)
    model = small_llama()
    model.model.layers[0].mlp.down_proj = nn.Identity()
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.down_proj is Identity, not an nn.Linear"):
        rotate_(model)
    with pytest.raises(ValueError, match="no decoder layers found in Sequential"):
        rotate_(nn.Sequential(nn.Linear(4, 4)))
    rotated = rotate_(small_llama())
    with pytest.raises(ValueError, match="already rotated"):
        rotate_(rotated)
    with pytest.raises(ValueError, match="RotationConfig.online must be"):
        RotationConfig(online=("q_proj",))
    with pytest.raises(ValueError, match="takes no filter_fn"):
        quantize_(small_llama(), RotationConfig(), decoder_linear_filter)
