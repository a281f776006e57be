"""`rcupending check` and `rcupending collect`: what attaches here, and snapshots of any load."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .. import outputs
from ..kernel import KernelInfo
from ..pipeline.session import open_live
from ..probes import bpfload, planner
from ..surfaces.export import CsvAppender
from ..surfaces.text import check_lines, summary
from .common import (
    MAX_DURATION,
    MAX_INTERVAL,
    SELF_COST_HELP,
    emit_json,
    finite,
    terminate_as_interrupt,
)


def check(json_out: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """Load and attach each probe for real, detach it, and say what works on this kernel.

    Exit 0 iff no probe is `blocked`."""
    bpfload.require_root()
    kernel = KernelInfo()
    statuses = planner.check_all(kernel)
    blocked = [s for s in statuses if s.status is planner.Status.BLOCKED]
    if json_out:
        emit_json({"kernel_release": kernel.release, "ok": not blocked,
                   "probes": [s.to_dict() for s in statuses]})
    else:
        print("\n".join(check_lines(kernel.release, [s.to_dict() for s in statuses])))
    raise typer.Exit(1 if blocked else 0)


def collect(
    duration: Annotated[
        float, typer.Option(min=0.0, max=MAX_DURATION, callback=finite, help="seconds to collect")
    ] = 10.0,
    interval: Annotated[
        float | None, typer.Option(min=0.05, max=MAX_INTERVAL, callback=finite,
                                   help="emit a snapshot every S s")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="snapshots as JSON lines")] = False,
    csv: Annotated[
        str | None,
        typer.Option(help="also append tidy CSV rows to FILE (the baseline, seq 0, first; "
                     "an existing FILE must be such a CSV)"),
    ] = None,
    self_cost: Annotated[bool, typer.Option("--self-cost", help=SELF_COST_HELP)] = False,
) -> None:
    """Attach all probes, collect for DURATION seconds of any workload, print snapshots."""
    if csv is not None:
        outputs.check(csv, append=True)
    terminate_as_interrupt()
    session = open_live(self_cost=self_cost, require=True)
    to_csv = None
    try:
        to_csv = CsvAppender(csv, append=True) if csv else None
        start = time.monotonic()
        base = session.read()  # seq 0: the baseline at attach
        if to_csv is not None:
            to_csv(base)
        snap = None
        while True:
            left = duration - (time.monotonic() - start)
            step = min(interval, left) if interval else left
            if step > 0:
                time.sleep(step)
            snap = session.read()
            if to_csv is not None:
                to_csv(snap)
            if interval or left <= step:
                if json_out:
                    emit_json(snap)
                elif interval:
                    print(summary(snap))
            if time.monotonic() - start >= duration:
                break
        if not json_out and not interval:
            print(summary(snap))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        session.close()
        if to_csv is not None:
            to_csv.close()


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(collect)
