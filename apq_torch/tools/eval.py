"""Perplexity of a causal LM on a text, in non-overlapping windows."""

from __future__ import annotations

import math
from typing import Optional

import torch


def module_device(model: torch.nn.Module) -> torch.device:
    """Where the model's tensors live (its first parameter or buffer; the CPU if it has none)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def perplexity(model, tokenizer, text: str, seq_len: int = 512, max_windows: Optional[int] = None,
               progress: bool = True, desc: str = "perplexity") -> float:
    """exp(mean next-token NLL) over consecutive windows of ``seq_len`` tokens of ``text``."""
    from tqdm.auto import tqdm

    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    windows = ids.numel() // seq_len
    if max_windows is not None:
        windows = min(windows, max_windows)
    if windows == 0:
        raise ValueError(f"text has {ids.numel()} tokens, fewer than seq_len={seq_len}")
    device = module_device(model)
    nll, count = 0.0, 0
    for w in tqdm(range(windows), desc=desc, disable=not progress, leave=False):
        chunk = ids[w * seq_len:(w + 1) * seq_len].unsqueeze(0).to(device)
        logits = model(chunk).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum")
        nll += loss.item()
        count += seq_len - 1
    return math.exp(nll / count)
