"""Integrations with the libraries users already run: transformers (quantization config and
quantizer) and vLLM (a plugin package under integrations/vllm at the repository root)."""
