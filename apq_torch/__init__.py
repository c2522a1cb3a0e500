"""apq_torch: arbitrary-precision quantized matmul from 1-bit AND-popc bit planes.

Layers, each depending only on those above it in this list:
  apq_torch.ops            the torch.ops.apq library: typed wrappers, fakes, layout rules
  apq_torch.quantization   weight quantizers: round to nearest + clip search, GPTQ, mixed precision, rotation
  apq_torch.api            APQConfig, APQLinear, quantize_ / prepare / convert, save / load, compile
  apq_torch.integrations   transformers, vLLM
  apq_torch.tools          command line, demo, evaluation, model loaders, benchmark helpers
apq_torch.reference is the pure-PyTorch definition of every op that the tests compare against.
"""

from . import ops  # noqa: F401  (loads the compiled op library into torch.ops.apq)
from ._version import __version__
from .api import (APQConfig, APQLinear, convert, load_quantized, prepare, quantize_, save_quantized,
                  weight_footprint)
from .integrations import register_with_transformers_on_import
from .ops import cpu_kernel, cuda_built, gemm, hadamard, linear, pack, qmatmul, quantize_pack, unpack
from .quantization import RotationConfig

register_with_transformers_on_import()  # "apq" checkpoints load with from_pretrained (imports nothing now)

__all__ = ["__version__", "ops", "pack", "unpack", "quantize_pack", "gemm", "qmatmul", "linear", "hadamard",
           "cpu_kernel", "cuda_built", "APQConfig", "APQLinear", "RotationConfig", "quantize_", "prepare", "convert",
           "weight_footprint", "compile", "save_quantized", "load_quantized"]


def __getattr__(name):
    # apq_torch.compile loads Inductor, so it is imported on first use, not with the package.
    if name == "compile":
        from .api.compile import compile

        return compile
    raise AttributeError(f"module 'apq_torch' has no attribute {name!r}")
