"""VM tier: `rcupending compare` on the two lab kernels (stock krc vs kvfree_rcu behind
rcu_pending), three alternating repeats each, one command: table, CSVs, plots, rcuscale."""

from __future__ import annotations

import json

import pytest

from rcupending_tools.compare import table
from tests.conftest import run_cli

pytestmark = pytest.mark.vm_full  # a benchmark-sized run (6 boots): the full matrix's

KERNELS = ["lab:6.12-stock", "lab:6.12-rcupending"]
COUNT = 2000


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("compare")
    proc = run_cli("compare", "--kernels", ",".join(KERNELS), "--repeats", "3", "--count",
                   str(COUNT), "--rcuscale-loops", "1", "--out", str(out), timeout=3600)
    return {"proc": proc, "out": out,
            "runs": json.loads((out / "runs.json").read_text()) if (out / "runs.json").exists()
            else []}


def test_every_run_succeeds_alternating(compared):
    proc, runs = compared["proc"], compared["runs"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [r["kernel"] for r in runs] == KERNELS * 3
    assert all(r["ok"] for r in runs), [r["error"] for r in runs]


def test_each_kernel_shows_its_backend_and_exact_counts(compared):
    backends = {"lab:6.12-stock": "krc", "lab:6.12-rcupending": "rcu_pending"}
    for r in compared["runs"]:
        flood = r["result"]["flood"]
        assert flood["backend"] == backends[r["kernel"]], flood
        assert flood["enqueued"] == COUNT and flood["freed"] == COUNT, flood


def test_rcuscale_ran_without_bpf_and_was_parsed(compared):
    for r in compared["runs"]:
        rs = r["result"]["rcuscale"]
        assert "error" not in rs, rs
        assert rs["loops"] == 1 and rs["ns"] > 0, rs


def test_one_table_plots_and_csvs(compared):
    out = compared["out"]
    md = (out / "table.md").read_text()
    for k in KERNELS:
        assert k in md
    assert table.CAVEAT in md
    assert md.count("Total time taken by all kfree'ers") == 6
    assert (out / "compare-base.png").stat().st_size > 1000
    assert (out / "compare.csv").read_text().startswith("kernel,variant,repeat,metric,value")


def test_work_counts_metadata_and_pending_peak(compared):
    """Each backend's own callbacks and metadata show up during the flood, and only its own:
    krc hands batches to queue_rcu_work() (rcu_work_rcufn) and fills bulk pages; rcu_pending
    queues rcu_pending_rcu_cb and holds radix nodes. The kernel-side pending peak sees
    rcu_pending's millisecond waits that 0.5 s sampling read as 0."""
    mine = {"lab:6.12-stock": ("rcu_work_rcufn", "krc_bulk_pages"),
            "lab:6.12-rcupending": ("rcu_pending_rcu_cb", "rcu_pending_radix_nodes")}
    for r in compared["runs"]:
        flood = r["result"]["flood"]
        c = flood["cost"]
        assert "error" not in c and c["lost"] == 0, c
        callback, kind = mine[r["kernel"]]
        other_cb, other_kind = mine[next(k for k in mine if k != r["kernel"])]
        assert c["callbacks_by_function"].get(callback, 0) > 0, c
        assert c["callbacks_by_function"].get(other_cb, 0) == 0, c
        meta = c["metadata"][kind]
        assert c["metadata"][other_kind]["allocs"] == 0, c
        if kind == "rcu_pending_radix_nodes":  # allocated and freed around every batch
            assert meta["allocs"] > 0 and meta["peak_bytes"] > 0, c
        else:  # a warm per-CPU page cache: pages in use, often none allocated
            assert meta["pages_in_use"] > 0, c
        assert 64 <= flood["pending_peak_bytes"] <= 64 * COUNT + 4096, flood
        assert 1 <= flood["pending_peak_objects"] <= COUNT + 64, flood
