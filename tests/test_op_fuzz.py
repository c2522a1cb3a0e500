"""Property-based fuzzing (hypothesis) of every op on every device and kernel, against the
reference: random shapes from 1 up, K across word / 256-bit step / group / exact-window
boundaries, all 64 bit pairs, every format, group size, output and bias dtype, and
non-contiguous or offset inputs; and the CUDA kernels' own source under the CPU emulator.
Integers compared with ==, floats within the arithmetic's bound (helpers.qmatmul_error_bound).

Budget: the "ci" profile (tests/conftest.py) runs a fixed, derandomized number of examples
per test and backend; HYPOTHESIS_PROFILE=long runs many more, random ones."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import apq_torch
from apq_torch import reference as ref
from apq_torch.ops.layout import FORMATS, GROUP_QUANTUM
from apq_torch.quantization.hadamard import mix_matrix, random_orthogonal
from backends import GEMM_BACKENDS, OP_BACKENDS, cuda_variant_skip_reason, kernel_variants, selected
from helpers import Fp64Product, assert_within, exact_product, qmatmul_error_bound, random_weight

# K values on every boundary the kernels care about: 32-bit words, 64-bit CPU words,
# 256-bit MMA steps, 512-bit CUDA pipeline stages, and the 32768-bit exact int32 window.
K_EDGES = [1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 2047, 2049,
           4095, 4097, 32767, 32768, 32769]
ks = st.one_of(st.sampled_from(K_EDGES), st.integers(1, 3000))
short_ks = st.one_of(st.sampled_from([k for k in K_EDGES if k <= 4097]), st.integers(1, 3000))
bits = st.integers(1, 8)


def rows_for(K):
    """Row counts: ragged, a few past the kernels' tile edges; few rows when K is long."""
    return st.integers(1, 8) if K > 4097 else st.one_of(st.integers(1, 20), st.sampled_from([31, 33, 64, 65, 129]))


formats = st.sampled_from(FORMATS)
FLOAT_OUT = [torch.float32, torch.float16, torch.bfloat16]
BIAS = [None, torch.float32, torch.float16, torch.bfloat16, torch.float64]

gemm_backends = pytest.mark.parametrize("where", GEMM_BACKENDS)
op_backends = pytest.mark.parametrize("where", OP_BACKENDS)


@st.composite
def codes(draw, R, K, b):
    """Random codes, or (sometimes) all at the extremes, which maximize every sum."""
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["random", "random", "random", "max", "zero"]))
    if kind == "max":
        return torch.full((R, K), 2**b - 1, dtype=torch.int64)
    if kind == "zero":
        return torch.zeros(R, K, dtype=torch.int64)
    return torch.randint(0, 2**b, (R, K), generator=torch.Generator().manual_seed(seed))


def at_offset(t: torch.Tensor, offset: int) -> torch.Tensor:
    """A contiguous view of a copy of t starting `offset` elements into its storage."""
    flat = torch.empty(offset + t.numel(), dtype=t.dtype, device=t.device)
    view = flat[offset:].view(t.shape)
    view.copy_(t)
    return view


@st.composite
def gemm_case(draw):
    K, bx, bw = draw(ks), draw(bits), draw(bits)
    M, N = draw(rows_for(K)), draw(rows_for(K))
    worst = (2**bx - 1) * (2**bw - 1)
    if K > (2**31 - 1) // worst:  # apq::gemm refuses it (test_op_errors.py); qmatmul takes it
        K = (2**31 - 1) // worst
    return M, N, K, bx, bw, draw(codes(M, K, bx)), draw(codes(N, K, bw)), draw(st.sampled_from([0, 4, 8]))


@gemm_backends
@given(case=gemm_case())
def test_fuzz_gemm_is_exact(where, case):
    device, kernel = where
    M, N, K, bx, bw, ux, uw, offset = case
    with selected(device, kernel) as b:
        xp, wp = apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0]
        if b.device == "cpu" or offset % 4 == 0:  # CUDA reads 16-byte chunks: offsets in whole chunks
            xp, wp = at_offset(b.to(xp), offset), at_offset(b.to(wp), offset)
        y = apq_torch.gemm(*b.to(xp, wp), K)
        assert torch.equal(y.cpu(), exact_product(ux, uw))


