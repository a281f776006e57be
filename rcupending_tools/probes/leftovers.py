"""Leftovers of a killed run: bcc kprobe events in tracefs.

fentry programs, links and the BPF stats fd die with the process's fds. A kprobe bcc created
through tracefs (kernels without the kprobe PMU) stays in kprobe_events after `kill -9`; bcc
names it p_<sym>_bcc_<pid> (r_ for kretprobes). The next start removes those of processes that
are gone and says so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..paths import TRACEFS_DIRS, process_running

_EVENT = re.compile(r"^[pr](?::(?P<group>[^/\s]+)/|:)(?P<name>[pr]_\S+_bcc_(?P<pid>\d+))\s")


def stale_bcc_events(text: str, alive: set[int] | None = None) -> list[str]:
    """`group/name` of bcc kprobe events in kprobe_events `text` whose creator is gone."""
    out = []
    for line in text.splitlines():
        m = _EVENT.match(line.strip())
        if m is None:
            continue
        pid = int(m["pid"])
        gone = pid not in alive if alive is not None else not process_running(pid)
        if gone:
            out.append(f"{m['group'] or 'kprobes'}/{m['name']}")
    return out


def kprobe_events_file() -> Path | None:
    for p in (d / "kprobe_events" for d in TRACEFS_DIRS):
        if p.exists():
            return p
    return None


def append(path: Path, line: str) -> None:
    """Write one command to a tracefs control file (no seek: tracefs refuses it)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def clean_stale_kprobes(path: Path | None = None) -> list[str]:
    """Remove stale bcc kprobe events; the names removed (a busy one is left, not listed)."""
    path = path or kprobe_events_file()
    if path is None or os.geteuid() != 0:
        return []
    try:
        events = stale_bcc_events(path.read_text())
    except OSError:
        return []
    removed = []
    for event in events:
        try:
            append(path, f"-:{event}\n")
        except OSError:  # in use (pid reused by a live holder?) or already gone
            continue
        removed.append(event)
    return removed
