"""Small ragged shapes through every CUDA kernel of apq_torch, for compute-sanitizer (memcheck,
racecheck, synccheck; gpu_check.py runs it once under each tool).

Pack kernels (pack, unpack, quantize_pack) once per shape; then every GEMM variant of
kernel_variants.py on gemm (exact int32), qmatmul (each group size the variant takes) and linear.
Each result is compared with the CPU ops computed once beforehand: gemm must be equal, the
float ops within TOLERANCE of max |y|. A line per call, flushed before it runs, so that a
sanitizer report lands under the call that caused it. Exit status 1 on any mismatch or error.

    python3 tools/gpu/sanitize_workload.py [--quick] [--variants 'table baseline'] [--json out.json]

(--device cpu runs the same calls on the CPU against themselves: a smoke test of this script.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import traceback

import torch

import apq_torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_variants  # noqa: E402

MS = (1, 17, 129)
KS = (1, 255, 257, 4097)
GROUP_SIZES = (0, 64, 128)
N = 67  # ragged on both tile sides
# (a_bits, w_bits): one pair per (M, K) case, in turn.
BIT_PAIRS = ((8, 4), (1, 1), (3, 5), (8, 8), (2, 2), (4, 8), (5, 3), (1, 8), (8, 1), (2, 8), (7, 6), (6, 7))
# Per channel, K past 32768 8x8-bit products closes several exact int32 windows.
WINDOW_CASE = (17, 40000, (8, 8))
TOLERANCE = 1e-4  # float ops: |gpu - cpu| / max|cpu|; both sum the same exact integers


def cases(quick: bool):
    shapes = [(1, 257), (17, 4097)] if quick else list(itertools.product(MS, KS))
    out = [(M, K, BIT_PAIRS[i % len(BIT_PAIRS)]) for i, (M, K) in enumerate(shapes)]
    return out if quick else out + [WINDOW_CASE]


class Checker:
    def __init__(self, device):
        self.device = device
        self.counts = {"ok": 0, "mismatch": 0, "error": 0}
        self.failures = []

    def run(self, label: str, gpu_fn, want, exact: bool):
        print(label, end=" ... ", flush=True)
        try:
            got = gpu_fn()
            if self.device == "cuda":
                torch.cuda.synchronize()
            got = [t.cpu() for t in got] if isinstance(got, (tuple, list)) else [got.cpu()]
            want_list = want if isinstance(want, (tuple, list)) else [want]
            if exact:
                bad = [i for i, (g, w) in enumerate(zip(got, want_list)) if not torch.equal(g, w)]
                verdict = "ok" if not bad else "mismatch"
                detail = "" if not bad else f"outputs {bad} differ"
            else:
                g, w = got[0].double(), want_list[0].double()
                err = ((g - w).abs().max() / w.abs().max().clamp(min=1e-30)).item() if w.numel() else 0.0
                verdict = "ok" if err <= TOLERANCE else "mismatch"
                detail = f"relerr {err:.1e}"
        except Exception as e:  # noqa: BLE001 - one failing call must not hide the others
            verdict, detail = "error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            traceback.print_exc(limit=2, file=sys.stdout)
        self.counts[verdict] += 1
        if verdict != "ok":
            self.failures.append(f"{label}: {verdict} {detail}")
        print(verdict.upper(), detail, flush=True)


def codes(rows, K, bits, gen):
    return torch.randint(0, 2**bits, (rows, K), generator=gen, dtype=torch.int32)


def weight(K, bits, group_size, gen):
    planes, rowsum = apq_torch.pack(codes(N, K, bits, gen), bits, group_size)
    G = rowsum.shape[1]
    scale = torch.rand(N, G, generator=gen) * 0.01 + 0.001
    offset = torch.full((N, G), -(2**bits - 1) / 2)
    return planes, rowsum, scale, offset


def to(device, tensors):
    return [t.to(device) for t in tensors]


def check_pack_kernels(check, M, K, a_bits, w_bits, gen):
    dev = check.device
    for gs in GROUP_SIZES:
        c = codes(N, K, w_bits, gen)
        want = apq_torch.pack(c, w_bits, gs)
        check.run(f"pack M={N} K={K} bits={w_bits} g={gs}", lambda: apq_torch.pack(c.to(dev), w_bits, gs),
                  want, exact=True)
        check.run(f"unpack M={N} K={K} bits={w_bits}", lambda: apq_torch.unpack(want[0].to(dev), K), c, exact=True)
        x = torch.randn(M, K, generator=gen).half()
        want = apq_torch.quantize_pack(x, a_bits, "unsigned", gs)
        check.run(f"quantize_pack M={M} K={K} bits={a_bits} g={gs}",
                  lambda: apq_torch.quantize_pack(x.to(dev), a_bits, "unsigned", gs), want, exact=True)


def check_gemm_kernels(check, M, K, a_bits, w_bits, chosen, capability, gen):
    dev = check.device
    xp, _ = apq_torch.pack(codes(M, K, a_bits, gen), a_bits)
    wp, _ = apq_torch.pack(codes(N, K, w_bits, gen), w_bits)
    fits_int32 = K * (2**a_bits - 1) * (2**w_bits - 1) < 2**31  # gemm refuses the others
    want_gemm = apq_torch.gemm(xp, wp, K) if fits_int32 else None
    per_group = {}
    for gs in GROUP_SIZES:
        x = torch.randn(M, K, generator=gen)
        xq = apq_torch.quantize_pack(x, a_bits, "unsigned", gs)
        w = weight(K, w_bits, gs, gen)
        bias = torch.randn(N, generator=gen)
        per_group[gs] = (x, xq, w, bias,
                         apq_torch.qmatmul(*xq, *w, K, gs, bias, torch.float32),
                         apq_torch.linear(x, *w, K, gs, a_bits, "unsigned", bias))
    shape = f"M={M} N={N} K={K} a{a_bits}w{w_bits}"
    for variant in chosen:
        if capability < variant.min_capability:
            continue
        with kernel_variants.forced(variant):
            if want_gemm is not None:
                check.run(f"[{variant.name}] gemm {shape}", lambda: apq_torch.gemm(xp.to(dev), wp.to(dev), K),
                          want_gemm, exact=True)
            for gs, (x, xq, w, bias, want_q, want_lin) in per_group.items():
                if not variant.supports(gs, capability):
                    continue
                check.run(f"[{variant.name}] qmatmul {shape} g={gs}",
                          lambda: apq_torch.qmatmul(*to(dev, xq), *to(dev, w), K, gs, bias.to(dev), torch.float32),
                          want_q, exact=False)
                check.run(f"[{variant.name}] linear {shape} g={gs}",
                          lambda: apq_torch.linear(x.to(dev), *to(dev, w), K, gs, a_bits, "unsigned", bias.to(dev)),
                          want_lin, exact=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two shapes only")
    parser.add_argument("--variants", default=None, help="space-separated variant names (default: all)")
    parser.add_argument("--json", default=None, help="write the counts and failures here")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not (torch.cuda.is_available() and apq_torch.cuda_built()):
        raise SystemExit("sanitize_workload.py needs a CUDA device and a CUDA build of apq_torch")
    chosen = kernel_variants.select(args.variants)
    capability = kernel_variants.capability() if cuda else max(v.min_capability for v in chosen)
    gen = torch.Generator().manual_seed(0)
    check = Checker(args.device)
    shapes = cases(args.quick)
    for done, (M, K, (a_bits, w_bits)) in enumerate(shapes, 1):
        check_pack_kernels(check, M, K, a_bits, w_bits, gen)
        check_gemm_kernels(check, M, K, a_bits, w_bits, chosen, capability, gen)
        if args.json:  # after every shape: a run stopped at its timeout still tells how far it got
            with open(args.json, "w") as f:
                json.dump(dict(counts=check.counts, failures=check.failures, shapes_done=done,
                               shapes=len(shapes), variants=[v.name for v in chosen], capability=capability),
                          f, indent=1)
    print("SUMMARY", json.dumps(check.counts), flush=True)
    for line in check.failures:
        print("FAILED", line)
    return 0 if not check.failures else 1


if __name__ == "__main__":
    sys.exit(main())
