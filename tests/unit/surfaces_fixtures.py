"""Shared data of the surfaces tests: the shipped lab recording and synthetic recordings.

Synthetic snapshots are built by hand to the schema (and validated), not through the collector,
so they pin what the surfaces read: the snapshot contract."""

from __future__ import annotations

import json
from pathlib import Path

from rcupending_tools.pipeline.recording import RecordingWriter
from rcupending_tools.pipeline.schema import validation_errors

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "recordings" / "debian-6.12-kvfree-stress.jsonl"

PROBES = [
    {
        "name": "kvfree_call_rcu",
        "function": "kvfree_call_rcu",
        "status": "attached",
        "symbol": "kvfree_call_rcu",
        "mechanism": "fentry",
        "detail": "fentry on kvfree_call_rcu",
    },
    {
        "name": "rcu_pending_enqueue",
        "function": "rcu_pending_enqueue",
        "status": "attached",
        "symbol": "rcu_pending_enqueue",
        "mechanism": "kprobe",
        "detail": "kprobe on it",
    },
    {
        "name": "alloc_pages_nolock",
        "function": "alloc_pages_nolock",
        "status": "stand-in",
        "mechanism": "tracepoint:kmem:mm_page_alloc",
        "detail": "sees every page allocation",
    },
]
PROVENANCE = {
    "kernel_release": "6.12.99-test",
    "tool_version": "0.1.0",
    "command": "rcupending test",
    "hostname": "testhost",
    "lab": {"spec": "debian:6.12", "source": "test"},
}
PATHS = ("bulk", "list", "inline", "sheaf", "other")


def shipped_lines() -> list[dict]:
    return [json.loads(ln) for ln in SHIPPED.read_text().splitlines()]


def snapshot(i: int, cpus: int = 2, *, kvfree_extras: bool = True) -> dict:
    """Snapshot number i of a steadily growing run; every family non-null."""
    head = [i * 100 + c for c in range(cpus)]
    headless = [i * 3] * cpus
    by_cpu = [h + hl for h, hl in zip(head, headless, strict=True)]
    enq = sum(by_cpu)
    kv: dict = {
        "enqueued": {
            "objects": enq,
            "by_kind": {"head": sum(head), "headless": sum(headless)},
            "by_cpu": by_cpu,
        },
        "by_process": [
            {"tgid": 100, "comm": "stress worker", "objects": i * 150},
            {"tgid": 7, "comm": "kworker/0:1", "objects": i * 11},
        ],
        "by_stress": {"enqueued": i * 150},
    }
    hists = {}
    if kvfree_extras:
        freed_by_path = {p: {"objects": 0, "bytes": 0} for p in PATHS}
        freed_by_path["bulk"] = {"objects": i * 90, "bytes": i * 90 * 64}
        freed_by_path["list"] = {"objects": i * 10, "bytes": i * 10 * 64}
        freed = i * 100
        kv["enqueued"] |= {
            "bytes": enq * 64,
            "bytes_by_cpu": [n * 64 for n in by_cpu],
            "by_route": {
                "krc": {"objects": enq, "bytes": enq * 64},
                "sheaf": {"objects": 0, "bytes": 0},
            },
            "unsized": 0,
            "vmalloc": i,
        }
        kv["freed"] = {
            "objects": freed,
            "bytes": freed * 64,
            "by_path": freed_by_path,
            "pre_attach": {p: (i if p == "bulk" else 0) for p in PATHS},
        }
        kv["pending"] = {
            "objects": enq - freed,
            "bytes": (enq - freed) * 64,
            "by_cpu": [n - freed // cpus for n in by_cpu],
            "bytes_by_cpu": [(n - freed // cpus) * 64 for n in by_cpu],
        }
        kv["untracked"] = {"objects": 0, "bytes": 0}
        kv["replaced"] = 0
        # stage 2's tracking tier: every object followed during a 30-s window, then 1 in 64
        kv["tracking"] = {"one_in": 64, "settle_s": 30, "followed": enq // 2,
                          "exact": i < 3, "late_unmatched": 0}
        kv["fallback"] = {
            "list": i * 10,
            "inline": 0,
            "list_ratio": 0.1 if freed else None,
            "inline_ratio": 0.0 if freed else None,
        }
        kv["latency"] = {
            "count": freed,
            "ns": {"p50": 16777216, "p90": 33554432, "p99": 33554432, "max": 67108864}
            if freed
            else {},
            "gps": {"p50": 4, "p90": 8, "p99": 8, "max": 8} if freed else {},
        }
        for p in kv["by_process"]:
            p |= {
                "bytes": p["objects"] * 64,
                "freed": 0,
                "freed_bytes": 0,
                "pending_bytes": p["objects"] * 64,
            }
        if freed:
            hists["kvfree_rcu.latency_ns"] = {
                "unit": "ns",
                "buckets": [[8388608, 16777216, i * 60], [16777216, 33554432, i * 40]],
            }
            hists["kvfree_rcu.latency_ns.bulk"] = {
                "unit": "ns",
                "buckets": [[8388608, 16777216, i * 60], [16777216, 33554432, i * 30]],
            }
            hists["kvfree_rcu.latency_gps"] = {
                "unit": "grace periods + 1",
                "buckets": [[2, 4, i * 70], [4, 8, i * 30]],
            }
    snap = {
        "schema": "rcupending-snapshot",
        "version": 1,
        "seq": i,
        "time": 1_700_000_000.25 + i,
        "elapsed_s": float(i),
        "source": "lab-vm",
        "provenance": PROVENANCE,
        "probes": PROBES,
        "kvfree_rcu": kv,
        "rcu_pending": {
            "enqueued": {"objects": i * 5 * cpus, "by_cpu": [i * 5] * cpus},
            "by_process": [{"tgid": 9, "comm": "bch-gc", "objects": i * 5 * cpus}],
        },
        "nolock": {
            "attempts": i * 40 * cpus,
            "failures": i * cpus,
            "by_cpu": [{"attempts": i * 40, "failures": i}] * cpus,
        },
        "lost": {"total": i // 2, "by_reason": {"task_map_full": i // 2}},
        "histograms": hists,
    }
    errors = validation_errors(snap)
    assert errors == [], errors
    return snap


def full_snapshots(n: int = 6, cpus: int = 2, **kw) -> list[dict]:
    return [snapshot(i, cpus, **kw) for i in range(n)]


def write_recording(path: Path, snaps: list[dict]) -> Path:
    with RecordingWriter(path, snaps[0]["provenance"]) as w:
        for s in snaps:
            w.write(s)
    return path
