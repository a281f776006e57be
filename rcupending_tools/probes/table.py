"""The declarative probe table: what we probe, where it lives, how it may be attached.

Each mission function is a `Probe` with symbol candidates per kernel range. The planner
(planner.py) resolves a candidate against kallsyms and BTF of the running kernel and then
tries the attach kinds in order. Nothing here touches the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from ..kernel import KernelInfo
from .layouts import Layout, kvfree_layout, nolock_layout, pending_layout


class AttachKind(StrEnum):
    FENTRY = "fentry"  # fentry (+fexit where a return value is needed), BTF-typed
    KPROBE = "kprobe"  # kprobe (+kretprobe)
    TRACEPOINT = "tracepoint"  # a stand-in that sees only part of the function's calls


Version = tuple[int, int]


@dataclass(frozen=True)
class Candidate:
    """One symbol a probe may bind to, valid for kernels in [since, until)."""

    symbol: str
    since: Version
    until: Version | None = None
    # Parameter names as the kernel declares them (BTF confirms; the range is the fallback).
    params: tuple[str, ...] = ()
    module: str | None = None  # module that may hold the symbol instead of vmlinux
    note: str = ""

    def covers(self, version: Version) -> bool:
        return self.since <= version and (self.until is None or version < self.until)


@dataclass(frozen=True)
class StandIn:
    """A tracepoint that sees part of what the probe sees."""

    tracepoint: str  # "category:event"
    sees: str
    misses: str


@dataclass(frozen=True)
class Probe:
    name: str  # stable key used in snapshots and the CLI
    function: str  # the mission function, as people say it
    bpf_file: str  # bpf/<file>: programs selected by -D<prefix>_SYM/_FENTRY/_KPROBE/...
    prefix: str  # -D prefix of this probe's defines in bpf_file
    kprobe_fn: str  # kprobe-kind program in bpf_file (a kretprobe when needs_return)
    candidates: tuple[Candidate, ...]
    kinds: tuple[AttachKind, ...] = (AttachKind.FENTRY, AttachKind.KPROBE)
    needs_return: bool = False  # fexit / kretprobe needed
    stand_in: StandIn | None = None
    absent_reason: str = ""  # why a kernel outside every range lacks it
    # layouts/*.py: (kernel, BTF params, attach kind) -> defines and extra attach points
    layout: Callable[[KernelInfo, list[str] | None, str], Layout] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def candidates_for(self, version: Version) -> list[Candidate]:
        return [c for c in self.candidates if c.covers(version)]


KVFREE_CALL_RCU = Probe(
    name="kvfree_call_rcu",
    function="kvfree_call_rcu",
    bpf_file="kvfree_rcu.bpf.c",
    prefix="KVFREE",
    kprobe_fn="kprobe_kvfree_call_rcu",
    candidates=(
        Candidate(
            "kvfree_call_rcu",
            (5, 9),
            (6, 3),
            ("head", "func"),
            note="kernel/rcu/tree.c; func is the head offset, or the pointer when headless",
        ),
        Candidate(
            "kvfree_call_rcu",
            (6, 3),
            None,
            ("head", "ptr"),
            note="(head, ptr) since 6.3; mm/slab_common.c since 6.14",
        ),
    ),
    absent_reason="kvfree_call_rcu() exists since 5.9",
    layout=kvfree_layout,
)

RCU_PENDING_ENQUEUE = Probe(
    name="rcu_pending_enqueue",
    function="rcu_pending_enqueue",
    bpf_file="rcu_pending.bpf.c",
    prefix="PENDING",
    kprobe_fn="kprobe_rcu_pending_enqueue",
    candidates=(
        Candidate(
            "rcu_pending_enqueue",
            (6, 12),
            (6, 18),
            ("pending", "obj"),
            module="bcachefs",
            note="fs/bcachefs/rcu_pending.c, 6.12-6.17, bcachefs module or built in",
        ),
        # A patched kernel may carry rcu_pending in the core kernel (kernel/rcu/pending.c).
        Candidate(
            "rcu_pending_enqueue",
            (6, 12),
            None,
            ("pending", "obj"),
            note="core-kernel rcu_pending of a patched kernel (seed series)",
        ),
    ),
    absent_reason="rcu_pending exists only in fs/bcachefs (6.12-6.17) or a patched kernel",
    layout=pending_layout,
)

NOLOCK_ALLOC = Probe(
    name="alloc_pages_nolock",
    function="try_alloc_pages / alloc_pages_nolock",
    bpf_file="nolock.bpf.c",
    prefix="NOLOCK",
    kprobe_fn="kretprobe_nolock",
    candidates=(
        Candidate("try_alloc_pages_noprof", (6, 15), (6, 16), ("nid", "order")),
        Candidate("alloc_pages_nolock_noprof", (6, 16), (6, 18), ("nid", "order")),
        Candidate(
            "alloc_pages_nolock_noprof",
            (6, 18),
            None,
            ("gfp_flags", "nid", "order"),
            note="gfp argument (only __GFP_ACCOUNT) since 6.18; layouts/nolock.py adds the "
            "inner alloc_frozen_pages_nolock_noprof (kmalloc_nolock's direct calls)",
        ),
    ),
    needs_return=True,
    stand_in=StandIn(
        tracepoint="kmem:mm_page_alloc",
        sees="nolock allocations, told by a gfp mask without reclaim bits; failures as pfn -1",
        misses="caller arguments, exact attribution (other no-reclaim allocations look alike), "
        "calls that return before the tracepoint",
    ),
    absent_reason="try_alloc_pages() arrived in 6.15 (alloc_pages_nolock() from 6.16)",
    layout=nolock_layout,
)

# Every nolock entry point (stack frames of these are the allocator, not its caller).
NOLOCK_SYMBOLS = (
    "try_alloc_pages_noprof",
    "alloc_pages_nolock_noprof",
    "alloc_frozen_pages_nolock_noprof",
)

PROBES: tuple[Probe, ...] = (KVFREE_CALL_RCU, RCU_PENDING_ENQUEUE, NOLOCK_ALLOC)


def probe_by_name(name: str) -> Probe:
    for probe in PROBES:
        if probe.name == name:
            return probe
    raise KeyError(name)
