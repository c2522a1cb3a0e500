"""APQLinear: a linear layer whose weights are stored as bit planes and whose forward is
one ``apq::linear`` op (per-token activation quantization + bit-plane GEMM)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..ops.layout import dequantize_codes, num_groups, padded_words
from ..quantization import QuantizedWeight, gptq_quantize, quantize_weight
from ..quantization.fp32 import KeepsFp32Buffers
from ..quantization.rotation import online_transform
from .config import APQConfig


@torch.compiler.assume_constant_result
def activation_clip(config: APQConfig) -> float:
    """``config.a_clip`` as a constant to torch.compile: a float read from an object is traced
    as a graph input, which a custom op cannot take, and the frame traced twice to specialize it."""
    return float(config.a_clip)


class APQLinear(KeepsFp32Buffers, nn.Module):
    """Drop-in replacement for ``nn.Linear`` (inference only).

    Buffers: ``w_planes`` int32 [w_bits, out, ceil(in/256)*8], ``w_rowsum`` int32 [out, G],
    ``w_scale`` / ``w_offset`` fp32 [out, G], ``bias`` (or None) and ``hadamard`` (or None):
    the fp32 [m, m] mix of an online input rotation (rotation.py), fused into the
    activation quantization. Construct empty (for loading a state dict; ``hadamard_size``
    m, 0 for none) or with :meth:`from_float`. ``.to(dtype)`` / ``.half()`` cast the
    bias (and so the activations the model feeds in) but keep the scales, offsets and mix fp32.
    """

    FP32_BUFFERS = ("w_scale", "w_offset", "hadamard")

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 config: Optional[APQConfig] = None, device=None, bias_dtype=torch.float32, hadamard_size: int = 0):
        super().__init__()
        config = config or APQConfig()
        self.in_features, self.out_features, self.config = in_features, out_features, config
        for name, (shape, dtype) in self.buffer_specs(in_features, out_features, config).items():
            self.register_buffer(name, torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=bias_dtype, device=device) if bias else None)
        mix = torch.zeros(hadamard_size, hadamard_size, device=device) if hadamard_size else None
        self.register_buffer("hadamard", mix)

    @staticmethod
    def buffer_specs(in_features: int, out_features: int, config: APQConfig) -> dict:
        """{name: (shape, dtype)} of the packed weight's buffers (the bias is the model's dtype)."""
        G = num_groups(in_features, config.group_size)
        return {"w_planes": ((config.w_bits, out_features, padded_words(in_features)), torch.int32),
                "w_rowsum": ((out_features, G), torch.int32),
                "w_scale": ((out_features, G), torch.float32),
                "w_offset": ((out_features, G), torch.float32)}

    @classmethod
    def from_float(cls, linear: nn.Linear, config: APQConfig, hessian: Optional[Tensor] = None) -> "APQLinear":
        """Quantize ``linear``; ``config.method == "gptq"`` needs the input ``hessian`` [in, in]."""
        w = linear.weight
        if config.method == "gptq":
            if hessian is None:
                raise ValueError("APQConfig.method='gptq' needs the layer's input Hessian (quantize_(..., calibration=...))")
            q = gptq_quantize(w, hessian, config.w_bits, config.w_format, config.group_size, config.clip_search,
                              refit=config.refit_scales)
        else:
            q = quantize_weight(w, config.w_bits, config.w_format, config.group_size, config.clip_search,
                                refit=config.refit_scales)
        return cls.from_quantized(linear, config, q)

    @classmethod
    def from_quantized(cls, linear: nn.Linear, config: APQConfig, q: QuantizedWeight) -> "APQLinear":
        """Pack an already quantized weight of ``linear`` (bias taken from ``linear``)."""
        w = linear.weight
        if q.codes.shape != w.shape or q.bits != config.w_bits or q.group_size != config.group_size:
            raise ValueError("the quantized weight does not match the layer and its config")
        mix = online_transform(linear)
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, config,
                     device=w.device, bias_dtype=w.dtype, hadamard_size=0 if mix is None else mix.shape[0])
        if mix is not None:
            module.hadamard.copy_(mix)
        planes, rowsum = ops.pack(q.codes, config.w_bits, config.group_size)
        module.w_planes.copy_(planes)
        module.w_rowsum.copy_(rowsum)
        module.w_scale.copy_(q.scale)
        module.w_offset.copy_(q.offset)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        return ops.linear(x, self.w_planes, self.w_rowsum, self.w_scale, self.w_offset, self.in_features,
                          c.group_size, c.a_bits, c.a_format, self.bias, self.hadamard, activation_clip(c))

    def dequantized_weight(self) -> Tensor:
        """fp32 [out, in]: the weight values the kernel multiplies with (after the online
        transform, when the layer has one), each rounded once (an offset need not be an integer)."""
        codes = ops.unpack(self.w_planes, self.in_features)
        return dequantize_codes(codes, self.w_scale, self.w_offset, self.config.group_size, torch.float64).float()

    @property
    def nbytes(self) -> int:
        """Bytes of the packed weights and their metadata (row sums, scales, offsets, bias)."""
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def extra_repr(self) -> str:
        c = self.config
        group = "per-channel" if c.group_size == 0 else f"group_size={c.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, w_bits={c.w_bits} ({c.w_format}), "
                f"a_bits={c.a_bits} ({c.a_format}{'' if c.a_clip == 1.0 else f', clip {c.a_clip:g}'}), {group}"
                f"{', clip_search' if c.clip_search else ''}{', refit_scales' if c.refit_scales else ''}"
                f"{'' if self.hadamard is None else f', hadamard={self.hadamard.shape[0]}x{self.in_features // self.hadamard.shape[0]}'}")
