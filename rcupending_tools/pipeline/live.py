"""The live source: attach every probe of the table and read its maps into RawSamples."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..families import kvfree as km
from ..families import nolock as nm
from ..families import pending as pm
from ..kernel import KernelInfo
from ..probes import bpfload, leftovers, planner
from ..probes.bpfload import Loaded
from ..probes.table import PROBES, Probe
from . import selfcost
from .collector import LOST_REASONS, RawSample, TaskKey


def _percpu_rows(table: Any, n: int) -> list[list[int]]:
    return [[int(v) for v in table[ctypes.c_int(i)]] for i in range(n)]


def _summed(table: Any, n: int) -> list[int]:
    return [sum(int(v) for v in table[ctypes.c_int(i)]) for i in range(n)]


def _program_misses(b: Any) -> dict[str, int]:
    """recursion_misses per program of a bcc module (fdinfo), for the kernels that report it."""
    out: dict[str, int] = {}
    for name, fn in b.funcs.items():
        if (n := selfcost.recursion_misses(fn.fd)) is not None:
            out[name.decode(errors="replace")] = n
    return out


def _recursion_misses(b: Any) -> int | None:
    """Runs the kernel skipped because a BPF program was already running on that CPU (fentry's
    per-program recursion check; kprobe programs while another BPF program runs, 6.7+), summed
    over the module's programs from /proc/self/fdinfo; None when the kernel does not say."""
    per_program = _program_misses(b)
    return sum(per_program.values()) if per_program else None


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


def _kprobe_misses(loaded: Loaded) -> int | None:
    """nmissed of this process's bcc kprobe events (kprobe_profile: name, hits, nmissed);
    None when they are not listed (bcc attached through the perf kprobe PMU)."""
    tag = f"_bcc_{os.getpid()}"
    for base in (bpfload.TRACEFS, Path("/sys/kernel/debug/tracing")):
        try:
            lines = (base / "kprobe_profile").read_text().splitlines()
        except OSError:
            continue
        rows = [ln.split() for ln in lines if tag in ln]
        if rows:
            return sum(int(r[-1]) for r in rows if r and r[-1].isdigit())
    return None


def _tasks(table: Any) -> dict[TaskKey, int]:
    out: dict[TaskKey, int] = {}
    for k, v in table.items():
        key = (int(k.tgid), bytes(k.comm).split(b"\0", 1)[0].decode(errors="replace"))
        out[key] = out.get(key, 0) + int(v.value)
    return out


