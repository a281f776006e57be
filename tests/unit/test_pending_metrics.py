"""rcu_pending family: flavors, pending, conservation, schema, from made-up readings."""

from __future__ import annotations

from rcupending_tools.families import pending as pm
from rcupending_tools.pipeline.collector import Collector, provenance
from rcupending_tools.pipeline.raw import RawSample
from rcupending_tools.pipeline.schema import validation_errors


def sample(counts: dict[tuple[str, int], list[int]], ncpu: int = 2, **kw) -> RawSample:
    stats = [[0] * ncpu for _ in range(pm.PS_MAX * pm.NFL)]
    for (name, flavor), row in counts.items():
        stats[pm.PS[name] * pm.NFL + flavor] = row
    lat = [0] * (pm.NFL * 64)
    lat[21] = 3  # RCU: 3 objects in [2 ms, 4 ms)
    lat[64 + 31] = 1  # SRCU: one in [2.1 s, 4.3 s)
    return RawSample(1.0, {"rcu_pending": {
        "stats": stats, "lat_hist": lat, "gp_hist": [0] * (pm.NFL * 64),
        "run_hist": [0] * (pm.NFL * 64), "by_task": [[7, "insmod", 5]], **kw}})


def test_flavors_pending_and_conservation():
    raw = sample(
        {
            ("enq", 0): [3, 1], ("enq_bytes", 0): [192, 64], ("proc", 0): [2, 0],
            ("proc_bytes", 0): [128, 0], ("deq", 0): [1, 0], ("deq_bytes", 0): [64, 0],
            ("enq", 1): [0, 1], ("enq_bytes", 1): [0, 4096], ("list", 1): [0, 1],
        },
        in_map={"objects": 2, "bytes": 4160},
        callbacks=[{"address": "0x1", "symbol": pm.KVFREE_PROCESS_NAME,
                            "enqueued": 0, "hooked": True}],
    )
    snap = Collector(provenance("6.12.0"), probes=[], source="synthetic").update(raw)
    assert validation_errors(snap) == []
    fam = snap["rcu_pending"]
    assert fam["enqueued"] == {"objects": 5, "by_cpu": [3, 2]}
    rcu, srcu = fam["flavors"]["rcu"], fam["flavors"]["srcu"]
    assert rcu["pending"] == {"objects": 1, "bytes": 64}
    assert srcu["pending"] == {"objects": 1, "bytes": 4096}
    assert srcu["list_fallback"] == {"objects": 1, "kvfree_rcu": 0}
    assert rcu["latency"]["ns"]["p50"] == 1 << 22
    assert srcu["latency"]["ns"]["max"] == 1 << 32
    assert fam["conservation"]["ok"] is True
    assert "rcu_pending.latency_ns.srcu" in snap["histograms"]
    raw.families["rcu_pending"]["in_map"] = {"objects": 3, "bytes": 0}  # counters lost one
    snap = Collector(provenance("6.12.0"), probes=[], source="synthetic").update(raw)
    assert snap["rcu_pending"]["conservation"]["ok"] is False


def test_raw_reading_round_trips_json():
    back = RawSample.from_json(sample({("enq", 0): [1, 0]}).to_json())
    assert back.families["rcu_pending"]["stats"][0] == [1, 0]
