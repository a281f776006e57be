"""KVM where it works, QEMU TCG elsewhere: which accelerator lab VMs boot with.

/dev/kvm opening is not enough (on the project's build machines it opens, then QEMU dies at
the first vCPU MSR write), so `auto` boots the kernel once with KVM running `true` and keeps
the verdict per host boot (cache_dir()/accel.json). RCUPENDING_VM_ACCEL=kvm|tcg forces one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from .. import config

ENV = config.VM_ACCEL_ENV
PROBE_TIMEOUT = 120.0
_memo: dict[str, str] = {}




def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_device_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def probe_kvm(vng: str, image: Path, env: dict[str, str]) -> bool:
    """Boot `image` with KVM and run `true`: True only if the guest ran it."""
    argv = [vng, "-r", str(image), "--memory", "512M", "--", "true"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=PROBE_TIMEOUT, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def select(cache: Path, prober: Callable[[], bool]) -> str:
    """"kvm" or "tcg" for this host boot: RCUPENDING_VM_ACCEL, else the cached or probed one."""
    forced = config.vm_accel()
    if forced != "auto":
        return forced
    boot = _boot_id()
    if boot in _memo:
        return _memo[boot]
    path = cache / "accel.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("boot_id") == boot and saved.get("accel") in ("kvm", "tcg"):
            _memo[boot] = saved["accel"]
            return saved["accel"]
    except (OSError, ValueError, AttributeError):
        pass  # no verdict yet, or a corrupt one: probe again
    verdict = "kvm" if kvm_device_usable() and prober() else "tcg"
    _memo[boot] = verdict
    try:
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"boot_id": boot, "accel": verdict}) + "\n")
    except OSError:
        pass  # a read-only cache only costs a probe per process
    return verdict


def label(accel: str) -> str:
    return "KVM" if accel == "kvm" else "QEMU TCG"
