"""Quantization algorithms (weights): round to nearest with an optional clipping search
(rtn.py), GPTQ one-pass (gptq.py) or layer by layer (sequential.py), layer-wise mixed
precision (mixed.py), and the Hadamard rotation of a decoder's residual stream (rotation.py,
hadamard.py); for activations, the calibrated clipping search (act_clip.py). They depend on the op
layer only; the model API (apq_torch.api) applies them to modules."""

from .act_clip import ACT_CLIP_RATIOS, ActivationClipRecorder
from .gptq import HessianRecorder, collect_hessians, gptq_quantize
from .mixed import (MixedPrecisionPlan, allocate_bits, cosine_importance, decoder_layers, mixed_precision_overrides,
                    mixed_precision_plan, outlier_importance)
from .rotation import RotationConfig, rotate_
from .rtn import CLIP_RATIOS, QuantizedWeight, group_params, quantize_weight

__all__ = ["QuantizedWeight", "quantize_weight", "group_params", "CLIP_RATIOS", "gptq_quantize", "collect_hessians", "HessianRecorder",
           "MixedPrecisionPlan", "mixed_precision_plan", "mixed_precision_overrides", "allocate_bits",
           "cosine_importance", "outlier_importance", "decoder_layers", "RotationConfig", "rotate_",
           "ACT_CLIP_RATIOS", "ActivationClipRecorder"]
