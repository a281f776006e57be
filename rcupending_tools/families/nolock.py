"""The nolock page allocator family: raw map readings of bpf/nolock.bpf.c -> the snapshot's
`nolock` object, and the call-site rule for the stacks the BPF side keys its counts by.

Counting rule: the BPF side hooks one function, the innermost one every nolock allocation
passes exactly once (alloc_frozen_pages_nolock_noprof on 6.18+, else try_alloc_pages_noprof /
alloc_pages_nolock_noprof). A call through the wrapper is counted there once and attributed
to the wrapper's caller: the caller is the first frame after the LAST nolock frame of the
stack, skipping BPF/tracing machinery (trampolines, programs, kretprobe return stubs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from ..paths import TRACEFS_DIRS
from ..probes.table import NOLOCK_SYMBOLS
from . import base, enums
from .base import Family, Metric, Raw, Samples, Section

H = enums.header("nolock.h")
STATS = H.enum("nolock_stat").names("NOLOCK_")
CONTEXTS = H.enum("nolock_ctx").names("NOLOCK_CTX_")
NO_ARG = H["NOLOCK_NO_ARG"]  # order/nid/gfp the attach mechanism cannot see
PAGE_SIZE = 4096  # x86-64, the only architecture the lab runs
TOP_CALLERS = 20

# Frames that are the tracing machinery between the allocator and our program.
MACHINERY = (
    "bpf_prog_",
    "__bpf_prog_",
    "bpf_trampoline",
    "bpf_get_stack",
    "bpf_trace_run",
    "__bpf_trace_",
    "trace_call_bpf",
    "perf_trace_",
    "trace_event_raw_event_",
    "__traceiter_",
    "__probestub_",
    "kprobe_",
    "kretprobe_",
    "__kretprobe_trampoline",
    "arch_rethook_trampoline",
    "rethook_",
    "pre_handler_kretprobe",
    "ftrace_",
)
# Page allocator internals, skipped only when no nolock frame is on the stack (the tracepoint
# stand-in fires inside them).
ALLOCATOR = (
    "__alloc_frozen_pages",
    "__alloc_pages",
    "get_page_from_freelist",
    "rmqueue",
    "post_alloc_hook",
    "prep_new_page",
)


# ---------------------------------------------------------------- read


def read(b: Any, ctx: base.ReadContext) -> Raw:
    """The maps of bpf/nolock.bpf.c: splits first, totals last (a split never exceeds the
    total read after it)."""
    stacks = [
        ([int(ip) for ip in k.ip], int(v.attempts), int(v.failures))
        for k, v in b["nolock_by_stack"].items()
    ]
    raw: Raw = {
        "keys": [
            [int(k.order), int(k.nid), int(k.gfp), int(k.ctx), int(v.attempts), int(v.failures)]
            for k, v in b["nolock_by_key"].items()
        ],
        "memcg": None,
    }
    if "memcg_cause" not in ctx.status.unavailable:
        raw["memcg"] = [[int(k.value), _cgroup_path(int(k.value)), int(v.value)]
                        for k, v in b["nolock_memcg_fail"].items()]
    raw["stats"] = base.percpu_rows(b["nolock_stats"], len(STATS))
    raw["callers"] = callers(stacks, ctx.kernel.core_text_symbol)
    per_program = base.program_misses(b)
    raw["misses"] = {
        "recursion": sum(per_program.values()) if per_program else None,
        "kprobe": _kprobe_misses() if ctx.kind == "kprobe" else None,
    }
    return raw


def _cgroup_path(cgroup_id: int, root: str = "/sys/fs/cgroup") -> str | None:
    """The cgroup v2 directory whose inode number is `cgroup_id` (the kernfs node id); None
    when gone, or 0 (a charge to the task's own memcg: no active memcg was set)."""
    if cgroup_id == 0:
        return None
    for top, dirs, _ in os.walk(root):
        for d in dirs:
            path = os.path.join(top, d)
            try:
                if os.stat(path).st_ino == cgroup_id:
                    return path
            except OSError:
                continue
    try:
        return root if os.stat(root).st_ino == cgroup_id else None
    except OSError:
        return None


def _kprobe_misses() -> int | None:
    """nmissed of this process's bcc kprobe events (kprobe_profile: name, hits, nmissed);
    None when they are not listed (bcc attached through the perf kprobe PMU)."""
    tag = f"_bcc_{os.getpid()}"
    for tracefs in TRACEFS_DIRS:
        try:
            lines = (tracefs / "kprobe_profile").read_text().splitlines()
        except OSError:
            continue
        rows = [ln.split() for ln in lines if tag in ln]
        if rows:
            return sum(int(r[-1]) for r in rows if r and r[-1].isdigit())
    return None


def caller_of(frames: Iterable[str | None]) -> str:
    """The call site of one nolock allocation from its resolved stack (innermost first; None
    for frames outside the kernel's text: BPF JIT images, trampolines, modules)."""
    names = list(frames)
    last = max((i for i, n in enumerate(names) if n in NOLOCK_SYMBOLS), default=-1)
    skip = MACHINERY if last >= 0 else MACHINERY + ALLOCATOR
    for name in names[last + 1 :]:
        if name is None or name.startswith(skip):
            continue
        return name
    return "?"


def callers(
    stacks: Iterable[tuple[list[int], int, int]], resolve: Callable[[int], str | None]
) -> list[list[Any]]:
    """[[caller, attempts, failures]] summed over the BPF side's per-stack counts."""
    out: dict[str, list[int]] = {}
    for ips, attempts, failures in stacks:
        name = caller_of(resolve(ip) for ip in ips if ip)
        cur = out.setdefault(name, [0, 0])
        cur[0] += attempts
        cur[1] += failures
    return sorted([[c, a, f] for c, (a, f) in out.items()], key=lambda r: (-r[1], r[0]))


def _split(rows: dict[Any, list[int]], label: str) -> list[dict[str, Any]]:
    return [
        {label: k, "attempts": a, "failures": f}
        for k, (a, f) in sorted(rows.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    ]


def _add(rows: dict[Any, list[int]], key: Any, attempts: int, failures: int) -> None:
    cur = rows.setdefault(key, [0, 0])
    cur[0] += attempts
    cur[1] += failures


def section(raw: Raw | None, ctx: base.SectionContext) -> Section | None:
    """Snapshot section `nolock` (None when the probe is not attached)."""
    if raw is None or raw.get("stats") is None:
        return None
    return nolock_family(raw["stats"], raw.get("keys"), raw.get("callers"), raw.get("misses"),
                         ctx.probe.get("counted_at"), raw.get("memcg"))


def histograms(raw: Raw | None) -> dict[str, Any]:
    return {}


def nolock_family(
    stats: list[list[int]],
    keys: list[list[int]] | None,
    caller_rows: list[list[Any]] | None,
    misses: dict[str, int | None] | None,
    counted_at: str | None,
    memcg: list[list[Any]] | None = None,
) -> dict[str, Any]:
    """The snapshot's `nolock` object. `stats` is [attempts, failures, pages?][cpu] (older
    readings have no pages row); `keys` rows are [order, nid, gfp, context, attempts,
    failures] with NO_ARG for what the mechanism cannot see; `memcg` rows [cgroup id, path,
    failures] (None: the cause of failures is not observable here)."""
    attempts, failures = stats[0], stats[1]
    pages = stats[2] if len(stats) > 2 else None
    total_a, total_f = sum(attempts), sum(failures)
    out: dict[str, Any] = {
        "attempts": total_a,
        "failures": total_f,
        "successes": total_a - total_f,
        "by_cpu": [
            {"attempts": a, "failures": f}
            | ({} if pages is None else {"pages": pages[i]})
            for i, (a, f) in enumerate(zip(attempts, failures, strict=True))
        ],
    }
    if pages is not None:
        out["pages"] = sum(pages)
        out["bytes"] = sum(pages) * PAGE_SIZE
    out["failure_ratio"] = total_f / total_a if total_a else None
    if memcg is not None and len(stats) > 3:
        charged = sum(stats[3])
        out["failures_by_cause"] = {"memcg_charge": charged, "other": total_f - charged}
        out["memcg_failures"] = [
            {"cgroup_id": cid, "path": path, "failures": n}
            for cid, path, n in sorted(memcg, key=lambda r: -r[2])
        ]
    out["counted_at"] = counted_at
    if keys is not None:
        orders: dict[Any, list[int]] = {}
        nids: dict[Any, list[int]] = {}
        gfps: dict[Any, list[int]] = {}
        ctxs: dict[str, list[int]] = {c: [0, 0] for c in CONTEXTS}
        for order, nid, gfp, ctx, a, f in keys:
            _add(orders, None if order == NO_ARG else order, a, f)
            _add(nids, None if nid == NO_ARG else nid, a, f)
            _add(gfps, None if gfp == NO_ARG else f"{gfp:#x}", a, f)
            _add(ctxs, CONTEXTS[ctx] if 0 <= ctx < len(CONTEXTS) else "unknown", a, f)
        out["by_order"] = _split(orders, "order")
        out["by_nid"] = _split(nids, "nid")
        out["by_gfp"] = [
            {"gfp": k, "attempts": a, "failures": f}
            for k, (a, f) in sorted(gfps.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
        ]
        out["by_context"] = {c: {"attempts": a, "failures": f} for c, (a, f) in ctxs.items()}
    if caller_rows is not None:
        out["by_caller"] = [
            {"caller": c, "attempts": a, "failures": f} for c, a, f in caller_rows[:TOP_CALLERS]
        ]
    if misses is not None:
        out["misses"] = {"recursion": misses.get("recursion"), "kprobe": misses.get("kprobe")}
    return out


# ---------------------------------------------------------------- metrics

METRICS: tuple[Metric, ...] = (
    Metric("nolock_attempts", "counter",
           "nolock page allocator calls (or its stand-in, see probe_info)"),
    Metric("nolock_failures", "counter", "nolock page allocator calls that returned no page"),
    Metric("nolock_attempts_by_cpu", "counter", "nolock page allocator calls by CPU", ("cpu",)),
    Metric("nolock_failures_by_cpu", "counter",
           "failed nolock page allocator calls by CPU", ("cpu",)),
    Metric("nolock_obtained_bytes", "counter",
           "bytes (pages x 4096) the nolock allocator returned"),
    Metric("nolock_attempts_by_order", "counter",
           "nolock page allocator calls by order", ("order",)),
    Metric("nolock_failures_by_order", "counter",
           "failed nolock allocator calls by order", ("order",)),
    Metric("nolock_attempts_by_context", "counter",
           "nolock page allocator calls by context (task, softirq, hardirq, nmi, unknown)",
           ("context",)),
    Metric("nolock_failures_by_context", "counter",
           "failed nolock page allocator calls by context", ("context",)),
    Metric("nolock_attempts_by_caller", "counter",
           "nolock page allocator calls by call site (top 20)", ("caller",)),
    Metric("nolock_failures_by_caller", "counter",
           "failed nolock page allocator calls by call site (top 20)", ("caller",)),
    Metric("nolock_missed_events_by_reason", "counter",
           "nolock probe runs the kernel skipped (recursion: a BPF program already running; "
           "kprobe: kprobe nmissed)",
           ("reason",)),
)


def samples(nl: Section) -> list:
    """The metric samples of a `nolock` section."""
    c = Samples(METRICS)
    c("nolock_attempts", nl["attempts"])
    c("nolock_failures", nl["failures"])
    for cpu, row in enumerate(nl["by_cpu"]):
        c("nolock_attempts_by_cpu", row.get("attempts", 0), cpu=cpu)
        c("nolock_failures_by_cpu", row.get("failures", 0), cpu=cpu)
    if nl.get("bytes") is not None:
        c("nolock_obtained_bytes", nl["bytes"])
    for row in nl.get("by_order") or []:
        order = "unknown" if row["order"] is None else row["order"]
        c("nolock_attempts_by_order", row["attempts"], order=order)
        c("nolock_failures_by_order", row["failures"], order=order)
    for ctx, row in (nl.get("by_context") or {}).items():
        c("nolock_attempts_by_context", row["attempts"], context=ctx)
        c("nolock_failures_by_context", row["failures"], context=ctx)
    for row in nl.get("by_caller") or []:
        c("nolock_attempts_by_caller", row["attempts"], caller=row["caller"])
        c("nolock_failures_by_caller", row["failures"], caller=row["caller"])
    for reason, n in (nl.get("misses") or {}).items():
        if n is not None:
            c("nolock_missed_events_by_reason", n, reason=reason)
    return c.out


FAMILY = Family("nolock", "alloc_pages_nolock", read, section, histograms, samples, METRICS)
