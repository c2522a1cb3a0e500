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
from .ops import cpu_kernel, gemm, linear, pack, qmatmul, quantize_pack, unpack  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ops", "reference", "pack", "unpack", "quantize_pack", "gemm", "qmatmul", "linear",
           "cpu_kernel", "cuda_built"]


def cuda_built() -> bool:
    """Whether this build compiled CUDA kernels (pack, unpack, quantize_pack so far)."""
    return bool(torch.ops.apq._built_with_cuda())
