"""APQConfig: how one linear layer is quantized."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from ..ops.layout import check_bits, check_format, check_group_size

METHODS = ("rtn", "gptq")


@dataclass(frozen=True, kw_only=True)
class APQConfig:
    """Weights: ``w_bits`` in ``w_format``, one scale/offset per ``group_size`` columns
    (0: per output channel), round-to-nearest or with a per-group ``clip_search``; with
    ``refit_scales`` the group scales (and zero points) are refitted by least squares once the
    codes are chosen (Hessian-weighted under GPTQ; apq_torch.quantization.refit).
    Activations: dynamic per-token ``a_bits`` in ``a_format`` (quantized in the kernel), each
    token's range first scaled by ``a_clip`` in (0, 1] (activation clipping: QuaRot clips
    4-bit activations at 0.9; values beyond the clipped range saturate); with ``a_clip_search``
    each layer's ``a_clip`` is instead chosen on calibration data (needs calibration input ids;
    apq_torch.quantization.act_clip), one ratio per input that layers share.
    ``method="gptq"`` compensates rounding errors with calibration data (apq_torch.quantization.gptq).

    Keyword-only. ``VERSION`` is written with every saved config and checked on load: it
    changes when a field's meaning or the packed format does.
    """

    VERSION: ClassVar[int] = 1

    w_bits: int = 4
    a_bits: int = 8
    w_format: str = "bipolar"
    a_format: str = "unsigned"
    group_size: int = 128
    clip_search: bool = False
    refit_scales: bool = False
    method: str = "rtn"  # "rtn" (round to nearest) or "gptq" (needs calibration data)
    a_clip: float = 1.0
    a_clip_search: bool = False

    def __post_init__(self):
        check_bits(self.w_bits, "APQConfig.w_bits")
        check_bits(self.a_bits, "APQConfig.a_bits")
        check_format(self.w_format, self.w_bits, "APQConfig.w_format")
        check_format(self.a_format, self.a_bits, "APQConfig.a_format")
        check_group_size(self.group_size, "APQConfig.group_size")
        if self.method not in METHODS:
            raise ValueError(f"APQConfig.method must be 'rtn' or 'gptq', got {self.method!r}")
        if isinstance(self.a_clip, bool) or not isinstance(self.a_clip, (int, float)) or not 0.0 < self.a_clip <= 1.0:
            raise ValueError(f"APQConfig.a_clip must be a clipping ratio in (0, 1], got {self.a_clip!r}")
        for flag in ("clip_search", "refit_scales", "a_clip_search"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"APQConfig.{flag} must be a bool, got {getattr(self, flag)!r}")

    def to_dict(self) -> dict:
        """The fields and the config version (what checkpoints store)."""
        return {"version": self.VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "APQConfig":
        """Inverse of :meth:`to_dict`; refuses an unknown version or field."""
        d = dict(d)
        version = d.pop("version", None)
        if version != cls.VERSION:
            raise ValueError(f"APQConfig version {version!r} is not supported by this apq_torch "
                             f"(it reads version {cls.VERSION})")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"APQConfig has no field(s) {sorted(unknown)}")
        return cls(**d)

    def label(self) -> str:
        g = "per-channel" if self.group_size == 0 else f"g{self.group_size}"
        extras = (" gptq" if self.method == "gptq" else "") + (" clip" if self.clip_search else "") \
            + (" refit" if self.refit_scales else "") \
            + (" aclip-search" if self.a_clip_search else f" aclip{self.a_clip:g}" if self.a_clip != 1.0 else "")
        return f"W{self.w_bits}A{self.a_bits} {self.w_format}/{self.a_format} {g}{extras}"
