"""A raw reading: what the kernel side holds at one instant, per family, before any meaning is
given to it (families/*.py give it), plus the counters every BPF module shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..families import enums

LOST_REASONS = enums.header("common.bpf.h").enum("lost_reason").names("LOST_")


@dataclass
class RawSample:
    """Cumulative kernel-side values at `time`: `families` maps a family name to its reading
    (absent: probe not attached); `lost` is per LOST_REASONS, summed over modules and CPUs."""

    time: float
    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: list[int] = field(default_factory=lambda: [0] * len(LOST_REASONS))
    self_cost: dict[str, Any] | None = None  # selfcost.sample() of the reading process

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "families": self.families, "lost": self.lost,
                "self_cost": self.self_cost}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RawSample:
        return cls(float(d["time"]), dict(d.get("families") or {}),
                   list(d.get("lost") or [0] * len(LOST_REASONS)), d.get("self_cost"))
