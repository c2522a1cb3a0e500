"""The README's ways in run as written: examples/quantize_model.py (quantize_, save, load) and
examples/transformers_checkpoint.py (from_pretrained with quantization_config, save_pretrained,
reload), on a small random Llama with a word-level tokenizer (no download). Each example
asserts its own reload is bit-identical. examples/vllm_generate.py runs in the vLLM stage
(integrations/vllm/tests)."""

import os
import runpy
import sys

import pytest

pytest.importorskip("transformers")
from apq_torch.tools.models import tiny_llama, tiny_tokenizer  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
VOCAB = 64


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("float")
    tiny_llama(layers=2, hidden=128, intermediate=192, vocab=VOCAB).save_pretrained(path)
    tiny_tokenizer(VOCAB).save_pretrained(path)
    return path


def run_example(name, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", [name, *map(str, argv)])
    runpy.run_path(os.path.join(EXAMPLES, name), run_name="__main__")


def test_quantize_model_example(float_dir, tmp_path, monkeypatch, capsys):
    run_example("quantize_model.py", monkeypatch, float_dir, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").is_file()
    assert capsys.readouterr().out.strip().startswith("[1, 2, 3, 4,")  # the prompt, then the generated ids


def test_transformers_checkpoint_example(float_dir, tmp_path, monkeypatch, capsys):
    run_example("transformers_checkpoint.py", monkeypatch, float_dir, tmp_path / "apq")
    assert capsys.readouterr().out.strip()  # the decoded continuation
    assert (tmp_path / "apq" / "config.json").is_file() and list((tmp_path / "apq").glob("*.safetensors"))
