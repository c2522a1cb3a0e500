"""GPTQ (Frantar et al., 2022): quantize a weight column by column and push each column's
error onto the columns not yet quantized, weighted by the inverse Hessian H = X^T X of the
layer's inputs. Works with any of our grids; group scales/offsets are fixed up front
("static groups"), so columns can be visited by decreasing activation energy (act-order)
while the codes keep the canonical group layout.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .quant import QuantizedWeight, check_weight_format, group_params


@torch.no_grad()
def collect_hessians(model: nn.Module, batches, filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
                     progress: bool = True) -> dict[str, Tensor]:
    """H = sum over calibration tokens of x x^T (fp32) for the input x of every nn.Linear
    accepted by ``filter_fn``; ``batches`` is an iterable of input-id tensors [B, T].
    Layers fed the same tensor (q/k/v, gate/up) get the very same Hessian object, which
    lets :func:`apq_torch.api.quantize_` solve them as one stacked GPTQ problem."""
    from tqdm.auto import tqdm

    hessians: dict[str, Tensor] = {}
    shared: dict[str, str] = {}  # layer -> the layer whose Hessian it shares (same input tensor)
    seen: dict[int, tuple[str, Tensor]] = {}  # id of an input tensor in this batch -> (layer, tensor)
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (filter_fn is None or filter_fn(module, name)):
            def hook(mod, args, name=name):
                inp = args[0]
                owner = seen.get(id(inp))
                if owner is not None and owner[1] is inp:
                    if name not in hessians:
                        shared[name] = owner[0]
                        hessians[name] = hessians[owner[0]]
                    return
                seen[id(inp)] = (name, inp)
                if name in shared:  # its owner accumulates (inputs are laid out the same every batch)
                    return
                x = inp.detach().reshape(-1, inp.shape[-1]).float()
                if name not in hessians:
                    hessians[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
                hessians[name].addmm_(x.T, x)
            handles.append(module.register_forward_pre_hook(hook))
    try:
        for ids in tqdm(list(batches), desc="calibration", disable=not progress, leave=False):
            model(ids)
            seen.clear()
    finally:
        for h in handles:
            h.remove()
    return hessians


@torch.no_grad()
def gptq_quantize(w: Tensor, H: Tensor, bits: int, fmt: str, group_size: int, clip_search: bool = False,
                  damp: float = 0.01, block: int = 128, act_order: bool = True) -> QuantizedWeight:
    """GPTQ of w [N, K] given the input Hessian H [K, K]."""
    check_weight_format(bits, fmt)
    W = w.detach().double().clone()
    N, K = W.shape
    H = H.double().clone()
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
    return QuantizedWeight(codes[:, inverse], scale, offset, bits, fmt, group_size)
