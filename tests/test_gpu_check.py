"""tools/gpu (make gpu-check) without a GPU: the carry folder, the step plan and dry run, the
runner's failure/timeout handling, the bundle that comes back, the scripts' CPU smoke paths,
and the tensor-core probe compiled for sm_90a with the instructions it is meant to issue."""

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest
import torch

import apq_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "gpu"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
gpu_check = importlib.import_module("gpu_check")
results = importlib.import_module("check_report")
runner = importlib.import_module("step_runner")
variants = importlib.import_module("kernel_variants")


def fake_cutlass(tmp_path):
    root = tmp_path / "cutlass"
    (root / "include" / "cutlass").mkdir(parents=True)
    (root / "include" / "cutlass" / "cutlass.h").write_text("// header\n")
    (root / "tools" / "util" / "include" / "cutlass" / "util").mkdir(parents=True)
    (root / "tools" / "util" / "include" / "cutlass" / "util" / "host_tensor.h").write_text("// util\n")
    return root


@pytest.fixture
def carry(tmp_path, monkeypatch):
    folder = tmp_path / "carry"
    monkeypatch.setattr(gpu_check, "CARRY", str(folder))
    return folder


def context(tmp_path, part=1):
    return gpu_check.Context(part, sys.executable, "90a", "test-gpu", 4, str(tmp_path / "work"),
                             str(tmp_path / "results"))


# ---- variants -------------------------------------------------------------------------------------

def test_variant_selection_and_group_support():
    assert variants.select(None) == variants.VARIANTS
    assert variants.select("all") == (variants.TABLE,) + variants.VARIANTS
    assert [v.name for v in variants.select("table wide,swap")] == ["table", "wide,swap"]
    with pytest.raises(SystemExit, match="unknown kernel variant 'huge'"):
        variants.select("huge")
    baseline = next(v for v in variants.VARIANTS if v.name == "baseline")
    assert [g for g in (0, 64, 128, 192, 256) if baseline.supports(g, 90)] == [0, 128, 256]
    assert variants.Variant("wgmma", min_capability=90).supports(0, 80) is False


def test_forced_sets_only_its_variable_and_restores(monkeypatch):
    monkeypatch.setenv("APQ_GEMM_PATH", "fused")
    monkeypatch.delenv("APQ_GEMM_KERNEL", raising=False)
    narrow = next(v for v in variants.VARIANTS if v.name == "narrow,swap,splitk")
    with variants.forced(narrow):
        assert os.environ["APQ_GEMM_KERNEL"] == "narrow,swap,splitk" and "APQ_GEMM_PATH" not in os.environ
    assert os.environ["APQ_GEMM_PATH"] == "fused" and "APQ_GEMM_KERNEL" not in os.environ


# ---- plan, carry folder, dry run --------------------------------------------------------------------

def test_plan_covers_build_tests_sanitizers_and_benchmarks(tmp_path):
    part1 = {s.name: s for s in gpu_check.plan(context(tmp_path, 1))}
    part2 = {s.name: s for s in gpu_check.plan(context(tmp_path, 2))}
    assert list(part1) == ["unpack-carry", "environment", "build", "tests", "memcheck", "racecheck", "synccheck"]
    assert list(part2)[3:] == ["ceilings", "gemm-sweep-decode", "decode-llama7b-shape", "gemm-sweep-prefill"]
    assert part1["build"].env["APQ_CUDA_ARCHS"] == "90a" and part1["build"].env["MAX_JOBS"] == "4"
    for tool in gpu_check.SANITIZERS:
        argv = part1[tool].argv
        assert argv[:3] == ["compute-sanitizer", "--tool", tool] and argv[-3].endswith("sanitize_workload.py")
        assert part1[tool].parallel and part1[tool].env["PYTORCH_NO_CUDA_MEMORY_CACHING"] == "1"
    assert part1["tests"].parallel and "--junitxml" in " ".join(part1["tests"].argv)
    assert not any(s.parallel for s in part2.values()), "timings must not share the machine"
    for step in list(part1.values()) + list(part2.values()):
        scripts = [a for a in step.argv if a.endswith(".py")]
        assert all(os.path.exists(os.path.join(gpu_check.ROOT, p)) for p in scripts), step.name
        assert 0 < step.timeout < 600