@st.composite
def qmatmul_case(draw):
    K, bx, bw = draw(ks), draw(bits), draw(bits)
    M, N = draw(rows_for(K)), draw(rows_for(K))
    x_fmt, w_fmt = draw(formats.filter(lambda f: f != "signed" or bx > 1)), draw(
        formats.filter(lambda f: f != "signed" or bw > 1))
    group_size = draw(st.sampled_from([0, GROUP_QUANTUM, 2 * GROUP_QUANTUM, 3 * GROUP_QUANTUM, 256, 512, 1024]))
    return dict(M=M, N=N, K=K, bx=bx, bw=bw, x_fmt=x_fmt, w_fmt=w_fmt, group_size=group_size,
                out_dtype=draw(st.sampled_from(FLOAT_OUT)), bias_dtype=draw(st.sampled_from(BIAS)),
                seed=draw(st.integers(0, 2**31 - 1)), x_scale=draw(st.sampled_from([1e-3, 1.0, 30.0])))


@gemm_backends
@given(case=qmatmul_case())
def test_fuzz_qmatmul_within_bound(where, case):
    device, kernel = where
    c = case
    if device == "cuda" and cuda_variant_skip_reason(kernel, c["group_size"]):
        return  # refused by that kernel (tests/test_op_qmatmul.py checks the refusal is named)
    gen = torch.Generator().manual_seed(c["seed"])
    with selected(device, kernel) as b:
        w = random_weight(c["N"], c["K"], c["bw"], c["w_fmt"], c["group_size"], gen)
        x = torch.randn(c["M"], c["K"], generator=gen) * c["x_scale"]
        xq = apq_torch.quantize_pack(x, c["bx"], c["x_fmt"], c["group_size"])
        bias = None if c["bias_dtype"] is None else torch.randn(c["N"], generator=gen).to(c["bias_dtype"])
        y = apq_torch.qmatmul(*b.to(*xq), *b.to(*w), c["K"], c["group_size"], b.to(bias), c["out_dtype"])
        want = Fp64Product(xq, w, c["K"], c["group_size"], None if bias is None else
                           (bias.float() if bias.dtype == torch.float64 else bias))
        bound = qmatmul_error_bound(want, c["out_dtype"], b.device)
        assert_within(y, want.y, bound, str(c))


