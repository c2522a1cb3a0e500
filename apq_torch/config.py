"""APQConfig: how one linear layer is quantized."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .reference import FORMATS

GROUP_QUANTUM = 64  # the kernels' group granularity (one 64-bit CPU word)


@dataclass(frozen=True)
class APQConfig:
    """Weights: ``w_bits`` in ``w_format``, one scale/offset per ``group_size`` columns
    (0: per output channel), round-to-nearest or with a per-group ``clip_search``.
    Activations: dynamic per-token ``a_bits`` in ``a_format`` (quantized in the kernel).
    ``method="gptq"`` compensates rounding errors with calibration data (apq_torch.gptq).
    """

    w_bits: int = 4
    a_bits: int = 8
    w_format: str = "bipolar"
    a_format: str = "unsigned"
    group_size: int = 128
    clip_search: bool = False
    method: str = "rtn"  # "rtn" (round to nearest) or "gptq" (needs calibration data)

    def __post_init__(self):
        for name in ("w_bits", "a_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 8:
                raise ValueError(f"APQConfig.{name} must be an int between 1 and 8, got {value!r}")
        for name in ("w_format", "a_format"):
            value = getattr(self, name)
            if value not in FORMATS:
                raise ValueError(f"APQConfig.{name} must be one of {FORMATS}, got {value!r}")
        for name, bits in (("w_format", self.w_bits), ("a_format", self.a_bits)):
            if getattr(self, name) == "signed" and bits < 2:
                raise ValueError(f"APQConfig.{name}='signed' needs at least 2 bits; use 'bipolar' for 1 bit")
        gs = self.group_size
        if not isinstance(gs, int) or isinstance(gs, bool) or gs < 0 or gs % GROUP_QUANTUM:
            raise ValueError(f"APQConfig.group_size must be 0 (per channel) or a positive multiple "
                             f"of {GROUP_QUANTUM}, got {gs!r}")
        if self.method not in ("rtn", "gptq"):
            raise ValueError(f"APQConfig.method must be 'rtn' or 'gptq', got {self.method!r}")
        if not isinstance(self.clip_search, bool):
            raise ValueError(f"APQConfig.clip_search must be a bool, got {self.clip_search!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "APQConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"APQConfig has no field(s) {sorted(unknown)}")
        return cls(**d)

    def label(self) -> str:
        g = "per-channel" if self.group_size == 0 else f"g{self.group_size}"
        extras = (" gptq" if self.method == "gptq" else "") + (" clip" if self.clip_search else "")
        return f"W{self.w_bits}A{self.a_bits} {self.w_format}/{self.a_format} {g}{extras}"
