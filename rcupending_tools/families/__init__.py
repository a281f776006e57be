"""The metric families, one module each: read (maps -> raw), section (raw -> snapshot
section), samples (section -> metric samples). Adding a family here adds it everywhere."""

from . import kvfree, nolock, pending
from .base import Family

FAMILIES: tuple[Family, ...] = (kvfree.FAMILY, pending.FAMILY, nolock.FAMILY)
BY_PROBE = {f.probe: f for f in FAMILIES}

__all__ = ["FAMILIES", "BY_PROBE", "Family"]
