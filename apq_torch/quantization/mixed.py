"""Layer-wise mixed precision, after "Layer-Wise Quantization: A Pragmatic and Effective Method
for Quantizing LLMs Beyond Integer Bit-Levels" (Dumitru et al., 2024): rank the decoder
layers by importance and give the more important ones more bits, so that the average bits
per weight meets a (possibly fractional) budget.

Importance, per decoder layer:
  "cosine"   1 - cos(input hidden state, output hidden state), averaged over the tokens of
             calibration text: how much the layer changes the residual stream;
  "outliers" the fraction of the layer's linear weights whose magnitude exceeds
             ``factor`` times the layer's mean magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM (``model.model.layers``)."""
    for path in ("model.layers", "transformer.h", "model.decoder.layers", "layers"):
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError("could not find the decoder layers; pass layers= explicitly")


@torch.no_grad()
def cosine_importance(model: nn.Module, input_ids: torch.Tensor, layers: Optional[Sequence[nn.Module]] = None) -> list[float]:
    """1 - mean cosine similarity between each layer's input and output hidden states."""
    layers = list(layers if layers is not None else decoder_layers(model))
    scores = [0.0] * len(layers)

    def hook(index):
        def fn(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, (tuple, list)) else output
            cos = nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
            scores[index] = 1.0 - cos.mean().item()
        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        model(input_ids)
    finally:
        for h in handles:
            h.remove()
    return scores


def outlier_importance(layers: Sequence[nn.Module], factor: float = 6.0) -> list[float]:
    """Fraction of each layer's linear weights with |w| > factor * mean |w| of that layer."""
    scores = []
    for layer in layers:
        weights = [m.weight.detach().float().flatten() for m in layer.modules() if isinstance(m, nn.Linear)]
        if not weights:
            raise ValueError(f"{type(layer).__name__} holds no nn.Linear")
        w = torch.cat(weights).abs()
        scores.append((w > factor * w.mean()).float().mean().item())
    return scores


def allocate_bits(importance: Sequence[float], sizes: Sequence[int], budget: float,
                  choices: Optional[tuple[int, int]] = None) -> list[int]:
    """Two tiers of bits: the most important layers get ``hi``, the rest ``lo``, as many ``hi``
    as the budget allows (average bits per weight, weighted by ``sizes``, <= budget).

    ``choices`` defaults to (floor, ceil) of a fractional budget and (budget - 1, budget + 1)
    of an integral one, so that every budget mixes two precisions.
    """
    if len(importance) != len(sizes) or not importance:
        raise ValueError("importance and sizes must be non-empty and of equal length")
    if choices is None:
        lo, hi = (math.floor(budget), math.ceil(budget)) if budget != int(budget) else (int(budget) - 1, int(budget) + 1)
    else:
        lo, hi = choices
    if not 1 <= lo < hi <= 8:
        raise ValueError(f"bit choices must satisfy 1 <= lo < hi <= 8, got ({lo}, {hi})")
    if not lo <= budget <= hi:
        raise ValueError(f"budget {budget} is outside the bit choices ({lo}, {hi})")
    total = float(sum(sizes))
    bits = [lo] * len(sizes)
    spent = lo * total
    for i in sorted(range(len(sizes)), key=lambda i: -importance[i]):
        extra = (hi - lo) * sizes[i]
        if spent + extra <= budget * total + 1e-9:
            bits[i] = hi
            spent += extra
    return bits


@dataclass
class MixedPrecisionPlan:
    """Bits per decoder layer: its importance, its linear weight count and its bits."""
    layer_names: list[str]
    importance: list[float]
    sizes: list[int]
    bits: list[int]

    @property
    def average_bits(self) -> float:
        return sum(b * s for b, s in zip(self.bits, self.sizes)) / sum(self.sizes)


def mixed_precision_plan(model: nn.Module, budget: float, input_ids: Optional[torch.Tensor] = None,
                         method: str = "cosine", choices: Optional[tuple[int, int]] = None,
                         layers: Optional[Sequence[nn.Module]] = None) -> MixedPrecisionPlan:
    """Rank the decoder layers by ``method`` ("cosine" needs ``input_ids``, calibration
    tokens [B, T]; "outliers" reads the weights) and allocate bits for ``budget``."""
    layers = list(layers if layers is not None else decoder_layers(model))
    if method == "cosine":
        if input_ids is None:
            raise ValueError("method='cosine' needs input_ids (calibration tokens)")
        importance = cosine_importance(model, input_ids, layers)
    elif method == "outliers":
        importance = outlier_importance(layers)
    else:
        raise ValueError(f"method must be 'cosine' or 'outliers', got {method!r}")
    sizes = [sum(m.weight.numel() for m in layer.modules() if isinstance(m, nn.Linear)) for layer in layers]
    names = {id(m): n for n, m in model.named_modules()}
    return MixedPrecisionPlan([names[id(layer)] for layer in layers], importance, sizes,
                              allocate_bits(importance, sizes, budget, choices))


def mixed_precision_overrides(model: nn.Module, budget: float, input_ids: Optional[torch.Tensor] = None,
                              method: str = "cosine", choices: Optional[tuple[int, int]] = None,
                              layers: Optional[Sequence[nn.Module]] = None) -> dict[str, dict]:
    """``quantize_(model, config, overrides=...)`` for :func:`mixed_precision_plan`: every
    nn.Linear of a decoder layer gets that layer's ``w_bits``."""
    plan = mixed_precision_plan(model, budget, input_ids, method, choices, layers)
    overrides = {}
    for name, b in zip(plan.layer_names, plan.bits):
        for sub_name, m in model.get_submodule(name).named_modules():
            if isinstance(m, nn.Linear):
                overrides[f"{name}.{sub_name}"] = {"w_bits": b}
    return overrides
