"""Files the commands write: one overwrite policy, never an input, nothing partial on error.

- An output is checked before any input is read: an existing regular file is replaced only
  with --force; an output that is one of the inputs (same inode, os.path.samefile) or another
  output of the same command is refused, --force or not. A device or FIFO (/dev/null, a tty)
  is written as it is: there is nothing in it to lose.
- A regular file is written to a temporary file beside it and renamed over it only when the
  command succeeds, so an error leaves the old file (or none) and no partial one.
- Every write error (a full disk, EACCES, /dev/full) is one UserError line; a broken pipe on
  stdout stays a BrokenPipeError (cli/app.py exits quietly, as Unix tools do).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import UserError

PathLike = str | Path


def _stat(path: PathLike) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when `a` and `b` name the same file (inode), both existing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_stdout(path: PathLike) -> bool:
    return str(path) == "-"


def _stdout_is(path: PathLike) -> bool:
    """True when this process's stdout is the file `path` (e.g. `>> REC`)."""
    try:
        st, out = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino)


def why(err: OSError) -> str:
    return err.strerror or str(err)


def check(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = (),
          others: Iterable[PathLike] = (), append: bool = False, directory: bool = False,
          flag: str = "--force") -> None:
    """Refuse, with one line, an output that would lose data; call before reading inputs."""
    p = str(path)
    if p == "":
        raise UserError("an empty output name: give a file name ('-': stdout)")
    inputs = [str(i) for i in inputs]
    if is_stdout(p):
        for i in inputs:
            if _stdout_is(i):
                raise UserError(f"stdout is the input {i}: refusing to write into what is read")
        return
    for i in inputs:
        if same_file(p, i):
            raise UserError(f"{p} is the input {i}: refusing to write over what is read")
    for o in others:
        if not is_stdout(o) and (str(o) == p or same_file(p, o)):
            raise UserError(f"{p} is given as two outputs")
    st = _stat(p)
    parent = os.path.dirname(os.path.abspath(p))
    if st is None:
        if os.path.lexists(p):
            raise UserError(f"{p} is a dangling symbolic link")
        if not os.path.isdir(parent):
            raise UserError(f"cannot write {p}: no such directory {parent}")
        return
    if directory:
        if not stat.S_ISDIR(st.st_mode):
            raise UserError(f"{p} exists and is not a directory")
        return
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{p} is a directory, not a file")
    if stat.S_ISREG(st.st_mode) and not force and not append:
        raise UserError(f"{p} exists; it is never overwritten (remove it, choose another name, "
                        f"or pass {flag})")


def _mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class Atomic:
    """A text file written beside `path` and renamed over it by commit(); discard() (or an
    error inside `with`) removes it. Devices and FIFOs are written directly; '-' is stdout;
    `append` writes to the end of `path` directly."""

    def __init__(self, path: PathLike, newline: str | None = None, *, append: bool = False):
        self.path = str(path)
        self.target = self.path
        self.tmp: str | None = None
        st = _stat(self.path)
        try:
            if is_stdout(self.path):
                self.f: IO[str] = sys.stdout
            elif append or (st is not None and not stat.S_ISREG(st.st_mode)):
                mode = "a" if append else "w"
                self.f = open(self.path, mode, encoding="utf-8", newline=newline)  # noqa: SIM115
            else:  # through a symbolic link: its target is replaced, the link stays
                self.target = os.path.realpath(self.path)
                d, base = os.path.split(self.target)
                fd, self.tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=d)
                os.fchmod(fd, _mode())
                self.f = os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {why(e)}") from None

    def write(self, text: str) -> None:
        try:
            self.f.write(text)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {why(e)}") from None

    def flush(self) -> None:
        try:
            self.f.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {why(e)}") from None

    def commit(self) -> None:
        """Make the output visible under its name (after the last write)."""
        self.flush()
        if self.f is sys.stdout:
            return
        try:
            if self.tmp is not None:
                os.fsync(self.f.fileno())
            self.f.close()
            if self.tmp is not None:
                os.replace(self.tmp, self.target)
                self.tmp = None
        except OSError as e:
            self.discard()
            raise UserError(f"cannot write {self.path}: {why(e)}") from None

    def discard(self) -> None:
        if self.f is not sys.stdout and not self.f.closed:
            try:
                self.f.close()
            except OSError:
                pass
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None

    def __enter__(self) -> Atomic:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def check_dir(path: PathLike, names: Iterable[str], *, force: bool = False) -> None:
    """Refuse (one line) a directory output that holds any of `names`, unless `force`."""
    out = Path(path)
    if out.is_dir():
        clash = [n for n in names if (out / n).exists()]
        if clash and not force:
            raise UserError(f"{out} already holds {', '.join(clash[:3])}; it is never "
                            "overwritten (choose another directory, or pass --force)")
    elif out.exists() or os.path.lexists(out):
        raise UserError(f"{out} exists and is not a directory")


@contextmanager
def atomic_dir(path: PathLike, names: Iterable[str], *, force: bool = False) -> Iterator[Path]:
    """A directory filled in a temporary one beside it; on success its files replace `names`
    in `path` (created then), on error nothing in `path` changes and nothing is created.
    Files of `names` that the new run did not write are removed (a stale plot beside a new
    page would lie)."""
    out = Path(path)
    names = list(names)
    check_dir(out, names, force=force)
    base = out.absolute().parent
    while not base.is_dir():  # the temporary directory goes where `out` will be created
        base = base.parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name or 'out'}.", suffix=".part", dir=base))
    except OSError as e:
        raise UserError(f"cannot write into {base}: {why(e)}") from None
    try:
        yield tmp
        written = {p.name for p in tmp.iterdir()}
        try:
            out.mkdir(parents=True, exist_ok=True)
            for n in names:
                if n not in written and (out / n).is_file():
                    (out / n).unlink()
            for n in sorted(written, key=lambda n: n == "index.html"):  # the page last
                os.replace(tmp / n, out / n)
        except OSError as e:
            raise UserError(f"cannot write {out}: {why(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
