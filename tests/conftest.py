"""Shared fixtures and tier markers: unit (default), host (root on this kernel), vm (lab VMs)."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RCUPENDING = [sys.executable, "-m", "rcupending_tools.cli"]

# The VM tier's matrix. "ci" (the default, what `.ci/run` runs): each question on the kernels
# that answer it, within CI's hour under QEMU TCG. "full" (RCUPENDING_VM_MATRIX=full): every
# kernel every test supports, and the tests marked vm_full (hours: README, Tests).
VM_MATRIX = os.environ.get("RCUPENDING_VM_MATRIX", "ci")
if VM_MATRIX not in ("ci", "full"):
    raise SystemExit(f"RCUPENDING_VM_MATRIX must be ci or full, not {VM_MATRIX!r}")
FULL_MATRIX = VM_MATRIX == "full"


def vm_kernels(variable: str, ci: str, full: str) -> list[str]:
    """A VM test's kernels: `variable` when set (e.g. RCUPENDING_VM_KERNELS=debian:6.12), else
    the matrix's set."""
    return (os.environ.get(variable) or (full if FULL_MATRIX else ci)).split(",")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, **kw
) -> subprocess.CompletedProcess:
    """Run `rcupending ARGS` as a subprocess (the real entry point, exit codes and all)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*RCUPENDING, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=timeout,
        **kw,
    )


def lab_result(spec: str, *command: str, lab_args: tuple[str, ...] = (),
               timeout: float = 2400, keep: str | None = None) -> dict:
    """`command` run in a lab VM of `spec` (`rcupending lab`): the JSON its guest script
    printed last on a `RCUPENDING-RESULT ` line, with `spec` set. A failed run (exit 0 also
    means no WARN/BUG/stall in the guest's dmesg: `rcupending lab` checks), or one that
    printed none, fails with the ends of its output. `keep`: a file name under
    RCUPENDING_VM_RESULTS (default build/vm-results) to write the result to as well."""
    proc = run_cli("lab", "--kernel", spec, *lab_args, "--", *command, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RCUPENDING-RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"lab run on {spec} failed (rc {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].split(" ", 1)[1])
    result["spec"] = spec
    if keep:
        out = Path(os.environ.get("RCUPENDING_VM_RESULTS", "build/vm-results"))
        out.mkdir(parents=True, exist_ok=True)
        (out / keep).write_text(json.dumps(result, indent=1))
    return result


def results_name(spec: str, prefix: str = "") -> str:
    """A VM result's file name: `prefix` and the kernel spec, `:` made `-`."""
    return f"{prefix}{spec.replace(':', '-')}.json"


def one_line_error(proc: subprocess.CompletedProcess, code: int | None = None) -> str:
    """A refusal as the tool must give it: exit `code` (any non-zero when None), one stderr
    line starting "rcupending: error: ", no traceback; that line."""
    err = proc.stderr.strip()
    assert proc.returncode != 0 if code is None else proc.returncode == code, proc
    assert err.startswith("rcupending: error: ") and "\n" not in err, err
    assert "Traceback" not in proc.stdout + proc.stderr
    return err


@pytest.fixture
def cli():
    return run_cli


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "vm_full: only in the full VM matrix (RCUPENDING_VM_MATRIX=full)")


def pytest_collection_modifyitems(config, items):
    if not FULL_MATRIX:  # not run, not skipped: the matrix chose (listed by the report header)
        chosen = [i for i in items if i.get_closest_marker("vm_full") is None]
        if len(chosen) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
            items[:] = chosen
    for item in items:
        path = str(item.fspath)
        if "/tests/host/" in path:
            item.add_marker(pytest.mark.host)
        elif "/tests/vm/" in path:
            item.add_marker(pytest.mark.vm)


def pytest_report_header(config):
    return f"VM matrix: {VM_MATRIX} (RCUPENDING_VM_MATRIX=ci|full)"


# A hung test fails alone (with every thread's stack and the processes it left) instead of
# eating CI's 90 min: each phase of a test gets this many seconds, a VM test's more (a module's
# first VM test boots its kernel in setup; the slowest took 316 s). RCUPENDING_TEST_TIMEOUT=0
# turns the watchdog off (a debugger).
PHASE_LIMIT = {"vm": 2400, "integration": 1200}
DEFAULT_LIMIT = 600


class PhaseTimeout(Exception):
    """A test phase outlived its watchdog."""


def phase_limit(item: pytest.Item) -> int:
    if (env := os.environ.get("RCUPENDING_TEST_TIMEOUT")) is not None:
        return int(env)
    path = str(item.fspath)
    return next((s for tier, s in PHASE_LIMIT.items() if f"/tests/{tier}/" in path),
                DEFAULT_LIMIT)


def _children() -> str:
    ps = subprocess.run(["ps", "-o", "pid,ppid,etimes,stat,args", "--ppid", str(os.getpid())],
                        capture_output=True, text=True, check=False)
    return ps.stdout


def _watched(item: pytest.Item, phase: str):
    limit = phase_limit(item)
    if limit <= 0:
        return (yield)

    def expired(signum: int, frame: object) -> None:
        sys.stderr.write(f"\n{item.nodeid}: {phase} outlived {limit} s; every thread:\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(all_threads=True)
        raise PhaseTimeout(f"{phase} outlived the {limit} s watchdog; its children:\n"
                           + _children())

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        return (yield)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _watched(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _watched(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _watched(item, "teardown"))
