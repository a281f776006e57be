"""Plain-text views of a snapshot (they read snapshots only)."""

from __future__ import annotations

from ..pipeline.schema import Snapshot


def summary(snap: Snapshot | None) -> str:
    if snap is None:
        return "no snapshot"
    lines = [
        f"[{snap['source']}] kernel {snap['provenance']['kernel_release']} "
        f"t+{snap['elapsed_s']:.1f}s"
    ]
    kv = snap["kvfree_rcu"]
    if kv is not None:
        kinds = ", ".join(f"{k} {v}" for k, v in kv["enqueued"].get("by_kind", {}).items())
        lines.append(f"  kvfree_rcu enqueued {kv['enqueued']['objects']} ({kinds})")
        if "by_stress" in kv:
            lines.append(f"    by stress workers {kv['by_stress']['enqueued']}")
    rp = snap["rcu_pending"]
    if rp is not None:
        lines.append(f"  rcu_pending enqueued {rp['enqueued']['objects']}")
    nl = snap["nolock"]
    if nl is not None:
        lines.append(f"  nolock allocations {nl['attempts']} (failed {nl['failures']})")
        for r in (nl.get("by_caller") or [])[:5]:
            lines.append(f"    {r['caller']}: {r['attempts']} (failed {r['failures']})")
    for p in snap["probes"]:
        if p["status"] not in ("attached",):
            lines.append(f"  {p['name']}: {p['status']}: {p['detail']}")
    if snap["lost"]["total"]:
        lines.append(f"  lost events {snap['lost']['total']} {snap['lost']['by_reason']}")
    lines += program_lines(snap.get("self_cost"))
    return "\n".join(lines)


def program_lines(self_cost: dict | None) -> list[str]:
    """Per-program BPF cost (present with --self-cost): runs, total and average ns per run."""
    programs = (self_cost or {}).get("programs") or []
    if not programs:
        return []
    out = [f"  BPF programs (stats by {self_cost.get('bpf_stats')}):"]
    for p in programs:
        avg = "-" if p["avg_ns"] is None else f"{p['avg_ns']:.0f}"
        out.append(
            f"    {p['name']:<34} runs {p['run_cnt']:>10}  {p['run_time_ns']:>12} ns"
            f"  avg {avg} ns/run"
        )
    return out
