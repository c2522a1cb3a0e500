"""Calibrated activation clipping: for each quantized layer input, the ratio ``a_clip`` (the
kernels scale each token's range by it before choosing its scale) that minimizes the layers'
output error on calibration data.

Per token, a smaller range means a finer step for most values and saturation for the few
beyond it. Which wins depends on the input's distribution, so the ratio is chosen per input
from ``ACT_CLIP_RATIOS`` by the squared error it causes in the layer outputs, ||D W^T||^2
with D = x - Q_c(x) on a subsample of the calibration tokens. (The cheaper per-column
estimate sum_k ||D[:, k]||^2 ||W[:, k]||^2 drops cross terms that saturation makes real:
on rotated SmolLM2 with fp32 weights and A4 it chose ratios worth 24.6 perplexity against
24.0 for this one.)
Layers fed the very same tensor (q/k/v, gate/up) get one ratio, chosen on the sum of their
errors, so that they can still share one quantize_pack.

Q_c is the kernels' own per-token quantization (apq_torch.reference, bit-exact with
quantize_pack), after the layer's online Hadamard transform when it has one.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops, reference

ACT_CLIP_RATIOS = tuple(round(1.0 - 0.025 * i, 3) for i in range(17))  # 1.0 ... 0.6
TOKEN_STRIDE = 8  # every 8th token of each calibration batch enters the search


class ActivationClipRecorder:
    """Forward pre-hooks on the named nn.Linear layers ``{name: (a_bits, a_format)}``: each
    accumulates, at every ratio, the squared error its input's quantization causes in its
    output, during whatever forward passes run while attached; :meth:`choose` gives
    ``{name: ratio}``."""

    def __init__(self, model: nn.Module, layers: dict):
        self.layers = dict(layers)
        modules = dict(model.named_modules())
        missing = sorted(set(self.layers) - set(modules))
        if missing:
            raise ValueError(f"no such layers for the activation clipping search: {missing[:5]}")
        self._errors: dict[str, Tensor] = {}  # layer -> [ratios] summed squared output errors
        self._owner_of: dict[str, str] = {}   # layer -> the first layer reading the same tensor
        self._last: Optional[tuple[str, weakref.ref, Tensor]] = None  # (reader, input, D [ratios, T, K])
        self._handles = [modules[name].register_forward_pre_hook(self._hook(name)) for name in self.layers]

    def _hook(self, name: str):
        @torch.no_grad()
        def hook(module, args):
            inp = args[0]
            mix = getattr(module, "hadamard", None)
            last = self._last
            if mix is None and last is not None and last[1]() is inp and self.layers[last[0]] == self.layers[name]:
                self._owner_of.setdefault(name, self._owner_of.get(last[0], last[0]))
                D = last[2]  # same tensor, same quantizer: the same activation errors, one ratio
            else:
                D = self._activation_errors(inp, mix, *self.layers[name])
                self._last = (name, weakref.ref(inp), D) if mix is None else None
            out = D @ module.weight.detach().float().T  # [ratios, T, N]
            err = out.double().pow(2).sum((1, 2))
            self._errors[name] = err if name not in self._errors else self._errors[name] + err
        return hook

    @staticmethod
    def _activation_errors(inp: Tensor, mix: Optional[Tensor], bits: int, fmt: str) -> Tensor:
        """[ratios, T, K]: x - Q_c(x) of the subsampled tokens, after the online transform."""
        x = inp.detach().reshape(-1, inp.shape[-1])[::TOKEN_STRIDE].float()
        if mix is not None:
            x = ops.hadamard(x, mix)
        x = x[torch.isfinite(x).all(-1)]  # a non-finite token has no scale to choose
        return torch.stack([x - reference.fake_quantize(x, bits, fmt, c) for c in ACT_CLIP_RATIOS])

    def choose(self) -> dict[str, float]:
        """{layer name: ratio} for every layer whose input was seen: per group of layers
        reading one tensor, the ratio of least summed output error."""
        total: dict[str, Tensor] = {}
        for name, err in self._errors.items():
            owner = self._owner_of.get(name, name)
            total[owner] = err if owner not in total else total[owner] + err
        best = {owner: ACT_CLIP_RATIOS[int(torch.argmin(err))] for owner, err in total.items()}
        return {name: best[self._owner_of.get(name, name)] for name in self._errors}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._last = None
