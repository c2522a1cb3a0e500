"""End-to-end speed of a causal LM on the CPU, every contender side by side in one run
(`python -m apq_torch bench --model smollm2`): prefill tokens/s of a 1 x 256 prompt and greedy
decode tokens/s of 64 new tokens with a KV cache, medians of interleaved repetitions, ratios
against fp32 eager and against llama.cpp on the same GGUF file, and a profile of where a
quantized decode step spends its time.

Contenders are "<precision> <loop>": precision fp32, bf16 or an apq setting (W8A8, W4A8, W2A8,
W4A4; bipolar weights, unsigned activations, groups of 64, round to nearest: quality is not
measured here), loop "eager" (transformers' default generate: dynamic cache, eager ops) or
"fast" (tools/generate.py: static cache + compiled decode step). The quantized settings
quantize every decoder linear layer and, by default, lm_head at W8A8 (``lm_head_bits``),
as the GGUF keeps its tied output matrix at Q8_0 while its decoder layers are Q4_1.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .benchmark import cpu_name, interleaved
from .generate import compiled_graphs, prepare_fast_generation

GROUP_SIZE = 64
QUANTIZED = {"W8A8": (8, 8), "W4A8": (4, 8), "W2A8": (2, 8), "W4A4": (4, 4)}  # name: (w_bits, a_bits)
FLOAT = {"fp32": torch.float32, "bf16": torch.bfloat16}
LOOPS = ("eager", "fast")
DEFAULT_CONTENDERS = ("fp32 eager", "fp32 fast", "bf16 fast", "W8A8 fast", "W4A8 eager", "W4A8 fast",
                      "W2A8 fast", "W4A4 fast")
LLAMA_CPP = "llama.cpp Q4_1"
BASELINE = "fp32 eager"
PROFILED = ("W4A8 fast", "W8A8 fast")
# (what, contender, metric, reference, factor): the targets, checked on every run.
TARGETS = (("W4A8 prefill >= 1.5x fp32 eager", "W4A8 fast", "prefill", BASELINE, 1.5),
           ("W4A8 decode >= 2x fp32 eager", "W4A8 fast", "decode", BASELINE, 2.0),
           ("W4A8 decode >= 1.0x llama.cpp Q4_1", "W4A8 fast", "decode", LLAMA_CPP, 1.0),
           ("W8A8 decode >= 1.5x fp32 eager", "W8A8 fast", "decode", BASELINE, 1.5))
# Inductor options of the fast contenders: its C++ kernels show up in the decode profile.
FAST_OPTIONS = {"cpp.enable_kernel_profile": True}
# Tiny random Llama of the CLI smoke run and the tests (same shapes: Inductor's cache is shared).
TINY_LLAMA = dict(layers=2, hidden=128, intermediate=256, vocab=256)


def parse_contender(name: str) -> tuple[str, str]:
    """("W4A8", "fast") from "W4A8 fast"; ValueError naming the choices otherwise."""
    parts = name.split()
    if len(parts) != 2 or parts[0] not in {**FLOAT, **QUANTIZED} or parts[1] not in LOOPS:
        raise ValueError(f"--contenders: {name!r} is not '<precision> <loop>' with precision in "
                         f"{sorted({**FLOAT, **QUANTIZED})} and loop in {list(LOOPS)}")
    return parts[0], parts[1]


def build_model(float_model, precision: str, lm_head_bits: Optional[int]):
    """A copy of ``float_model`` in ``precision`` (fp32/bf16 or an apq W?A? setting)."""
    from ..api import APQConfig, quantize_
    from .models import decoder_linear_filter

    if precision in FLOAT:
        return copy.deepcopy(float_model).to(FLOAT[precision])
    w_bits, a_bits = QUANTIZED[precision]
    config = APQConfig(w_bits=w_bits, a_bits=a_bits, group_size=GROUP_SIZE)
    overrides = {"lm_head": dict(w_bits=lm_head_bits, a_bits=8)} if lm_head_bits else None
    keep = (lambda m, n: decoder_linear_filter(m, n) or n == "lm_head") if lm_head_bits else decoder_linear_filter
    return quantize_(copy.deepcopy(float_model), config, keep, overrides)


class StepClock:
    """Logits processor that records when each new token's logits are ready: the first stamp
    closes the prefill, the others are decode steps. Optionally profiles the decode steps."""

    def __init__(self, profile: bool = False):
        self.stamps, self.profiler = [], None
        self._profile = profile

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        if self._profile and self.profiler is None:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.start()
        return scores


@dataclass
class HFContender:
    """One transformers model driven through generate(): eager (transformers' defaults: dynamic
    cache, no compile) or fast (the model prepared by prepare_fast_generation)."""
    model: torch.nn.Module
    loop: str
    prompt: torch.Tensor
    new_tokens: int

    def generate(self, clock: Optional[StepClock] = None, loop: Optional[str] = None) -> torch.Tensor:
        """The new tokens; ``loop`` "eager", "static eager" (static cache, not compiled) or "fast"."""
        loop = loop or self.loop
        kwargs = dict(max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, do_sample=False,
                      attention_mask=torch.ones_like(self.prompt), logits_processor=[clock] if clock else None,
                      disable_compile=loop != "fast")
        saved = self.model.generation_config
        if loop == "eager":  # transformers' defaults, also on a model prepared for the fast loop
            self.model.generation_config = copy.deepcopy(saved)
            self.model.generation_config.cache_implementation = None
        try:
            with torch.no_grad():
                return self.model.generate(self.prompt, **kwargs)[0, self.prompt.shape[1]:]
        finally:
            self.model.generation_config = saved

    def run(self) -> dict:
        clock = StepClock()
        start = time.perf_counter()
        tokens = self.generate(clock)
        return _timing(start, clock.stamps, tokens.tolist())


def _timing(start: float, stamps: list, tokens: list) -> dict:
    """Prefill seconds (start to the first token's logits) and seconds per decode step."""
    return dict(prefill_s=stamps[0] - start, decode_s=(stamps[-1] - stamps[0]) / (len(stamps) - 1), tokens=tokens)


class LlamaCppContender:
    """llama.cpp (llama-cpp-python) on a GGUF file: the prompt in one eval, then greedy tokens
    one eval at a time (argmax of the last logits), so prefill and decode time the same work."""

    def __init__(self, path: str, prompt: list, new_tokens: int, threads: int):
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=len(prompt) + new_tokens + 8, n_batch=512,
                                   n_threads=threads, n_threads_batch=threads, verbose=False)
        self.prompt, self.new_tokens = prompt, new_tokens

    def _argmax(self) -> int:
        import numpy as np

        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))
        return int(logits.argmax())

    def run(self) -> dict:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(self.prompt)
        stamps, tokens = [time.perf_counter()], [self._argmax()]
        for _ in range(self.new_tokens - 1):
            self.llm.eval(tokens[-1:])
            tokens.append(self._argmax())
            stamps.append(time.perf_counter())
        return _timing(start, stamps, tokens)


