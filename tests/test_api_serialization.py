"""save_quantized / load_quantized: exact round trips, versions, and untrusted files refused
with an error naming what is wrong (never a crash inside a kernel)."""

import json

import pytest
import torch

from apq_torch import APQConfig, load_quantized, quantize_, save_quantized
from apq_torch.api.quantize import quantized_layers
from apq_torch.api.serialization import FORMAT_KEY, FORMAT_VERSION, METADATA_KEY
from apq_torch.tools.models import decoder_linear_filter, tiny_llama

pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


def small_llama(seed=0):
    return tiny_llama(seed=seed, layers=3, hidden=64, intermediate=128, vocab=96, tie_word_embeddings=True)


@pytest.fixture
def saved(tmp_path, gen):
    model = small_llama()
    quantize_(model, APQConfig(w_bits=4, a_bits=8, group_size=64), filter_fn=decoder_linear_filter,
              overrides={"model.layers.0.mlp.down_proj": {"w_bits": 2}})
    path = tmp_path / "model.safetensors"
    save_quantized(model, path)
    return model, path


def test_round_trip_of_a_whole_model_is_exact(saved, gen):
    model, path = saved
    ids = torch.randint(0, 96, (2, 17), generator=gen)
    loaded = load_quantized(small_llama(seed=1), path)  # different float weights: all must be overwritten
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.model.layers[0].mlp.down_proj.config.w_bits == 2
    assert len(quantized_layers(loaded)) == len(quantized_layers(model)) == 3 * 7


def rewrite(path, out, tensors=None, metadata=None):
    """A copy of the file at `path` with some tensors and metadata entries replaced."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        data = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    data.update(tensors or {})
    meta.update(metadata or {})
    safetensors_torch.save_file(data, str(out), metadata=meta)
    return out


def test_version_is_written_and_checked(saved, tmp_path, gen):
    model, path = saved
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    layers = json.loads(meta[METADATA_KEY])
    assert meta[FORMAT_KEY] == str(FORMAT_VERSION) == "2"
    assert all(cfg["version"] == APQConfig.VERSION for cfg in layers.values())
    # version 1 (before online Hadamard transforms) is version 2 without them: still loads
    v1 = rewrite(path, tmp_path / "v1.safetensors", metadata={FORMAT_KEY: "1"})
    ids = torch.randint(0, 96, (1, 9), generator=gen)
    assert torch.equal(load_quantized(small_llama(seed=2), v1)(ids).logits, model(ids).logits)
    future = rewrite(path, tmp_path / "future.safetensors", metadata={FORMAT_KEY: "99"})
    with pytest.raises(ValueError, match="format version '99'"):
        load_quantized(small_llama(), future)
    name = next(iter(layers))
    layers[name]["version"] = 7
    old_config = rewrite(path, tmp_path / "cfg.safetensors", metadata={METADATA_KEY: json.dumps(layers)})
    with pytest.raises(ValueError, match="APQConfig version 7 is not supported"):
        load_quantized(small_llama(), old_config)


@pytest.mark.parametrize("tamper,match", [
    (lambda t: t[:, :, :-8].contiguous(), r"tensor 'model.layers.1.self_attn.q_proj.w_planes' is I32\[4, 64, 0\]"),
    (lambda t: t.to(torch.int64), r"'model.layers.1.self_attn.q_proj.w_planes' is I64\[4, 64, 8\]"),
    (lambda t: t[:3].contiguous(), r"w_planes' is I32\[3, 64, 8\], but layer 'model.layers.1.self_attn.q_proj'"),
])
def test_tampered_tensors_are_named(saved, tmp_path, tamper, match):
    _, path = saved
    from safetensors import safe_open

    key = "model.layers.1.self_attn.q_proj.w_planes"
    with safe_open(str(path), framework="pt") as f:
        original = f.get_tensor(key)
    bad = rewrite(path, tmp_path / "bad.safetensors", tensors={key: tamper(original)})
    with pytest.raises(ValueError, match=match):
        load_quantized(small_llama(), bad)


def test_tampered_metadata_is_refused(saved, tmp_path):
    _, path = saved
    bad = rewrite(path, tmp_path / "bad.safetensors", metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ValueError, match="invalid layer metadata"):
        load_quantized(small_llama(), bad)
    unknown = rewrite(path, tmp_path / "u.safetensors",
                      metadata={METADATA_KEY: json.dumps({"model.layers.9.mlp.up_proj": APQConfig().to_dict()})})
    with pytest.raises(ValueError, match="quantizes 'model.layers.9.mlp.up_proj', which the model does not have"):
        load_quantized(small_llama(), unknown)
    safetensors_torch.save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not written by apq_torch.save_quantized"):
        load_quantized(small_llama(), tmp_path / "other.safetensors")
