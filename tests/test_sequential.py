"""Sequential (layer-by-layer) GPTQ: stages in call order, the first stage identical to one-pass
GPTQ, later layers calibrated on quantized inputs (and better for it), prepare/convert."""

import pytest
import torch

import apq_torch
from apq_torch import APQConfig, convert, prepare, quantize_
from apq_torch.api.quantize import quantized_layers
from apq_torch.quantization import decoder_layers
from apq_torch.quantization.sequential import LayerInputRecorder, StopForward, _stages
from apq_torch.tools.models import decoder_linear_filter, tiny_llama

pytest.importorskip("transformers")
GPTQ = APQConfig(w_bits=2, a_bits=8, group_size=64, method="gptq")


def small_llama(seed=0):
    return tiny_llama(seed=seed, layers=3, hidden=64, intermediate=128, vocab=96)


def batches(gen, count):
    return [torch.randint(0, 96, (2, 32), generator=gen) for _ in range(count)]


def codes(model, name):
    m = model.get_submodule(name)
    return apq_torch.unpack(m.w_planes, m.in_features)


@pytest.fixture(scope="module")
def quantized():
    """(calibration, held-out batches, sequential GPTQ model, one-pass GPTQ model), built once."""
    gen = torch.Generator().manual_seed(0)
    calib, held_out = batches(gen, 8), batches(gen, 4)
    sequential = quantize_(small_llama(), GPTQ, decoder_linear_filter, calibration=calib)
    one_pass = quantize_(small_llama(), GPTQ, decoder_linear_filter, calibration=calib, sequential=False)
    return calib, held_out, sequential, one_pass


@torch.no_grad()
def test_stages_follow_the_call_order_and_shared_inputs(gen):
    model = small_llama()
    layer = model.model.layers[1]
    recorder = LayerInputRecorder(layer, stop=True)
    with pytest.raises(StopForward):
        model(batches(gen, 1)[0], use_cache=False)
    recorder.remove()
    names = [f"model.layers.1.{n}" for n in ("mlp.down_proj", "self_attn.v_proj", "mlp.up_proj", "self_attn.q_proj",
                                               "self_attn.o_proj", "self_attn.k_proj", "mlp.gate_proj")]
    stages = _stages(model, layer, names, recorder.inputs)
    short = [[n.split(".")[-1] for n in stage] for stage in stages]
    assert short == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]


def test_sequential_gptq_starts_like_one_pass_then_sees_quantized_inputs(quantized):
    _, _, sequential, one_pass = quantized
    # layer 0's q/k/v read the float embeddings either way: the same Hessian, the same codes
    for n in ("q_proj", "k_proj", "v_proj"):
        name = f"model.layers.0.self_attn.{n}"
        assert (codes(sequential, name) != codes(one_pass, name)).float().mean() < 1e-3
    # everything after them was calibrated on quantized inputs
    for name in ("model.layers.0.self_attn.o_proj", "model.layers.2.mlp.down_proj"):
        assert (codes(sequential, name) != codes(one_pass, name)).float().mean() > 0.05


@torch.no_grad()
def test_sequential_gptq_beats_one_pass_at_two_bits(quantized):
    """Two-bit weights move every layer's output far from the float one; a layer calibrated
    on the float inputs then optimizes for inputs it never sees (here 0.83x the error)."""
    _, held_out, sequential, one_pass = quantized
    reference = small_llama()

    def error(model):
        return sum(((model(ids).logits - reference(ids).logits) ** 2).sum().item() for ids in held_out)

    assert error(sequential) < 0.95 * error(one_pass)


@torch.no_grad()
def test_prepare_convert_runs_sequential_gptq_on_the_recorded_inputs(quantized):
    calib, _, one_call, _ = quantized
    model = prepare(small_llama(), GPTQ, decoder_linear_filter)
    for ids in calib:  # the user's loop: full forward passes, KV cache and all
        model(ids)
    convert(model)
    for name, layer in quantized_layers(one_call).items():
        assert torch.equal(codes(model, name), codes(one_call, name)), name
    assert len(decoder_layers(model)) == 3


def test_sequential_gptq_refusals():
    with pytest.raises(ValueError, match="no calibration data reached the first decoder layer"):
        convert(prepare(small_llama(), GPTQ, decoder_linear_filter))
    with pytest.raises(ValueError, match="sequential=True needs calibration input ids"):
        quantize_(small_llama(), GPTQ, decoder_linear_filter, calibration={}, sequential=True)
    with pytest.raises(ValueError, match="sequential=True needs a model with decoder layers"):
        quantize_(torch.nn.Sequential(torch.nn.Linear(64, 64)), GPTQ, calibration=[torch.randn(4, 64)],
                  sequential=True)
