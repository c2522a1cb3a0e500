"""GPTQ (Frantar et al., 2022): quantize a weight column by column and push each column's
error onto the columns not yet quantized, weighted by the inverse Hessian H = X^T X of the
layer's inputs. Works with any of our grids; group scales/offsets are fixed up front
("static groups"), so columns can be visited by decreasing activation energy (act-order)
while the codes keep the canonical group layout.
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .. import ops
from .refit import refit_scales
from .rtn import QuantizedWeight, check_weight_format, group_params


class HessianRecorder:
    """Accumulates H = sum over tokens of x x^T (fp32) of the input x of each named nn.Linear,
    during whatever forward passes run while it is attached (:meth:`remove` detaches it).

    Layers fed the very same tensor (q/k/v, gate/up) share one Hessian object, which lets
    :func:`apq_torch.quantize_` solve them as one stacked GPTQ problem. A layer with an online
    input transform (a ``hadamard`` mix, rotation.py) records the transformed input, the one
    its weight multiplies, and shares with no other.
    """

    def __init__(self, model: nn.Module, names):
        self.hessians: dict[str, Tensor] = {}
        self._owner_of: dict[str, str] = {}  # layer -> the layer whose Hessian it shares
        self._last_input: dict[int, tuple[str, weakref.ref]] = {}  # id(input) -> (first reader, tensor)
        wanted = set(names)
        self._handles = [module.register_forward_pre_hook(self._hook(name))
                         for name, module in model.named_modules() if name in wanted]
        missing = wanted - {n for n, _ in model.named_modules()}
        if missing:
            self.remove()
            raise ValueError(f"no such layers to calibrate: {sorted(missing)[:5]}")

    def _hook(self, name: str):
        @torch.no_grad()
        def hook(module, args):
            inp = args[0]
            mix = getattr(module, "hadamard", None)
            if mix is not None:
                self._accumulate(name, ops.hadamard(inp, mix))
                return
            seen = self._last_input.get(id(inp))
            if seen is not None and seen[1]() is inp and seen[0] != name:
                if name not in self.hessians:  # first time: share the reader's Hessian from now on
                    self._owner_of[name] = seen[0]
                    self.hessians[name] = self.hessians[seen[0]]
                return
            if len(self._last_input) > 4096:  # forget tensors that are gone
                self._last_input = {k: v for k, v in self._last_input.items() if v[1]() is not None}
            self._last_input[id(inp)] = (name, weakref.ref(inp))
            if name not in self._owner_of:  # else its owner accumulates this input
                self._accumulate(name, inp)
        return hook

    def _accumulate(self, name: str, inp: Tensor) -> None:
        x = inp.detach().reshape(-1, inp.shape[-1]).float()
        if name not in self.hessians:
            self.hessians[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
        self.hessians[name].addmm_(x.T, x)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@torch.no_grad()
def collect_hessians(model: nn.Module, batches, filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
                     progress: bool = True) -> dict[str, Tensor]:
    """Hessians (:class:`HessianRecorder`) of every nn.Linear accepted by ``filter_fn(module,
    name)``, from one forward pass per batch of ``batches`` (input-id tensors [B, T])."""
    from tqdm.auto import tqdm

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and (filter_fn is None or filter_fn(m, n))]
    recorder = HessianRecorder(model, names)
    try:
        for ids in tqdm(list(batches), desc="calibration", disable=not progress, leave=False):
            model(ids)
    finally:
        recorder.remove()
    return recorder.hessians


@torch.no_grad()
def gptq_quantize(w: Tensor, H: Tensor, bits: int, fmt: str, group_size: int, clip_search: bool = False,
                  damp: float = 0.01, block: int = 128, act_order: bool = True, refit: bool = False) -> QuantizedWeight:
    """GPTQ of w [N, K] given the input Hessian H [K, K]; ``refit``: then the least-squares
    refit of the group scales under H (refit.py)."""
    check_weight_format(bits, fmt, group_size)
    W = w.detach().double().clone()
    N, K = W.shape
    H_in, H = H, H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    # clipping weighted by each input's energy: columns fed by large activations count more
    scale, offset = group_params(W.float(), bits, fmt, group_size, clip_search, importance=torch.diag(H).float())
    span = K if group_size == 0 else group_size
    group_of = torch.arange(K, device=W.device) // span
    qmax = 2**bits - 1

    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(K, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]
    col_scale = scale.double()[:, group_of[perm]]    # [N, K] in visiting order
    col_offset = offset.double()[:, group_of[perm]]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(K, dtype=H.dtype, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    codes = torch.zeros(N, K, dtype=torch.int64, device=W.device)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            s, o = col_scale[:, i1 + i], col_offset[:, i1 + i]
            u = (W1[:, i] / s - o).round().clamp(0, qmax)
            codes[:, i1 + i] = u.to(torch.int64)
            err = (W1[:, i] - s * (u + o)) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    inverse = torch.argsort(perm)
    q = QuantizedWeight(codes[:, inverse], scale, offset, bits, fmt, group_size)
    return refit_scales(q, w, H_in) if refit else q
