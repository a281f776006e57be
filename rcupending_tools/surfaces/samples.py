"""Snapshot -> flat metric samples: the one mapping behind CSV, Prometheus and the report.

Every family is named here once (without the `rcupending_` prefix Prometheus adds); a counter's
samples carry `_total`. Families of a metric group that is null in a snapshot (probe not
attached), or of a field an older snapshot does not have, have no samples. Histograms (schema
`histograms`: name -> {unit, buckets}) become Prometheus histograms with cumulative `le`
buckets: the known ones (HISTOGRAMS) under their family, per-path parts with a `path` label;
any other as `<name>_<unit>` (nanoseconds converted to seconds).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any

from ..pipeline.schema import Snapshot

PREFIX = "rcupending_"


@dataclass(frozen=True)
class Family:
    name: str  # without prefix and without _total
    kind: str  # counter, gauge, info (gauge of value 1), histogram
    help: str
    labels: tuple[str, ...] = ()

    @property
    def sample_name(self) -> str:
        return self.name + ("_total" if self.kind == "counter" else "")


FAMILIES: tuple[Family, ...] = (
    # kvfree_call_rcu(): enqueues
    Family("kvfree_rcu_enqueued_objects", "counter", "objects queued by kvfree_call_rcu()"),
    Family("kvfree_rcu_enqueued_bytes", "counter", "bytes queued by kvfree_call_rcu() (ksize)"),
    Family(
        "kvfree_rcu_enqueued_objects_by_kind",
        "counter",
        "kvfree_call_rcu() objects by kind (head: kfree_rcu(ptr, rhf); headless)",
        ("kind",),
    ),
    Family(
        "kvfree_rcu_enqueued_objects_by_cpu",
        "counter",
        "kvfree_call_rcu() objects by CPU",
        ("cpu",),
    ),
    Family(
        "kvfree_rcu_enqueued_bytes_by_cpu", "counter", "kvfree_call_rcu() bytes by CPU", ("cpu",)
    ),
    Family(
        "kvfree_rcu_enqueued_objects_by_route",
        "counter",
        "kvfree_call_rcu() objects by route (krc batching, slab sheaf)",
        ("route",),
    ),
    Family(
        "kvfree_rcu_enqueued_bytes_by_route",
        "counter",
        "kvfree_call_rcu() bytes by route",
        ("route",),
    ),
    Family(
        "kvfree_rcu_enqueued_unsized_objects", "counter", "enqueued objects whose size is unknown"
    ),
    Family("kvfree_rcu_enqueued_vmalloc_objects", "counter", "enqueued vmalloc'ed objects"),
    # frees matched to tracked enqueues, and what is still waiting
    Family("kvfree_rcu_freed_objects", "counter", "tracked objects whose wait behind RCU ended"),
    Family("kvfree_rcu_freed_bytes", "counter", "bytes of tracked objects freed after their wait"),
    Family(
        "kvfree_rcu_freed_objects_by_path",
        "counter",
        "freed objects by free path (bulk, list, inline: kvfree_rcu's; list, inline: fallbacks)",
        ("path",),
    ),
    Family("kvfree_rcu_freed_bytes_by_path", "counter", "freed bytes by free path", ("path",)),
    Family(
        "kvfree_rcu_freed_pre_attach_objects_by_path",
        "counter",
        "frees of objects enqueued before attach (not matched, not subtracted)",
        ("path",),
    ),
    Family("kvfree_rcu_pending_objects", "gauge", "tracked objects enqueued and not yet freed"),
    Family("kvfree_rcu_pending_bytes", "gauge", "bytes enqueued and not yet freed (stranded)"),
    Family(
        "kvfree_rcu_pending_objects_by_cpu", "gauge", "pending objects by enqueuing CPU", ("cpu",)
    ),
    Family("kvfree_rcu_pending_bytes_by_cpu", "gauge", "pending bytes by enqueuing CPU", ("cpu",)),
    Family("kvfree_rcu_untracked_objects", "counter", "enqueues the tracking map could not hold"),
    Family("kvfree_rcu_untracked_bytes", "counter", "bytes of untracked enqueues"),
    Family(
        "kvfree_rcu_replaced_objects",
        "counter",
        "tracked addresses enqueued again before their free was seen",
    ),
    Family(
        "kvfree_rcu_latency_seconds", "histogram", "enqueue -> free time per object (log2 buckets)"
    ),
    Family(
        "kvfree_rcu_latency_by_path_seconds",
        "histogram",
        "enqueue -> free time per object by free path (log2 buckets)",
        ("path",),
    ),
    Family(
        "kvfree_rcu_latency_grace_periods",
        "histogram",
        "grace periods elapsed + 1 between enqueue and free (log2 buckets)",
    ),
    Family(
        "kvfree_rcu_latency_by_path_grace_periods",
        "histogram",
        "grace periods elapsed + 1 between enqueue and free, by free path",
        ("path",),
    ),
    Family(
        "kvfree_rcu_process_enqueued_objects",
        "counter",
        "kvfree_call_rcu() objects of the top processes (a process leaving the top 20 disappears)",
        ("tgid", "comm"),
    ),
    Family(
        "kvfree_rcu_process_pending_bytes",
        "gauge",
        "bytes a top process enqueued that are not yet freed (stranded)",
        ("tgid", "comm"),
    ),
    Family(
        "kvfree_rcu_stress_enqueued_objects",
        "counter",
        "kvfree_call_rcu() objects of the running stress scenario's workers",
    ),
    # rcu_pending_enqueue()
    Family("rcu_pending_enqueued_objects", "counter", "objects queued by rcu_pending_enqueue()"),
    Family(
        "rcu_pending_enqueued_objects_by_cpu",
        "counter",
        "rcu_pending_enqueue() objects by CPU",
        ("cpu",),
    ),
    Family(
        "rcu_pending_process_enqueued_objects",
        "counter",
        "rcu_pending_enqueue() objects of the top processes",
        ("tgid", "comm"),
    ),
    # the nolock page allocator
    Family(
        "nolock_attempts",
        "counter",
        "nolock page allocator calls (or its stand-in, see probe_info)",
    ),
    Family("nolock_failures", "counter", "nolock page allocator calls that returned no page"),
    Family("nolock_attempts_by_cpu", "counter", "nolock page allocator calls by CPU", ("cpu",)),
    Family(
        "nolock_failures_by_cpu", "counter", "failed nolock page allocator calls by CPU", ("cpu",)
    ),
    Family(
        "nolock_obtained_bytes", "counter", "bytes (pages x 4096) the nolock allocator returned"
    ),
    Family(
        "nolock_attempts_by_order", "counter", "nolock page allocator calls by order", ("order",)
    ),
    Family(
        "nolock_failures_by_order", "counter", "failed nolock allocator calls by order", ("order",)
    ),
    Family(
        "nolock_attempts_by_context",
        "counter",
        "nolock page allocator calls by context (task, softirq, hardirq, nmi, unknown)",
        ("context",),
    ),
    Family(
        "nolock_failures_by_context",
        "counter",
        "failed nolock page allocator calls by context",
        ("context",),
    ),
    Family(
        "nolock_attempts_by_caller",
        "counter",
        "nolock page allocator calls by call site (top 20)",
        ("caller",),
    ),
    Family(
        "nolock_failures_by_caller",
        "counter",
        "failed nolock page allocator calls by call site (top 20)",
        ("caller",),
    ),
    Family(
        "nolock_missed_events_by_reason",
        "counter",
        "nolock probe runs the kernel skipped (recursion: a BPF program already running; "
        "kprobe: kprobe nmissed)",
        ("reason",),
    ),
    # the collector itself
    Family("lost_events", "counter", "events the kernel side could not record"),
    Family("lost_events_by_reason", "counter", "lost events by reason", ("reason",)),
    Family(
        "self_cpu_seconds",
        "counter",
        "user+system CPU time of the collecting process since attach (the tool's own cost)",
    ),
    Family("self_rss_bytes", "gauge", "resident memory of the collecting process"),
    Family(
        "self_bpf_run_seconds",
        "counter",
        "run time of the collector's BPF programs (counted only while BPF stats are enabled)",
    ),
    Family(
        "self_bpf_run_events",
        "counter",
        "runs of the collector's BPF programs (counted only while BPF stats are enabled)",
    ),
    Family("snapshot_seq", "gauge", "number of the snapshot in its run (0 = baseline at attach)"),
    Family("elapsed_seconds", "gauge", "seconds since the probes attached"),
    Family("snapshot_time_seconds", "gauge", "Unix time of the snapshot's map read"),
    Family(
        "probe_info",
        "info",
        "one series per probe: its status (attached, stand-in, blocked, absent) and mechanism",
        ("probe", "function", "status", "mechanism"),
    ),
    Family(
        "source_info",
        "info",
        "where the data comes from: source (live, lab-vm, ...), kernel, tool, host, lab spec",
        ("source", "kernel_release", "tool_version", "hostname", "lab_spec"),
    ),
)
BY_NAME = {f.name: f for f in FAMILIES}

# The label columns of the tidy CSV (every label any family uses), in order.
LABEL_COLUMNS = (
    "kind",
    "route",
    "path",
    "cpu",
    "tgid",
    "comm",
    "reason",
    "order",
    "context",
    "caller",
    "le",
)
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


@dataclass(frozen=True)
class Sample:
    family: str  # Family.name (or a histogram family)
    name: str  # sample name: family, + _total (counter) or _bucket (histogram)
    labels: dict[str, str]
    value: float


def _safe(s: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", s.lower()).strip("_") or "x"


# Histograms of the schema's `histograms` map with a family of their own: name -> (family of
# the total, family of a per-path part named "<name>.<path>", factor to the family's unit).
HISTOGRAMS = {
    "kvfree_rcu.latency_ns": (
        "kvfree_rcu_latency_seconds",
        "kvfree_rcu_latency_by_path_seconds",
        1e-9,
    ),
    "kvfree_rcu.latency_gps": (
        "kvfree_rcu_latency_grace_periods",
        "kvfree_rcu_latency_by_path_grace_periods",
        1.0,
    ),
}


def histogram_family(name: str, unit: str) -> tuple[str, dict[str, str], float]:
    """(family, labels, factor to the family's unit) of histogram `name` recorded in `unit`."""
    if name in HISTOGRAMS:
        fam, _, scale = HISTOGRAMS[name]
        return fam, {}, scale
    base, _, part = name.rpartition(".")
    if base in HISTOGRAMS:
        _, fam, scale = HISTOGRAMS[base]
        return fam, {"path": part}, scale
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


def _c(out: list[Sample], fam: str, value: float, **labels: Any) -> None:
    f = BY_NAME[fam]
    out.append(Sample(fam, f.sample_name, {k: str(v) for k, v in labels.items()}, value))


def _kvfree(out: list[Sample], kv: dict[str, Any]) -> None:
    enq = kv["enqueued"]
    _c(out, "kvfree_rcu_enqueued_objects", enq["objects"])
    if "bytes" in enq:
        _c(out, "kvfree_rcu_enqueued_bytes", enq["bytes"])
    for kind, n in enq.get("by_kind", {}).items():
        _c(out, "kvfree_rcu_enqueued_objects_by_kind", n, kind=kind)
    for cpu, n in enumerate(enq["by_cpu"]):
        _c(out, "kvfree_rcu_enqueued_objects_by_cpu", n, cpu=cpu)
    for cpu, n in enumerate(enq.get("bytes_by_cpu", [])):
        _c(out, "kvfree_rcu_enqueued_bytes_by_cpu", n, cpu=cpu)
    for route, v in enq.get("by_route", {}).items():
        _c(out, "kvfree_rcu_enqueued_objects_by_route", v["objects"], route=route)
        _c(out, "kvfree_rcu_enqueued_bytes_by_route", v["bytes"], route=route)
    if "unsized" in enq:
        _c(out, "kvfree_rcu_enqueued_unsized_objects", enq["unsized"])
    if "vmalloc" in enq:
        _c(out, "kvfree_rcu_enqueued_vmalloc_objects", enq["vmalloc"])
    if (freed := kv.get("freed")) is not None:
        _c(out, "kvfree_rcu_freed_objects", freed["objects"])
        _c(out, "kvfree_rcu_freed_bytes", freed["bytes"])
        for path, v in freed.get("by_path", {}).items():
            _c(out, "kvfree_rcu_freed_objects_by_path", v["objects"], path=path)
            _c(out, "kvfree_rcu_freed_bytes_by_path", v["bytes"], path=path)
        for path, n in freed.get("pre_attach", {}).items():
            _c(out, "kvfree_rcu_freed_pre_attach_objects_by_path", n, path=path)
    if (pend := kv.get("pending")) is not None:
        _c(out, "kvfree_rcu_pending_objects", pend["objects"])
        _c(out, "kvfree_rcu_pending_bytes", pend["bytes"])
        for cpu, n in enumerate(pend.get("by_cpu", [])):
            _c(out, "kvfree_rcu_pending_objects_by_cpu", n, cpu=cpu)
        for cpu, n in enumerate(pend.get("bytes_by_cpu", [])):
            _c(out, "kvfree_rcu_pending_bytes_by_cpu", n, cpu=cpu)
    if (unt := kv.get("untracked")) is not None:
        _c(out, "kvfree_rcu_untracked_objects", unt.get("objects", 0))
        _c(out, "kvfree_rcu_untracked_bytes", unt.get("bytes", 0))
    if "replaced" in kv:
        _c(out, "kvfree_rcu_replaced_objects", kv["replaced"])
    for p in kv["by_process"]:
        _c(out, "kvfree_rcu_process_enqueued_objects", p["objects"], tgid=p["tgid"], comm=p["comm"])
        if "pending_bytes" in p:
            _c(
                out,
                "kvfree_rcu_process_pending_bytes",
                p["pending_bytes"],
                tgid=p["tgid"],
                comm=p["comm"],
            )
    if "by_stress" in kv:
        _c(out, "kvfree_rcu_stress_enqueued_objects", kv["by_stress"].get("enqueued", 0))


def samples(snap: Snapshot, *, info: bool = True) -> list[Sample]:
    """Every metric sample of one snapshot (info families only with info=True)."""
    out: list[Sample] = []
    if (kv := snap.get("kvfree_rcu")) is not None:
        _kvfree(out, kv)
    rp = snap.get("rcu_pending")
    if rp is not None:
        _c(out, "rcu_pending_enqueued_objects", rp["enqueued"]["objects"])
        for cpu, n in enumerate(rp["enqueued"]["by_cpu"]):
            _c(out, "rcu_pending_enqueued_objects_by_cpu", n, cpu=cpu)
        for p in rp["by_process"]:
            _c(
                out,
                "rcu_pending_process_enqueued_objects",
                p["objects"],
                tgid=p["tgid"],
                comm=p["comm"],
            )
    nl = snap.get("nolock")
    if nl is not None:
        _c(out, "nolock_attempts", nl["attempts"])
        _c(out, "nolock_failures", nl["failures"])
        for cpu, c in enumerate(nl["by_cpu"]):
            _c(out, "nolock_attempts_by_cpu", c.get("attempts", 0), cpu=cpu)
            _c(out, "nolock_failures_by_cpu", c.get("failures", 0), cpu=cpu)
        if nl.get("bytes") is not None:
            _c(out, "nolock_obtained_bytes", nl["bytes"])
        for row in nl.get("by_order") or []:
            order = "unknown" if row["order"] is None else row["order"]
            _c(out, "nolock_attempts_by_order", row["attempts"], order=order)
            _c(out, "nolock_failures_by_order", row["failures"], order=order)
        for ctx, row in (nl.get("by_context") or {}).items():
            _c(out, "nolock_attempts_by_context", row["attempts"], context=ctx)
            _c(out, "nolock_failures_by_context", row["failures"], context=ctx)
        for row in nl.get("by_caller") or []:
            _c(out, "nolock_attempts_by_caller", row["attempts"], caller=row["caller"])
            _c(out, "nolock_failures_by_caller", row["failures"], caller=row["caller"])
        for reason, n in (nl.get("misses") or {}).items():
            if n is not None:
                _c(out, "nolock_missed_events_by_reason", n, reason=reason)
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
            rows.append(row)
    return rows


def dataframe(snapshots: list[Snapshot]):  # noqa: ANN201 - pandas imported lazily
    import pandas as pd

    df = pd.DataFrame(tidy_rows(snapshots), columns=list(CSV_COLUMNS))
    for col in ("cpu", "tgid"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df
