"""The kernel mapping (csrc/cuda/kernel_map.cpp): the shipped table and its overrides.
Runs without a GPU: the choice is a pure function of the shape (and of the GPU's limits, an
A100's where there is none) unless autotune measured."""

import pytest
import torch

import apq_torch

pytestmark = pytest.mark.skipif(not apq_torch.cuda_built(), reason="CPU-only build: no CUDA kernels to map")


def choice(M, x_bits=4, w_bits=4, N=4096, K=4096, grouped=False):
    return torch.ops.apq._cuda_kernel_choice(M, N, K, x_bits, w_bits, grouped)


def arch_of_choice():
    """The architecture _cuda_kernel_choice keys on: the current GPU's, else sm_80."""
    major, minor = torch.cuda.get_device_capability() if torch.cuda.is_available() else (8, 0)
    return major * 10 + minor


def test_decode_swaps_ab_and_prefill_does_not():
    assert choice(1) == "skinny,swap"        # 4 stacked activation rows: weights fill the 16-row side
    assert choice(8) == "skinny,swap"        # 32 stacked rows still fit the skinny tile
    assert choice(16) == "large,swap"        # 64 stacked rows
    assert choice(16, x_bits=8) == "large,swap"
    assert choice(17, x_bits=8) == "large,noswap"
    assert choice(2048) == "large,noswap"
    assert choice(32, x_bits=1) == "skinny,swap"


def test_table_skips_a_variant_whose_grid_is_too_large():
    # 8-bit weights: the large tile covers 16 weight rows per block, so N = 2M needs
    # 131072 blocks on grid y (limit 65535); swapped, the weights go to grid x.
    assert choice(2048, w_bits=8, N=2_000_000) == "large,swap"


def test_forced_kernel_runs_or_is_refused_never_swapped(monkeypatch):
    monkeypatch.setenv("APQ_GEMM_KERNEL", "skinny,noswap")
    assert choice(2048) == "skinny,noswap"
    monkeypatch.setenv("APQ_GEMM_KERNEL", "large,noswap")
    with pytest.raises(RuntimeError, match=r"APQ_GEMM_KERNEL=large,noswap cannot run this call: .*launch grid"):
        choice(2048, w_bits=8, N=2_000_000)
    monkeypatch.setenv("APQ_GEMM_KERNEL", "huge")
    with pytest.raises(RuntimeError, match="APQ_GEMM_KERNEL must be one of large,noswap, large,swap"):
        choice(1)


def test_autotune_reads_a_shared_cache_file_and_rereads_another(tmp_path, monkeypatch):
    # Entries another process wrote are used as they are (no GPU needed to read them);
    # torn or unknown lines are ignored. Naming another file re-reads the cache.
    monkeypatch.setenv("APQ_AUTOTUNE", "1")
    key = f"sm{arch_of_choice()}:m2048:n4096:k4096:x4:w4:c"
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(f"garbage\n{key} skinny,noswap\n{key} unknown,variant\n")
    second.write_text(f"{key} large,swap\n")
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(first))
    assert choice(2048) == "skinny,noswap"
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(second))
    assert choice(2048) == "large,swap"
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(tmp_path / "missing.txt"))
    assert choice(2048) == "large,noswap"  # no entry: the table