@st.composite
def pack_case(draw):
    K, b = draw(short_ks), draw(bits)
    R = draw(rows_for(K))
    group_size = draw(st.sampled_from([0, 64, 128, 192, 320]))
    dtype = draw(st.sampled_from([torch.uint8, torch.int16, torch.int32, torch.int64]))
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    return R, K, b, group_size, draw(codes(R, K, b)).to(dtype), layout


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as t in a non-contiguous layout."""
    if layout == "transposed":
        return t.T.contiguous().T
    if layout == "strided":
        wide = torch.zeros(t.shape[0], 2 * t.shape[1], dtype=t.dtype, device=t.device)
        wide[:, ::2] = t
        return wide[:, ::2]
    return t


@op_backends
@given(case=pack_case())
def test_fuzz_pack_and_unpack_match_the_reference(where, case):
    device, kernel = where
    R, K, b, group_size, u, layout = case
    with selected(device, kernel) as be:
        planes, rowsum = apq_torch.pack(laid_out(be.to(u), layout), b, group_size)
        want_planes, want_rowsum = ref.pack(u, b, group_size)
        assert torch.equal(planes.cpu(), want_planes) and torch.equal(rowsum.cpu(), want_rowsum)
        assert torch.equal(apq_torch.unpack(planes, K).cpu(), u.to(torch.int32))


@st.composite
def activation_case(draw):
    K, b = draw(short_ks), draw(bits)
    M = draw(rows_for(K))
    fmt = draw(formats.filter(lambda f: f != "signed" or b > 1))
    return dict(M=M, K=K, bits=b, fmt=fmt, group_size=draw(st.sampled_from([0, 64, 128, 192])),
                dtype=draw(st.sampled_from(FLOAT_OUT)), seed=draw(st.integers(0, 2**31 - 1)),
                scale=draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e4])),
                special=draw(st.sampled_from([None, "nan", "inf", "zero_row"])))


@op_backends
@given(case=activation_case())
def test_fuzz_quantize_pack_matches_the_reference(where, case):
    device, kernel = where
    c = case
    x = torch.randn(c["M"], c["K"], generator=torch.Generator().manual_seed(c["seed"])) * c["scale"]
    if c["special"] == "zero_row":
        x[0] = 0
    elif c["special"]:
        x[0, c["K"] // 2] = float(c["special"])
    x = x.to(c["dtype"])
    with selected(device, kernel) as b:
        got = apq_torch.quantize_pack(b.to(x), c["bits"], c["fmt"], c["group_size"])
        want = ref.quantize_pack(x, c["bits"], c["fmt"], c["group_size"])
        for a, w in zip(got, want):
            torch.testing.assert_close(a.cpu(), w, rtol=0, atol=0, equal_nan=True)


@st.composite
def linear_case(draw):
    c = draw(qmatmul_case())
    if c["K"] > 3000:
        c["K"], c["M"], c["N"] = c["K"] % 3000 + 1, min(c["M"], 8), min(c["N"], 8)
    c["lead"] = draw(st.sampled_from([(), (2,), (2, 3)]))
    c["layout"] = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    c["out_dtype"] = draw(st.sampled_from(FLOAT_OUT))  # linear's output dtype is x's dtype
    return c


@gemm_backends
@given(case=linear_case())
def test_fuzz_linear_is_quantize_pack_then_qmatmul(where, case):
    device, kernel = where
    c = copy.deepcopy(case)
    if device == "cuda" and cuda_variant_skip_reason(kernel, c["group_size"]):
        return
    gen = torch.Generator().manual_seed(c["seed"])
    dtype = c["out_dtype"]
    with selected(device, kernel) as b:
        w = b.to(*random_weight(c["N"], c["K"], c["bw"], c["w_fmt"], c["group_size"], gen))
        x2 = (torch.randn(max(1, c["M"]), c["K"], generator=gen) * c["x_scale"]).to(dtype)
        x = b.to(laid_out(x2, c["layout"]))
        if c["lead"]:
            x = b.to(torch.randn(*c["lead"], c["K"], generator=gen).to(dtype))
        bias = None if c["bias_dtype"] is None else b.to(torch.randn(c["N"], generator=gen).to(c["bias_dtype"]))
        y = apq_torch.linear(x, *w, c["K"], c["group_size"], c["bx"], c["x_fmt"], bias)
        assert y.shape == (*x.shape[:-1], c["N"]) and y.dtype == dtype
        xq = apq_torch.quantize_pack(x.reshape(-1, c["K"]).contiguous(), c["bx"], c["x_fmt"], c["group_size"])
        composite = apq_torch.qmatmul(*xq, *w, c["K"], c["group_size"], bias, dtype)
        assert torch.equal(y.reshape(-1, c["N"]), composite)


# ---- the CUDA kernels' own source, emulated on the CPU (tests/emulator) ----

emulated = pytest.importorskip("emulated_kernel")
# The register-tile kernels (wide, narrow, imma, igmma); the baseline's device code is CUTLASS's,
# and the BGMMA kernel has its own emulator (tests/test_emulated_bgmma.py).
EMULATED_VARIANTS = [v.name for v in kernel_variants.VARIANTS
                     if v.name != "baseline" and not v.name.startswith("bgmma")]
# An H100's limits: every variant fits them (the wide tile's K-group results do not always fit
# an A100's shared memory; tests/test_cuda_host.py checks those refusals).
EMULATED_GPU = emulated.H100


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if emulated.cuda_include_dirs() is None:
        pytest.skip("no CUDA toolkit headers to build the emulator")
    return emulated.build(str(tmp_path_factory.mktemp("emulator")))


@st.composite
def small_gemm_case(draw):
    """Shapes the emulator runs in well under a second: ragged, several blocks, few threads' work."""
    K, bx, bw = draw(st.one_of(st.sampled_from([1, 255, 256, 257, 511, 513, 1025]), st.integers(1, 1200))), \
        draw(bits), draw(bits)
    M, N = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    return M, N, K, bx, bw, draw(codes(M, K, bx)), draw(codes(N, K, bw))


