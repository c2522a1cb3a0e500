"""What a gpu_check part leaves behind: its JSON report (steps, test counts and failures,
sanitizer errors), a markdown summary with the headline numbers of each result file, and the
bundle the device tool brings back from $OUT: the summary, the combined log, a tarball to untar
at the repo root, and the junit xml of the test suite where there is one."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

from step_runner import describe

LOG_TAIL_BYTES = 2 << 20  # per step in the combined log; the tarball keeps whole logs


def junit(path: str) -> dict:
    """Counts of a junit xml, and the first 30 failed or erroring tests."""
    if not os.path.exists(path):
        return {}
    out = dict(tests=0, failures=0, errors=0, skipped=0)
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for key in out:
            out[key] += int(suite.get(key, 0))
    out["passed"] = out["tests"] - out["failures"] - out["errors"] - out["skipped"]
    failed = []
    for case in root.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            message = (bad.get("message") or "").splitlines()[0][:160] if bad.get("message") else ""
            failed.append(f"{case.get('classname')}::{case.get('name')}: {message}")
    out["failed_tests"] = failed[:30]
    return out


def sanitizer_errors(log: str):
    """compute-sanitizer's 'ERROR SUMMARY: N errors' (None when it did not get that far)."""
    if not log or not os.path.exists(log):
        return None
    with open(log, errors="replace") as f:
        found = re.findall(r"ERROR SUMMARY: (\d+) error", f.read())
    return int(found[-1]) if found else None


def load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def report(ctx, outcomes: list, started: float) -> dict:
    steps = []
    for o in outcomes:
        row = dict(name=o.step.name, status=o.status, exit=o.rc, wall_s=round(o.wall_s, 1),
                   timeout_s=o.step.timeout, command=describe(o.step), note=o.note, outputs=list(o.step.outputs))
        if o.step.argv[0] == "compute-sanitizer":
            row["sanitizer_errors"] = sanitizer_errors(o.log)
        steps.append(row)
    try:
        import torch

        versions = dict(torch=torch.__version__, cuda=torch.version.cuda)
    except ImportError:
        versions = {}
    return dict(part=ctx.part, gpu=ctx.gpu, arch=ctx.arch, python=sys.version.split()[0], **versions,
                wall_s=round(time.monotonic() - started, 1), tests=junit(os.path.join(ctx.stage, "junit-tests.xml")),
                steps=steps, failed=[s["name"] for s in steps if s["status"] != "passed"])


# ---- headline numbers of each result file (each tolerates a partial or missing file) -------------

def digest_workload(data) -> list:
    c = data["counts"]
    return [f"{data.get('shapes_done', '?')}/{data.get('shapes', '?')} shapes: {c['ok']} calls ok, "
            f"{c['mismatch']} mismatched, {c['error']} errors"] + [f"  {line}" for line in data["failures"][:10]]


def digest_ceilings(data) -> list:
    lines = [f"{row['probe']}: {row['instr_per_clk_sm']:.3f} instr/clk/SM, {row['tops']:.0f} TOPS"
             if "probe" in row and "tops" in row else json.dumps(row) for row in data.get("probe", [])]
    torch_part = data.get("torch", {})
    if "copy_gbs" in torch_part:
        lines.append(f"device-to-device copy: {torch_part['copy_gbs']:.0f} GB/s")
    for row in torch_part.get("matmul", [])[:1]:
        lines.append(f"{row['M']}x{row['N']}x{row['K']}: cuBLAS fp16 {row['cublas_fp16_tflops']:.0f} TFLOP/s, "
                     f"torch._int_mm {row['int_mm_tops']:.0f} TOPS")
    if "error" in torch_part:
        lines.append(f"torch ceilings failed: {torch_part['error']}")
    return lines


def digest_gemm(data) -> list:
    rows = data.get("results", [])
    lines = [f"{len(rows)} points, copy {data.get('copy_gbs', 0):.0f} GB/s; "
             f"{sum(bool(r['errors']) for r in rows)} with errors"]
    for r in rows:
        if r["w_bits"] in (4, 2) and r["a_bits"] == 8 and r["group_size"] == 128 and r["N"] == r["K"] and "best" in r:
            lines.append(f"  M={r['M']} N=K={r['K']} W{r['w_bits']}A8 g128: best {r['best']} {r['best_s'] * 1e6:.1f} us, "
                         f"{r['vs_cublas_fp16']:.2f}x cuBLAS fp16, {r['copy_fraction'] * 100:.0f}% of copy")
    return lines


