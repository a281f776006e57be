"""Runs INSIDE a lab VM: `rcupending record --interval 0.2` around a native optlen-4 kvfree_rcu
flood and its drain, then prints RCUPENDING-RESULT with what it did. The recording goes to the
directory given (a --rwdir of the host); the host test checks every snapshot."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package first

from rcupending_tools.stress import sheaves  # noqa: E402

CLI = [sys.executable, "-m", "rcupending_tools.cli"]
QUIET_S = 12  # let the kfree_rcu() objects of boot and attach drain before the flood
DRAIN_S = 25


def wait_for_baseline(path: Path, timeout: float = 300) -> None:
    """The recorder has attached once its first snapshot is on disk (bcc compiles first)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= 2:
            return
        time.sleep(0.5)
    raise SystemExit(f"no snapshot in {path} after {timeout} s")


def main() -> None:
    out = Path(sys.argv[1]) / "reconcile.jsonl"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rec = subprocess.Popen([*CLI, "record", "-o", str(out), "--interval", "0.2", "--force"])
    wait_for_baseline(out)
    time.sleep(QUIET_S)
    marks = {"flood_start": time.time()}
    flood = subprocess.run([*CLI, "stress", "kvfree", "--driver", "native", "--count",
                            str(count), "--optlen", "4", "--json"], capture_output=True,
                           text=True)
    marks["flood_end"] = time.time()
    time.sleep(DRAIN_S / 2)
    marks["sheaf_flush"] = sheaves.flush_kmalloc_sheaves()  # 6.18+: sheaves wait to fill
    time.sleep(DRAIN_S / 2)
    marks["drained"] = time.time()
    rec.send_signal(signal.SIGINT)
    rc = rec.wait(timeout=60)
    truth = json.loads(flood.stdout.splitlines()[-1]) if flood.returncode == 0 else None
    print("RCUPENDING-RESULT " + json.dumps({"record_rc": rc, "flood_rc": flood.returncode,
                                             "flood_err": flood.stderr[-2000:], "truth": truth,
                                             "marks": marks, "recording": str(out)}), flush=True)


if __name__ == "__main__":
    main()
