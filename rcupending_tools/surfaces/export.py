"""CSV (tidy, pandas) and JSON-lines exports of snapshots. Columns: metrics.CSV_COLUMNS."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

from ..errors import UserError
from ..pipeline.schema import Snapshot
from . import samples as metrics


def _open(path: str, mode: str = "w") -> IO[str]:
    if path == "-":
        return sys.stdout
    try:
        return open(path, mode, encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def write_csv(snapshots: list[Snapshot], path: str) -> int:
    """All snapshots as tidy rows; returns the number of rows."""
    df = metrics.dataframe(snapshots)
    f = _open(path)
    try:
        df.to_csv(f, index=False)
    finally:
        if f is not sys.stdout:
            f.close()
    return len(df)


def write_jsonl(snapshots: list[Snapshot], path: str) -> int:
    """One snapshot per line (the `collect --json` shape)."""
    f = _open(path)
    try:
        for s in snapshots:
            f.write(json.dumps(s, sort_keys=True) + "\n")
    finally:
        if f is not sys.stdout:
            f.close()
    return len(snapshots)


def read_csv(path: str | Path):  # noqa: ANN201 - pandas DataFrame
    """A CSV written by write_csv back as a DataFrame (labels as strings, cpu/tgid as ints)."""
    import pandas as pd  # heavy: imported on first use, not at start-up

    return pd.read_csv(
        path,
        dtype={
            "comm": "string",
            "kind": "string",
            "reason": "string",
            "le": "string",
            "source": "string",
            "kernel_release": "string",
            "metric": "string",
            "cpu": "Int64",
            "tgid": "Int64",
        },
        keep_default_na=False,
        na_values={"cpu": [""], "tgid": [""]},
    )


class CsvAppender:
    """Appends each snapshot's tidy rows to a CSV as it arrives (`top --csv`): flushed per
    snapshot, the header written once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = _open(path, "w")
        self._header = True

    def __call__(self, snap: Snapshot) -> None:
        df = metrics.dataframe([snap])
        df.to_csv(self._f, index=False, header=self._header)
        self._header = False
        self._f.flush()

    def close(self) -> None:
        if self._f is not sys.stdout:
            self._f.close()
