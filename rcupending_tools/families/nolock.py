"""The nolock page allocator family: raw map readings of bpf/nolock.bpf.c -> the snapshot's
`nolock` object, and the call-site rule for the stacks the BPF side keys its counts by.

Counting rule: the BPF side hooks one function, the innermost one every nolock allocation
passes exactly once (alloc_frozen_pages_nolock_noprof on 6.18+, else try_alloc_pages_noprof /
alloc_pages_nolock_noprof). A call through the wrapper is counted there once and attributed
to the wrapper's caller: the caller is the first frame after the LAST nolock frame of the
stack, skipping BPF/tracing machinery (trampolines, programs, kretprobe return stubs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..probes.table import NOLOCK_SYMBOLS

# Index order of bpf/nolock.bpf.c's enums.
STATS = ("attempts", "failures", "pages", "memcg_failures")
CONTEXTS = ("task", "softirq", "hardirq", "nmi", "unknown")
NO_ARG = 0x7FFFFFFF  # order/nid/gfp the attach mechanism cannot see
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
