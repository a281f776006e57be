"""`rcupending stress nolock`: drive the any-context page allocator, measure it, and check the
collector against an independent count (a kretprobe on the same symbol) and the driver's own."""

from __future__ import annotations

import ctypes
from typing import Annotated, Any

import typer

from ..errors import UserError
from .common import emit_json


def _independent(kernel: Any, symbol: str) -> Any:
    """The kretprobe counter of bpf/nolock_count.bpf.c (a bpfload.Loaded, or why not): on
    `symbol` and, 6.18+, on the inner function (calls returning into the wrapper skipped)."""
    from ..probes import bpfload
    from ..probes import layouts as layout

    attach = [("kretprobe", symbol, "kretprobe_nolock_count")]
    defines: dict[str, str | int | None] = {}
    wrapper = layout.symbol_range(kernel, symbol)
    if kernel.symbol(layout.NOLOCK_INNER) is not None and wrapper is not None:
        attach.append(("kretprobe", layout.NOLOCK_INNER, "kretprobe_nolock_count_inner"))
        defines.update(NOLOCK_WRAPPER_START=hex(wrapper[0]), NOLOCK_WRAPPER_END=hex(wrapper[1]))
    try:
        return bpfload.load("nolock_count.bpf.c", defines, "kprobe", attach)
    except bpfload.LoadError as e:
        return e.reason


def _indep_read(loaded: Any) -> list[int]:
    """[attempts, failures, wrapper program's recursion misses, inner program's]: a kretprobe's
    BPF program is skipped while another BPF program runs on its CPU (e.g. a perf-event
    program that calls the allocator in hard IRQ), counted in its fdinfo since 6.7."""
    from ..pipeline import selfcost

    table = loaded.bpf["nolock_indep"]
    out = [sum(int(v) for v in table[ctypes.c_int(i)]) for i in range(2)]
    for name in ("kretprobe_nolock_count", "kretprobe_nolock_count_inner"):
        fn = loaded.bpf.funcs.get(name.encode())
        misses = 0
        if fn is not None:
            try:
                with open(f"/proc/self/fdinfo/{fn.fd}") as f:
                    misses = int(selfcost.parse_fdinfo(f.read()).get("recursion_misses", 0))
            except OSError:
                pass
        out.append(misses)
    return out


