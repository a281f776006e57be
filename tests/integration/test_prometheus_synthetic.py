"""Every dashboard expression with data: `serve --replay` of a synthetic recording in which every
family moves (schema-valid snapshots: tests/unit/surfaces_fixtures.py, plus the nolock splits,
the tool's cost and the per-path grace-period histograms it lacks), scraped by Debian's
Prometheus. The real recording (test_prometheus_replay.py), this host (test_prometheus_live_host)
and the lab VM (test_fleet_vm.py) each lack some families; here none may be missing, so a
panel whose query cannot match what serve exposes (a label, a suffix, a unit) fails."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from rcupending_tools.pipeline.schema import validation_errors
from tests.conftest import RCUPENDING, REPO
from tests.integration.promql import (
    Prometheus,
    dashboard_exprs,
    evaluate,
    problems,
)
from tests.unit.surfaces_fixtures import full_snapshots, write_recording

pytestmark = pytest.mark.integration

N = 30  # snapshots 1 s apart, replayed at 1x: the replay outlasts Prometheus's start (seconds
# on a loaded machine) by many rate windows, else every histogram is flat once scraped (NaN)


def every_family(n: int = N) -> list[dict]:
    snaps = full_snapshots(n, cpus=2)
    for i, s in enumerate(snaps):
        nl = s["nolock"]
        nl["pages"], nl["bytes"] = i * 70, i * 70 * 4096
        nl["by_order"] = [{"order": 0, "attempts": i * 60, "failures": i},
                          {"order": None, "attempts": i * 20, "failures": i}]
        nl["by_context"] = {c: {"attempts": i * 20, "failures": i}
                            for c in ("task", "softirq", "hardirq", "nmi", "unknown")}
        nl["by_caller"] = [{"caller": "bpf_stream_page_replace", "attempts": i * 80,
                            "failures": i * 2}]
        nl["misses"] = {"recursion": i, "kprobe": None}
        s["self_cost"] = {"cpu_seconds": i * 0.05, "rss_bytes": 90 << 20,
                          "bpf_run_ns": i * 3_000_000, "bpf_run_count": i * 1000}
        s["kvfree_rcu"].setdefault("events", {})["bulk_pages"] = i * 3
        s["histograms"]["kvfree_rcu.latency_gps.bulk"] = {"unit": "grace periods + 1",
                                                          "buckets": [[2, 4, i * 40 + 1]]}
        assert validation_errors(s) == [], validation_errors(s)
    return snaps


def test_every_expression_has_data_when_every_family_moves(prom_bin: Path, tmp_path: Path):
    rec = write_recording(tmp_path / "every-family.jsonl", every_family())
    serve = subprocess.Popen([*RCUPENDING, "serve", "--replay", str(rec), "--speed", "1",
                              "--port", "0"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stderr.readline()
        m = re.search(r"serving http://(127\.0\.0\.1:\d+)/metrics", line)
        assert m, f"serve did not start: {line}{serve.stderr.read() if serve.poll() else ''}"
        with Prometheus(prom_bin, [m.group(1)], workdir=tmp_path / "prom") as prom:
            start = time.time()
            prom.wait_for(f"rcupending_snapshot_seq == {N - 1}", timeout=60)
            time.sleep(2)
            rows = evaluate(prom, dashboard_exprs(), prom.variables(), start, time.time())
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    assert not problems(rows), "\n".join(problems(rows))
    empty = [r["query"] for r in rows if r["missing"] or not r["finite_points"]]
    assert not empty, empty
