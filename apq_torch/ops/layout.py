"""The packed layout and the rules every layer shares (DESIGN.md §1, §3), defined once.

Mirrors csrc/checks.h: tests/test_op_errors.py checks that both sides accept and refuse
the same bits, formats and group sizes.

Formats read unsigned codes u in [0, 2^b) affinely, value = scale * (u + offset):

    unsigned  offset = -zero_point       asymmetric, zero exactly representable
    signed    offset = -2^(b-1)          symmetric two's-complement grid, offset binary
    bipolar   offset = -(2^b - 1) / 2    every bit means -1 or +1: odd grid +-1, +-3, ...
"""

from __future__ import annotations

import torch

FORMATS = ("unsigned", "signed", "bipolar")
MAX_BITS = 8
BLOCK_BITS = 256      # K is padded to one m16n8k256 MMA step
GROUP_QUANTUM = 64    # group_size is 0 or a multiple of one 64-bit CPU word


def padded_words(K: int) -> int:
    """int32 words per packed row: K padded to a multiple of 256 bits."""
    return (K + BLOCK_BITS - 1) // BLOCK_BITS * (BLOCK_BITS // 32)


def num_groups(K: int, group_size: int) -> int:
    """K-groups of a row; group_size 0 means one group spanning the row."""
    return 1 if group_size == 0 else -(-K // group_size)


def format_offset(fmt: str, bits: int) -> float:
    """The fixed offset of the symmetric formats (unsigned has a per-row zero point)."""
    if fmt == "signed":
        return -float(2 ** (bits - 1))
    if fmt == "bipolar":
        return -0.5 * (2**bits - 1)
    raise ValueError(f"format {fmt!r} has no fixed offset")


def check_bits(bits, name: str = "bits") -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{name} must be an int between 1 and {MAX_BITS}, got {bits!r}")


def check_format(fmt, bits: int, name: str = "format") -> None:
    """fmt is a known format that can have `bits` bits (signed needs two)."""
    if fmt not in FORMATS:
        raise ValueError(f"{name} must be one of {FORMATS}, got {fmt!r}")
    if fmt == "signed" and bits < 2:
        raise ValueError(f"{name}='signed' needs at least 2 bits (a 1-bit signed grid is {{-1, 0}}); "
                         f"use 'bipolar' for 1 bit")


def check_group_size(group_size, name: str = "group_size") -> None:
    if (not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 0
            or group_size % GROUP_QUANTUM):
        raise ValueError(f"{name} must be 0 (per channel) or a positive multiple of {GROUP_QUANTUM}, "
                         f"got {group_size!r}")


def column_groups(K: int, group_size: int, device=None) -> torch.Tensor:
    """int64 [K]: the K-group of each column."""
    span = K if group_size == 0 else group_size
    return torch.arange(K, device=device) // span


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Values scale * (u + offset) of unsigned codes [R, K] in `dtype`; scale and offset are
    per row [R] or per row and K-group [R, G]."""
    u = codes.to(dtype)
    scale, offset = scale.to(dtype), offset.to(dtype)
    if scale.dim() == 1:
        return scale.unsqueeze(1) * (u + offset.unsqueeze(1))
    g = column_groups(codes.shape[1], group_size, codes.device)
    return scale[:, g] * (u + offset[:, g])
