import os

import pytest
import torch

import apq_torch

HAS_CUDA = torch.cuda.is_available() and apq_torch.cuda_built()
CPU_KERNELS = ["avx512", "vnni", "vnni-decode", "portable"]


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device and a CUDA build of apq_torch")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(params=CPU_KERNELS)
def cpu_kernel(request):
    """Runs a test once per CPU popcount kernel, restoring the default afterwards."""
    if request.param != "portable":
        try:
            apq_torch.cpu_kernel(request.param)
        except RuntimeError:
            if os.environ.get("APQ_REQUIRE_AVX512") == "1":
                raise
            pytest.skip(f"this CPU cannot run the {request.param} kernel")
    else:
        apq_torch.cpu_kernel(request.param)
    yield request.param
    apq_torch.cpu_kernel("auto")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
