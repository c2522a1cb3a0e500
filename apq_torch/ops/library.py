"""Typed wrappers over ``torch.ops.apq`` and, below each, the op's fake (meta) function.

Schemas: csrc/torch_bindings.cpp (documented in docs/ops.md). Kernels: csrc/cpu/ and
csrc/cuda/. The fakes compute output shapes, so the ops trace under ``torch.compile`` and
``torch.export`` with symbolic sizes, and check with ``torch._check`` what a shape alone
can tell (word counts against K, metadata against rows and groups), so that a wrong call
fails while tracing. Everything else is checked by the C++ kernels, with errors naming
the argument.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .layout import FORMATS, MAX_BITS, num_groups, padded_words

__all__ = ["pack", "unpack", "quantize_pack", "gemm", "qmatmul", "linear", "hadamard", "cpu_kernel", "cuda_built"]


def _check_planes(planes: Tensor, K: int, op: str, name: str) -> None:
    torch._check(planes.dim() == 3, lambda: f"{op}: argument '{name}' must be packed planes "
                                            f"[bits, rows, words], got {planes.dim()} dimensions")
    torch._check(planes.dtype == torch.int32, lambda: f"{op}: argument '{name}' must be int32, got {planes.dtype}")
    torch._check(1 <= planes.shape[0] <= MAX_BITS,
                 lambda: f"{op}: argument '{name}.size(0) (bits)' must be between 1 and {MAX_BITS}")
    torch._check(planes.shape[2] == padded_words(K),
                 lambda: f"{op}: argument '{name}' has {planes.shape[2]} words per row but K={K} "
                         f"needs {padded_words(K)}")


def _check_shape(t: Tensor, shape: tuple, op: str, name: str) -> None:
    torch._check(t.dim() == len(shape) and all(a == b for a, b in zip(t.shape, shape)),
                 lambda: f"{op}: argument '{name}' must have shape {list(shape)}, got {list(t.shape)}")


def pack(codes: Tensor, bits: int, group_size: int = 0) -> tuple[Tensor, Tensor]:
    """Split unsigned ``bits``-bit codes ``[R, K]`` into bit planes.

    Returns ``planes`` int32 ``[bits, R, ceil(K/256)*8]`` (bit k of row r in plane i is bit
    k % 32 of word k // 32, zero padded) and ``rowsum`` int32 ``[R, G]``, the sum of the
    codes in each group of ``group_size`` columns (G = 1 when ``group_size`` is 0).
    """
    return torch.ops.apq.pack.default(codes, bits, group_size)


@torch.library.register_fake("apq::pack")
def _(codes, bits, group_size=0):
    torch._check(codes.dim() == 2, lambda: f"apq::pack: argument 'codes' must be 2-D [rows, K], got {codes.dim()}")
    R, K = codes.shape
    planes = codes.new_empty((bits, R, padded_words(K)), dtype=torch.int32)
    rowsum = codes.new_empty((R, num_groups(K, group_size)), dtype=torch.int32)
    return planes, rowsum


def unpack(planes: Tensor, K: int) -> Tensor:
    """Inverse of :func:`pack`: int32 codes ``[R, K]``."""
    return torch.ops.apq.unpack.default(planes, K)


@torch.library.register_fake("apq::unpack")
def _(planes, K):
    _check_planes(planes, K, "apq::unpack", "planes")
    return planes.new_empty((planes.shape[1], K), dtype=torch.int32)


def quantize_pack(x: Tensor, bits: int, format: str, group_size: int = 0, hadamard: Optional[Tensor] = None,
                  clip: Optional[float] = None):
    """Per-token dynamic quantization of float ``x [M, K]`` and packing, in one pass.

    ``format`` is ``"unsigned"`` (asymmetric, zero point), ``"signed"`` or ``"bipolar"``.
    Returns ``(planes, rowsum, scale, offset)``: the planes and per-group row sums as in
    :func:`pack`, and fp32 ``[M]`` scale and offset with value = scale * (code + offset).
    With ``hadamard`` (a mix matrix, see :func:`hadamard`) each row is rotated first, in fp32.
    ``clip`` in (0, 1] scales each row's range before its scale is chosen; values beyond the
    clipped range saturate at the end codes (activation clipping, as QuaRot's 0.9); None: 1.
    """
    return torch.ops.apq.quantize_pack.default(x, bits, format, group_size, hadamard, _ratio(clip))


def _ratio(clip: Optional[float]) -> float:
    # A literal default, not a float read from a function's defaults: torch.compile would trace
    # such a float as a graph input, find that a custom op cannot take it as a tensor, and
    # trace the whole frame a second time with the value specialized.
    return 1.0 if clip is None else clip


def _check_clip(clip, op: str, name: str) -> None:
    torch._check(0.0 < clip <= 1.0, lambda: f"{op}: argument '{name}' must be a clipping ratio in (0, 1], got {clip}")


def _check_mix(mix: Tensor, n, op: str, name: str) -> None:
    torch._check(mix.dim() == 2 and mix.shape[0] == mix.shape[1],
                 lambda: f"{op}: argument '{name}' must be a square [m, m] matrix, got {list(mix.shape)}")
    torch._check(mix.dtype == torch.float32, lambda: f"{op}: argument '{name}' must be float32, got {mix.dtype}")
    torch._check(n % mix.shape[0] == 0,
                 lambda: f"{op}: argument '{name}' is {mix.shape[0]}x{mix.shape[0]}, but the transformed size "
                         f"{n} is not a multiple of {mix.shape[0]}")


@torch.library.register_fake("apq::quantize_pack")
def _(x, bits, format, group_size=0, hadamard=None, clip=1.0):
    torch._check(x.dim() == 2, lambda: f"apq::quantize_pack: argument 'x' must be 2-D [M, K], got {x.dim()}")
    torch._check(format in FORMATS, lambda: f"apq::quantize_pack: argument 'format' must be one of {FORMATS}")
    if hadamard is not None:
        _check_mix(hadamard, x.shape[1], "apq::quantize_pack", "hadamard")
    _check_clip(clip, "apq::quantize_pack", "clip")
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
    _check_planes(x_planes, K, "apq::gemm", "x_planes")
    _check_planes(w_planes, K, "apq::gemm", "w_planes")
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


def _check_weight(w_planes, w_rowsum, w_scale, w_offset, K, group_size, op):
    _check_planes(w_planes, K, op, "w_planes")
    N, G = w_planes.shape[1], num_groups(K, group_size)
    for name, t in (("w_rowsum", w_rowsum), ("w_scale", w_scale), ("w_offset", w_offset)):
        _check_shape(t, (N, G), op, name)


@torch.library.register_fake("apq::qmatmul")
def _(x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale, w_offset, K,
      group_size, bias, out_dtype):
    op = "apq::qmatmul"
    _check_planes(x_planes, K, op, "x_planes")
    _check_weight(w_planes, w_rowsum, w_scale, w_offset, K, group_size, op)
    M, N = x_planes.shape[1], w_planes.shape[1]
    _check_shape(x_rowsum, (M, num_groups(K, group_size)), op, "x_rowsum")
    _check_shape(x_scale, (M,), op, "x_scale")
    _check_shape(x_offset, (M,), op, "x_offset")
    if bias is not None:
        _check_shape(bias, (N,), op, "bias")
    return x_planes.new_empty((M, N), dtype=out_dtype)


def linear(x: Tensor, w_planes: Tensor, w_rowsum: Tensor, w_scale: Tensor, w_offset: Tensor,
           K: int, group_size: int, a_bits: int, a_format: str,
           bias: Optional[Tensor] = None, hadamard: Optional[Tensor] = None,
           a_clip: Optional[float] = None) -> Tensor:
    """``quantize_pack`` of ``x [..., K]`` (rotated first by the ``hadamard`` mix, if given,
    its range clipped by ``a_clip``, None: 1) then ``qmatmul``; output ``[..., N]`` in ``x.dtype``."""
    return torch.ops.apq.linear.default(x, w_planes, w_rowsum, w_scale, w_offset, K,
                                        group_size, a_bits, a_format, bias, hadamard, _ratio(a_clip))


@torch.library.register_fake("apq::linear")
def _(x, w_planes, w_rowsum, w_scale, w_offset, K, group_size, a_bits, a_format, bias, hadamard=None, a_clip=1.0):
    op = "apq::linear"
    torch._check(x.dim() >= 1 and x.shape[-1] == K,
                 lambda: f"{op}: argument 'x' must have last dimension K={K}, got {list(x.shape)}")
    _check_weight(w_planes, w_rowsum, w_scale, w_offset, K, group_size, op)
    if hadamard is not None:
        _check_mix(hadamard, K, op, "hadamard")
    _check_clip(a_clip, op, "a_clip")
    if bias is not None:
        _check_shape(bias, (w_planes.shape[1],), op, "bias")
    return x.new_empty((*x.shape[:-1], w_planes.shape[1]))


def hadamard(x: Tensor, mix: Optional[Tensor] = None) -> Tensor:
    """Fast Walsh-Hadamard transform of the rows of ``x [..., n]``: ``x @ R.T`` with
    ``R = mix (x) H_P / sqrt(P)``, ``m = mix.size(0)``, ``n = m * P``, ``P`` a power of two and
    ``H_P`` Sylvester's Hadamard matrix; ``mix`` is fp32 ``[m, m]`` (default ``[[1]]``: the
    plain normalized transform). Computed in fp32 (see docs/ops.md for the exact order);
    output in ``x.dtype``. Orthogonal when ``mix`` is (apq_torch.quantization.hadamard)."""
    if mix is None:
        mix = torch.ones(1, 1, device=x.device)
    return torch.ops.apq.hadamard.default(x, mix)


@torch.library.register_fake("apq::hadamard")
def _(x, mix):
    torch._check(x.dim() >= 1, lambda: "apq::hadamard: argument 'x' must have at least one dimension")
    _check_mix(mix, x.shape[-1], "apq::hadamard", "mix")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def cpu_kernel(request: str = "") -> str:
    """The CPU kernel setting: 'auto' (the kernel map picks per product) or a forced kernel,
    'avx512' (AND-popcount), 'vnni' / 'vnni-decode' (int8 dot products) or 'portable';
    ``request`` switches it. The default comes from the environment variable ``APQ_CPU_KERNEL``.
    ``torch.ops.apq._cpu_kernel_choice(M, x_bits, w_bits, group_size)`` names the kernel a
    product would run on."""
    return torch.ops.apq._cpu_kernel(request)


def cuda_built() -> bool:
    """Whether this build compiled the CUDA kernels."""
    return bool(torch.ops.apq._built_with_cuda())
