"""One collector for live, replay and tests: raw map readings in, schema snapshots out.

A `RawSample` is what the kernel side holds at one instant (cumulative counters, as read from
the BPF maps); `LiveSource` reads one from attached programs, a recording replays them, tests
make them up. `Collector.update()` turns each into a snapshot (schema.py).
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, config
from ..families import kvfree as kvfree_metrics
from ..families import nolock as nolock_metrics
from ..families import pending as pending_metrics
from .schema import SCHEMA_NAME, SCHEMA_VERSION, Snapshot

# Index order of the BPF side's enums (bpf/common.bpf.h, bpf/*.bpf.c).
LOST_REASONS = ("task_map_full", "nolock_key_map_full", "nolock_stack_map_full", "nolock_no_stack")
TOP_PROCESSES = 20

TaskKey = tuple[int, str]  # (tgid, comm)


@dataclass
class RawSample:
    """Cumulative kernel-side counters at `time`. Absent families are None."""

    time: float
    kvfree_stats: list[list[int]] | None = None  # [kvfree_metrics.ST_*][cpu]
    kvfree_lat_hist: list[int] | None = None  # [path * 64 + log2 slot], summed over CPUs
    kvfree_gp_hist: list[int] | None = None
    # -> [objects, bytes, headless objects, headless bytes, untracked objects]
    kvfree_by_task: dict[TaskKey, list[int]] | None = None
    kvfree_freed_by_tgid: dict[int, list[int]] | None = None  # enqueuer tgid -> [objects, bytes]
    kvfree_freed_by_enq_cpu: list[list[int]] | None = None  # [cpu] -> [objects, bytes]
    kvfree_in_map: dict[str, int] | None = None  # tracked objects counted in the map (costly)
    kvfree_events: list[int] | None = None  # [kvfree_metrics.EVENTS], summed over CPUs
    kvfree_dur_hist: list[int] | None = None  # [kvfree_metrics.DURATIONS * 64 + log2 slot]
    kvfree_misses: dict[str, int] | None = None  # recursion_misses per BPF program
    # tracked pending [objects, bytes, peak objects, peak bytes], kept by the kernel side
    kvfree_pending_gauge: list[int] | None = None
    pending_enqueued: list[int] | None = None  # [cpu]
    pending_by_task: dict[TaskKey, int] | None = None
    pending_stats: list[list[int]] | None = None  # [pending_metrics.PS * NFL + flavor][cpu]
    pending_lat_hist: list[int] | None = None  # [flavor * 64 + log2 slot], summed over CPUs
    pending_gp_hist: list[int] | None = None
    pending_run_hist: list[int] | None = None  # objects per __process_finished_items run
    pending_in_map: dict[str, int] | None = None  # tracked objects counted in the map (costly)
    pending_callbacks: list[dict[str, Any]] | None = None  # process fns seen at enqueue
    nolock_stats: list[list[int]] | None = None  # [attempts, failures, pages][cpu]
    # [order, nid, gfp, context, attempts, failures] (nolock_metrics.NO_ARG: not seen)
    nolock_keys: list[list[int]] | None = None
    nolock_callers: list[list[Any]] | None = None  # [caller symbol, attempts, failures]
    nolock_misses: dict[str, int | None] | None = None  # recursion / kprobe misses
    nolock_memcg: list[list[Any]] | None = None  # [cgroup id, path, failed charges]
    lost: list[int] = field(default_factory=lambda: [0] * len(LOST_REASONS))
    self_cost: dict[str, Any] | None = None  # selfcost.sample() of the reading process

    def to_json(self) -> dict[str, Any]:
        def tasks(d: dict[TaskKey, int] | None) -> list | None:
            return None if d is None else [[t, c, n] for (t, c), n in sorted(d.items())]

        freed = self.kvfree_freed_by_tgid
        return {
            "time": self.time,
            "kvfree_stats": self.kvfree_stats,
            "kvfree_lat_hist": self.kvfree_lat_hist,
            "kvfree_gp_hist": self.kvfree_gp_hist,
            "kvfree_by_task": tasks(self.kvfree_by_task),
            "kvfree_freed_by_tgid": None
            if freed is None
            else sorted([t, *v] for t, v in freed.items()),
            "kvfree_freed_by_enq_cpu": self.kvfree_freed_by_enq_cpu,
            "kvfree_in_map": self.kvfree_in_map,
            "kvfree_events": self.kvfree_events,
            "kvfree_dur_hist": self.kvfree_dur_hist,
            "kvfree_misses": self.kvfree_misses,
            "kvfree_pending_gauge": self.kvfree_pending_gauge,
            "pending_enqueued": self.pending_enqueued,
            "pending_by_task": tasks(self.pending_by_task),
            "pending_stats": self.pending_stats,
            "pending_lat_hist": self.pending_lat_hist,
            "pending_gp_hist": self.pending_gp_hist,
            "pending_run_hist": self.pending_run_hist,
            "pending_in_map": self.pending_in_map,
            "pending_callbacks": self.pending_callbacks,
            "nolock_stats": self.nolock_stats,
            "nolock_keys": self.nolock_keys,
            "nolock_callers": self.nolock_callers,
            "nolock_misses": self.nolock_misses,
            "nolock_memcg": self.nolock_memcg,
            "lost": self.lost,
            "self_cost": self.self_cost,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RawSample:
        def tasks(v: list | None) -> dict[TaskKey, Any] | None:
            return None if v is None else {(int(t), str(c)): n for t, c, n in v}

        freed = d.get("kvfree_freed_by_tgid")
        return cls(
            time=float(d["time"]),
            kvfree_stats=d.get("kvfree_stats"),
            kvfree_lat_hist=d.get("kvfree_lat_hist"),
            kvfree_gp_hist=d.get("kvfree_gp_hist"),
            kvfree_by_task=tasks(d.get("kvfree_by_task")),
            kvfree_freed_by_tgid=None if freed is None else {int(t): [o, b] for t, o, b in freed},
            kvfree_freed_by_enq_cpu=d.get("kvfree_freed_by_enq_cpu"),
            kvfree_in_map=d.get("kvfree_in_map"),
            kvfree_events=d.get("kvfree_events"),
            kvfree_dur_hist=d.get("kvfree_dur_hist"),
            kvfree_misses=d.get("kvfree_misses"),
            kvfree_pending_gauge=d.get("kvfree_pending_gauge"),
            pending_enqueued=d.get("pending_enqueued"),
            pending_by_task=tasks(d.get("pending_by_task")),
            pending_stats=d.get("pending_stats"),
            pending_lat_hist=d.get("pending_lat_hist"),
            pending_gp_hist=d.get("pending_gp_hist"),
            pending_run_hist=d.get("pending_run_hist"),
            pending_in_map=d.get("pending_in_map"),
            pending_callbacks=d.get("pending_callbacks"),
            nolock_stats=d.get("nolock_stats"),
            nolock_keys=d.get("nolock_keys"),
            nolock_callers=d.get("nolock_callers"),
            nolock_misses=d.get("nolock_misses"),
            nolock_memcg=d.get("nolock_memcg"),
            lost=list(d.get("lost") or [0] * len(LOST_REASONS)),
            self_cost=d.get("self_cost"),
        )


def command_line() -> str:
    """This process's command line as the user would type it."""
    return shlex.join(["rcupending", *sys.argv[1:]])


