"""Round-to-nearest weight quantization per output channel or per group along K, in the
three formats of DESIGN.md §1, with an optional per-group clipping search.

A quantized weight is unsigned codes u plus, per group, a scale and an offset so that
value = scale * (u + offset):

    bipolar   scale = 2 c absmax / (2^b - 1), offset = -(2^b - 1) / 2    odd grid, no zero
    signed    scale = c absmax / (2^(b-1) - 1), offset = -2^(b-1)        two's-complement grid
    unsigned  scale = c (max - min) / (2^b - 1), offset = -zero_point     min <= 0 <= max

where c in (0, 1] is the clipping ratio (1 without the search).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..ops.layout import check_bits, check_format, check_group_size, dequantize_codes, format_offset

_TINY = torch.finfo(torch.float32).tiny
# Clipping ratios tried per group by the search (AWQ-style grid, extended for 2-bit grids).
CLIP_RATIOS = tuple(1.0 - 0.05 * i for i in range(14))  # 1.0 ... 0.35
REFIT_ROUNDS = 12  # most refit / round again alternations of round to nearest with refit


@dataclass
class QuantizedWeight:
    codes: Tensor   # int64 [N, K], unsigned codes
    scale: Tensor   # fp32 [N, G]
    offset: Tensor  # fp32 [N, G]
    bits: int
    format: str
    group_size: int  # 0: one group per row

    def dequantize(self) -> Tensor:
        """fp32 [N, K] values."""
        return dequantize_codes(self.codes, self.scale, self.offset, self.group_size)


def check_weight_format(bits: int, fmt: str, group_size: int) -> None:
    check_bits(bits)
    check_format(fmt, bits)
    check_group_size(group_size)


def _groups(w: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """w [N, K] as [N, G, span] zero-padded, and the mask of real columns."""
    N, K = w.shape
    span = K if group_size == 0 else group_size
    G = -(-K // span)
    padded = w.new_zeros(N, G * span)
    padded[:, :K] = w
    mask = torch.zeros(G * span, dtype=torch.bool, device=w.device)
    mask[:K] = True
    return padded.view(N, G, span), mask.view(G, span)


def _params(wg: Tensor, bits: int, fmt: str, clip) -> tuple[Tensor, Tensor]:
    """Scale and offset [N, G] of grouped weights wg [N, G, span] at clipping ratio clip."""
    qmax = 2**bits - 1
    if fmt == "unsigned":
        lo = wg.amin(-1).clamp(max=0.0) * clip
        hi = wg.amax(-1).clamp(min=0.0) * clip
        scale = ((hi - lo) / qmax).clamp(min=_TINY)
        offset = -(-lo / scale).round().clamp(0, qmax)
        return scale, offset
    absmax = wg.abs().amax(-1) * clip
    if fmt == "bipolar":
        scale = (2.0 * absmax / qmax).clamp(min=_TINY)
    else:
        scale = (absmax / (2 ** (bits - 1) - 1)).clamp(min=_TINY)
    return scale, torch.full_like(scale, format_offset(fmt, bits))


def _round(wg: Tensor, scale: Tensor, offset: Tensor, bits: int) -> Tensor:
    u = wg / scale.unsqueeze(-1) - offset.unsqueeze(-1)
    return u.round().clamp(0, 2**bits - 1)


def group_params(w: Tensor, bits: int, fmt: str, group_size: int, clip_search: bool = False,
                 importance: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Scale and offset fp32 [N, G] of w [N, K]; with ``clip_search`` every group picks, from
    ``CLIP_RATIOS``, the clipping ratio minimizing its squared error, each column weighted by
    ``importance`` [K] when given (e.g. the mean squared activation of that input)."""
    check_weight_format(bits, fmt, group_size)
    wg, mask = _groups(w.detach().float(), group_size)
    scale, offset = _params(wg, bits, fmt, 1.0)
    if clip_search:
        weight = mask.float()
        if importance is not None:
            weight = weight * _groups(importance.float().view(1, -1), group_size)[0][0]
        best_err = None
        for ratio in CLIP_RATIOS:
            s, o = _params(wg, bits, fmt, ratio)
            deq = s.unsqueeze(-1) * (_round(wg, s, o, bits) + o.unsqueeze(-1))
            err = ((deq - wg) ** 2 * weight).sum(-1)
            if best_err is None:
                best_err = err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            scale = torch.where(better, s, scale)
            offset = torch.where(better, o, offset)
    return scale.float(), offset.float()


def quantize_weight(w: Tensor, bits: int, fmt: str = "bipolar", group_size: int = 128,
                    clip_search: bool = False, importance: Optional[Tensor] = None,
                    refit: bool = False) -> QuantizedWeight:
    """Round-to-nearest quantization of w [N, K] (any float dtype), optionally with the
    clipping search of :func:`group_params`; ``refit``: then each group's least-squares
    scale (and zero point) for its codes (refit.py)."""
    scale, offset = group_params(w, bits, fmt, group_size, clip_search, importance)
    N, K = w.shape
    wg, _ = _groups(w.detach().float(), group_size)
    codes = _round(wg, scale, offset, bits).view(N, -1)[:, :K].to(torch.int64)
    q = QuantizedWeight(codes, scale, offset, bits, fmt, group_size)
    return _refit_rounds(q, wg) if refit else q


def _refit_rounds(q: QuantizedWeight, wg: Tensor) -> QuantizedWeight:
    """Alternates the least-squares refit of the scales (codes fixed) and rounding again
    (scales fixed), Lloyd-style, keeping per group the best parameters seen."""
    from .refit import refit_scales  # refit.py imports QuantizedWeight from here

    N, K = q.codes.shape
    span = wg.shape[2]
    w = wg.reshape(N, -1)[:, :K]

    def group_error(codes, scale, offset):  # [N, G]; padding columns count 0
        return _groups(dequantize_codes(codes, scale, offset, q.group_size) - w, q.group_size)[0].pow(2).sum(-1)

    best, err = q, group_error(q.codes, q.scale, q.offset)
    for _ in range(REFIT_ROUNDS):
        fit = refit_scales(best, w, None)
        codes = _round(wg, fit.scale, fit.offset, q.bits).view(N, -1)[:, :K].to(torch.int64)
        new_err = group_error(codes, fit.scale, fit.offset)
        better = new_err < err
        column_better = better.repeat_interleave(span, dim=1)[:, :K]
        best = QuantizedWeight(torch.where(column_better, codes, best.codes),
                               torch.where(better, fit.scale, best.scale), torch.where(better, fit.offset, best.offset),
                               q.bits, q.format, q.group_size)
        err = torch.minimum(err, new_err)
        if not better.any():
            break
    return best
