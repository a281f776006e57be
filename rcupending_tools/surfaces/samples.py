"""Snapshot -> flat metric samples: the one mapping behind CSV, Prometheus and the report.

Every metric is declared once, by its family (families/*.py `METRICS`) or here (CORE: the
tool's own), without the `rcupending_` prefix Prometheus adds; a counter's samples carry
`_total`. Families of a metric group that is null in a snapshot (probe not
attached), or of a field an older snapshot does not have, have no samples. Histograms (schema
`histograms`: name -> {unit, buckets}) become Prometheus histograms with cumulative `le`
buckets: the known ones (HISTOGRAMS) under their family, per-path parts with a `path` label;
any other as `<name>_<unit>` (nanoseconds converted to seconds).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from ..families import FAMILIES
from ..families.base import Metric, Sample
from ..pipeline.schema import Snapshot

PREFIX = "rcupending_"

# The tool's own metrics: lost events, its cost, where the data comes from.
CORE: tuple[Metric, ...] = (
    Metric("lost_events", "counter", "events the kernel side could not record"),
    Metric("lost_events_by_reason", "counter", "lost events by reason", ("reason",)),
    Metric("self_cpu_seconds", "counter",
           "user+system CPU time of the collecting process since attach (the tool's own cost)"),
    Metric("self_rss_bytes", "gauge", "resident memory of the collecting process"),
    Metric("self_bpf_run_seconds", "counter",
           "run time of the collector's BPF programs (counted only while BPF stats are enabled)"),
    Metric("self_bpf_run_events", "counter",
           "runs of the collector's BPF programs (counted only while BPF stats are enabled)"),
    Metric("snapshot_seq", "gauge", "number of the snapshot in its run (0 = baseline at attach)"),
    Metric("elapsed_seconds", "gauge", "seconds since the probes attached"),
    Metric("snapshot_time_seconds", "gauge", "Unix time of the snapshot's map read"),
    Metric("probe_info", "info",
           "one series per probe: its status (attached, stand-in, blocked, absent) and mechanism",
           ("probe", "function", "status", "mechanism")),
    Metric("source_info", "info",
           "where the data comes from: source (live, lab-vm, ...), kernel, tool, host, lab spec",
           ("source", "kernel_release", "tool_version", "hostname", "lab_spec")),
)
METRICS: tuple[Metric, ...] = tuple(m for f in FAMILIES for m in f.metrics) + CORE
BY_NAME = {m.name: m for m in METRICS}
HISTOGRAMS = {h.name: h for f in FAMILIES for h in f.histogram_families}

# The label columns of the tidy CSV: every label a metric uses (the documented order first, a
# new label after them), then `le`.
_DOCUMENTED = ("kind", "route", "path", "cpu", "tgid", "comm", "reason", "order", "context",
               "caller")
_USED = dict.fromkeys(lab for m in METRICS if m.kind != "info" for lab in m.labels)
LABEL_COLUMNS = (*(c for c in _DOCUMENTED if c in _USED), *(c for c in _USED
                                                            if c not in _DOCUMENTED), "le")
CSV_COLUMNS = (
    "timestamp",
    "seq",
    "elapsed_s",
    "source",
    "kernel_release",
    "metric",
    *LABEL_COLUMNS,
    "value",
)

_UNIT_SCALE = {
    "ns": ("seconds", 1e-9),
    "nsecs": ("seconds", 1e-9),
    "us": ("seconds", 1e-6),
    "usecs": ("seconds", 1e-6),
    "ms": ("seconds", 1e-3),
    "s": ("seconds", 1.0),
    "seconds": ("seconds", 1.0),
    "byte": ("bytes", 1.0),
    "bytes": ("bytes", 1.0),
}


def _safe(s: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", s.lower()).strip("_") or "x"


def histogram_family(name: str, unit: str) -> tuple[str, dict[str, str], float]:
    """(family, labels, factor to the family's unit) of histogram `name` recorded in `unit`."""
    if name in HISTOGRAMS:
        h = HISTOGRAMS[name]
        return h.metric, {}, h.scale
    base, _, part = name.rpartition(".")
    if base in HISTOGRAMS:
        h = HISTOGRAMS[base]
        return h.by_metric, {h.label: part}, h.scale
    unit_name, scale = _UNIT_SCALE.get(unit.lower(), (_safe(unit), 1.0))
    return f"{_safe(name)}_{unit_name}", {}, scale


def histogram_buckets(h: dict[str, Any], scale: float = 1.0) -> tuple[list[tuple[float, int]], int]:
    """Cumulative (le, count) scaled to the family's unit, and the total count."""
    out: list[tuple[float, int]] = []
    cum = 0
    for _low, high, count in sorted(h.get("buckets", []), key=lambda b: b[1]):
        cum += count
        out.append((high * scale, cum))
    return out, cum


def _c(out: list[Sample], name: str, value: float, **labels: Any) -> None:
    m = BY_NAME[name]
    out.append(Sample(name, m.sample_name, {k: str(v) for k, v in labels.items()}, value))


def samples(snap: Snapshot, *, info: bool = True) -> list[Sample]:
    """Every metric sample of one snapshot (info families only with info=True)."""
    out: list[Sample] = []
    for fam in FAMILIES:
        if (section := snap.get(fam.name)) is not None:
            out.extend(fam.samples(section))
    lost = snap["lost"]
    _c(out, "lost_events", lost["total"])
    for reason, n in lost["by_reason"].items():
        _c(out, "lost_events_by_reason", n, reason=reason)
    if (sc := snap.get("self_cost")) is not None:
        _c(out, "self_cpu_seconds", sc["cpu_seconds"])
        _c(out, "self_rss_bytes", sc["rss_bytes"])
        if sc.get("bpf_run_ns") is not None:
            _c(out, "self_bpf_run_seconds", sc["bpf_run_ns"] * 1e-9)
        if sc.get("bpf_run_count") is not None:
            _c(out, "self_bpf_run_events", sc["bpf_run_count"])
    for hname, h in sorted((snap.get("histograms") or {}).items()):
        fam, labels, scale = histogram_family(hname, h.get("unit", ""))
        buckets, total = histogram_buckets(h, scale)
        for le, cum in buckets:
            out.append(Sample(fam, fam + "_bucket", {**labels, "le": _num(le)}, cum))
        out.append(Sample(fam, fam + "_bucket", {**labels, "le": "+Inf"}, total))  # = count
    _c(out, "snapshot_seq", snap["seq"])
    _c(out, "elapsed_seconds", snap["elapsed_s"])
    _c(out, "snapshot_time_seconds", snap["time"])
    if info:
        for p in snap["probes"]:
            _c(
                out,
                "probe_info",
                1,
                probe=p["name"],
                function=p["function"],
                status=p["status"],
                mechanism=p.get("mechanism") or "",
            )
        prov = snap["provenance"]
        _c(
            out,
            "source_info",
            1,
            source=snap["source"],
            kernel_release=prov.get("kernel_release", ""),
            tool_version=prov.get("tool_version", ""),
            hostname=prov.get("hostname", ""),
            lab_spec=(prov.get("lab") or {}).get("spec", ""),
        )
    return out


def _num(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def timestamp(t: float) -> str:
    """ISO 8601 UTC with microseconds, the CSV `timestamp` of a snapshot `time`."""
    return _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat(timespec="microseconds")


def tidy_rows(snapshots: list[Snapshot]) -> list[dict[str, Any]]:
    """Tidy rows (CSV_COLUMNS) of counters, gauges and histograms; info families stay out."""
    rows = []
    for s in snapshots:
        base = {
            "timestamp": timestamp(s["time"]),
            "seq": s["seq"],
            "elapsed_s": s["elapsed_s"],
            "source": s["source"],
            "kernel_release": s["provenance"].get("kernel_release", ""),
        }
        for smp in samples(s, info=False):
            if smp.family in ("snapshot_seq", "elapsed_seconds", "snapshot_time_seconds"):
                continue  # columns already
            row = dict(base, metric=smp.name, value=smp.value)
            for col in LABEL_COLUMNS:
                row[col] = smp.labels.get(col)
            if row.get("tgid") == "other":  # the rows-not-shown row: comm `other`, no tgid
                row["tgid"] = None
            rows.append(row)
    return rows


def dataframe(snapshots: list[Snapshot]):  # noqa: ANN201 - pandas imported lazily
    import pandas as pd  # heavy: imported on first use, not at start-up

    df = pd.DataFrame(tidy_rows(snapshots), columns=list(CSV_COLUMNS))
    for col in ("cpu", "tgid"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df