def register(stress_app: typer.Typer) -> None:
    @stress_app.command("nolock")
    def stress_nolock(
        scenario: Annotated[
            str,
            typer.Argument(help="stream (bpf_stream_vprintk, 6.17+) or arena "
                           "(bpf_arena_alloc_pages from a non-sleepable program, 7.x)"),
        ] = "stream",
        batches: Annotated[int, typer.Option(min=1, max=100000, help="test-run batches")] = 20,
        repeat: Annotated[
            int, typer.Option(min=1, max=512, help="program runs per batch (arena: pages held)")
        ] = 200,
        memory_max: Annotated[
            int | None,
            typer.Option(
                min=0,
                max=1 << 30,
                help="arena: run the driver in a fresh cgroup whose memory.max is its usage "
                "after loading plus BYTES, so the charged arena pages fail beyond it",
            ),
        ] = None,
        irq_seconds: Annotated[
            float,
            typer.Option(
                min=0.0,
                max=60.0,
                help="stream: then print from a perf cpu-clock event on every CPU (1000 Hz, "
                "hard IRQ context) for S seconds",
            ),
        ] = 0.0,
        measure: Annotated[
            bool, typer.Option(help="attach the nolock probe and an independent kretprobe")
        ] = False,
        json_out: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """BPF programs (libbpf, run by BPF_PROG_TEST_RUN) that make the kernel call the nolock
        page allocator. With --measure, exit 1 when the collector's attempts or failures
        differ from the independent kretprobe count over the same window."""
        from ..kernel import KernelInfo
        from ..pipeline.collector import Collector, provenance
        from ..pipeline.live import LiveSource
        from ..probes import bpfload, planner
        from ..probes import layouts as layout
        from ..probes.table import NOLOCK_ALLOC
        from ..stress import nolock
        from .common import command_line

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
                f"stress nolock {scenario}: {nolock.unavailable_reason(kernel, scenario)}", code=1
            )
        nolock.build()  # not inside the measured window
        indep = src = col = None
        result: dict[str, Any] = {"scenario": scenario, "kernel_release": kernel.release}
        try:
            if measure:
                indep = _independent(kernel, bound.symbol)
                src = LiveSource(kernel=kernel, probes=(NOLOCK_ALLOC,)).attach()
                col = Collector(provenance(command=command_line()), src.probe_dicts(),
                                source="lab-vm" if _in_lab() else "live")
            run = nolock.start(kernel, scenario, batches, repeat, memory_max, irq_seconds)
            if col is not None and src is not None:
                col.stress_tgids = run.pids
                col.update(src.read())
            base = _indep_read(indep) if indep is not None and not isinstance(indep, str) else None
            run.go()
            result["driver"] = run.wait(timeout=600)
            if col is not None and src is not None:
                snap = col.update(src.read())
                result["measured"] = snap["nolock"]
                result["probe"] = next(p for p in snap["probes"] if p["name"] == NOLOCK_ALLOC.name)
                result["snapshot"] = snap
            if base is not None:
                end = _indep_read(indep)
                result["independent"] = {
                    "mechanism": "kretprobe:" + ",".join(
                        [bound.symbol]
                        + ([layout.NOLOCK_INNER] if kernel.symbol(layout.NOLOCK_INNER) else [])
                    ),
                    "attempts": end[0] - base[0],
                    "failures": end[1] - base[1],
                    "missed": {"wrapper": end[2] - base[2], "inner": end[3] - base[3]},
                }
            elif isinstance(indep, str):
                result["independent"] = {"unavailable": indep}
        finally:
            if indep is not None and not isinstance(indep, str):
                indep.close()
            if src is not None:
                src.close()
        result["checks"] = checks(result)
        if json_out:
            emit_json(result)
        else:
            print_result(result)
        if measure and not all(result["checks"].values()):
            raise typer.Exit(1)


def _in_lab() -> bool:
    import os

    return bool(os.environ.get("RCUPENDING_LAB_SPEC"))


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


def print_result(result: dict[str, Any]) -> None:
    d = result["driver"]
    print(f"stress nolock {result['scenario']} on {result['kernel_release']}: "
          f"{d['calls']} program runs in {d['batches']} batches, {d['seconds']:.2f} s; "
          f"driver: ok {d['ok']}, failed {d['failed']}"
          + (f" (last error {d['last_err']})" if d.get("last_err") else ""))
    if "memcg" in d:
        mc = d["memcg"]
        print(f"  memcg {mc['path']}: memory.max {mc['memory_max']} "
              f"(usage at start + {mc['headroom']} bytes)")
    m = result.get("measured")
    if m is not None:
        print(f"  measured    attempts {m['attempts']}, failures {m['failures']} "
              f"at {m.get('counted_at')}")
        for r in (m.get("by_caller") or [])[:5]:
            print(f"    {r['caller']}: {r['attempts']} (failed {r['failures']})")
        if (cause := m.get("failures_by_cause")) is not None:
            print(f"    failures by cause: memcg charge {cause['memcg_charge']}, "
                  f"other {cause['other']}")
            for r in m.get("memcg_failures") or []:
                print(f"      memcg {r['path'] or '(gone)'} (cgroup id {r['cgroup_id']}): "
                      f"{r['failures']}")
    ind = result.get("independent")
    if ind:
        if "attempts" in ind:
            print(f"  independent attempts {ind['attempts']}, failures {ind['failures']} "
                  f"({ind['mechanism']}; runs it missed: {ind.get('missed')})")
        else:
            print(f"  independent count unavailable: {ind['unavailable']}")
    for name, ok in result["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