def test_prepare_packs_cutlass_headers_into_the_carry_folder(tmp_path, carry, monkeypatch, capsys):
    monkeypatch.setenv("CUTLASS_PATH", str(fake_cutlass(tmp_path)))
    assert gpu_check.prepare() == 0
    with tarfile.open(carry / gpu_check.CUTLASS_TARBALL) as tar:
        names = tar.getnames()
    assert "include/cutlass/cutlass.h" in names and "tools/util/include/cutlass/util/host_tensor.h" in names
    assert json.load(open(carry / "manifest.json"))["tarball_bytes"] > 0
    assert "fits" in capsys.readouterr().out


def test_real_cutlass_headers_fit_the_device_limit(tmp_path, carry, monkeypatch):
    pytest.importorskip("cutlass_library")
    monkeypatch.delenv("CUTLASS_PATH", raising=False)
    assert gpu_check.prepare() == 0
    size = os.path.getsize(carry / gpu_check.CUTLASS_TARBALL)
    assert size + gpu_check.tree_bytes() < gpu_check.DEVICE_TREE_LIMIT
    with tarfile.open(carry / gpu_check.CUTLASS_TARBALL) as tar:
        names = set(tar.getnames())
    assert {"include/cutlass/gemm/device/gemm.h", "include/cute/tensor.hpp"} <= names


def test_dry_run_lists_both_commands_and_checks_the_carry_folder(tmp_path, carry, monkeypatch):
    lines = []
    args = argparse.Namespace(part=None, arch="90a", budget=540)
    assert gpu_check.dry_run(args, lines.append) == 1
    assert "make gpu-check-prepare" in lines[-1]
    monkeypatch.setenv("CUTLASS_PATH", str(fake_cutlass(tmp_path)))
    gpu_check.prepare()
    lines.clear()
    assert gpu_check.dry_run(args, lines.append) == 0
    text = "\n".join(lines)
    for part in (1, 2):
        assert f"gpu_check.py --part {part}" in text
        for step in gpu_check.plan(context(tmp_path, part)):
            assert f"  {step.name} " in text
    assert "fits" in lines[-1]


# ---- runner and bundle --------------------------------------------------------------------------------

def py(code):
    return [sys.executable, "-c", code]


