"""Save a quantized model to safetensors and load it back into a float skeleton.

A file read from disk is untrusted: the metadata's format version and every layer's
config are checked, and every packed tensor's shape and dtype must be the ones its layer
expects before anything reaches a kernel.
"""

from __future__ import annotations

import json
import os
from typing import Union

import torch
from torch import nn

from .config import APQConfig
from .linear import APQLinear
from .quantize import _set_module, quantized_layers

METADATA_KEY = "apq_torch.layers"
FORMAT_KEY = "apq_torch.format_version"
FORMAT_VERSION = 1  # layout of the file: one metadata entry of layer configs + the model's tensors


def save_quantized(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Write every tensor of ``model`` and the config of each APQLinear to ``path``."""
    from safetensors.torch import save_model

    layers = {name: m.config.to_dict() for name, m in quantized_layers(model).items()}
    save_model(model, str(path), metadata={METADATA_KEY: json.dumps(layers), FORMAT_KEY: str(FORMAT_VERSION)})


def load_quantized(model: nn.Module, path: Union[str, os.PathLike]) -> nn.Module:
    """Turn the layers recorded in ``path`` into empty APQLinear modules and load every tensor,
    in place; ``model`` is the same architecture in float (e.g. freshly constructed)."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = str(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if METADATA_KEY not in meta:
            raise ValueError(f"{path} was not written by apq_torch.save_quantized (no {METADATA_KEY!r} metadata)")
        if meta.get(FORMAT_KEY) != str(FORMAT_VERSION):
            raise ValueError(f"{path} has apq_torch format version {meta.get(FORMAT_KEY)!r}; this apq_torch "
                             f"reads version {FORMAT_VERSION}")
        try:
            layers = json.loads(meta[METADATA_KEY])
            configs = {name: APQConfig.from_dict(cfg) for name, cfg in layers.items()}
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: invalid layer metadata: {e}") from e
        for name, config in configs.items():
            linear = _float_layer(model, name, path)
            specs = APQLinear.buffer_specs(linear.in_features, linear.out_features, config)
            for buffer, (shape, dtype) in specs.items():
                key = f"{name}.{buffer}"
                if key not in f.keys():
                    raise ValueError(f"{path} lacks tensor {key!r}")
                got = f.get_slice(key)
                got_shape, got_dtype = tuple(got.get_shape()), got.get_dtype()
                if got_shape != shape or got_dtype != _SAFETENSORS_DTYPE[dtype]:
                    raise ValueError(f"{path}: tensor {key!r} is {got_dtype}{list(got_shape)}, but layer {name!r} "
                                     f"({linear.in_features} -> {linear.out_features}, {config.label()}) needs "
                                     f"{_SAFETENSORS_DTYPE[dtype]}{list(shape)}")
    for name, config in configs.items():
        linear = model.get_submodule(name)
        if isinstance(linear, APQLinear):
            continue
        _set_module(model, name, APQLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                           config, device=linear.weight.device, bias_dtype=linear.weight.dtype))
    load_model(model, path, strict=True)
    return model


def _float_layer(model: nn.Module, name: str, path: str) -> nn.Module:
    try:
        linear = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{path} quantizes {name!r}, which the model does not have") from None
    if not isinstance(linear, (nn.Linear, APQLinear)):
        raise ValueError(f"{path} quantizes {name!r}, but the model has a {type(linear).__name__} there")
    return linear


_SAFETENSORS_DTYPE = {torch.int32: "I32", torch.float32: "F32"}
