"""Rotation of a decoder LLM's residual stream (after QuaRot, arXiv 2404.00456, and SpinQuant,
arXiv 2405.16406): an orthogonal change of basis that leaves the float model's function
unchanged but spreads the few huge activation channels over all of them, so that
activations and weights quantize well.

For a pre-norm decoder (Llama and its kin) whose norms are RMSNorms:

1. every RMSNorm's scale g is folded into the linear layers that read it (W <- W diag(g),
   g <- 1), so each norm only divides by the RMS, which a rotation preserves;
2. the residual stream is rotated by Q = diag(+-1) H / sqrt(n) (a randomized Hadamard
   matrix, fp64, applied offline): embeddings E <- E Q, layers reading the stream
   (q/k/v, gate/up, lm_head) W <- W Q, layers writing to it (o_proj, down_proj) W <- Q^T W;
3. where no rotation can be folded, the input of a linear layer is transformed online:
   before down_proj (after the elementwise gate) and before o_proj (after attention), by
   R = M (x) H_{2^p}/sqrt(2^p) (``apq::hadamard``, fused into the activation quantization
   of an APQLinear), with W <- W R^T folded offline.

A tied lm_head is untied (it receives the final norm's scale, the embedding does not).
Sizes that are not powers of two use Kronecker products with a small Paley Hadamard matrix
(hadamard.py). Modules the recogniser does not know are refused with an error naming
them, and the rotated model's logits are checked against the original's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from .fp32 import KeepsFp32Buffers
from .hadamard import dense_transform, mix_matrix, random_hadamard
from .mixed import decoder_layers

# Names the recogniser accepts, per role (Llama, Mistral, Qwen2/3, Phi-3 style).
_ATTENTION = ("self_attn", "attention", "attn")
_MLP = ("mlp", "feed_forward")
_ATTN_NORM = ("input_layernorm", "attention_norm")
_MLP_NORM = ("post_attention_layernorm", "ffn_norm")
_ATTN_IN = (("q_proj", "k_proj", "v_proj"), ("qkv_proj",))
_ATTN_OUT = ("o_proj", "out_proj")
_MLP_IN = (("gate_proj", "up_proj"), ("gate_up_proj",), ("w1", "w3"))
_MLP_OUT = ("down_proj", "w2")
_HEAD_NORMS = ("q_norm", "k_norm")  # per-head norms on q/k outputs: untouched by the rotation
_FINAL_NORM = ("norm", "final_layernorm", "final_norm")
ROTATED = "_apq_rotation"  # set on a rotated model: its RotationConfig


@dataclass(frozen=True, kw_only=True)
class RotationConfig:
    """How :func:`rotate_` rotates a model (``apq_torch.quantize_(model, RotationConfig())``).

    ``seed``: of the random signs of the residual rotation. ``online``: the layers whose
    input also gets an online Hadamard transform ("down_proj": the MLP's output projection,
    "o_proj": the attention's), by their role, not their name. ``check``: compare the
    rotated model's logits with the original's on a few random tokens and raise on a
    mismatch (the rotation is exact in real arithmetic; only float rounding may differ).
    """

    seed: int = 0
    online: tuple = ("down_proj", "o_proj")
    check: bool = True

    def __post_init__(self):
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"RotationConfig.seed must be an int, got {self.seed!r}")
        bad = set(self.online) - {"down_proj", "o_proj"}
        if bad or not isinstance(self.online, tuple):
            raise ValueError(f"RotationConfig.online must be a tuple of 'down_proj' and/or 'o_proj', got {self.online!r}")
        if not isinstance(self.check, bool):
            raise ValueError(f"RotationConfig.check must be a bool, got {self.check!r}")


class HadamardLinear(KeepsFp32Buffers, nn.Linear):
    """nn.Linear whose input is first transformed by ``apq::hadamard(x, hadamard)``; its
    weight already holds the folded W R^T, so the pair computes the original layer.
    ``apq_torch.quantize_`` turns it into an APQLinear that fuses the transform into the
    activation quantization. The mix stays fp32 under dtype casts."""

    FP32_BUFFERS = ("hadamard",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.register_buffer("hadamard", torch.ones(1, 1, device=device))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(ops.hadamard(x, self.hadamard), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hadamard={self.hadamard.shape[0]}x{self.in_features // self.hadamard.shape[0]}"


def online_transform(module: nn.Module) -> Optional[Tensor]:
    """The mix matrix of a layer's online input transform (HadamardLinear, APQLinear), or None."""
    return getattr(module, "hadamard", None)


@dataclass
class _Layer:
    name: str
    attn_norm: nn.Module
    attn_in: list
    attn_out: nn.Linear
    mlp_norm: nn.Module
    mlp_in: list
    mlp_out: nn.Linear
    attn_out_name: str
    mlp_out_name: str


def _child(module: nn.Module, names, path: str, role: str) -> tuple[str, nn.Module]:
    for n in names:
        if isinstance(getattr(module, n, None), nn.Module):
            return n, getattr(module, n)
    raise ValueError(f"rotation: {path} ({type(module).__name__}) has no {role} (looked for {', '.join(names)})")


def _linears(module: nn.Module, alternatives, path: str, role: str) -> tuple[list, list]:
    for names in alternatives:
        if all(isinstance(getattr(module, n, None), nn.Module) for n in names):
            found = [getattr(module, n) for n in names]
            for n, m in zip(names, found):
                if type(m) is not nn.Linear:
                    raise ValueError(f"rotation: {path}.{n} is {type(m).__name__}, not an nn.Linear")
            return list(names), found
    options = " or ".join("/".join(a) for a in alternatives)
    raise ValueError(f"rotation: {path} ({type(module).__name__}) has no {role} ({options})")


def _only_known_parameters(module: nn.Module, path: str, known) -> None:
    """Refuse a module holding parameters in children the recogniser does not understand."""
    for name, child in module.named_children():
        if name not in known and any(True for _ in child.parameters()):
            raise ValueError(f"rotation: cannot handle {path}.{name} ({type(child).__name__}): "
                             f"its role in the residual stream is unknown")
    if any(True for _ in module.parameters(recurse=False)):
        raise ValueError(f"rotation: cannot handle {path} ({type(module).__name__}): it holds its own parameters")


@torch.no_grad()
def _check_rms_norm(norm: nn.Module, path: str) -> None:
    """The module must compute x / rms(x) * weight: checked on a random input."""
    w = getattr(norm, "weight", None)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if not isinstance(w, Tensor) or w.dim() != 1 or getattr(norm, "bias", None) is not None or eps is None:
        raise ValueError(f"rotation: {path} ({type(norm).__name__}) is not an RMSNorm (weight [n], no bias, eps)")
    x = torch.randn(3, w.shape[0], generator=torch.Generator().manual_seed(0)).to(w)
    want = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps) * w.float()
    if not torch.allclose(norm(x).float(), want, rtol=1e-3, atol=1e-5):
        raise ValueError(f"rotation: {path} ({type(norm).__name__}) does not compute x / rms(x) * weight "
                         f"(e.g. a LayerNorm or Gemma's (1 + weight) form); cannot fold it")


