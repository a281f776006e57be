"""Headless kvfree_rcu load: renames of a cgroup v1 directory, with its own ground truth.

From 6.15, kernfs_rename_ns() frees a node's old name with kfree_rcu_mightsleep(old_name)
(fs/kernfs/dir.c) when the name changes and the old one is not in .rodata; a directory made by
mkdir(2) has a kstrdup'd name, so every successful rename of it enqueues one headless object
of strlen(name) + 1 bytes (kmalloc-16/32/...). Before 6.15 the old name went to kfree_const()
and nothing reaches kvfree_rcu. Needs root (it mounts a named cgroup v1 hierarchy of its own).

The worker runs in its own process (so by_stress attribution works) and speaks the same pipe
protocol as stress/kvfree.py: it sends its truth, then waits for "close" before it removes the
directory (rmdir frees the last name, outside the measured window) and unmounts.

Nothing outlives a run: the worker mounts in a mount namespace of its own (its mount dies with
it), gets SIGTERM when the command dies (parent-death signal) and then removes its directory
and hierarchy; what a SIGKILLed worker leaves (a hierarchy kept alive by its directory, an empty
mount point) is removed at the next start (clean_leftovers).
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing as mp
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..paths import process_running
from . import reap
from .kvfree import StressRun

HEADLESS_SINCE = (6, 15)


def _names(length: int) -> tuple[str, str]:
    return "a" * length, "b" * length


PREFIX = "rcupending"  # hierarchy name: rcupending<worker pid>
MOUNT_PREFIX = "rcupending-cg1-"  # mount point: <tmp>/rcupending-cg1-<worker pid>-XXXX
CLONE_NEWNS = 0x00020000


def _mount(name: str, mnt: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "-t", "cgroup", "-o", f"none,name={name}", name, mnt],
                          capture_output=True, text=True)


def _hierarchies() -> set[str]:
    """Names of the live cgroup v1 hierarchies of ours (mounted or not: /proc/self/cgroup
    lists every one)."""
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return set()
    return set(re.findall(rf"^\d+:name=({PREFIX}\d+):", text, re.M))


def _mounts() -> dict[str, list[str]]:
    """Hierarchy name -> its mount points in this mount namespace."""
    out: dict[str, list[str]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for ln in lines:
        pre, _, post = ln.partition(" - ")
        fields, sup = pre.split(), post.split()
        if len(sup) >= 3 and sup[0] == "cgroup":
            m = re.search(rf"(?:^|,)name=({PREFIX}\d+)(?:,|$)", sup[2])
            if m:
                out.setdefault(m.group(1), []).append(
                    fields[4].encode().decode("unicode_escape"))
    return out


def _remove_children(mnt: str) -> None:
    for root, dirs, _files in os.walk(mnt, topdown=False):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass


def release(name: str, mnt: str) -> bool:
    """Remove the hierarchy `name` mounted at `mnt`: its directories, then the mount. A
    cgroup removed a moment ago keeps the hierarchy alive past the umount, so mount it again
    and retry until the kernel has let it go (True) or a few seconds pass."""
    for _ in range(10):
        _remove_children(mnt)
        subprocess.run(["umount", mnt], capture_output=True)
        for _ in range(20):  # the kernel frees an unmounted hierarchy asynchronously
            if name not in _hierarchies():
                return True
            time.sleep(0.05)
        if _mount(name, mnt).returncode != 0:
            return False
    subprocess.run(["umount", mnt], capture_output=True)
    return False


def clean_leftovers() -> list[str]:
    """What killed headless runs left (a mount, a hierarchy kept alive by its directory, an
    empty mount point), removed; returns what was removed. Needs root."""
    if os.geteuid() != 0:
        return []
    removed = []
    mounts = _mounts()
    for name in sorted(_hierarchies() | set(mounts)):
        if process_running(int(name[len(PREFIX):])):
            continue
        points = mounts.get(name, [])
        for mnt in points[1:]:
            subprocess.run(["umount", mnt], capture_output=True)
        mnt = points[0] if points else tempfile.mkdtemp(prefix=f"{MOUNT_PREFIX}clean-")
        if points or _mount(name, mnt).returncode == 0:
            if release(name, mnt):
                removed.append(f"cgroup v1 hierarchy {name}" + (f" at {points[0]}"
                                                                  if points else ""))
        if not points or not os.path.ismount(mnt):
            try:
                os.rmdir(mnt)
            except OSError:
                pass
    for d in Path(tempfile.gettempdir()).glob(f"{MOUNT_PREFIX}*"):
        pid = d.name[len(MOUNT_PREFIX):].split("-", 1)[0]
        gone = not pid.isdigit() or not process_running(int(pid))
        if gone and d.is_dir() and not os.path.ismount(d):
            try:
                d.rmdir()
                removed.append(f"mount point {d}")
            except OSError:
                pass
    return removed


def _private_mounts() -> None:
    """A mount namespace of the worker's own: its mount dies with it, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) == 0:
        subprocess.run(["mount", "--make-rprivate", "/"], capture_output=True)


