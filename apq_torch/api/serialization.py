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

from ..quantization.rotation import HadamardLinear
from .config import APQConfig
from .linear import APQLinear
from .quantize import _set_module, quantized_layers

METADATA_KEY = "apq_torch.layers"
FORMAT_KEY = "apq_torch.format_version"
# Layout of the file: one metadata entry of layer configs + the model's tensors. Version 2 adds
# the fp32 [m, m] mix of each online Hadamard transform ("<layer>.hadamard", rotation.py) and
# may hold a rotated model's embeddings and lm_head untied; a version 1 file is a version 2
# file without them, so both are read.
FORMAT_VERSION = 2
READS_VERSIONS = ("1", "2")


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
        if meta.get(FORMAT_KEY) not in READS_VERSIONS:
            raise ValueError(f"{path} has apq_torch format version {meta.get(FORMAT_KEY)!r}; this apq_torch "
                             f"reads versions {', '.join(READS_VERSIONS)}")
    try:
        layers = json.loads(meta[METADATA_KEY])
        configs = {name: APQConfig.from_dict(cfg) for name, cfg in layers.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: invalid layer metadata: {e}") from e
    tensors = safetensors_header(path)
    transforms = {key[: -len(".hadamard")]: _mix_size(tensors, key, path) for key in tensors if key.endswith(".hadamard")}
    for name, size in transforms.items():
        linear = _float_layer(model, name, path)
        P = linear.in_features // size
        if linear.in_features % size or P & (P - 1):
            raise ValueError(f"{path}: tensor '{name}.hadamard' is [{size}, {size}], but layer {name!r} has "
                             f"{linear.in_features} inputs, not {size} times a power of two")
    for name, config in configs.items():
        linear = _float_layer(model, name, path)
        check_packed_tensors(tensors, name, linear.in_features, linear.out_features, config, path)
    _untie_saved_separately(model, set(tensors))
    for name, config in configs.items():
        linear = model.get_submodule(name)
        if isinstance(linear, APQLinear):
            continue
        _set_module(model, name, APQLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                           config, device=linear.weight.device, bias_dtype=linear.weight.dtype,
                                           hadamard_size=transforms.get(name, 0)))
    for name, size in transforms.items():  # rotated layers left in float
        if name not in configs:
            linear = _float_layer(model, name, path)
            online = HadamardLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                    device=linear.weight.device, dtype=linear.weight.dtype)
            online.hadamard = torch.zeros(size, size, device=linear.weight.device)
            _set_module(model, name, online)
    load_model(model, path, strict=True)
    return model


def safetensors_header(path: str) -> dict:
    """{tensor name: (safetensors dtype, shape)} of a file, read from its header only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}


def check_packed_tensors(tensors: dict, name: str, in_features: int, out_features: int, config: APQConfig,
                         where: str) -> None:
    """Refuse layer ``name`` unless ``tensors`` ({key: (dtype, shape)}, e.g. :func:`safetensors_header`)
    holds each of its packed buffers with the shape and dtype ``config`` needs."""
    specs = APQLinear.buffer_specs(in_features, out_features, config)
    for buffer, (shape, dtype) in specs.items():
        key = f"{name}.{buffer}"
        if key not in tensors:
            raise ValueError(f"{where} lacks tensor {key!r}")
        got_dtype, got_shape = tensors[key]
        if got_shape != shape or got_dtype != _SAFETENSORS_DTYPE[dtype]:
            raise ValueError(f"{where}: tensor {key!r} is {got_dtype}{list(got_shape)}, but layer {name!r} "
                             f"({in_features} -> {out_features}, {config.label()}) needs "
                             f"{_SAFETENSORS_DTYPE[dtype]}{list(shape)}")


def _mix_size(tensors: dict, key: str, path: str) -> int:
    """m of a saved online Hadamard mix [m, m] (fp32); ``tensors`` as from :func:`safetensors_header`."""
    dtype, shape = tensors[key]
    if len(shape) != 2 or shape[0] != shape[1] or dtype != "F32":
        raise ValueError(f"{path}: tensor {key!r} is {dtype}{list(shape)}, not an F32 [m, m] Hadamard mix")
    return shape[0]


def _untie_saved_separately(model: nn.Module, keys: set) -> None:
    """Parameters the model ties (embeddings and lm_head) but the file holds under each name
    (a rotation unties them) get their own tensors."""
    first_name = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owner = first_name.setdefault(id(p), name)
        if owner != name and owner in keys and name in keys:
            module_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module_name), attr, nn.Parameter(p.detach().clone()))
            if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
                model.config.tie_word_embeddings = False


def _float_layer(model: nn.Module, name: str, path: str) -> nn.Module:
    try:
        linear = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{path} quantizes {name!r}, which the model does not have") from None
    if not isinstance(linear, (nn.Linear, APQLinear)):
        raise ValueError(f"{path} quantizes {name!r}, but the model has a {type(linear).__name__} there")
    return linear


_SAFETENSORS_DTYPE = {torch.int32: "I32", torch.float32: "F32"}
