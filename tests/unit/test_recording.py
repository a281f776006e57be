"""Recordings: header + one flushed snapshot per line; truncation tolerated, corruption refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rcupending_tools.errors import UserError
from rcupending_tools.pipeline import recording
from rcupending_tools.pipeline.schema import validation_errors
from tests.conftest import one_line_error, run_cli
from tests.unit.surfaces_fixtures import REPO, full_snapshots, write_recording


def test_round_trip_header_and_snapshots(tmp_path):
    snaps = full_snapshots(4)
    path = write_recording(tmp_path / "r.jsonl", snaps)
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    assert head["format"] == "rcupending-recording" and head["version"] == 1
    assert head["provenance"]["kernel_release"] == "6.12.99-test"
    assert head["created"].endswith("Z")
    rec = recording.read(path, warn=None)
    assert rec.snapshots == snaps and not rec.truncated
    assert len(lines) == 1 + len(snaps)


def test_writer_never_overwrites(tmp_path):
    path = write_recording(tmp_path / "r.jsonl", full_snapshots(1))
    with pytest.raises(UserError, match="never overwritten"):
        recording.RecordingWriter(path, {})
    recording.RecordingWriter(path, {"kernel_release": "x"}, force=True).close()
    assert len(path.read_text().splitlines()) == 1


def test_truncated_last_line_replays_up_to_last_complete_record(tmp_path, capsys):
    snaps = full_snapshots(5)
    path = write_recording(tmp_path / "r.jsonl", snaps)
    data = path.read_bytes()
    cut = data.rstrip(b"\n").rfind(b"\n") + 1 + 57  # 57 bytes into the last record
    path.write_bytes(data[:cut])
    rec = recording.read(path)
    assert rec.truncated and rec.snapshots == snaps[:4]
    err = capsys.readouterr().err
    assert "truncated" in err and "4 complete snapshots" in err
    # the CLI replays it too, and says so on stderr
    proc = run_cli("export", str(path), "--jsonl", "-", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(ln) for ln in proc.stdout.splitlines()] == snaps[:4]
    assert "last record (line 6) is truncated" in proc.stderr


def test_corrupt_middle_line_is_refused_with_one_line(tmp_path):
    path = write_recording(tmp_path / "r.jsonl", full_snapshots(5))
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:30] + "\n"  # a damaged record before the last
    path.write_text("".join(lines))
    with pytest.raises(UserError, match="line 3: corrupt record"):
        recording.read(path, warn=None)
    err = one_line_error(run_cli("top", "--replay", str(path), timeout=120), 2)
    assert "line 3: corrupt record" in err


def test_valid_json_that_breaks_the_schema_is_refused(tmp_path):
    snaps = full_snapshots(3)
    snaps[1]["kvfree_rcu"]["enqueued"]["objects"] = -5
    path = write_recording(tmp_path / "r.jsonl", snaps)
    with pytest.raises(UserError, match="line 3: not a valid snapshot: kvfree_rcu/enqueued"):
        recording.read(path, warn=None)


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"timestamp,seq,metric\n1,2,3\n", "is not an rcupending recording"),
        (b'{"format": "something-else", "version": 1}\n', "is not an rcupending recording"),
        (b"\x7fELF\x02\x01\x01\x00garbage", "is not an rcupending recording"),
        (b'{"format": "rcupending-recording", "version": 7}\n', "version 7 is newer"),
        (b'{"format": "rcupending-recording", "version": 1, "provenance": {}}\n', "no complete"),
    ],
)
def test_foreign_or_empty_files_are_refused(tmp_path, content, needle):
    path = tmp_path / "foreign"
    path.write_bytes(content)
    with pytest.raises(UserError, match=needle):
        recording.read(path, warn=None)
    for args in (
        ["top", "--replay", str(path)],
        ["export", str(path), "--csv", "-"],
        ["report", str(path), "-o", str(tmp_path / "rep")],
        ["serve", "--replay", str(path)],
    ):
        assert needle in one_line_error(run_cli(*args, timeout=120), 2)


def test_bare_snapshot_lines_get_a_hint(tmp_path):
    path = tmp_path / "collect.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in full_snapshots(2)))
    with pytest.raises(UserError, match="bare snapshots"):
        recording.read(path, warn=None)


def test_missing_file_is_one_line():
    err = one_line_error(run_cli("export", "/no/such/rec.jsonl", "--csv", "-", timeout=120), 2)
    assert "/no/such/rec.jsonl: no such recording" in err


WRITER = """
import sys, time
from tests.unit.surfaces_fixtures import full_snapshots
from rcupending_tools.pipeline.recording import RecordingWriter
snaps = full_snapshots(3)
w = RecordingWriter(sys.argv[1], snaps[0]["provenance"])
i = 0
while True:
    s = dict(snaps[-1], seq=i)
    w.write(s)
    i += 1
    time.sleep(0.001)
"""


def test_kill_9_loses_at_most_the_last_line(tmp_path):
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120  # bounded: until the header and 20 records are on disk
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 21:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    data = path.read_bytes()
    complete = data.count(b"\n") - 1  # minus the header
    assert complete >= 20
    rec = recording.read(path, warn=None)
    assert len(rec.snapshots) == complete
    assert [s["seq"] for s in rec.snapshots] == list(range(complete))
    assert rec.truncated == (not data.endswith(b"\n"))
    assert all(validation_errors(s) == [] for s in rec.snapshots[:3])
