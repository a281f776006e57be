"""`rcupending stress kvfree|nolock`: bounded loads that know their own truth; with --measure
the collector is judged against it (the verdicts live in stress/)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ..errors import UserError
from ..pipeline.session import open_live
from ..stress import measure, nolock_measure
from ..surfaces.text import kvfree_stress_lines, nolock_stress_lines, summary
from .common import (
    MAX_DURATION,
    MAX_INTERVAL,
    SELF_COST_HELP,
    emit_json,
    finite,
    log,
    terminate_as_interrupt,
)

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Drive a kernel path with a bounded load that knows its own truth.",
)


@app.command("kvfree")
def stress_kvfree(
    count: Annotated[int | None, typer.Option(min=0, help="kfree_rcu() enqueues to make")] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.1, max=MAX_DURATION, callback=finite,
                                   help="run for S seconds instead")
    ] = None,
    optlen: Annotated[
        int, typer.Option(min=1, max=255, help="IP options length (4..40; >40 fails: control)")
    ] = 4,
    workers: Annotated[
        int | None, typer.Option(min=1, max=256, help="1 (python), one per CPU (native)")
    ] = None,
    sockets: Annotated[int, typer.Option(min=1, max=4096)] = 8,
    rate: Annotated[
        float | None,
        typer.Option(min=0.01, max=1e9, callback=finite,
                     help="a trickle: at most R enqueues per second (with --count)"),
    ] = None,
    headless: Annotated[
        bool,
        typer.Option(
            help="headless kvfree_rcu instead (root, 6.15+): renames of a cgroup v1 "
            "directory, each freeing the old name with kfree_rcu_mightsleep()",
        ),
    ] = False,
    name_len: Annotated[
        int, typer.Option(min=1, max=200, help="--headless: directory name length")
    ] = 24,
    measure_: Annotated[
        bool, typer.Option("--measure", help="attach the collector around the stress")
    ] = False,
    interval: Annotated[
        float | None, typer.Option(min=0.05, max=MAX_INTERVAL, callback=finite,
                                   help="with --measure: a snapshot every S s")
    ] = None,
    drain: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=MAX_DURATION,
            callback=finite,
            help="with --measure: wait up to S s for the stress's objects "
            "to be freed (kvfree_rcu batches for ~5 s), then check conservation",
        ),
    ] = 0.0,
    flush_sheaves: Annotated[
        bool,
        typer.Option(
            help="with --drain: if stress objects still wait in rcu_free sheaves (6.18+) after "
            "half the drain, flush them (write 1 to /sys/kernel/slab/kmalloc*/shrink)",
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    self_cost: Annotated[
        bool, typer.Option("--self-cost", help="with --measure: " + SELF_COST_HELP)
    ] = False,
    driver: Annotated[
        str, typer.Option(help="python (forked workers) or native (C threads, one per CPU)")
    ] = "python",
) -> None:
    """setsockopt(IP_OPTIONS) on UDP sockets: one kfree_rcu() per set after a socket's first
    (a flood, or a trickle with --rate); --headless: kfree_rcu_mightsleep() by cgroup renames.

    With --measure, exit 1 when the stress workers' measured enqueues differ from the truth."""
    if count is None and duration is None:
        count = 20000
    if workers is None:
        workers = (os.cpu_count() or 1) if driver == "native" else 1
    if self_cost and not measure_:
        raise UserError("--self-cost needs --measure (it reports the probes' cost)")
    load = measure.KvfreeLoad(count, duration, optlen, workers, sockets, rate, headless,
                              name_len, driver)
    load.check()
    terminate_as_interrupt()
    session = open_live(self_cost=self_cost) if measure_ else None
    try:
        result = measure.run(
            load, session, interval=interval, drain=drain, flush_sheaves=flush_sheaves,
            on_snapshot=emit_json if json_out else lambda s: print(summary(s)))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if session is not None:
            session.close()
    if json_out:
        emit_json(result)
    else:
        print("\n".join(kvfree_stress_lines(result)))
    if measure_ and not result.get("accounted"):
        raise typer.Exit(1)


@app.command("nolock")
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
            callback=finite,
            help="stream: then print from a perf cpu-clock event on every CPU (1000 Hz, "
            "hard IRQ context) for S seconds",
        ),
    ] = 0.0,
    measure_: Annotated[
        bool, typer.Option("--measure",
                           help="attach the nolock probe and an independent kretprobe")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """BPF programs (libbpf, run by BPF_PROG_TEST_RUN) that make the kernel call the nolock
    page allocator. With --measure, exit 1 when the collector's attempts or failures
    differ from the independent kretprobe count over the same window."""
    result = nolock_measure.run(scenario, batches, repeat, memory_max, irq_seconds, measure_)
    if json_out:
        emit_json(result)
    else:
        print("\n".join(nolock_stress_lines(result)))
    d = result.get("driver") or {}
    if d.get("calls") and not d.get("ok"):
        log(f"rcupending: error: stress nolock: every one of the {d['calls']} program runs "
            f"failed (last error {d.get('last_err')})")
        raise typer.Exit(1)
    if measure_ and not all(result["checks"].values()):
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="stress")