@dataclass
class LiveSource:
    """Attached probes of this kernel. Use as a context manager: exit detaches everything."""

    kernel: KernelInfo = field(default_factory=KernelInfo)
    probes: tuple[Probe, ...] = PROBES
    statuses: list[planner.ProbeStatus] = field(default_factory=list)
    loaded: dict[str, Loaded] = field(default_factory=dict)
    self_cost: bool = False  # hold a BPF_ENABLE_STATS fd while attached (--self-cost)
    stats_fd: int | None = None
    _text_bounds: tuple[int, int] | None = None

    def attach(self) -> LiveSource:
        if removed := leftovers.clean_stale_kprobes():
            print(
                f"rcupending: removed {len(removed)} stale kprobe event(s) left by killed runs: "
                + ", ".join(removed),
                file=sys.stderr,
            )
        try:
            if self.self_cost:  # before loading: run counts then start with the maps
                self.stats_fd = selfcost.enable_stats()
            for probe in self.probes:
                status, loaded = planner.attach(probe, self.kernel)
                self.statuses.append(status)
                if loaded is not None:
                    self.loaded[probe.name] = loaded
        except BaseException:
            self.close()
            raise
        self.arm()
        selfcost.mark_attach()  # self_cost.cpu_seconds counts from here, like elapsed_s
        return self

    def arm(self) -> None:
        """Every hook is attached: let the enqueue sides count (bpf/common.bpf.c `armed`)."""
        for loaded in self.loaded.values():
            loaded.bpf["armed"][ctypes.c_int(0)] = ctypes.c_ulonglong(1)

    def close(self) -> None:
        while self.loaded:
            _, loaded = self.loaded.popitem()
            loaded.close()
        selfcost.disable_stats(self.stats_fd)
        self.stats_fd = None

    def programs(self) -> list[selfcost.Program]:
        """Every loaded BPF program (bcc function name and fd), by probe."""
        return [
            selfcost.Program(probe, name.decode(errors="replace"), fn.fd)
            for probe, loaded in self.loaded.items()
            for name, fn in loaded.bpf.funcs.items()
        ]

    def __enter__(self) -> LiveSource:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.statuses]

    def _read_kvfree(self, b: Any, raw: RawSample, count_map: bool = False) -> None:
        # Free-side maps first, then per-task enqueues, then the totals: while traffic runs,
        # each split is read before the total it is compared with, so pending per CPU and
        # per process is never negative and never exceeds the total.
        raw.kvfree_events = _summed(b["kv_events"], km.NEV)
        raw.kvfree_dur_hist = _summed(b["kv_dur_hist"], km.NDUR * km.HIST_SLOTS)
        hist_lat = _summed(b["kv_lat_hist"], km.NPATH * km.HIST_SLOTS)
        hist_gp = _summed(b["kv_gp_hist"], km.NPATH * km.HIST_SLOTS)
        table = b["kv_freed_by_enq_cpu"]
        ncpu = len(b["kv_stats"][ctypes.c_int(0)])
        freed_by_cpu = [
            [int(table[ctypes.c_int(c)].objects), int(table[ctypes.c_int(c)].bytes)]
            for c in range(ncpu)
        ]
        freed_by_tgid = {
            int(k.value): [int(v.objects), int(v.bytes)] for k, v in b["kv_freed_by_tgid"].items()
        }
        tasks: dict[TaskKey, list[int]] = {}
        for k, v in b["kvfree_by_task"].items():
            key = (int(k.tgid), bytes(k.comm).split(b"\0", 1)[0].decode(errors="replace"))
            cur = tasks.setdefault(key, [0, 0, 0, 0, 0])
            cur[0] += int(v.objects)
            cur[1] += int(v.bytes)
            cur[2] += int(v.headless)
            cur[3] += int(v.headless_bytes)
            cur[4] += int(v.untracked)
        raw.kvfree_misses = _program_misses(b)  # before the counters: never more than them
        raw.kvfree_stats = _percpu_rows(b["kv_stats"], km.ST_MAX)
        raw.kvfree_lat_hist, raw.kvfree_gp_hist = hist_lat, hist_gp
        raw.kvfree_by_task = tasks
        raw.kvfree_freed_by_tgid = freed_by_tgid
        raw.kvfree_freed_by_enq_cpu = freed_by_cpu
        g = b["kv_pending_gauge"][ctypes.c_int(0)]
        raw.kvfree_pending_gauge = [int(g.objects), int(g.bytes), int(g.peak_objects),
                                    int(g.peak_bytes)]
        if count_map:
            raw.kvfree_in_map = self._count_inflight(b, raw.kvfree_stats)

    def _read_pending(self, b: Any, raw: RawSample, count_map: bool = False) -> None:
        # Processed/dequeued sides (histograms) before the enqueue totals, like kvfree.
        n = pm.NFL * km.HIST_SLOTS
        raw.pending_lat_hist = _summed(b["pending_lat_hist"], n)
        raw.pending_gp_hist = _summed(b["pending_gp_hist"], n)
        raw.pending_run_hist = _summed(b["pending_run_hist"], n)
        raw.pending_by_task = _tasks(b["pending_by_task"])
        facts = next((st.facts for st in self.statuses if st.name == "rcu_pending_enqueue"), {})
        names = [n for n in facts.get("process_callbacks", "").split(",") if n]
        hooked = {sym.address for n in names if (sym := self.kernel.symbol(n))}
        raw.pending_callbacks = [
            {
                "address": hex(addr),
                "symbol": pm.KVFREE_PROCESS_NAME
                if addr == pm.KVFREE_PROCESS
                else (self.kernel.ksym_at(addr) or ""),
                "enqueued": int(v.value),
                "hooked": addr in hooked or addr == pm.KVFREE_PROCESS,
            }
            for addr, v in ((int(k.value), v) for k, v in b["pending_callbacks"].items())
        ]
        raw.pending_stats = _percpu_rows(b["pending_stats"], pm.PS_MAX * pm.NFL)
        raw.pending_enqueued = pm.enqueued_by_cpu(raw.pending_stats)
        if count_map:
            raw.pending_in_map = self._count_pending(b, raw.pending_stats)

    @staticmethod
    def _count_pending(b: Any, stats: list[list[int]], tries: int = 5) -> dict[str, int] | None:
        """The tracking map between two identical counter reads (see _count_inflight)."""
        for _ in range(tries):
            counts = {"objects": 0, "bytes": 0}
            for v in b["pending_inflight"].values():
                counts["objects"] += 1
                counts["bytes"] += int(v.bytes)
            after = _percpu_rows(b["pending_stats"], pm.PS_MAX * pm.NFL)
            if after == stats:
                return counts
            stats[:] = after
            time.sleep(0.05)
        return None

    @staticmethod
    def _count_inflight(b: Any, stats: list[list[int]], tries: int = 5) -> dict[str, int] | None:
        """Count the tracking map between two identical reads of the counters (so the count
        and the counters describe one instant); None if traffic never paused."""
        for _ in range(tries):
            counts = {"objects": 0, "bytes": 0, "krc": 0, "sheaf": 0}
            for v in b["kv_inflight"].values():
                counts["objects"] += 1
                counts["bytes"] += int(v.bytes)
                counts["sheaf" if v.route else "krc"] += 1
            after = _percpu_rows(b["kv_stats"], km.ST_MAX)
            if after == stats:
                return counts
            stats[:] = after  # the caller's snapshot moves to the newer instant
            time.sleep(0.05)
        return None

    def _read_nolock(self, b: Any, raw: RawSample, loaded: Loaded) -> None:
        # splits first, totals last: a split never exceeds the total read after it
        stacks = [
            ([int(ip) for ip in k.ip], int(v.attempts), int(v.failures))
            for k, v in b["nolock_by_stack"].items()
        ]
        raw.nolock_keys = [
            [int(k.order), int(k.nid), int(k.gfp), int(k.ctx), int(v.attempts), int(v.failures)]
            for k, v in b["nolock_by_key"].items()
        ]
        memcg = None
        if "memcg_cause" not in self._unavailable("alloc_pages_nolock"):
            memcg = [[int(k.value), _cgroup_path(int(k.value)), int(v.value)]
                     for k, v in b["nolock_memcg_fail"].items()]
        raw.nolock_stats = _percpu_rows(b["nolock_stats"], len(nm.STATS))
        raw.nolock_memcg = memcg
        raw.nolock_callers = nm.callers(stacks, self._core_text_symbol)
        raw.nolock_misses = {
            "recursion": _recursion_misses(b),
            "kprobe": _kprobe_misses(loaded) if loaded.kind == "kprobe" else None,
        }

    def _unavailable(self, probe: str) -> dict[str, str]:
        return next((s.unavailable for s in self.statuses if s.name == probe), {})

    def _core_text_symbol(self, address: int) -> str | None:
        """The kernel text symbol at `address`; None outside _stext.._etext (BPF JIT images,
        trampolines, modules)."""
        if self._text_bounds is None:
            lo, hi = self.kernel.symbol("_stext"), self.kernel.symbol("_etext")
            self._text_bounds = (lo.address if lo else 0, hi.address if hi else 0)
        lo, hi = self._text_bounds
        return self.kernel.ksym_at(address) if lo <= address < hi else None

    def read(self, count_map: bool = False, tries: int = 3) -> RawSample:
        """Read every attached program's maps; `count_map` also walks the per-object tracking
        map (costly) so the conservation invariant can be checked. With BPF stats on, retry
        (up to `tries` reads) until no program ran during the read, so run counts and map
        counters describe one instant whenever traffic pauses."""
        progs = self.programs()
        for _ in range(tries - 1):
            before = selfcost.run_counts(progs) if self.stats_fd is not None else None
            raw = self._read_once(count_map, progs)
            if before is None or before == selfcost.run_counts(progs):
                return raw
        return self._read_once(count_map, progs)

    def _read_once(self, count_map: bool, progs: list[selfcost.Program]) -> RawSample:
        raw = RawSample(time=time.time())
        lost = [0] * len(LOST_REASONS)
        for name, loaded in self.loaded.items():
            b = loaded.bpf
            for i, row in enumerate(_percpu_rows(b["lost"], len(LOST_REASONS))):
                lost[i] += sum(row)
            if name == "kvfree_call_rcu":
                self._read_kvfree(b, raw, count_map)
            elif name == "rcu_pending_enqueue":
                self._read_pending(b, raw, count_map)
            elif name == "alloc_pages_nolock":
                self._read_nolock(b, raw, loaded)
        raw.lost = lost
        raw.self_cost = selfcost.sample(progs)
        return raw
