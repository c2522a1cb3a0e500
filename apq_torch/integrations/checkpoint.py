"""The ``quantization_config`` entry of a Hugging Face-style apq checkpoint (``config.json``),
defined once for the writers and readers: the transformers quantizer and the vLLM plugin.

    {"quant_method": "apq",
     "format_version": 1,                      # layout of this entry and of the tensors
     "apq_torch_version": "0.1.0",             # who wrote it (informational)
     "configs": [APQConfig.to_dict(), ...],    # the distinct layer configs, each versioned
     "layers": {"model.layers.0.mlp.up_proj": 0, ...}}   # every quantized layer: its config

Each listed layer ``name`` stores ``name.w_planes``, ``.w_rowsum``, ``.w_scale``, ``.w_offset``
(APQLinear's buffers, docs/ops.md's packed layout) and, if it has one, ``name.bias``. Nothing
here imports transformers or vLLM. A checkpoint read from disk is untrusted: its entry is checked here
before any layer is built.
"""

from __future__ import annotations

from typing import Mapping

from .._version import __version__
from ..api.config import APQConfig

QUANT_METHOD = "apq"
FORMAT_VERSION = 1
PACKED_TENSORS = ("w_planes", "w_rowsum", "w_scale", "w_offset")


def checkpoint_entry(layers: Mapping[str, APQConfig]) -> dict:
    """The ``quantization_config`` dict recording ``layers`` ({module name: APQConfig})."""
    configs, index, names = [], {}, {}
    for name in sorted(layers):
        config = layers[name]
        if config not in index:
            index[config] = len(configs)
            configs.append(config.to_dict())
        names[name] = index[config]
    return {"quant_method": QUANT_METHOD, "format_version": FORMAT_VERSION, "apq_torch_version": __version__,
            "configs": configs, "layers": names}


def read_checkpoint_entry(entry: Mapping) -> dict[str, APQConfig]:
    """{module name: APQConfig} of a ``quantization_config`` dict; a ValueError names whatever
    is missing, of another version, or malformed."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"apq quantization_config must be a dict, got {type(entry).__name__}")
    if entry.get("quant_method") != QUANT_METHOD:
        raise ValueError(f"quantization_config.quant_method is {entry.get('quant_method')!r}, not {QUANT_METHOD!r}")
    if entry.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"apq checkpoint format_version {entry.get('format_version')!r} is not supported by "
                         f"apq_torch {__version__} (it reads version {FORMAT_VERSION})")
    configs, layers = entry.get("configs"), entry.get("layers")
    if not isinstance(configs, list) or not isinstance(layers, Mapping) or not layers:
        raise ValueError("apq quantization_config needs 'configs' (a list) and 'layers' (a non-empty dict "
                         "of module name -> index into configs)")
    try:
        parsed = [APQConfig.from_dict(c) for c in configs]
    except (TypeError, AttributeError) as e:
        raise ValueError(f"apq quantization_config.configs: {e}") from e
    out = {}
    for name, i in layers.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(parsed):
            raise ValueError(f"apq quantization_config.layers[{name!r}] = {i!r} is not an index into configs "
                             f"(0..{len(parsed) - 1})")
        out[name] = parsed[i]
    return out