def alive(pid):
    """Whether a process runs (a zombie waiting for a reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_runner_keeps_going_after_failures_and_timeouts(tmp_path):
    ctx = context(tmp_path)
    marker = tmp_path / "grandchild.pid"
    S = runner.Step
    steps = [
        S("fails", py("import sys; print('boom'); sys.exit(3)"), 30, needs_build=False),
        # the timeout must end the step's children too
        S("hangs", py(f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
                      f"'import time; time.sleep(60)']); open({str(marker)!r}, 'w').write(str(p.pid)); "
                      f"time.sleep(60)"), 2, needs_build=False),
        S("side-a", py("import time; time.sleep(1)"), 30, needs_build=False, parallel=True),
        S("side-b", py("import time; time.sleep(1)"), 30, needs_build=False, parallel=True),
        S("build", py("import sys; sys.exit(1)"), 30, needs_build=False),
        S("needs-build", py("pass"), 30),
        S("no-such-tool", ["/nonexistent/compute-sanitizer"], 30, needs_build=False),
        S("passes", py("print('fine')"), 30, needs_build=False),
    ]
    began = time.monotonic()
    outcomes = runner.Runner(ctx.stage, budget=300, echo=lambda *_: None).run_all(steps)
    status = {o.step.name: o.status for o in outcomes}
    assert status == {"fails": "failed", "hangs": "timeout", "side-a": "passed", "side-b": "passed",
                      "build": "failed", "needs-build": "skipped", "no-such-tool": "failed", "passes": "passed"}
    side = [o.wall_s for o in outcomes if o.step.name.startswith("side")]
    assert time.monotonic() - began < 20 and max(side) < 3  # the two side steps ran together
    time.sleep(0.5)
    assert not alive(int(marker.read_text()))
    assert "boom" in open(next(o.log for o in outcomes if o.step.name == "fails")).read()


def test_budget_skips_what_no_longer_fits(tmp_path):
    outcomes = runner.Runner(str(tmp_path), budget=runner.BUDGET_RESERVE + 5, echo=lambda *_: None) \
        .run_all([runner.Step("late", py("pass"), 30, needs_build=False)])
    assert outcomes[0].status == "skipped" and "budget" in outcomes[0].note


def test_bundle_returns_few_files_that_untar_in_place(tmp_path):
    ctx = context(tmp_path, 2)
    result = ctx.result("gemm-decode")
    junit = os.path.join(ctx.stage, "junit-tests.xml")
    steps = [runner.Step("writes", py(f"open({result!r}, 'w').write('{{}}'); open({junit!r}, 'w').write('<x/>')"),
                         30, needs_build=False, outputs=(result, junit)),
             runner.Step("fails", py("import sys; sys.exit(2)"), 30, needs_build=False)]
    os.makedirs(ctx.results_dir)
    outcomes = runner.Runner(os.path.join(ctx.stage, "logs"), 300, echo=lambda *_: None).run_all(steps)
    rep = results.report(ctx, outcomes, time.monotonic())
    assert rep["failed"] == ["fails"]
    out = tmp_path / "OUT"
    written = results.bundle(ctx, outcomes, rep, str(out))
    assert sorted(os.listdir(out)) == ["junit-part2.xml", "log-part2.txt", "results-part2.tar.gz", "summary-part2.md"]
    assert len(written) <= 8 and all(os.path.getsize(p) < 16 << 20 for p in written)
    with tarfile.open(out / "results-part2.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"bench/results/test-gpu-gemm-decode.json", "bench/results/test-gpu-check-part2.json",
            "build/gpu-check/part2/logs/fails.log", "build/gpu-check/part2/junit-tests.xml"} <= names
    summary = (out / "summary-part2.md").read_text()
    assert "FAILED: fails" in summary and "| writes | passed |" in summary
    assert "===== fails: failed" in (out / "log-part2.txt").read_text()


def test_main_exit_status_and_files_without_a_gpu(tmp_path, carry, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "OUT"))
    argv = ["--part", "1", "--only", "unpack-carry", "--results-dir", str(tmp_path / "r"),
            "--work-dir", str(tmp_path / "w")]
    assert gpu_check.main(argv) == 1  # nothing carried: the unpack step fails
    assert "FAILED: unpack-carry" in (tmp_path / "OUT" / "summary-part1.md").read_text()
    monkeypatch.setenv("CUTLASS_PATH", str(fake_cutlass(tmp_path)))
    gpu_check.prepare()
    monkeypatch.setattr(gpu_check, "SCRATCH", str(tmp_path / "scratch"))
    assert gpu_check.main(argv) == 0
    assert (tmp_path / "scratch" / "cutlass" / "include" / "cutlass" / "cutlass.h").exists()
    with pytest.raises(SystemExit):
        gpu_check.main(["--part", "1", "--only", "no-such-step"])


def test_junit_and_sanitizer_summaries_are_read(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite tests="10" failures="1" errors="0" skipped="3">'
                   '<testcase classname="tests.test_x" name="test_a"><failure message="assert 1 == 2">'
                   'trace</failure></testcase></testsuite></testsuites>')
    assert results.junit(str(xml)) == dict(tests=10, failures=1, errors=0, skipped=3, passed=6,
                                           failed_tests=["tests.test_x::test_a: assert 1 == 2"])
    log = tmp_path / "s.log"
    log.write_text("========= Invalid __global__ read\n========= ERROR SUMMARY: 2 errors\n")
    assert results.sanitizer_errors(str(log)) == 2
    log.write_text("killed before the end\n")
    assert results.sanitizer_errors(str(log)) is None


def test_summary_shows_headline_numbers_of_partial_results(tmp_path):
    decode = tmp_path / "gpu-decode.json"
    decode.write_text(json.dumps(dict(head={"eager": 1e-4}, results=[
        dict(variant="W4A8 g128", mode="compile", layers=4, tokens_per_s=900.0, per_layer_s=2.5e-5,
             tokens_per_s_32_layers=1100.0, prefill_cosine_vs_fp16=0.998, cudagraph_skips=0),
        dict(variant="W2A8 g128", mode="apq-compile", error="RuntimeError: boom")])))
    sweep = tmp_path / "gpu-gemm-decode.json"
    sweep.write_text(json.dumps(dict(copy_gbs=3000, results=[
        dict(M=1, N=4096, K=4096, w_bits=4, a_bits=8, group_size=128, errors={}, best="narrow,swap,splitk", best_s=2e-5,
             vs_cublas_fp16=3.1, copy_fraction=0.7)])))
    broken = tmp_path / "gpu-ceilings.json"
    broken.write_text('{"probe": [{"probe": "mma')  # cut off by a timeout
    rep = dict(part=2, gpu="gpu", arch="90a", python="3.12", wall_s=1, tests={}, failed=["decode"], steps=[
        dict(name=n, status="passed", wall_s=1, note="", outputs=[str(p)])
        for n, p in (("decode", decode), ("sweep", sweep), ("ceilings", broken), ("tests", tmp_path / "j.xml"))])
    text = results.summary_markdown(rep)
    assert "W4A8 g128 compile: 900 tok/s with 4 layers, 25 us/layer, 1100 tok/s at 32 layers" in text
    assert "W2A8 g128 apq-compile: ERROR RuntimeError: boom" in text
    assert "M=1 N=K=4096 W4A8 g128: best narrow,swap,splitk 20.0 us, 3.10x cuBLAS fp16, 70% of copy" in text
    assert text.count("(no result file)") == 1 and "j.xml" not in text  # junit is counted, not digested
    assert text.rstrip().endswith("FAILED: decode")


# ---- the scripts' CPU paths -------------------------------------------------------------------------

def test_sanitize_workload_runs_its_calls_on_the_cpu(tmp_path):
    workload = importlib.import_module("sanitize_workload")
    report = tmp_path / "w.json"
    assert workload.main(["--device", "cpu", "--quick", "--variants", "baseline", "--json", str(report)]) == 0
    result = json.load(open(report))
    assert result["shapes_done"] == result["shapes"] == 2
    assert result["counts"]["ok"] > 20 and result["counts"]["mismatch"] == result["counts"]["error"] == 0
    full = workload.cases(quick=False)
    assert {(M, K) for M, K, _ in full} >= {(M, K) for M in workload.MS for K in workload.KS}
    check = workload.Checker("cpu")  # a wrong result is reported, not hidden
    check.run("wrong", lambda: torch.ones(3, dtype=torch.int32), torch.zeros(3, dtype=torch.int32), exact=True)
    check.run("off", lambda: torch.ones(3), torch.ones(3) * 1.01, exact=False)
    check.run("raises", lambda: apq_torch.unpack(torch.zeros(2, 1, 8, dtype=torch.int32), -1), None, exact=True)
    assert check.counts == {"ok": 0, "mismatch": 2, "error": 1}


def test_gemm_sweep_point_on_the_cpu():
    bench = importlib.import_module("bench_cuda_gemm")
    assert bench.parse_pairs("4096x4096,11008x4096", "x") == [(4096, 4096), (11008, 4096)]
    base = dict(cublas_fp16_s=2e-3, int_mm_s=1e-3, int_mm_rows=32)
    row = bench.bench_point(lambda fn: (fn(), 1e-3)[1], 3, 40, 300, 4, 8, 128, variants.select("all"), 90,
                            1e12, base, device="cpu")
    assert set(row["times_s"]) == {"table", *(v.name for v in variants.VARIANTS)}  # capability 90: all of them
    assert row["vs_cublas_fp16"] == pytest.approx(2.0) and not row["errors"]
    row = bench.bench_point(lambda fn: (fn(), 1e-3)[1], 3, 40, 300, 4, 8, 64, variants.select(None), 90,
                            1e12, base, device="cpu")
    assert "baseline" not in row["times_s"]  # CUTLASS's groups are multiples of 128


def test_decode_stack_kv_cache_matches_a_full_forward():
    decode = importlib.import_module("decode_bench")
    shape = decode.Shape(hidden=128, intermediate=192, heads=4, vocab=50, layers=2, max_seq=12)
    model = decode.build(shape, None, seed=0, device="cpu", dtype=torch.float32)
    tokens = torch.randint(0, shape.vocab, (1, 10))
    with torch.no_grad():
        full = model(tokens, torch.arange(10))
        model(tokens[:, :6], torch.arange(6))
        steps = [model(tokens[:, i:i + 1], torch.arange(i, i + 1)) for i in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 6:], rtol=1e-5, atol=1e-5)
    quantized = decode.build(shape, apq_torch.APQConfig(w_bits=4, a_bits=8, group_size=64), seed=0, device="cpu",
                             dtype=torch.float32)
    assert sum(isinstance(m, apq_torch.APQLinear) for m in quantized.modules()) == 2 * 7
    with torch.no_grad():
        q = quantized(tokens, torch.arange(10))
    assert decode.cosine(q, full) > 0.95 and decode.layer_bytes(quantized) < decode.layer_bytes(model) / 3


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_tensor_core_probe_compiles_for_sm90a_with_the_intended_instructions(tmp_path):
    ceilings = importlib.import_module("ceilings")
    if not (ceilings.find_tool("cuobjdump") and ceilings.find_tool("nvdisasm")):
        pytest.skip("cuobjdump / nvdisasm not found (nvidia-cuda-cuobjdump, triton)")
    out = tmp_path / "c.json"
    assert ceilings.main(["--arch", "90a", "--compile-only", "--build-dir", str(tmp_path), "--out", str(out)]) == 0
    sass = json.load(open(out))["sass"]
    assert set(sass) == set(ceilings.SASS_MMA_SYNC + ceilings.SASS_WGMMA) and min(sass.values()) > 0
    listing = subprocess.run([ceilings.find_tool("cuobjdump"), "--list-elf", str(tmp_path / "tc_ceiling")],
                             capture_output=True, text=True, check=True).stdout
    assert "sm_90a" in listing


def test_decode_bench_main_writes_every_variant(tmp_path):
    decode = importlib.import_module("decode_bench")
    out = tmp_path / "decode.json"
    assert decode.main(["--tiny", "--layers", "1", "--prompt", "4", "--steps", "2", "--warmup", "1",
                        "--modes", "eager", "--out", str(out)]) == 0
    rows = json.load(open(out))["results"]
    assert [(r["variant"], r["mode"]) for r in rows] == [("fp16", "eager"), ("W4A8 g128", "eager"),
                                                        ("W2A8 g128", "eager")]
    assert all(r["finite"] and r["tokens_per_s"] > 0 for r in rows)


def test_gemm_sweep_refuses_to_time_a_variant_that_disagrees(monkeypatch):
    bench = importlib.import_module("bench_cuda_gemm")
    real = apq_torch.qmatmul

    def broken_on_baseline(*args):
        y = real(*args)
        return y * 2 if os.environ.get("APQ_GEMM_PATH") == "baseline" else y

    monkeypatch.setattr(apq_torch, "qmatmul", broken_on_baseline)
    base = dict(cublas_fp16_s=2e-3, int_mm_s=1e-3, int_mm_rows=32)
    row = bench.bench_point(lambda fn: (fn(), 1e-3)[1], 5, 33, 256, 2, 8, 0, variants.select("all"), 90, 1e12,
                            base, device="cpu")
    assert "baseline" not in row["times_s"] and "differs from table" in row["errors"]["baseline"]
    assert set(row["times_s"]) == {"table", *(v.name for v in variants.VARIANTS)} - {"baseline"}
