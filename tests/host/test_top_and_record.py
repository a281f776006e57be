"""Host tier: `top` on this machine's kernel explains a degradation instead of crashing, without
booting a lab VM (--no-lab); `record` writes a recording of what attaches here."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from rcupending_tools.pipeline import recording
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="host tier needs root")


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def test_top_explains_its_degradation_and_stays_on_this_host(attachable):
    proc = run_cli("top", "--no-lab", "0.5", "2", timeout=300, stdin=subprocess.DEVNULL)
    no_traceback(proc)
    assert "booting" not in proc.stderr  # --no-lab never starts a VM
    release = os.uname().release
    if "refuses the kvfree_call_rcu probe" not in proc.stderr:  # a host that allows it
        assert proc.returncode == 0, proc.stderr
        assert f"LIVE · this host's kernel {release}" in proc.stdout
        return
    # this machine kind: the reason, every other probe's status, then what does attach
    assert "kprobe:kvfree_call_rcu" not in attachable, (attachable, proc.stderr)
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"this host's kernel {release} refuses the kvfree_call_rcu probe: ")
    assert any(
        r in first
        for r in (
            "BPF tracing programs refused",
            "kprobes unavailable",
            "not traceable",
            "attach refused",
        )
    ), first
    assert "rcu_pending_enqueue: " in proc.stderr and "alloc_pages_nolock: " in proc.stderr
    if proc.returncode == 0:
        assert "--no-lab: showing what does attach here" in proc.stderr
        assert proc.stdout.count("LIVE (degraded)") == 2  # COUNT=2 frames, then it ends
        assert "kvfree_rcu  n/a (blocked: " in proc.stdout
        assert "q quit" in proc.stdout
    else:  # only where bcc cannot attach anything either
        assert not attachable, (attachable, proc.stderr)
        err = proc.stderr.strip().splitlines()[-1]
        assert err.startswith("rcupending: error: nothing to show live"), err


def test_record_on_this_host(tmp_path, attachable):
    out = tmp_path / "host.jsonl"
    proc = run_cli("record", "-o", str(out), "--duration", "1", "--interval", "0.5", timeout=300)
    no_traceback(proc)
    if proc.returncode != 0:  # nothing attachable: one clear line, only where bcc agrees
        assert not attachable, (attachable, proc.stderr)
        assert proc.stderr.startswith("rcupending: error: no probe could attach"), proc.stderr
        return
    rec = recording.read(out, warn=None)
    assert not rec.truncated and len(rec.snapshots) >= 3  # baseline + 2 intervals
    assert [s["seq"] for s in rec.snapshots] == list(range(len(rec.snapshots)))
    assert rec.provenance["kernel_release"] == os.uname().release
    assert rec.provenance["command"].startswith("rcupending record -o ")
    assert {s["source"] for s in rec.snapshots} == {"live"}
    assert f"recorded {len(rec.snapshots)} snapshots to {out}" in proc.stderr
    again = run_cli("record", "-o", str(out), "--duration", "1", timeout=300)
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_record_to_stdout(tmp_path, attachable):
    proc = run_cli("record", "-o", "-", "--duration", "0.5", "--interval", "0.5", timeout=300)
    no_traceback(proc)
    if proc.returncode != 0:
        assert not attachable, (attachable, proc.stderr)
        assert proc.stderr.startswith("rcupending: error: no probe could attach"), proc.stderr
        return
    out = tmp_path / "stdout.jsonl"
    out.write_text(proc.stdout)
    rec = recording.read(out, warn=None)
    assert len(rec.snapshots) == 2 and "recorded 2 snapshots to stdout" in proc.stderr


def test_serve_live_on_loopback(attachable):
    import re
    import signal
    import sys
    import urllib.request

    from tests.conftest import REPO

    proc = subprocess.Popen(
        [sys.executable, "-m", "rcupending_tools.cli", "serve", "--port", "0", "--interval", "0.5"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        if not line.startswith("serving "):  # nothing attachable: one clear line
            proc.wait(timeout=60)
            assert not attachable, (attachable, line)
            assert line.startswith("rcupending: error: no probe could attach"), line
            return
        m = re.match(r"serving http://127\.0\.0\.1:(\d+)/metrics \(live\)", line)
        assert m, line
        text = ""
        for _ in range(100):  # bounded: until the first snapshot is exported
            with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=10) as r:
                text = r.read().decode()
            # a sample line (the HELP line also names the family before any snapshot)
            if re.search(r"^rcupending_snapshot_seq ", text, re.M):
                break
            time.sleep(0.1)
        assert re.search(r"^rcupending_snapshot_seq ", text, re.M), text[-500:]
        assert f'kernel_release="{os.uname().release}"' in text
        assert re.search(r'rcupending_probe_info\{[^}]*probe="kvfree_call_rcu"', text)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
