"""A real Prometheus (Debian's) scrapes `rcupending serve --replay` of the shipped recording,
then judges every dashboard expression and the alert rules on what it stored: the oracle is
Prometheus' parser, storage and PromQL engine, and the recording file read here directly."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import RCUPENDING, REPO
from tests.integration.promql import (
    Prometheus,
    dashboard_exprs,
    evaluate,
    problems,
)

pytestmark = pytest.mark.integration

RECORDING = REPO / "recordings" / "debian-6.12-kvfree-stress.jsonl"
ALERTS = REPO / "dashboards" / "alerts.yml"
# families the recording has no data for (checked against it below)
ABSENT = ("rcupending_rcu_pending_", "rcupending_nolock_", "rcupending_self_bpf_run_",
          "rcupending_kvfree_rcu_stress_")
SPEED = 6  # the 57 s recording in ~10 s: scraped each second, counters moving between scrapes


def snapshots() -> list[dict]:
    lines = RECORDING.read_text().splitlines()
    return [json.loads(ln) for ln in lines[1:] if ln.strip()]


def grafana_regex(value: str) -> str:
    """How Grafana's Prometheus data source writes one selected value of a multi-value
    variable into a =~ matcher (prometheusSpecialRegexEscape: a regex escape, itself escaped
    for PromQL's double-quoted string)."""
    return "(" + re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value.replace("\\", "\\" * 4)) + ")"


def histogram_quantile(q: float, buckets: list[list[int]], scale: float) -> float:
    """Prometheus' histogram_quantile on a snapshot's log2 buckets ([lo, hi, count]), computed
    here from the recording: linear interpolation inside the bucket holding rank q * total,
    the first bucket starting at 0."""
    bounds = sorted({b[1] for b in buckets})
    cum = [sum(c for _, hi, c in buckets if hi <= le) for le in bounds]
    rank = q * cum[-1]
    for i, le in enumerate(bounds):
        if cum[i] >= rank:
            lo, before = (bounds[i - 1], cum[i - 1]) if i else (0, 0)
            return (lo + (le - lo) * (rank - before) / (cum[i] - before)) * scale
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def replay(prom_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    """serve --replay scraped to its end by a Prometheus that also evaluates alerts.yml."""
    serve = subprocess.Popen(
        [*RCUPENDING, "serve", "--replay", str(RECORDING), "--speed", str(SPEED), "--port", "0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stderr.readline()
        m = re.search(r"serving http://(127\.0\.0\.1:\d+)/metrics", line)
        assert m, f"serve did not start: {line}{serve.stderr.read() if serve.poll() else ''}"
        target = m.group(1)
        with Prometheus(prom_bin, [target], rule_files=[ALERTS],
                        workdir=tmp_path_factory.mktemp("prom")) as prom:
            start = time.time()
            last = snapshots()[-1]
            prom.wait_for(f"rcupending_snapshot_seq == {last['seq']}", timeout=120)
            time.sleep(3)  # the served last snapshot, scraped a few more times
            end = time.time()
            yield prom, target, start, end
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_every_dashboard_expression_is_accepted_and_has_data(replay):
    prom, target, start, end = replay
    exprs = dashboard_exprs()
    assert len(exprs) > 50, exprs  # the walk found the dashboard's queries
    last = snapshots()[-1]
    assert last["rcu_pending"] is None and last["nolock"] is None
    assert last["self_cost"]["bpf_run_count"] is None  # recorded without BPF run-time stats
    assert last["kvfree_rcu"].get("by_stress") is None
    for instance in (".*", grafana_regex(target)):  # "All", then this one instance selected
        rows = evaluate(prom, exprs, prom.variables(instance), start, end)
        assert not problems(rows), "\n".join(problems(rows))
        # what the recording lacks (no rcu_pending, nolock or BPF run-time stats; recorded
        # beside a stress, not by it) is all that is missing: every other panel shows data
        for r in rows:
            lacks = [n for n in r["names"] if n.startswith(ABSENT)]
            assert (r["series"] == 0) if lacks else (not r["missing"] and r["finite_points"]), r
        assert sum(1 for r in rows if r["finite_points"]) > 35
    variable = [r for r in rows if r["panel"] == "templating"]
    assert [r["values"] for r in variable] == [[target]], variable


def test_stored_values_equal_the_recording(replay):
    prom, _target, start, end = replay
    snaps = snapshots()
    last, first = snaps[-1], snaps[0]
    kv = last["kvfree_rcu"]
    assert prom.value("rcupending_snapshot_seq") == last["seq"]
    assert prom.value("rcupending_kvfree_rcu_enqueued_objects_total") == kv["enqueued"]["objects"]
    assert prom.value("rcupending_kvfree_rcu_freed_bytes_total") == kv["freed"]["bytes"]
    assert prom.value("rcupending_kvfree_rcu_pending_bytes") == kv["pending"]["bytes"]
    for cpu, n in enumerate(kv["pending"]["bytes_by_cpu"]):
        assert prom.value(f'rcupending_kvfree_rcu_pending_bytes_by_cpu{{cpu="{cpu}"}}') == n
    p = kv["by_process"][0]
    assert prom.value(f'rcupending_kvfree_rcu_process_pending_bytes{{tgid="{p["tgid"]}"}}') == (
        p["pending_bytes"])
    prov = last["provenance"]
    assert prom.value(
        f'rcupending_source_info{{source="{last["source"]}",'
        f'kernel_release="{prov["kernel_release"]}",lab_spec="{prov["lab"]["spec"]}"}}') == 1
    kvp = next(x for x in last["probes"] if x["name"] == "kvfree_call_rcu")
    assert prom.value(f'rcupending_probe_info{{probe="kvfree_call_rcu",status="{kvp["status"]}",'
                      f'mechanism="{kvp["mechanism"]}"}}') == 1
    # the counter moved while Prometheus watched, by no more than the recording did
    window = f"[{int(end - start) + 2}s]"
    grew = prom.value(f"max_over_time(rcupending_kvfree_rcu_enqueued_objects_total{window}) - "
                      f"min_over_time(rcupending_kvfree_rcu_enqueued_objects_total{window})")
    assert 0 < grew <= kv["enqueued"]["objects"] - first["kvfree_rcu"]["enqueued"]["objects"]
    # histogram exposition: cumulative buckets in seconds, as Prometheus interpolates them
    h = last["histograms"]["kvfree_rcu.latency_ns"]["buckets"]
    for q in (0.5, 0.9, 0.99):
        got = prom.value(f"histogram_quantile({q}, rcupending_kvfree_rcu_latency_seconds_bucket)")
        assert got == pytest.approx(histogram_quantile(q, h, 1e-9), rel=1e-9), q


def test_alert_rules_load_and_evaluate_in_prometheus(replay):
    """The real server loads dashboards/alerts.yml and evaluates every rule on the exporter's
    series without an error (promtool's tests use synthetic series only)."""
    prom = replay[0]
    groups = prom.api("rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    # "ok" once evaluated without error ("unknown" before the first evaluation)
    assert rules and all(r["health"] == "ok" for r in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    names = {r["name"] for r in rules}
    shipped = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert names == shipped
