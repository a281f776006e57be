"""VM tier for the nolock page allocator (issue 4): real Debian kernels, one boot each, running
tests/vm/guest_nolock.py. `stress nolock --measure` runs BPF programs that make the kernel
call it and counts the calls twice in the same window: the collector (fexit) and an
independent kretprobe counter on the same symbols. 6.1 and 6.12 have no nolock allocator:
their one-line refusal is checked in the kvfree tier's boots of them (test_kvfree_vm.py), which
saves two boots; RCUPENDING_VM_NOLOCK_KERNELS=debian:6.1 runs them here too."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import lab_result, results_name, vm_kernels

KERNELS = vm_kernels("RCUPENDING_VM_NOLOCK_KERNELS", "debian:7.3",
                     "debian:6.17,debian:6.18,debian:7.3")
# Each --measure run compiles two bcc programs (~1 min under TCG): the plan stays small.
PLAN = {
    "debian:6.1": ["stream_refused", "arena_refused"],
    "debian:6.12": ["stream_refused", "arena_refused"],
    "debian:6.17": ["stream", "arena_refused"],
    "debian:6.18": ["stream"],
    "debian:7.3": ["arena_forced", "stream"],
}
# Who calls the allocator in each scenario (the call-site rule: first frame after the last
# nolock frame). 6.17/6.18 carve BPF stream messages out of alloc_pages_nolock() pages; 7.x
# kmalloc_nolock()s them, whose slab refills call alloc_frozen_pages_nolock() directly.
STREAM_CALLER = {"debian:6.17": "bpf_stream_page_replace", "debian:6.18": "bpf_stream_page_replace",
                 "debian:7.3": "allocate_slab"}


@pytest.fixture(scope="module", params=KERNELS)
def guest(request) -> dict:
    return lab_result(request.param, sys.executable, "tests/vm/guest_nolock.py",
                      *PLAN[request.param], timeout=1800,
                      keep=results_name(request.param, "nolock-"))


def scenario(guest: dict, name: str) -> dict:
    if name not in guest:
        pytest.skip(f"{name} is not in {guest['spec']}'s plan")
    return guest[name]


def version(spec: str) -> tuple[int, int]:
    major, minor = spec.split(":")[1].split(".")
    return int(major), int(minor)


def test_absent_kernels_refuse_in_one_line(guest):
    if version(guest["spec"]) >= (6, 15):
        pytest.skip("this kernel has the nolock allocator")
    for name in ("stream_refused", "arena_refused"):
        run = scenario(guest, name)
        lines = run["stderr"].strip().splitlines()
        assert run["rc"] == 1 and run["out"] is None, run
        assert len(lines) == 1 and lines[0].startswith("rcupending: error: stress nolock: absent:")
        major, minor = version(guest["spec"])
        assert "arrived in 6.15" in lines[0] and f"this kernel is {major}.{minor}" in lines[0]


def test_arena_refused_before_7x(guest):
    if guest["spec"] != "debian:6.17":
        pytest.skip("the arena refusal is checked on 6.17")
    run = scenario(guest, "arena_refused")
    lines = run["stderr"].strip().splitlines()
    assert run["rc"] == 1 and len(lines) == 1, run
    assert "bpf_arena_alloc_pages_non_sleepable" in lines[0] and "6.17" in lines[0]


def _measured(run: dict) -> tuple[dict, dict, dict]:
    out = run["out"]
    assert run["rc"] == 0 and out is not None, run
    assert all(out["checks"].values()), out["checks"]
    return out["measured"], out["independent"], out["driver"]


def test_stream_equals_the_independent_count(guest):
    if version(guest["spec"]) < (6, 17):
        pytest.skip("BPF streams arrived in 6.17")
    m, ind, drv = _measured(scenario(guest, "stream"))
    # the 4000 test-run messages all printed (the stream is drained after each batch); the
    # IRQ phase fills the stream to its capacity (-ENOSPC beyond), which allocates nothing
    assert drv["ok"] >= 4000 and drv["irq_calls"] > 0 and drv["irq_cpus"] >= 1, drv
    assert m["attempts"] > 0 and m["failures"] == 0 == ind["failures"], (m, ind)
    top = m["by_caller"][0]
    assert top["caller"] == STREAM_CALLER[guest["spec"]] and top["attempts"] == m["attempts"], m
    ctx = m["by_context"]
    assert ctx["task"]["attempts"] + ctx["hardirq"]["attempts"] == m["attempts"], ctx
    assert m["misses"]["recursion"] == 0  # fexit: per-program recursion only
    # The kretprobe sees every call except those made inside the perf-event BPF program (hard
    # IRQ): there the kernel skips kprobe programs and counts a recursion miss. So the hard-IRQ
    # calls are exactly its misses: at the wrapper on 6.17/6.18 (message pages), at the inner
    # function on 7.x (kmalloc_nolock slab refills call it directly, never the wrapper).
    missed = ind["missed"]["inner" if version(guest["spec"]) >= (7, 0) else "wrapper"]
    assert ctx["hardirq"]["attempts"] == missed, (ind, ctx)
    assert ctx["task"]["attempts"] == ind["attempts"], (ind, ctx)
    assert m["attempts"] == ind["attempts"] + missed, (m, ind)
    if version(guest["spec"]) >= (6, 18):
        assert m["by_gfp"] and all(r["gfp"] is not None for r in m["by_gfp"]), m["by_gfp"]
    else:
        assert [r["gfp"] for r in m["by_gfp"]] == [None], m["by_gfp"]
    if version(guest["spec"]) < (7, 0):
        # a new page every ~15 messages: the ~400 IRQ messages that fit the stream need some
        assert ctx["hardirq"]["attempts"] > 0, ctx
        # ~15 messages of ~256 bytes per 4 KiB page, one page per allocation
        assert 4000 // 17 <= ctx["task"]["attempts"] <= 4000 // 12, ctx


def test_arena_forced_failures_are_the_memcg(guest):
    if version(guest["spec"]) < (7, 0):
        pytest.skip("arena allocation from non-sleepable programs is 7.x")
    m, ind, drv = _measured(scenario(guest, "arena_forced"))
    assert drv["failed"] > 0 and drv["ok"] > 0, drv  # the limit bit after some pages
    assert (m["attempts"], m["failures"]) == (ind["attempts"], ind["failures"]), (m, ind)
    # under the limit a driver call can also fail before the page allocator (7.3's
    # arena_alloc_pages() takes its page array from kmalloc_nolock(__GFP_ACCOUNT) first), so
    # the allocator sees at most the driver's failures, and every one it sees is the memcg's
    assert 0 < m["failures"] <= drv["failed"], (m["failures"], drv)
    assert m["failures_by_cause"] == {"memcg_charge": m["failures"], "other": 0}
    assert m["memcg_failures"][0]["cgroup_id"] == drv["memcg"]["cgroup_id"], m["memcg_failures"]
    site = next(r for r in m["by_caller"] if r["caller"] == "bpf_map_alloc_pages")
    assert site["failures"] == m["failures"], m["by_caller"]
    order0 = next(r for r in m["by_order"] if r["order"] == 0)
    assert order0["attempts"] >= site["attempts"]
