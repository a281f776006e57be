"""User surfaces: the dashboard (and, with issue 6, record/replay, export, report, serve).

Registered on the main typer app by cli.py; these commands read collector snapshots only."""

from __future__ import annotations

from typing import Annotated

import typer

from ..cliutil import command_line, terminate_as_interrupt


def top(
    interval: Annotated[float, typer.Argument(min=0.1, help="seconds between refreshes")] = 1.0,
    count: Annotated[int | None, typer.Argument(min=1, help="stop after COUNT refreshes")] = None,
    kernel: Annotated[
        str, typer.Option("--lab-kernel", help="lab kernel when the host refuses the probes")
    ] = "debian:6.12",
    lab_seconds: Annotated[float, typer.Option(help="length of the lab stress run")] = 60.0,
) -> None:
    """Live dashboard: this host's kernel when it allows the probes, else a lab VM running a
    stress scenario on a real kernel (said plainly on screen)."""
    from ..views import dashboard

    terminate_as_interrupt()
    try:
        dashboard.run(interval, count, kernel, lab_seconds, command_line())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command()(top)
