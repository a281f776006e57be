"""Recordings: append-only JSON lines of collector snapshots.

Line 1 is a header ``{"format": "rcupending-recording", "version": 1, "created": ...,
"provenance": ...}``; every further line is one snapshot (schema.py), written and flushed as a
whole line, so a writer killed at any instant (kill -9 included) leaves at most a partial last
line. The reader replays such a file up to its last complete record and says so; a corrupt line
before the last, a file without the header (foreign or empty) or a newer format version is
refused with one UserError line.

The reader streams: it holds one line at a time (at most MAX_LINE bytes), validates each
snapshot as it reads it (JSON with finite numbers, 64-bit integers and bounded nesting, then the
schema), and keeps the byte offset of each line read, so a replay can seek back by index.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import stat
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from .. import outputs, sanitize
from ..errors import UserError
from .schema import Snapshot, first_error, is_snapshot

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
    """Writes the header, then one flushed line per snapshot. `path` "-" is stdout; a device
    (/dev/null) is written as it is; an existing regular file only with `force`."""

    def __init__(self, path: str | Path, provenance: dict[str, Any], *, force: bool = False):
        self.path = str(path)
        self.count = 0
        self._regular = False
        if self.path == "-":
            self._f: IO[str] = sys.stdout
            self._own = False
        else:
            outputs.check(self.path, force=force)
            try:
                st = os.stat(self.path)
                mode = "w" if force or not stat.S_ISREG(st.st_mode) else "x"
            except OSError:
                mode = "x"
            try:
                self._f = open(self.path, mode, encoding="utf-8")  # noqa: SIM115
                self._regular = stat.S_ISREG(os.fstat(self._f.fileno()).st_mode)
            except FileExistsError:
                raise UserError(
                    f"{self.path} exists; a recording is never overwritten (remove it, "
                    "choose another name, or pass --force)"
                ) from None
            except OSError as e:
                raise UserError(f"cannot create {self.path}: {outputs.why(e)}") from None
            self._own = True
        self._line(header(provenance))

    def _line(self, obj: Any) -> None:
        try:
            self._f.write(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n")
            self._f.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            where = "stdout" if self.path == "-" else self.path
            raise UserError(f"cannot write {where}: {outputs.why(e)}") from None

    def write(self, snap: Snapshot) -> None:
        self._line(snap)
        self.count += 1

    def close(self) -> None:
        if self._own and not self._f.closed:
            try:
                self._f.flush()
                if self._regular:
                    os.fsync(self._f.fileno())
            except OSError as e:
                raise UserError(f"cannot write {self.path}: {outputs.why(e)}") from None
            finally:
                try:
                    self._f.close()
                except OSError:
                    pass

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


MAX_LINE = 16 << 20  # bytes in one line (a snapshot is a few KB; 256 CPUs, some 100 KB)
MAX_HEADER = 1 << 20
MAX_DEPTH = 32  # nesting of a snapshot (the schema's deepest path is 6)
MAX_INT = 1 << 64  # counters are 64-bit
BOM = b"\xef\xbb\xbf"


class _Bad(ValueError):
    """A line that is not a record (the reason in its message)."""


def _bad_constant(name: str) -> Any:
    raise _Bad(f"{name} is not a number a snapshot may hold")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 20 or abs(v := int(text)) >= MAX_INT:
        raise _Bad(f"integer {text[:24]}{'…' if len(text) > 24 else ''} exceeds 64 bits")
    return v


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _Bad(f"number {text[:24]} is not finite")
    return v


_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')  # deleted: all but these
_DIGITS = bytes(0x31 if 0x30 <= c <= 0x39 else 0x2E for c in range(256))  # digit -> 1, else .


def _depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of valid JSON `raw` (up to limit + 1), at C speed: drop escaped quotes
    and backslashes, keep brackets and quotes, drop what was inside strings, then strip the
    innermost [] and {} pairs once per level."""
    b = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _STRUCTURE)
    b = b"".join(b.split(b'"')[::2])
    depth = 0
    while b and depth <= limit:
        depth += 1
        b = b.replace(b"[]", b"").replace(b"{}", b"")
    return depth


def parse_line(raw: bytes) -> Any:
    """One JSON record: finite numbers, 64-bit integers, at most MAX_DEPTH deep (else _Bad).
    The checks look at the bytes first (C speed); the exact, slow one only when it could
    fail."""
    text = raw.decode("utf-8", errors="replace")
    try:
        obj = json.loads(text, parse_float=_float, parse_constant=_bad_constant)
        if b"1" * 20 in raw.translate(_DIGITS):  # 20 digits in a row: maybe beyond 64 bits
            obj = json.loads(text, parse_int=_int, parse_float=_float,
                             parse_constant=_bad_constant)
    except json.JSONDecodeError as e:
        raise _Bad(e.msg) from None
    except RecursionError:
        raise _Bad("nested too deeply") from None
    except ValueError as e:  # int() of too many digits, _Bad
        raise _Bad(str(e)) from None
    if _depth(raw) > MAX_DEPTH:
        raise _Bad(f"nested deeper than {MAX_DEPTH}")
    return obj