def provenance(kernel_release: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Who measured what: kernel, tool, command (default: this process's); a lab VM says so
    through the environment."""
    return {
        "kernel_release": kernel_release or os.uname().release,
        "tool_version": __version__,
        "command": command_line() if command is None else command,
        "hostname": socket.gethostname(),
        "lab": config.lab(),
    }


def _by_process(tasks: dict[TaskKey, int]) -> list[dict[str, Any]]:
    top = sorted(tasks.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_PROCESSES]
    return [{"tgid": t, "comm": c, "objects": n} for (t, c), n in top]


@dataclass
class Collector:
    provenance: dict[str, Any]
    probes: list[dict[str, Any]]
    source: str = "live"
    stress_tgids: set[int] = field(default_factory=set)
    seq: int = 0
    start_time: float | None = None

    def update(self, raw: RawSample) -> Snapshot:
        if self.start_time is None:
            self.start_time = raw.time
        snap: Snapshot = {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "seq": self.seq,
            "time": raw.time,
            "elapsed_s": max(0.0, raw.time - self.start_time),
            "source": self.source,
            "provenance": self.provenance,
            "probes": self.probes,
            "kvfree_rcu": self._kvfree(raw),
            "rcu_pending": self._pending(raw),
            "nolock": self._nolock(raw),
            "lost": {
                "total": sum(raw.lost),
                "by_reason": dict(zip(LOST_REASONS, raw.lost, strict=False)),
            },
            "histograms": kvfree_metrics.histograms(raw) | pending_metrics.histograms(raw),
            "self_cost": None if raw.self_cost is None else dict(raw.self_cost),
        }
        self.seq += 1
        return snap

    def _kvfree(self, raw: RawSample) -> dict[str, Any] | None:
        return kvfree_metrics.kvfree_family(raw, self.stress_tgids)

    def _pending(self, raw: RawSample) -> dict[str, Any] | None:
        return pending_metrics.pending_family(raw, _by_process(raw.pending_by_task or {}))

    def _nolock(self, raw: RawSample) -> dict[str, Any] | None:
        if raw.nolock_stats is None:
            return None
        probe = next((p for p in self.probes if p.get("name") == "alloc_pages_nolock"), {})
        counted_at = None
        if probe.get("status") == "attached":  # "fexit on SYM[ + INNER (calls not from SYM)]"
            counted_at = str(probe.get("detail", "")).partition(" on ")[2] or probe.get("symbol")
        if probe.get("status") == "stand-in":
            counted_at = probe.get("mechanism")
        return nolock_metrics.nolock_family(
            raw.nolock_stats,
            raw.nolock_keys,
            raw.nolock_callers,
            raw.nolock_misses,
            counted_at,
            raw.nolock_memcg,
        )
