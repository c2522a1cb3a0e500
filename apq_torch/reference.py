"""Pure-PyTorch definition of every apq op: the executable spec the kernels are tested against.

Formats (DESIGN.md §1, apq_torch/ops/layout.py): a b-bit matrix is stored as unsigned codes
u in [0, 2^b), split into b bit planes; a format only reads u affinely,
value = scale * (u + offset). Packed layout (§3): planes int32 [b, R, KW], KW = ceil(K/256)*8;
bit k of row r in plane i is bit k % 32 of word k // 32; padding bits are zero.

This module is the test oracle: runtime code never imports it.

Quantization arithmetic is written as the same fp32 operations in the same order as
csrc/format.h, so CPU, CUDA and this reference produce identical codes, scales and offsets.
"""

from __future__ import annotations

import math

import torch

from .ops.layout import dequantize_codes, format_offset, num_groups, padded_words

_FLT_MIN = torch.finfo(torch.float32).tiny


def group_sums(codes: torch.Tensor, group_size: int) -> torch.Tensor:
    """int32 [R, G]: sum of the codes of each row within each K-group."""
    R, K = codes.shape
    span = K if group_size == 0 else group_size
    G = num_groups(K, group_size)
    padded = torch.zeros(R, G * span, dtype=torch.int64, device=codes.device)
    padded[:, :K] = codes.to(torch.int64)
    return padded.view(R, G, span).sum(-1).to(torch.int32)


