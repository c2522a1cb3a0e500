"""Sequential (layer-by-layer) GPTQ: each decoder layer is calibrated on the outputs of the
layers before it *as quantized*, so every layer's rounding compensates the errors that
reach it, and only one layer's Hessians are held at a time.

Inside a layer the linear layers are visited in stages, in the order the forward pass calls
them, layers reading the same input forming one stage (Llama: q/k/v, o, gate/up, down):
each stage's Hessians come from a forward pass of the layer whose earlier stages are
already quantized ("true sequential" in the GPTQ reference code). A pass stops as soon as
its stage has seen its input.

The driver is model-agnostic: it needs the decoder layers (``mixed.decoder_layers``), the
inputs of the first one (:func:`capture_layer_inputs`), and a callback that replaces named
linear layers by their quantized versions (the model API supplies it).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .gptq import HessianRecorder


class StopForward(Exception):
    """Ends a forward pass early once the wanted inputs were seen."""


def _without_cache(kwargs: dict) -> dict:
    """Layer keyword arguments for replaying a layer: no KV cache is read or grown."""
    out = {}
    for k, v in kwargs.items():
        if hasattr(v, "get_seq_length"):  # a transformers Cache
            v = None
        out[k] = v
    if "use_cache" in out:
        out["use_cache"] = False
    return out


class LayerInputRecorder:
    """Records the (args, kwargs) of every call of ``layer`` while attached; with ``stop``,
    ends each forward pass right there (what runs after the first layer is not needed)."""

    def __init__(self, layer: nn.Module, stop: bool):
        self.inputs: list[tuple[tuple, dict]] = []
        self._stop = stop
        self._handle = layer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.inputs.append((tuple(a.detach() if isinstance(a, Tensor) else a for a in args), _without_cache(kwargs)))
        if self._stop:
            raise StopForward

    def remove(self) -> None:
        self._handle.remove()


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, first_layer: nn.Module, batches) -> list[tuple[tuple, dict]]:
    """The inputs of ``first_layer`` for each batch of input ids, stopping each pass there."""
    recorder = LayerInputRecorder(first_layer, stop=True)
    try:
        for ids in batches:
            try:
                model(ids, use_cache=False)
            except StopForward:
                pass
    finally:
        recorder.remove()
    return recorder.inputs


def _output(result) -> Tensor:
    return result[0] if isinstance(result, (tuple, list)) else result


@torch.no_grad()
def _stages(model: nn.Module, layer: nn.Module, names: Sequence[str], inputs) -> list[list[str]]:
    """``names`` (linear layers inside ``layer``) grouped into stages: in the order the layer
    calls them, consecutive layers that read the same tensor sharing a stage."""
    order: list[tuple[str, int]] = []
    modules = dict(model.named_modules())
    keep = []  # hold the inputs so that their ids stay unique during the pass

    def hook(name):
        def fn(module, args):
            keep.append(args[0])
            order.append((name, id(args[0])))
        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        args, kwargs = inputs[0]
        layer(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    stages, last_input, seen = [], None, set()
    for name, inp in order:
        if name in seen:
            continue
        seen.add(name)
        if stages and inp == last_input:
            stages[-1].append(name)
        else:
            stages.append([name])
        last_input = inp
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(f"sequential GPTQ: {missing[:3]} were not called by their decoder layer's forward")
    return stages


@torch.no_grad()
def _stage_hessians(model: nn.Module, layer: nn.Module, stage: list[str], inputs) -> dict[str, Tensor]:
    """Hessians of one stage's layers, from passes of ``layer`` that stop after the stage."""
    modules = dict(model.named_modules())
    recorder = HessianRecorder(model, stage)
    seen: set[str] = set()

    def stop_after(name):
        def fn(module, args, output):
            seen.add(name)
            if len(seen) == len(stage):
                raise StopForward
        return fn

    handles = [modules[n].register_forward_hook(stop_after(n)) for n in stage]
    try:
        for args, kwargs in inputs:
            seen.clear()
            try:
                layer(*args, **kwargs)
            except StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
        recorder.remove()
    return recorder.hessians


@torch.no_grad()
def sequential_gptq(model: nn.Module, layers: Sequence[nn.Module], inputs: list[tuple[tuple, dict]],
                    names: Sequence[Sequence[str]], quantize: Callable[[list[str], dict[str, Tensor]], None],
                    progress: bool = True) -> None:
    """Quantize ``names[i]`` (full module names of linear layers inside ``layers[i]``) layer by
    layer. ``inputs`` are the first layer's calls (:func:`capture_layer_inputs`);
    ``quantize(stage_names, hessians)`` must replace those modules of ``model`` by quantized
    ones (hessians is keyed by name; layers of a stage share one tensor). Layers with no
    names are run as they are."""
    from tqdm.auto import tqdm

    if len(names) != len(layers):
        raise ValueError("sequential_gptq: one list of names per decoder layer")
    for layer, layer_names in tqdm(list(zip(layers, names)), desc="sequential GPTQ", disable=not progress,
                                   leave=False):
        if layer_names:
            for stage in _stages(model, layer, layer_names, inputs):
                quantize(stage, _stage_hessians(model, layer, stage, inputs))
        inputs = [((_output(layer(*args, **kwargs)), *args[1:]), kwargs) for args, kwargs in inputs]