def _describe(line: str) -> str:
    s = line.strip()
    return repr(s[:40] + ("…" if len(s) > 40 else ""))


class Reader:
    """A recording read as a stream. The header is checked on open (and the first snapshot
    read, so a file without one is refused before any output is opened); iterating yields
    the snapshots, each validated as it is read. `at(i)` seeks to snapshot i by the index of
    line offsets kept while reading (or built by `count()`)."""

    def __init__(self, path: str | Path, *, warn: IO[str] | None | bool = True) -> None:
        self.path = str(path)
        self.warn: IO[str] | None = sys.stderr if warn is True else (warn or None)
        self.truncated = False  # the last line was a partial record (dropped)
        self.notes: list[str] = []
        self.index = array("Q")  # byte offset of snapshot i's line
        self.total: int | None = None  # snapshots in the file, once read to the end
        self.lines: int | None = None  # lines after the header, once scanned
        self._f = self._open()
        try:
            self.size = os.fstat(self._f.fileno()).st_size
            self.header = self._read_header()
            self.body = self._f.tell()
            self.first = self._next_snapshot(0, self.body)
            if self.first is None:
                raise UserError(f"{self.path} holds a header but no complete snapshot")
        except BaseException:
            self._f.close()
            raise

    # --- opening --------------------------------------------------------------------------

    def _open(self) -> BinaryIO:
        p = self.path
        try:
            st = os.stat(p)
            if stat.S_ISDIR(st.st_mode):
                raise UserError(f"{p} is a directory, not a recording")
            return open(p, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise UserError(f"{p}: no such recording") from None
        except IsADirectoryError:
            raise UserError(f"{p} is a directory, not a recording") from None
        except OSError as e:
            raise UserError(f"cannot read {p}: {outputs.why(e)}") from None

    def _readline(self, limit: int) -> bytes:
        try:
            return self._f.readline(limit + 1)
        except OSError as e:
            raise UserError(f"cannot read {self.path}: {outputs.why(e)}") from None

    def _read_header(self) -> dict[str, Any]:
        p = self.path
        raw = self._readline(MAX_HEADER)
        if raw.startswith(BOM):
            raw = raw[len(BOM):]
        if not raw.strip():  # blank: an empty file, or blank lines before something
            skipped = 0
            while raw and not raw.strip() and skipped < MAX_HEADER:
                skipped += len(raw)
                raw = self._readline(MAX_HEADER)
            if not raw:
                raise UserError(f"{p} is empty, not an rcupending recording")
        line = raw.decode("utf-8", errors="replace")
        if len(raw) > MAX_HEADER:
            head: Any = None
        else:
            try:
                head = parse_line(raw)
            except _Bad:
                head = None
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            hint = ""
            if is_snapshot(head):
                hint = (
                    " (it holds bare snapshots, e.g. `collect --json` output; "
                    "record with `rcupending record`)"
                )
            raise UserError(
                f"{p} is not an rcupending recording: its first line {_describe(line)} is not "
                f'a {{"format": "{FORMAT}"}} header{hint}'
            )
        version = head.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise UserError(f"{p}: recording header has a bad version {version!r}")
        if version > VERSION:
            raise UserError(
                f"{p}: recording format version {version} is newer than this tool reads "
                f"({VERSION})"
            )
        prov = head.get("provenance")
        if prov is not None and not isinstance(prov, dict):
            raise UserError(f"{p}: recording header has a provenance that is not an object")
        return head

    # --- reading ----------------------------------------------------------------------------

    def _next_snapshot(self, i: int, offset: int) -> Snapshot | None:
        """Snapshot i, whose line starts at `offset` (the file is positioned there); None at
        the end (a truncated last line noted). Records the offset in the index."""
        p, lineno = self.path, i + 2
        raw = self._readline(MAX_LINE)
        if not raw:
            return None
        if len(raw) > MAX_LINE:
            raise UserError(f"{p} line {lineno}: longer than {MAX_LINE >> 20} MiB (corrupt)")
        complete = raw.endswith(b"\n")
        if not raw.strip():
            if not complete or not self._readline(1):
                return None  # a blank last line
            raise UserError(f"{p} line {lineno}: empty line inside the recording (corrupt)")
        try:
            snap = parse_line(raw)
        except _Bad as e:
            if not complete:
                if self.truncated:
                    return None
                self.truncated = True
                note = (f"{p}: last record (line {lineno}) is truncated; replaying the {i} "
                        "complete snapshots before it")
                self.notes.append(note)
                if self.warn:
                    print(f"rcupending: warning: {sanitize.text(note)}", file=self.warn)
                return None
            raise UserError(f"{p} line {lineno}: corrupt record ({e})") from None
        err = first_error(snap) if isinstance(snap, dict) else "not a JSON object"
        if err:
            raise UserError(f"{p} line {lineno}: not a valid snapshot: {err}")
        if i == len(self.index):
            self.index.append(offset)
        return snap

    def __iter__(self) -> Iterator[Snapshot]:
        """Every snapshot from the first, read as it is needed."""
        return self.iter_from(0)

    def iter_from(self, i: int) -> Iterator[Snapshot]:
        """Snapshots i, i+1, ... read (and validated) one at a time; `at` may be called
        between two of them."""
        if i <= 0:
            yield self.first
            i = 1
        offset = self._offset(i)
        while offset is not None:
            self._seek(offset)
            snap = self._next_snapshot(i, offset)
            if snap is None:
                self.total = i
                return
            offset = self._f.tell()
            yield snap
            i += 1

    @property
    def position(self) -> int:
        """Bytes read so far (progress)."""
        try:
            return self._f.tell()
        except (OSError, ValueError):
            return self.size

    def _seek(self, offset: int) -> None:
        try:
            self._f.seek(offset)
        except OSError as e:
            raise UserError(f"cannot read {self.path}: {outputs.why(e)}") from None

    def _offset(self, i: int) -> int | None:
        """Where snapshot i's line starts, reading (and validating) forward to it if the
        index does not reach it yet; None past the end."""
        index = self.index
        if i < len(index):
            return index[i]
        if self.total is not None and i >= self.total:
            return None
        j = len(index) - 1
        self._seek(index[j])
        self._readline(MAX_LINE)  # line j, validated when it was indexed
        while True:
            offset = self._f.tell()
            if j + 1 == i:
                return offset
            j += 1
            if self._next_snapshot(j, offset) is None:
                self.total = j
                return None

    def at(self, i: int) -> Snapshot | None:
        """Snapshot i (0-based), or None past the end: one line read when the index holds
        its offset (see `scan`), else read forward only as far as needed."""
        if i <= 0:
            return self.first if i == 0 else None
        offset = self._offset(i)
        if offset is None:
            return None
        self._seek(offset)
        snap = self._next_snapshot(i, offset)
        if snap is None:
            self.total = i
        return snap

    def scan(self) -> int:
        """Index every line's offset without parsing (its own file handle, so a thread may
        run it while snapshots are read): `at` then reads one line for any i. Returns the
        number of lines (`lines`), the snapshots a replay can expect (a truncated last line
        included)."""
        offsets = array("Q", [self.body])
        with open(self.path, "rb") as f:
            f.seek(self.body)
            pos = self.body
            while chunk := f.read(1 << 20):
                start = 0
                while (k := chunk.find(b"\n", start)) >= 0:
                    offsets.append(pos + k + 1)
                    start = k + 1
                pos += len(chunk)
        if offsets[-1] >= pos:
            offsets.pop()  # nothing after the last newline
        if len(offsets) > len(self.index):
            self.index = offsets
        self.lines = len(offsets)
        return self.lines

    def count(self) -> int:
        """Snapshots in the file (every line read and validated once)."""
        if self.total is None:
            for _ in self:
                pass
        return self.total or 0

    @property
    def provenance(self) -> dict[str, Any]:
        return self.header.get("provenance") or self.first["provenance"]

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_recording(path: str | Path, *, warn: IO[str] | None | bool = True) -> Reader:
    """Open a recording for streaming (header and first snapshot checked now)."""
    return Reader(path, warn=warn)


@dataclass
class Recording:
    """A whole recording in memory (small files, tests): see `read`."""

    path: str
    header: dict[str, Any]
    snapshots: list[Snapshot]
    truncated: bool = False  # the last line was a partial record (dropped)
    notes: list[str] = field(default_factory=list)
    count: int | None = None  # snapshots in the file, when `snapshots` holds only some

    @property
    def provenance(self) -> dict[str, Any]:
        return self.header.get("provenance") or self.snapshots[0]["provenance"]

    @property
    def last(self) -> Snapshot:
        return self.snapshots[-1]


def read(path: str | Path, *, warn: IO[str] | None | bool = True) -> Recording:
    """Load a whole recording (see the module docstring for what is accepted and refused);
    a note about a truncated last record goes to `warn` (True: stderr; None: nowhere)."""
    with open_recording(path, warn=warn) as r:
        snaps = list(r)
        return Recording(r.path, r.header, snaps, r.truncated, r.notes)


MAX_GAP = 60.0  # seconds: the longest wait between two replayed snapshots


def paced(snapshots: Iterator[Snapshot] | list[Snapshot],
          speed: float) -> Iterator[tuple[float, Snapshot]]:
    """(delay before showing, snapshot) at the recorded pace divided by `speed` (0: no delay);
    a gap (or a clock jump) is shown after MAX_GAP s at most."""
    prev = None
    for s in snapshots:
        delay = 0.0
        if prev is not None and speed > 0:
            delay = min(MAX_GAP, max(0.0, (s["time"] - prev["time"]) / speed))
        prev = s
        yield delay, s
