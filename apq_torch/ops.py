"""Typed wrappers over ``torch.ops.apq`` and the fake (meta) function of each op.

The fakes compute output shapes only, so the ops trace under ``torch.compile`` and
``torch.export`` with symbolic sizes. Argument checking happens in the C++ kernels.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .reference import num_groups, padded_words

__all__ = ["pack", "unpack", "quantize_pack", "gemm", "qmatmul", "linear", "cpu_kernel"]


def pack(codes: Tensor, bits: int, group_size: int = 0) -> tuple[Tensor, Tensor]:
    """Split unsigned ``bits``-bit codes ``[R, K]`` into bit planes.

    Returns ``planes`` int32 ``[bits, R, ceil(K/256)*8]`` (bit k of row r in plane i is bit
    k % 32 of word k // 32, zero padded) and ``rowsum`` int32 ``[R, G]``, the sum of the
    codes in each group of ``group_size`` columns (G = 1 when ``group_size`` is 0).
    """
    return torch.ops.apq.pack.default(codes, bits, group_size)


@torch.library.register_fake("apq::pack")
def _(codes, bits, group_size=0):
    R, K = codes.shape
    planes = codes.new_empty((bits, R, padded_words(K)), dtype=torch.int32)
    rowsum = codes.new_empty((R, num_groups(K, group_size)), dtype=torch.int32)
    return planes, rowsum


def unpack(planes: Tensor, K: int) -> Tensor:
    """Inverse of :func:`pack`: int32 codes ``[R, K]``."""
    return torch.ops.apq.unpack.default(planes, K)


@torch.library.register_fake("apq::unpack")
def _(planes, K):
    return planes.new_empty((planes.shape[1], K), dtype=torch.int32)


def quantize_pack(x: Tensor, bits: int, format: str, group_size: int = 0):
    """Per-token dynamic quantization of float ``x [M, K]`` and packing, in one pass.

    ``format`` is ``"unsigned"`` (asymmetric, zero point), ``"signed"`` or ``"bipolar"``.
    Returns ``(planes, rowsum, scale, offset)``: the planes and per-group row sums as in
    :func:`pack`, and fp32 ``[M]`` scale and offset with value = scale * (code + offset).
    """
    return torch.ops.apq.quantize_pack.default(x, bits, format, group_size)


@torch.library.register_fake("apq::quantize_pack")
def _(x, bits, format, group_size=0):
    M, K = x.shape
    planes = x.new_empty((bits, M, padded_words(K)), dtype=torch.int32)
    rowsum = x.new_empty((M, num_groups(K, group_size)), dtype=torch.int32)
    scale = x.new_empty((M,), dtype=torch.float32)
    return planes, rowsum, scale, x.new_empty((M,), dtype=torch.float32)


def gemm(x_planes: Tensor, w_planes: Tensor, K: int) -> Tensor:
    """Exact int32 ``[M, N]`` product of unsigned codes: ``sum_k u_x[m, k] * u_w[n, k]``.

    Refuses shapes whose worst case could overflow int32.
    """
    return torch.ops.apq.gemm.default(x_planes, w_planes, K)


@torch.library.register_fake("apq::gemm")
def _(x_planes, w_planes, K):
    return x_planes.new_empty((x_planes.shape[1], w_planes.shape[1]), dtype=torch.int32)


def qmatmul(x_planes: Tensor, x_rowsum: Tensor, x_scale: Tensor, x_offset: Tensor,
            w_planes: Tensor, w_rowsum: Tensor, w_scale: Tensor, w_offset: Tensor,
            K: int, group_size: int, bias: Optional[Tensor] = None,
            out_dtype: torch.dtype = torch.float32) -> Tensor:
    """Dequantized product ``y = X_hat @ W_hat.T + bias`` from packed operands.

    Activations carry per-token fp32 ``x_scale``/``x_offset`` ``[M]``; weights carry fp32
    ``w_scale``/``w_offset`` ``[N, G]`` per group of ``group_size`` columns.
    """
    return torch.ops.apq.qmatmul.default(x_planes, x_rowsum, x_scale, x_offset, w_planes,
                                         w_rowsum, w_scale, w_offset, K, group_size, bias,
                                         out_dtype)


@torch.library.register_fake("apq::qmatmul")
def _(x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale, w_offset, K,
      group_size, bias, out_dtype):
    return x_planes.new_empty((x_planes.shape[1], w_planes.shape[1]), dtype=out_dtype)


def linear(x: Tensor, w_planes: Tensor, w_rowsum: Tensor, w_scale: Tensor, w_offset: Tensor,
           K: int, group_size: int, a_bits: int, a_format: str,
           bias: Optional[Tensor] = None) -> Tensor:
    """``quantize_pack`` of ``x [..., K]`` then ``qmatmul``; output ``[..., N]`` in ``x.dtype``."""
    return torch.ops.apq.linear.default(x, w_planes, w_rowsum, w_scale, w_offset, K,
                                        group_size, a_bits, a_format, bias)


@torch.library.register_fake("apq::linear")
def _(x, w_planes, w_rowsum, w_scale, w_offset, K, group_size, a_bits, a_format, bias):
    return x.new_empty((*x.shape[:-1], w_planes.shape[1]))


def cpu_kernel(request: str = "") -> str:
    """The CPU kernel setting: 'auto' (the kernel map picks per product) or a forced kernel,
    'avx512' (AND-popcount), 'vnni' / 'vnni-decode' (int8 dot products) or 'portable';
    ``request`` switches it. The default comes from the environment variable ``APQ_CPU_KERNEL``.
    ``torch.ops.apq._cpu_kernel_choice(M, x_bits, w_bits, group_size)`` names the kernel a
    product would run on."""
    return torch.ops.apq._cpu_kernel(request)
