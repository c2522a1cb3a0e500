"""quantize_(model, config): swap nn.Linear layers for APQLinear in place; or in two steps,
prepare(model, config) -> the user's own calibration forward passes -> convert(model)."""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

from ..quantization import HessianRecorder, QuantizedWeight, collect_hessians, gptq_quantize
from .config import APQConfig
from .linear import APQLinear

Override = Union[APQConfig, Mapping, None]
Overrides = Union[Mapping[str, Override], Callable[[str, nn.Module], Override], None]


def _resolve(config: APQConfig, overrides: Overrides, name: str, module: nn.Module) -> Optional[APQConfig]:
    """The config of one layer: the override (a config, field changes, or None to skip)."""
    if overrides is None:
        return config
    if callable(overrides) and not isinstance(overrides, Mapping):
        found, override = True, overrides(name, module)
    else:
        found, override = name in overrides, overrides.get(name)
    if not found:
        return config
    if override is None:
        return None
    if isinstance(override, APQConfig):
        return override
    if isinstance(override, Mapping):
        return dataclasses.replace(config, **override)
    raise TypeError(f"override for {name!r} must be an APQConfig, a dict of APQConfig fields or None, "
                    f"got {type(override).__name__}")


def _why_not(module: nn.Module) -> Optional[str]:
    """Why an nn.Linear cannot be quantized, or None."""
    w = module.weight
    if w.device.type == "meta":
        return "weights on the meta device"
    if not w.dtype.is_floating_point:
        return f"{w.dtype} weights"
    return None


