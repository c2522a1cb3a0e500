"""What activation clipping buys SmolLM2-135M-Instruct at W4A4: rotated, one-pass GPTQ g64 with
refit, 4-bit activations per token with no clipping, QuaRot's fixed 0.9, 0.85, and the ratio
chosen per layer input on the calibration text (APQConfig.a_clip_search); perplexity on the
table's 4 windows of 512 tokens and on 16 (the 4-window number moves by a point between
neighbouring ratios: the 16-window one ranks them).

    python bench/activation_clip_smollm2.py

Writes bench/results/activation-clip-smollm2.md. About 10 minutes on 2 quiet cores.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time

import torch

from apq_torch import APQConfig, quantize_
from apq_torch.quantization.rotation import RotationConfig
from apq_torch.tools.eval import perplexity
from apq_torch.tools.models import calibration_and_eval_text, decoder_linear_filter, load_smollm2, token_windows

RESULTS = os.path.join(os.path.dirname(__file__), "results")
CLIPS = ("none", "0.9", "0.85", "search")


def main():
    torch.manual_seed(0)
    model, tok = load_smollm2()
    calib_text, eval_text = calibration_and_eval_text()
    rotated = quantize_(model, RotationConfig())
    calib = token_windows(tok, calib_text, 512, 8)
    evaluate = lambda m, windows: perplexity(m, tok, eval_text, 512, windows, progress=False)
    base = {w: evaluate(rotated, w) for w in (4, 16)}
    lines = ["# SmolLM2-135M-Instruct W4A4: activation clipping", "",
             "Written by `bench/activation_clip_smollm2.py`: rotated, one-pass GPTQ (8 calibration windows), "
             "group 64, refit, 4-bit unsigned activations per token; pydoc text, 4 and 16 windows of 512 "
             "tokens. \"search\": APQConfig.a_clip_search (per layer input, on the calibration text). Calibration: "
             "wall clock of quantize_ (an upper bound on a machine shared with other jobs).", "",
             f"fp32 (rotated): {base[4]:.2f} on 4 windows, {base[16]:.2f} on 16.", "",
             "| weights | activation clip | 4 windows | 16 windows | 16 windows vs fp32 | calibration |",
             "|---|---|---:|---:|---:|---:|"]
    for fmt in ("bipolar", "signed"):
        config = APQConfig(w_bits=4, a_bits=4, w_format=fmt, group_size=64, clip_search=True, refit_scales=True,
                           method="gptq")
        for clip in CLIPS:
            c = (dataclasses.replace(config, a_clip_search=True) if clip == "search"
                 else config if clip == "none" else dataclasses.replace(config, a_clip=float(clip)))
            m = copy.deepcopy(rotated)
            t0 = time.perf_counter()
            quantize_(m, c, decoder_linear_filter, calibration=calib, sequential=False)
            seconds = time.perf_counter() - t0
            ppl = {w: evaluate(m, w) for w in (4, 16)}
            print(f"{fmt:8s} clip {clip:6s} {ppl[4]:8.3f} {ppl[16]:8.3f}  {seconds:5.0f} s", flush=True)
            lines.append(f"| W4 {fmt} | {clip} | {ppl[4]:.2f} | {ppl[16]:.2f} | {ppl[16] / base[16]:.2f}x | "
                         f"{seconds:.0f} s |")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "activation-clip-smollm2.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
