"""The CPU kernels beyond the shared op tests (which run on every kernel in backends.py's
CPU_KERNELS): the int8 kernels' exact windows over long K, group sizes across
window boundaries, ragged blocks of 32 channels, linear's fused quantization into each
kernel's layout, and the kernel map's choices."""

import pytest
import torch

import apq_torch
from apq_torch import reference as ref
from helpers import exact_product, poison_allocator, random_codes, random_weight

INT8_KERNELS = ["vnni", "vnni-decode"]


def use_kernel(name):
    try:
        apq_torch.cpu_kernel(name)
    except RuntimeError:
        pytest.skip(f"this CPU cannot run the {name} kernel")


@pytest.fixture
def int8_kernel(request):
    use_kernel(request.param)
    yield request.param
    apq_torch.cpu_kernel("auto")


def fp64_product(xq, w, K, group_size):
    x = ref.dequantize(xq[0], K, xq[2], xq[3], group_size)
    return x @ ref.dequantize(w[0], K, w[2], w[3], group_size).T


@pytest.mark.parametrize("int8_kernel", INT8_KERNELS, indirect=True)
@pytest.mark.parametrize("bx,bw", [(8, 8), (8, 4), (3, 8), (1, 1)])
def test_gemm_exact_across_the_int32_window(int8_kernel, bx, bw, gen):
    """K past one exact window (128 words = 8192) with a ragged tail; M, N cut micro tiles."""
    for M, N, K in [(5, 33, 8192), (9, 31, 8257), (1, 65, 16447)]:
        ux, uw = random_codes(M, K, bx, gen), random_codes(N, K, bw, gen)
        ux[0], uw[0] = 2**bx - 1, 2**bw - 1  # one product at its maximum
        xp, wp = apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0]
        poison_allocator("cpu")
        assert torch.equal(apq_torch.gemm(xp, wp, K), exact_product(ux, uw)), (M, N, K)


