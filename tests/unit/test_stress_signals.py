"""Ctrl-C of `stress kvfree --duration` (the terminal sends SIGINT to the whole process group):
exit 130, no traceback (the workers leave it to the command), no worker left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO


def test_ctrl_c_stops_every_worker_without_a_traceback():
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcupending_tools.cli", "stress", "kvfree", "--duration", "60",
         "--workers", "3"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        # as from a terminal: a test run started in the background by a shell inherits
        # SIGINT ignored, and Python then keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers: list[int] = []
    for _ in range(200):  # bounded: until the three workers run
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        workers = [int(p) for p in out.stdout.split()]
        if len(workers) >= 3:
            break
        time.sleep(0.05)
    assert len(workers) >= 3, workers
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    for pid in workers:  # gone (or a zombie that its parent's exit reaps)
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        assert state == "Z", (pid, state)
