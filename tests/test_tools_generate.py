"""tools/generate.py: generate() with a static cache and a compiled decode step gives the eager
quantized model's greedy tokens, and compiles the step once (no recompile over 64 steps, nor
in a later call with another prompt)."""

import pytest
import torch

from apq_torch.tools.generate import compiled_graphs, prepare_fast_generation
from apq_torch.tools.model_bench import FAST_OPTIONS, TINY_LLAMA, build_model
from apq_torch.tools.models import tiny_llama

pytest.importorskip("transformers")
NEW_TOKENS = 64


def greedy(model, prompt):
    with torch.no_grad():
        return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                              min_new_tokens=NEW_TOKENS, do_sample=False)


def test_fast_generation_matches_eager_and_compiles_once():
    torch._dynamo.reset()
    # The CLI smoke run's W4A8 model and options (tests/test_tools_cli.py): one Inductor compile for both.
    model = build_model(tiny_llama(**TINY_LLAMA), "W4A8", lm_head_bits=8)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, TINY_LLAMA["vocab"], (1, n), generator=gen) for n in (8, 5)]
    eager = [greedy(model, p) for p in prompts]
    prepare_fast_generation(model, options=FAST_OPTIONS)
    before = compiled_graphs()  # a process-wide count: other tests' graphs are in it
    fast = greedy(model, prompts[0])
    assert compiled_graphs() - before == 1, "the decode step recompiled during the 64 steps"
    assert torch.equal(fast, eager[0])
    assert torch.equal(greedy(model, prompts[1]), eager[1])  # shorter prompt: same cache, same graph
    assert compiled_graphs() - before == 1, "a second generate() call recompiled the decode step"


def test_prepare_fast_generation_errors():
    with pytest.raises(ValueError, match="generate"):
        prepare_fast_generation(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="max_cache_len"):
        prepare_fast_generation(tiny_llama(**TINY_LLAMA), max_cache_len=0)


def test_max_cache_len_fixes_the_cache():
    model = prepare_fast_generation(tiny_llama(**TINY_LLAMA), max_cache_len=100)
    assert model.generation_config.cache_implementation == "static"
    assert model.generation_config.max_cache_len == 100
    assert model.generation_config.compile_config.options["cpp_wrapper"] is True
