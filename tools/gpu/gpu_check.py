"""make gpu-check: everything a lent GPU machine (H100 / H200: python3 with torch 2.11, nvcc 13,
ninja, compute-sanitizer; no network, no pip index) runs, in two device commands of under 10
minutes each. Nothing is installed there: the build is in place and CUTLASS's headers travel
in the git-ignored carry folder .gpu-carry/.

Here, once per checkout, with a python that has the nvidia-cutlass package (the project venv):

    make gpu-check-prepare        # = .venv/bin/python tools/gpu/gpu_check.py --prepare
    python3 tools/gpu/gpu_check.py --dry-run    # both commands' steps; checks the carry folder

Then paste into the device tool, one call after the other (each ends within about 9 minutes):

    run(command="PYTHONUNBUFFERED=1 python3 tools/gpu/gpu_check.py --part 1", carry=[".gpu-carry"], timeout_s=600)
    run(command="PYTHONUNBUFFERED=1 python3 tools/gpu/gpu_check.py --part 2", carry=[".gpu-carry"], timeout_s=600)

Part 1 (correctness): build for the GPU's arch with every core; then, side by side, the whole
test suite on the GPU (junit xml) and compute-sanitizer memcheck / racecheck / synccheck over
every GEMM variant and pack kernel (tools/gpu/sanitize_workload.py).
Part 2 (speed, one step at a time): build (seconds if the machine is still warm); tensor-core
ceilings (tools/gpu/ceilings.py); the GEMM sweep at decode sizes; the Llama-7B-shaped decode
benchmark (tools/gpu/decode_bench.py); the GEMM sweep at prefill sizes.

Each step has a timeout, and all of them share one budget (--budget, 540 s): a step that fails
or times out does not stop the others (steps that need the build are skipped when it failed).
Results land in bench/results/<gpu>-*.json and build/gpu-check/part<N>/; with $OUT set (the
device tool) they are bundled as $OUT/summary-part<N>.md, $OUT/log-part<N>.txt,
$OUT/results-part<N>.tar.gz (untar it at the repo root) and, in part 1, $OUT/junit-part1.xml.
The summary is also printed last. Exit status 1 when any step failed;
the summary says which. One step again on a still-warm machine: --part 1 --only racecheck.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_report import bundle, report, summary_markdown  # noqa: E402
from step_runner import Runner, Step, describe  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CARRY = os.path.join(ROOT, ".gpu-carry")
CUTLASS_TARBALL = "cutlass-headers.tar.gz"
DEVICE_TREE_LIMIT = 64 << 20  # the device tool's limit: working tree + carried paths
SCRATCH = "/tmp/apq-gpu-check"  # outside the repo: unpacked headers
ASSUMED_ARCH = "90a"  # the lent machines' (H100 / H200) when no GPU can be asked
SANITIZERS = ("memcheck", "racecheck", "synccheck")

ENV_REPORT = "; ".join([
    "nvidia-smi", "nvcc --version | tail -2", "compute-sanitizer --version | tail -1", "echo cores: $(nproc)",
    "grep -m1 'model name' /proc/cpuinfo", "grep -m1 -o avx512_vpopcntdq /proc/cpuinfo",
    "\"$PYTHON\" -c 'import sys, torch; print(sys.version, torch.__version__, torch.version.cuda)'",
])


@dataclass
class Context:
    part: int
    python: str
    arch: str
    gpu: str  # slug for result file names
    jobs: int
    base: str = os.path.join(ROOT, "build", "gpu-check")  # logs, junit, sanitizer reports
    results_dir: str = os.path.join(ROOT, "bench", "results")

    @property
    def stage(self):
        return os.path.join(self.base, f"part{self.part}")

    def result(self, kind):
        return os.path.join(self.results_dir, f"{self.gpu}-{kind}.json")

    def arcname(self, path):
        """A result's path in the bundle: as in the repo, so that it untars in place."""
        if os.path.dirname(path) == self.results_dir:
            return os.path.join("bench", "results", os.path.basename(path))
        return os.path.join("build", "gpu-check", f"part{self.part}", os.path.relpath(path, self.stage))


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def detect(args) -> tuple:
    """(arch, gpu slug): from the GPU when there is one, else the assumed lent machine."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            arch = f"{major}{minor}" + ("a" if major == 9 else "")  # wgmma needs the 'a' target
            return args.arch or arch, slug(torch.cuda.get_device_name())
    except ImportError:
        pass
    return args.arch or ASSUMED_ARCH, "nogpu"


def common_env(ctx: Context) -> dict:
    return dict(PYTHONPATH=ROOT, PYTHONUNBUFFERED="1", CUTLASS_PATH=os.path.join(SCRATCH, "cutlass"),
                APQ_CUDA_ARCHS=ctx.arch)


def setup_steps(ctx: Context) -> list:
    env = common_env(ctx)
    return [
        Step("unpack-carry", ["tar", "-xzf", os.path.join(CARRY, CUTLASS_TARBALL), "-C", env["CUTLASS_PATH"]], 60,
             needs_build=False),
        Step("environment", ["bash", "-c", ENV_REPORT], 60, env=dict(PYTHON=ctx.python), needs_build=False),
        Step("build", [ctx.python, "setup.py", "build_ext", "--inplace"], 360,
             env=dict(env, APQ_BUILD_CUDA="1", MAX_JOBS=str(ctx.jobs)), needs_build=False),
    ]


def pytest_argv(ctx: Context) -> list:
    argv = [ctx.python, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "tests",
            f"--junitxml={os.path.join(ctx.stage, 'junit-tests.xml')}"]
    if _importable("xdist"):
        argv += ["-n", "8"]
    if _importable("pytest_timeout"):
        argv += ["--timeout", "120"]  # per test: one hung kernel must not eat the whole step
    return argv


def sanitizer_step(ctx: Context, tool: str, index: int) -> Step:
    report = os.path.join(ctx.stage, f"sanitize-{tool}.json")
    argv = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "3", "--destroy-on-device-error", "kernel",
            "--print-limit", "50", "--port", str(49152 + 100 * index),  # three run side by side
            ctx.python, os.path.join(HERE, "sanitize_workload.py"), "--json", report]
    # One cudaMalloc per tensor: the caching allocator's slabs would hide out-of-bounds accesses.
    env = dict(common_env(ctx), PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    return Step(tool, argv, 300, env=env, parallel=True, outputs=(report,))


def plan(ctx: Context) -> list:
    env = common_env(ctx)
    steps = setup_steps(ctx)
    if ctx.part == 1:
        junit = os.path.join(ctx.stage, "junit-tests.xml")
        steps.append(Step("tests", pytest_argv(ctx), 330, env=dict(env, OMP_NUM_THREADS="2"), parallel=True,
                          outputs=(junit,)))
        steps += [sanitizer_step(ctx, tool, i) for i, tool in enumerate(SANITIZERS)]
        return steps
    gemm = [ctx.python, os.path.join(ROOT, "bench", "bench_cuda_gemm.py"), "--variants", "all",
            "--bits", "1/1,2/2,2/8,4/4,4/8,8/8", "--group-sizes", "0,64,128"]
    decode, prefill = ctx.result("gemm-decode"), ctx.result("gemm-prefill")
    ceilings, e2e = ctx.result("ceilings"), ctx.result("decode")
    steps += [
        Step("ceilings", [ctx.python, os.path.join(HERE, "ceilings.py"), "--arch", ctx.arch, "--out", ceilings,
                          "--build-dir", os.path.join(ctx.stage, "probe")], 120, env=env, needs_build=False,
             outputs=(ceilings,)),
        Step("gemm-sweep-decode", gemm + ["--ms", "1,16", "--out", decode], 120, env=env, outputs=(decode,)),
        Step("decode-llama7b-shape", [ctx.python, os.path.join(HERE, "decode_bench.py"), "--layers", "4",
                                      "--out", e2e], 240, env=env, outputs=(e2e,)),
        Step("gemm-sweep-prefill", gemm + ["--ms", "256,2048", "--point-seconds", "0.1",
                                           "--shapes", "4096x4096,11008x4096", "--out", prefill], 200, env=env,
             outputs=(prefill,)),
    ]
    return steps


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---- carry folder ---------------------------------------------------------------------------------

def cutlass_root() -> str:
    if os.environ.get("CUTLASS_PATH"):
        return os.environ["CUTLASS_PATH"]
    import cutlass_library

    return os.path.join(os.path.dirname(cutlass_library.__file__), "source")


def prepare() -> int:
    """Fills .gpu-carry/ with CUTLASS's headers (include/, tools/util/include/) as one tarball."""
    source = cutlass_root()
    os.makedirs(CARRY, exist_ok=True)
    tarball = os.path.join(CARRY, CUTLASS_TARBALL)
    with tarfile.open(tarball, "w:gz", compresslevel=6) as tar:
        for sub in ("include", os.path.join("tools", "util", "include")):
            tar.add(os.path.join(source, sub), arcname=sub)
    manifest = dict(cutlass_source=source, tarball_bytes=os.path.getsize(tarball))
    with open(os.path.join(CARRY, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{tarball}: {manifest['tarball_bytes'] / 2**20:.1f} MiB of CUTLASS headers from {source}")
    return check_carry(print)


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def tree_bytes() -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored
    files (0 where git cannot tell, e.g. in the device's copy, which has no .git)."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    paths = [os.path.join(ROOT, p) for p in listing.split("\0") if p]
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def check_carry(echo) -> int:
    tarball = os.path.join(CARRY, CUTLASS_TARBALL)
    if not os.path.exists(tarball):
        echo(f"carry folder: {tarball} is missing: run `make gpu-check-prepare` first")
        return 1
    carry, tree = folder_bytes(CARRY), tree_bytes()
    fits = carry + tree <= DEVICE_TREE_LIMIT
    echo(f"carry folder .gpu-carry/: {carry / 2**20:.1f} MiB; working tree: {tree / 2**20:.1f} MiB; "
         f"together {(carry + tree) / 2**20:.1f} of {DEVICE_TREE_LIMIT >> 20} MiB: {'fits' if fits else 'TOO LARGE'}")
    return 0 if fits else 1


def dry_run(args, echo=print) -> int:
    arch, _ = detect(args)
    gpu = "<gpu>"
    for part in ([args.part] if args.part else [1, 2]):
        ctx = Context(part, "python3", arch, gpu, os.cpu_count() or 16)
        echo(f"== device command {part}: PYTHONUNBUFFERED=1 python3 tools/gpu/gpu_check.py --part {part}"
             f"  (carry: .gpu-carry; arch {arch}, budget {args.budget:.0f} s)")
        for step in plan(ctx):
            mode = "parallel" if step.parallel else "alone"
            echo(f"  {step.name:22s} timeout {step.timeout:4.0f} s  {mode:8s}  {describe(step)}")
    return check_carry(echo)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", type=int, choices=(1, 2), help="which device command to run")
    parser.add_argument("--prepare", action="store_true", help="fill the carry folder here")
    parser.add_argument("--dry-run", action="store_true", help="list every step; check the carry folder")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps of a part")
    parser.add_argument("--arch", help="override the detected nvcc arch (90a on H100 / H200)")
    parser.add_argument("--only", help="comma-separated step names to run (the rest are left out)")
    parser.add_argument("--results-dir", help="where <gpu>-*.json go (default bench/results; without a GPU, "
                        "<work-dir>/results so that a failed run leaves no nogpu-* files among measured ones)")
    parser.add_argument("--work-dir", default=Context.base, help="logs, junit xml, sanitizer reports")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare()
    if args.dry_run:
        return dry_run(args)
    if not args.part:
        parser.error("give --part 1 or --part 2 (or --dry-run / --prepare)")
    started = time.monotonic()
    arch, gpu = detect(args)
    default_results = Context.results_dir if gpu != "nogpu" else os.path.join(args.work_dir, "results")
    results_dir = args.results_dir or default_results
    ctx = Context(args.part, sys.executable, arch, gpu, os.cpu_count() or 16, os.path.abspath(args.work_dir),
                  os.path.abspath(results_dir))
    os.makedirs(os.path.join(SCRATCH, "cutlass"), exist_ok=True)
    steps = plan(ctx)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in steps}
        if unknown:
            parser.error(f"--only names no step of part {args.part}: {sorted(unknown)}")
        steps = [s for s in steps if s.name in wanted]
    outcomes = Runner(os.path.join(ctx.stage, "logs"), args.budget).run_all(steps)
    rep = report(ctx, outcomes, started)
    written = bundle(ctx, outcomes, rep, os.environ.get("OUT"))
    print(summary_markdown(rep))
    print("written:", *written, sep="\n  ")
    return 1 if rep["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
