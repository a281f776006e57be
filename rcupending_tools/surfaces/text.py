"""Plain-text views of a snapshot (they read snapshots only)."""

from __future__ import annotations

from typing import Any

from .. import sanitize
from ..pipeline import derive
from ..pipeline.schema import Snapshot


def summary(snap: Snapshot | None) -> str:
    if snap is None:
        return "no snapshot"
    snap = sanitize.deep(snap)
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
        if (t := kv.get("tracking")) and not t.get("exact"):
            lines.append(f"    per-CPU and per-process splits estimated from 1 in "
                         f"{t.get('one_in')} objects ({t['followed']} followed)")
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


def check_lines(release: str, probes: list[dict[str, Any]]) -> list[str]:
    """`rcupending check`: one line per probe (status, mechanism, detail)."""
    out = [f"kernel {sanitize.text(release)}"]
    for p in sanitize.deep(probes):
        what = (p.get("mechanism") or "") if p["status"] in ("attached", "stand-in") else ""
        out.append(f"  {p['name']:<22} {p['status']:<9} {what:<12} {p['detail']}")
    return out


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


def kvfree_stress_lines(result: dict) -> list[str]:
    """`stress kvfree` (with --measure): the truth beside what was measured, and the verdict."""
    out: list[str] = []
    add = out.append
    result = sanitize.deep(result)
    exp = result["expected"]
    add(
        f"stress kvfree: {exp['calls']} setsockopt calls on {exp['sockets']} sockets "
        f"({exp['failed']} failed {exp['errors'] or ''}), workers {exp['pids']}"
    )
    if exp["sockets_with_options"]:
        add(
            f"  note: closing the sockets afterwards frees {exp['sockets_with_options']} more "
            "option blocks (through kfree_rcu on some kernels), after the measured window"
        )
    add(f"  expected   kvfree_rcu enqueued by stress: {exp['kvfree_rcu']['enqueued']}")
    if "note" in exp:
        add(f"  note: {exp['note']}")
    if fl := result.get("sheaf_flush"):
        add(f"  flushed rcu_free sheaves of {fl['caches']} kmalloc caches at +{fl['at_s']} s")
    if "measured" in result:
        kv = result["measured"]["kvfree_rcu"]
        if kv is None:
            add(f"  measured   unavailable: {result.get('why_unmeasured')}")
        else:
            add(
                f"  measured   kvfree_rcu enqueued by stress: {kv['by_stress']['enqueued']}"
                f"   (all processes: {kv['enqueued']['objects']})"
            )
            bs, lat, cons = kv["by_stress"], kv["latency"], kv["conservation"]
            add(
                f"             bytes {bs['enqueued_bytes']}, freed {bs['freed']} "
                f"({bs['freed_bytes']} bytes), pending {bs['pending']}"
            )
            add(
                f"             latency p50 {derive.fmt_range(lat['ns']['ranges']['p50'])}, "
                f"p99 {derive.fmt_range(lat['ns']['ranges']['p99'])}"
                f" over {lat['count']} frees; fallbacks list {kv['fallback']['list']}, "
                f"inline {kv['fallback']['inline']}"
            )
            add(f"             conservation: {cons}")
            for line in program_lines(result["snapshot"].get("self_cost")):
                add(line)
            out.extend(oracle_lines(result.get("oracle")))
            add(f"  {'MATCH' if result['match'] else 'MISMATCH'}")
    return out


def oracle_lines(o: dict | None) -> list[str]:
    """The kernel's own figures (stress/oracle.py) beside the tool's."""
    if not o:
        return []
    if "unavailable" in o:
        return [f"  kernel     unavailable: {o['unavailable']}"]
    out = [f"  kernel     {o['source']} by the workers: {o['allocations']} allocations, "
           f"{o['bytes_alloc']} bytes ({o['slot']} B slots)"
           + ("" if o["one_slot_size"] else ", not all of one size")]
    if o.get("match") is not None:
        t, k = o["tool"], o["kernel"]
        out.append(f"             enqueued: tool {t['enqueued']}, kernel {k['enqueued']}; "
                   f"bytes: tool {t['enqueued_bytes']}, kernel {k['enqueued_bytes']}: "
                   + ("agree" if o["match"] else "DIFFER"))
    return out


def nolock_stress_lines(result: dict[str, Any]) -> list[str]:
    """`stress nolock`: the driver's counts, what was measured, the independent count, checks."""
    out: list[str] = []
    add = out.append
    result = sanitize.deep(result)
    d = result["driver"]
    add(f"stress nolock {result['scenario']} on {result['kernel_release']}: "
          f"{d['calls']} program runs in {d['batches']} batches, {d['seconds']:.2f} s; "
          f"driver: ok {d['ok']}, failed {d['failed']}"
          + (f" (last error {d['last_err']})" if d.get("last_err") else ""))
    if "memcg" in d:
        mc = d["memcg"]
        add(f"  memcg {mc['path']}: memory.max {mc['memory_max']} "
              f"(usage at start + {mc['headroom']} bytes)")
    m = result.get("measured")
    if m is not None:
        add(f"  measured    attempts {m['attempts']}, failures {m['failures']} "
              f"at {m.get('counted_at')}")
        for r in (m.get("by_caller") or [])[:5]:
            add(f"    {r['caller']}: {r['attempts']} (failed {r['failures']})")
        if (cause := m.get("failures_by_cause")) is not None:
            add(f"    failures by cause: memcg charge {cause['memcg_charge']}, "
                  f"other {cause['other']}")
            for r in m.get("memcg_failures") or []:
                add(f"      memcg {r['path'] or '(gone)'} (cgroup id {r['cgroup_id']}): "
                      f"{r['failures']}")
    ind = result.get("independent")
    if ind:
        if "attempts" in ind:
            add(f"  independent attempts {ind['attempts']}, failures {ind['failures']} "
                  f"({ind['mechanism']}; runs it missed: {ind.get('missed')})")
        else:
            add(f"  independent count unavailable: {ind['unavailable']}")
    for name, ok in result["checks"].items():
        add(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return out
