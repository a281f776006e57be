"""A snapshot of a fixed, dense kvfree reading (every CPU's counters and histograms filled,
dozens of processes) against the one stored in golden/: a faster collector must report the
same figures. Regenerate (only for a deliberate change of figures) with
`RCUPENDING_GOLDEN_WRITE=1 pytest tests/unit/test_snapshot_golden.py`."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

from rcupending_tools.families import kvfree as km
from rcupending_tools.pipeline.collector import Collector
from rcupending_tools.pipeline.raw import LOST_REASONS, RawSample

GOLDEN = Path(__file__).parent / "golden" / "kvfree_snapshot.json"
NCPU = 3


def dense_raw(seed: int = 14) -> RawSample:
    """Every word of every CPU's counters set (histogram slots a third of them empty), the
    enqueue-side totals large enough that pending stays positive."""
    rng = random.Random(seed)
    width = km.KV_GONE + 2 * NCPU + 1
    rows = [[rng.randrange(0, 5000) if rng.random() > 0.3 else 0 for _ in range(width)]
            for _ in range(NCPU)]
    for c, row in enumerate(rows):
        for st in (km.ST_ENQ_HEAD, km.ST_ENQ_HEADLESS, km.ST_TRACKED, km.ST_WINDOW_TRACKED):
            row[km.KV_STATS + st] = rng.randrange(10**6, 10**7)
        for st in (km.ST_ENQ_BYTES, km.ST_TRACKED_BYTES):
            row[km.KV_STATS + st] = rng.randrange(10**9, 10**10)
        row[km.KV_GAUGE] = -rng.randrange(100) if c else rng.randrange(10**5)
        row[km.KV_END] = row[-1] = 7 + c
    tgids = [2000 + 17 * i for i in range(40)]
    by_task = [[t, f"comm{i}-{j}", *(rng.randrange(1, 10**6) for _ in range(8))]
               for i, t in enumerate(tgids) for j in range(1 + (i % 4 == 0))]
    pending = [[t, rng.randrange(1, 5000), rng.randrange(1, 10**6)]
               for t in tgids[::2] + [99999]]
    kv = {"misses": {"kfunc__vmlinux__kvfree_call_rcu": 3, "kretfunc__x": 1, "kprobe__y": 0},
          "by_task": by_task, "counters": rows, "torn": False, "sample_one_in": 64,
          "pending_by_tgid": pending, "pending_gauge": [5, 500, 9, 900]}
    lost = [1, 0, 2] + [0] * (len(LOST_REASONS) - 3)
    return RawSample(time=1000.0, lost=lost, families={"kvfree_rcu": kv})


def snapshot() -> dict:
    probes = [{"name": "kvfree_call_rcu", "facts": {"sample_one_in": "64", "settle_s": "0"}}]
    col = Collector({"command": "golden"}, probes, source="synthetic", stress_tgids={2017})
    col.update(dense_raw(13))
    return json.loads(json.dumps(col.update(dense_raw())))


def test_a_dense_kvfree_snapshot_reports_the_stored_figures():
    snap = snapshot()
    if os.environ.get("RCUPENDING_GOLDEN_WRITE"):
        GOLDEN.write_text(json.dumps(snap, sort_keys=True, indent=0) + "\n")
    assert snap == json.loads(GOLDEN.read_text())


def _shares_reference(total: int, weights: list[int]) -> list[int]:
    """shares() as first written (remainders ordered by (-remainder, index) tuples)."""
    wsum = sum(weights)
    if total <= 0 or wsum <= 0:
        return [0] * len(weights)
    parts = [divmod(total * w, wsum) for w in weights]
    out = [q for q, _ in parts]
    for i in sorted(range(len(weights)), key=lambda i: (-parts[i][1], i))[:total - sum(out)]:
        out[i] += 1
    return out


def test_shares_break_ties_as_before():
    rng = random.Random(3)
    for _ in range(500):
        n = rng.randrange(1, 50)
        weights = [rng.choice((0, 1, 2, 3, rng.randrange(10**12))) for _ in range(n)]
        total = rng.choice((0, 1, 7, 100, rng.randrange(10**15)))
        assert km.shares(total, weights) == _shares_reference(total, weights)


def test_by_task_rows_are_those_of_the_per_entry_loop():
    """by_task() on kvfree_by_task's arrays against the loop over its entries it replaced."""
    rng = random.Random(9)
    keys = np.zeros(60, dtype=[("tgid", "u4"), ("comm", "S1", (16,))])
    values = np.zeros(60, dtype=[(f, "u8") for f in km.TASK_FIELDS])
    comms = [b"a", b"a\0x", b"kworker/0:1", b"fifteen-chars-x", b"\xffbad"]
    for i in range(60):
        keys[i]["tgid"] = rng.choice((7, 8, 1 << 22))
        keys[i]["comm"] = np.frombuffer(rng.choice(comms).ljust(16, b"\0"), dtype="S1")
        for f in km.TASK_FIELDS:
            values[i][f] = rng.randrange(1 << 63)
    tasks: dict = {}
    for k, v in zip(keys, values, strict=True):
        cur = tasks.setdefault((int(k["tgid"]), km.base.comm(k["comm"].tobytes())), [0] * 8)
        for i, f in enumerate(km.TASK_FIELDS):
            cur[i] += int(v[f])
    assert km.by_task(keys, values) == [[t, c, *v] for (t, c), v in sorted(tasks.items())]
    assert km.by_task(keys[:0], values[:0]) == []