def digest_decode(data) -> list:
    lines = [f"head (embedding + lm_head) s/token: {data.get('head')}"]
    for r in data.get("results", []):
        if "error" in r:
            lines.append(f"  {r['variant']} {r['mode']}: ERROR {r['error'][:200]}")
        else:
            lines.append(f"  {r['variant']} {r['mode']}: {r['tokens_per_s']:.0f} tok/s with {r['layers']} layers, "
                         f"{r['per_layer_s'] * 1e6:.0f} us/layer, {r['tokens_per_s_32_layers']:.0f} tok/s at 32 "
                         f"layers; cos vs fp16 {r['prefill_cosine_vs_fp16']:.4f}"
                         + (f"; CUDA graph skips {r['cudagraph_skips']}" if r.get("cudagraph_skips") else ""))
    return lines


DIGESTS = (("sanitize-", digest_workload), ("-ceilings.json", digest_ceilings), ("-gemm-", digest_gemm),
           ("-decode.json", digest_decode))


def digest(path: str) -> list:
    fn = next((fn for key, fn in DIGESTS if key in os.path.basename(path)), None)
    if fn is None:
        return []
    data = load(path)
    if data is None:
        return ["(no result file)"]
    try:
        return fn(data)
    except (KeyError, TypeError, ValueError) as e:
        return [f"(unreadable: {type(e).__name__}: {e})"]


def summary_markdown(rep: dict) -> str:
    lines = [f"# gpu-check part {rep['part']} on {rep['gpu']} (sm_{rep['arch']}), {rep['wall_s']:.0f} s", "",
             f"python {rep['python']}, torch {rep.get('torch')}, CUDA {rep.get('cuda')}", "",
             "| step | status | wall s | note |", "|---|---|---:|---|"]
    for s in rep["steps"]:
        note = s["note"]
        if s.get("sanitizer_errors") is not None:
            note = f"{s['sanitizer_errors']} sanitizer errors {note}"
        lines.append(f"| {s['name']} | {s['status']} | {s['wall_s']} | {note.strip()} |")
    t = rep["tests"]
    if t:
        lines += ["", f"tests: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
                      f"{t['skipped']} skipped"] + [f"- {name}" for name in t["failed_tests"]]
    for s in rep["steps"]:
        for path in s["outputs"]:
            body = digest(path)
            if body:
                lines += ["", f"## {s['name']}: {os.path.basename(path)}", "", "```", *body, "```"]
    lines += ["", "FAILED: " + ", ".join(rep["failed"]) if rep["failed"] else "all steps passed"]
    return "\n".join(lines) + "\n"


def bundle(ctx, outcomes: list, rep: dict, out_dir: str | None) -> list:
    """Writes the part's JSON and summary; with out_dir, the (at most 4) files that come back from there."""
    os.makedirs(ctx.results_dir, exist_ok=True)
    part_json = ctx.result(f"check-part{ctx.part}")
    with open(part_json, "w") as f:
        json.dump(rep, f, indent=1)
    summary = summary_markdown(rep)
    with open(os.path.join(ctx.stage, "summary.md"), "w") as f:
        f.write(summary)
    if not out_dir:
        return [part_json, os.path.join(ctx.stage, "summary.md")]
    os.makedirs(out_dir, exist_ok=True)
    written = [os.path.join(out_dir, f"summary-part{ctx.part}.md"), os.path.join(out_dir, f"log-part{ctx.part}.txt"),
               os.path.join(out_dir, f"results-part{ctx.part}.tar.gz")]
    with open(written[0], "w") as f:
        f.write(summary)
    with open(written[1], "w") as log:
        for o in outcomes:
            log.write(f"\n===== {o.step.name}: {o.status} ({o.wall_s:.1f} s) {o.note}\n")
            if o.log:
                with open(o.log, errors="replace") as f:
                    log.write(f.read()[-LOG_TAIL_BYTES:])
    with tarfile.open(written[2], "w:gz") as tar:
        files = [part_json] + [p for o in outcomes for p in o.step.outputs] + [o.log for o in outcomes]
        for path in dict.fromkeys(files):
            if path and os.path.exists(path):
                tar.add(path, arcname=ctx.arcname(path))
    junit_xml = os.path.join(ctx.stage, "junit-tests.xml")
    if os.path.exists(junit_xml):  # also on its own, readable without untarring
        written.append(os.path.join(out_dir, f"junit-part{ctx.part}.xml"))
        shutil.copyfile(junit_xml, written[-1])
    return written
