"""vLLM plugin for apq_torch checkpoints (``quant_method: "apq"`` in config.json, as written by
transformers' ``save_pretrained`` through apq_torch.integrations.transformers).

vLLM calls :func:`register` in every process it starts (entry point group
``vllm.general_plugins``), so ``vllm serve DIR`` and ``LLM(DIR)`` need no extra argument.
"""


def register() -> None:
    """Register the "apq" quantization config with vLLM (safe to call more than once)."""
    from .config import register_config

    register_config()
