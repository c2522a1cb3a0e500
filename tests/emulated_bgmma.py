"""Builds tests/emulator/emulate_bgmma.cpp (the sm_90a BGMMA kernel's source compiled for the
CPU, with wgmma, TMA and mbarrier emulated after the PTX ISA) and calls it through ctypes
with the argument arrays of emulated_kernel.gemm_args."""

import ctypes

import emulated_kernel


def build(out_dir):
    handle = emulated_kernel.compile_emulator(out_dir, "emulate_bgmma.cpp", "apq_bgmma_emulator.so")
    handle.apq_emulate_bgmma_gemm.restype = ctypes.c_int
    handle.apq_emulate_bgmma_gemm.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_void_p),
                                              ctypes.c_uint64, ctypes.c_int]
    handle.apq_emulator_error.restype = ctypes.c_char_p
    return handle


def run(lib, swap, x_planes, w_planes, K, out, *meta, seed=0, lazy_tma=True, **kwargs):
    """Like emulated_kernel.run; `seed` picks which TMA copies land only when first waited on."""
    ints, ptrs = emulated_kernel.gemm_args(swap, x_planes, w_planes, K, out, *meta, **kwargs)
    rc = lib.apq_emulate_bgmma_gemm(ints, ptrs, seed, int(lazy_tma))
    assert rc == 0, lib.apq_emulator_error().decode()
    return out
