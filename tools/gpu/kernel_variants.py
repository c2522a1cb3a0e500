"""The CUDA GEMM kernels that a GPU run checks and times, one line each. A new kernel (BGMMA,
register recovery, split-K, an s8 path) is one more `Variant` naming the environment that
forces it; the sanitizer workload and the GEMM sweep read this list and nothing else.

`min_capability` keeps a kernel off GPUs that lack its instructions (90 = sm_90a: wgmma);
`group_quantum` is the group-size granularity it takes (0, per channel, always passes)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict = field(default_factory=dict)
    min_capability: int = 80
    group_quantum: int = 64

    def supports(self, group_size: int, capability: int) -> bool:
        return capability >= self.min_capability and group_size % self.group_quantum == 0


# The register-recovery kernel's tiles (wide, narrow), each with the activations or the weights
# on the MMA's A side, with or without split-K (csrc/cuda/gemm_plan.h's kVariants).
FUSED = tuple(f"{tile},{side}{split}" for tile in ("wide", "narrow") for side in ("noswap", "swap")
              for split in ("", ",splitk"))
# The integer-MMA kernel (planes expanded to u8 codes, mma.sync m16n8k32 .u8; igmma: its sm_90a
# form with wgmma m64n128k32 .u8), same four forms each.
IMMA, IGMMA = (tuple(f"{kernel},{side}{split}" for side in ("noswap", "swap") for split in ("", ",splitk"))
               for kernel in ("imma", "igmma"))
VARIANTS = (
    *(Variant(name, {"APQ_GEMM_KERNEL": name}) for name in FUSED + IMMA),
    *(Variant(name, {"APQ_GEMM_KERNEL": name}, min_capability=90) for name in IGMMA),
    # the sm_90a wgmma b1 kernel (TMA, warp-specialized)
    Variant("bgmma,noswap", {"APQ_GEMM_KERNEL": "bgmma,noswap"}, min_capability=90),
    Variant("bgmma,swap", {"APQ_GEMM_KERNEL": "bgmma,swap"}, min_capability=90),
    Variant("baseline", {"APQ_GEMM_PATH": "baseline"}, group_quantum=128),  # CUTLASS b1 GEMM + recovery
)
TABLE = Variant("table")  # no forcing: the kernel map's choice

# Every environment variable a variant sets: cleared before each variant so none leaks into the next.
FORCING_VARS = sorted({name for v in VARIANTS for name in v.env})


def select(names: str | None) -> tuple[Variant, ...]:
    """Variants named space-separated ('table wide,swap baseline'); 'all' adds `TABLE` to the
    forced ones, None means the forced ones alone."""
    known = {v.name: v for v in (TABLE,) + VARIANTS}
    if names is None:
        return VARIANTS
    if names == "all":
        return (TABLE,) + VARIANTS
    chosen = []
    for name in names.split():
        if name not in known:
            raise SystemExit(f"unknown kernel variant {name!r}; known: {' '.join(known)}")
        chosen.append(known[name])
    return tuple(chosen)


@contextlib.contextmanager
def forced(variant: Variant):
    """Runs the block with exactly `variant`'s forcing variables set (the ops read them per call)."""
    saved = {name: os.environ.get(name) for name in FORCING_VARS}
    for name in FORCING_VARS:
        os.environ.pop(name, None)
    os.environ.update(variant.env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def capability() -> int:
    """Compute capability of the current GPU as 90, 86, ..."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor
