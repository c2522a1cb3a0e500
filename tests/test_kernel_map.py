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


def smem_per_block_of_choice():
    """The shared memory per block _cuda_kernel_choice plans with: the GPU's, else an A100's."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).shared_memory_per_block_optin
    return 166912


def imma_fits():
    """The IMMA kernel's block (csrc/cuda/imma_gemm.h: two 32 KiB code tiles, 3 stages of 8 planes
    of 256 rows, 16 bytes each: 160 KiB) fits the shared memory _cuda_kernel_choice plans with."""
    return 2 * 32768 + 3 * 8 * 256 * 16 <= smem_per_block_of_choice()


def prefill_choice(x_bits=4, w_bits=4):
    """The table's prefill variant: the integer-MMA kernel where x_bits * w_bits >= 16 (and it
    fits; its wgmma form on sm_90), else the BGMMA kernel on sm_90, the wide mma.sync tile elsewhere."""
    if x_bits * w_bits >= 16 and imma_fits():
        return "igmma,noswap,splitk" if arch_of_choice() == 90 else "imma,noswap,splitk"
    return "bgmma,noswap" if arch_of_choice() == 90 else "wide,noswap,splitk"


def test_decode_swaps_ab_and_splits_k_prefill_does_not_swap():
    assert choice(1) == "narrow,swap,splitk"      # 4 stacked activation rows: weights fill the 16-row side
    assert choice(8) == "narrow,swap,splitk"      # 32 stacked rows: one narrow block column
    assert choice(16) == "wide,swap,splitk"       # 64 stacked rows
    assert choice(32, x_bits=4) == "wide,swap,splitk"   # 128 stacked rows
    # 256 stacked rows: one wide block column; sm_90 runs the BGMMA kernel from 129 on
    assert choice(32, x_bits=8) == ("bgmma,noswap" if arch_of_choice() == 90 else "wide,swap,splitk")
    assert choice(33, x_bits=4) == ("bgmma,noswap" if arch_of_choice() == 90 else "wide,swap,splitk")
    assert choice(33, x_bits=8) == prefill_choice(8, 4)
    assert choice(2048) == prefill_choice()       # split-K plans no split where the tiles fill the SMs


def test_table_falls_back_where_a_variant_cannot_run():
    # 8-bit weights: the wide tile covers 32 weight rows per block (BGMMA: 16), so N = 3M needs
    # more than 65535 blocks on grid y; swapped, the weights go to grid x. (1-bit activations:
    # below the IMMA kernel's bit product.)
    assert choice(2048, x_bits=1, w_bits=8, N=3_000_000) == "wide,swap,splitk"
    if arch_of_choice() == 90:
        return  # prefill runs the BGMMA kernel, whose shared memory does not depend on the bits
    # K-groups: the wide tile keeps fp32 results in shared memory after its 96 KiB pipeline,
    # 1 KiB per output of a thread (256 threads): 128 outputs at 1 x 1 bits exceed an A100's
    # 163 KiB, 64 at 2 x 1 bits do not; the narrow tile keeps them in registers.
    for x_bits, outputs in [(1, 128), (2, 64)]:
        fits = 98304 + outputs * 1024 <= smem_per_block_of_choice()
        expected = "wide,noswap,splitk" if fits else "narrow,noswap,splitk"
        assert choice(2048, x_bits=x_bits, w_bits=1, grouped=True) == expected


def test_imma_takes_large_bit_products_beyond_256_stacked_rows():
    # x_bits * w_bits >= 16 (a static estimate, kernel_map.cpp): W8A8, W4A8, W8A2, W4A4
    for x_bits, w_bits in [(8, 8), (8, 4), (2, 8), (4, 4)]:
        assert choice(2048, x_bits, w_bits) == prefill_choice(x_bits, w_bits)
        assert choice(2048, x_bits, w_bits, grouped=True) == prefill_choice(x_bits, w_bits)
    assert choice(2048, 4, 3) == prefill_choice(4, 3)  # 12: the b1 kernels
    assert "imma" not in prefill_choice(4, 3)
    assert choice(1, 8, 8) == "narrow,swap,splitk"  # decode stays on the b1 kernels
    assert choice(64, 4, 4) == "wide,swap,splitk"  # 256 stacked rows: swap-AB
    assert choice(65, 4, 4) == prefill_choice(4, 4)
    if imma_fits():
        assert choice(2048, 8, 8) == ("igmma,noswap,splitk" if arch_of_choice() == 90 else "imma,noswap,splitk")


def test_imma_runs_where_forced_or_says_why_not(monkeypatch):
    for variant in ("imma,noswap", "imma,swap", "imma,noswap,splitk", "imma,swap,splitk"):
        monkeypatch.setenv("APQ_GEMM_KERNEL", variant)
        if imma_fits():  # an A100 or H100 (or no GPU: an A100's limits)
            assert choice(1, 2, 2) == variant
        else:
            with pytest.raises(RuntimeError, match=f"APQ_GEMM_KERNEL={variant} cannot run this call: its block "
                               "needs 163840 bytes of shared memory"):
                choice(1, 2, 2)
    for variant in ("igmma,noswap", "igmma,swap,splitk"):  # the wgmma form: sm_90 only
        monkeypatch.setenv("APQ_GEMM_KERNEL", variant)
        if arch_of_choice() == 90:
            assert choice(1, 2, 2) == variant
        else:
            with pytest.raises(RuntimeError, match=f"APQ_GEMM_KERNEL={variant} cannot run this call: it needs the "
                               r"wgmma u8 tensor cores of sm_90a \(H100, H200\), this GPU is sm_"):
                choice(1, 2, 2)


def test_bgmma_runs_where_forced_on_sm90_and_is_refused_elsewhere(monkeypatch):
    for variant in ("bgmma,noswap", "bgmma,swap"):
        monkeypatch.setenv("APQ_GEMM_KERNEL", variant)
        if arch_of_choice() == 90:
            assert choice(2048) == variant
        else:
            with pytest.raises(RuntimeError, match=f"APQ_GEMM_KERNEL={variant} cannot run this call: it needs the "
                               r"wgmma b1 tensor cores of sm_90a \(H100, H200\), this GPU is sm_"):
                choice(2048)


def test_forced_kernel_runs_or_is_refused_never_swapped(monkeypatch):
    monkeypatch.setenv("APQ_GEMM_KERNEL", "narrow,noswap")
    assert choice(2048) == "narrow,noswap"
    monkeypatch.setenv("APQ_GEMM_KERNEL", "wide,noswap")
    with pytest.raises(RuntimeError, match=r"APQ_GEMM_KERNEL=wide,noswap cannot run this call: .*launch grid"):
        choice(2048, w_bits=8, N=3_000_000)
    monkeypatch.setenv("APQ_GEMM_KERNEL", "huge")
    with pytest.raises(RuntimeError, match="APQ_GEMM_KERNEL must be one of wide,noswap, wide,swap"):
        choice(1)


def test_autotune_reads_a_shared_cache_file_and_rereads_another(tmp_path, monkeypatch):
    # Entries another process wrote are used as they are (no GPU needed to read them);
    # torn or unknown lines are ignored. Naming another file re-reads the cache.
    monkeypatch.setenv("APQ_AUTOTUNE", "1")
    key = f"sm{arch_of_choice()}:m2048:n4096:k4096:x4:w4:c"
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(f"garbage\n{key} narrow,noswap\n{key} unknown,variant\n")
    second.write_text(f"{key} wide,swap\n")
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(first))
    assert choice(2048) == "narrow,noswap"
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(second))
    assert choice(2048) == "wide,swap"
    monkeypatch.setenv("APQ_AUTOTUNE_CACHE", str(tmp_path / "missing.txt"))
    assert choice(2048) == prefill_choice()  # no entry: the table
