"""Outputs never lose data: an output that is an input is refused (the input stays byte-identical),
an existing file is replaced only with --force, an error leaves no partial output, and CSV
cells a spreadsheet would run as formulas are plain text."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys

import pytest

from rcupending_tools.errors import UserError
from rcupending_tools.pipeline import recording
from rcupending_tools.surfaces import report as report_surface
from rcupending_tools.surfaces.export import export_recording, neutralise, read_csv, restore
from tests.conftest import RCUPENDING, REPO, one_line_error, run_cli
from tests.unit.surfaces_fixtures import full_snapshots, write_recording


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def rec(tmp_path):
    return write_recording(tmp_path / "r.jsonl", full_snapshots(4))


def refused_and_intact(rec, args, needle, **kw) -> None:
    before = digest(rec)
    err = one_line_error(run_cli(*args, timeout=120, **kw))
    assert needle in err
    assert digest(rec) == before, "the input changed"


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(
    "csv,jsonl",
    [
        ("{rec}", None),
        (None, "{rec}"),
        ("{tmp}/x.csv", "{rec}"),
        ("{link}", None),  # a symbolic link to the input
        (None, "{hard}"),  # a hard link: the same inode
    ],
)
def test_an_output_that_is_the_input_is_refused(rec, tmp_path, csv, jsonl, force):
    (tmp_path / "link").symlink_to(rec)
    os.link(rec, tmp_path / "hard")
    fill = {"rec": str(rec), "tmp": str(tmp_path), "link": str(tmp_path / "link"),
            "hard": str(tmp_path / "hard")}
    before = digest(rec)
    with pytest.raises(UserError, match="refusing to write over what is read"):
        export_recording(rec, csv and csv.format(**fill), jsonl and jsonl.format(**fill),
                         force=force, progress=False)
    assert digest(rec) == before, "the input changed"
    assert not (tmp_path / "x.csv").exists()  # nothing opened before the check


@pytest.mark.parametrize("args", [["top", "--replay", "{rec}", "--speed", "0", "--csv", "{rec}",
                                   "--force"], ["export", "{rec}", "--csv", "{rec}"]])
def test_the_commands_refuse_their_input_as_output(rec, args):
    refused_and_intact(rec, [a.format(rec=rec) for a in args],
                       "refusing to write over what is read", stdin=subprocess.DEVNULL)


def test_stdout_appending_to_the_input_is_refused(rec):
    before = digest(rec)
    with open(rec, "a") as out:
        proc = subprocess.run([*RCUPENDING, "export", str(rec), "--jsonl", "-"], stdout=out,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "stdout is the input" in proc.stderr
    assert digest(rec) == before


def test_the_same_file_twice_is_refused(rec, tmp_path):
    out = tmp_path / "o"
    err = one_line_error(run_cli("export", str(rec), "--csv", str(out), "--jsonl", str(out),
                                 timeout=120))
    assert "given as two outputs" in err and not out.exists()


@pytest.mark.parametrize("which", ["csv", "jsonl"])
def test_existing_exports_are_replaced_only_with_force(rec, tmp_path, which):
    out = tmp_path / "existing"
    out.write_text("precious\n")
    kw = {"csv": None, "jsonl": None, which: str(out)}
    with pytest.raises(UserError, match="never overwritten .*--force"):
        export_recording(rec, progress=False, **kw)
    assert out.read_text() == "precious\n"
    export_recording(rec, progress=False, force=True, **kw)
    assert out.read_text() != "precious\n" and out.stat().st_size > 100


def test_top_csv_replaces_only_with_force(rec, tmp_path):
    out = tmp_path / "existing"
    out.write_text("precious\n")
    argv = ["top", "--replay", str(rec), "--speed", "0", "--csv", str(out)]
    err = one_line_error(run_cli(*argv, timeout=120, stdin=subprocess.DEVNULL))
    assert "never overwritten" in err and "--force" in err
    assert out.read_text() == "precious\n"
    proc = run_cli(*argv, "--force", timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("timestamp,seq,")


def test_an_error_mid_file_leaves_no_output_and_the_old_one_intact(tmp_path):
    path = write_recording(tmp_path / "r.jsonl", full_snapshots(600))
    lines = path.read_text().splitlines(keepends=True)
    lines[500] = lines[500][:40] + "\n"  # corrupt, long after the first chunk was written
    path.write_text("".join(lines))
    fresh, old = tmp_path / "fresh.csv", tmp_path / "old.jsonl"
    old.write_text("old\n")
    err = one_line_error(run_cli("export", str(path), "--csv", str(fresh), timeout=120))
    assert "line 501: corrupt record" in err
    with pytest.raises(UserError, match="line 501: corrupt record"):
        export_recording(path, None, str(old), force=True, progress=False, warn=None)
    assert not fresh.exists() and old.read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    short = tmp_path / "short.jsonl"  # top prints a frame per snapshot: keep it short
    short.write_text("".join(lines[:3] + [lines[500]] + lines[3:6]))
    err = one_line_error(run_cli("top", "--replay", str(short), "--speed", "0", "--csv",
                                 str(fresh), timeout=120, stdin=subprocess.DEVNULL))
    assert "line 4: corrupt record" in err and not fresh.exists()


def test_report_never_overwrites_and_leaves_nothing_on_error(rec, tmp_path):
    out = tmp_path / "rep"
    assert run_cli("report", str(rec), "-o", str(out), timeout=300).returncode == 0
    page = (out / "index.html").read_bytes()
    err = one_line_error(run_cli("report", str(rec), "-o", str(out), timeout=300))
    assert "never overwritten" in err and (out / "index.html").read_bytes() == page
    assert "give a directory" in one_line_error(run_cli("report", str(rec), "-o", "",
                                                        timeout=120))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(rec.read_text().replace('"seq":2', '"seq":-2'))
    err = one_line_error(run_cli("report", str(bad), "-o", str(tmp_path / "new"), timeout=120))
    assert "line 4: not a valid snapshot" in err and not (tmp_path / "new").exists()
    inode = (out / "index.html").stat().st_ino
    report_surface.build(recording.read(rec, warn=None), out, force=True)
    assert (out / "index.html").stat().st_ino != inode  # replaced by the new report's page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "r.jsonl", "rep"]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/full"),
                    reason="/dev/full and an unwritable directory need root's /dev and chattr")
def test_write_errors_are_one_line(rec, tmp_path):
    err = one_line_error(run_cli("export", str(rec), "--csv", "/dev/full", timeout=120))
    assert "cannot write /dev/full: No space left on device" in err
    err = one_line_error(run_cli("export", str(rec), "--jsonl", "/proc/version", "--force",
                                 timeout=120))
    assert "/proc/version" in err


def test_broken_pipe_is_quiet_and_exits_0(tmp_path):
    path = write_recording(tmp_path / "r.jsonl", full_snapshots(200))
    proc = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m rcupending_tools.cli export {path} --csv - "
         "| head -c 100 >/dev/null; echo ${PIPESTATUS[0]}"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.strip() == "0", proc
    assert proc.stderr == "", proc.stderr


def test_formula_cells_are_neutralised_and_read_back(tmp_path):
    comms = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-bash", "@SUM(A1)", "\tx", "'=quoted",
             "plain", "-"]
    snaps = full_snapshots(2)
    for s in snaps:
        s["kvfree_rcu"]["by_process"] = [
            {"tgid": 10 + i, "comm": c, "objects": 1} for i, c in enumerate(comms)]
        s["provenance"] = dict(s["provenance"], kernel_release="=1+1")
    path = write_recording(tmp_path / "r.jsonl", snaps)
    out = tmp_path / "o.csv"
    export_recording(path, str(out), None, progress=False)
    with open(out, newline="") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))
                and c != "+Inf"]  # `le`, a number's spelling
    assert not [c for c in cells if c.startswith("-") and not c[1:2].isdigit()]
    assert "'=HYPERLINK(\"http://x\",\"y\")" in cells and "'-bash" in cells
    df = read_csv(out)
    assert set(df["kernel_release"]) == {"=1+1"}
    rows = df[df["metric"] == "kvfree_rcu_process_enqueued_objects_total"]
    shown = [c if c != "\tx" else "\\tx" for c in comms]  # a tab is escaped, not kept
    assert sorted(set(rows["comm"])) == sorted(shown)
    assert [restore(neutralise(c)) for c in comms] == shown


def test_collect_csv_is_documented_as_append():
    proc = run_cli("collect", "--help", timeout=60)
    assert "append" in proc.stdout and "seq 0" in proc.stdout


def test_jsonl_round_trip_unchanged_by_neutralising(tmp_path):
    snaps = full_snapshots(2)
    snaps[1]["kvfree_rcu"]["by_process"][0]["comm"] = "=cmd"
    path = write_recording(tmp_path / "r.jsonl", snaps)
    out = tmp_path / "o.jsonl"
    assert run_cli("export", str(path), "--jsonl", str(out), timeout=120).returncode == 0
    assert [json.loads(ln) for ln in out.read_text().splitlines()] == snaps


def test_compare_refuses_an_earlier_comparison_before_booting_anything(tmp_path):
    (tmp_path / "table.md").write_text("hours of VM runs\n")
    err = one_line_error(run_cli("compare", "--kernels", "debian:6.12,debian:6.17", "--out",
                                 str(tmp_path), timeout=60))
    assert "already holds table.md" in err and "--force" in err
    assert (tmp_path / "table.md").read_text() == "hours of VM runs\n"


def test_an_output_through_a_symbolic_link_replaces_its_target(rec, tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    (tmp_path / "link.jsonl").symlink_to(target)
    export_recording(rec, None, str(tmp_path / "link.jsonl"), force=True, progress=False)
    assert (tmp_path / "link.jsonl").is_symlink()
    assert len(target.read_text().splitlines()) == 4
