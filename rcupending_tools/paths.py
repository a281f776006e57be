"""Files the tool keeps: the cache directory, locks on it, markers of finished work, and
Debian packages unpacked into it (lab kernels, headers, the lab build, the stress drivers)."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import REPO_ROOT, cache_dir, shared_kernels_dir
from .errors import UserError

__all__ = ["REPO_ROOT", "cache_dir", "shared_kernels_dir", "locked", "read_marker",
           "write_marker", "extract_debs", "bin_dir", "MARKER", "TRACEFS", "TRACEFS_DIRS"]

MARKER = ".complete.json"
# tracefs, where the kernel mounts it today and where older systems have it
TRACEFS = Path("/sys/kernel/tracing")
TRACEFS_DIRS = (TRACEFS, Path("/sys/kernel/debug/tracing"))


def bin_dir() -> Path:
    """Where the native stress drivers are built (by a hash of their sources)."""
    return cache_dir() / "bin"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_marker(d: Path) -> dict | None:
    """The marker a finished download or build leaves in `d` (None: not finished)."""
    try:
        return json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(d: Path, data: dict) -> None:
    tmp = d / (MARKER + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(d / MARKER)


def extract_debs(debs: list[Path], root: Path, progress: Callable[[str], None]) -> None:
    """dpkg-deb -x each of `debs` into `root`."""
    exe = shutil.which("dpkg-deb")
    if exe is None:
        raise UserError("dpkg-deb not found: install dpkg")
    for deb in debs:
        progress(f"unpacking {deb.name}")
        r = subprocess.run([exe, "-x", str(deb), str(root)], capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"dpkg-deb -x {deb.name} failed: {r.stderr.strip()}")


def process_running(pid: int) -> bool:
    """A live process: a zombie (dead, its new parent not yet reaping it) is not, so what it
    left may be removed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
