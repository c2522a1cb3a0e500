"""Buffers that stay fp32 whatever dtype a module is cast to."""

from __future__ import annotations

import torch
from torch import nn


class KeepsFp32Buffers(nn.Module):
    """Mixin: the buffers named in ``FP32_BUFFERS`` follow ``.to(device)`` but not dtype casts
    (``.half()``, ``.to(torch.bfloat16)``): kernels read them as fp32 (scales and offsets,
    Hadamard mixes, whose rounding to half would break orthogonality)."""

    FP32_BUFFERS: tuple = ()

    def _apply(self, fn, recurse=True):
        kept = {name: getattr(self, name) for name in self.FP32_BUFFERS if getattr(self, name, None) is not None}
        super()._apply(fn, recurse)
        for name, before in kept.items():
            after = getattr(self, name)
            if after.dtype != torch.float32:  # a dtype cast: redo it as a move only
                setattr(self, name, before.to(device=after.device))
        return self
