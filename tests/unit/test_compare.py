"""rcupending compare: A/B plan, rcuscale line parsing, the table and plots from run results."""

from __future__ import annotations

from rcupending_tools.compare import cost, guest, runner, table

LINE = ("[   41.2] Total time taken by all kfree'ers: 2315501904 ns, loops: 10, batches: 233, "
        "memory footprint: 37MB")


def test_plan_alternates_kernels_within_each_variant():
    specs = runner.plan(["A", "B"], ["base", "lazy"], 3)
    assert [(s.variant, s.kernel) for s in specs[:6]] == [("base", k) for k in "ABABAB"]
    assert [s.repeat for s in specs[:6]] == [0, 0, 1, 1, 2, 2]
    assert {s.variant for s in specs[6:]} == {"lazy"} and len(specs) == 12


def test_rcuscale_summary_line_is_parsed():
    assert guest.parse_rcuscale(LINE) == {"ns": 2315501904, "loops": 10, "batches": 233,
                                          "mb": 37}
    assert guest.parse_rcuscale("rcu-scale: kfree_rcu_test: kfree_mult=1") is None


def test_guest_output_line_is_found():
    out = "guest: x\n" + guest.MARK + '{"flood": {"enqueued": 5}}\n'
    assert runner.parse_output(out) == {"flood": {"enqueued": 5}}
    assert runner.parse_output("no line") is None
    assert runner.parse_output(guest.MARK + "{broken") is None


def run(kernel: str, repeat: int, p50: int, backend: str, ok: bool = True) -> dict:
    flood = {"backend": backend, "enqueued": 20000, "flood_s": 4.0, "drain_s": 6.0,
             "latency_ns": {"p50": p50, "p90": 2 * p50, "p99": 4 * p50, "max": 8 * p50},
             "latency_gps": {"p50": 4}, "pending_peak_bytes": 1 << 20,
             "mem_available_drop_kb": 2048, "grace_periods": 30, "batches": 12,
             "list_fallback": 0, "shrinker_scans": None if backend == "rcu_pending" else 0}
    return {"kernel": kernel, "variant": "base", "repeat": repeat, "ok": ok,
            "error": "" if ok else "boom", "result": {"flood": flood,
            "rcuscale": {"ns": 2_000_000_000 + repeat, "batches": 200, "mb": 30}}}


def test_table_medians_spread_and_plots(tmp_path):
    runs = [run("lab:a", r, 1 << 25, "krc") for r in range(3)]
    runs += [run("lab:b", r, (1 << 24) * (r + 1), "rcu_pending") for r in range(3)]
    runs.append(run("lab:b", 3, 1, "rcu_pending", ok=False))  # a failed run is left out
    df = table.tidy(runs)
    assert set(df["kernel"]) == {"lab:a", "lab:b"}
    summ = table.summary(df)
    row = summ[(summ["metric"] == "latency_p50_ms") & (summ["kernel"] == "lab:b")].iloc[0]
    assert (row["min"], row["median"], row["max"], row["count"]) == (
        (1 << 24) / 1e6, (1 << 25) / 1e6, 3 * (1 << 24) / 1e6, 3)
    md = table.markdown(summ, ["lab:a", "lab:b"], {"lab:a": "krc", "lab:b": "rcu_pending"})
    assert "lab:b (rcu_pending)" in md and "TCG" in md and "shrinker" in md
    assert table.CAVEAT in md and table.TIMING["kvm"] not in md
    kvm = table.markdown(summ, ["lab:a", "lab:b"], {}, {"kvm"})
    assert table.TIMING["kvm"] in kvm and "TCG" not in kvm
    assert "| base | krc shrinker scans (9/9 drops the shrinker) |  | 0 [0–0] (3) | n/a |" in md
    pngs = table.plots(df, tmp_path, ["lab:a", "lab:b"])
    assert [p.name for p in pngs] == ["compare-base.png"] and pngs[0].stat().st_size > 1000


def test_bad_lists_are_one_line_errors():
    import pytest

    from rcupending_tools.errors import UserError

    with pytest.raises(UserError, match="unknown fast"):
        runner.parse_list("base,fast", "variants", tuple(runner.VARIANTS))
    with pytest.raises(UserError, match="twice"):
        runner.parse_list("a,a", "kernels")


def cost_reading(cb: dict, allocs: int, live: int, peak: int) -> dict:
    kinds = {k: {"allocs": 0, "alloc_bytes": 0, "frees": 0, "free_bytes": 0, "live_bytes": 0,
                 "peak_bytes": 0} for k in cost.KINDS}
    kinds["rcu_pending_radix_nodes"] = {"allocs": allocs, "alloc_bytes": 512 * allocs,
                                        "frees": allocs - live // 512, "free_bytes": 0,
                                        "live_bytes": live, "peak_bytes": peak}
    return {"callbacks": cb, "metadata": kinds, "lost": 0, "sites": ["rcu_pending_enqueue"],
            "bulk_pages": {}}


def test_cost_delta_counts_the_run_only():
    before = cost_reading({"rcu_pending_rcu_cb": 5, "file_free_rcu": 2}, 4, 1024, 2048)
    after = cost_reading({"rcu_pending_rcu_cb": 25, "file_free_rcu": 2, "rcu_work_rcufn": 1},
                         14, 1024, 1024 + 3 * 512)
    d = cost.cost_delta(before, after)
    assert d["callbacks"] == 21 and d["backend_callbacks"] == 21
    assert d["callbacks_by_function"] == {"rcu_pending_rcu_cb": 20, "rcu_work_rcufn": 1}
    radix = d["metadata"]["rcu_pending_radix_nodes"]
    assert radix["allocs"] == 10 and radix["alloc_bytes"] == 5120
    # the peak over the level at the start, not the all-time peak (2048 came before the run)
    assert radix["peak_bytes"] == 1536 and d["metadata_peak_bytes"] == 1536
    assert d["metadata_held_bytes"] == 1536  # radix nodes: their peak
    # krc with a warm cache: nothing allocated, two pages carried batches during the run
    before["bulk_pages"], after["bulk_pages"] = {0x1000: 3, 0x2000: 1}, {0x1000: 5, 0x2000: 1,
                                                                        0x3000: 2}
    krc = cost.cost_delta(before, after)
    assert krc["metadata"]["krc_bulk_pages"]["pages_in_use"] == 2
    assert krc["metadata_held_bytes"] == 2 * 4096 + 1536
    result = {"flood": {"cost": d}}
    assert table.METRICS["backend_callbacks"][2](result) == 21
    assert table.METRICS["metadata_peak_kb"][2](result) == 1.5
    assert table.METRICS["callbacks"][2]({"flood": {"cost": {"error": "kprobes"}}}) is None
