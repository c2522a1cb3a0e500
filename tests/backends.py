"""The devices and kernels the tests run on, and how to select one (used by conftest.py's
fixtures and by the hypothesis tests, which cannot take function-scoped fixtures)."""

import contextlib
import os
import sys
from dataclasses import dataclass

import pytest

import apq_torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "gpu"))
import kernel_variants  # noqa: E402  (tools/gpu: the one list of CUDA GEMM variants)

CPU_KERNELS = ["avx512", "vnni", "vnni-decode", "portable"]
# pack and quantize_pack run the popcount kernels' code whichever product kernel is selected
CPU_PACK_KERNELS = ["avx512", "portable"]
# "table": the kernel map's choice; the rest forced as kernel_variants.py says.
CUDA_GEMM_VARIANTS = [v.name for v in kernel_variants.select("all")]


def cuda_variant_skip_reason(kernel: str, group_size: int):
    """Why a CUDA GEMM variant cannot take this call (None if it can), e.g. the CUTLASS
    baseline's 128-element group granularity or a kernel for a newer GPU."""
    variant = next((v for v in kernel_variants.select("all") if v.name == kernel), None)
    if variant is None:
        return None
    if group_size % variant.group_quantum:
        return f"{kernel} takes group sizes in multiples of {variant.group_quantum}"
    import torch

    if torch.cuda.is_available() and kernel_variants.capability() < variant.min_capability:
        return f"{kernel} needs compute capability {variant.min_capability / 10:.1f}"
    return None


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
    variant = kernel_variants.TABLE if kernel == "default" else kernel_variants.select(kernel)[0]
    with kernel_variants.forced(variant):
        yield Backend(device, kernel)


def backend_params(cpu_kernels, cuda_kernels):
    """pytest params (device, kernel) for the given CPU and CUDA kernels."""
    cpu = [pytest.param(("cpu", k), id=f"cpu-{k}") for k in cpu_kernels]
    cuda = [pytest.param(("cuda", k), id=f"cuda-{k}", marks=pytest.mark.cuda) for k in cuda_kernels]
    return cpu + cuda


GEMM_BACKENDS = backend_params(CPU_KERNELS, CUDA_GEMM_VARIANTS)  # every GEMM kernel of every device
OP_BACKENDS = backend_params(CPU_PACK_KERNELS, ["default"])      # ops with one kernel per device (pack, ...)
