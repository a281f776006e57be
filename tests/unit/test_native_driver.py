"""The native kvfree stress driver: built from source into the cache, its ground truth follows
the python driver's rule (successful sets - 1 per socket), --hold keeps sockets until told."""

from __future__ import annotations

import shutil

import pytest

from rcupending_tools.errors import UserError
from rcupending_tools.stress import native

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "bin_dir", lambda: tmp_path / "bin")


def test_builds_once_named_by_source_hash():
    path = native.binary()
    assert path.parent.name == "bin" and path.name.startswith("kvfree_flood-")
    mtime = path.stat().st_mtime_ns
    assert native.binary() == path and path.stat().st_mtime_ns == mtime  # not rebuilt


def test_count_mode_truth():
    run = native.start(1000, optlen=4, workers=2, sockets=6)
    try:
        t = run.wait()
    finally:
        run.finish()
    assert run.proc.returncode == 0
    assert t["kvfree_rcu"]["enqueued"] == 1000
    assert t["calls"] == t["ok"] == 1000 + 6 and t["failed"] == 0  # one first set per socket
    assert t["sockets_with_options"] == 6 and t["workers"] == 2
    assert t["pids"] == [run.proc.pid] and run.pids == {run.proc.pid}


def test_hold_keeps_running_until_finish():
    run = native.start(10, workers=1, sockets=1)
    run.wait()
    assert run.proc.poll() is None  # sockets held open
    run.finish()
    assert run.proc.returncode == 0


def test_invalid_options_enqueue_nothing():
    out = native.run(0.2, threads=1, sockets=2, optlen=44)
    assert out["ok"] == 0 and out["failed"] == out["calls"] > 0
    assert out["errors"] == {"EINVAL": out["calls"]} and out["expected_enqueued"] == 0


def test_duration_mode_rate():
    out = native.run(0.3, threads=1, sockets=3)
    assert out["calls"] == out["ok"] > 3
    assert out["expected_enqueued"] == out["ok"] - 3
    assert out["calls_per_s"] == pytest.approx(out["calls"] / out["elapsed_s"], rel=1e-3)


def test_bad_optlen_and_no_gcc(monkeypatch):
    with pytest.raises(UserError, match="1..64"):
        native.argv(10, optlen=65)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="needs gcc"):
        native.build(native.binary_path())
