"""Random operands for the tests, the exact references, and the error bounds of the float ops."""

import torch

import apq_torch
from apq_torch import reference as ref
from apq_torch.ops.layout import dequantize_codes, format_offset, num_groups

POISON = -0x2A2A2A2A
FORMATS = ["unsigned", "signed", "bipolar"]
# signed needs 2 bits; its 1-bit request is an error (test_op_errors.py)
FORMAT_BITS = [(f, b) for f in FORMATS for b in range(1, 9) if not (f == "signed" and b == 1)]
BIT_PAIRS = [(bx, bw) for bx in range(1, 9) for bw in range(1, 9)]
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def random_codes(rows, K, bits, gen):
    return torch.randint(0, 2**bits, (rows, K), generator=gen, dtype=torch.int64)


def poison_allocator(device, nbytes=1 << 22):
    """Fill and free a block so that the next outputs likely reuse poisoned memory."""
    torch.full((nbytes // 4,), POISON, dtype=torch.int32, device=device)


def random_weight(N, K, bits, fmt, group_size, gen):
    """Packed weights (planes, rowsum, scale, offset) with per-group scales and the offsets
    their format implies, on the CPU."""
    G = num_groups(K, group_size)
    codes = random_codes(N, K, bits, gen)
    planes, rowsum = apq_torch.pack(codes, bits, group_size)
    scale = torch.rand(N, G, generator=gen) * 0.1 + 0.01
    if fmt == "unsigned":
        offset = -torch.randint(0, 2**bits, (N, G), generator=gen).float()
    else:
        offset = torch.full((N, G), format_offset(fmt, bits))
    return planes, rowsum, scale, offset


def random_activation(M, K, dtype, gen):
    return (torch.randn(M, K, generator=gen) * 2 + 0.3).to(dtype)


def exact_product(ux, uw):
    """The definition of apq::gemm: the int64 product of the codes, as int32."""
    return (ux.to(torch.int64) @ uw.to(torch.int64).T).to(torch.int32)


class Fp64Product:
    """The fp64 product of the dequantized operands (+ bias), ``y``, and the magnitudes that
    scale the kernels' rounding errors: ``mag`` = sum_k |x_hat w_hat| + |bias| (what fp32
    roundings of partial results see) and ``terms`` = sum_k sigma_x sigma_w (u_x + |zeta_x|)
    (u_w + |zeta_w|), the size of the affine terms before they cancel (what double roundings see)."""

    def __init__(self, xq, w, K, group_size, bias=None):
        self.K, self.group_size = K, group_size
        x_planes, _, x_scale, x_offset = (t.cpu() for t in xq)
        w_planes, _, w_scale, w_offset = (t.cpu() for t in w)
        ux, uw = ref.unpack(x_planes, K), ref.unpack(w_planes, K)
        x = dequantize_codes(ux, x_scale, x_offset, group_size, torch.float64)
        w_hat = dequantize_codes(uw, w_scale, w_offset, group_size, torch.float64)
        self.y, self.mag = x @ w_hat.T, x.abs() @ w_hat.abs().T
        self.terms = dequantize_codes(ux, x_scale.abs(), x_offset.abs(), group_size, torch.float64) @ \
            dequantize_codes(uw, w_scale.abs(), w_offset.abs(), group_size, torch.float64).T
        if bias is not None:
            self.y, self.mag = self.plus_bias(bias)

    def plus_bias(self, bias):
        """(y, mag) of the same product with ``bias`` added."""
        return self.y + bias.cpu().double(), self.mag + bias.cpu().double().abs()


def ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp64 spacing of `dtype` at |values| (the smallest normal's spacing below it)."""
    info = torch.finfo(dtype)
    v = values.double().abs().clamp(min=info.tiny)
    return torch.pow(2.0, torch.floor(torch.log2(v))) * info.eps


EXACT_WINDOW_BITS = 32768  # CUDA sums at most this many bits of K exactly in int32 (8x8 bits)


def windows(K, group_size):
    """The K-windows a CUDA kernel rounds separately: each group, cut every 32768 bits."""
    span = K if group_size == 0 else group_size
    full, last = divmod(K, span)
    per = lambda n: -(-n // EXACT_WINDOW_BITS)
    return full * per(span) + (per(last) if last else 0)


def qmatmul_error_bound(p: Fp64Product, out_dtype, device):
    """The worst error the arithmetic allows, elementwise (fp64).

    CPU: the affine terms are summed in double (a few roundings of 2^-53 of the terms per
    group) and rounded once to fp32, then to the output dtype: half an ulp each.
    CUDA: each K-window's term sigma_a*sigma_b*bracket is rounded to fp32 (bracket in double),
    the windows are summed in fp32 and the bias added: (2*windows + 2) fp32 roundings of at
    most half an ulp of the magnitude, then half an ulp of the output dtype.
    """
    n = windows(p.K, p.group_size)
    double_slack = (4 * n + 4) * 2.0**-53 * p.terms
    near = p.y.abs() * (1 + 2.0**-10)  # a value rounded up to the next binade has that binade's ulp
    out_half_ulp = 0.5 * ulp(near, out_dtype) if out_dtype != torch.float32 else 0.0
    if device == "cpu":
        return 0.5 * ulp(near, torch.float32) + out_half_ulp + double_slack
    return (2 * n + 2) * 2.0**-24 * p.mag + out_half_ulp + double_slack


def assert_within(got, want, bound, what=""):
    """|got - want| <= bound elementwise (NaN fails), naming the first offending element.
    Outside got's dtype's range the rounded result is +-inf: both sides are clamped to the
    largest finite value, so an overflow must go the right way."""
    top = torch.finfo(got.dtype).max
    got, want = got.double().cpu().clamp(-top, top), want.clamp(-top, top)
    bound = torch.as_tensor(bound, dtype=torch.float64).expand_as(want)
    bad = ~((got - want).abs() <= bound)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} elements outside the bound; first at {i}: "
                             f"got {got[i].item()!r}, want {want[i].item()!r}, bound {bound[i].item()!r}")
