"""The CUDA objects are built wherever nvcc and a CUDA torch exist, GPU or not."""

import glob
import os
import shutil
import subprocess

import pytest
import torch

import apq_torch


def nvcc_available():
    return shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


def find_cuobjdump():
    candidates = [shutil.which("cuobjdump")]
    import nvidia

    for base in nvidia.__path__:
        candidates += glob.glob(os.path.join(base, "cu*", "bin", "cuobjdump"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def expect_cuda_build():
    return nvcc_available() and torch.version.cuda is not None and \
        os.environ.get("APQ_BUILD_CUDA", "auto") not in ("0", "false", "no")


def test_cuda_build_matches_the_toolchain():
    assert apq_torch.cuda_built() == expect_cuda_build()


@pytest.mark.skipif(not expect_cuda_build(), reason="no nvcc or a CPU-only torch: CPU-only build")
def test_cuda_objects_hold_both_default_archs():
    tool = find_cuobjdump()
    assert tool, "cuobjdump not found (pip install nvidia-cuda-cuobjdump)"
    listing = subprocess.run([tool, "--list-elf", apq_torch._C.__file__], capture_output=True,
                             text=True, check=True).stdout
    archs = os.environ.get("APQ_CUDA_ARCHS", "80;90a").replace(",", ";").split(";")
    for arch in archs:
        assert f"sm_{arch.strip().replace('sm_', '')}" in listing, listing
