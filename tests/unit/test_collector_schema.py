"""The collector turns raw samples into snapshots that satisfy the documented schema."""

from __future__ import annotations

import json

from rcupending_tools.families import kvfree as km
from rcupending_tools.pipeline.collector import Collector, provenance
from rcupending_tools.pipeline.raw import RawSample
from rcupending_tools.pipeline.schema import validation_errors
from tests.unit.kvfree_raw import counters

PROBES = [
    {
        "name": "kvfree_call_rcu",
        "function": "kvfree_call_rcu",
        "status": "attached",
        "mechanism": "fentry",
        "detail": "fentry on kvfree_call_rcu",
    }
]


def raw(t: float, head: list[int], headless: list[int], tasks: dict, lost: int = 0) -> RawSample:
    stats = {km.ST_ENQ_HEAD: head, km.ST_ENQ_HEADLESS: headless,
             km.ST_ENQ_BYTES: [64 * (a + b) for a, b in zip(head, headless, strict=True)]}
    by_task = [[t_, c, n, 64 * n] for (t_, c), n in tasks.items()]
    return RawSample(t, {"kvfree_rcu": {"counters": counters(len(head), stats),
                                        "by_task": by_task}}, lost=[lost, 0, 0, 0])


def test_snapshot_totals_per_cpu_per_kind_and_stress_share():
    col = Collector(
        provenance("6.12.1", "rcupending test"), PROBES, source="synthetic", stress_tgids={42, 43}
    )
    s0 = col.update(raw(100.0, [0, 0], [0, 0], {}))
    s1 = col.update(
        raw(
            101.5, [10, 5], [0, 1], {(42, "python3"): 9, (43, "python3"): 3, (1, "init"): 4}, lost=2
        )
    )
    assert validation_errors(s0) == [] and validation_errors(s1) == []
    kv = s1["kvfree_rcu"]
    assert kv["enqueued"]["objects"] == 16
    assert kv["enqueued"]["by_cpu"] == [10, 6]
    assert kv["enqueued"]["by_kind"] == {"head": 15, "headless": 1}
    assert kv["by_stress"]["enqueued"] == 12
    assert kv["enqueued"]["bytes"] == 16 * 64
    top = kv["by_process"][0]
    assert (top["tgid"], top["comm"], top["objects"], top["bytes"]) == (42, "python3", 9, 576)
    assert kv["pending"]["objects"] == 16 and kv["conservation"]["ok"] is None
    assert s1["lost"]["total"] == 2 and s1["lost"]["by_reason"]["task_map_full"] == 2
    assert (s1["seq"], s1["elapsed_s"]) == (1, 1.5)
    assert s1["provenance"]["kernel_release"] == "6.12.1"


def test_unattached_families_are_null_and_valid():
    col = Collector(provenance("6.18.1"), [], source="synthetic")
    s = col.update(RawSample(time=5.0))
    assert s["kvfree_rcu"] is None and s["rcu_pending"] is None and s["nolock"] is None
    assert validation_errors(s) == []


def test_nolock_family():
    col = Collector(provenance("6.18.1"), [], source="synthetic")
    s = col.update(RawSample(1.0, {"nolock": {"stats": [[3, 4], [1, 0]]}}))
    assert s["nolock"]["attempts"] == 7 and s["nolock"]["failures"] == 1
    assert s["nolock"]["by_cpu"][0] == {"attempts": 3, "failures": 1}


def test_schema_rejects_broken_snapshots():
    col = Collector(provenance("6.12.1"), PROBES, source="synthetic")
    s = col.update(raw(1.0, [1], [0], {}))
    bad = json.loads(json.dumps(s))
    bad["kvfree_rcu"]["enqueued"]["objects"] = -1
    del bad["lost"]
    errors = validation_errors(bad)
    assert any("objects" in e for e in errors) and any("lost" in e for e in errors)
    bad = json.loads(json.dumps(s))
    bad["version"] = 99
    assert validation_errors(bad)


def test_raw_sample_round_trips_json():
    r = raw(3.0, [1, 2], [0, 1], {(7, "a b"): 3}, lost=1)
    r.families["kvfree_rcu"].update(freed_by_tgid=[[7, 1, 64]])
    back = RawSample.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r
