# vLLM: serve the folder that save_pretrained wrote (needs vLLM and the plugin in integrations/vllm).
# python examples/vllm_generate.py OUT_DIR [TENSOR_PARALLEL_SIZE]      (or: vllm serve OUT_DIR)
import sys

from vllm import LLM, SamplingParams

if __name__ == "__main__":  # vLLM starts worker processes
    tp = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    llm = LLM(sys.argv[1], tensor_parallel_size=tp, dtype="float32")  # float32: the numbers transformers computes
    out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=8))
    print(out[0].outputs[0].text)
