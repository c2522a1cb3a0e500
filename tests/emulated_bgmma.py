"""Builds tests/emulator/emulate_bgmma.cpp (the sm_90a BGMMA kernel's source and the host plan
of csrc/cuda/gemm_plan.cpp compiled for the CPU, with wgmma, TMA and mbarrier emulated after
the PTX ISA) and calls it through ctypes with the arguments of emulated_kernel.call_args."""

import ctypes

import emulated_kernel


def build(out_dir):
    handle = emulated_kernel.compile_emulator(out_dir, "emulate_bgmma.cpp", "apq_bgmma_emulator.so")
    handle.apq_emulate_bgmma_gemm.restype = ctypes.c_int
    handle.apq_emulate_bgmma_gemm.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64),
                                              ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int64),
                                              ctypes.c_uint64, ctypes.c_int]
    handle.apq_emulator_error.restype = ctypes.c_char_p
    return handle


def run(lib, swap, x_planes, w_planes, K, out, *meta, seed=0, lazy_tma=True, device=emulated_kernel.H100, **kwargs):
    """Like emulated_kernel.run with the variant bgmma,swap or bgmma,noswap; `seed` picks which
    TMA copies land only when first waited on. Raises emulated_kernel.Refused when the host plan
    refuses the call."""
    variant = b"bgmma,swap" if swap else b"bgmma,noswap"
    args = emulated_kernel.call_args(x_planes, w_planes, K, out, *meta, device=device, **kwargs)
    rc = lib.apq_emulate_bgmma_gemm(variant, *args, seed, int(lazy_tma))
    if rc == 2:
        raise emulated_kernel.Refused(lib.apq_emulator_error().decode())
    assert rc == 0, lib.apq_emulator_error().decode()
    return out
