"""The kvfree snapshot's splits, for any consistent reading of its counters (hypothesis): the
per-CPU and per-path figures sum to their totals, process rows + `other` = the totals, and
nothing is negative. These hold by the collector's construction, so they are proven here, on
drawn readings, rather than asserted again in the VM tier (issue 15: VM tests compare the tool
with something outside it)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rcupending_tools.families import kvfree as km
from rcupending_tools.pipeline.collector import Collector, provenance
from rcupending_tools.pipeline.raw import RawSample
from tests.unit.kvfree_raw import counters
from tests.unit.test_property_surfaces import COMMON, SCALE

SLOTS = (64, 96, 4096, 16384)


@st.composite
def reading(draw: st.DrawFn) -> RawSample:
    """Per CPU: objects enqueued there (of slot sizes), some freed by each path on any CPU,
    a followed share (tracked) of the enqueues, some of those gone; processes owning the
    followed objects; the map's pending of each."""
    ncpu = draw(st.integers(1, 4))
    size = draw(st.sampled_from(SLOTS))
    enq = [draw(st.integers(0, 5000)) for _ in range(ncpu)]
    total = sum(enq)
    freed_total = draw(st.integers(0, total))
    cut = sorted(draw(st.lists(st.integers(0, freed_total), min_size=km.NPATH - 1,
                               max_size=km.NPATH - 1)))  # the frees split over the paths
    by_path = [b - a for a, b in zip([0, *cut], [*cut, freed_total], strict=True)]
    free_cpu = draw(st.integers(0, ncpu - 1))
    stats: dict[int, list[int]] = {km.ST_ENQ_HEAD: enq, km.ST_ENQ_BYTES: [size * n for n in enq]}
    for i, n in enumerate(by_path):
        stats[km.ST_FREED + i] = [n if c == free_cpu else 0 for c in range(ncpu)]
        stats[km.ST_FREED_BYTES + i] = [size * n if c == free_cpu else 0 for c in range(ncpu)]
    tracked = [draw(st.integers(0, n)) for n in enq]
    stats[km.ST_TRACKED] = tracked
    stats[km.ST_TRACKED_BYTES] = [size * n for n in tracked]
    gone = {c: [g, size * g] for c, n in enumerate(tracked)
            if (g := draw(st.integers(0, n)))}
    followed = sum(tracked)
    ntask = draw(st.integers(1, km.TOP_PROCESSES + 3))
    owners = [draw(st.integers(0, ntask - 1)) for _ in range(min(followed, 200))]
    by_task = [[100 + t, f"p{t}", owners.count(t), size * owners.count(t), 0, 0]
               for t in range(ntask) if owners.count(t)]
    pending_left = followed - sum(g for g, _ in gone.values())
    pend = [[r[0], min(r[2], pending_left), size * min(r[2], pending_left)] for r in by_task[:1]]
    return RawSample(1.0, {"kvfree_rcu": {
        "counters": counters(ncpu, stats, gone=gone), "by_task": by_task,
        "pending_by_tgid": pend, "in_map": None}})


@settings(max_examples=int(300 * SCALE), **COMMON)
@given(reading())
def test_every_split_sums_to_its_total_and_none_is_negative(raw):
    kv = Collector(provenance("6.12.1"), [], source="synthetic").update(raw)["kvfree_rcu"]
    enq, pend, freed = kv["enqueued"], kv["pending"], kv["freed"]
    assert sum(enq["by_cpu"]) == enq["objects"] and sum(enq["bytes_by_cpu"]) == enq["bytes"]
    assert sum(pend["by_cpu"]) == pend["objects"]
    assert sum(pend["bytes_by_cpu"]) == pend["bytes"]
    assert sum(p["objects"] for p in freed["by_path"].values()) == freed["objects"]
    assert sum(p["bytes"] for p in freed["by_path"].values()) == freed["bytes"]
    assert (pend["gauge"]["objects"], pend["gauge"]["bytes"]) == (pend["objects"], pend["bytes"])
    rows, other = kv["by_process"], kv["by_process_other"]
    for key, total in (("objects", enq["objects"]), ("pending_bytes", pend["bytes"]),
                       ("pending_objects", pend["objects"])):
        assert sum(r[key] for r in rows) + other[key] == total, key
        assert min([other[key], *(r[key] for r in rows)]) >= 0, key
    assert min([pend["objects"], pend["bytes"], *pend["by_cpu"], *pend["bytes_by_cpu"],
                *(v["objects"] for v in enq["by_route"].values())]) >= 0
