"""The kvfree_rcu family of a snapshot, from the raw counters of bpf/kvfree_rcu.bpf.c."""

from __future__ import annotations

from typing import Any

from ..pipeline.derive import log2_buckets, percentile_bounds

# Mirrors of the BPF enums (tests/unit/test_kvfree_metrics.py checks them against the C file).
PATHS = ("bulk", "list", "inline", "sheaf", "other")
NPATH = len(PATHS)
HIST_SLOTS = 64
ST_ENQ_HEAD, ST_ENQ_HEADLESS, ST_ENQ_BYTES, ST_ENQ_UNSIZED, ST_ENQ_VMALLOC = range(5)
ST_ENQ_SHEAF, ST_ENQ_SHEAF_BYTES, ST_UNTRACKED, ST_UNTRACKED_BYTES, ST_REPLACED = range(5, 10)
ST_FREED = 10
ST_FREED_BYTES = ST_FREED + NPATH
ST_UNMATCHED = ST_FREED_BYTES + NPATH
ST_MAX = ST_UNMATCHED + NPATH
EVENTS = ("gp", "barrier", "shrink_scan", "shrink_freed", "refill", "reclaim_work", "phased",
          "ready", "nolock_enq", "nolock_defer", "unsampled", "unarmed")
NEV = len(EVENTS)
DURATIONS = ("batch", "gp", "reclaim", "ready", "rcu_gp", "barrier")
NDUR = len(DURATIONS)
PHASES = DURATIONS[:4]


def _sum_rows(stats: list[list[int]], idx: int) -> int:
    return sum(stats[idx])


