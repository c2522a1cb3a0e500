"""The "apq" QuantizationConfig: reads the checkpoint's ``quantization_config`` (its layout is
apq_torch/integrations/checkpoint.py) and gives every listed linear layer an
:class:`~apq_vllm.linear.APQLinearMethod`.

vLLM merges some layers of the checkpoint into one (q/k/v into ``qkv_proj``, gate/up into
``gate_up_proj``, per the model's ``packed_modules_mapping``). A merged layer holds one packed
weight, so its parts must agree on what the kernel reads (w_bits, group_size, a_bits,
a_format, a_clip) and be either all quantized or all float; anything else is refused by name.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from vllm.model_executor.layers.linear import LinearBase, UnquantizedLinearMethod
from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS, register_quantization_config
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig, QuantizeMethodBase

from apq_torch import APQConfig
from apq_torch.integrations.checkpoint import QUANT_METHOD, read_checkpoint_entry

from .linear import APQLinearMethod

# What the kernel reads from a layer's config; the parts of a merged layer must agree on it.
KERNEL_FIELDS = ("w_bits", "group_size", "a_bits", "a_format", "a_clip")


class APQVllmConfig(QuantizationConfig):
    def __init__(self, layers: dict[str, APQConfig]):
        super().__init__()
        self.layers = layers

    def __repr__(self) -> str:
        labels = sorted({c.label() for c in self.layers.values()})
        return f"APQVllmConfig({len(self.layers)} layers: {', '.join(labels)})"

    def get_name(self) -> str:
        return QUANT_METHOD

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.float32, torch.float16, torch.bfloat16]

    @classmethod
    def get_min_capability(cls) -> int:
        return 80  # the CUDA kernels are built for sm_80 and sm_90a (not checked on CPU)

    @staticmethod
    def get_config_filenames() -> list[str]:
        return []  # the entry lives in config.json

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "APQVllmConfig":
        return cls(read_checkpoint_entry(config))

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> Optional[QuantizeMethodBase]:
        if not isinstance(layer, LinearBase):
            return None  # embeddings and lm_head stay float
        config = self.layer_config(prefix)
        return UnquantizedLinearMethod() if config is None else APQLinearMethod(config, prefix)

    def layer_config(self, prefix: str) -> Optional[APQConfig]:
        """The config of vLLM layer ``prefix`` (merged or not), None if it is not quantized."""
        parent, _, last = prefix.rpartition(".")
        parts = self.packed_modules_mapping.get(last)
        names = [f"{parent}.{p}" if parent else p for p in parts] if parts else [prefix]
        configs = [self.layers.get(name) for name in names]
        if all(c is None for c in configs):
            return None
        if any(c is None for c in configs):
            missing = [n for n, c in zip(names, configs) if c is None]
            raise ValueError(f"apq: vLLM merges {names} into {prefix!r}, but the checkpoint quantizes only "
                             f"some of them ({missing} are float); quantize all or none")
        kernel = {tuple(getattr(c, f) for f in KERNEL_FIELDS) for c in configs}
        if len(kernel) > 1:
            described = {n: c.label() for n, c in zip(names, configs)}
            raise ValueError(f"apq: vLLM merges {names} into {prefix!r}; their {', '.join(KERNEL_FIELDS)} must "
                             f"agree, got {described}")
        return configs[0]


def register_config() -> None:
    if QUANT_METHOD not in QUANTIZATION_METHODS:
        register_quantization_config(QUANT_METHOD)(APQVllmConfig)
