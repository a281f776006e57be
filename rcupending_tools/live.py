"""The live source: attach every probe of the table and read its maps into RawSamples."""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Any

from . import planner
from .bpfload import Loaded
from .collector import KVFREE_KINDS, LOST_REASONS, RawSample, TaskKey
from .kernel import KernelInfo
from .probes import PROBES, Probe


def _percpu_rows(table: Any, n: int) -> list[list[int]]:
    return [[int(v) for v in table[ctypes.c_int(i)]] for i in range(n)]


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

    def attach(self) -> LiveSource:
        try:
            for probe in self.probes:
                status, loaded = planner.attach(probe, self.kernel)
                self.statuses.append(status)
                if loaded is not None:
                    self.loaded[probe.name] = loaded
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        while self.loaded:
            _, loaded = self.loaded.popitem()
            loaded.close()

    def __enter__(self) -> LiveSource:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.statuses]

    def read(self) -> RawSample:
        raw = RawSample(time=time.time())
        lost = [0] * len(LOST_REASONS)
        for name, loaded in self.loaded.items():
            b = loaded.bpf
            for i, row in enumerate(_percpu_rows(b["lost"], len(LOST_REASONS))):
                lost[i] += sum(row)
            if name == "kvfree_call_rcu":
                raw.kvfree_enqueued = _percpu_rows(b["kvfree_enqueued"], len(KVFREE_KINDS))
                raw.kvfree_by_task = _tasks(b["kvfree_by_task"])
            elif name == "rcu_pending_enqueue":
                raw.pending_enqueued = _percpu_rows(b["pending_enqueued"], 1)[0]
                raw.pending_by_task = _tasks(b["pending_by_task"])
            elif name == "alloc_pages_nolock":
                raw.nolock_stats = _percpu_rows(b["nolock_stats"], 2)
        raw.lost = lost
        return raw