def kvfree_family(raw: Any, stress_tgids: set[int]) -> dict[str, Any] | None:
    """Snapshot section `kvfree_rcu` from a RawSample (None when the probe is not attached)."""
    st = raw.kvfree_stats
    if st is None:
        return None
    ncpu = len(st[0])
    head, headless = _sum_rows(st, ST_ENQ_HEAD), _sum_rows(st, ST_ENQ_HEADLESS)
    enq_by_cpu = [st[ST_ENQ_HEAD][c] + st[ST_ENQ_HEADLESS][c] for c in range(ncpu)]
    enq_bytes_by_cpu = list(st[ST_ENQ_BYTES])
    enq, enq_bytes = head + headless, sum(enq_bytes_by_cpu)
    sheaf, sheaf_bytes = _sum_rows(st, ST_ENQ_SHEAF), _sum_rows(st, ST_ENQ_SHEAF_BYTES)
    by_path = {
        p: {"objects": _sum_rows(st, ST_FREED + i), "bytes": _sum_rows(st, ST_FREED_BYTES + i)}
        for i, p in enumerate(PATHS)
    }
    freed = sum(v["objects"] for v in by_path.values())
    freed_bytes = sum(v["bytes"] for v in by_path.values())
    untracked = _sum_rows(st, ST_UNTRACKED)
    untracked_bytes = _sum_rows(st, ST_UNTRACKED_BYTES)
    replaced = _sum_rows(st, ST_REPLACED)
    pending = enq - freed - untracked - replaced
    pending_bytes = enq_bytes - freed_bytes - untracked_bytes
    fcpu = raw.kvfree_freed_by_enq_cpu or [[0, 0]] * ncpu
    tasks = raw.kvfree_by_task or {}
    freed_tgid = raw.kvfree_freed_by_tgid or {}

    lat = raw.kvfree_lat_hist or [0] * (NPATH * HIST_SLOTS)
    gps = raw.kvfree_gp_hist or [0] * (NPATH * HIST_SLOTS)
    lat_total = [sum(lat[i * HIST_SLOTS + s] for i in range(NPATH)) for s in range(HIST_SLOTS)]
    gp_total = [sum(gps[i * HIST_SLOTS + s] for i in range(NPATH)) for s in range(HIST_SLOTS)]

    def path_hist(h: list[int], i: int) -> list[int]:
        return h[i * HIST_SLOTS : (i + 1) * HIST_SLOTS]

    out: dict[str, Any] = {
        "enqueued": {
            "objects": enq,
            "bytes": enq_bytes,
            "by_kind": {"head": head, "headless": headless},
            "by_cpu": enq_by_cpu,
            "bytes_by_cpu": enq_bytes_by_cpu,
            "by_route": {
                "krc": {"objects": enq - sheaf, "bytes": enq_bytes - sheaf_bytes},
                "sheaf": {"objects": sheaf, "bytes": sheaf_bytes},
            },
            "unsized": _sum_rows(st, ST_ENQ_UNSIZED),
            "vmalloc": _sum_rows(st, ST_ENQ_VMALLOC),
            # calls while the tool was still attaching its hooks (not counted above)
            "before_armed": _events_or_zero(raw, "unarmed"),
        },
        "freed": {
            "objects": freed,
            "bytes": freed_bytes,
            "by_path": by_path,
            "pre_attach": {p: _sum_rows(st, ST_UNMATCHED + i) for i, p in enumerate(PATHS)},
        },
        "pending": {
            "objects": pending,
            "bytes": pending_bytes,
            "by_cpu": [enq_by_cpu[c] - (fcpu[c][0] if c < len(fcpu) else 0) for c in range(ncpu)],
            "bytes_by_cpu": [
                enq_bytes_by_cpu[c] - (fcpu[c][1] if c < len(fcpu) else 0) for c in range(ncpu)
            ],
        },
        # not followed per object: outside the sample (RCUPENDING_SAMPLE) or the map full
        "untracked": {"objects": untracked, "bytes": untracked_bytes,
                      "unsampled": _events_or_zero(raw, "unsampled")},
        "replaced": replaced,
        "fallback": {
            "list": by_path["list"]["objects"],
            "inline": by_path["inline"]["objects"],
            "list_ratio": by_path["list"]["objects"] / freed if freed else None,
            "inline_ratio": by_path["inline"]["objects"] / freed if freed else None,
        },
        "latency": {
            "count": sum(lat_total),
            "ns": percentile_bounds(lat_total),
            "gps": percentile_bounds(gp_total),
            "by_path": {
                p: {"count": sum(path_hist(lat, i)), "ns": percentile_bounds(path_hist(lat, i))}
                for i, p in enumerate(PATHS)
                if sum(path_hist(lat, i))
            },
        },
        "conservation": conservation(enq, freed, untracked, replaced, raw.kvfree_in_map),
        "by_process": _by_process(tasks, freed_tgid),
    }
    if raw.kvfree_pending_gauge:
        # high-water mark kept by the kernel side at every enqueue and free (tracked objects):
        # a peak between two reads that sampling the pending level would miss
        _, _, peak_objects, peak_bytes = raw.kvfree_pending_gauge
        out["pending"]["peak"] = {"objects": peak_objects, "bytes": peak_bytes}
    out.update(_kernel_events(raw))
    if raw.kvfree_misses is not None:
        # runs the kernel skipped: fentry's per-program recursion check (a preempted program
        # on that CPU counts too, on preemptible kernels), or kprobe programs nested in another
        # BPF program; an enqueue missed here is not counted anywhere else
        m = raw.kvfree_misses
        out["misses"] = {
            "recursion": sum(m.values()),
            "enqueue": sum(n for p, n in m.items() if p.endswith("kvfree_call_rcu")
                           and not p.startswith(("kretfunc", "kretprobe"))),
            "by_program": {p: n for p, n in sorted(m.items()) if n},
        }
    if stress_tgids:
        mine = [v for (t, _), v in tasks.items() if t in stress_tgids]
        f = [v for t, v in freed_tgid.items() if t in stress_tgids]
        out["by_stress"] = {
            "enqueued": sum(v[0] for v in mine),
            "enqueued_bytes": sum(v[1] for v in mine),
            # kfree_rcu_mightsleep() objects (absent from recordings made before the split)
            "enqueued_headless": sum(v[2] for v in mine if len(v) > 2),
            "enqueued_headless_bytes": sum(v[3] for v in mine if len(v) > 3),
            "freed": sum(v[0] for v in f),
            "freed_bytes": sum(v[1] for v in f),
            # not followed per object (sampling, a full map): their frees are not seen
            "untracked": sum(v[4] for v in mine if len(v) > 4),
        }
        bs = out["by_stress"]
        bs["pending"] = bs["enqueued"] - bs["freed"] - bs["untracked"]
    return out


def _events_or_zero(raw: Any, name: str) -> int:
    ev = raw.kvfree_events
    i = EVENTS.index(name)
    return int(ev[i]) if ev is not None and i < len(ev) else 0