def _recognise(model: nn.Module):
    """(embedding, layers, final norm, lm_head) of a pre-norm RMSNorm decoder, or a ValueError
    naming the module that does not fit."""
    try:
        layers = decoder_layers(model)
    except ValueError:
        raise ValueError(f"rotation: no decoder layers found in {type(model).__name__}") from None
    names = {id(m): n for n, m in model.named_modules()}
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(embed, nn.Embedding):
        raise ValueError(f"rotation: {type(model).__name__} has no nn.Embedding input embeddings")
    if type(head) is not nn.Linear:
        raise ValueError(f"rotation: {type(model).__name__}'s output embeddings are a "
                         f"{type(head).__name__}, not an nn.Linear lm_head")
    parts = []
    for layer in layers:
        path = names[id(layer)]
        attn_name, attn = _child(layer, _ATTENTION, path, "attention")
        mlp_name, mlp = _child(layer, _MLP, path, "MLP")
        n1_name, n1 = _child(layer, _ATTN_NORM, path, "attention input norm")
        n2_name, n2 = _child(layer, _MLP_NORM, path, "MLP input norm")
        _only_known_parameters(layer, path, {attn_name, mlp_name, n1_name, n2_name})
        for n, norm in ((n1_name, n1), (n2_name, n2)):
            _check_rms_norm(norm, f"{path}.{n}")
        in_names, attn_in = _linears(attn, _ATTN_IN, f"{path}.{attn_name}", "input projections")
        out_name, attn_out = _linears(attn, [(n,) for n in _ATTN_OUT], f"{path}.{attn_name}", "output projection")
        _only_known_parameters(attn, f"{path}.{attn_name}", set(in_names) | set(out_name) | set(_HEAD_NORMS))
        mlp_in_names, mlp_in = _linears(mlp, _MLP_IN, f"{path}.{mlp_name}", "input projections")
        down_name, mlp_out = _linears(mlp, [(n,) for n in _MLP_OUT], f"{path}.{mlp_name}", "output projection")
        _only_known_parameters(mlp, f"{path}.{mlp_name}", set(mlp_in_names) | set(down_name))
        parts.append(_Layer(path, n1, attn_in, attn_out[0], n2, mlp_in, mlp_out[0],
                            f"{path}.{attn_name}.{out_name[0]}", f"{path}.{mlp_name}.{down_name[0]}"))
    decoder = model.get_submodule(names[id(layers)].rpartition(".")[0])
    norm_name, final_norm = _child(decoder, _FINAL_NORM, names[id(decoder)] or type(decoder).__name__, "final norm")
    _check_rms_norm(final_norm, f"{names[id(decoder)]}.{norm_name}")
    return embed, parts, final_norm, head


