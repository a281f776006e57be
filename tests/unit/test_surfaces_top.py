"""`top`: the frame fits the terminal and shows the snapshot's own numbers; `top --replay` in a
real 80x24 tmux pane shows the recording's final totals and quits on q (no root needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from rich.console import Console

from rcupending_tools import sanitize
from rcupending_tools.pipeline import recording
from rcupending_tools.surfaces import dashboard
from tests.unit.surfaces_fixtures import REPO, SHIPPED, full_snapshots, write_recording


def frame(snaps: list[dict], width: int, height: int, total: int | None = None) -> list[str]:
    state = dashboard.DashboardState(" REPLAY · test ", total)
    for s in snaps:
        state.push(s)
    console = Console(width=width, height=height, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(dashboard.render(state, width, height))
    return console.export_text().rstrip("\n").split("\n")


def num(pattern: str, screen: str) -> int:
    m = re.search(pattern, screen)
    assert m, f"{pattern!r} not on screen:\n{screen}"
    return int(m.group(1).replace(",", ""))


def check_numbers(screen: str, last: dict, total: int) -> None:
    """Every number the frame shows for the last snapshot equals the snapshot's value."""
    assert num(r"snapshot (\d+)\b", screen) == last["seq"]
    assert f"({total}/{total})" in screen
    kv = last["kvfree_rcu"]
    assert kv is not None, "the recording must carry kvfree_rcu"
    assert num(r"kvfree_rcu\s+enqueued ([\d,]+)\b", screen) == kv["enqueued"]["objects"]
    for kind, v in kv["enqueued"]["by_kind"].items():
        assert num(rf"\b{kind} ([\d,]+)\b", screen) == v
    if "by_stress" in kv:
        assert num(r"by stress ([\d,]+)\b", screen) == kv["by_stress"]["enqueued"]
    pend = kv.get("pending")
    if pend is not None:
        assert num(r"pending ([\d,]+) bytes", screen) == pend["bytes"]
        assert num(r"in ([\d,]+) objects", screen) == pend["objects"]
        assert num(r"freed ([\d,]+)\b", screen) == kv["freed"]["objects"]
        per_cpu = pend["bytes_by_cpu"]
    else:
        per_cpu = kv["enqueued"]["by_cpu"]
    for cpu, v in enumerate(per_cpu):
        assert num(rf"\b{cpu}:(-?[\d,]+)\b", screen) == v
    for p in kv["by_process"][:3]:
        row = re.search(rf"^\s*{p['tgid']}\s+(.+?)\s+([\d,]+)\b", screen, re.M)
        assert row, f"process {p['tgid']} not on screen:\n{screen}"
        assert p["comm"].startswith(row.group(1).rstrip("…").strip()[:15])
        assert int(row.group(2).replace(",", "")) == p["objects"]
    assert num(r"lost events ([\d,]+)\b", screen) == last["lost"]["total"]
    if last["nolock"] is not None:
        assert num(r"attempts ([\d,]+)\b", screen) == last["nolock"]["attempts"]
        assert num(r"failures ([\d,]+)\b", screen) == last["nolock"]["failures"]
    for p in last["probes"]:
        assert re.search(rf"{p['name']}\s+{p['status']}\b", screen), p


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (132, 50)])
def test_frame_fits_and_grows(size):
    width, height = size
    snaps = full_snapshots(8, cpus=8)
    lines = frame(snaps, width, height, total=8)
    assert len(lines) <= height
    assert max(len(ln) for ln in lines) <= width
    check_numbers("\n".join(lines), snaps[-1], 8)


def test_bigger_terminal_shows_more_rows():
    snaps = full_snapshots(4, cpus=64)
    for s in snaps:  # 12 processes, only some fit at 80x24
        s["kvfree_rcu"]["by_process"] = [
            {"tgid": 1000 + j, "comm": f"proc{j}", "objects": 500 - j} for j in range(12)
        ]
    small, big = frame(snaps, 80, 24), frame(snaps, 160, 60)
    assert len(small) <= 24 and len(big) <= 60
    rows = [
        sum(bool(re.match(rf"\s*{1000 + j}\s", ln)) for j in range(12) for ln in f)
        for f in (small, big)
    ]
    assert rows[0] < rows[1] == 12
    assert re.search(r"\+\d+ more", "\n".join(small))  # 64 CPUs do not fit in 80 columns
    assert "63:" in "\n".join(big)


