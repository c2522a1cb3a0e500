"""quantize_(model, config): swap nn.Linear layers for APQLinear in place; or in two steps,
prepare(model, config) -> the user's own calibration forward passes -> convert(model)."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections import defaultdict
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

from ..quantization import HessianRecorder, QuantizedWeight, collect_hessians, decoder_layers, gptq_quantize
from ..quantization.act_clip import ActivationClipRecorder
from ..quantization.rotation import RotationConfig, rotate_
from ..quantization.sequential import LayerInputRecorder, StopForward, sequential_gptq
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


def quantize_(model: nn.Module, config: Union[APQConfig, RotationConfig],
              filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
              overrides: Overrides = None, calibration=None, *, sequential: Optional[bool] = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` accepted by ``filter_fn(module, name)`` with an
    :class:`APQLinear` quantized per ``config``, in place; returns ``model``.

    ``overrides`` gives layers their own settings: a dict ``{name: APQConfig | dict of
    changed fields | None}`` (None leaves that layer in float) or a callable
    ``(name, module) -> same``. Layers that cannot be handled stay as they are and are
    named once in a warning.

    ``calibration`` feeds layers with ``method="gptq"``: an iterable of input-id tensors
    [B, T], or the dict of :func:`apq_torch.quantization.collect_hessians`. With input ids,
    GPTQ is *sequential* on a decoder LLM (``sequential=None`` picks it whenever the model has
    decoder layers): layer by layer, each calibrated on the outputs of the layers before it
    as quantized (apq_torch.quantization.sequential); ``sequential=False`` takes every
    Hessian from one pass of the float model. Layers with ``a_clip_search`` take their
    activation clipping ratio from one more pass of the float model over the same input ids
    (apq_torch.quantization.act_clip). To run your own calibration loop instead, use
    :func:`prepare` and :func:`convert`.

    ``config`` may also be a :class:`RotationConfig`: the model's residual stream is then
    rotated in place (apq_torch.quantization.rotation; no other argument applies), to be
    followed by a quantizing call.
    """
    if isinstance(config, RotationConfig):
        if filter_fn is not None or overrides is not None or calibration is not None or sequential is not None:
            raise ValueError("quantize_ with a RotationConfig rotates the whole model: it takes no filter_fn, "
                             "overrides, calibration or sequential")
        return rotate_(model, config)
    plan = _plan(model, config, filter_fn, overrides)
    search = _clip_search_layers(plan)
    if search:
        if calibration is None or isinstance(calibration, Mapping):
            raise ValueError(f"APQConfig.a_clip_search=True needs calibration= input ids (not Hessians); "
                             f"layers: {sorted(search)[:3]}...")
        calibration = list(calibration)  # read twice: the search, then GPTQ
        clips = ActivationClipRecorder(model, search)
        try:
            for ids in calibration:
                _forward(model, ids)
        finally:
            clips.remove()
        plan = _with_clips(plan, clips)
    gptq = _gptq_names(plan)
    if gptq and calibration is None:
        raise ValueError(f"APQConfig.method='gptq' needs calibration= (input ids or Hessians); "
                         f"layers: {sorted(gptq)[:3]}...")
    if isinstance(calibration, Mapping):
        if sequential:
            raise ValueError("sequential=True needs calibration input ids, not Hessians")
        missing = sorted(gptq - set(calibration))
        if missing:
            raise ValueError(f"calibration Hessians are missing for {missing[:3]}")
        return _convert(model, plan, calibration)
    if gptq and _use_sequential(model, gptq, sequential):
        recorder = _SequentialRecorder(model, plan, stop_early=True)
        try:
            for ids in calibration:
                recorder.run(ids)
        finally:
            recorder.remove()
        return _convert_sequential(model, plan, recorder)
    return _convert(model, plan, collect_hessians(model, calibration, lambda m, n: n in gptq) if gptq else {})


def prepare(model: nn.Module, config: APQConfig, filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
            overrides: Overrides = None, *, sequential: Optional[bool] = None) -> nn.Module:
    """First step of the two-step flow: plan the layers as :func:`quantize_` would and start
    recording. Run any forward passes (your calibration data, any batch shapes), then call
    :func:`convert`. Returns ``model``. Layers with ``a_clip_search`` record their activation
    clipping search in the same passes.

    Sequential GPTQ (the default on a decoder LLM, as in :func:`quantize_`) records the
    inputs of the first decoder layer (hidden states and the layer's keyword arguments,
    KV caches dropped) and the Hessians of GPTQ layers outside the decoder layers; one-pass
    GPTQ records every GPTQ layer's input Hessian."""
    if hasattr(model, _PREPARED):
        raise ValueError("model is already prepared; call apq_torch.convert(model) first")
    plan = _plan(model, config, filter_fn, overrides)
    gptq = _gptq_names(plan)
    if gptq and _use_sequential(model, gptq, sequential):
        recorder = _SequentialRecorder(model, plan, stop_early=False)
    else:
        recorder = HessianRecorder(model, sorted(gptq))
    search = _clip_search_layers(plan)
    clips = ActivationClipRecorder(model, search) if search else None
    setattr(model, _PREPARED, (plan, recorder, clips))
    return model


