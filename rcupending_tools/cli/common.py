"""Small helpers shared by the command modules."""

from __future__ import annotations

import json
import math
import sys

import typer

from .. import sanitize
from ..signals import terminate_as_interrupt as terminate_as_interrupt  # re-exported

SELF_COST_HELP = "enable BPF run-time stats while running; per-program cost in self_cost"
MAX_DURATION = 1e7  # seconds (115 days): a longer --duration is a typo, and sleep() overflows
MAX_INTERVAL = 86400.0


def finite(value: float | None) -> float | None:
    """typer callback: NaN passes min/max checks, so refuse it (and infinities) here."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def log(message: str) -> None:
    """One line on stderr (control characters from names and files escaped)."""
    print(sanitize.text(message), file=sys.stderr, flush=True)


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()