def test_old_snapshots_without_pending_fields_still_render():
    snaps = full_snapshots(3, kvfree_extras=False)
    screen = "\n".join(frame(snaps, 80, 24, total=3))
    check_numbers(screen, snaps[-1], 3)
    assert "enqueues/s trend" in screen


def test_unattached_kvfree_says_why():
    snaps = full_snapshots(2)
    for s in snaps:
        s["kvfree_rcu"] = None
        s["probes"] = [
            dict(
                s["probes"][0],
                status="blocked",
                mechanism=None,
                detail="BPF tracing programs refused (EPERM as root)",
            )
        ]
    screen = "\n".join(frame(snaps, 80, 24))
    assert "kvfree_rcu  n/a (blocked: BPF tracing programs refused" in screen


def test_replay_without_terminal_prints_frames_and_ends(tmp_path):
    snaps = full_snapshots(3)
    path = write_recording(tmp_path / "r.jsonl", snaps)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rcupending_tools.cli",
            "top",
            "--replay",
            str(path),
            "--speed",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("REPLAY") == 3  # one frame per snapshot
    last_frame = proc.stdout[proc.stdout.rfind("REPLAY") :]
    check_numbers(last_frame, snaps[-1], 3)


# --- the real terminal: tmux, 80x24 ------------------------------------------------------------


class Tmux:
    def __init__(self, tmp_path):
        self.sock = f"rcupending-test-{os.getpid()}-{tmp_path.name}"[:80]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-L", self.sock, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top").stdout

    def wait_for(self, needle: str, tries: int = 300) -> str:
        screen = ""
        for _ in range(tries):  # bounded: ~60 s at most
            screen = self.screen()
            if needle in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} never appeared; screen:\n{screen}")


