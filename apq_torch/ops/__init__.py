"""The op layer: the compiled ``torch.ops.apq`` library, its typed wrappers and fake
functions (library.py), and the packed layout's rules (layout.py).

Importing this package loads the compiled extension ``apq_torch._C``.
"""

import torch  # noqa: F401  (loads libtorch, which _C links against)

try:
    from .. import _C  # noqa: F401  (registers torch.ops.apq)
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "apq_torch's compiled extension apq_torch._C could not be loaded "
        f"({e}). Build it with `pip install --no-build-isolation .` (or `make build`) "
        "against the torch you run with."
    ) from e

from . import layout  # noqa: E402
from .library import (cpu_kernel, cuda_built, gemm, hadamard, linear, pack, qmatmul,  # noqa: E402
                      quantize_pack, unpack)

__all__ = ["layout", "pack", "unpack", "quantize_pack", "gemm", "qmatmul", "linear", "hadamard", "cpu_kernel",
           "cuda_built"]
