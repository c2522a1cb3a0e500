"""Build of apq_torch._C: CPU sources always; CUDA sources whenever nvcc and a CUDA build
of torch are present (no GPU needed).

Environment switches:
  APQ_BUILD_CUDA   auto (default) | 0 | 1
  APQ_CUDA_ARCHS   semicolon list of SM targets, default "80;90a"
  CUTLASS_PATH     a CUTLASS checkout; default: the headers of the nvidia-cutlass package
  MAX_JOBS         parallel compile jobs (read by torch's ninja build)
"""

import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_home():
    """CUDA_HOME for torch's build helpers. torch guesses it from `which nvcc`, which is
    wrong when nvcc is a wrapper script outside the toolkit (e.g. /usr/local/bin/nvcc)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    for candidate in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


if _cuda_home():
    os.environ.setdefault("CUDA_HOME", _cuda_home())

import torch  # noqa: E402  (after CUDA_HOME is settled)
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda():
    mode = os.environ.get("APQ_BUILD_CUDA", "auto").lower()
    if mode in ("0", "false", "no"):
        return False
    available = torch.version.cuda is not None and os.environ.get("CUDA_HOME") is not None
    if mode in ("1", "true", "yes") and not available:
        raise RuntimeError("APQ_BUILD_CUDA=1 but nvcc or a CUDA build of torch is missing")
    return available


def _cutlass_includes():
    root = os.environ.get("CUTLASS_PATH")
    if root:
        return [os.path.join(root, "include"), os.path.join(root, "tools", "util", "include")]
    try:
        import cutlass_library
    except ImportError:
        print("apq_torch: nvidia-cutlass not installed and CUTLASS_PATH unset; CUTLASS headers unavailable")
        return []
    source = os.path.join(os.path.dirname(cutlass_library.__file__), "source")
    return [os.path.join(source, "include"), os.path.join(source, "tools", "util", "include")]


def _pip_cuda_includes():
    """Headers of the nvidia-* wheels that a pip CUDA torch depends on (cusparse.h, ...),
    searched after the toolkit's own include directory."""
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for base in nvidia.__path__:
        found += sorted(glob.glob(os.path.join(base, "cu*", "include")))
    return found


def _gencode_flags():
    flags = []
    for arch in os.environ.get("APQ_CUDA_ARCHS", "80;90a").replace(",", ";").split(";"):
        arch = arch.strip().replace("sm_", "")
        if arch:
            flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    return flags


def _extension():
    # -fopenmp: at::parallel_for is inlined from ATen's headers and is serial without it.
    cxx = ["-O3", "-std=c++20", "-ffp-contract=off", "-fopenmp"]
    link = ["-fopenmp"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not _want_cuda():
        return CppExtension("apq_torch._C", sources, extra_compile_args={"cxx": cxx},
                            extra_link_args=link)
    nvcc = ["-O3", "-std=c++20", "-DAPQ_WITH_CUDA", "--expt-relaxed-constexpr", "-lineinfo"]
    nvcc += _gencode_flags()
    after_toolkit = [flag for d in _pip_cuda_includes() for flag in ("-isystem", d)]
    cxx += after_toolkit
    nvcc += after_toolkit
    sources += sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu"))
    return CUDAExtension(
        "apq_torch._C",
        sources,
        include_dirs=[os.path.join(ROOT, "cutlass_ext")] + _cutlass_includes(),
        extra_compile_args={"cxx": cxx + ["-DAPQ_WITH_CUDA"], "nvcc": nvcc},
        extra_link_args=link,
    )


setup(
    packages=find_packages(include=["apq_torch", "apq_torch.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
