"""The kvfree stress knows its own truth (runs unprivileged: setsockopt on UDP sockets)."""

from __future__ import annotations

import pytest

from rcupending_tools.stress import kvfree


def finished(run: kvfree.StressRun) -> dict:
    res = run.wait()
    assert all(p.is_alive() for p in run.procs)  # sockets held open until finish()
    run.finish()
    assert not any(p.is_alive() for p in run.procs)
    return res


def test_options_bytes():
    assert kvfree.options_bytes(4) == b"\x01\x01\x01\x00"
    assert len(kvfree.options_bytes(40)) == 40
    with pytest.raises(ValueError):
        kvfree.options_bytes(0)


def test_count_mode_expects_exact_enqueues():
    res = finished(kvfree.start(1001, optlen=4, workers=2, sockets=8))
    assert res["kvfree_rcu"]["enqueued"] == 1001
    assert res["calls"] == 1001 + 8 and res["failed"] == 0
    assert len(res["pids"]) == 2 and res["sockets_with_options"] == 8


def test_first_set_per_socket_enqueues_nothing():
    res = finished(kvfree.start(0, sockets=16))
    assert res["calls"] == 16 and res["ok"] == 16
    assert res["kvfree_rcu"]["enqueued"] == 0


def test_invalid_optlen_enqueues_nothing():
    res = finished(kvfree.start(50, optlen=44))
    assert res["ok"] == 0 and res["errors"] == {"EINVAL": res["calls"]}
    assert res["sockets_with_options"] == 0
    assert res["kvfree_rcu"]["enqueued"] == 0


def test_duration_mode():
    run = kvfree.start(None, duration=0.3, workers=1, sockets=2)
    assert run.running(timeout=0.05)
    res = finished(run)
    assert res["kvfree_rcu"]["enqueued"] == res["ok"] - 2 > 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        kvfree.start(10, duration=1.0)
    with pytest.raises(ValueError):
        kvfree.start(10, workers=4, sockets=2)