@pytest.fixture
def tmux(tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    t = Tmux(tmp_path)
    yield t
    t("kill-server", check=False)  # only this test's own server (its own socket)


def run_in_tmux(tmux: Tmux, tmp_path, rec_path) -> str:
    rc_file = tmp_path / "rc"
    cmd = (
        f"{sys.executable} -m rcupending_tools.cli top --replay {rec_path} --speed 0; "
        f"echo $? > {rc_file}"
    )
    tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", "-c", str(REPO), cmd)
    screen = tmux.wait_for("END of recording")
    lines = screen.rstrip("\n").split("\n")
    assert len(lines) <= 24 and max(len(ln) for ln in lines) <= 80
    tmux("send-keys", "-t", "top", "p")
    assert "PAUSED" in tmux.wait_for("PAUSED")
    tmux("send-keys", "-t", "top", "q")
    for _ in range(150):  # bounded: the program must exit on q
        if rc_file.exists() and rc_file.read_text().strip():
            break
        time.sleep(0.2)
    assert rc_file.read_text().strip() == "0", "top --replay did not exit 0 on q"
    return screen


def test_tmux_replay_of_the_shipped_recording(tmux, tmp_path):
    assert SHIPPED.is_file(), f"the shipped lab recording {SHIPPED} is missing"
    rec = recording.read(SHIPPED, warn=None)
    screen = run_in_tmux(tmux, tmp_path, SHIPPED.relative_to(REPO))
    assert "REPLAY" in screen and SHIPPED.name[:20] in screen
    lab = rec.provenance.get("lab") or {}
    assert rec.provenance["kernel_release"] in screen and lab.get("spec", "") in screen
    last = rec.last
    check_numbers(screen, last, len(rec.snapshots))
    assert last["kvfree_rcu"]["enqueued"]["objects"] > 0  # the stress did run


def test_tmux_replay_of_a_recording_with_every_family(tmux, tmp_path):
    snaps = full_snapshots(10, cpus=4)
    path = write_recording(tmp_path / "full.jsonl", snaps)
    screen = run_in_tmux(tmux, tmp_path, path)
    check_numbers(screen, snaps[-1], 10)
    assert "fallback list 90 (10.0%)" in screen
    assert (
        num(r"rcu_pending enqueued ([\d,]+)", screen)
        == snaps[-1]["rcu_pending"]["enqueued"]["objects"]
    )


def test_top_csv_writes_the_shown_snapshots_as_tidy_rows(tmp_path):
    from rcupending_tools.surfaces.export import read_csv

    snaps = full_snapshots(4)
    path = write_recording(tmp_path / "r.jsonl", snaps)
    out = tmp_path / "top.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "rcupending_tools.cli", "top", "--replay", str(path)]
        + ["--speed", "0", "--csv", str(out), "1", "2"],  # INTERVAL 1, COUNT 2: two shown
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    df = read_csv(out)
    assert sorted(df["seq"].unique()) == [0, 1]
    total = df[(df["seq"] == 1) & (df["metric"] == "kvfree_rcu_enqueued_objects_total")]
    assert total["value"].tolist() == [snaps[1]["kvfree_rcu"]["enqueued"]["objects"]]


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="dropping to an unprivileged user needs root and setpriv",
)
def test_replay_needs_no_root(tmp_path):
    rec = recording.read(SHIPPED, warn=None)
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m"]
        + ["rcupending_tools.cli", "top", "--replay", str(SHIPPED), "--speed", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    last_frame = proc.stdout[proc.stdout.rfind("REPLAY") :]
    check_numbers(last_frame, rec.last, len(rec.snapshots))


HOSTILE = {
    "comm": "\x1b]2;PWNED-TITLE\x07\x1b[2J",
    "markup": "[/oops][b]k",  # rich markup that does not parse
    "release": "6.12\x1b[2J\x1b[H",
    "detail": "ok\x1b]0;PWNED-ICON\x07\u202etxt",
}


def hostile_recording(tmp_path):
    snaps = full_snapshots(3)
    for s in snaps:
        s["kvfree_rcu"]["by_process"][0]["comm"] = HOSTILE["comm"]
        s["kvfree_rcu"]["by_process"][1]["comm"] = HOSTILE["markup"]
        s["provenance"] = dict(s["provenance"], kernel_release=HOSTILE["release"])
        s["probes"] = [dict(p, detail=HOSTILE["detail"]) for p in s["probes"]]
    return write_recording(tmp_path / "hostile.jsonl", snaps), snaps


def test_hostile_strings_are_escaped_in_the_frame(tmp_path):
    _, snaps = hostile_recording(tmp_path)
    screen = "\n".join(frame(snaps, 132, 40, total=3))
    assert "\x1b" not in screen and "\x07" not in screen and "\u202e" not in screen
    assert "\\x1b]2;PWNED" in screen  # shown, escaped, not run
    assert HOSTILE["markup"] in screen  # rich markup is shown as text
    assert "6.12\\x1b[2J" in screen


def test_tmux_hostile_recording_leaves_title_and_screen_alone(tmux, tmp_path):
    path, snaps = hostile_recording(tmp_path)
    rc_file = tmp_path / "rc"
    cmd = (f"{sys.executable} -m rcupending_tools.cli top --replay {path} --speed 0; "
           f"echo $? > {rc_file}")
    tmux("new-session", "-d", "-s", "top", "-x", "100", "-y", "30", "-c", str(REPO), "sleep 1; "
         + cmd)
    tmux("set-option", "-t", "top", "remain-on-exit", "on")  # the pane outlives top
    title = tmux("display-message", "-p", "-t", "top", "#{pane_title}").stdout.strip()
    screen = tmux.wait_for("END of recording")
    assert "\\x1b]2;PWNED" in screen  # the escaped text is on screen
    after = tmux("display-message", "-p", "-t", "top", "#{pane_title}").stdout.strip()
    assert after == title and "PWNED" not in after
    assert screen.lstrip().startswith("REPLAY")  # not cleared: the header is still on top
    check_numbers(screen, sanitize.deep(snaps[-1]), 3)
    tmux("send-keys", "-t", "top", "q")
    for _ in range(150):
        if rc_file.exists() and rc_file.read_text().strip():
            break
        time.sleep(0.2)
    assert rc_file.read_text().strip() == "0"
    after = tmux("display-message", "-p", "-t", "top", "#{pane_title}").stdout.strip()
    assert after == title  # the summary printed after the full-screen frame is escaped too
    scrollback = tmux("capture-pane", "-p", "-S", "-200", "-t", "top").stdout
    assert "kernel 6.12\\x1b[2J\\x1b[H" in scrollback  # the summary's first line
