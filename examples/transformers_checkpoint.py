# transformers: quantize on load, save_pretrained, reload with no extra argument.
# python examples/transformers_checkpoint.py FLOAT_DIR OUT_DIR
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from apq_torch.integrations.transformers import APQTransformersConfig

float_dir, out_dir = sys.argv[1:3]
config = APQTransformersConfig(w_bits=4, a_bits=8, group_size=64)  # GPTQ: method="gptq", calibration=[ids, ...]
model = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=config)
tokenizer = AutoTokenizer.from_pretrained(float_dir)
ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
tokens = model.generate(ids, max_new_tokens=8, do_sample=False)

model.save_pretrained(out_dir)  # safetensors shards + config.json with quant_method "apq"
tokenizer.save_pretrained(out_dir)
reloaded = AutoModelForCausalLM.from_pretrained(out_dir)  # `import apq_torch` is all it needs
assert torch.equal(reloaded.generate(ids, max_new_tokens=8, do_sample=False), tokens)
print(tokenizer.decode(tokens[0, ids.shape[1]:]))
