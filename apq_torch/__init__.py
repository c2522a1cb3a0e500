"""apq_torch: arbitrary-precision quantized matmul from 1-bit AND-popc bit planes.

Importing the package loads the compiled op library into ``torch.ops.apq``.
"""

import torch  # noqa: F401  (loads libtorch, which _C links against)

try:
    from . import _C  # noqa: F401  (registers torch.ops.apq)
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "apq_torch's compiled extension apq_torch._C could not be loaded "
        f"({e}). Build it with `pip install --no-build-isolation .` (or `make build`) "
        "against the torch you run with."
    ) from e

from . import ops, reference  # noqa: E402
from .api import quantize_, weight_footprint  # noqa: E402
from .compile import compile  # noqa: E402  (shadows the submodule name on purpose: apq_torch.compile(model))
from .config import APQConfig  # noqa: E402
from .nn import APQLinear  # noqa: E402
from .ops import cpu_kernel, gemm, linear, pack, qmatmul, quantize_pack, unpack  # noqa: E402
from .serialization import load_quantized, save_quantized  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ops", "reference", "pack", "unpack", "quantize_pack", "gemm", "qmatmul", "linear",
           "cpu_kernel", "cuda_built", "APQConfig", "APQLinear", "quantize_", "weight_footprint",
           "compile", "save_quantized", "load_quantized"]


def cuda_built() -> bool:
    """Whether this build compiled CUDA kernels (pack, unpack, quantize_pack so far)."""
    return bool(torch.ops.apq._built_with_cuda())
