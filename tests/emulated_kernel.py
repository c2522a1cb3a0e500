"""Builds tests/emulator (the CUDA kernels' source and the torch-free host code of
csrc/cuda/gemm_plan.cpp compiled for the CPU, with the sm_80 instructions emulated) and calls
it through ctypes with what gemm_cuda.cpp receives: pointers, shapes, K, group size and the
kernel variant. Orientation (swap-AB), parameters and grid are the production host code's."""

import ctypes
import os
import shutil
import subprocess

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ELEM_TYPES = {torch.int32: 0, torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}  # cuda::ElemType
# DeviceLimits: arch, SMs, shared memory per block (opt-in), max grid x/y/z
A100 = (80, 108, 166912, 2**31 - 1, 65535, 65535)
H100 = (90, 132, 232448, 2**31 - 1, 65535, 65535)


class Refused(Exception):
    """The host plan refused the call; the message says why."""


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
    """g++ build of tests/emulator/<source> with csrc/cuda/gemm_plan.cpp (a kernel's source for
    the host, the emulated instructions of tests/emulator/apq shadowing cutlass_ext/apq's) as a
    shared library."""
    cuda = cuda_include_dirs()
    assert cuda, "CUDA toolkit headers not found (CUDA_HOME or /usr/local/cuda)"
    lib = os.path.join(out_dir, name)
    # Hidden symbols, bound locally: the extension (loaded in the same process) defines the
    # same host functions, maybe from another version of the source.
    cmd = ["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-Wno-deprecated-declarations",
           "-fvisibility=hidden", "-fno-gnu-unique", "-Wl,-Bsymbolic",
           "-include", os.path.join(ROOT, "tests", "emulator", "cuda_shim.h"),
           "-I", os.path.join(ROOT, "tests", "emulator"),  # shadows cutlass_ext/apq's instruction headers
           "-I", os.path.join(ROOT, "csrc", "cuda"), "-I", os.path.join(ROOT, "cutlass_ext"),
           "-I", cutlass_include_dir()]
    for d in cuda:
        cmd += ["-isystem", d]
    cmd += [os.path.join(ROOT, "tests", "emulator", source), os.path.join(ROOT, "csrc", "cuda", "gemm_plan.cpp"),
            "-o", lib]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return ctypes.CDLL(lib)


def build(out_dir):
    handle = compile_emulator(out_dir, "emulate_gemm.cpp", "apq_emulator.so")
    handle.apq_emulate_gemm.restype = ctypes.c_int
    handle.apq_emulator_cp_async_probe.restype = ctypes.c_int
    handle.apq_plan_gemm.restype = ctypes.c_int
    handle.apq_plan_gemm.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64),
                                     ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p, ctypes.c_int]
    handle.apq_emulate_gemm.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64),
                                        ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int64),
                                        ctypes.c_uint, ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p, ctypes.c_int]
    return handle


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else ctypes.c_void_p(0)


PLAN_FIELDS = ("grid_x", "grid_y", "grid_z", "threads", "smem_bytes", "workspace_bytes", "reduce_blocks")


def plan(lib, variant, M, N, K, x_bits, w_bits, group_size=0, out_dtype=torch.int32, device=A100):
    """The host plan of a call (csrc/cuda/gemm_plan.cpp's plan_launch) as a dict; raises Refused."""
    ints = [M, N, K, x_bits, w_bits, group_size, ELEM_TYPES[out_dtype], ELEM_TYPES[torch.float32]]
    values = (ctypes.c_int64 * len(PLAN_FIELDS))()
    error = ctypes.create_string_buffer(1024)
    rc = lib.apq_plan_gemm(variant.encode(), (ctypes.c_int64 * len(ints))(*ints), (ctypes.c_int64 * 6)(*device),
                           values, error, 1024)
    if rc == 2:
        raise Refused(error.value.decode())
    assert rc == 0
    return dict(zip(PLAN_FIELDS, values))


def call_args(x_planes, w_planes, K, out, x_meta=(None, None, None), w_meta=(None, None, None), group_size=0,
              bias=None, device=A100):
    """The flat ctypes arrays of tests/emulator/emulated_call.h: ints, ptrs, device.
    x_meta = (rowsum [M,G], scale [M], offset [M]); w_meta = (rowsum, scale, offset) [N,G]."""
    ints = [x_planes.shape[1], w_planes.shape[1], K, x_planes.shape[0], w_planes.shape[0], group_size,
            ELEM_TYPES[out.dtype], ELEM_TYPES[torch.float32 if bias is None else bias.dtype]]
    ptrs = [_ptr(x_planes), _ptr(w_planes), *[_ptr(t) for t in x_meta], *[_ptr(t) for t in w_meta],
            _ptr(bias), _ptr(out)]
    return (ctypes.c_int64 * len(ints))(*ints), (ctypes.c_void_p * len(ptrs))(*ptrs), (ctypes.c_int64 * 6)(*device)


def run(lib, variant, x_planes, w_planes, K, out, *meta, block_order_seed=0, **kwargs):
    """apq::gemm (out int32) or apq::qmatmul (out float) through the emulated CUDA path, with the
    arguments of call_args. Blocks run in grid order, or shuffled by a non-zero
    `block_order_seed`. Returns the number of K splits the plan chose. Raises Refused when the
    host plan says the variant cannot run the call; returns "baseline" when the CUTLASS
    baseline would run it (not emulated)."""
    ints, ptrs, device = call_args(x_planes, w_planes, K, out, *meta, **kwargs)
    error = ctypes.create_string_buffer(1024)
    splits = ctypes.c_int64(0)
    rc = lib.apq_emulate_gemm(variant.encode(), ints, ptrs, device, block_order_seed, ctypes.byref(splits), error, 1024)
    if rc == 2:
        raise Refused(error.value.decode())
    assert rc in (0, 3), error.value.decode()
    return "baseline" if rc == 3 else splits.value
