"""Numbers derived from snapshots, in one place: rates (a difference of two cumulative readings
over their time difference) and percentiles (from log2 histograms).

Histograms come in two shapes: the kernel side's slot counts (slot s holds values in
[2^s, 2^(s+1)), slot 0 also 0) and the snapshot's `buckets` ([low, high, count], empty slots
left out). Percentiles are computed on the latter; slot counts are converted first.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import numpy as np

from .schema import Snapshot

PERCENTILES = (50, 90, 99)
Buckets = list[list[int]]  # [low, high, count] per non-empty bucket


_LOW = [0] + [1 << s for s in range(1, 64)]  # slot s: [_LOW[s], _HIGH[s])
_HIGH = [1 << (s + 1) for s in range(64)]


def log2_buckets(counts: list[int]) -> Buckets:
    """Non-empty log2 slots as [low, high, count]: slot s holds values in [2^s, 2^(s+1))."""
    if len(counts) > len(_HIGH):
        return [[*_slot_range(s), n] for s, n in enumerate(counts) if n]
    return [[_LOW[s], _HIGH[s], n] for s, n in enumerate(counts) if n]


def percentile_range(buckets: Buckets, p: float) -> tuple[int | float, int | float] | None:
    """[low, high) of the bucket holding the p-th percentile (p in 0..100): all a histogram
    can say of it. None when empty. Exact in integers: the first bucket where the count so far
    * 100 >= p * total."""
    ordered = sorted(buckets, key=lambda b: b[1])
    total = sum(b[2] for b in ordered)
    if total <= 0:
        return None
    cum = 0
    for low, high, count in ordered:
        cum += count
        if cum * 100 >= p * total:
            return low, high
    return ordered[-1][0], ordered[-1][1]


def percentile(buckets: Buckets, p: float) -> int | float | None:
    """The upper bound of the bucket holding the p-th percentile (None when empty)."""
    r = percentile_range(buckets, p)
    return None if r is None else r[1]


def _slot_range(s: int) -> tuple[int, int]:
    """[low, high) of log2 slot s, as log2_buckets() gives it."""
    return (0 if s == 0 else 1 << s), 1 << (s + 1)


def percentile_bounds(counts: list[int]) -> dict[str, Any]:
    """p50/p90/p99 and the maximum of log2 slot counts as upper bucket bounds, and `ranges`:
    each one's [low, high) bucket, which is what the histogram knows of it. The answers of
    percentile_range() on log2_buckets(counts), from one running sum over the non-empty
    slots (already in order) and no bucket lists."""
    slots = [s for s, n in enumerate(counts) if n]
    ns = [counts[s] for s in slots]
    cums = list(accumulate(ns))
    ranges: dict[str, Any] = dict.fromkeys((f"p{p}" for p in PERCENTILES), None)
    if cums and cums[-1] > 0:
        total = cums[-1]
        rising = min(ns) > 0  # histograms: no negative count
        for p in PERCENTILES:
            if rising:  # the first running sum with sum * 100 >= p * total
                i = bisect_left(cums, -(-p * total // 100))
            else:
                i = next((i for i, cum in enumerate(cums) if cum * 100 >= p * total), -1)
            ranges[f"p{p}"] = _slot_range(slots[i])
    ranges["max"] = _slot_range(slots[-1]) if slots else None
    out: dict[str, Any] = {k: None if r is None else r[1] for k, r in ranges.items()}
    out["ranges"] = {k: None if r is None else list(r) for k, r in ranges.items()}
    return out


_RANGES = [_slot_range(s) for s in range(64)]
_KEYS = (*(f"p{p}" for p in PERCENTILES), "max")
_PS = np.array(PERCENTILES, dtype=np.int64)[:, None]


def _fits(rows: np.ndarray) -> bool:
    """Whether every running sum of a row, times 100, stays inside int64 (numpy's integers
    wrap where Python's do not): counts below 2^63 / 100 / width each."""
    lim = (1 << 63) // 100 // max(1, rows.shape[1])
    return int(rows.max()) < lim and int(rows.min()) > -lim


def percentile_bounds_rows(rows: np.ndarray) -> list[dict[str, Any]]:
    """percentile_bounds() of each row of a 2-D array of log2 slot counts, with numpy over
    all rows at once (a snapshot has a dozen histograms); per row in Python when a row is
    wider than 64 slots or its sums could overflow int64."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2 or not 0 < rows.shape[1] <= len(_RANGES) or not _fits(rows):
        return [percentile_bounds(r) for r in rows.tolist()]
    cums = np.cumsum(rows, axis=1)
    totals = cums[:, -1]
    # by row and percentile, the first slot whose running sum * 100 >= p * total: never an
    # empty one, whose sum is the slot's before it (percentile_bounds walks non-empty ones)
    firsts = np.argmax(cums[:, None, :] * 100 >= _PS * totals[:, None, None], axis=2).tolist()
    nonzero = rows != 0
    lasts = (rows.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)).tolist()
    out: list[dict[str, Any]] = []
    keys, ranges_of, none = _KEYS, _RANGES, [None] * len(PERCENTILES)
    for total, any_slot, last, first in zip(totals.tolist(), nonzero.any(axis=1).tolist(),
                                            lasts, firsts, strict=True):
        if not any_slot:
            out.append(dict.fromkeys(keys) | {"ranges": dict.fromkeys(keys)})
            continue
        if total > 0:
            rs = [ranges_of[i] for i in first]
            rs.append(ranges_of[last])
            row = {k: r[1] for k, r in zip(keys, rs, strict=True)}
            row["ranges"] = {k: [*r] for k, r in zip(keys, rs, strict=True)}
        else:  # negative counts: only the maximum is known
            r = ranges_of[last]
            row = dict(zip(keys, [*none, r[1]], strict=True))
            row["ranges"] = dict(zip(keys, [*none, [*r]], strict=True))
        out.append(row)
    return out


def log2_buckets_rows(rows: np.ndarray) -> list[Buckets]:
    """log2_buckets() of each row of a 2-D array of slot counts: the non-empty slots found by
    numpy over all rows at once."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] > len(_HIGH):
        return [log2_buckets(r) for r in rows.tolist()]
    which, slots = np.nonzero(rows)  # row by row, slots in order
    low, high = _LOW, _HIGH
    flat = [[low[s], high[s], n]
            for s, n in zip(slots.tolist(), rows[which, slots].tolist(), strict=True)]
    ends = np.bincount(which, minlength=rows.shape[0]).cumsum().tolist()
    return [flat[start:end] for start, end in zip([0, *ends], ends, strict=False)]


def interval(before: Buckets, after: Buckets) -> Buckets:
    """The buckets of what a cumulative histogram gained between two snapshots."""
    old = {(lo, hi): n for lo, hi, n in before}
    return [[lo, hi, n - old.get((lo, hi), 0)] for lo, hi, n in after
            if n - old.get((lo, hi), 0) > 0]


def fmt_range(r: tuple[float, float] | list[float] | None, unit: str = "ns") -> str:
    """A bucket as people read it: `16.8–33.6 ms` (ns), `2–4` (other units); `?` if none."""
    if r is None:
        return "?"
    lo, hi = r
    if unit != "ns":
        return f"{lo:,g}–{hi:,g}"
    for name, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if hi > div:
            return f"{lo / div:.3g}–{hi / div:.3g} {name}"
    return f"{lo:.0f}–{hi:.0f} ns"


def rate(prev: Snapshot | None, cur: Snapshot | None,
         get: Callable[[Snapshot], Any]) -> float | None:
    """Per-second change of `get(snapshot)` between two snapshots (None when not derivable)."""
    if prev is None or cur is None:
        return None
    dt = cur["time"] - prev["time"]
    a, b = get(prev), get(cur)
    if dt <= 0 or a is None or b is None:
        return None
    return (b - a) / dt


def rates(series: Any) -> Any:
    """Per-second rates of a pandas Series/DataFrame of cumulative values indexed by time (s)."""
    dt = series.index.to_series().diff()
    return series.diff().div(dt, axis=0).iloc[1:]
