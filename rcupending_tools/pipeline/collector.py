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
from ..families import FAMILIES
from ..families.base import SectionContext
from .raw import LOST_REASONS, RawSample
from .schema import SCHEMA_NAME, SCHEMA_VERSION, Snapshot


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
        by_name = {p.get("name"): p for p in self.probes}
        stress = frozenset(self.stress_tgids)
        snap: Snapshot = {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "seq": self.seq,
            "time": raw.time,
            "elapsed_s": max(0.0, raw.time - self.start_time),
            "source": self.source,
            "provenance": self.provenance,
            "probes": self.probes,
        }
        histograms: dict[str, Any] = {}
        for fam in FAMILIES:
            reading = raw.families.get(fam.name)
            snap[fam.name] = fam.section(reading, SectionContext(by_name.get(fam.probe, {}),
                                                                 stress))
            histograms |= fam.histograms(reading)
        snap["lost"] = {
            "total": sum(raw.lost),
            "by_reason": dict(zip(LOST_REASONS, raw.lost, strict=False)),
        }
        snap["histograms"] = histograms
        snap["self_cost"] = None if raw.self_cost is None else dict(raw.self_cost)
        self.seq += 1
        return snap
