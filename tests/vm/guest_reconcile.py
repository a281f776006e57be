"""Runs INSIDE a lab VM: `rcupending record --interval 0.2` around a native optlen-4 kvfree_rcu
flood and its drain, then prints RCUPENDING-RESULT with what it did. The recording goes to the
directory given (a --rwdir of the host); the host test checks every snapshot.

The driver is started first and told to go later (its --go), so the kernel work of starting a
process (an exec frees an object through kfree_rcu) is over before the flood: from the go on,
only the flood queues objects."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package first

from rcupending_tools.stress import native, sheaves  # noqa: E402

CLI = [sys.executable, "-m", "rcupending_tools.cli"]
QUIET_S = 12  # let the kfree_rcu() objects of boot, attach and the driver's start drain
DRAIN_S = 25


def wait_for_baseline(rec: subprocess.Popen, path: Path, timeout: float = 900) -> None:
    """The recorder has attached once its first snapshot is on disk (bcc compiles first: a
    minute or more under TCG, longer when the host is busy)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if rec.poll() is not None:
            raise SystemExit(f"record exited {rec.returncode} before its first snapshot")
        if path.exists() and len(path.read_text().splitlines()) >= 2:
            return
        time.sleep(0.5)
    raise SystemExit(f"no snapshot in {path} after {timeout} s")


def main() -> None:
    out = Path(sys.argv[1]) / "reconcile.jsonl"
    # a count (20000), or a duration ("1.5s": a flood that several snapshots see in flight)
    size = sys.argv[2] if len(sys.argv) > 2 else "20000"
    count, duration = (None, float(size[:-1])) if size.endswith("s") else (int(size), None)
    sheaf_kernel = len(sys.argv) > 3 and sys.argv[3] == "sheaves"
    driver = subprocess.Popen(native.argv(count, 4, duration=duration, hold=True, go=True),
                              stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert driver.stdout.readline().strip() == "ready"
    rec = subprocess.Popen([*CLI, "record", "-o", str(out), "--interval", "0.2", "--force"])
    wait_for_baseline(rec, out)
    time.sleep(QUIET_S)
    marks: dict = {"flood_start": time.time()}
    driver.stdin.write("go\n")
    driver.stdin.flush()
    truth = native.truth(json.loads(driver.stdout.readline()))
    marks["flood_end"] = time.time()
    if sheaf_kernel:  # 6.18+: objects wait in per-CPU rcu_free sheaves until one fills
        time.sleep(DRAIN_S / 2)
        marks["quiet_end"] = time.time()  # the flush writes sysfs: kfree_rcu of its own
        marks["sheaf_flush"] = sheaves.flush_kmalloc_sheaves()
        time.sleep(DRAIN_S / 2)
    else:
        time.sleep(DRAIN_S)
    marks["drained"] = time.time()
    marks.setdefault("quiet_end", marks["drained"])
    driver.stdin.close()  # closes the sockets: their last option blocks go to kfree_rcu too
    driver.wait(timeout=60)
    marks["driver_exit"] = time.time()
    if sheaf_kernel:  # those last blocks wait in a sheaf too
        time.sleep(DRAIN_S / 2)
        marks["closed_flush"] = sheaves.flush_kmalloc_sheaves()
        time.sleep(DRAIN_S / 2)
    else:
        time.sleep(DRAIN_S)
    marks["closed"] = time.time()
    rec.send_signal(signal.SIGINT)
    rc = rec.wait(timeout=60)
    print("RCUPENDING-RESULT " + json.dumps({"record_rc": rc, "driver_rc": driver.returncode,
                                             "truth": truth, "marks": marks,
                                             "recording": str(out)}), flush=True)


if __name__ == "__main__":
    main()