def _set_weight(linear: nn.Module, w: Tensor) -> None:
    linear.weight.data = w.to(linear.weight.dtype).contiguous()


def _fold_norm(norm: nn.Module, readers) -> None:
    g = norm.weight.double()
    for linear in readers:
        _set_weight(linear, linear.weight.double() * g.view(1, -1))
    norm.weight.data.fill_(1.0)


def _untie(model: nn.Module, embed: nn.Embedding, head: nn.Linear) -> None:
    if head.weight is embed.weight or head.weight.data_ptr() == embed.weight.data_ptr():
        head.weight = nn.Parameter(embed.weight.detach().clone())
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        model.config.tie_word_embeddings = False


def online_hadamard_linear(linear: nn.Linear, seed: int = 0) -> HadamardLinear:
    """A HadamardLinear computing the same function as ``linear``: the transform of size
    ``in_features`` (hadamard.mix_matrix) applied online, its transpose folded into the weight."""
    n = linear.in_features
    mix = mix_matrix(n, seed)
    R = dense_transform(mix, n)
    new = HadamardLinear(n, linear.out_features, linear.bias is not None, device=linear.weight.device,
                         dtype=linear.weight.dtype)
    new.weight.data = (linear.weight.double() @ R.T.to(linear.weight.device)).to(linear.weight.dtype)
    if linear.bias is not None:
        new.bias.data = linear.bias.detach().clone()
    new.hadamard = mix.to(linear.weight.device)
    return new


def _make_online(model: nn.Module, name: str, linear: nn.Linear, seed: int) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, online_hadamard_linear(linear, seed))


@torch.no_grad()
def rotate_(model: nn.Module, config: Optional[RotationConfig] = None) -> nn.Module:
    """Rotate ``model`` (a Hugging Face causal LM with RMSNorm pre-norm decoder layers) in
    place per ``config``; returns ``model``. Raises ValueError naming the first module it
    cannot handle, before changing anything."""
    config = config or RotationConfig()
    if not isinstance(config, RotationConfig):
        raise TypeError(f"config must be a RotationConfig, got {type(config).__name__}")
    if getattr(model, ROTATED, None) is not None or any(online_transform(m) is not None for m in model.modules()):
        raise ValueError(f"{type(model).__name__} is already rotated")
    embed, layers, final_norm, head = _recognise(model)
    probe = reference = None
    if config.check:
        vocab = embed.weight.shape[0]
        probe = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(config.seed))
        probe = probe.to(embed.weight.device)
        reference = model(probe).logits.double()
    _untie(model, embed, head)
    for layer in layers:
        _fold_norm(layer.attn_norm, layer.attn_in)
        _fold_norm(layer.mlp_norm, layer.mlp_in)
    _fold_norm(final_norm, [head])
    n = embed.weight.shape[1]
    Q = random_hadamard(n, config.seed).to(embed.weight.device)
    embed.weight.data = (embed.weight.double() @ Q).to(embed.weight.dtype)
    for linear in [head] + [m for layer in layers for m in layer.attn_in + layer.mlp_in]:
        _set_weight(linear, linear.weight.double() @ Q)
    for linear in [m for layer in layers for m in (layer.attn_out, layer.mlp_out)]:
        _set_weight(linear, Q.T @ linear.weight.double())
        if linear.bias is not None:
            linear.bias.data = (linear.bias.double() @ Q).to(linear.bias.dtype)
    for i, layer in enumerate(layers):
        if "o_proj" in config.online:
            _make_online(model, layer.attn_out_name, layer.attn_out, config.seed + 2 * i + 1)
        if "down_proj" in config.online:
            _make_online(model, layer.mlp_out_name, layer.mlp_out, config.seed + 2 * i + 2)
    if config.check:
        got = model(probe).logits.double()
        err = (got - reference).abs().max().item()
        scale = reference.abs().max().item()
        if not math.isfinite(err) or err > 1e-3 * max(scale, 1.0) * (1 if embed.weight.dtype == torch.float32 else 30):
            raise ValueError(f"rotation changed {type(model).__name__}'s logits by up to {err:.3g} (of {scale:.3g}): "
                             f"its layers do not follow the pre-norm residual structure rotate_ assumes")
    setattr(model, ROTATED, config)
    return model