def pack(codes: torch.Tensor, bits: int, group_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    R, K = codes.shape
    c = codes.to(torch.int64)
    assert int(c.min()) >= 0 and int(c.max()) < 2**bits, "codes out of range"
    W = padded_words(K)
    padded = torch.zeros(R, W * 32, dtype=torch.int64, device=codes.device)
    padded[:, :K] = c
    weights = torch.bitwise_left_shift(torch.ones(32, dtype=torch.int64, device=codes.device),
                                       torch.arange(32, device=codes.device))
    planes = []
    for i in range(bits):
        bit = (padded >> i) & 1
        words = (bit.view(R, W, 32) * weights).sum(-1)  # in [0, 2^32)
        planes.append(torch.where(words >= 2**31, words - 2**32, words))
    return torch.stack(planes).to(torch.int32), group_sums(c, group_size)


def unpack(planes: torch.Tensor, K: int) -> torch.Tensor:
    bits, R, W = planes.shape
    words = planes.to(torch.int64) & 0xFFFFFFFF
    bit = (words.unsqueeze(-1) >> torch.arange(32, device=planes.device)) & 1  # [bits, R, W, 32]
    weight = torch.bitwise_left_shift(torch.ones(bits, dtype=torch.int64, device=planes.device),
                                      torch.arange(bits, device=planes.device))
    codes = (bit * weight.view(bits, 1, 1, 1)).sum(0)
    return codes.reshape(R, W * 32)[:, :K].to(torch.int32)


def quant_params(x: torch.Tensor, bits: int, fmt: str, clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (scale, offset) of dynamic quantization, fp32 [M] each; the row's range
    [min(x, 0), max(x, 0)] is first scaled by fp32(clip) (values beyond it saturate)."""
    xf = x.float()
    qmax = float(2**bits - 1)
    ratio = torch.tensor(clip, dtype=torch.float32, device=xf.device)
    lo = xf.amin(-1).clamp(max=0.0) * ratio
    hi = xf.amax(-1).clamp(min=0.0) * ratio
    if fmt == "unsigned":
        scale = ((hi - lo) / qmax).clamp(min=_FLT_MIN)
        zero_point = (-lo / scale).round().clamp(0.0, qmax)
        offset = -zero_point
    else:
        absmax = torch.maximum(-lo, hi)
        if fmt == "signed":
            half = float(2 ** (bits - 1))
            scale = (absmax / (half - 1.0)).clamp(min=_FLT_MIN)
        elif fmt == "bipolar":
            scale = ((2.0 * absmax) / qmax).clamp(min=_FLT_MIN)
        else:
            raise ValueError(f"unknown format {fmt!r}")
        offset = torch.full_like(scale, format_offset(fmt, bits))
    finite = torch.isfinite(xf).all(-1)
    scale = torch.where(finite, scale, torch.full_like(scale, float("nan")))
    offset = torch.where(finite, offset, torch.zeros_like(offset))
    return scale, offset


def quantize(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes clamp(round_half_even(x / scale - offset), 0, 2^bits - 1); 0 where scale is NaN."""
    t = x.float() / scale.unsqueeze(-1) - offset.unsqueeze(-1)
    codes = t.round().clamp(0.0, float(2**bits - 1))
    return torch.where(scale.isnan().unsqueeze(-1), torch.zeros_like(codes), codes).to(torch.int32)


def fake_quantize(x: torch.Tensor, bits: int, fmt: str, clip: float = 1.0) -> torch.Tensor:
    """fp32 values the kernels multiply for x [..., K]: each row quantized per token (at
    ``clip``) as quantize_pack does, then dequantized."""
    x2 = x.float().reshape(-1, x.shape[-1])
    scale, offset = quant_params(x2, bits, fmt, clip)
    return dequantize_codes(quantize(x2, scale, offset, bits), scale, offset, 0).reshape(x.shape)


def hadamard(x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """x [..., n] times R^T, R = mix (x) H_P / sqrt(P) (m = mix.size(0), P = n / m a power of
    two, H_P Sylvester's), in fp32 in the kernels' order: butterflies x[j] +- x[j + h] for
    h = 1, 2, ..., P/2 on each block of P, then out[i] = sum_j mix[i, j] * block[j] (j
    ascending, separately rounded products and sums), then times fp32(1/sqrt(P))."""
    m, n = mix.shape[0], x.shape[-1]
    P = n // m
    y = x.float().reshape(-1, m, P)
    h = 1
    while h < P:
        y = y.reshape(-1, m, P // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    y = y.reshape(-1, m, P)
    mixf = mix.float()
    acc = torch.zeros_like(y)
    for j in range(m):
        acc = acc + mixf[:, j].view(1, m, 1) * y[:, j:j + 1, :]
    out = acc * torch.tensor(1.0 / math.sqrt(P), dtype=torch.float32)
    return out.reshape(x.shape).to(x.dtype)


def quantize_pack(x: torch.Tensor, bits: int, fmt: str, group_size: int = 0, hadamard_mix=None,
                  clip: float = 1.0):
    if hadamard_mix is not None:
        x = hadamard(x.float(), hadamard_mix)
    scale, offset = quant_params(x, bits, fmt, clip)
    codes = quantize(x, scale, offset, bits)
    planes, rowsum = pack(codes, bits, group_size)
    return planes, rowsum, scale, offset


def gemm(x_planes: torch.Tensor, w_planes: torch.Tensor, K: int) -> torch.Tensor:
    ux = unpack(x_planes, K).to(torch.int64)
    uw = unpack(w_planes, K).to(torch.int64)
    return (ux @ uw.T).to(torch.int32)


def dequantize(planes: torch.Tensor, K: int, scale: torch.Tensor, offset: torch.Tensor,
               group_size: int) -> torch.Tensor:
    """fp64 [R, K] values scale * (u + offset); scale/offset are [R] or [R, G]."""
    return dequantize_codes(unpack(planes, K), scale, offset, group_size, torch.float64)


def qmatmul(x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale, w_offset,
            K: int, group_size: int, bias, out_dtype: torch.dtype) -> torch.Tensor:
    """fp64 product of the dequantized operands. The row sums are caches of the planes:
    the definition does not need them."""
    x = dequantize(x_planes, K, x_scale, x_offset, group_size)
    w = dequantize(w_planes, K, w_scale, w_offset, group_size)
    y = x @ w.T
    if bias is not None:
        y = y + bias.double()
    return y.to(out_dtype)


def linear(x, w_planes, w_rowsum, w_scale, w_offset, K: int, group_size: int, a_bits: int,
           a_format: str, bias, hadamard_mix=None, a_clip: float = 1.0) -> torch.Tensor:
    x2 = x.reshape(-1, K)
    xp, xs, xsc, xo = quantize_pack(x2, a_bits, a_format, group_size, hadamard_mix, a_clip)
    y = qmatmul(xp, xs, xsc, xo, w_planes, w_rowsum, w_scale, w_offset, K, group_size, bias, x.dtype)
    return y.view(*x.shape[:-1], w_planes.shape[1])
