"""The `rcupending` command line (typer). Each command group lives in its own module and is
registered the same way (`register(app)`); commands stay thin: the work and the verdicts live
in pipeline/, stress/, lab/, compare/ and bench/. Every command fails with one line and a
non-zero exit."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

try:  # typer >= 0.2x vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from .. import __version__, config, sanitize
from ..errors import UserError
from . import bench, lab, probe, stress, surfaces

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Measure memory queued behind RCU grace periods (kvfree_rcu, rcu_pending, "
    "alloc_pages_nolock) with eBPF.",
)


@app.callback()
def _options(
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            metavar="N",
            help="follow 1 in N kvfree_rcu/rcu_pending objects per address (N a power of two): "
            "latency and frees from the sample, enqueue counts stay exact; the others count as "
            "untracked (also RCUPENDING_SAMPLE)",
        ),
    ] = None,
) -> None:
    """Measure memory queued behind RCU grace periods with eBPF."""
    if sample is not None:
        try:
            config.set_sample(sample)
        except UserError as e:
            raise typer.BadParameter(str(e).split(": ", 1)[1], param_hint="--sample") from None


@app.command()
def version() -> None:
    """Print the tool version."""
    print(__version__)


for group in (probe, stress, lab, surfaces, bench):
    group.register(app)


def main() -> None:
    """Entry point: one-line errors for bad input, usage and environment."""
    command = typer.main.get_command(app)
    invoke = command.invoke

    def piped(ctx: object) -> object:  # click turns EPIPE into exit 1; a closed pipe is not
        try:  # an error (`... | head`)
            return invoke(ctx)
        except BrokenPipeError:
            raise _ReaderGone from None

    command.invoke = piped  # type: ignore[method-assign]
    try:
        rc = command.main(args=sys.argv[1:], prog_name="rcupending", standalone_mode=False)
    except UserError as e:
        print(f"rcupending: error: {sanitize.text(e)}", file=sys.stderr)
        sys.exit(e.code)
    except (BrokenPipeError, _ReaderGone):  # `export REC --csv - | head`: quiet, like others
        _quiet_stdout()
        sys.exit(0)
    except click_exc.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else "", file=sys.stderr)
        sys.exit(2)
    except click_exc.UsageError as e:
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        print(f"rcupending: error: {sanitize.text(e.format_message())}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(rc if isinstance(rc, int) else 0)


class _ReaderGone(Exception):
    """stdout's reader closed the pipe."""


def _quiet_stdout() -> None:
    """stdout's reader is gone: point stdout at /dev/null so the exit's flush stays quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
