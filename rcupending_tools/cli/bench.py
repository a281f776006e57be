"""`rcupending bench ...`: benchmarks (they report numbers; tests do not time anything)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..bench import overhead as bench_overhead
from ..bench import replay as bench_replay
from .common import emit_json, finite, log, terminate_as_interrupt

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Benchmarks: what the probes cost, what long recordings cost the surfaces.",
)


@app.command()
def overhead(
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    repeats: Annotated[int, typer.Option(min=1, max=50, help="rounds of the three phases")] = 3,
    seconds: Annotated[
        float, typer.Option(min=0.2, max=600, callback=finite, help="seconds per phase")
    ] = 3.0,
    threads: Annotated[
        int | None, typer.Option(min=1, max=256, help="driver threads (default: one per CPU)")
    ] = None,
    profile_reads: Annotated[
        int, typer.Option(min=0, max=500, help="print the collector's N costliest functions "
                          "(profiled snapshots during the flood) to standard error")
    ] = 0,
) -> None:
    """Calls/s of the native kvfree driver unprobed, under an empty fentry program and under
    the full collector, alternating; ns per run from BPF stats; the python loop once."""
    terminate_as_interrupt()
    start = time.monotonic()

    def progress(message: str) -> None:
        log(f"bench: +{time.monotonic() - start:5.1f}s {message}")

    try:
        result = bench_overhead.overhead(repeats, seconds, threads, progress, profile_reads)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if json_out:
        emit_json(result)
    else:
        print(bench_overhead.text(result))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bench")


@app.command()
def replay(
    snapshots: Annotated[int, typer.Option(min=2, max=10_000_000, help="recording length")] = (
        200_000),
    keep: Annotated[
        Path | None,
        typer.Option(help="keep the recording here (reused if it exists: a faster rerun)"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """A long recording (shaped like the shipped one) through the surfaces: `top --replay`'s
    first frame, and `export` (CSV, JSON lines) max RSS under /usr/bin/time -v."""
    start = time.monotonic()

    def progress(message: str) -> None:
        log(f"bench: +{time.monotonic() - start:5.1f}s {message}")

    result = bench_replay.run(snapshots, keep, progress)
    if json_out:
        emit_json(result)
    else:
        print(bench_replay.text(result))
