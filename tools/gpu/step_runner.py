"""Runs gpu_check's steps: each in its own process group with its own log and timeout, all
within one time budget; parallel steps side by side; a failure never stops the steps after it
(those that need the build are skipped when it failed)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUDGET_RESERVE = 20  # seconds kept for bundling after the last step


@dataclass
class Step:
    name: str
    argv: list
    timeout: float
    env: dict = field(default_factory=dict)
    needs_build: bool = True
    parallel: bool = False  # runs beside the other parallel steps that follow it
    outputs: tuple = ()  # files it writes (bundled)


@dataclass
class Outcome:
    step: Step
    status: str  # passed / failed / timeout / skipped
    rc: int | None = None
    wall_s: float = 0.0
    log: str = ""
    note: str = ""


class Runner:
    def __init__(self, log_dir: str, budget: float, echo=print):
        self.log_dir, self.deadline, self.echo = log_dir, time.monotonic() + budget, echo
        self.outcomes: list[Outcome] = []
        os.makedirs(log_dir, exist_ok=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic() - BUDGET_RESERVE

    def run_all(self, steps: list) -> list:
        i = 0
        while i < len(steps):
            batch = [steps[i]]
            while steps[i].parallel and i + len(batch) < len(steps) and steps[i + len(batch)].parallel:
                batch.append(steps[i + len(batch)])
            self._run_batch(batch)
            i += len(batch)
        return self.outcomes

    def _skip_reason(self, step: Step) -> str:
        if step.needs_build and any(o.step.name == "build" and o.status != "passed" for o in self.outcomes):
            return "the build failed"
        if self.remaining() < 10:
            return "no time left in the budget"
        return ""

    def _run_batch(self, batch: list):
        running = []
        for step in batch:
            reason = self._skip_reason(step)
            if reason:
                self.outcomes.append(Outcome(step, "skipped", note=reason))
                self.echo(f"[{step.name}] SKIPPED: {reason}")
                continue
            log = os.path.join(self.log_dir, f"{step.name}.log")
            timeout = min(step.timeout, self.remaining())
            self.echo(f"[{step.name}] START (timeout {timeout:.0f} s): {describe(step)}")
            with open(log, "w") as f:
                f.write(f"$ {describe(step)}\n")
                f.flush()
                try:
                    proc = subprocess.Popen(step.argv, cwd=ROOT, env=dict(os.environ, **step.env), stdout=f,
                                            stderr=subprocess.STDOUT, start_new_session=True)
                except OSError as e:  # e.g. compute-sanitizer not installed
                    f.write(f"could not start: {e}\n")
                    self.outcomes.append(Outcome(step, "failed", log=log, note=f"could not start: {e}"))
                    self.echo(f"[{step.name}] FAILED: could not start: {e}")
                    continue
            running.append((step, proc, log, time.monotonic(), timeout))
        while running:
            time.sleep(0.2)
            for item in list(running):
                step, proc, log, began, timeout = item
                elapsed = time.monotonic() - began
                if proc.poll() is None and elapsed < timeout:
                    continue
                status = "timeout" if proc.poll() is None else ("passed" if proc.returncode == 0 else "failed")
                if status == "timeout":
                    stop(proc)
                outcome = Outcome(step, status, proc.returncode, elapsed, log,
                                  note=f"stopped after {timeout:.0f} s" if status == "timeout" else "")
                self.outcomes.append(outcome)
                running.remove(item)
                self.echo(f"[{step.name}] {status.upper()} (exit {proc.returncode}) in {elapsed:.1f} s")
                if status != "passed":
                    self.echo(tail(log, 25))


def stop(proc: subprocess.Popen):
    """Ends a timed-out step and everything it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def describe(step: Step) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env.items() if k not in ("PYTHONUNBUFFERED",))
    return ((env + " " if env else "") + shlex.join(step.argv)).replace(ROOT + os.sep, "")


def tail(path: str, lines: int) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
