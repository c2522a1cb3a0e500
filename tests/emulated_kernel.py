"""Builds tests/emulator (the fused CUDA kernel's source compiled for the CPU, with the
three sm_80 instructions emulated) and calls it through ctypes like gemm_cuda.cpp would:
same operand orientation (swap-AB), same metadata strides, same output strides."""

import ctypes
import os
import shutil
import subprocess

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TILES = {"large": 0, "skinny": 1}
ELEM_TYPES = {torch.int32: 0, torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}  # cuda::ElemType


def cuda_include_dirs():
    """The toolkit headers (cuda_fp16.h, crt/, cccl's cuda/std) or None."""
    homes = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        homes.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in filter(None, homes):
        inc = os.path.join(home, "include")
        if os.path.exists(os.path.join(inc, "crt", "host_defines.h")) and os.path.isdir(os.path.join(inc, "cccl")):
            return [inc, os.path.join(inc, "cccl")]
    return None


def cutlass_include_dir():
    if os.environ.get("CUTLASS_PATH"):
        return os.path.join(os.environ["CUTLASS_PATH"], "include")
    import cutlass_library

    return os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include")


def compile_emulator(out_dir, source, name):
    """g++ build of tests/emulator/<source> (a CUDA kernel's source for the host, with the
    emulated instructions of tests/emulator/apq shadowing cutlass_ext/apq) as a shared library."""
    cuda = cuda_include_dirs()
    assert cuda, "CUDA toolkit headers not found (CUDA_HOME or /usr/local/cuda)"
    lib = os.path.join(out_dir, name)
    cmd = ["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-Wno-deprecated-declarations",
           "-include", os.path.join(ROOT, "tests", "emulator", "cuda_shim.h"),
           "-I", os.path.join(ROOT, "tests", "emulator"),  # shadows cutlass_ext/apq's instruction headers
           "-I", os.path.join(ROOT, "csrc", "cuda"), "-I", os.path.join(ROOT, "cutlass_ext"),
           "-I", cutlass_include_dir()]
    for d in cuda:
        cmd += ["-isystem", d]
    cmd += [os.path.join(ROOT, "tests", "emulator", source), "-o", lib]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return ctypes.CDLL(lib)


def build(out_dir):
    handle = compile_emulator(out_dir, "emulate_gemm.cpp", "apq_emulator.so")
    handle.apq_emulate_bitplane_gemm.restype = ctypes.c_int
    handle.apq_emulate_bitplane_gemm.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                                 ctypes.POINTER(ctypes.c_void_p)]
    return handle


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else ctypes.c_void_p(0)


def gemm_args(swap, x_planes, w_planes, K, out, x_meta=(None, None, None), w_meta=(None, None, None),
              group_size=0, bias=None):
    """The flat argument arrays of tests/emulator/emulated_params.h, oriented like gemm_cuda.cpp.
    x_meta = (rowsum [M,G], scale [M], offset [M]); w_meta = (rowsum [N,G], scale/offset [N,G]).
    Exact int32 sums when `out` is int32, the affine epilogue otherwise."""
    N = w_planes.shape[1]
    G = 1 if group_size == 0 else -(-K // group_size)
    x_side = dict(planes=x_planes, meta=x_meta, strides=(1, 0))
    w_side = dict(planes=w_planes, meta=w_meta, strides=(G, 1))
    a, b = (w_side, x_side) if swap else (x_side, w_side)
    out_strides = (1, N) if swap else (N, 1)
    ints, ptrs = [], []
    for side in (a, b):
        ints += [side["planes"].shape[1], side["planes"].shape[0], *side["strides"]]
        ptrs += [_ptr(side["planes"])] + [_ptr(t) for t in side["meta"]]
    ints += [x_planes.shape[2], K, group_size, G, int(out.dtype == torch.int32), ELEM_TYPES[out.dtype],
             *out_strides, ELEM_TYPES[torch.float32 if bias is None else bias.dtype], int(swap)]
    ptrs += [_ptr(out), _ptr(bias)]
    return (ctypes.c_int64 * len(ints))(*ints), (ctypes.c_void_p * len(ptrs))(*ptrs)


def run(lib, tile, swap, x_planes, w_planes, K, out, *meta, **kwargs):
    rc = lib.apq_emulate_bitplane_gemm(TILES[tile], *gemm_args(swap, x_planes, w_planes, K, out, *meta, **kwargs))
    assert rc == 0
    return out
