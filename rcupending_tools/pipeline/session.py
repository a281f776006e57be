"""The one way to attach: `open_live()` attaches the probes of this kernel and pairs the live
source with a collector, so every command reads snapshots the same way."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config
from ..errors import UserError
from ..probes import bpfload
from ..probes.table import PROBES, Probe
from .collector import Collector, provenance
from .live import LiveSource
from .schema import Snapshot


@dataclass
class LiveSession:
    """Attached probes and their collector. Use as a context manager: exit detaches."""

    source: LiveSource
    collector: Collector

    def read(self, count_map: bool = False) -> Snapshot:
        """One snapshot of every attached probe (`count_map`: also walk the tracking maps)."""
        return self.collector.update(self.source.read(count_map=count_map))

    @property
    def statuses(self) -> list:
        return self.source.statuses

    @property
    def attached(self) -> list[str]:
        return list(self.source.loaded)

    @property
    def release(self) -> str:
        return self.source.kernel.release

    @property
    def provenance(self) -> dict:
        return self.collector.provenance

    def follow(self, tgids: set[int]) -> None:
        """Follow these processes' objects and count them apart (snapshot `by_stress`): call
        it before they enqueue anything."""
        self.collector.stress_tgids = set(tgids)
        self.source.watch(set(tgids))

    def require_something_attached(self) -> None:
        if not self.source.loaded:
            reasons = "; ".join(f"{s.name}: {s.status} ({s.detail})" for s in self.statuses)
            raise UserError(f"no probe could attach on this kernel: {reasons}")

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_live(probes: tuple[Probe, ...] = PROBES, *, self_cost: bool = False,
              command: str | None = None, require: bool = False) -> LiveSession:
    """Attach `probes` on this kernel (root) and start a collector: snapshots say `lab-vm`
    inside a lab VM, else `live`. `self_cost` holds a BPF_ENABLE_STATS fd while attached;
    `require` fails with one line (after detaching) when nothing attached."""
    bpfload.require_root()
    src = LiveSource(probes=probes, self_cost=self_cost).attach()
    source = "lab-vm" if config.lab() else "live"
    session = LiveSession(src, Collector(provenance(command=command), src.probe_dicts(),
                                         source=source))
    if require:
        try:
            session.require_something_attached()
        except BaseException:
            session.close()
            raise
    return session
