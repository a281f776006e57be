"""A snapshot of a fixed, dense kvfree reading (every CPU's counters and histograms filled,
dozens of processes) against the one stored in golden/: a faster collector must report the
same figures. Regenerate (only for a deliberate change of figures) with
`RCUPENDING_GOLDEN_WRITE=1 pytest tests/unit/test_snapshot_golden.py`."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

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
