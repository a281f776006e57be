"""rcu_pending metrics: BPF/Python enum sync, flavors, pending, conservation, schema."""

from __future__ import annotations

import re
from pathlib import Path

from rcupending_tools.families import pending as pm
from rcupending_tools.pipeline.collector import Collector, RawSample, provenance
from rcupending_tools.pipeline.schema import validation_errors

BPF = (Path(__file__).parents[2] / "bpf" / "rcu_pending.bpf.c").read_text()


def c_enum(name: str) -> dict[str, int]:
    body = re.search(r"enum " + name + r" \{(.*?)\};", BPF, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return {k: int(v) for k, v in re.findall(r"(\w+) = (\d+),", body)}


def test_enums_match_the_bpf_source():
    stats = c_enum("pending_stat")
    assert stats.pop("PS_MAX") == pm.PS_MAX
    assert [k.removeprefix("PS_").lower() for k, _ in sorted(stats.items(), key=lambda kv: kv[1])] \
        == list(pm.STATS)
    flavors = c_enum("pending_flavor")
    assert flavors.pop("NFL") == pm.NFL
    assert [k.removeprefix("FL_").lower() for k in flavors] == list(pm.FLAVORS)
    assert f"#define RCU_PENDING_KVFREE {pm.KVFREE_PROCESS} " in BPF


def sample(counts: dict[tuple[str, int], list[int]], ncpu: int = 2, **kw) -> RawSample:
    stats = [[0] * ncpu for _ in range(pm.PS_MAX * pm.NFL)]
    for (name, flavor), row in counts.items():
        stats[pm.PS[name] * pm.NFL + flavor] = row
    lat = [0] * (pm.NFL * 64)
    lat[21] = 3  # RCU: 3 objects in [2 ms, 4 ms)
    lat[64 + 31] = 1  # SRCU: one in [2.1 s, 4.3 s)
    return RawSample(time=1.0, pending_stats=stats, pending_lat_hist=lat,
                     pending_gp_hist=[0] * (pm.NFL * 64), pending_run_hist=[0] * (pm.NFL * 64),
                     pending_by_task={(7, "insmod"): 5}, **kw)


def test_flavors_pending_and_conservation():
    raw = sample(
        {
            ("enq", 0): [3, 1], ("enq_bytes", 0): [192, 64], ("proc", 0): [2, 0],
            ("proc_bytes", 0): [128, 0], ("deq", 0): [1, 0], ("deq_bytes", 0): [64, 0],
            ("enq", 1): [0, 1], ("enq_bytes", 1): [0, 4096], ("list", 1): [0, 1],
        },
        pending_in_map={"objects": 2, "bytes": 4160},
        pending_callbacks=[{"address": "0x1", "symbol": pm.KVFREE_PROCESS_NAME,
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
    raw.pending_in_map = {"objects": 3, "bytes": 0}  # one object the counters lost
    snap = Collector(provenance("6.12.0"), probes=[], source="synthetic").update(raw)
    assert snap["rcu_pending"]["conservation"]["ok"] is False


def test_old_recordings_without_flavors_still_load():
    raw = RawSample(time=1.0, pending_enqueued=[4, 1], pending_by_task={})
    snap = Collector(provenance("6.12.0"), probes=[], source="replay").update(raw)
    assert snap["rcu_pending"]["enqueued"]["objects"] == 5
    assert validation_errors(snap) == []
    back = RawSample.from_json(sample({("enq", 0): [1, 0]}).to_json())
    assert back.pending_stats[0] == [1, 0]
