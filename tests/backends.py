"""The devices and kernels the tests run on, and how to select one (used by conftest.py's
fixtures and by the hypothesis tests, which cannot take function-scoped fixtures)."""

import contextlib
import os
from dataclasses import dataclass

import pytest

import apq_torch

CPU_KERNELS = ["avx512", "portable"]
# "table": the kernel map's choice; the rest forced with APQ_GEMM_KERNEL / APQ_GEMM_PATH.
CUDA_GEMM_VARIANTS = ["table", "large,noswap", "large,swap", "skinny,noswap", "skinny,swap", "baseline"]


@dataclass(frozen=True)
class Backend:
    """One device and kernel a test runs on: ``device`` for tensors, ``kernel`` its name."""
    device: str
    kernel: str

    def to(self, *tensors):
        moved = tuple(None if t is None else t.to(self.device) for t in tensors)
        return moved if len(moved) != 1 else moved[0]


@contextlib.contextmanager
def selected(device: str, kernel: str):
    """Runs the body with `kernel` selected: a CPU kernel by name, a CUDA GEMM variant through
    APQ_GEMM_KERNEL / APQ_GEMM_PATH ("table" and "default": the mapping's choice)."""
    if device == "cpu":
        try:
            apq_torch.cpu_kernel(kernel)
        except RuntimeError:
            if kernel != "portable" and os.environ.get("APQ_REQUIRE_AVX512") == "1":
                raise
            pytest.skip(f"this CPU cannot run the {kernel!r} kernel")
        try:
            yield Backend(device, kernel)
        finally:
            apq_torch.cpu_kernel("auto")
        return
    env = {"baseline": ("APQ_GEMM_PATH", "baseline")}.get(kernel)
    if env is None and kernel not in ("table", "default"):
        env = ("APQ_GEMM_KERNEL", kernel)
    with pytest.MonkeyPatch.context() as mp:
        if env:
            mp.setenv(*env)
        yield Backend(device, kernel)


def backend_params(cuda_kernels):
    """pytest params (device, kernel) for every CPU kernel and the given CUDA kernels."""
    cpu = [pytest.param(("cpu", k), id=f"cpu-{k}") for k in CPU_KERNELS]
    cuda = [pytest.param(("cuda", k), id=f"cuda-{k}", marks=pytest.mark.cuda) for k in cuda_kernels]
    return cpu + cuda


GEMM_BACKENDS = backend_params(CUDA_GEMM_VARIANTS)  # every GEMM kernel of every device
OP_BACKENDS = backend_params(["default"])            # ops with one kernel per device (pack, ...)
