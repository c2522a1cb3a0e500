"""transformers integration through its public extension points (``register_quantization_config``,
``register_quantizer``, an ``HfQuantizer``), registered as quant_method "apq" when this module is
imported (``import apq_torch`` arranges that import for when transformers loads its quantizer
registry: see apq_torch/integrations/__init__.py).

- ``from_pretrained(path, quantization_config=APQTransformersConfig(w_bits=4, ...))`` loads the
  float weights, then quantizes with :func:`apq_torch.quantize_` (round to nearest, or GPTQ on
  the ``calibration`` data given in the config);
- ``save_pretrained(dir)`` writes the packed tensors as safetensors shards and, in
  ``config.json``, the layers and their configs (apq_torch/integrations/checkpoint.py);
- ``from_pretrained(dir)`` builds empty APQLinear layers from that entry, checks every packed
  tensor's shape and dtype in the shard headers, and loads them: outputs are bit-identical.

A model quantized by hand (``quantize_``, or ``prepare`` + your calibration loop + ``convert``)
gets the same checkpoint after :func:`attach_config`.
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING, register_quantization_config, register_quantizer
from transformers.quantizers.base import HfQuantizer
from transformers.quantizers.quantizers_utils import should_convert_module
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..api.config import APQConfig
from ..api.linear import APQLinear
from ..api.quantize import _set_module, quantize_, quantized_layers
from ..api.serialization import check_packed_tensors, safetensors_header
from .checkpoint import QUANT_METHOD, checkpoint_entry, read_checkpoint_entry

__all__ = ["APQTransformersConfig", "APQHfQuantizer", "attach_config", "register"]


class APQTransformersConfig(QuantizationConfigMixin):
    """``quantization_config`` for ``from_pretrained``.

    Keyword arguments: the :class:`~apq_torch.APQConfig` fields (``w_bits``, ``a_bits``,
    ``w_format``, ``a_format``, ``group_size``, ``clip_search``, ``refit_scales``, ``method``, ``a_clip``), applied to every
    ``nn.Linear`` except ``modules_to_not_convert`` (default: transformers' usual skips, the
    output embedding and tied weights); ``overrides`` as in :func:`~apq_torch.quantize_` (a
    dict of module name -> field changes, or a callable); for ``method="gptq"`` the
    ``calibration`` data of ``quantize_`` (input-id tensors or Hessians), used once on load
    and never saved.

    ``layers`` ({module name: APQConfig}) is filled once the model is quantized; it, not the
    arguments above, is what ``save_pretrained`` writes and ``from_pretrained`` reads back.
    """

    def __init__(self, *, modules_to_not_convert: Optional[list] = None, overrides=None, calibration=None,
                 **fields):
        self.quant_method = QUANT_METHOD
        self.config = APQConfig(**fields)
        self.modules_to_not_convert = modules_to_not_convert
        self.overrides = overrides
        self.calibration = calibration
        self.layers: dict[str, APQConfig] = {}

    def to_dict(self) -> dict:
        return checkpoint_entry(self.layers)

    def to_diff_dict(self) -> dict:
        return self.to_dict()

    @classmethod
    def from_dict(cls, config_dict: dict, return_unused_kwargs: bool = False, **kwargs):
        """The config of a saved checkpoint (its ``config.json`` entry, checked)."""
        config = cls()
        config.layers = read_checkpoint_entry(config_dict)
        return (config, kwargs) if return_unused_kwargs else config


class APQHfQuantizer(HfQuantizer):
    """Quantizes after the float weights are loaded (so GPTQ can run the float model on its
    calibration data), or, for a saved apq checkpoint, swaps the listed ``nn.Linear`` layers for
    empty :class:`~apq_torch.APQLinear` before loading their packed tensors."""

    requires_calibration = False
    quantization_config: APQTransformersConfig

    def validate_environment(self, *args, device_map=None, **kwargs):
        if isinstance(device_map, dict) and "disk" in device_map.values():
            raise ValueError("apq_torch cannot quantize or load layers offloaded to disk; drop 'disk' from device_map")
        c = self.quantization_config
        if not self.pre_quantized and c.config.method == "gptq" and c.calibration is None:
            raise ValueError("APQTransformersConfig(method='gptq') needs calibration= (a list of input-id tensors), "
                             "or load the float model and use apq_torch.prepare / convert, then attach_config")

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        if not self.pre_quantized:
            self.modules_to_not_convert = self.get_modules_to_not_convert(
                model, self.quantization_config.modules_to_not_convert, model._keep_in_fp32_modules)
            return
        files = list(checkpoint_files or [])
        if not files or not all(str(f).endswith(".safetensors") for f in files):
            raise ValueError(f"an apq checkpoint is stored as safetensors; got {files}")
        tensors = {}
        for f in files:
            tensors.update(safetensors_header(f))
        for name, config in self.quantization_config.layers.items():
            linear = _linear_to_replace(model, name)
            check_packed_tensors(tensors, name, linear.in_features, linear.out_features, config, "checkpoint")
            _set_module(model, name, APQLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                               config, device=linear.weight.device, bias_dtype=linear.weight.dtype))

    def _process_model_after_weight_loading(self, model, **kwargs):
        c = self.quantization_config
        if not self.pre_quantized:
            skip = self.modules_to_not_convert
            quantize_(model, c.config, filter_fn=lambda module, name: should_convert_module(name, skip),
                      overrides=c.overrides, calibration=c.calibration)
            c.calibration = None  # used once; never kept with the model
            c.layers = _layer_configs(model)
        return model

    def get_state_dict_and_metadata(self, model):
        # save_pretrained calls this before writing config.json: record the layers the model has
        # now (prepare/convert or quantize_ may have run since loading).
        self.quantization_config.layers = _layer_configs(model)
        return None, {}

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        return True  # the apq ops have fake functions: torch.compile traces them


def attach_config(model: nn.Module) -> nn.Module:
    """Record the APQLinear layers of a transformers model quantized with ``quantize_`` (or
    ``prepare`` / ``convert``) in ``model.config.quantization_config`` and attach the quantizer,
    so that ``save_pretrained`` writes a checkpoint that ``from_pretrained`` reloads. Returns ``model``."""
    config = APQTransformersConfig()
    config.layers = _layer_configs(model)
    quantizer = APQHfQuantizer(config, pre_quantized=True)
    model.is_quantized, model.quantization_method = True, QUANT_METHOD
    model.hf_quantizer = quantizer
    quantizer.postprocess_model(model)
    return model


def _layer_configs(model: nn.Module) -> dict[str, APQConfig]:
    layers = {name: m.config for name, m in quantized_layers(model).items()}
    if not layers:
        raise ValueError("the model has no APQLinear layers: quantize it (apq_torch.quantize_, or prepare + "
                         "convert) before saving")
    return layers


def _linear_to_replace(model: nn.Module, name: str) -> nn.Linear:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the checkpoint quantizes {name!r}, which {type(model).__name__} does not have") from None
    if not isinstance(module, nn.Linear):
        raise ValueError(f"the checkpoint quantizes {name!r}, but {type(model).__name__} has a "
                         f"{type(module).__name__} there")
    return module


def register() -> None:
    """Register quant_method "apq" with transformers (done on import; idempotent)."""
    if AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is APQHfQuantizer:
        return
    register_quantization_config(QUANT_METHOD)(APQTransformersConfig)
    register_quantizer(QUANT_METHOD)(APQHfQuantizer)


register()
