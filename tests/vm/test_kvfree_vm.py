"""VM tier: real Debian kernels (6.1: kvfree_call_rcu(head, func); 6.12: (head, ptr)).

One VM boot per kernel runs tests/vm/guest_kvfree.py; a kernel that fails to boot fails here."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import run_cli

N = 20000
KERNELS = ["debian:6.1", "debian:6.12"]


@pytest.fixture(scope="module", params=KERNELS)
def guest(request) -> dict:
    proc = run_cli(
        "lab",
        "--kernel",
        request.param,
        "--",
        sys.executable,
        "tests/vm/guest_kvfree.py",
        timeout=2400,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RCUPENDING-RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"lab run on {request.param} failed (rc {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    result = json.loads(lines[-1].split(" ", 1)[1])
    result["spec"] = request.param
    return result


def probe(check: dict, name: str) -> dict:
    return next(p for p in check["probes"] if p["name"] == name)


def test_check_attaches_kvfree_by_fentry(guest):
    check = guest["check"]
    assert check["rc"] == 0, check
    kv = probe(check["out"], "kvfree_call_rcu")
    assert kv["status"] == "attached" and kv["mechanism"] == "fentry", kv
    expected_params = ["head", "func"] if guest["spec"] == "debian:6.1" else ["head", "ptr"]
    assert kv["params"] == expected_params
    nolock = probe(check["out"], "alloc_pages_nolock")
    assert nolock["status"] == "absent" and "arrived in 6.15" in nolock["detail"], nolock
    pending = probe(check["out"], "rcu_pending_enqueue")
    assert pending["status"] == "absent", pending
    if guest["spec"] == "debian:6.1":  # before rcu_pending existed
        assert "this kernel is 6.1" in pending["detail"], pending
    else:  # Debian 6.12 builds bcachefs as a module (CONFIG_BCACHEFS_FS=m), not loaded
        assert "module bcachefs is not loaded" in pending["detail"], pending


def test_stress_measured_exactly(guest):
    main = guest["main"]
    assert main["rc"] == 0, main
    out = main["out"]
    assert out["expected"]["kvfree_rcu"]["enqueued"] == N
    assert out["measured"]["kvfree_rcu"]["by_stress"]["enqueued"] == N
    assert out["match"] is True
    # All processes together saw at least the stress share.
    assert out["measured"]["kvfree_rcu"]["enqueued"]["objects"] >= N


def test_independent_kmalloc_count_agrees(guest):
    out = guest["main"]["out"]
    sockets = out["expected"]["sockets"]
    # ip_options_get allocates once per successful set: N enqueues + one first set per socket.
    assert guest["main"]["kmalloc_ip_options"] == N + sockets, guest["main"]["kmalloc_by_site"]


def test_negative_control_first_sets(guest):
    ctl = guest["first_sets_only"]
    assert ctl["rc"] == 0, ctl
    assert ctl["out"]["expected"]["ok"] == 64
    assert ctl["kmalloc_ip_options"] == 64
    assert ctl["out"]["measured"]["kvfree_rcu"]["by_stress"]["enqueued"] == 0


def test_negative_control_invalid_optlen(guest):
    ctl = guest["invalid_optlen"]
    assert ctl["rc"] == 0, ctl
    assert ctl["out"]["expected"]["ok"] == 0 and ctl["out"]["expected"]["failed"] > 0
    assert ctl["kmalloc_ip_options"] == 0
    assert ctl["out"]["measured"]["kvfree_rcu"]["by_stress"]["enqueued"] == 0