def _dur(raw: Any, name: str) -> list[int]:
    h = raw.kvfree_dur_hist or [0] * (NDUR * HIST_SLOTS)
    i = DURATIONS.index(name)
    return h[i * HIST_SLOTS : (i + 1) * HIST_SLOTS]


def _kernel_events(raw: Any) -> dict[str, Any]:
    """Phases, grace periods, barrier, shrinker, page refill and nolock counters (None when
    this kernel or attach kind has no hook for them: the probe's `unavailable` says why)."""
    if raw.kvfree_events is None:
        return {"phases": None, "rcu_gp": None, "events": None}
    ev = dict(zip(EVENTS, raw.kvfree_events, strict=True))

    def timed(name: str) -> dict[str, Any]:
        h = _dur(raw, name)
        return {"count": sum(h), "ns": percentile_bounds(h)}

    return {
        "phases": {
            "objects": {"phased": ev["phased"], "ready": ev["ready"]},
            **{p: timed(p) for p in PHASES},
        },
        "rcu_gp": {"completed": ev["gp"], "duration": timed("rcu_gp")},
        "events": {
            "barrier": {"calls": ev["barrier"], "duration": timed("barrier")},
            "shrinker": {"scans": ev["shrink_scan"], "freed": ev["shrink_freed"]},
            "page_refill": ev["refill"],
            "reclaim_work": ev["reclaim_work"],
            "kfree_rcu_nolock": {"calls": ev["nolock_enq"], "deferred": ev["nolock_defer"]},
        },
    }


def histograms(raw: Any) -> dict[str, Any]:
    """Log2 latency histograms of the kvfree family, per path and in total."""
    if raw.kvfree_stats is None or raw.kvfree_lat_hist is None:
        return {}
    out: dict[str, Any] = {}
    for name, h, unit in (
        ("latency_ns", raw.kvfree_lat_hist, "ns"),
        ("latency_gps", raw.kvfree_gp_hist or [], "grace periods + 1"),
    ):
        if not h:
            continue
        total = [sum(h[i * HIST_SLOTS + s] for i in range(NPATH)) for s in range(HIST_SLOTS)]
        out[f"kvfree_rcu.{name}"] = {"unit": unit, "buckets": log2_buckets(total)}
        for i, p in enumerate(PATHS):
            part = h[i * HIST_SLOTS : (i + 1) * HIST_SLOTS]
            if sum(part):
                out[f"kvfree_rcu.{name}.{p}"] = {"unit": unit, "buckets": log2_buckets(part)}
    if raw.kvfree_dur_hist is not None:
        for d in DURATIONS:
            part = _dur(raw, d)
            if sum(part):
                key = f"kvfree_rcu.phase_ns.{d}" if d in PHASES else f"kvfree_rcu.{d}_ns"
                out[key] = {"unit": "ns", "buckets": log2_buckets(part)}
    return out


def conservation(
    enq: int, freed: int, untracked: int, replaced: int, in_map: dict[str, int] | None
) -> dict[str, Any]:
    """enqueued = freed + pending + untracked (+ replaced), with pending counted in the
    tracking map when it was read (`in_map`), else derived (and so unchecked)."""
    derived = enq - freed - untracked - replaced
    counted = None if in_map is None else in_map.get("objects")
    return {
        "enqueued": enq,
        "freed": freed,
        "pending": derived if counted is None else counted,
        "untracked": untracked,
        "replaced": replaced,
        "pending_in_map": counted,
        "ok": None if counted is None else counted == derived,
    }


def _by_process(tasks: dict, freed_tgid: dict) -> list[dict[str, Any]]:
    rows = []
    for (tgid, comm), (objects, nbytes, *_) in tasks.items():
        rows.append({"tgid": tgid, "comm": comm, "objects": objects, "bytes": nbytes})
    freed_left = dict(freed_tgid)
    for r in rows:  # a tgid may appear with several comms: attribute frees once
        f = freed_left.pop(r["tgid"], [0, 0])
        r["freed"], r["freed_bytes"] = f[0], f[1]
        r["pending_bytes"] = r["bytes"] - f[1]
    rows.sort(key=lambda r: (-r["pending_bytes"], -r["objects"], r["tgid"]))
    return rows[:20]
