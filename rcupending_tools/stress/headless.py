"""Headless kvfree_rcu load: renames of a cgroup v1 directory, with its own ground truth.

From 6.15, kernfs_rename_ns() frees a node's old name with kfree_rcu_mightsleep(old_name)
(fs/kernfs/dir.c) when the name changes and the old one is not in .rodata; a directory made by
mkdir(2) has a kstrdup'd name, so every successful rename of it enqueues one headless object
of strlen(name) + 1 bytes (kmalloc-16/32/...). Before 6.15 the old name went to kfree_const()
and nothing reaches kvfree_rcu. Needs root (it mounts a named cgroup v1 hierarchy of its own).

The worker runs in its own process (so by_stress attribution works) and speaks the same pipe
protocol as stress/kvfree.py: it sends its truth, then waits for "close" before it removes the
directory (rmdir frees the last name, outside the measured window) and unmounts.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import subprocess
import tempfile
import time

from .kvfree import StressRun

HEADLESS_SINCE = (6, 15)


def _names(length: int) -> tuple[str, str]:
    return "a" * length, "b" * length


def _worker(conn, count: int, length: int, rate: float | None, headless: bool,  # noqa: ANN001
            paused: bool = False) -> None:
    mnt = tempfile.mkdtemp(prefix="rcupending-cg1-")
    mounted = False
    truth: dict = {"pid": os.getpid(), "sockets": 0, "calls": 0, "ok": 0, "failed": 0,
                   "errors": {}, "expected_enqueued": 0, "sockets_with_options": 0}
    try:
        name = f"rcupending{os.getpid()}"
        subprocess.run(["mount", "-t", "cgroup", "-o", f"none,name={name}", name, mnt],
                       check=True, capture_output=True, text=True)
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
    except subprocess.CalledProcessError as e:
        conn.send({"error": f"mount of a cgroup v1 hierarchy failed: {e.stderr.strip()}"})
    except (EOFError, OSError) as e:
        if not isinstance(e, EOFError):
            conn.send({"error": f"headless stress: {e}"})
    finally:
        for d in _names(length):
            try:
                os.rmdir(os.path.join(mnt, d))
            except OSError:
                pass
        if mounted:
            subprocess.run(["umount", mnt], check=False, capture_output=True)
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
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=True)
    headless = kernel_version >= HEADLESS_SINCE
    p = ctx.Process(target=_worker, args=(child, count, length, rate, headless, paused),
                    daemon=True)
    p.start()
    child.close()
    return StressRun([p], [parent], scenario="headless")