@pytest.mark.parametrize("int8_kernel", INT8_KERNELS, indirect=True)
def test_qmatmul_long_k_beyond_int32(int8_kernel):
    """255 * 255 * 70000 overflows int32 many times over: windows must keep every sum exact."""
    K = 70000
    for bw, group_size in [(8, 0), (4, 0), (8, 192)]:
        w_codes = torch.full((3, K), 2**bw - 1)
        wp, wr = apq_torch.pack(w_codes, bw, group_size)
        G = ref.num_groups(K, group_size)
        w = (wp, wr, torch.full((3, G), 1e-3), torch.zeros(3, G))
        xq = apq_torch.quantize_pack(torch.full((2, K), 3.0), 8, "unsigned", group_size)
        y = apq_torch.qmatmul(*xq, *w, K, group_size, None, torch.float32)
        want = fp64_product(xq, w, K, group_size)
        torch.testing.assert_close(y.double(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("int8_kernel", INT8_KERNELS, indirect=True)
def test_qmatmul_affine_terms_cancel_exactly(int8_kernel, gen):
    """8x8-bit codes, offsets -127.5, nearly constant x: terms of ~1e8 cancel to a small result."""
    K = 4096
    wp, wr = apq_torch.pack(torch.randint(0, 256, (3, K), generator=gen), 8)
    w = (wp, wr, torch.full((3, 1), 1e-3), torch.full((3, 1), -127.5))
    xq = apq_torch.quantize_pack(torch.full((2, K), 5.0) + torch.randn(2, K, generator=gen) * 1e-2, 8, "unsigned")
    y = apq_torch.qmatmul(*xq, *w, K, 0, None, torch.float32)
    want = fp64_product(xq, w, K, 0)
    torch.testing.assert_close(y.double(), want, rtol=1e-6, atol=1e-6 * want.abs().max().item())


@pytest.mark.parametrize("int8_kernel", INT8_KERNELS, indirect=True)
@pytest.mark.parametrize("group_size", [0, 64, 128, 192])
def test_qmatmul_groups_windows_and_ragged_blocks(int8_kernel, group_size, gen):
    """Groups that straddle windows (192 * 43 > 8192), ragged 32-channel blocks, odd M."""
    for (M, N, K, bx, bw) in [(1, 33, 8300, 8, 4), (3, 1, 700, 8, 8), (10, 70, 1000, 5, 3), (2, 31, 131, 8, 2)]:
        w = random_weight(N, K, bw, "unsigned", group_size, gen)
        xq = apq_torch.quantize_pack(torch.randn(M, K, generator=gen) + 0.5, bx, "unsigned", group_size)
        bias = torch.randn(N, generator=gen)
        poison_allocator("cpu")
        y = apq_torch.qmatmul(*xq, *w, K, group_size, bias, torch.float32)
        want = fp64_product(xq, w, K, group_size) + bias.double()
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5 * (want.abs().max().item() + 1))


@pytest.mark.parametrize("kernel", ["avx512", "vnni", "vnni-decode", "portable"])
def test_linear_fused_quantization_equals_quantize_pack_then_qmatmul(kernel, gen):
    """linear quantizes straight into the kernel's layout; the result is the same to the bit."""
    use_kernel(kernel)
    try:
        K, N = 333, 40
        for a_bits in (1, 3, 8):
            for group_size, dtype in [(0, torch.float32), (64, torch.bfloat16)]:
                w = random_weight(N, K, 4, "bipolar", group_size, gen)
                x = torch.randn(2, 3, K, generator=gen).to(dtype)
                y = apq_torch.linear(x, *w, K, group_size, a_bits, "unsigned", None)
                xq = apq_torch.quantize_pack(x.reshape(-1, K), a_bits, "unsigned", group_size)
                want = apq_torch.qmatmul(*xq, *w, K, group_size, None, dtype).view(2, 3, N)
                assert torch.equal(y, want), (a_bits, group_size)
    finally:
        apq_torch.cpu_kernel("auto")


def choice(M, x_bits, w_bits, group_size=0):
    return torch.ops.apq._cpu_kernel_choice(M, x_bits, w_bits, group_size)


def test_kernel_map_choices():
    apq_torch.cpu_kernel("auto")
    assert apq_torch.cpu_kernel() == "auto"
    popcount = "avx512" if choice(4096, 1, 1) == "avx512" else "portable"
    try:
        apq_torch.cpu_kernel("vnni")
    except RuntimeError:  # no int8 kernel on this CPU: the popcount kernel runs everything
        assert {choice(M, 8, 8, g) for M in (1, 256) for g in (0, 128)} == {popcount}
        return
    finally:
        apq_torch.cpu_kernel("auto")
    assert choice(1, 8, 4) == "vnni-decode"         # decode W4A8: weights streamed, codes in registers
    assert choice(1, 4, 4) == popcount              # 16 plane pairs: popcount is cheaper at one row
    assert choice(1, 4, 4, 128) == "vnni-decode"
    assert choice(4, 2, 4) == "vnni-decode"
    assert choice(4, 1, 1, 64) == "vnni"            # with groups the int8 epilogue wins at once
    assert choice(256, 8, 8) == "vnni"
    assert choice(256, 8, 4, 64) == "vnni"
    assert choice(256, 2, 1) == "vnni"
    assert choice(256, 1, 1) == popcount            # W1A1: one plane pair
    for forced in ("portable", "vnni-decode", popcount):
        apq_torch.cpu_kernel(forced)
        assert choice(256, 8, 8, 64) == forced and choice(1, 1, 1) == forced
    apq_torch.cpu_kernel("auto")


def test_forcing_an_unknown_kernel_names_the_choices():
    with pytest.raises(RuntimeError, match="'auto', 'avx512', 'vnni', 'vnni-decode' or 'portable'"):
        apq_torch.cpu_kernel("amx")
    assert apq_torch.cpu_kernel() == "auto"
