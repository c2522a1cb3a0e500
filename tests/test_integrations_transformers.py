"""transformers integration: quantize on load, save_pretrained / from_pretrained(dir) with no
extra argument (bit-identical outputs), generate (also static cache + torch.compile), GPTQ
through calibration and through prepare/convert, and untrusted checkpoints refused by name."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, CompileConfig  # noqa: E402

import apq_torch  # noqa: E402
from apq_torch import APQConfig, APQLinear, convert, prepare, quantize_  # noqa: E402
from apq_torch.api.quantize import quantized_layers  # noqa: E402
from apq_torch.integrations.checkpoint import FORMAT_VERSION  # noqa: E402
from apq_torch.integrations.transformers import APQTransformersConfig, attach_config  # noqa: E402
from apq_torch.tools.models import decoder_linear_filter, tiny_llama  # noqa: E402

W4 = dict(w_bits=4, a_bits=8, group_size=64)
VOCAB = 96


def small_llama(layers=2, seed=0):
    return tiny_llama(seed=seed, layers=layers, hidden=128, intermediate=192, vocab=VOCAB)


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("float")
    small_llama().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(7))


def same_weights(a, b):
    qa, qb = quantized_layers(a), quantized_layers(b)
    assert qa.keys() == qb.keys() and qa
    for name in qa:
        for buffer in ("w_planes", "w_rowsum", "w_scale", "w_offset"):
            assert torch.equal(getattr(qa[name], buffer), getattr(qb[name], buffer)), (name, buffer)
        assert qa[name].config == qb[name].config


def greedy(model, ids, **kwargs):
    return model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0, **kwargs)


def test_quantize_on_load_save_and_reload_with_no_argument(float_dir, ids, tmp_path):
    config = APQTransformersConfig(**W4, overrides={"model.layers.0.mlp.down_proj": {"w_bits": 2}})
    model = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=config)
    # the same layers and codes as apq_torch.quantize_ on the float model (lm_head stays float)
    reference = quantize_(AutoModelForCausalLM.from_pretrained(float_dir), APQConfig(**W4), decoder_linear_filter,
                          overrides={"model.layers.0.mlp.down_proj": {"w_bits": 2}})
    same_weights(model, reference)
    assert not isinstance(model.lm_head, APQLinear) and len(quantized_layers(model)) == 2 * 7
    assert model.config.quantization_config.layers["model.layers.0.mlp.down_proj"].w_bits == 2

    logits, tokens = model(ids).logits, greedy(model, ids)
    model.save_pretrained(tmp_path, max_shard_size="100KB")  # several shards: headers read from all
    entry = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert entry["quant_method"] == "apq" and entry["format_version"] == FORMAT_VERSION
    assert all(c["version"] == APQConfig.VERSION for c in entry["configs"]) and len(entry["configs"]) == 2
    assert sum(f.endswith(".safetensors") for f in os.listdir(tmp_path)) > 1

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    same_weights(reloaded, model)
    assert torch.equal(reloaded(ids).logits, logits)
    assert torch.equal(greedy(reloaded, ids), tokens)


def test_reload_in_bfloat16_keeps_the_scales_fp32(float_dir, ids, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=APQTransformersConfig(**W4))
    model.save_pretrained(tmp_path)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    layer = half.model.layers[1].self_attn.o_proj
    assert layer.w_scale.dtype == torch.float32 and half.model.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(layer.w_scale, model.model.layers[1].self_attn.o_proj.w_scale)
    out = half(ids).logits.float()
    assert ((out - model(ids).logits).norm() / model(ids).logits.norm()) < 0.05


def test_generate_with_static_cache_and_torch_compile(tmp_path, ids):
    small_llama(layers=1).save_pretrained(tmp_path / "f")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "f", quantization_config=APQTransformersConfig(**W4))
    eager = greedy(model, ids)
    assert torch.equal(greedy(model, ids, cache_implementation="static", disable_compile=True), eager)
    compile_config = CompileConfig(fullgraph=True, mode="default")
    compile_config._compile_all_devices = True  # transformers compiles generate() on CPU only when asked
    torch._dynamo.reset()
    assert torch.equal(greedy(model, ids, cache_implementation="static", compile_config=compile_config), eager)
    assert hasattr(model, "_compiled_call"), "generate() did not compile the forward"


def calibration_ids(count=3):
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(0, VOCAB, (1, 48), generator=gen) for _ in range(count)]


GPTQ = dict(w_bits=3, a_bits=8, group_size=64, method="gptq")


def test_gptq_on_load_with_calibration_data(float_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(
        float_dir, quantization_config=APQTransformersConfig(**GPTQ, calibration=calibration_ids()))
    reference = quantize_(AutoModelForCausalLM.from_pretrained(float_dir), APQConfig(**GPTQ), decoder_linear_filter,
                          calibration=calibration_ids())
    same_weights(model, reference)
    assert model.config.quantization_config.calibration is None  # used once, not kept
    rtn = quantize_(AutoModelForCausalLM.from_pretrained(float_dir), APQConfig(**{**GPTQ, "method": "rtn"}),
                    decoder_linear_filter)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.w_planes, rtn.model.layers[0].mlp.up_proj.w_planes)
    model.save_pretrained(tmp_path)
    assert "calibration" not in (tmp_path / "config.json").read_text()
    same_weights(AutoModelForCausalLM.from_pretrained(tmp_path), model)

    with pytest.raises(ValueError, match=r"method='gptq'\) needs calibration="):
        AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=APQTransformersConfig(**GPTQ))


def test_two_step_prepare_calibrate_convert_then_save(float_dir, ids, tmp_path):
    model = prepare(AutoModelForCausalLM.from_pretrained(float_dir), APQConfig(**GPTQ), decoder_linear_filter)
    with torch.no_grad():
        for batch in calibration_ids():  # the user's own loop
            model(batch)
    attach_config(convert(model))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    same_weights(reloaded, model)
    assert torch.equal(reloaded(ids).logits, model(ids).logits)

    with pytest.raises(ValueError, match="has no APQLinear layers"):
        attach_config(AutoModelForCausalLM.from_pretrained(float_dir))


@pytest.fixture(scope="module")
def saved_dir(float_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved")
    AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=APQTransformersConfig(**W4)).save_pretrained(path)
    return path


def tampered(saved_dir, tmp_path, edit_entry=None, edit_tensors=None):
    """A copy of the saved checkpoint with its quantization_config or tensors edited."""
    from safetensors.torch import load_file, save_file

    config = json.loads((saved_dir / "config.json").read_text())
    if edit_entry:
        edit_entry(config["quantization_config"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = load_file(saved_dir / "model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


Q = "model.layers.1.self_attn.q_proj"


@pytest.mark.parametrize("edit_entry,edit_tensors,match", [
    (lambda e: e.update(format_version=99), None, "format_version 99 is not supported"),
    (lambda e: e["configs"][0].update(version=7), None, "APQConfig version 7 is not supported"),
    (lambda e: e["configs"][0].update(w_bits=12), None, "APQConfig.w_bits must be an int between 1 and 8"),
    (lambda e: e["layers"].update({"model.layers.5.mlp.up_proj": 0}), None,
     "quantizes 'model.layers.5.mlp.up_proj', which LlamaForCausalLM does not have"),
    (lambda e: e["layers"].update({"model.norm": 0}), None, "has a LlamaRMSNorm there"),
    (lambda e: e["layers"].update({Q: 3}), None, r"layers\['model.layers.1.self_attn.q_proj'\] = 3 is not an index"),
    (None, lambda t: t.pop(f"{Q}.w_rowsum"), f"lacks tensor '{Q}.w_rowsum'"),
    (None, lambda t: t.update({f"{Q}.w_planes": t[f"{Q}.w_planes"][:3].clone()}),
     rf"tensor '{Q}.w_planes' is I32\[3, 128, 8\], but layer '{Q}' \(128 -> 128, W4A8"),
    (None, lambda t: t.update({f"{Q}.w_scale": t[f"{Q}.w_scale"].double()}), rf"'{Q}.w_scale' is F64\[128, 2\]"),
])
def test_untrusted_checkpoints_are_refused_by_name(saved_dir, tmp_path, edit_entry, edit_tensors, match):
    path = tampered(saved_dir, tmp_path, edit_entry, edit_tensors)
    with pytest.raises(ValueError, match=match):
        AutoModelForCausalLM.from_pretrained(path)


def test_import_apq_torch_alone_registers_without_importing_transformers(saved_dir):
    code = ("import sys, apq_torch; assert 'transformers' not in sys.modules; "
            "from transformers import AutoModelForCausalLM; "
            f"m = AutoModelForCausalLM.from_pretrained({str(saved_dir)!r}); "
            "print(type(m.model.layers[0].mlp.up_proj).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("APQLinear")
