"""Run inside vLLM's workers through ``LLM.apply_model`` (this module is pickled by reference,
so the tests put its folder on the workers' PYTHONPATH): count the apq op calls the
plugin's layers make, and report which quantization method each linear layer got."""

from collections import Counter

import apq_torch.ops

COUNTED = ("linear", "quantize_pack", "qmatmul")
CALLS: Counter = Counter()


def _counting(name, op):
    def call(*args, **kwargs):
        CALLS[name] += 1
        return op(*args, **kwargs)

    call.counted = True
    return call


def install(model) -> dict:
    """Wrap the apq ops that APQLinearMethod calls (once per process); reset the counts; return
    {linear layer name: quant method class name}."""
    for name in COUNTED:
        if not getattr(getattr(apq_torch.ops, name), "counted", False):
            setattr(apq_torch.ops, name, _counting(name, getattr(apq_torch.ops, name)))
    CALLS.clear()
    return {n: type(m.quant_method).__name__ for n, m in model.named_modules() if hasattr(m, "quant_method")}


def calls(model) -> dict:
    return dict(CALLS)
