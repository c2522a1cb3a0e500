"""Fixtures that run one test function on every device and kernel (after pytorch/extension-cpp):
the CPU kernels always, the CUDA ones where a GPU and a CUDA build exist (skipped cleanly,
by name, otherwise). The lists live in backends.py."""

import os

import pytest
import torch

import apq_torch
from backends import GEMM_BACKENDS, OP_BACKENDS, selected

HAS_CUDA = torch.cuda.is_available() and apq_torch.cuda_built()


def pytest_configure(config):
    from hypothesis import settings

    # CI: a fixed example budget and derandomized examples (reproducible runs);
    # HYPOTHESIS_PROFILE=long for deeper, random runs.
    settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True, print_blob=True)
    settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device and a CUDA build of apq_torch")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(params=OP_BACKENDS)
def backend(request):
    """Every CPU kernel, and CUDA with its default kernels (ops with one CUDA kernel)."""
    with selected(*request.param) as b:
        yield b


@pytest.fixture(params=GEMM_BACKENDS)
def gemm_backend(request):
    """Every CPU kernel and every CUDA GEMM variant (the mapping table, each forced kernel,
    the CUTLASS baseline)."""
    with selected(*request.param) as b:
        yield b


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """The devices, with their default kernels (model-level tests)."""
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
