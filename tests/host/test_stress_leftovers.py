"""Killed stress runs leave nothing: no process, no mount, no cgroup v1 hierarchy, no mount point
(root: the headless scenario mounts a named cgroup v1 hierarchy); `collect --csv` appends."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting cgroup v1 needs root")
HEADLESS = [sys.executable, "-m", "rcupending_tools.cli", "stress", "kvfree", "--headless",
            "--count", "1000000", "--rate", "100"]


def ours() -> dict[str, list[str]]:
    """What any headless run has left on this host: hierarchies, mounts, mount points."""
    cg = re.findall(r"name=(rcupending\d+)", Path("/proc/self/cgroup").read_text())
    mounts = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if "name=rcupending" in ln]
    points = [str(p) for p in Path(tempfile.gettempdir()).glob("rcupending-cg1-*")]
    return {"hierarchies": cg, "mounts": mounts, "mount points": points}


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def renaming(worker: int) -> bool:
    """The worker's directory exists inside its mount (seen through its own mount namespace):
    from then on a SIGKILL leaves the hierarchy alive, kept by that directory. Between the
    mount and the mkdir, a SIGKILL would leave no hierarchy at all."""
    tmp = Path(f"/proc/{worker}/root{tempfile.gettempdir()}")
    try:
        return any(d.is_dir() for p in tmp.glob(f"rcupending-cg1-{worker}-*") for d in p.iterdir())
    except OSError:
        return False


def start_headless() -> tuple[subprocess.Popen, int]:
    """A long headless run, once its worker has mounted and renames."""
    proc = subprocess.Popen(HEADLESS, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    for _ in range(300):  # bounded: ~30 s for the fork, the mount and the first directory
        kids = [k for k in children(proc.pid)
                if f"rcupending{k}" in ours()["hierarchies"] and renaming(k)]
        if kids:
            return proc, kids[0]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the headless worker never mounted its hierarchy")


def wait_clean(worker: int, seconds: float = 20) -> dict:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        left = ours()
        if not alive(worker) and not any(left.values()):
            return left
        time.sleep(0.2)
    return {"worker alive": alive(worker), **ours()}


@pytest.fixture(autouse=True)
def clean_before():
    run_cli("stress", "kvfree", "--headless", "--count", "1", timeout=120)  # earlier leftovers
    assert not any(ours().values()), ours()
    yield


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_command_takes_the_worker_and_its_mount(sig):
    proc, worker = start_headless()
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    left = wait_clean(worker)
    assert not any(left.values()), left
    assert "Traceback" not in proc.stderr.read()


def test_the_next_start_removes_what_a_killed_worker_left():
    proc, worker = start_headless()
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker: no cleanup at all
    proc.wait(timeout=30)
    for _ in range(100):
        if not alive(worker):
            break
        time.sleep(0.1)
    left = ours()
    assert not alive(worker) and left["hierarchies"] == [f"rcupending{worker}"], left
    assert not left["mounts"], left  # the worker's own mount namespace took its mount along
    nxt = run_cli("stress", "kvfree", "--headless", "--count", "5", timeout=120)
    assert nxt.returncode == 0, nxt.stderr
    # what it removed is the killed worker's (its hierarchy, when the kernel has not let it
    # go by then, and its mount point); afterwards nothing of ours is left
    assert (f"removed a killed run's cgroup v1 hierarchy rcupending{worker}" in nxt.stderr
            or f"removed a killed run's mount point /tmp/rcupending-cg1-{worker}-"
            in nxt.stderr), nxt.stderr
    assert not any(ours().values()), ours()


def test_collect_csv_appends_with_the_baseline(tmp_path):
    from rcupending_tools.surfaces.export import read_csv
    from tests.unit.surfaces_fixtures import SHIPPED

    foreign = tmp_path / "notes.csv"
    foreign.write_text("a,b\n1,2\n")
    proc = run_cli("collect", "--duration", "1", "--csv", str(foreign), timeout=300)
    assert proc.returncode == 2 and "not an rcupending CSV" in proc.stderr  # before attaching
    assert foreign.read_text() == "a,b\n1,2\n"
    out = tmp_path / "c.csv"
    assert run_cli("export", str(SHIPPED), "--csv", str(out), timeout=120).returncode == 0
    before = out.read_bytes()
    proc = run_cli("collect", "--duration", "1", "--interval", "0.5", "--csv", str(out),
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(before)  # appended: the old rows untouched
    df = read_csv(out)
    new = df[df["source"] == "live"].drop_duplicates(["timestamp", "seq"])["seq"].tolist()
    assert new[0] == 0 and new == sorted(new) and len(new) >= 2, new  # the baseline first
    assert out.read_text().count("timestamp,seq,") == 1
