"""The native kvfree stress driver (native/kvfree_flood.c): the IP_OPTIONS load of kvfree.py
from C threads pinned one per CPU, fast enough that probe cost shows above the noise.

The binary is built with gcc by scripts/setup.sh, or here at first use, into the cache
(~/.cache/rcupending-tools/bin), named by a hash of its source so an edit rebuilds it. Lab VMs
see the host's filesystem, so a binary built on the host runs in the guest.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import bin_dir
from . import reap

SOURCE = Path(__file__).resolve().parent / "native" / "kvfree_flood.c"
MAX_OPTLEN = 64  # the driver's option buffer (sets over 40 bytes fail: the negative control)


def binary_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return bin_dir() / f"kvfree_flood-{digest}"


def build(out: Path) -> Path:
    """Compile the driver to `out` (atomically: a concurrent build never sees half a file)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise UserError("the native stress driver needs gcc (apt-get install gcc libc6-dev)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
    os.close(fd)
    proc = subprocess.run(
        [gcc, "-O2", "-Wall", "-pthread", "-o", tmp, str(SOURCE)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        os.unlink(tmp)
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr[:200])
        raise UserError(f"building the native stress driver failed: {first.strip()}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return out


def binary() -> Path:
    """The driver binary for this source, built if missing."""
    path = binary_path()
    return path if path.is_file() and os.access(path, os.X_OK) else build(path)


def argv(
    count: int | None,
    optlen: int = 4,
    threads: int | None = None,
    sockets: int = 8,
    duration: float | None = None,
    hold: bool = False,
    go: bool = False,
) -> list[str]:
    if (count is None) == (duration is None):
        raise ValueError("give exactly one of count and duration")
    if not 1 <= optlen <= MAX_OPTLEN:
        raise UserError(f"--optlen {optlen}: the native driver takes 1..{MAX_OPTLEN}")
    args = [str(binary())]
    args += ["--count", str(count)] if count is not None else ["--duration", str(duration)]
    args += ["--optlen", str(optlen), "--sockets", str(sockets)]
    if threads:
        args += ["--threads", str(threads)]
    return args + (["--hold"] if hold else []) + (["--go"] if go else [])


def truth(out: dict[str, Any]) -> dict[str, Any]:
    """The driver's JSON as stress kvfree's `expected` object (same shape as the python one)."""
    return {
        "scenario": "kvfree",
        "driver": "native",
        "workers": out["threads"],
        "sockets": out["sockets"],
        "calls": out["calls"],
        "ok": out["ok"],
        "failed": out["failed"],
        "errors": out["errors"],
        "kvfree_rcu": {"enqueued": out["expected_enqueued"]},
        "sockets_with_options": out["sockets_with_options"],
        "pids": [out["pid"]],
        "elapsed_s": out["elapsed_s"],
        "calls_per_s": out["calls_per_s"],
        "cpus": out["cpus"],
    }


def run(duration: float, threads: int | None = None, sockets: int = 8, optlen: int = 4) -> dict:
    """Run the driver for `duration` seconds; its JSON result (sockets closed on exit)."""
    proc = subprocess.run(
        argv(None, optlen, threads, sockets, duration), capture_output=True, text=True,
        timeout=duration + 120,
    )
    if proc.returncode != 0:
        raise UserError(f"native stress driver failed (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[:200]}")
    return json.loads(proc.stdout)


@dataclass
class NativeRun:
    """A running driver holding its sockets until `finish()` (StressRun's interface)."""

    proc: subprocess.Popen

    @property
    def pids(self) -> set[int]:
        return {self.proc.pid}  # its threads share the tgid

    def go(self) -> None:
        """Start a paused driver's flood (it waits with its sockets and threads made)."""
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("native stress driver did not get ready")
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def running(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return not ready

    def wait(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            err = self.proc.stderr.read().strip()[:200]
            raise RuntimeError(f"native stress driver died (exit {self.proc.returncode}): {err}")
        return truth(json.loads(line))

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def finish(self) -> None:
        """Close its stdin: it closes the sockets and exits."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(
    count: int | None,
    optlen: int = 4,
    workers: int | None = None,
    sockets: int = 8,
    duration: float | None = None,
    paused: bool = False,
) -> NativeRun:
    """Start the driver (`workers` threads, default one per CPU) holding its sockets;
    `paused`: its flood starts at go()."""
    args = argv(count, optlen, workers, sockets, duration, hold=True, go=paused)
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=reap.preexec(),  # dies with this process (kill -9 included)
    )
    return NativeRun(proc)
