"""The nolock family from synthetic map readings: totals, splits, the call-site rule."""

from __future__ import annotations

from rcupending_tools.families import nolock as nm
from rcupending_tools.pipeline.collector import Collector, provenance
from rcupending_tools.pipeline.raw import RawSample
from rcupending_tools.pipeline.schema import validation_errors

NO = nm.NO_ARG
PROBE = {"name": "alloc_pages_nolock", "function": "alloc_pages_nolock", "status": "attached",
         "symbol": "alloc_frozen_pages_nolock_noprof", "mechanism": "fexit", "detail": "",
         "counted_at": "alloc_frozen_pages_nolock_noprof"}


def test_caller_is_the_frame_after_the_last_nolock_frame():
    # fexit on the inner function, called through the wrapper: the wrapper's caller
    assert nm.caller_of(["bpf_prog_abc_kretfunc", None, "alloc_pages_nolock_noprof",
                         "__bpf_alloc_page", "bpf_map_alloc_pages"]) == "__bpf_alloc_page"
    # kmalloc_nolock's slab refill calls the inner function directly
    assert nm.caller_of([None, None, "allocate_slab", "new_slab"]) == "allocate_slab"
    # the stand-in fires inside the allocator: internals and the nolock frames are skipped
    assert nm.caller_of(["perf_trace_mm_page_alloc", "__alloc_frozen_pages_noprof",
                         "alloc_frozen_pages_nolock_noprof", "alloc_pages_nolock_noprof",
                         "bpf_stream_page_replace"]) == "bpf_stream_page_replace"
    # ...and for a non-nolock no-reclaim allocation it names the allocator's caller
    assert nm.caller_of(["perf_trace_mm_page_alloc", "get_page_from_freelist",
                         "__alloc_pages_noprof", "alloc_pages_mpol"]) == "alloc_pages_mpol"
    assert nm.caller_of([None, "bpf_trampoline_6442"]) == "?"


def test_callers_merge_stacks_by_call_site():
    syms = {1: "alloc_pages_nolock_noprof", 2: "__bpf_alloc_page", 3: "x", 4: "allocate_slab"}
    rows = nm.callers([([9, 1, 2, 3], 5, 1), ([9, 1, 2, 4], 2, 0), ([9, 4, 0, 0], 7, 7)],
                      syms.get)
    assert rows == [["__bpf_alloc_page", 7, 1], ["allocate_slab", 7, 7]]


def raw(t: float, scale: int) -> RawSample:
    return RawSample(t, {"nolock": {
        "stats": [[3 * scale, 1 * scale], [1 * scale, 1 * scale], [2 * scale, 0]],
        "keys": [[0, -1, 0x400000, 0, 2 * scale, 1 * scale],
                 [0, -1, 0x400000, 1, 1 * scale, 0],
                 [3, 0, 0, 0, 1 * scale, 1 * scale]],
        "callers": [["__bpf_alloc_page", 3 * scale, 1 * scale], ["allocate_slab", scale, scale]],
        "misses": {"recursion": 2, "kprobe": None},
    }})


def test_family_totals_splits_and_schema():
    col = Collector(provenance("6.18.15"), [PROBE], source="synthetic")
    s0, s1 = col.update(raw(1.0, 1)), col.update(raw(2.0, 10))
    for s in (s0, s1):
        assert validation_errors(s) == []
    nl = s1["nolock"]
    assert (nl["attempts"], nl["failures"], nl["pages"]) == (40, 20, 20)
    assert nl["successes"] == 20
    assert nl["bytes"] == 20 * 4096 and nl["failure_ratio"] == 0.5
    assert nl["counted_at"] == "alloc_frozen_pages_nolock_noprof"
    assert nl["by_cpu"][0] == {"attempts": 30, "failures": 10, "pages": 20}
    assert nl["by_order"] == [{"order": 0, "attempts": 30, "failures": 10},
                              {"order": 3, "attempts": 10, "failures": 10}]
    assert nl["by_nid"][0] == {"nid": -1, "attempts": 30, "failures": 10}
    assert nl["by_gfp"] == [{"gfp": "0x0", "attempts": 10, "failures": 10},
                            {"gfp": "0x400000", "attempts": 30, "failures": 10}]
    assert nl["by_context"]["task"] == {"attempts": 30, "failures": 20}
    assert nl["by_context"]["softirq"] == {"attempts": 10, "failures": 0}
    assert nl["by_context"]["nmi"] == {"attempts": 0, "failures": 0}
    assert sum(c["attempts"] for c in nl["by_context"].values()) == nl["attempts"]
    assert nl["by_caller"][0] == {"caller": "__bpf_alloc_page", "attempts": 30, "failures": 10}
    assert nl["misses"] == {"recursion": 2, "kprobe": None}


