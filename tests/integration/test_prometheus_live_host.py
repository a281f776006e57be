"""`rcupending serve` live on this host's kernel, scraped by Debian's Prometheus: every dashboard
expression is accepted and has data where the series exist, and a family has series exactly
when its probe is attached (or a stand-in) by the exporter's own probe table, as Prometheus
stored it. On our hosts (fentry refused, no kprobes) that is the nolock stand-in: the dashboard's
nolock panels, which no lab VM of this tier can fill (6.12 has no nolock allocator)."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.conftest import RCUPENDING, REPO
from tests.integration.promql import (
    Prometheus,
    dashboard_exprs,
    evaluate,
    problems,
)

pytestmark = [pytest.mark.integration, pytest.mark.host]

FAMILY = {"kvfree_call_rcu": "rcupending_kvfree_rcu_", "rcu_pending_enqueue":
          "rcupending_rcu_pending_", "alloc_pages_nolock": "rcupending_nolock_"}
SEEN = ("attached", "stand-in")


def test_live_serve_on_this_host(prom_bin):
    serve = subprocess.Popen([*RCUPENDING, "serve", "--port", "0", "--interval", "1"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stderr.readline()
        m = re.search(r"serving http://(127\.0\.0\.1:\d+)/metrics \(live\)", line)
        assert m, f"serve did not start: {line}{serve.stderr.read() if serve.poll() else ''}"
        with Prometheus(prom_bin, [m.group(1)]) as prom:
            start = time.time()
            seq = prom.wait_for("rcupending_snapshot_seq", timeout=60)
            prom.wait_for(f"rcupending_snapshot_seq >= {seq + 5}", timeout=60)
            end = time.time()
            rows = evaluate(prom, dashboard_exprs(), prom.variables(), start, end)
            probes = {s["metric"]["probe"]: s["metric"]["status"]
                      for s in prom.query("rcupending_probe_info")["data"]["result"]}
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    assert not problems(rows), "\n".join(problems(rows))
    assert set(probes) == set(FAMILY), probes
    assert any(s in SEEN for s in probes.values()), probes  # serve refuses to start otherwise
    for probe, prefix in FAMILY.items():
        fam = [r for r in rows if any(n.startswith(prefix) for n in r["names"])]
        if probes[probe] in SEEN:
            assert any(r["finite_points"] for r in fam), (probe, probes[probe])
        else:
            assert all(r["series"] == 0 for r in fam), (probe, probes[probe])