def quantize_(model: nn.Module, config: APQConfig,
              filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
              overrides: Overrides = None, calibration=None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` accepted by ``filter_fn(module, name)`` with an
    :class:`APQLinear` quantized per ``config``, in place; returns ``model``.

    ``overrides`` gives layers their own settings: a dict ``{name: APQConfig | dict of
    changed fields | None}`` (None leaves that layer in float) or a callable
    ``(name, module) -> same``. Layers that cannot be handled stay as they are and are
    named once in a warning.

    ``calibration`` feeds layers with ``method="gptq"``: an iterable of input-id tensors
    [B, T] run through ``model`` once, or the dict of
    :func:`apq_torch.quantization.collect_hessians`. To run your own calibration loop
    instead, use :func:`prepare` and :func:`convert`.
    """
    plan = _plan(model, config, filter_fn, overrides)
    return _convert(model, plan, _hessians_for(model, plan, calibration))


def prepare(model: nn.Module, config: APQConfig, filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
            overrides: Overrides = None) -> nn.Module:
    """First step of the two-step flow: plan the layers as :func:`quantize_` would and start
    recording the input Hessians of the GPTQ ones. Run any forward passes (your calibration
    data, any batch shapes), then call :func:`convert`. Returns ``model``."""
    if hasattr(model, _PREPARED):
        raise ValueError("model is already prepared; call apq_torch.convert(model) first")
    plan = _plan(model, config, filter_fn, overrides)
    recorder = HessianRecorder(model, [n for n, (_, cfg) in plan.items() if cfg.method == "gptq"])
    setattr(model, _PREPARED, (plan, recorder))
    return model


def convert(model: nn.Module) -> nn.Module:
    """Second step: quantize the layers :func:`prepare` planned, with the Hessians recorded
    since; stops recording. Returns ``model``."""
    if not hasattr(model, _PREPARED):
        raise ValueError("model was not prepared: call apq_torch.prepare(model, config) first")
    plan, recorder = getattr(model, _PREPARED)
    recorder.remove()
    delattr(model, _PREPARED)
    missing = sorted(n for n, (_, cfg) in plan.items() if cfg.method == "gptq" and n not in recorder.hessians)
    if missing:
        raise ValueError(f"no calibration data reached {missing[:3]} between prepare and convert")
    return _convert(model, plan, recorder.hessians)


_PREPARED = "_apq_prepared"


def _plan(model: nn.Module, config: APQConfig, filter_fn, overrides: Overrides) -> dict:
    """{name: (nn.Linear, APQConfig)} of the layers to quantize; warns about the others."""
    if not isinstance(config, APQConfig):
        raise TypeError(f"config must be an APQConfig, got {type(config).__name__}")
    if overrides is not None and not (callable(overrides) or isinstance(overrides, Mapping)):
        raise TypeError("overrides must be a dict or a callable")
    if isinstance(overrides, Mapping):
        names = {name for name, _ in model.named_modules()}
        missing = sorted(set(overrides) - names)
        if missing:
            raise ValueError(f"overrides name modules that do not exist: {missing[:5]}")
    plan, skipped = {}, []
    for name, module in list(model.named_modules()):
        if isinstance(module, APQLinear):
            continue
        if not isinstance(module, nn.Linear):
            if type(module).__name__.endswith(("Linear", "Conv1D")) and (filter_fn is None or filter_fn(module, name)):
                skipped.append(f"{name} ({type(module).__name__} is not an nn.Linear)")
            continue
        if filter_fn is not None and not filter_fn(module, name):
            continue
        layer_config = _resolve(config, overrides, name, module)
        if layer_config is None:
            continue
        reason = _why_not(module)
        if reason:
            skipped.append(f"{name} ({reason})")
            continue
        plan[name] = (module, layer_config)
    if skipped:
        warnings.warn(f"quantize_ left {len(skipped)} layer(s) unquantized: {', '.join(skipped)}", stacklevel=3)
    return plan


def _convert(model: nn.Module, plan: dict, hessians: dict) -> nn.Module:
    for name, module in _quantize_planned(plan, hessians).items():
        _set_module(model, name, module)
    return model


@torch.no_grad()
def _quantize_planned(plan: dict, hessians: dict) -> dict:
    """APQLinear for every planned layer. GPTQ layers that share one Hessian object and
    one config (q/k/v, gate/up) are solved as one stacked weight: rows are independent
    given H, and the column sweep is paid once."""
    out, stacks = {}, defaultdict(list)
    for name, (module, cfg) in plan.items():
        if cfg.method == "gptq":
            stacks[(id(hessians[name]), cfg)].append(name)
        else:
            out[name] = APQLinear.from_float(module, cfg)
    for (_, cfg), names in stacks.items():
        modules = [plan[n][0] for n in names]
        q = gptq_quantize(torch.cat([m.weight for m in modules]), hessians[names[0]], cfg.w_bits,
                          cfg.w_format, cfg.group_size, cfg.clip_search)
        row = 0
        for name, m in zip(names, modules):
            rows = slice(row, row + m.out_features)
            part = QuantizedWeight(q.codes[rows], q.scale[rows], q.offset[rows], q.bits, q.format, q.group_size)
            out[name] = APQLinear.from_quantized(m, cfg, part)
            row += m.out_features
    return out


def _hessians_for(model: nn.Module, plan: dict, calibration) -> dict:
    """Input Hessians of the planned layers that use GPTQ (one pass over the float model)."""
    gptq = {name for name, (_, cfg) in plan.items() if cfg.method == "gptq"}
    if not gptq:
        return {}
    if calibration is None:
        raise ValueError(f"APQConfig.method='gptq' needs calibration= (input ids or Hessians); "
                         f"layers: {sorted(gptq)[:3]}...")
    if isinstance(calibration, Mapping):
        missing = sorted(gptq - set(calibration))
        if missing:
            raise ValueError(f"calibration Hessians are missing for {missing[:3]}")
        return calibration
    return collect_hessians(model, calibration, lambda m, n: n in gptq)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantized_layers(model: nn.Module) -> dict[str, APQLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, APQLinear)}


def weight_footprint(model: nn.Module) -> dict:
    """Bytes of the model's weights: quantized layers (planes + metadata) and all others."""
    quantized = quantized_layers(model)
    q_bytes = sum(m.nbytes for m in quantized.values())
    q_ids = {id(t) for m in quantized.values() for t in m.buffers()}
    seen, other = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in q_ids or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        other += t.numel() * t.element_size()
    q_params = sum(m.in_features * m.out_features for m in quantized.values())
    return dict(quantized_bytes=q_bytes, other_bytes=other, total_bytes=q_bytes + other,
                quantized_weights=q_params,
                bits_per_weight=8 * q_bytes / q_params if q_params else float("nan"))
