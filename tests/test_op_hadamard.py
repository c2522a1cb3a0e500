"""apq::hadamard and the transform fused into quantize_pack / linear, on every device and kernel:
bit-exact against the reference's fp32 order, within the rounding bound of a dense fp64
transform, and fused == separate."""

import math

import pytest
import torch

import apq_torch
from apq_torch import reference as ref
from apq_torch.quantization.hadamard import dense_transform, mix_matrix, random_orthogonal
from helpers import FLOAT_DTYPES, poison_allocator, random_activation, random_weight, ulp

# (n, m): powers of two (m = 1), Paley factors (SmolLM2's 576 = 36 * 16 and 1536 = 12 * 128,
# 12 * 1 with no butterfly at all), and a random orthogonal factor (5 * 8).
SIZES = [(1, 1), (2, 1), (8, 1), (16, 1), (32, 1), (1024, 1), (12, 12), (96, 12), (576, 36), (1536, 12), (40, 5)]


def mix_for(n, m):
    mix = mix_matrix(n) if m in (1, 12, 36) else random_orthogonal(m, seed=n).float()
    assert mix.shape == (m, m)
    return mix


def dense_bound(x, mix, n):
    """Rounding bound of the fp32 evaluation against the exact transform: every output is a sum
    tree of depth log2(P) (butterflies) + m (the mix) + 2 (a product and the scale), so
    |error| <= gamma_d * (|R| |x|) elementwise."""
    P = n // mix.shape[0]
    d = int(math.log2(P)) + mix.shape[0] + 2
    u = 2.0**-24
    gamma = d * u / (1 - d * u)
    abs_r = torch.kron(mix.abs().double(), torch.full((P, P), P**-0.5, dtype=torch.float64))
    return gamma * (x.double().abs() @ abs_r.T)


@pytest.mark.parametrize("n,m", SIZES, ids=[f"n{n}-m{m}" for n, m in SIZES])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_hadamard_is_the_reference_to_the_bit_and_the_dense_transform_to_rounding(n, m, dtype, backend, gen):
    mix = mix_for(n, m)
    for rows in ((1,), (7,), (2, 3)):
        x = random_activation(math.prod(rows), n, dtype, gen).view(*rows, n)
        poison_allocator(backend.device)
        y = apq_torch.ops.hadamard(*backend.to(x, mix))
        assert y.shape == x.shape and y.dtype == dtype and y.device.type == backend.device
        assert torch.equal(y.cpu(), ref.hadamard(x, mix))
        exact = x.double().reshape(-1, n) @ dense_transform(mix, n).T
        bound = dense_bound(x.reshape(-1, n), mix, n) + (0 if dtype == torch.float32 else 0.5 * ulp(exact, dtype))
        assert ((y.cpu().double().reshape(-1, n) - exact).abs() <= bound).all()


def test_hadamard_of_a_strided_input_and_the_default_mix(backend, gen):
    x = random_activation(6, 128, torch.float32, gen)
    y = apq_torch.ops.hadamard(backend.to(x)[::2])  # non-contiguous rows; mix [[1]]
    assert torch.equal(y.cpu(), ref.hadamard(x[::2], torch.ones(1, 1)))
    # the normalized Sylvester transform is its own inverse, up to rounding
    torch.testing.assert_close(apq_torch.ops.hadamard(y).cpu(), x[::2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt,bits", [("unsigned", 8), ("unsigned", 4), ("signed", 3), ("bipolar", 2)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("n,m", [(64, 1), (576, 36), (1536, 12)], ids=["n64", "n576", "n1536"])
def test_quantize_pack_with_hadamard_is_rotate_then_quantize(n, m, dtype, fmt, bits, backend, gen):
    mix = mix_for(n, m)
    x = random_activation(9, n, dtype, gen)
    x[3, 5] = 300.0  # an outlier: the rotation spreads it over the row
    for group_size in (0, 64):
        poison_allocator(backend.device)
        fused = apq_torch.quantize_pack(backend.to(x), bits, fmt, group_size, backend.to(mix))
        want = ref.quantize_pack(x, bits, fmt, group_size, mix)
        separate = apq_torch.quantize_pack(apq_torch.ops.hadamard(*backend.to(x.float(), mix)), bits, fmt, group_size)
        for name, a, b, c in zip(("planes", "rowsum", "scale", "offset"), fused, want, separate):
            assert torch.equal(a.cpu(), b), (name, group_size)
            assert torch.equal(a, c), (name, group_size)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_linear_with_hadamard_is_linear_of_the_rotated_input(dtype, backend, gen):
    n, N = 576, 40
    mix = mix_for(n, 36)
    w = backend.to(*random_weight(N, n, 4, "bipolar", 64, gen))
    x = backend.to(random_activation(2 * 5, n, dtype, gen).view(2, 5, n))
    bias = backend.to(torch.randn(N, generator=gen).to(dtype))
    y = apq_torch.linear(x, *w, n, 64, 8, "unsigned", bias, backend.to(mix))
    xq = apq_torch.quantize_pack(x.reshape(-1, n), 8, "unsigned", 64, backend.to(mix))
    want = apq_torch.qmatmul(*xq, *w, n, 64, bias, dtype).view(2, 5, N)
    assert y.shape == (2, 5, N) and y.dtype == dtype
    assert torch.equal(y, want)


def test_hadamard_errors_name_the_argument(backend):
    x = backend.to(torch.zeros(3, 96))
    cases = [
        (torch.ones(2, 3), "argument 'mix' must be a square"),
        (torch.ones(12, 12, dtype=torch.float64), "argument 'mix' must be float32"),
        (torch.ones(5, 5), r"argument 'mix' is 5x5, but the transformed size 96 is not 5 times a power of two"),
        (torch.ones(9, 9), r"not 9 times a power of two"),
    ]
    for mix, match in cases:
        with pytest.raises(RuntimeError, match=match):
            apq_torch.ops.hadamard(x, backend.to(mix))
    with pytest.raises(RuntimeError, match="argument 'x' must be float32, float16 or bfloat16"):
        apq_torch.ops.hadamard(x.int(), backend.to(torch.ones(1, 1)))
    with pytest.raises(RuntimeError, match=r"argument 'hadamard' is 5x5"):
        apq_torch.quantize_pack(x, 4, "unsigned", 0, backend.to(torch.ones(5, 5)))
    w = backend.to(*random_weight(4, 96, 4, "bipolar", 0, torch.Generator()))
    with pytest.raises(RuntimeError, match=r"apq::linear: argument 'hadamard' must be a square"):
        apq_torch.linear(x, *w, 96, 0, 8, "unsigned", None, backend.to(torch.ones(12)))


def test_hadamard_refuses_a_mix_on_another_device():
    if not torch.cuda.is_available() or not apq_torch.cuda_built():
        pytest.skip("needs a CUDA device")
    with pytest.raises(RuntimeError, match="argument 'mix' is on cpu"):
        apq_torch.ops.hadamard(torch.zeros(2, 64, device="cuda"), torch.ones(1, 1))