def _worker(conn, count: int, length: int, rate: float | None, headless: bool,  # noqa: ANN001
            parent: int, paused: bool = False) -> None:
    reap.worker_signals(parent)  # SIGTERM (and the parent's death) unmount on the way out
    mounted = False
    mnt = ""
    name = f"{PREFIX}{os.getpid()}"
    truth: dict = {"pid": os.getpid(), "sockets": 0, "calls": 0, "ok": 0, "failed": 0,
                   "errors": {}, "expected_enqueued": 0, "sockets_with_options": 0}
    try:
        _private_mounts()
        # named first, made second: a SIGTERM inside mkdtemp() would leave a directory that
        # `finally` does not know (seen once with the host tier under load)
        mnt = os.path.join(tempfile.gettempdir(),
                           f"{MOUNT_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
        os.mkdir(mnt, 0o700)
        r = _mount(name, mnt)
        if r.returncode != 0:
            conn.send({"error": f"mount of a cgroup v1 hierarchy failed: {r.stderr.strip()}"})
            return
        mounted = True
        a, b = (os.path.join(mnt, n) for n in _names(length))
        os.mkdir(a)
        cur, nxt = a, b
        if paused:
            conn.recv()  # the go
        start = time.monotonic()
        for k in range(count):
            if rate:
                time.sleep(max(0.0, start + k / rate - time.monotonic()))
            truth["calls"] += 1
            try:
                os.rename(cur, nxt)
            except OSError as e:
                key = errno.errorcode.get(e.errno or 0, str(e.errno))
                truth["errors"][key] = truth["errors"].get(key, 0) + 1
                continue
            truth["ok"] += 1
            cur, nxt = nxt, cur
        truth["failed"] = truth["calls"] - truth["ok"]
        truth["expected_enqueued"] = truth["ok"] if headless else 0
        conn.send(truth)
        conn.recv()  # the parent's final read comes first
    except (EOFError, BrokenPipeError):
        pass
    except OSError as e:
        try:
            conn.send({"error": f"headless stress: {e}"})
        except OSError:
            pass
    finally:
        # no second signal (the command's stop, then its death) cuts the cleanup short
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP})
        # a signal inside subprocess.run() can come after the mount(8) child has mounted
        # but before `mounted` is set: the mount table says what is mounted, not the flag
        if mounted or (mnt and os.path.ismount(mnt)):
            release(name, mnt)
        if mnt:
            try:
                os.rmdir(mnt)
            except OSError:
                pass
        conn.close()


def start(count: int, length: int = 24, rate: float | None = None,
          kernel_version: tuple[int, int] = (0, 0), paused: bool = False) -> StressRun:
    """Fork one worker renaming a cgroup v1 directory `count` times (names of `length`
    bytes); the truth expects one headless enqueue per rename from 6.15 on, none before."""
    if count < 0 or not 1 <= length <= 200:
        raise ValueError("need count >= 0 and a name length of 1..200")
    if os.geteuid() != 0:
        raise PermissionError("the headless scenario mounts a cgroup v1 hierarchy: run as root")
    for what in clean_leftovers():
        print(f"rcupending: removed a killed run's {what}", file=sys.stderr)
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=True)
    headless = kernel_version >= HEADLESS_SINCE
    p = ctx.Process(target=_worker,
                    args=(child, count, length, rate, headless, os.getpid(), paused), daemon=True)
    p.start()
    child.close()
    return StressRun([p], [parent], scenario="headless")