@pytest.mark.parametrize("variant", EMULATED_VARIANTS)
@settings(max_examples=min(settings().max_examples, 20))
@given(case=small_gemm_case())
def test_fuzz_emulated_cuda_gemm_is_exact(emulator, variant, case):
    M, N, K, bx, bw, ux, uw = case
    out = torch.full((M, N), -0x2A2A2A2A, dtype=torch.int32)
    emulated.run(emulator, variant, apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0], K, out, device=EMULATED_GPU)
    assert torch.equal(out, exact_product(ux, uw))


@pytest.mark.parametrize("variant", EMULATED_VARIANTS)
@settings(max_examples=min(settings().max_examples, 20))
@given(case=qmatmul_case())
def test_fuzz_emulated_cuda_qmatmul_within_bound(emulator, variant, case):
    c = case
    M, N, K = min(c["M"], 24), min(c["N"], 24), min(c["K"], 1500)
    gen = torch.Generator().manual_seed(c["seed"])
    w = random_weight(N, K, c["bw"], c["w_fmt"], c["group_size"], gen)
    xq = apq_torch.quantize_pack(torch.randn(M, K, generator=gen) * c["x_scale"], c["bx"], c["x_fmt"], c["group_size"])
    bias = None if c["bias_dtype"] is None else torch.randn(N, generator=gen).to(c["bias_dtype"])
    if bias is not None and bias.dtype == torch.float64:
        bias = bias.float()  # gemm_cuda.cpp converts a float64 bias before the launch
    out = torch.full((M, N), float("nan"), dtype=c["out_dtype"])
    emulated.run(emulator, variant, xq[0], w[0], K, out, xq[1:], w[1:], c["group_size"], bias, device=EMULATED_GPU)
    want = Fp64Product(xq, w, K, c["group_size"], bias)
    assert_within(out, want.y, qmatmul_error_bound(want, c["out_dtype"], "cuda"), str(c))


@st.composite
def hadamard_case(draw):
    m = draw(st.sampled_from([1, 1, 3, 12, 20, 36]))
    P = 2 ** draw(st.integers(0, 11 if m == 1 else 7))
    return dict(m=m, n=m * P, M=draw(st.integers(1, 12)), dtype=draw(st.sampled_from(FLOAT_OUT)),
                seed=draw(st.integers(0, 2**31 - 1)), scale=draw(st.sampled_from([1e-30, 1.0, 1e4, 1e36])),
                special=draw(st.sampled_from([None, "nan", "inf"])), bits=draw(bits),
                fmt=draw(st.sampled_from(["unsigned", "bipolar"])))


@op_backends
@given(case=hadamard_case())
def test_fuzz_hadamard_and_fused_quantize_pack_match_the_reference(where, case):
    device, kernel = where
    c = case
    gen = torch.Generator().manual_seed(c["seed"])
    mix = mix_matrix(c["n"]) if c["m"] != 3 else random_orthogonal(3, c["seed"]).float()
    x = torch.randn(c["M"], c["n"], generator=gen) * c["scale"]  # 1e36: sums overflow to inf, as specified
    if c["special"]:
        x[0, c["n"] // 2] = float(c["special"])
    x = x.to(c["dtype"])
    with selected(device, kernel) as b:
        y = apq_torch.ops.hadamard(*b.to(x, mix))
        torch.testing.assert_close(y.cpu(), ref.hadamard(x, mix), rtol=0, atol=0, equal_nan=True)
        got = apq_torch.quantize_pack(b.to(x), c["bits"], c["fmt"], 0, b.to(mix))
        want = ref.quantize_pack(x, c["bits"], c["fmt"], 0, mix)
        for a, w in zip(got, want):
            torch.testing.assert_close(a.cpu(), w, rtol=0, atol=0, equal_nan=True)
