"""Perplexity: exp of the mean next-token NLL, on any causal LM, with or without buffers."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from apq_torch.tools.eval import module_device, perplexity


class Bigram(nn.Module):
    """A causal LM with parameters only (no buffers): logits of the next token from this one."""

    def __init__(self, vocab=11):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, ids):
        return SimpleNamespace(logits=self.table(ids))


def tokenizer(text, return_tensors="pt"):
    return SimpleNamespace(input_ids=torch.tensor([[ord(c) % 11 for c in text]]))


def test_perplexity_of_a_model_without_buffers_is_exp_mean_nll():
    torch.manual_seed(0)
    model = Bigram()
    assert not list(model.buffers())
    text = "the quick brown fox jumps over the lazy dog" * 3
    ids = tokenizer(text).input_ids[0]
    windows = ids.numel() // 16
    nll = 0.0
    for w in range(windows):
        chunk = ids[w * 16:(w + 1) * 16]
        logp = torch.log_softmax(model.table(chunk[:-1]), -1)
        nll -= logp.gather(1, chunk[1:, None]).sum().item()
    want = math.exp(nll / (windows * 15))
    assert perplexity(model, tokenizer, text, seq_len=16, progress=False) == pytest.approx(want, rel=1e-6)


def test_module_device_of_an_empty_module_is_the_cpu():
    assert module_device(nn.Sequential()) == torch.device("cpu")
    with pytest.raises(ValueError, match="fewer than seq_len"):
        perplexity(Bigram(), tokenizer, "abc", seq_len=16, progress=False)
