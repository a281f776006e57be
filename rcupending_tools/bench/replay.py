"""`rcupending bench replay`: what a long recording costs the surfaces that read it.

Makes a recording of N snapshots (the shipped lab recording's last snapshot, repeated with its
seq, time and elapsed_s advanced: real size and shape, ~4.6 KB a line), then measures
- `top --replay REC 1 1` (no terminal: it prints its first frame and exits): seconds from the
  start of the process to the first frame on its stdout;
- `export REC --csv` and `export REC --jsonl` under /usr/bin/time -v: maximum RSS and wall time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT
from ..errors import UserError
from ..pipeline.recording import RecordingWriter

SHIPPED = REPO_ROOT / "recordings" / "debian-6.12-kvfree-stress.jsonl"
CLI = [sys.executable, "-m", "rcupending_tools.cli"]


def make(path: Path, n: int, progress: Callable[[str], None]) -> Path:
    """A recording of `n` snapshots shaped like the shipped one."""
    lines = SHIPPED.read_text().splitlines()
    last = json.loads(lines[-1])
    progress(f"writing {n:,} snapshots to {path}")
    with RecordingWriter(path, last["provenance"], force=True) as w:
        head = json.dumps(dict(last, seq=0, time=0.0, elapsed_s=0.0), sort_keys=True,
                          separators=(",", ":"))
        # one template, three numbers substituted per line: fast enough for millions
        template = (head.replace('"seq":0,', '"seq":{seq},')
                    .replace('"time":0.0,', '"time":{time},')
                    .replace('"elapsed_s":0.0,', '"elapsed_s":{el},'))
        t0 = last["time"] - last["elapsed_s"]
        f = w._f
        for i in range(n):
            f.write(template.replace("{seq}", str(i)).replace("{time}", repr(t0 + i))
                    .replace("{el}", repr(float(i))) + "\n")
        w.count = n
    return path


def first_frame(rec: Path) -> dict[str, float]:
    """Seconds to the first frame of `top --replay` (a fresh process, no terminal)."""
    start = time.monotonic()
    proc = subprocess.Popen([*CLI, "top", "--replay", str(rec), "1", "1"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    seen = None
    for line in proc.stdout:
        if seen is None and "REPLAY" in line:
            seen = time.monotonic() - start
    proc.wait()
    if proc.returncode != 0 or seen is None:
        raise UserError(f"top --replay failed: {proc.stderr.read().strip()[-300:]}")
    return {"first_frame_s": round(seen, 3), "exit_s": round(time.monotonic() - start, 3)}


def timed(args: list[str]) -> dict[str, Any]:
    """`rcupending ARGS` under /usr/bin/time -v: max RSS (MB) and wall seconds."""
    timer = shutil.which("time") or "/usr/bin/time"
    if not os.access(timer, os.X_OK):
        raise UserError("this benchmark needs GNU time (/usr/bin/time; apt-get install time)")
    start = time.monotonic()
    proc = subprocess.run([timer, "-v", *CLI, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise UserError(f"rcupending {' '.join(args[:1])} failed: {proc.stderr.strip()[-300:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"max_rss_mb": round(int(m.group(1)) / 1024, 1) if m else None,
            "wall_s": round(wall, 1)}


def run(n: int, keep: Path | None, progress: Callable[[str], None]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="rcupending-bench-"))
    try:
        rec = keep if keep is not None and keep.exists() else make(keep or tmp / "rec.jsonl",
                                                                   n, progress)
        out: dict[str, Any] = {"snapshots": n, "recording_bytes": rec.stat().st_size}
        progress("top --replay: first frame")
        out["top_replay"] = first_frame(rec)
        progress("export --jsonl")
        out["export_jsonl"] = timed(["export", str(rec), "--jsonl", str(tmp / "o.jsonl")])
        (tmp / "o.jsonl").unlink()
        progress("export --csv (tidy rows: the long one)")
        out["export_csv"] = timed(["export", str(rec), "--csv", str(tmp / "o.csv")])
        out["export_csv"]["csv_bytes"] = (tmp / "o.csv").stat().st_size
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def text(r: dict[str, Any]) -> str:
    gb = r["recording_bytes"] / 1e9
    return "\n".join([
        f"recording: {r['snapshots']:,} snapshots, {gb:.2f} GB",
        f"top --replay: first frame after {r['top_replay']['first_frame_s']:.2f} s "
        f"(process start included; exited after {r['top_replay']['exit_s']:.2f} s)",
        f"export --jsonl: max RSS {r['export_jsonl']['max_rss_mb']} MB, "
        f"{r['export_jsonl']['wall_s']} s",
        f"export --csv: max RSS {r['export_csv']['max_rss_mb']} MB, {r['export_csv']['wall_s']} s "
        f"({r['export_csv']['csv_bytes'] / 1e9:.2f} GB of CSV)",
    ])
