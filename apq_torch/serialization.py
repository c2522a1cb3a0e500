"""Save a quantized model to safetensors and load it back into a float skeleton."""

from __future__ import annotations

import json
import os
from typing import Union

from torch import nn

from .api import _set_module, quantized_layers
from .config import APQConfig
from .nn import APQLinear

METADATA_KEY = "apq_torch.layers"


def save_quantized(model: nn.Module, path: str) -> None:
    """Write every tensor of ``model`` and the config of each APQLinear to ``path``."""
    from safetensors.torch import save_model

    layers = {name: m.config.to_dict() for name, m in quantized_layers(model).items()}
    save_model(model, path, metadata={METADATA_KEY: json.dumps(layers)})


def load_quantized(model: nn.Module, path: Union[str, os.PathLike]) -> nn.Module:
    """Turn the layers recorded in ``path`` into empty APQLinear modules and load every tensor,
    in place; ``model`` is the same architecture in float (e.g. freshly constructed)."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} was not written by apq_torch.save_quantized (no {METADATA_KEY!r} metadata)")
    for name, cfg in json.loads(meta[METADATA_KEY]).items():
        linear = model.get_submodule(name)
        if isinstance(linear, APQLinear):
            continue
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{path} quantizes {name!r}, but the model has a {type(linear).__name__} there")
        _set_module(model, name, APQLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                           APQConfig.from_dict(cfg), device=linear.weight.device,
                                           bias_dtype=linear.weight.dtype))
    load_model(model, path, strict=True)
    return model
