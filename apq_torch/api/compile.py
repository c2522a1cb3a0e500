"""torch.compile for apq models, with a graph pass that quantizes each activation once.

Several ``apq::linear`` nodes reading the same activation with the same activation bits,
format, group size, K and online Hadamard transform (attention q/k/v, MLP gate/up) each quantize and pack that
activation again. :class:`ShareActivationQuantization` rewrites such a group into one
``apq::quantize_pack`` feeding one ``apq::qmatmul`` per layer. It runs as Inductor's
``post_grad_custom_post_pass`` (after functionalization, on aten-level graphs), and its
``uuid`` hashes this file and the schemas of the ``apq`` ops so Inductor's FX graph cache stays
correct: the cache key does not cover custom ops, and code compiled (C++ wrapper) against an
older schema of an op crashes when it calls the new one.

The number of consumers varies (2, 3, ...), so this is a grouping pass over the graph
rather than a fixed-arity ``torch._inductor.pattern_matcher`` pattern.
"""

from __future__ import annotations

import hashlib
import operator
from collections import defaultdict
from typing import Optional

import torch

from .. import ops  # noqa: F401  (loads torch.ops.apq)
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

_LINEAR = torch.ops.apq.linear.default
_QUANTIZE_PACK = torch.ops.apq.quantize_pack.default
_QMATMUL = torch.ops.apq.qmatmul.default
_LINEAR_ARGS = tuple(a.name for a in _LINEAR._schema.arguments)


def _linear_args(node: torch.fx.Node) -> dict:
    args = dict(zip(_LINEAR_ARGS, node.args))
    args.update(node.kwargs)
    return args


class ShareActivationQuantization(CustomGraphPass):
    """Post-grad pass: one quantize_pack per (activation, bits, format, group size, K,
    Hadamard mix, clip)."""

    def __init__(self):
        self.rewritten = 0  # linear nodes rewritten by the last call (for tests and logs)

    def uuid(self):
        schemas = sorted(str(s) for s in torch._C._jit_get_all_schemas() if s.name.startswith("apq::"))
        return get_hash_for_files((__file__,)) + hashlib.sha256("\n".join(schemas).encode()).digest()

    # Instances are interchangeable: transformers deep-copies a CompileConfig holding this pass
    # on every generate() call and recompiles when the copy compares unequal to the last one.
    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))

    def __call__(self, graph: torch.fx.Graph) -> None:
        groups = defaultdict(list)
        for node in graph.nodes:
            if node.op == "call_function" and node.target is _LINEAR:
                a = _linear_args(node)
                key = (a["x"], a["K"], a["group_size"], a["a_bits"], a["a_format"], a.get("hadamard"),
                       a.get("a_clip", 1.0))
                groups[key].append(node)
        self.rewritten = 0
        for (x, K, group_size, a_bits, a_format, hadamard, a_clip), nodes in groups.items():
            if len(nodes) >= 2 and isinstance(x, torch.fx.Node) and "val" in x.meta:
                self._share(graph, x, K, group_size, a_bits, a_format, hadamard, a_clip, nodes)
                self.rewritten += len(nodes)
        if self.rewritten:
            graph.lint()

    @staticmethod
    def _share(graph, x, K, group_size, a_bits, a_format, hadamard, a_clip, nodes):
        x_val = x.meta["val"]
        fake_mode = torch._guards.detect_fake_mode([x_val])

        def call(target, args, val=None):
            node = graph.call_function(target, args)
            if val is None:
                with fake_mode:
                    fake_args = torch.fx.node.map_arg(args, lambda n: n.meta["val"])
                    val = target(*fake_args)
            node.meta["val"] = val
            return node

        with graph.inserting_before(nodes[0]):
            x2 = x if x_val.dim() == 2 else call(torch.ops.aten.view.default, (x, [-1, K]))
            packed = call(_QUANTIZE_PACK, (x2, a_bits, a_format, group_size, hadamard, a_clip))
            parts = [call(torch.ops.aten.sym_size.int, (x, d)) if isinstance(s, torch.SymInt) else int(s)
                     for d, s in enumerate(x_val.shape[:-1])]
            qx = [call(operator.getitem, (packed, i), packed.meta["val"][i]) for i in range(4)]
        for node in nodes:
            a = _linear_args(node)
            with graph.inserting_before(node):
                y = call(_QMATMUL, (*qx, a["w_planes"], a["w_rowsum"], a["w_scale"], a["w_offset"], K,
                                    group_size, a.get("bias"), x_val.dtype))
                if x_val.dim() != 2:
                    y = call(torch.ops.aten.view.default, (y, [*parts, a["w_planes"].meta["val"].shape[1]]))
            node.replace_all_uses_with(y)
            graph.erase_node(node)


def compile_options(options: Optional[dict] = None, *, share_activation_quantization: bool = True) -> dict:
    """Inductor ``options`` with :class:`ShareActivationQuantization` installed as the post-grad
    pass (when ``share_activation_quantization``): what :func:`compile` hands to torch.compile,
    and what compile configs built elsewhere (transformers' ``CompileConfig``) should carry."""
    options = dict(options or {})
    if share_activation_quantization:
        if "post_grad_custom_post_pass" in options:
            raise ValueError("options already sets post_grad_custom_post_pass; pass "
                             "share_activation_quantization=False to keep yours")
        options["post_grad_custom_post_pass"] = ShareActivationQuantization()
    return options


def compile(model, *, share_activation_quantization: bool = True, **kwargs):
    """``torch.compile(model, **kwargs)`` with :class:`ShareActivationQuantization` installed
    (on by default; Inductor backend)."""
    if share_activation_quantization:
        kwargs["options"] = compile_options(kwargs.pop("options", None))
    return torch.compile(model, **kwargs)
