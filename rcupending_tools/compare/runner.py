"""`rcupending compare`: the same scenario on two (or more) lab kernels, alternating A/B/A/B,
one VM boot per run, each run printing one RCUPENDING-COMPARE line (compare/guest.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..lab import kernels, vm
from .guest import MARK

# Boot-argument variants: lazy callbacks need offloaded CPUs (CONFIG_RCU_NOCB_CPU +
# CONFIG_RCU_LAZY in the lab config); expedited turns every grace period into an expedited one.
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "lazy": ["rcu_nocbs=all"],
    "expedited": ["rcupdate.rcu_expedited=1"],
}
STRESSES = ("kvfree",)


@dataclass(frozen=True)
class RunSpec:
    repeat: int
    kernel: str
    variant: str


@dataclass
class RunResult:
    spec: RunSpec
    ok: bool
    seconds: float
    result: dict[str, Any] | None = None
    error: str = ""
    splats: list[str] = field(default_factory=list)
    accel: str = "tcg"  # how the VM ran: "kvm" or "tcg"
    boot_failures: list[str] = field(default_factory=list)  # VMs run again (lab/vm.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "repeat": self.spec.repeat,
            "kernel": self.spec.kernel,
            "variant": self.spec.variant,
            "ok": self.ok,
            "seconds": round(self.seconds, 1),
            "error": self.error,
            "splats": self.splats,
            "accel": self.accel,
            "boot_failures": self.boot_failures,
            "result": self.result,
        }


def parse_list(text: str, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"--{what}: give at least one, comma-separated")
    if allowed is not None and (bad := [t for t in items if t not in allowed]):
        raise UserError(f"--{what}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    if len(set(items)) != len(items):
        raise UserError(f"--{what}: {text!r} names one twice")
    return items


def plan(kernels: list[str], variants: list[str], repeats: int) -> list[RunSpec]:
    """Per variant, repeats of every kernel in turn: A B A B A B (host drift hits both)."""
    return [RunSpec(r, k, v) for v in variants for r in range(repeats) for k in kernels]


def parse_output(output: str) -> dict[str, Any] | None:
    lines = [ln for ln in output.splitlines() if ln.startswith(MARK)]
    if not lines:
        return None
    try:
        return json.loads(lines[-1][len(MARK) :])
    except json.JSONDecodeError:
        return None


def run_all(
    specs: list[RunSpec],
    guest_args: list[str],
    progress: Callable[[str], None],
    memory: str = "2G",
    cpus: int = 2,
) -> list[RunResult]:
    resolved = {k: kernels.resolve(k, progress=progress) for k in {s.kernel for s in specs}}
    out: list[RunResult] = []
    for i, spec in enumerate(specs, 1):
        k = resolved[spec.kernel]
        progress(f"[{i}/{len(specs)}] {spec.kernel} {spec.variant} repeat {spec.repeat + 1}")
        cmd = [sys.executable, "-m", "rcupending_tools.compare.guest", *guest_args]
        res = vm.run_in_vm(
            k, cmd, append=VARIANTS[spec.variant], memory=memory, cpus=cpus, stream=None,
            check=False,
        )  # fmt: skip
        parsed = parse_output(res.output)
        error = ""
        if not res.boot_ok:
            error = "the guest command never completed (boot or timeout)"
        elif res.rc != 0 or parsed is None:
            tail = res.output.strip().splitlines()[-3:]
            error = f"guest rc {res.rc}: {' | '.join(tail)}"
        elif res.splats:
            error = f"kernel splat: {res.splats[0]}"
        out.append(RunResult(spec, not error, res.seconds, parsed, error, list(res.splats),
                             res.accel, list(res.boot_failures)))
        progress(f"    {'ok' if not error else 'FAILED: ' + error} in {res.seconds:.0f} s")
    return out
