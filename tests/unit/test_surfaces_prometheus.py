"""Prometheus: exported values equal the snapshot's; `serve --replay` moves; the Grafana
dashboard queries exactly the exported names and covers every exported family."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from rcupending_tools.pipeline import recording
from rcupending_tools.surfaces import grafana, prom
from rcupending_tools.surfaces import samples as metrics
from tests.unit.surfaces_fixtures import REPO, SHIPPED, full_snapshots


def parse(text: str) -> dict[str, list]:
    """family name -> samples (name, labels, value)."""
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def one(fams: dict, family: str, sample: str | None = None, **labels) -> float:
    hits = [
        s
        for s in fams[family]
        if (sample is None or s.name == sample)
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(hits) == 1, (family, sample, labels, hits)
    return hits[0].value


def test_exposition_values_equal_the_snapshot():
    s = full_snapshots(5, cpus=3)[-1]
    fams = parse(prom.exposition(s))
    kv = s["kvfree_rcu"]
    p = "rcupending_"
    assert one(fams, p + "kvfree_rcu_enqueued_objects") == kv["enqueued"]["objects"]
    assert (
        one(fams, p + "kvfree_rcu_enqueued_objects_by_cpu", cpu="2") == kv["enqueued"]["by_cpu"][2]
    )
    assert one(fams, p + "kvfree_rcu_pending_bytes") == kv["pending"]["bytes"]
    assert (
        one(fams, p + "kvfree_rcu_freed_objects_by_path", path="list")
        == kv["freed"]["by_path"]["list"]["objects"]
    )
    assert (
        one(fams, p + "kvfree_rcu_process_pending_bytes", tgid="100", comm="stress worker")
        == kv["by_process"][0]["pending_bytes"]
    )
    assert one(fams, p + "nolock_failures") == s["nolock"]["failures"]
    assert one(fams, p + "rcu_pending_enqueued_objects") == s["rcu_pending"]["enqueued"]["objects"]
    assert one(fams, p + "lost_events_by_reason", reason="task_map_full") == s["lost"]["total"]
    assert one(fams, p + "snapshot_seq") == s["seq"]
    assert one(fams, p + "probe_info", probe="alloc_pages_nolock", status="stand-in") == 1
    assert (
        one(
            fams,
            p + "source_info",
            source="lab-vm",
            lab_spec="debian:6.12",
            kernel_release="6.12.99-test",
        )
        == 1
    )
    # histogram in seconds, cumulative, with +Inf and count; per-path part labelled
    h = s["histograms"]["kvfree_rcu.latency_ns"]["buckets"]
    lat = p + "kvfree_rcu_latency_seconds"
    assert one(fams, lat, lat + "_bucket", le="0.016777216") == h[0][2]
    assert one(fams, lat, lat + "_bucket", le="+Inf") == h[0][2] + h[1][2]
    assert (
        one(
            fams,
            p + "kvfree_rcu_latency_by_path_seconds",
            p + "kvfree_rcu_latency_by_path_seconds_bucket",
            path="bulk",
            le="+Inf",
        )
        == 4 * 90
    )
    # names carry units; counters end in _total
    for f in text_string_to_metric_families(prom.exposition(s)):
        assert f.name.startswith("rcupending_")
        if f.type == "counter":
            assert all(x.name.endswith(("_total", "_created")) for x in f.samples)


def test_null_families_export_no_samples_but_stay_declared():
    s = full_snapshots(2)[-1]
    s["kvfree_rcu"] = None
    fams = parse(prom.exposition(s))
    assert fams["rcupending_kvfree_rcu_enqueued_objects"] == []
    assert set(fams) == prom.exported_families()


def _dashboard_names() -> tuple[set[str], list[str]]:
    dash = grafana.dashboard()
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs.append(v)
                elif k == "query" and isinstance(v, str | dict):
                    exprs.append(v if isinstance(v, str) else v.get("query", ""))
                else:
                    walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    walk(dash)
    names = {n for e in exprs for n in re.findall(r"\brcupending_[a-z0-9_]+", e)}
    return names, exprs


def test_grafana_dashboard_uses_exactly_the_exported_names():
    fams = {
        f.name: f for f in text_string_to_metric_families(prom.exposition(full_snapshots(3)[-1]))
    }
    assert set(fams) == prom.exported_families()
    sample_names = {
        f"{name}{suf}"
        for name, f in fams.items()
        for suf in {"counter": ["_total"], "histogram": ["_bucket"]}.get(f.type, [""])
    }
    used, exprs = _dashboard_names()
    assert exprs, "the dashboard has no queries"
    unknown = used - sample_names
    assert not unknown, f"dashboard queries name metrics that are not exported: {unknown}"
    missing = [
        name
        for name in fams
        if not any(
            u == name
            or u.startswith(name + "_")
            and u in sample_names
            and _family_of(u, sample_names, fams) == name
            for u in used
        )
    ]
    assert not missing, f"exported families missing from the dashboard: {missing}"


def _family_of(sample: str, sample_names: set[str], fams: dict) -> str:
    """The family a sample name belongs to (longest family-name prefix)."""
    return max((f for f in fams if sample == f or sample.startswith(f + "_")), key=len)


def test_dashboard_layout_has_no_overlap_and_a_panel_per_metric():
    dash = json.loads(json.dumps(grafana.dashboard()))  # JSON all the way
    cells: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows[:3] == ["kvfree_rcu", "rcu_pending", "nolock"]


def test_grafana_command_writes_the_dashboard(tmp_path):
    out = tmp_path / "d.json"
    r = subprocess.run([sys.executable, "-m", "rcupending_tools.cli", "grafana", "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == json.loads(json.dumps(grafana.dashboard()))
    again = subprocess.run([sys.executable, "-m", "rcupending_tools.cli", "grafana", "-o",
                            str(out)], capture_output=True, text=True, cwd=REPO)
    assert again.returncode != 0 and "--force" in again.stderr  # never overwritten silently


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return parse(r.read().decode())


def test_serve_replay_values_move_on_loopback():
    rec = recording.read(SHIPPED, warn=None)
    speed = 15  # the 45 s recording in ~3 s
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rcupending_tools.cli",
            "serve",
            "--replay",
            str(SHIPPED),
            "--port",
            "0",
            "--speed",
            str(speed),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        m = re.match(r"serving http://127\.0\.0\.1:(\d+)/metrics", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None else "")
        port = int(m.group(1))
        seen: list[tuple[int, int]] = []
        for _ in range(300):  # bounded: until the last snapshot is served
            fams = scrape(port)
            if fams["rcupending_snapshot_seq"]:
                seq = int(one(fams, "rcupending_snapshot_seq"))
                total = int(one(fams, "rcupending_kvfree_rcu_enqueued_objects"))
                if not seen or seen[-1] != (seq, total):
                    seen.append((seq, total))
                if seq == rec.last["seq"]:
                    break
            time.sleep(0.05)
        assert seen[-1] == (rec.last["seq"], rec.last["kvfree_rcu"]["enqueued"]["objects"])
        assert len({t for _, t in seen}) >= 3, f"values did not move: {seen}"
        assert [s for s, _ in seen] == sorted(s for s, _ in seen)
        assert [t for _, t in seen] == sorted(t for _, t in seen)  # a counter never goes back
        last = rec.last["kvfree_rcu"]
        assert one(fams, "rcupending_kvfree_rcu_pending_bytes") == last["pending"]["bytes"]
        assert (
            one(
                fams,
                "rcupending_source_info",
                lab_spec="debian:6.12",
                kernel_release=rec.provenance["kernel_release"],
            )
            == 1
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()


def test_exported_family_names_follow_the_conventions():
    for f in metrics.METRICS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", f.name)
        if f.kind == "counter":
            assert not f.name.endswith("_total")
        assert f.name.endswith(
            (
                "objects",
                "bytes",
                "seconds",
                "periods",
                "attempts",
                "failures",
                "events",
                "seq",
                "info",
                "by_cpu",
                "by_kind",
                "by_route",
                "by_path",
                "by_reason",
                "by_order",
                "by_context",
                "by_caller",
            )
        ), f.name
