"""Whole quantized models under torch.compile on every device: no graph break, no recompile on
new shapes, the shared-activation-quantization pass, torch.export, CUDA graphs on cuda."""

import re

import pytest
import torch
import torch._dynamo.testing
from torch._inductor.utils import run_and_get_code

import apq_torch
from apq_torch import APQConfig, quantize_
from apq_torch.api.compile import ShareActivationQuantization
from apq_torch.tools.models import decoder_linear_filter, tiny_llama

pytest.importorskip("transformers")
LAYERS = 2


def quantized_llama(device="cpu"):
    model = tiny_llama(layers=LAYERS, hidden=64, intermediate=128, vocab=96).to(device)
    return quantize_(model, APQConfig(w_bits=4, a_bits=8, group_size=64), filter_fn=decoder_linear_filter)


def op_calls(code: str) -> dict:
    calls = re.findall(r"= torch\.ops\.apq\.(\w+)\.default\(", code)
    return {name: calls.count(name) for name in ("linear", "quantize_pack", "qmatmul")}


@torch.no_grad()
def test_quantized_llama_has_no_graph_break(device):
    model = quantized_llama(device)
    explanation = torch._dynamo.explain(model)(torch.randint(0, 96, (2, 16), device=device))
    assert explanation.graph_break_count == 0, explanation.break_reasons


@torch.no_grad()
def test_compiled_llama_matches_eager_without_recompiling(device):
    torch._dynamo.reset()
    model = quantized_llama(device)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counter)
    frames = None
    for batch, seq in [(2, 16), (3, 16), (2, 24), (5, 33)]:
        ids = torch.randint(0, 96, (batch, seq), device=device)
        torch.testing.assert_close(compiled(ids).logits, model(ids).logits, rtol=1e-3, atol=5e-3)
        frames = frames or counter.frame_count
        assert counter.frame_count == frames, f"recompiled at batch={batch} seq={seq}"


@torch.no_grad()
@pytest.mark.parametrize("share", [True, False])
def test_activation_quantized_once_per_shared_input(share, device):
    torch._dynamo.reset()
    model = quantized_llama(device)
    compiled = apq_torch.compile(model, fullgraph=True, dynamic=True, share_activation_quantization=share)
    ids = torch.randint(0, 96, (2, 16), device=device)
    logits, codes = run_and_get_code(lambda: compiled(ids).logits)
    calls = op_calls("\n".join(codes))
    if share:  # q/k/v share one quantize_pack, gate/up another; o_proj and down_proj stay linear
        assert calls == {"linear": 2 * LAYERS, "quantize_pack": 2 * LAYERS, "qmatmul": 5 * LAYERS}, calls
    else:
        assert calls == {"linear": 7 * LAYERS, "quantize_pack": 0, "qmatmul": 0}, calls
    torch.testing.assert_close(logits, model(ids).logits, rtol=1e-3, atol=5e-3)


@torch.no_grad()
def test_shared_activation_quantization_keys_on_the_clip(device):
    """q_proj clips its 4-bit activations at 0.5, every other layer at 0.9: k/v still share
    one quantize_pack (with their clip), q keeps its own linear, and the result is eager's."""
    torch._dynamo.reset()
    model = tiny_llama(layers=LAYERS, hidden=64, intermediate=128, vocab=96).to(device)
    quantize_(model, APQConfig(w_bits=4, a_bits=4, group_size=64, a_clip=0.9), filter_fn=decoder_linear_filter,
              overrides=lambda name, module: {"a_clip": 0.5} if name.endswith("q_proj") else {})
    compiled = apq_torch.compile(model, fullgraph=True, dynamic=True)
    ids = torch.randint(0, 96, (2, 16), device=device)
    logits, codes = run_and_get_code(lambda: compiled(ids).logits)
    calls = op_calls("\n".join(codes))
    assert calls == {"linear": 3 * LAYERS, "quantize_pack": 2 * LAYERS, "qmatmul": 4 * LAYERS}, calls
    torch.testing.assert_close(logits, model(ids).logits, rtol=1e-3, atol=5e-3)


def test_compile_refuses_a_second_post_grad_pass():
    with pytest.raises(ValueError, match="post_grad_custom_post_pass"):
        apq_torch.compile(torch.nn.Linear(2, 2), options={"post_grad_custom_post_pass": object()})


def test_pass_uuid_is_stable():
    assert ShareActivationQuantization().uuid() == ShareActivationQuantization().uuid()


@torch.no_grad()
def test_export_of_a_quantized_module_runs(device, gen):
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.SiLU(), torch.nn.Linear(64, 32)).to(device)
    quantize_(model, APQConfig(w_bits=3, a_bits=8, group_size=64))
    x = torch.randn(5, 128, generator=gen).to(device)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    assert any(n.target is torch.ops.apq.linear.default for n in exported.graph.nodes)
    for rows in (5, 17):
        x = torch.randn(rows, 128, generator=gen).to(device)
        assert torch.equal(exported.module()(x), model(x))


@pytest.mark.cuda
@torch.no_grad()
def test_reduce_overhead_cuda_graphs():
    torch._dynamo.reset()
    model = quantized_llama("cuda")
    compiled = apq_torch.compile(model, mode="reduce-overhead", fullgraph=True)
    ids = torch.randint(0, 96, (2, 16), device="cuda")
    for _ in range(3):  # warm-up, record, replay
        out = compiled(ids).logits
    torch.testing.assert_close(out, model(ids).logits, rtol=1e-3, atol=5e-3)
