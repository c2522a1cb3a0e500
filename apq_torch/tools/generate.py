"""Fast ``generate()`` for Hugging Face causal LMs, quantized or not, on the CPU.

Eager decoding pays Python and dispatch costs for every one of the hundreds of ops in a decode
step. transformers already knows how to avoid that: with a static KV cache (fixed-shape key
and value tensors updated in place) every decode step has the same shapes, and ``generate()``
then runs the step through ``torch.compile`` per the generation config's ``CompileConfig``,
while the prefill stays eager (so new prompt lengths never recompile). It does so on CUDA by
default and on the CPU when asked. :func:`prepare_fast_generation` asks, with what helps here:

- ``fullgraph=True, dynamic=False``: one graph for the whole step, specialised to its shapes;
- Inductor's ``cpp_wrapper``: the step's host code is generated C++ instead of Python, which
  took per-step overhead of a small quantized Llama from ~6 ms to ~2 ms on 2 cores;
- apq_torch.compile's pass that quantizes each shared activation once (q/k/v, gate/up).

It lives in tools, not in the model API, because it configures transformers' generation,
not an apq_torch module: it works the same for a float model.
"""

from __future__ import annotations

from typing import Optional

import torch


def prepare_fast_generation(model, *, cpp_wrapper: bool = True, max_cache_len: Optional[int] = None,
                            share_activation_quantization: bool = True, options: Optional[dict] = None):
    """Make ``model.generate()`` use a static KV cache and a compiled decode step; returns ``model``.

    ``max_cache_len`` fixes the cache length for every call (else transformers sizes it to the
    longest call so far, and a longer call recompiles the step once). ``options`` are more
    Inductor options. The first ``generate()`` compiles the step (minutes for a 30-layer model
    on 2 cores); later calls with the same batch size and cache length reuse it.
    """
    from transformers import CompileConfig

    from ..api.compile import compile_options  # loads Inductor

    if not hasattr(model, "generation_config") or not hasattr(model, "generate"):
        raise ValueError("model must be a transformers model with generate() (a PreTrainedModel)")
    if max_cache_len is not None and max_cache_len < 1:
        raise ValueError(f"max_cache_len must be a positive number of tokens, got {max_cache_len}")
    opts = compile_options(options, share_activation_quantization=share_activation_quantization)
    if cpp_wrapper:
        # The wrapper of a 30-layer model is ~1 MB of C++: built apart from the kernels, at -O1
        # instead of -O3, it compiles in a fraction of the time (the kernels keep -O3).
        opts.update(cpp_wrapper=True, cpp_wrapper_build_separate=True)
    # mode=None: torch.compile accepts a mode or options, not both (CompileConfig defaults to a mode).
    config = CompileConfig(fullgraph=True, dynamic=False, backend="inductor", mode=None, options=opts)
    config._compile_all_devices = True  # transformers' switch for compiling off CUDA
    gen = model.generation_config
    gen.cache_implementation = "static"
    gen.compile_config = config
    if max_cache_len is not None:
        gen.max_cache_len = max_cache_len
    return model


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far (``torch._dynamo.reset()`` does not clear
    this count: compare two readings)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]
