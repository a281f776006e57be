"""CSV (tidy, pandas) and JSON-lines exports of snapshots. Columns: samples.CSV_COLUMNS.

Snapshots are written in chunks as they stream in, so memory stays flat whatever the length
of the recording. A text cell a spreadsheet would run as a formula (it starts with = + - @,
a tab or a CR) gets a leading ' (so does one already starting with ', so read_csv can undo it
exactly); numbers, `le` and metric names are never touched.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import outputs, sanitize
from ..errors import UserError
from ..pipeline import recording
from ..pipeline.schema import Snapshot
from . import samples as metrics

# columns that carry strings from a kernel, a process or a file
TEXT_COLUMNS = ("source", "kernel_release", "kind", "route", "path", "comm", "reason",
                "context", "caller")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
CHUNK = 256  # snapshots per DataFrame


def neutralise(value: Any) -> Any:
    """A string a spreadsheet would run as a formula, made plain text ('=1+1' -> "'=1+1");
    control characters escaped (sanitize.text)."""
    if isinstance(value, str):
        value = sanitize.text(value)
        if value.startswith(FORMULA_START):
            return "'" + value
    return value


def restore(value: Any) -> Any:
    """The inverse of neutralise (what read_csv gives back)."""
    if isinstance(value, str) and len(value) > 1 and value[0] == "'" and value[1:].startswith(
            FORMULA_START):
        return value[1:]
    return value


def frame(snapshots: list[Snapshot]):  # noqa: ANN201 - pandas DataFrame
    """The tidy rows of `snapshots`, text cells neutralised."""
    df = metrics.dataframe(snapshots)
    for col in TEXT_COLUMNS:
        if col in df.columns and len(df):
            df[col] = df[col].map(neutralise, na_action="ignore")
    return df


def _to_csv(df: Any, out: outputs.Atomic, header: bool) -> None:
    try:
        df.to_csv(out.f, index=False, header=header)
    except BrokenPipeError:
        raise
    except OSError as e:
        raise UserError(f"cannot write {out.path}: {outputs.why(e)}") from None


def _chunks(snapshots: Iterable[Snapshot], n: int) -> Iterable[list[Snapshot]]:
    chunk: list[Snapshot] = []
    for s in snapshots:
        chunk.append(s)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_csv(snapshots: Iterable[Snapshot], out: outputs.Atomic,
              progress: Callable[[], None] = lambda: None) -> tuple[int, int]:
    """All snapshots as tidy rows (header first); (rows, snapshots) written."""
    rows = n = 0
    for chunk in _chunks(snapshots, CHUNK):
        df = frame(chunk)
        _to_csv(df, out, header=n == 0)
        rows += len(df)
        n += len(chunk)
        progress()
    if n == 0:
        _to_csv(frame([]), out, header=True)
    return rows, n


def write_jsonl(snapshots: Iterable[Snapshot], out: outputs.Atomic,
                progress: Callable[[], None] = lambda: None) -> int:
    """One snapshot per line (the `collect --json` shape)."""
    n = 0
    for s in snapshots:
        out.write(json.dumps(s, sort_keys=True) + "\n")
        n += 1
        if n % CHUNK == 0:
            progress()
    return n


def read_csv(path: str | Path):  # noqa: ANN201 - pandas DataFrame
    """A CSV written by write_csv back as a DataFrame (labels as strings, cpu/tgid as ints,
    neutralised text cells restored)."""
    import pandas as pd

    df = pd.read_csv(
        path,
        dtype={
            "comm": "string",
            "kind": "string",
            "reason": "string",
            "le": "string",
            "source": "string",
            "kernel_release": "string",
            "metric": "string",
            "caller": "string",
            "context": "string",
            "route": "string",
            "path": "string",
            "cpu": "Int64",
            "tgid": "Int64",
        },
        keep_default_na=False,
        na_values={"cpu": [""], "tgid": [""]},
    )
    for col in TEXT_COLUMNS:
        if col in df.columns and len(df):
            df[col] = df[col].map(restore).astype("string")
    return df


class CsvAppender:
    """Each snapshot's tidy rows as it arrives, one write per snapshot (`top --csv`,
    `collect --csv`). Not `append`: a new file (or --force) written beside FILE and renamed
    by close(); discard() leaves FILE as it was. `append`: rows go to the end of FILE (the
    header only when FILE is new or empty; an existing FILE must be such a CSV)."""

    def __init__(self, path: str, *, append: bool = False) -> None:
        self.path = path
        self._header = True
        if append and path != "-":
            self._header = _check_appendable(path)
        self._out = outputs.Atomic(path, newline="", append=append)

    def __call__(self, snap: Snapshot) -> None:
        import io

        buf = io.StringIO()
        frame([snap]).to_csv(buf, index=False, header=self._header)
        self._header = False
        self._out.write(buf.getvalue())
        self._out.flush()

    def close(self) -> None:
        self._out.commit()

    def discard(self) -> None:
        self._out.discard()


def _check_appendable(path: str) -> bool:
    """True when `path` needs the header (new or empty); one line if it is another file."""
    try:
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            return True
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            first = f.readline(4096).rstrip("\r\n")
    except OSError as e:
        raise UserError(f"cannot read {path}: {outputs.why(e)}") from None
    if first != ",".join(metrics.CSV_COLUMNS):
        raise UserError(f"{path} is not an rcupending CSV (its first line differs); not "
                        "appending to it")
    return False


def progress_bar(total_bytes: int, position: Callable[[], int], what: str) -> Any:
    """A rich progress bar on stderr for long inputs (a terminal and >= 8 MiB), else None."""
    if total_bytes < (8 << 20) or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(what), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(what, total=total_bytes)
    bar.update_from = lambda: bar.update(task, completed=position())  # type: ignore[attr-defined]
    return bar


def export_recording(recording_file: str | Path, csv: str | None, jsonl: str | None, *,
                     force: bool = False, progress: bool = True,
                     warn: Any = True) -> tuple[int, int]:
    """`rcupending export`: the recording streamed to CSV and/or JSON lines, outputs checked
    before it is read and renamed into place only when all of it was (an error leaves none,
    and an old file as it was). Returns (CSV rows, snapshots)."""
    if not csv and not jsonl:
        raise UserError("nothing to export: give --csv FILE and/or --jsonl FILE")
    if csv == "-" and jsonl == "-":
        raise UserError("--csv and --jsonl cannot both go to stdout")
    wanted = [o for o in (csv, jsonl) if o is not None]
    for i, o in enumerate(wanted):
        outputs.check(o, force=force, inputs=[recording_file], others=wanted[:i])
    with recording.open_recording(recording_file, warn=warn) as reader:
        opened: list[outputs.Atomic] = []
        bar = (progress_bar(reader.size, lambda: reader.position, f"export {reader.path}")
               if progress else None)
        try:
            for o in wanted:
                opened.append(outputs.Atomic(o, newline="" if o == csv else None))
            step = bar.update_from if bar is not None else (lambda: None)
            if bar is not None:
                bar.start()
            if csv and jsonl:  # one pass: each snapshot to both
                out_csv, out_jsonl = opened

                def both() -> Iterator[Snapshot]:
                    for s in reader:
                        out_jsonl.write(json.dumps(s, sort_keys=True) + "\n")
                        yield s

                rows, n = write_csv(both(), out_csv, step)
            elif csv:
                rows, n = write_csv(reader, opened[0], step)
            else:
                rows, n = 0, write_jsonl(reader, opened[0], step)
            if bar is not None:
                bar.stop()
            for o in opened:
                o.commit()
        except BaseException:
            if bar is not None:
                bar.stop()
            for o in opened:
                o.discard()
            raise
    return rows, n
