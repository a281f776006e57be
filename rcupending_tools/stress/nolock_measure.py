"""`stress nolock --measure`: drive the nolock page allocator beside a live session and an
independent kretprobe count on the same symbol; the checks (the verdict) live here."""

from __future__ import annotations

import ctypes
from typing import Any

from ..errors import UserError
from ..kernel import KernelInfo
from ..pipeline import selfcost
from ..pipeline.session import open_live
from ..probes import bpfload, planner
from ..probes.layouts import NOLOCK_INNER, symbol_range
from ..probes.table import NOLOCK_ALLOC
from . import nolock


def independent(kernel: KernelInfo, symbol: str) -> bpfload.Loaded | str:
    """The kretprobe counter of bpf/nolock_count.bpf.c (or why not): on `symbol` and, 6.18+,
    on the inner function (calls returning into the wrapper skipped)."""
    attach = [("kretprobe", symbol, "kretprobe_nolock_count")]
    defines: dict[str, str | int | None] = {}
    wrapper = symbol_range(kernel, symbol)
    if kernel.symbol(NOLOCK_INNER) is not None and wrapper is not None:
        attach.append(("kretprobe", NOLOCK_INNER, "kretprobe_nolock_count_inner"))
        defines.update(NOLOCK_WRAPPER_START=hex(wrapper[0]), NOLOCK_WRAPPER_END=hex(wrapper[1]))
    try:
        return bpfload.load("nolock_count.bpf.c", defines, "kprobe", attach)
    except bpfload.LoadError as e:
        return e.reason


def independent_read(loaded: bpfload.Loaded) -> list[int]:
    """[attempts, failures, wrapper program's recursion misses, inner program's]: a kretprobe's
    BPF program is skipped while another BPF program runs on its CPU (e.g. a perf-event
    program that calls the allocator in hard IRQ), counted in its fdinfo since 6.7."""
    table = loaded.bpf["nolock_indep"]
    out = [sum(int(v) for v in table[ctypes.c_int(i)]) for i in range(2)]
    for name in ("kretprobe_nolock_count", "kretprobe_nolock_count_inner"):
        fn = loaded.bpf.funcs.get(name.encode())
        out.append((selfcost.recursion_misses(fn.fd) or 0) if fn is not None else 0)
    return out


def run(scenario: str, batches: int, repeat: int, memory_max: int | None, irq_seconds: float,
        measure: bool) -> dict[str, Any]:
    """Run the scenario (measured with `measure`); the result carries `checks`."""
    if scenario not in ("stream", "arena"):
        raise UserError(f"stress nolock {scenario!r}: choose stream or arena")
    if irq_seconds and scenario != "stream":
        raise UserError("--irq-seconds prints from perf events: stream")
    if memory_max is not None and scenario != "arena":
        raise UserError("--memory-max forces failures of memcg-charged arena pages: arena")
    bpfload.require_root()
    kernel = KernelInfo()
    bound = planner.bind(NOLOCK_ALLOC, kernel)
    if isinstance(bound, planner.ProbeStatus):  # 6.12, 6.1: no nolock allocator at all
        raise UserError(f"stress nolock: {bound.status}: {bound.detail}", code=1)
    if scenario not in nolock.scenarios(kernel):
        raise UserError(
            f"stress nolock {scenario}: {nolock.unavailable_reason(kernel, scenario)}", code=1)
    nolock.build()  # not inside the measured window
    indep: bpfload.Loaded | str | None = None
    session = None
    run_ = None
    waited = False
    result: dict[str, Any] = {"scenario": scenario, "kernel_release": kernel.release}
    try:
        if measure:
            indep = independent(kernel, bound.symbol)
            session = open_live((NOLOCK_ALLOC,))
        run_ = nolock.start(kernel, scenario, batches, repeat, memory_max, irq_seconds)
        if session is not None:
            session.follow(run_.pids)
            session.read()
        base = independent_read(indep) if isinstance(indep, bpfload.Loaded) else None
        run_.go()
        waited = True  # wait() reaps the driver whatever happens
        result["driver"] = run_.wait(timeout=600)
        if session is not None:
            snap = session.read()
            result["measured"] = snap["nolock"]
            result["probe"] = next(p for p in snap["probes"] if p["name"] == NOLOCK_ALLOC.name)
            result["snapshot"] = snap
        if base is not None and isinstance(indep, bpfload.Loaded):
            end = independent_read(indep)
            inner = [NOLOCK_INNER] if kernel.symbol(NOLOCK_INNER) else []
            result["independent"] = {
                "mechanism": "kretprobe:" + ",".join([bound.symbol, *inner]),
                "attempts": end[0] - base[0],
                "failures": end[1] - base[1],
                "missed": {"wrapper": end[2] - base[2], "inner": end[3] - base[3]},
            }
        elif isinstance(indep, str):
            result["independent"] = {"unavailable": indep}
    finally:
        if run_ is not None and not waited:  # Ctrl-C or an error before the batches ran
            run_.abort()
        if isinstance(indep, bpfload.Loaded):
            indep.close()
        if session is not None:
            session.close()
    result["checks"] = checks(result)
    return result


def checks(result: dict[str, Any]) -> dict[str, bool]:
    """What --measure asserts: the collector saw the allocations the independent count saw."""
    m, ind = result.get("measured"), result.get("independent") or {}
    if m is None:
        return {} if "measured" not in result else {"attached": False}
    out = {"attached": result["probe"]["status"] == "attached"}
    if "attempts" in ind:
        missed = ind.get("missed") or {}
        if not any(missed.values()):
            out["attempts_equal_independent"] = m["attempts"] == ind["attempts"]
            out["failures_equal_independent"] = m["failures"] == ind["failures"]
        else:  # the kretprobe skipped runs: each missed wrapper run is one call; a missed
            # inner run is one call or (from the wrapper) none
            low = ind["attempts"] + missed["wrapper"]
            out["attempts_within_independent_and_its_misses"] = (
                low <= m["attempts"] <= low + missed["inner"]
            )
            out["failures_cover_independent"] = m["failures"] >= ind["failures"]
    d = result.get("driver") or {}
    if result["scenario"] == "arena" and "memcg" not in d:
        # each arena page is one nolock call of the driver's (more may come from elsewhere,
        # e.g. kmalloc_nolock slab refills); every failure is the driver's. Not under the
        # memcg limit: there arena_alloc_pages() can fail earlier, in kmalloc_nolock() of its
        # page array (__GFP_ACCOUNT), without reaching the page allocator
        out["attempts_cover_driver"] = m["attempts"] >= d["ok"] + d["failed"]
        out["failures_equal_driver"] = m["failures"] == d["failed"]
    elif result["scenario"] == "arena":
        out["failures_within_driver"] = 0 < m["failures"] <= d["failed"]
    if "memcg" in d:  # the forcing mode: failures, caused by the driver's memcg
        out["failures_forced"] = d["failed"] > 0
        cause = m.get("failures_by_cause")
        if cause is not None:
            ids = {r["cgroup_id"]: r["failures"] for r in m.get("memcg_failures") or []}
            out["cause_is_the_memcg"] = (
                cause["memcg_charge"] == m["failures"]
                and ids.get(d["memcg"]["cgroup_id"]) == m["failures"]
            )
    return out