def convert(model: nn.Module) -> nn.Module:
    """Second step: quantize the layers :func:`prepare` planned, with what was recorded since
    (sequential GPTQ replays the recorded first-layer inputs through the decoder layers, layer
    by layer); stops recording. Returns ``model``."""
    if not hasattr(model, _PREPARED):
        raise ValueError("model was not prepared: call apq_torch.prepare(model, config) first")
    plan, recorder, clips = getattr(model, _PREPARED)
    recorder.remove()
    delattr(model, _PREPARED)
    if clips is not None:
        clips.remove()
        plan = _with_clips(plan, clips)
    if isinstance(recorder, _SequentialRecorder):
        if not recorder.layer_inputs.inputs:
            raise ValueError("no calibration data reached the first decoder layer between prepare and convert")
        return _convert_sequential(model, plan, recorder)
    missing = sorted(_gptq_names(plan) - set(recorder.hessians))
    if missing:
        raise ValueError(f"no calibration data reached {missing[:3]} between prepare and convert")
    return _convert(model, plan, recorder.hessians)


def _clip_search_layers(plan: dict) -> dict:
    """{name: (a_bits, a_format)} of the planned layers with a_clip_search."""
    return {name: (cfg.a_bits, cfg.a_format) for name, (_, cfg) in plan.items() if cfg.a_clip_search}


def _with_clips(plan: dict, clips: ActivationClipRecorder) -> dict:
    """The plan with each searched layer's a_clip set to the ratio the search chose."""
    chosen = clips.choose()
    missing = sorted(set(_clip_search_layers(plan)) - set(chosen))
    if missing:
        raise ValueError(f"no calibration data reached {missing[:3]}: the activation clipping search has nothing "
                         "to choose from")
    return {name: (module, dataclasses.replace(cfg, a_clip=chosen[name]) if name in chosen else cfg)
            for name, (module, cfg) in plan.items()}


def _forward(model: nn.Module, ids) -> None:
    """One calibration pass (no KV cache where the model takes use_cache)."""
    takes_cache = "use_cache" in inspect.signature(model.forward).parameters
    with torch.no_grad():
        model(ids, use_cache=False) if takes_cache else model(ids)


def _gptq_names(plan: dict) -> set:
    return {name for name, (_, cfg) in plan.items() if cfg.method == "gptq"}


def _use_sequential(model: nn.Module, gptq: set, sequential: Optional[bool]) -> bool:
    """Whether GPTQ runs layer by layer: asked for, or (None) whenever the model has decoder
    layers holding GPTQ layers."""
    if sequential is False:
        return False
    try:
        prefixes = tuple(p + "." for p in _layer_prefixes(model, decoder_layers(model)))
    except ValueError:
        prefixes = ()
    inside = any(n.startswith(prefixes) for n in gptq) if prefixes else False
    if sequential and not inside:
        raise ValueError("sequential=True needs a model with decoder layers (model.layers, transformer.h, ...) "
                         "holding the GPTQ layers")
    return inside


def _layer_prefixes(model: nn.Module, layers) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(layer)] for layer in layers]


class _SequentialRecorder:
    """What sequential GPTQ needs from calibration passes: the first decoder layer's inputs,
    and one-pass Hessians of GPTQ layers outside the decoder layers (the float model's).
    With ``stop_early`` (and no such outside layer), :meth:`run` stops each pass at the
    first decoder layer."""

    def __init__(self, model: nn.Module, plan: dict, stop_early: bool):
        self.model = model
        self.layers = list(decoder_layers(model))
        prefixes = _layer_prefixes(model, self.layers)
        gptq = _gptq_names(plan)
        self.per_layer = [sorted(n for n in gptq if n.startswith(p + ".")) for p in prefixes]
        outside = sorted(gptq - {n for names in self.per_layer for n in names})
        self.hessians = HessianRecorder(model, outside)
        self.layer_inputs = LayerInputRecorder(self.layers[0], stop=stop_early and not outside)

    def run(self, ids) -> None:
        try:
            _forward(self.model, ids)
        except StopForward:
            pass

    def remove(self) -> None:
        self.hessians.remove()
        self.layer_inputs.remove()


def _convert_sequential(model: nn.Module, plan: dict, recorder: _SequentialRecorder) -> nn.Module:
    """Round-to-nearest layers first, then the decoder layers' GPTQ layers layer by layer,
    then the GPTQ layers outside them (with the float model's Hessians)."""
    rtn = {n: entry for n, entry in plan.items() if entry[1].method != "gptq"}
    _convert(model, rtn, {})

    def quantize_stage(names, hessians):
        _convert(model, {n: (model.get_submodule(n), plan[n][1]) for n in names}, hessians)

    sequential_gptq(model, recorder.layers, recorder.layer_inputs.inputs, recorder.per_layer, quantize_stage)
    outside = {n: plan[n] for n in recorder.hessians.hessians}
    return _convert(model, outside, recorder.hessians.hessians)


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
                          cfg.w_format, cfg.group_size, cfg.clip_search, refit=cfg.refit_scales)
        row = 0
        for name, m in zip(names, modules):
            rows = slice(row, row + m.out_features)
            part = QuantizedWeight(q.codes[rows], q.scale[rows], q.offset[rows], q.bits, q.format, q.group_size)
            out[name] = APQLinear.from_quantized(m, cfg, part)
            row += m.out_features
    return out


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
