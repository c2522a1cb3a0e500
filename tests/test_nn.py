"""APQLinear, quantize_, overrides, state_dict and safetensors round trips, mixed precision."""

import warnings

import pytest
import torch
from torch import nn

import apq_torch
from apq_torch import reference as ref
from apq_torch.api import quantize_, quantized_layers, weight_footprint
from apq_torch.config import APQConfig
from apq_torch.mixed import allocate_bits, cosine_importance, mixed_precision_overrides, outlier_importance
from apq_torch.nn import APQLinear
from apq_torch.serialization import load_quantized, save_quantized


def tiny_llama(seed=0, layers=3):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(200, 96), nn.GELU(), nn.Linear(96, 40, bias=False))


@pytest.mark.parametrize("config", [APQConfig(4, 8, "bipolar", "unsigned", 64), APQConfig(3, 6, "signed", "signed", 0, True),
                                    APQConfig(2, 4, "unsigned", "bipolar", 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apqlinear_matches_fp64_product_of_its_quantized_operands(config, dtype, gen):
    linear = nn.Linear(200, 33).to(dtype)
    q = APQLinear.from_float(linear, config)
    x = torch.randn(2, 5, 200, generator=gen).to(dtype)
    y = q(x)
    assert y.dtype == dtype and y.shape == (2, 5, 33)
    planes, _, sx, ox = apq_torch.quantize_pack(x.reshape(-1, 200), config.a_bits, config.a_format, config.group_size)
    x_hat = ref.dequantize(planes, 200, sx, ox, config.group_size)
    want = (x_hat @ q.dequantized_weight().double().T + linear.bias.double()).view(2, 5, 33)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.double(), want.to(dtype).double(), rtol=tol, atol=tol * want.abs().max().item())


def test_apqlinear_repr_footprint_and_state_dict_round_trip(gen):
    config = APQConfig(3, 8, "bipolar", "unsigned", 64)
    q = APQLinear.from_float(nn.Linear(300, 20), config)
    text = repr(q)
    assert "w_bits=3 (bipolar)" in text and "a_bits=8 (unsigned)" in text and "group_size=64" in text
    G = 5
    assert q.nbytes == 3 * 20 * 16 * 4 + 20 * G * (4 + 4 + 4) + 20 * 4
    fresh = APQLinear(300, 20, True, config)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(7, 300, generator=gen)
    assert torch.equal(fresh(x), q(x))


def test_quantize_replaces_linears_with_filter_and_overrides(gen):
    model = mlp()
    x = torch.randn(4, 200, generator=gen)
    float_out = model(x)
    quantize_(model, APQConfig(8, 8, "bipolar", "unsigned", 64), overrides={"2": {"w_bits": 4}})
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

    class Conv1D(nn.Module):  # the GPT-2 style layer quantize_ cannot take
        def forward(self, x):
            return x

    model = nn.Sequential(nn.Linear(64, 64), Conv1D())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_(model, APQConfig())
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "1 (Conv1D is not an nn.Linear)" in messages[0]


def test_gptq_through_quantize_uses_calibration(gen):
    model = mlp()
    batches = [torch.randn(64, 200, generator=gen) for _ in range(4)]
    quantize_(model, APQConfig(3, 8, "bipolar", "unsigned", 64, True, "gptq"), calibration=batches)
    assert all(isinstance(m, APQLinear) for m in (model[0], model[2]))


def test_safetensors_round_trip_of_a_whole_model_is_exact(tmp_path, gen):
    model = tiny_llama()
    quantize_(model, APQConfig(4, 8, "bipolar", "unsigned", 64), overrides={"model.layers.0.mlp.down_proj": {"w_bits": 2}})
    ids = torch.randint(0, 96, (2, 17), generator=gen)
    want = model(ids).logits
    path = tmp_path / "model.safetensors"
    save_quantized(model, str(path))
    loaded = load_quantized(tiny_llama(seed=1), str(path))  # different float weights: all must be overwritten
    assert torch.equal(loaded(ids).logits, want)
    assert loaded.model.layers[0].mlp.down_proj.config.w_bits == 2
    assert len(quantized_layers(loaded)) == len(quantized_layers(model))
    with pytest.raises(ValueError, match="not written by apq_torch.save_quantized"):
        from safetensors.torch import save_file
        save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        load_quantized(tiny_llama(), str(tmp_path / "other.safetensors"))


def test_weight_footprint_counts_planes_and_float_rest():
    model = tiny_llama()
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    quantize_(model, APQConfig(2, 8, "bipolar", "unsigned", 64), filter_fn=lambda m, n: ".layers." in n)
    fp = weight_footprint(model)
    assert fp["quantized_bytes"] == sum(m.nbytes for m in quantized_layers(model).values())
    assert fp["total_bytes"] < float_bytes
    assert fp["other_bytes"] > 0  # embeddings (tied with lm_head) and norms stay fp32


def test_allocate_bits_meets_budget_and_follows_importance():
    importance = [0.1, 0.9, 0.5, 0.3]
    sizes = [100, 100, 100, 100]
    bits = allocate_bits(importance, sizes, 2.5)
    assert bits == [2, 3, 3, 2]
    bits = allocate_bits(importance, sizes, 3.0)
    assert bits == [2, 4, 4, 2]
    assert sum(b * s for b, s in zip(allocate_bits(importance, [10, 300, 50, 7], 3.3), [10, 300, 50, 7])) <= 3.3 * 367
    with pytest.raises(ValueError, match="outside the bit choices"):
        allocate_bits(importance, sizes, 5.0, choices=(2, 4))


def test_mixed_precision_on_a_small_llama(gen):
    model = tiny_llama(layers=4)
    ids = torch.randint(0, 96, (1, 32), generator=gen)
    scores = cosine_importance(model, ids)
    assert len(scores) == 4 and all(0.0 <= s <= 2.0 for s in scores)
    assert len(outlier_importance(list(model.model.layers))) == 4
    base = APQConfig(4, 8, "bipolar", "unsigned", 64)
    overrides = mixed_precision_overrides(model, base, 3.0, ids)
    assert len(overrides) == 4 * 7
    quantize_(model, base, overrides=overrides, filter_fn=lambda m, n: ".layers." in n)
    layers = quantized_layers(model).values()
    avg = sum(m.config.w_bits * m.in_features * m.out_features for m in layers) / \
        sum(m.in_features * m.out_features for m in layers)
    assert avg <= 3.0 and {m.config.w_bits for m in layers} == {2, 4}


def test_gptq_layers_sharing_an_input_are_solved_together_with_the_same_result(gen):
    from apq_torch.gptq import collect_hessians, gptq_quantize

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
    cfg = APQConfig(3, 8, "bipolar", "unsigned", 64, True, "gptq")
    separate = {n: gptq_quantize(getattr(model, n).weight, hessians[n], 3, "bipolar", 64, True) for n in ("q", "k")}
    quantize_(model, cfg, calibration=hessians)
    for n in ("q", "k"):
        codes = apq_torch.unpack(getattr(model, n).w_planes, 128)
        mismatch = (codes != separate[n].codes).float().mean().item()
        assert mismatch < 1e-3, (n, mismatch)  # identical up to float summation order
