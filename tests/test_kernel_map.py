"""The kernel mapping (csrc/cuda/kernel_map.cpp): the shipped table and its overrides.
Runs without a GPU: the choice is a pure function of the shape unless autotune measured."""

import pytest
import torch

import apq_torch

pytestmark = pytest.mark.skipif(not apq_torch.cuda_built(), reason="CPU-only build: no CUDA kernels to map")


def choice(M, x_bits=4, w_bits=4, N=4096, K=4096, grouped=False):
    return torch.ops.apq._cuda_kernel_choice(M, N, K, x_bits, w_bits, grouped)


def test_decode_swaps_ab_and_prefill_does_not():
    assert choice(1) == "skinny,swap"        # 4 stacked activation rows: weights fill the 16-row side
    assert choice(8) == "skinny,swap"        # 32 stacked rows still fit the skinny tile
    assert choice(16) == "large,swap"        # 64 stacked rows
    assert choice(16, x_bits=8) == "large,swap"
    assert choice(17, x_bits=8) == "large,noswap"
    assert choice(2048) == "large,noswap"
    assert choice(32, x_bits=1) == "skinny,swap"


def test_forced_kernel_and_a_bad_name(monkeypatch):
    monkeypatch.setenv("APQ_GEMM_KERNEL", "skinny,noswap")
    assert choice(2048) == "skinny,noswap"
    monkeypatch.setenv("APQ_GEMM_KERNEL", "huge")
    with pytest.raises(RuntimeError, match="APQ_GEMM_KERNEL must be one of"):
        choice(1)


def test_autotune_reads_a_shared_cache_file(tmp_path, monkeypatch):
    # Entries another process wrote are used as they are (no GPU needed to read them);
    # torn or unknown lines are ignored. The cache is read once per process, so this file
    # is only consulted if no earlier test loaded one.
    cache = tmp_path / "autotune.txt"
    cache.write_text("garbage\nsm80:m2048:n4096:k4096:x4:w4:c skinny,noswap\n")
    monkeypatch.setenv("APQ_AUTOTUNE", "1")
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(cache))
    if not torch.cuda.is_available():
        assert choice(2048) == "skinny,noswap"
