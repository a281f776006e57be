"""Recordings: append-only JSON lines of collector snapshots.

Line 1 is a header ``{"format": "rcupending-recording", "version": 1, "created": ...,
"provenance": ...}``; every further line is one snapshot (schema.py), written and flushed as a
whole line, so a writer killed at any instant (kill -9 included) leaves at most a partial last
line. The reader replays such a file up to its last complete record and says so on stderr; a
corrupt line before the last, a file without the header (foreign or empty) or a newer format
version is refused with one UserError line.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import UserError
from .schema import Snapshot, is_snapshot, validation_errors

FORMAT = "rcupending-recording"
VERSION = 1


def header(provenance: dict[str, Any], created: float | None = None) -> dict[str, Any]:
    t = (
        _dt.datetime.now(_dt.UTC)
        if created is None
        else _dt.datetime.fromtimestamp(created, _dt.UTC)
    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": t.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "provenance": provenance,
    }


class RecordingWriter:
    """Writes the header, then one flushed line per snapshot. `path` "-" is stdout."""

    def __init__(self, path: str | Path, provenance: dict[str, Any], *, force: bool = False):
        self.path = str(path)
        self.count = 0
        if self.path == "-":
            self._f: IO[str] = sys.stdout
            self._own = False
        else:
            mode = "w" if force else "x"
            try:
                self._f = open(self.path, mode, encoding="utf-8")  # noqa: SIM115
            except FileExistsError:
                raise UserError(
                    f"{self.path} exists; a recording is never overwritten (remove it, "
                    "choose another name, or pass --force)"
                ) from None
            except OSError as e:
                raise UserError(f"cannot create {self.path}: {e.strerror or e}") from None
            self._own = True
        self._line(header(provenance))

    def _line(self, obj: Any) -> None:
        self._f.write(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n")
        self._f.flush()

    def write(self, snap: Snapshot) -> None:
        self._line(snap)
        self.count += 1

    def close(self) -> None:
        if self._own and not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Recording:
    path: str
    header: dict[str, Any]
    snapshots: list[Snapshot]
    truncated: bool = False  # the last line was a partial record (dropped)
    notes: list[str] = field(default_factory=list)

    @property
    def provenance(self) -> dict[str, Any]:
        return self.header.get("provenance") or self.snapshots[0]["provenance"]

    @property
    def last(self) -> Snapshot:
        return self.snapshots[-1]


def _describe(line: str) -> str:
    s = line.strip()
    return repr(s[:40] + ("…" if len(s) > 40 else ""))


def read(path: str | Path, *, warn: IO[str] | None | bool = True) -> Recording:
    """Load a recording; see the module docstring for what is accepted and what is refused.

    A note about a truncated last record goes to `warn` (True: stderr; None: nowhere)."""
    if warn is True:
        warn = sys.stderr
    p = str(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"{p}: no such recording") from None
    except IsADirectoryError:
        raise UserError(f"{p} is a directory, not a recording") from None
    except OSError as e:
        raise UserError(f"cannot read {p}: {e.strerror or e}") from None
    if not data.strip():
        raise UserError(f"{p} is empty, not an rcupending recording")
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    complete_end = text.endswith("\n")
    if complete_end:
        lines.pop()  # the empty string after the final newline
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        hint = ""
        if is_snapshot(head):
            hint = (
                " (it holds bare snapshots, e.g. `collect --json` output; "
                "record with `rcupending record`)"
            )
        raise UserError(
            f"{p} is not an rcupending recording: its first line {_describe(lines[0])} is not a "
            f'{{"format": "{FORMAT}"}} header{hint}'
        )
    version = head.get("version")
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{p}: recording header has a bad version {version!r}")
    if version > VERSION:
        raise UserError(
            f"{p}: recording format version {version} is newer than this tool reads ({VERSION})"
        )
    rec = Recording(p, head, [])
    body = lines[1:]
    for i, line in enumerate(body):
        lineno = i + 2
        is_last = i == len(body) - 1
        if not line.strip():
            if is_last:
                continue
            raise UserError(f"{p} line {lineno}: empty line inside the recording (corrupt)")
        try:
            snap = json.loads(line)
        except json.JSONDecodeError as e:
            if is_last and not complete_end:
                rec.truncated = True
                note = (
                    f"{p}: last record (line {lineno}) is truncated; replaying the "
                    f"{len(rec.snapshots)} complete snapshots before it"
                )
                rec.notes.append(note)
                if warn:
                    print(f"rcupending: warning: {note}", file=warn)
                break
            raise UserError(f"{p} line {lineno}: corrupt record ({e.msg})") from None
        errors = validation_errors(snap) if isinstance(snap, dict) else ["not a JSON object"]
        if errors:
            raise UserError(f"{p} line {lineno}: not a valid snapshot: {errors[0]}")
        rec.snapshots.append(snap)
    if not rec.snapshots:
        raise UserError(f"{p} holds a header but no complete snapshot")
    return rec


def paced(snapshots: list[Snapshot], speed: float) -> Iterator[tuple[float, Snapshot]]:
    """(delay before showing, snapshot) at the recorded pace divided by `speed` (0: no delay)."""
    prev = None
    for s in snapshots:
        delay = 0.0
        if prev is not None and speed > 0:
            delay = max(0.0, (s["time"] - prev["time"]) / speed)
        prev = s
        yield delay, s
