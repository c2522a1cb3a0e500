"""The model API: APQConfig, APQLinear, quantize_ (or prepare + convert), safetensors
serialization. ``apq_torch.compile`` (compile.py) is imported on first use: it loads Inductor."""

from .config import APQConfig
from .linear import APQLinear
from .quantize import convert, prepare, quantize_, quantized_layers, weight_footprint
from .serialization import load_quantized, save_quantized

__all__ = ["APQConfig", "APQLinear", "quantize_", "prepare", "convert", "quantized_layers", "weight_footprint",
           "save_quantized", "load_quantized"]
