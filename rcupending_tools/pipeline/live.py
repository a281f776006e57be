"""The live source: attach every probe of the table and read its maps into RawSamples (each
family reads its own maps: families/*.py)."""

from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..families import BY_PROBE
from ..families.base import ReadContext, percpu_rows
from ..kernel import KernelInfo
from ..probes import leftovers, planner
from ..probes.bpfload import Loaded
from ..probes.table import PROBES, Probe
from . import selfcost
from .raw import LOST_REASONS, RawSample


@dataclass
class LiveSource:
    """Attached probes of this kernel. Use as a context manager: exit detaches everything."""

    kernel: KernelInfo = field(default_factory=KernelInfo)
    probes: tuple[Probe, ...] = PROBES
    statuses: list[planner.ProbeStatus] = field(default_factory=list)
    loaded: dict[str, Loaded] = field(default_factory=dict)
    self_cost: bool = False  # hold a BPF_ENABLE_STATS fd while attached (--self-cost)
    stats_fd: int | None = None
    _programs: tuple[tuple[Any, ...], list[selfcost.Program]] | None = field(
        default=None, repr=False, compare=False)

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
        """Every hook is attached: the families set their kernel side up, then the enqueue
        sides count (bpf/common.bpf.c `armed`)."""
        for name, loaded in self.loaded.items():
            BY_PROBE[name].arm(loaded.bpf)
        for loaded in self.loaded.values():
            loaded.bpf["armed"][ctypes.c_int(0)] = ctypes.c_ulonglong(1)

    def watch(self, tgids: set[int]) -> None:
        """Follow these processes' objects and count them apart (a stress's workers)."""
        for name, loaded in self.loaded.items():
            BY_PROBE[name].watch(loaded.bpf, tgids)

    def close(self) -> None:
        while self.loaded:
            _, loaded = self.loaded.popitem()
            loaded.close()
        selfcost.disable_stats(self.stats_fd)
        self.stats_fd = None

    def programs(self) -> list[selfcost.Program]:
        """Every loaded BPF program (bcc function name and fd), by probe; made again only
        when the loaded modules or their programs changed (once per session, not per read)."""
        key = tuple((probe, id(x.bpf), len(x.bpf.funcs)) for probe, x in self.loaded.items())
        if self._programs is None or self._programs[0] != key:
            self._programs = key, [
                selfcost.Program(probe, name.decode(errors="replace"), fn.fd)
                for probe, loaded in self.loaded.items()
                for name, fn in loaded.bpf.funcs.items()
            ]
        return list(self._programs[1])

    def __enter__(self) -> LiveSource:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.statuses]

    def read(self, count_map: bool = False, tries: int = 3) -> RawSample:
        """Read every attached program's maps; `count_map` also walks the per-object tracking
        maps (costly) so the conservation invariant can be checked. With BPF stats on, retry
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
        with selfcost.one_read():  # each program's statistics read once per snapshot
            return self._read_maps(count_map, progs)

    def _read_maps(self, count_map: bool, progs: list[selfcost.Program]) -> RawSample:
        raw = RawSample(time=time.time())
        statuses = {s.name: s for s in self.statuses}
        for name, loaded in self.loaded.items():
            for i, row in enumerate(percpu_rows(loaded.bpf["lost"], len(LOST_REASONS))):
                raw.lost[i] += sum(row)
            family = BY_PROBE[name]
            ctx = ReadContext(statuses[name], self.kernel, loaded.kind, count_map)
            raw.families[family.name] = family.read(loaded.bpf, ctx)
        # the time the values were read by, not when reading began: a read takes a while (the
        # tracking map's batch, under TCG hundreds of ms), and a snapshot stamped at its start
        # held objects of a flood that began after that stamp (debian:6.12 reconcile test)
        raw.time = time.time()
        raw.self_cost = selfcost.sample(progs)
        return raw