def test_unseen_arguments_are_null_and_old_readings_still_load():
    fam = nm.nolock_family([[4, 0], [1, 0]], [[NO, NO, NO, 4, 4, 1]], None, None, "x")
    assert fam["by_order"] == [{"order": None, "attempts": 4, "failures": 1}]
    assert fam["by_gfp"][0]["gfp"] is None and fam["by_context"]["unknown"]["attempts"] == 4
    assert "pages" not in fam and "by_caller" not in fam
    # a reading of an older collector: attempts and failures per CPU only
    old = RawSample.from_json({"time": 1.0, "families": {"nolock": {"stats": [[3, 4], [1, 0]]}}})
    s = Collector(provenance("6.17"), [], source="replay").update(old)
    assert validation_errors(s) == [] and s["nolock"]["attempts"] == 7
    assert RawSample.from_json(raw(1.0, 1).to_json()) == raw(1.0, 1)


def test_stream_variant_follows_the_kernels_prototypes():
    from rcupending_tools.stress.nolock import stream_variant

    five = ["stream_id", "fmt__str", "args", "len__sz", "aux__prog"]
    assert stream_variant({"bpf_stream_vprintk": five}) == "stream-bpf_stream_vprintk"  # 6.17
    assert stream_variant({"bpf_stream_vprintk_impl": five, "bpf_stream_vprintk": None}) == (
        "stream-bpf_stream_vprintk_impl")  # 6.18
    assert stream_variant({"bpf_stream_vprintk": five[:4], "bpf_stream_vprintk_impl": five}) == (
        "stream-implicit")  # 7.x: KF_IMPLICIT_ARGS hides aux
    assert stream_variant({"bpf_stream_vprintk": None, "bpf_stream_vprintk_impl": None}) is None


def test_measure_checks_fail_on_a_mismatch():
    from rcupending_tools.stress.nolock_measure import checks

    probe = {"status": "attached"}
    ok = {"scenario": "stream", "probe": probe, "measured": {"attempts": 5, "failures": 0},
          "independent": {"attempts": 5, "failures": 0}}
    assert all(checks(ok).values())
    bad = {**ok, "independent": {"attempts": 6, "failures": 0}}
    assert checks(bad)["attempts_equal_independent"] is False
    forced = {"scenario": "arena", "probe": probe,
              "measured": {"attempts": 10, "failures": 4,
                           "failures_by_cause": {"memcg_charge": 4, "other": 0},
                           "memcg_failures": [{"cgroup_id": 7, "path": None, "failures": 4}]},
              "independent": {"attempts": 10, "failures": 4},
              "driver": {"ok": 6, "failed": 4, "memcg": {"cgroup_id": 7}}}
    assert all(checks(forced).values())
    other_cg = {**forced, "driver": {"ok": 6, "failed": 4, "memcg": {"cgroup_id": 8}}}
    assert checks(other_cg)["cause_is_the_memcg"] is False
    # 7.3: calls that failed before the allocator (kmalloc_nolock of the page array)
    early = {**forced, "driver": {"ok": 2, "failed": 18, "memcg": {"cgroup_id": 7}}}
    assert all(checks(early).values()) and "attempts_cover_driver" not in checks(early)
    none_seen = {**forced, "driver": {"ok": 6, "failed": 3, "memcg": {"cgroup_id": 7}}}
    assert checks(none_seen)["failures_within_driver"] is False  # more than the driver's


def test_dashboard_detail_line_names_orders_contexts_and_the_top_caller():
    from rcupending_tools.surfaces.dashboard.render import _nolock_detail

    col = Collector(provenance("6.18.15"), [PROBE], source="synthetic")
    line = _nolock_detail(col.update(raw(1.0, 10))["nolock"])
    assert "order 0:30 3:10" in line and "task 30, softirq 10" in line
    assert line.endswith("top __bpf_alloc_page")
    assert _nolock_detail({"attempts": 1, "failures": 0, "by_cpu": []}) == ""  # older snapshot


def test_measure_checks_allow_exactly_the_kretprobes_missed_runs():
    from rcupending_tools.stress.nolock_measure import checks

    probe = {"status": "attached"}
    run = {"scenario": "stream", "probe": probe, "measured": {"attempts": 294, "failures": 0},
           "independent": {"attempts": 267, "failures": 0,
                           "missed": {"wrapper": 27, "inner": 27}}}
    assert all(checks(run).values())
    # more than the kretprobe saw plus what it says it missed: a real disagreement
    run["measured"] = {"attempts": 322, "failures": 0}
    assert checks(run)["attempts_within_independent_and_its_misses"] is False
    run["measured"] = {"attempts": 266, "failures": 0}
    assert checks(run)["attempts_within_independent_and_its_misses"] is False
