"""What 4-bit activations cost SmolLM2-135M-Instruct, and what would cut it: the rotated model
with fp32 weights and its decoder layers' inputs fake-quantized in PyTorch (unsigned, zero point)
per token as the kernels do, per token with a clip ratio, and per group of 64 columns.

    python bench/activation_study_smollm2.py

Same text and windows as bench/accuracy_smollm2.py. Writes bench/results/activation-study-smollm2.md.
The variants other than "per token" are not what the kernels do: they measure what a change to
quantize_pack and the kernels' epilogues (activation clipping, per-group activation scales) would buy.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from torch import nn

from apq_torch import ops, quantize_
from apq_torch import reference as ref
from apq_torch.quantization.rotation import RotationConfig
from apq_torch.tools.eval import perplexity
from apq_torch.tools.models import calibration_and_eval_text, decoder_linear_filter, load_smollm2

RESULTS = os.path.join(os.path.dirname(__file__), "results")
VARIANTS = (("fp32 activations", None, 1.0, 0), ("A8 per token", 8, 1.0, 0), ("A6 per token", 6, 1.0, 0),
            ("A4 per token", 4, 1.0, 0), ("A4 per token, clip 0.9", 4, 0.9, 0),
            ("A4 per token, clip 0.8", 4, 0.8, 0), ("A4 per group of 64", 4, 1.0, 64))


def fake_quantize(x: torch.Tensor, bits: int, clip: float, group: int) -> torch.Tensor:
    """Unsigned with zero point over each row (or each group of ``group`` columns, each then
    treated as a row), the range scaled by ``clip``: the kernels' per-token quantization."""
    rows = x.reshape(-1, group) if group else x
    return ref.fake_quantize(rows, bits, "unsigned", clip).reshape(x.shape)


def with_activation_quantization(model: nn.Module, bits, clip: float, group: int) -> nn.Module:
    model = copy.deepcopy(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and decoder_linear_filter(module, name) and bits is not None:
            def forward(x, module=module):
                mix = getattr(module, "hadamard", None)
                if mix is not None:
                    x = ops.hadamard(x, mix)
                return F.linear(fake_quantize(x, bits, clip, group), module.weight, module.bias)
            module.forward = forward
    return model


def main():
    torch.manual_seed(0)
    model, tok = load_smollm2()
    _, eval_text = calibration_and_eval_text()
    rotated = quantize_(model, RotationConfig())
    lines = ["# SmolLM2-135M-Instruct: what activation quantization alone costs (rotated, fp32 weights)", "",
             "Written by `bench/activation_study_smollm2.py`: pydoc text, 4 windows of 512 tokens, every decoder "
             "linear layer's input fake-quantized (unsigned, zero point) after the rotation's online transforms. "
             "Only \"per token\" is what the kernels do.", "", "| activations | perplexity |", "|---|---:|"]
    for label, bits, clip, group in VARIANTS:
        ppl = perplexity(with_activation_quantization(rotated, bits, clip, group), tok, eval_text, 512, 4,
                         progress=False)
        print(f"{label:28s} {ppl:.3f}", flush=True)
        lines.append(f"| {label} | {ppl:.2f} |")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "activation-study-smollm2.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