def first_difference(a: list, b: list) -> Optional[int]:
    """Index of the first differing token, None when equal."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def profile_decode(contender: HFContender, quantize_pack_s: dict) -> dict:
    """Where one decode step's wall time goes, from torch.profiler over all decode steps of a
    generate() call: apq GEMMs, quantize_pack, lm_head and other float matmuls, attention,
    Inductor's fused kernels, other aten ops, Dynamo's guards, and the rest (Python, dispatch,
    the compiled graph's wrappers: wall time no op recorded). ``quantize_pack_s`` {K: seconds} of a standalone
    quantize_pack of one token estimates what apq::linear spends quantizing its input."""
    clock = StepClock(profile=True)
    contender.generate(clock)
    clock.profiler.stop()
    steps = len(clock.stamps) - 1
    wall = (clock.stamps[-1] - clock.stamps[0]) / steps
    buckets = dict.fromkeys(("apq GEMM (qmatmul, linear)", "apq quantize_pack", "float matmul (lm_head)",
                             "attention (sdpa)", "Inductor fused kernels", "other aten ops", "Dynamo guards"),
                            0.0)
    linear_calls = 0
    for e in clock.profiler.key_averages():
        name, self_s = e.key, e.self_cpu_time_total / 1e6 / steps
        if name in ("apq::qmatmul", "apq::linear"):
            buckets["apq GEMM (qmatmul, linear)"] += self_s
            linear_calls += e.count if name == "apq::linear" else 0
        elif name == "apq::quantize_pack":
            buckets["apq quantize_pack"] += self_s
        elif "cpp_fused" in name:  # before sdpa: a fused kernel's name lists the ops it feeds
            buckets["Inductor fused kernels"] += self_s
        elif "scaled_dot_product" in name:
            buckets["attention (sdpa)"] += self_s
        elif name.endswith(("::mm", "::addmm", "_mm_out", "_addmm_out")):
            buckets["float matmul (lm_head)"] += self_s
        elif name == "TorchDynamo Cache Lookup":
            buckets["Dynamo guards"] += self_s
        elif name.startswith(("aten::", "aoti_torch")):
            buckets["other aten ops"] += self_s
    # apq::linear quantizes inside the op: move an estimate of that to quantize_pack.
    inside = linear_calls / steps * statistics.mean(quantize_pack_s.values()) if linear_calls else 0.0
    buckets["apq GEMM (qmatmul, linear)"] -= inside
    buckets["apq quantize_pack"] += inside
    buckets["Python, dispatch, wrappers (the rest)"] = wall - sum(buckets.values())
    return dict(step_ms=wall * 1e3, steps=steps, ms={k: v * 1e3 for k, v in buckets.items()},
                share={k: v / wall for k, v in buckets.items()})


def quantize_pack_seconds(model, reps: int = 50) -> dict:
    """{K: median seconds} of apq.quantize_pack of one token, for each input width K of the
    model's quantized layers (at their activation bits)."""
    from .. import ops
    from ..api import quantized_layers

    shapes = {(m.in_features, m.config.a_bits, m.config.a_format, m.config.group_size)
              for m in quantized_layers(model).values()}
    out = {}
    for K, bits, fmt, gs in sorted(shapes):
        x = torch.randn(1, K)
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            ops.quantize_pack(x, bits, fmt, gs)
            samples.append(time.perf_counter() - start)
        out[K] = statistics.median(samples)
    return out


def check_targets(rows: dict) -> list:
    out = []
    for what, name, metric, ref, factor in TARGETS:
        if name not in rows or ref not in rows:
            out.append(dict(target=what, ratio=None, met=None, note=f"{name if name not in rows else ref} not run"))
            continue
        ratio = rows[name][f"{metric}_tok_s"] / rows[ref][f"{metric}_tok_s"]
        out.append(dict(target=what, ratio=ratio, met=ratio >= factor))
    return out


def run_model_bench(float_model, prompt: torch.Tensor, contenders, *, new_tokens: int = 64, reps: int = 5,
                    gguf_path: Optional[str] = None, lm_head_bits: Optional[int] = 8, profile=PROFILED,
                    log: Callable[[str], None] = print) -> dict:
    """Times every contender (and llama.cpp on ``gguf_path`` when given) and returns the results
    (rows by contender, targets, decode profiles, machine). The first call of each contender
    is its warm-up (and compile); then ``reps`` interleaved repetitions."""
    parsed = {name: parse_contender(name) for name in contenders}
    if BASELINE not in parsed:
        raise ValueError(f"--contenders must include the baseline {BASELINE!r}")
    load_before = os.getloadavg()
    models, runners = {}, {}
    for name, (precision, loop) in parsed.items():
        if precision not in models:
            log(f"building {precision}")
            models[precision] = build_model(float_model, precision, lm_head_bits)
        model = models[precision]
        if loop == "fast":  # the fast twin gets its own copy so eager runs keep the default config
            model = prepare_fast_generation(copy.deepcopy(model), options=FAST_OPTIONS)
        runners[name] = HFContender(model, loop, prompt, new_tokens)
    if gguf_path:
        runners[LLAMA_CPP] = LlamaCppContender(gguf_path, prompt[0].tolist(), new_tokens, torch.get_num_threads())
    first_call, warm = {}, {}
    for name, runner in runners.items():
        log(f"warm-up of {name}" + (" (compiles the decode step)" if name.endswith("fast") else ""))
        start = time.perf_counter()
        warm[name] = runner.run()
        first_call[name] = time.perf_counter() - start
    graphs_before = compiled_graphs()
    log(f"timing {len(runners)} contenders, {reps} interleaved repetitions")
    samples = interleaved({n: r.run for n, r in runners.items()}, reps, warmup=0)
    recompiles = compiled_graphs() - graphs_before
    rows = {}
    for name, runs in samples.items():
        prefill, decode = statistics.median(r["prefill_s"] for r in runs), statistics.median(r["decode_s"] for r in runs)
        rows[name] = dict(prefill_tok_s=prompt.shape[1] / prefill, decode_tok_s=1 / decode,
                          prefill_ms=prefill * 1e3, decode_ms_per_token=decode * 1e3,
                          first_call_s=first_call[name], tokens=runs[-1]["tokens"])
    base = rows[BASELINE]
    for name, row in rows.items():
        row["prefill_vs_fp32_eager"] = row["prefill_tok_s"] / base["prefill_tok_s"]
        row["decode_vs_fp32_eager"] = row["decode_tok_s"] / base["decode_tok_s"]
        if LLAMA_CPP in rows:
            row["decode_vs_llama_cpp"] = row["decode_tok_s"] / rows[LLAMA_CPP]["decode_tok_s"]
            row["prefill_vs_llama_cpp"] = row["prefill_tok_s"] / rows[LLAMA_CPP]["prefill_tok_s"]
    for name, runner in runners.items():  # greedy tokens of the fast loop against the eager ones
        if isinstance(runner, HFContender) and runner.loop == "fast":
            fast = rows[name]["tokens"]
            rows[name]["first_difference_vs_eager"] = first_difference(fast, runner.generate(loop="eager").tolist())
            rows[name]["first_difference_vs_static_eager"] = first_difference(
                fast, runner.generate(loop="static eager").tolist())
    profiles = {}
    for name in profile:
        if name in runners:
            log(f"profiling the decode steps of {name}")
            qp = quantize_pack_seconds(runners[name].model)
            profiles[name] = dict(profile_decode(runners[name], qp), quantize_pack_one_token_us={
                str(k): v * 1e6 for k, v in qp.items()})
    return dict(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__,
                transformers=_version("transformers"), llama_cpp_python=_version("llama_cpp") if gguf_path else None,
                cpu_kernel=torch.ops.apq._cpu_kernel(""), load_average_before=load_before,
                load_average_after=os.getloadavg(), prompt_tokens=prompt.shape[1], new_tokens=new_tokens,
                reps=reps, group_size=GROUP_SIZE, lm_head_bits=lm_head_bits, recompiles_while_timing=recompiles,
                rows=rows, targets=check_targets(rows), decode_profiles=profiles)


def _version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def markdown(result: dict, title: str) -> str:
    """The results as a Markdown report: contenders, targets, decode profiles."""
    has_llama = any(name == LLAMA_CPP for name in result["rows"])
    lines = [f"# {title}", "",
             f"{result['cpu']}, {result['threads']} threads, torch {result['torch']}, transformers "
             f"{result['transformers']}" + (f", llama-cpp-python {result['llama_cpp_python']}" if has_llama else "") +
             f", apq CPU kernel {result['cpu_kernel']}. Prompt 1 x {result['prompt_tokens']} tokens, "
             f"{result['new_tokens']} greedy new tokens, medians of {result['reps']} interleaved repetitions; "
             f"load average {result['load_average_before'][0]:.1f} before, {result['load_average_after'][0]:.1f} after. "
             f"Quantized: decoder linears at the row's bits (bipolar/unsigned, g{result['group_size']}, RTN), "
             f"lm_head at {'W%dA8' % result['lm_head_bits'] if result['lm_head_bits'] else 'fp32'}; "
             "eager = transformers' default generate, fast = static cache + compiled decode step "
             "(apq_torch.tools.generate).", "",
             "| contender | prefill tok/s | vs fp32 eager | decode tok/s | vs fp32 eager |"
             + (" vs llama.cpp |" if has_llama else "") + " first call s | greedy vs eager |",
             "|---|---:|---:|---:|---:|" + ("---:|" if has_llama else "") + "---:|---|"]
    for name, r in result["rows"].items():
        same = r.get("first_difference_vs_eager", "n/a")
        same = "identical" if same is None else (f"differs from token {same}" if same != "n/a" else "")
        lines.append(f"| {name} | {r['prefill_tok_s']:.1f} | {r['prefill_vs_fp32_eager']:.2f}x | {r['decode_tok_s']:.1f} | "
                     f"{r['decode_vs_fp32_eager']:.2f}x |" + (f" {r['decode_vs_llama_cpp']:.2f}x |" if has_llama else "")
                     + f" {r['first_call_s']:.0f} | {same} |")
    lines += ["", "| target | ratio | met |", "|---|---:|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {'%.2f' % t['ratio'] if t['ratio'] is not None else '-'} | "
                     f"{ {True: 'met', False: 'missed', None: t.get('note', '')}[t['met']] } |")
    for name, p in result["decode_profiles"].items():
        lines += ["", f"Decode step of {name}: {p['step_ms']:.1f} ms (torch.profiler over {p['steps']} steps)", "",
                  "| where | ms per step | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {p['ms'][k]:.2f} | {100 * p['share'][k]:.0f}% |" for k in p["ms"]]
    return "\n".join(lines) + "\n"


def write_results(result: dict, prefix: str, title: str) -> list:
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(prefix + ".md", "w") as f:
        f.write(markdown(result, title))
    return [prefix + ".json", prefix + ".md"]
