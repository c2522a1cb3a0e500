# apq_torch's own API: quantize_ a model in memory, save and load the packed weights.
# python examples/quantize_model.py FLOAT_DIR OUT_FILE
import sys

import torch
from transformers import AutoModelForCausalLM

import apq_torch
from apq_torch import APQConfig, quantize_
from apq_torch.tools.models import decoder_linear_filter

float_dir, out_file = sys.argv[1:3]
model = AutoModelForCausalLM.from_pretrained(float_dir)
quantize_(model, APQConfig(w_bits=4, a_bits=8, group_size=64), filter_fn=decoder_linear_filter)
ids = torch.tensor([[1, 2, 3, 4]])
tokens = model.generate(ids, max_new_tokens=8, do_sample=False)

apq_torch.save_quantized(model, out_file)
again = apq_torch.load_quantized(AutoModelForCausalLM.from_pretrained(float_dir), out_file)
assert torch.equal(again.generate(ids, max_new_tokens=8, do_sample=False), tokens)
print(tokens[0].tolist())
