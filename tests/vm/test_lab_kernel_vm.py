"""VM tier: the patched kernel lab (kernel/lab-6.12), one boot per variant running
tests/vm/guest_lab_kernel.py. Builds the lab kernels first when they are not cached
(`rcupending lab-build`, ~15-20 min on 2 cores; scripts/test.sh does it up front)."""

from __future__ import annotations

import sys

import pytest

from rcupending_tools.lab import build
from rcupending_tools.lab.recipe import parse_recipe
from tests.conftest import lab_result, results_name, run_cli, vm_kernels

N_SETS = 20000
VARIANTS = ["stock", "rcupending"]
RCU_PENDING_FUNCS = [
    "rcu_pending_enqueue",
    "rcu_pending_enqueue_list",
    "__process_finished_items",
    "rcu_pending_dequeue",
]


@pytest.fixture(scope="module")
def lab_kernels() -> dict[str, str]:
    """variant -> the lab module .ko built for it (building both kernels if needed)."""
    proc = run_cli("lab-build", timeout=3 * 3600)
    assert proc.returncode == 0, f"lab-build failed:\n{proc.stderr[-4000:]}"
    recipe = parse_recipe(build.default_recipe())
    out = {}
    for v in VARIANTS:
        d = build.install_dir(recipe, recipe.variant(v))
        ko = d / f"{recipe.module_name}.ko"
        assert ko.is_file(), ko
        out[v] = str(ko)
    return out


@pytest.fixture(scope="module", params=[  # CI's matrix: the rcu_pending variant
    s.split("-", 1)[1] for s in vm_kernels("RCUPENDING_LAB_KERNELS", "lab:6.12-rcupending",
                                           "lab:6.12-stock,lab:6.12-rcupending")])
def guest(request, lab_kernels) -> dict:
    variant = request.param
    spec = f"lab:6.12-{variant}"
    result = lab_result(spec, sys.executable, "tests/vm/guest_lab_kernel.py",
                        lab_kernels[variant], timeout=1800, keep=results_name(spec))
    result["variant"] = variant
    return result


def test_variant_identity(guest):
    assert guest["release"].endswith("-" + guest["variant"])
    want = "y" if guest["variant"] == "rcupending" else "n"
    assert guest["KVFREE_RCU_PENDING"] == want


def test_probe_targets_in_kallsyms_and_btf(guest):
    for fn in ["kvfree_call_rcu", "kvfree_rcu_barrier", *RCU_PENDING_FUNCS]:
        assert guest["kallsyms"][fn], fn
        assert fn in guest["btf"], fn
    patched = guest["variant"] == "rcupending"
    assert guest["kallsyms"]["kvfree_call_rcu_pending"] == patched
    assert ("kvfree_call_rcu_pending" in guest["btf"]) == patched


def test_kvfree_path(guest):
    """20000 setsockopt(IP_OPTIONS): ~one kfree_rcu each; rcu_pending frees them on the patched
    kernel, krc on stock (fentry counts from bcc in the guest)."""
    c = guest["stress_counts"]
    assert c["kvfree_call_rcu"] >= N_SETS - 1, c
    if guest["variant"] == "rcupending":
        assert c["kvfree_call_rcu_pending"] == c["kvfree_call_rcu"], c
        assert c["__process_finished_items"] > 0, c
        assert c["kfree_rcu_work"] == 0 and c["kfree_rcu_monitor"] == 0, c
    else:
        assert "kvfree_call_rcu_pending" not in c
        assert c["kfree_rcu_work"] > 0, c
        assert c["__process_finished_items"] == 0, c  # no rcu_pending user without bcachefs


def test_memory_returned(guest):
    s = guest["slab_kmalloc64"]
    if s["before"] is None:
        pytest.skip("no /proc/slabinfo in this kernel")
    assert s["barrier_via_module"]
    assert s["after_barrier"] - s["before"] < N_SETS // 10, s


@pytest.mark.parametrize("flavor", ["rcu", "srcu"])
def test_module_dequeue_under_held_reader(guest, flavor):
    r = guest["module"][f"{flavor}_held"]
    mid, done = r["mid"], r["done"]
    assert mid[f"{flavor}_enqueued"] == 1000 and mid[f"{flavor}_dequeued"] == 100, r
    assert mid[f"{flavor}_processed"] == 0, r  # the reader held off the grace period
    assert done[f"{flavor}_processed"] == 900 and done[f"{flavor}_outstanding"] == 0, r


def test_module_counters_exact(guest):
    m = guest["module"]
    assert m["insmod"] == "ok" and m["rmmod"] is True, m
    for name, n in (("slab64", 5000), ("vmalloc8k", 200)):
        c = m[name]
        for f in ("rcu", "srcu"):
            assert c[f"{f}_enqueued"] == n and c[f"{f}_processed"] == n, (name, c)
            assert c[f"{f}_outstanding"] == 0 and c[f"{f}_enqueue_failed"] == 0, (name, c)
    kv = m["kvfree"]
    assert kv["kvfree_mightsleep_queued"] == 1000 and kv["kfree_rcu_queued"] == 1000, kv
    assert kv["alloc_failed"] == 0 and kv["kvfree_rcu_barriers"] == 1, kv


def test_failslab_forces_the_list_fallback(guest):
    """failslab (50% of the stress task's GFP_ATOMIC slab allocations): on the patched kernel
    rcu_pending falls back to its lists; every object still goes through it."""
    c = guest["failslab_counts"]
    assert "error" not in c, c
    assert c["kvfree_call_rcu"] >= N_SETS // 2, c
    if guest["variant"] == "rcupending":
        assert c["kvfree_call_rcu_pending"] == c["kvfree_call_rcu"], c
        assert c["rcu_pending_enqueue_list"] > 0, c
    else:
        assert c["rcu_pending_enqueue_list"] == 0, c
