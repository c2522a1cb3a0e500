"""Least-squares refit of the group scales (and zero points) of quantized weights, the codes
held fixed.

Rounding, with or without GPTQ, picks codes for scales chosen before the codes were known.
Given the codes, the scales (and for the unsigned format the offsets) minimizing the layer's
output error ||X (W - W_hat)^T||^2 = sum over rows of (w - w_hat)^T H (w - w_hat), H = X^T X,
solve a small linear system per row: G unknowns (2G for unsigned), G = groups per row. With
no calibration, H = I: each group's own least-squares fit. This removes the part of the
rounding error that is a per-group gain (the odd bipolar grid inflates small weights, the
signed grid deflates them) at no cost to the kernels: only the fp32 scale/offset change.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .rtn import QuantizedWeight, _groups

_ROWS_PER_CHUNK = 256  # rows solved at once


def _design(q: QuantizedWeight) -> list[tuple[Tensor, int]]:
    """The least-squares design per row as terms (values [N, Kp], first unknown): the value
    of column k in unknown first + group(k); Kp = K padded to whole groups (padding 0)."""
    N = q.codes.shape[0]
    G = q.scale.shape[1]
    u, real = _groups(q.codes.double(), q.group_size)  # [N, G, span], padding 0; [G, span]
    if q.format == "unsigned":  # w ~ scale * u + (scale * offset)
        return [(u.reshape(N, -1), 0), (real.double().reshape(1, -1).expand(N, -1), G)]
    return [(((u + q.offset.double().unsqueeze(-1)) * real).reshape(N, -1), 0)]


@torch.no_grad()
def refit_scales(q: QuantizedWeight, w: Tensor, hessian: Optional[Tensor] = None) -> QuantizedWeight:
    """``q`` with every row's group scales (and unsigned offsets) refitted by least squares to
    ``w`` [N, K] under ``hessian`` [K, K] (identity when None). A row keeps its old parameters
    when the fit does not lower its error or would make a scale non-positive."""
    N, K = q.codes.shape
    G = q.scale.shape[1]
    terms = _design(q)
    Kp = terms[0][0].shape[1]
    U = G * len(terms)
    W = torch.zeros(N, Kp, dtype=torch.float64, device=q.codes.device)
    W[:, :K] = w.detach().double()
    if hessian is None:
        WH = H = W
    else:
        H = torch.eye(Kp, dtype=torch.float64, device=W.device)
        H[:K, :K] = hessian.double()
        dead = torch.diag(H) == 0
        H[dead, dead] = 1.0
        WH = W @ H
    scale, offset = q.scale.clone(), q.offset.clone()
    old = torch.zeros_like(W)
    old[:, :K] = q.dequantize().double()
    span = Kp // G
    # M[n, a+g, b+h] = va[n, group g] . H[g, h] . vb[n, group h]: one GEMM per group g
    M = W.new_zeros(N, U, U)
    b = W.new_zeros(N, U)
    for va, ia in terms:
        b[:, ia:ia + G] = (va * WH).view(N, G, span).sum(-1)
        for g in range(G):
            cols = slice(g * span, (g + 1) * span)
            vaH = va[:, cols] @ H[cols] if hessian is not None else None
            for vb, ib in terms:
                if hessian is None:  # H = I: only the diagonal blocks, each group on its own
                    M[:, ia + g, ib + g] = (va[:, cols] * vb[:, cols]).sum(-1)
                else:
                    M[:, ia + g, ib:ib + G] = (vaH * vb).view(N, G, span).sum(-1)
    for r0 in range(0, N, _ROWS_PER_CHUNK):
        rows = slice(r0, min(r0 + _ROWS_PER_CHUNK, N))
        ridge = 1e-9 * M[rows].diagonal(dim1=1, dim2=2).mean(-1, keepdim=True).clamp(min=1e-30)
        x = torch.linalg.solve(M[rows] + torch.diag_embed(ridge.expand(-1, U)), b[rows])  # [n, U]
        new_scale = x[:, :G]
        new_offset = x[:, G:] / new_scale if len(terms) == 2 else q.offset[rows].double()
        fitted = sum(va[rows] * x[:, ia:ia + G].repeat_interleave(Kp // G, dim=1) for va, ia in terms)

        def err(v):
            d = W[rows] - v
            return (d * (d if hessian is None else d @ H)).sum(-1)

        ok = (new_scale > 0).all(-1) & torch.isfinite(x).all(-1) & (err(fitted) < err(old[rows]))
        scale[rows] = torch.where(ok.unsqueeze(-1), new_scale.float(), scale[rows])
        offset[rows] = torch.where(ok.unsqueeze(-1), new_offset.float(), offset[rows])
    return QuantizedWeight(q.codes, scale, offset, q.bits, q.format, q.group_size)
