"""VM tier, lab kernels (kernel/lab-6.12, built by `rcupending lab-build`): rcu_pending in the
core kernel on both variants; kvfree_rcu() behind rcu_pending on lab:6.12-rcupending only.
One boot per variant runs tests/vm/guest_pending.py; a splat in dmesg fails the boot."""

from __future__ import annotations

import sys

import pytest

from rcupending_tools.lab.kernels import cache_dir
from tests.conftest import lab_result, results_name, vm_kernels

VARIANTS = {"lab:6.12-stock": "krc", "lab:6.12-rcupending": "rcu_pending"}
# the forced fallbacks are fault injection inside the guest: failslab on rcu_pending,
# fail_page_alloc on krc's page-cache refill on stock
APPEND: dict[str, list[str]] = {}
MODULE = "rcupending_lab.ko"
TWO_S_NS = 2_000_000_000


# CI's matrix: the rcu_pending variant (stock's krc is the debian:6.12 boots' subject)
SPECS = vm_kernels("RCUPENDING_LAB_KERNELS", "lab:6.12-rcupending", ",".join(VARIANTS))


@pytest.fixture(scope="module", params=SPECS)
def guest(request) -> dict:
    spec = request.param
    ko = cache_dir() / "lab" / spec.split(":", 1)[1] / MODULE
    assert ko.is_file(), f"{ko} missing: build the lab kernels first (rcupending lab-build)"
    append = [a for arg in APPEND.get(spec, []) for a in ("--append", arg)]
    return lab_result(spec, sys.executable, "tests/vm/guest_pending.py", str(ko),
                      lab_args=tuple(append), timeout=1800, keep=results_name(spec))


def probe(result: dict, name: str) -> dict:
    return next(p for p in result["probes"] if p["name"] == name)


def test_backend_is_recognised(guest):
    kv = probe(guest, "kvfree_call_rcu")
    assert kv["status"] == "attached", kv
    assert kv["facts"]["backend"] == VARIANTS[guest["spec"]]
    pending = probe(guest, "rcu_pending_enqueue")
    assert pending["status"] == "attached", pending
    assert "rcupending_lab_process" in pending["facts"]["process_callbacks"].split(",")


def test_kvfree_flood_is_freed_on_the_backend_path(guest):
    kv = guest["kvfree"]["snapshot"]
    n = guest["kvfree"]["truth"]
    stress = kv["by_stress"]
    assert stress["enqueued"] == n
    assert stress["freed"] == n, stress
    assert stress["pending"] == 0
    freed = kv["freed"]["by_path"]
    # every freed object (ours and the kernel's own) left on the backend's two paths:
    # krc bulk pages / channel 3, or rcu_pending's radix kfree_bulk() / list kvfree()
    assert freed["bulk"]["objects"] + freed["list"]["objects"] >= n
    base = guest["baseline"]["kvfree_rcu"]["pending"]["objects"]
    assert abs(kv["pending"]["objects"] - base) <= n // 100


def _delta(after: dict, before: dict, flavor: str, *path: str) -> int:
    a, b = after["flavors"][flavor], before["flavors"][flavor]
    for key in path:
        a, b = a[key], b[key]
    return a - b


def test_module_enqueues_dequeues_and_processing_are_exact(guest):
    mod = guest["module"]
    c, before, after = mod["counters"], mod["before"], mod["after"]
    for flavor in ("rcu", "srcu"):
        assert c[f"{flavor}_outstanding"] == 0, c
        assert _delta(after, before, flavor, "enqueued", "objects") == c[f"{flavor}_enqueued"]
        assert _delta(after, before, flavor, "processed", "objects") == c[f"{flavor}_processed"]
        assert _delta(after, before, flavor, "dequeued", "objects") == c[f"{flavor}_dequeued"]
        # 64 B objects with a 16 B rcu_head: kmalloc-64 slots
        assert _delta(after, before, flavor, "enqueued", "bytes") == 64 * c[f"{flavor}_enqueued"]
        assert after["flavors"][flavor]["pending"]["objects"] == 0
    assert c["rcu_enqueued"] > 0 and c["srcu_enqueued"] > 0
    assert c["rcu_dequeued"] > 0  # the dequeue ran on objects still waiting


@pytest.mark.parametrize("flavor", ["rcu", "srcu"])
def test_a_held_reader_delays_every_object_enqueued_during_it(guest, flavor):
    hold = guest[f"hold_{flavor}"]
    assert hold["reader_was_inside"], hold
    buckets = hold["latency_ns"]
    assert sum(n for _, _, n in buckets) == hold["enqueued"], buckets
    # every object's enqueue -> process latency is in a log2 bucket starting at >= 2 s
    assert min(lo for lo, _, _ in buckets) >= TWO_S_NS, buckets


def test_forced_list_fallback_equals_the_independent_kfree_count(guest):
    """stock (fail_page_alloc on krc's refill, cache drained): every flood object takes channel
    3, and the list frees = kmem:kfree at kvfree_rcu_list; rcu_pending (failslab on the
    flooding task): list fallbacks at enqueue = objects freed from the list = kvfree() calls
    from __process_finished_items."""
    forced = guest["forced"]
    listed = (forced["after"]["freed"]["by_path"]["list"]["objects"]
              - forced["before"]["freed"]["by_path"]["list"]["objects"])
    assert forced["after"]["by_stress"]["pending"] == 0, forced["after"]["by_stress"]
    if VARIANTS[guest["spec"]] == "krc":
        # channel 3 also frees objects enqueued before the tool was armed (pre_attach)
        early = (forced["after"]["freed"]["pre_attach"]["list"]
                 - forced["before"]["freed"]["pre_attach"]["list"])
        # the refill ran and failed before the second half: injection, not the drain alone
        assert forced["failures_between_halves"] > 0, forced
        assert forced["page_alloc_failures"] >= forced["failures_between_halves"]
        assert listed >= forced["truth"], (listed, forced["truth"])
        assert listed + early == forced["kfree_list_sites"]["kvfree_rcu_list"], (
            listed, early, forced["kfree_list_sites"])
        return
    enq_list = (forced["pending_after"]["flavors"]["rcu"]["list_fallback"]["kvfree_rcu"]
                - forced["pending_before"]["flavors"]["rcu"]["list_fallback"]["kvfree_rcu"])
    assert listed > 0, forced
    # independent: kvfree() calls made by __process_finished_items (a kprobe reading the return
    # address); its kmem:kfree site count also holds the radix nodes genradix_free() frees
    assert enq_list == listed == forced["kvfree_from_process_finished"], forced
    assert forced["kfree_list_sites"]["__process_finished_items"] >= listed
