"""CSV and JSON-lines export: tidy rows that round-trip to the recording's own values."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from rcupending_tools.pipeline import recording
from rcupending_tools.surfaces import samples as metrics
from rcupending_tools.surfaces.export import read_csv
from tests.conftest import run_cli
from tests.unit.surfaces_fixtures import REPO, SHIPPED, full_snapshots, write_recording


def export_csv(rec_path, tmp_path) -> pd.DataFrame:
    out = tmp_path / "out.csv"
    proc = run_cli("export", str(rec_path), "--csv", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return read_csv(out)


def value(df: pd.DataFrame, seq: int, metric: str, **labels) -> int:
    sel = (df["seq"] == seq) & (df["metric"] == metric)
    for k, v in labels.items():
        sel &= df[k] == v
    rows = df[sel]
    assert len(rows) == 1, (seq, metric, labels, rows)
    return rows["value"].iloc[0]


def test_csv_columns_are_the_documented_ones(tmp_path):
    df = export_csv(SHIPPED, tmp_path)
    assert tuple(df.columns) == metrics.CSV_COLUMNS
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### CSV columns") :]
    for col in metrics.CSV_COLUMNS:
        assert re.search(rf"^\| `{col}` \|", table, re.M), f"README does not document {col}"


def test_shipped_recording_csv_round_trips_to_its_totals(tmp_path):
    rec = recording.read(SHIPPED, warn=None)
    df = export_csv(SHIPPED, tmp_path)
    assert sorted(df["seq"].unique()) == [s["seq"] for s in rec.snapshots]
    for s in rec.snapshots:
        kv = s["kvfree_rcu"]
        seq = s["seq"]
        assert value(df, seq, "kvfree_rcu_enqueued_objects_total") == kv["enqueued"]["objects"]
        for kind, n in kv["enqueued"]["by_kind"].items():
            assert value(df, seq, "kvfree_rcu_enqueued_objects_by_kind_total", kind=kind) == n
        for cpu, n in enumerate(kv["enqueued"]["by_cpu"]):
            assert value(df, seq, "kvfree_rcu_enqueued_objects_by_cpu_total", cpu=cpu) == n
        for p in kv["by_process"]:
            assert (
                value(
                    df,
                    seq,
                    "kvfree_rcu_process_enqueued_objects_total",
                    tgid=p["tgid"],
                    comm=p["comm"],
                )
                == p["objects"]
            )
        if "pending" in kv:
            assert value(df, seq, "kvfree_rcu_pending_bytes") == kv["pending"]["bytes"]
            assert value(df, seq, "kvfree_rcu_freed_objects_total") == kv["freed"]["objects"]
            for path, v in kv["freed"]["by_path"].items():
                assert (
                    value(df, seq, "kvfree_rcu_freed_objects_by_path_total", path=path)
                    == v["objects"]
                )
        assert value(df, seq, "lost_events_total") == s["lost"]["total"]
        row = df[df["seq"] == seq].iloc[0]
        assert row["elapsed_s"] == pytest.approx(s["elapsed_s"], abs=1e-6)
        assert row["kernel_release"] == s["provenance"]["kernel_release"]
        assert pd.Timestamp(row["timestamp"]).timestamp() == pytest.approx(s["time"], abs=1e-5)
    # per-CPU rows add up to the total, at the end too
    last = rec.last["seq"]
    cpus = df[(df["seq"] == last) & (df["metric"] == "kvfree_rcu_enqueued_objects_by_cpu_total")]
    assert cpus["value"].sum() == rec.last["kvfree_rcu"]["enqueued"]["objects"]


def test_every_family_and_histogram_round_trips(tmp_path):
    snaps = full_snapshots(5, cpus=3)
    path = write_recording(tmp_path / "r.jsonl", snaps)
    df = export_csv(path, tmp_path)
    last = snaps[-1]
    assert (
        value(df, 4, "rcu_pending_enqueued_objects_total")
        == last["rcu_pending"]["enqueued"]["objects"]
    )
    assert (
        value(df, 4, "nolock_failures_by_cpu_total", cpu=2)
        == last["nolock"]["by_cpu"][2]["failures"]
    )
    assert (
        value(df, 4, "kvfree_rcu_enqueued_bytes_by_route_total", route="krc")
        == last["kvfree_rcu"]["enqueued"]["by_route"]["krc"]["bytes"]
    )
    assert value(df, 4, "kvfree_rcu_stress_enqueued_objects_total") == 600
    # histograms: cumulative buckets in the family's unit (ns -> s), per-path parts labelled
    h = last["histograms"]["kvfree_rcu.latency_ns"]["buckets"]
    assert value(df, 4, "kvfree_rcu_latency_seconds_bucket", le="0.016777216") == h[0][2]
    assert value(df, 4, "kvfree_rcu_latency_seconds_bucket", le="+Inf") == h[0][2] + h[1][2]
    assert (
        value(df, 4, "kvfree_rcu_latency_by_path_seconds_bucket", path="bulk", le="+Inf") == 4 * 90
    )
    # nothing but the documented metrics
    names = set(df["metric"])
    known = {f.sample_name for f in metrics.METRICS} | {
        f.name + suf for f in metrics.METRICS if f.kind == "histogram" for suf in ("_bucket",)
    }
    assert names <= known, names - known


def test_jsonl_export_is_the_snapshots(tmp_path):
    snaps = full_snapshots(3)
    path = write_recording(tmp_path / "r.jsonl", snaps)
    out = tmp_path / "snaps.jsonl"
    proc = run_cli(
        "export", str(path), "--jsonl", str(out), "--csv", str(tmp_path / "x.csv"), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(ln) for ln in out.read_text().splitlines()] == snaps
    assert (tmp_path / "x.csv").read_text().startswith("timestamp,seq,")


def test_export_needs_an_output(tmp_path):
    proc = run_cli("export", str(SHIPPED), timeout=120)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "rcupending: error: nothing to export: give --csv FILE and/or --jsonl FILE"
    )


def test_shipped_recording_matches_its_stress_truth():
    """The recording's stress workers enqueued exactly what the stress says it made (the
    recorder followed every object: its per-process rows are exact)."""
    truth = json.loads(SHIPPED.with_name(SHIPPED.stem + ".truth.json").read_text())
    rec = recording.read(SHIPPED, warn=None)
    assert rec.provenance["lab"]["spec"] == "debian:6.12"
    procs = {p["tgid"]: p["objects"] for p in rec.last["kvfree_rcu"]["by_process"]}
    pids = truth["expected"]["pids"]
    # plus one per socket closed with options set: inet_sock_destruct() kfree_rcu()s the last
    # option block in the worker (the recording runs past the stress's end)
    want = truth["expected"]["kvfree_rcu"]["enqueued"] + truth["expected"]["sockets_with_options"]
    assert sum(procs.get(pid, 0) for pid in pids) == want
