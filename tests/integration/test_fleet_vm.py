"""A lab VM's live run as a Debian 13 fleet host runs it, in one boot (the tier's only one):
`rcupending lab --kernel debian:6.12` started in the Debian 13 tree (test_debian13.py) boots
with trixie's QEMU, the guest seeing the tree. There dist/rcupending-serve.service's ExecStart
runs under the unit's capability bounding set, NoNewPrivileges and W^X with trixie's bcc and
Python, scraped by Debian 13's Prometheus on the guest's loopback while a kvfree stress runs
(tests/integration/guest_fleet.py). Every dashboard expression is judged on what that
Prometheus stored, and the stress's own count is found in it."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import REPO
from tests.integration.conftest import in_tree
from tests.integration.guest_fleet import STRESS, unit_service
from tests.integration.promql import problems

pytestmark = [pytest.mark.integration, pytest.mark.vm]

KERNEL = "debian:6.12"  # fetched in the tree by scripts/debian-tree.sh prepare


def cap_mask(names: list[str]) -> int:
    """The capability bits systemd gives these names (its own table, not ours)."""
    res = subprocess.run(["systemd-analyze", "capability", *names], capture_output=True,
                         text=True, check=True)
    bits = [int(ln.split()[1]) for ln in res.stdout.splitlines()[1:] if ln.strip()]
    assert len(bits) == len(names), res.stdout
    return sum(1 << b for b in bits)


@pytest.fixture(scope="module")
def guest(tree) -> dict:
    # the tree's Prometheus, found by its apt in the tree (the guest only runs it)
    t0 = time.monotonic()
    proc = in_tree("sh", "-c", "bin=$(.venv/bin/python -c 'from tests.integration.promql import "
                   "prometheus_bin_dir as d; print(d())') && exec .venv/bin/rcupending lab "
                   f"--kernel {KERNEL} -- .venv/bin/python tests/integration/guest_fleet.py "
                   '"$bin"', timeout=2400)
    seconds = time.monotonic() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RCUPENDING-RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"lab run on {KERNEL} failed (rc {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].split(" ", 1)[1])
    result["vm_s"] = round(seconds, 1)
    out = REPO / "build" / "integration"  # kept for a look at what Prometheus answered
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet-vm.json").write_text(json.dumps(result, indent=1) + "\n")
    assert "rows" in result and "error" not in result, result  # serve started, was scraped
    print(f"fleet VM: {seconds:.0f} s, {result['guest_s']} s of them in the guest script; serve "
          f"attached in {result['serve_attach_s']} s, stress {result['stress'].get('s')} s, "
          f"evaluation {result.get('evaluate_s')} s")
    return result


def series(result: dict, key: str, **labels: str) -> list[dict]:
    return [s for s in result["instant"][key]
            if all(s["metric"].get(k) == v for k, v in labels.items())]


def test_guest_is_debian_13_with_its_prometheus(guest):
    assert guest["debian_version"].startswith("13."), guest["debian_version"]
    assert guest["prometheus_version"].startswith("2.53."), guest["prometheus_version"]


def test_serve_runs_with_only_the_units_privileges(guest):
    st = guest["status"]
    want = cap_mask(unit_service()["CapabilityBoundingSet"].split())
    for field in ("CapBnd", "CapPrm", "CapEff"):
        assert int(st[field], 16) == want, (field, st)
    assert int(st["CapAmb"], 16) == 0 and st["NoNewPrivs"] == "1", st
    assert guest["serve_started"].endswith("/metrics (live)"), guest["serve_started"]
    assert guest["listeners"] == ["127.0.0.1"], guest["listeners"]  # loopback only
    # with those privileges the probe attached for real, as Prometheus stored it
    kv = series(guest, "probe_info", probe="kvfree_call_rcu")
    assert [s["metric"]["status"] + "/" + s["metric"]["mechanism"] for s in kv] == [
        "attached/fentry"], kv
    src = series(guest, "source_info", source="lab-vm", lab_spec=KERNEL)
    assert len(src) == 1, guest["instant"]["source_info"]


def test_every_dashboard_expression_on_a_live_run(guest):
    rows = guest["rows"]
    assert not problems(rows), "\n".join(problems(rows))
    # what this run cannot have: Debian's 6.12 has no nolock allocator and bcachefs (the only
    # rcu_pending user) is not loaded, so those probes are absent, and the stress's own share
    # exists only inside `stress --measure`, never in serve (test_prometheus_synthetic.py
    # covers these panels)
    status = {s["metric"]["probe"]: s["metric"]["status"] for s in guest["instant"]["probe_info"]}
    assert status["alloc_pages_nolock"] == status["rcu_pending_enqueue"] == "absent", status
    lacking = ("rcupending_kvfree_rcu_stress_", "rcupending_nolock_", "rcupending_rcu_pending_")
    for r in rows:
        if any(n.startswith(lacking) for n in r["names"]):
            assert r["series"] == 0, r
        else:  # everything else is there, with data
            assert not r["missing"] and r["finite_points"], r
    with_data = {r["query"] for r in rows if r["finite_points"]}
    for family in ("rcupending_self_bpf_run_", "rcupending_self_cpu",
                   "rcupending_kvfree_rcu_latency_", "rcupending_kvfree_rcu_process_"):
        assert any(family in q for q in with_data), (family, sorted(with_data))


def test_stress_count_reaches_prometheus_exactly(guest):
    """The stress counts its own successful sets (ground truth); Prometheus must hold exactly
    that many kvfree_rcu enqueues for its worker process, plus one per socket it closed with
    options set: 6.12's inet_sock_destruct() frees the last option block with kfree_rcu()
    (net/ipv4/af_inet.c), in the worker, after the sets."""
    assert guest["stress"]["rc"] == 0, guest["stress"]
    truth = guest["stress"]["truth"]
    assert truth["kvfree_rcu"]["enqueued"] == STRESS, truth
    (pid,) = truth["pids"]
    got = series(guest, "process_enqueued", tgid=str(pid))
    want = STRESS + truth["sockets_with_options"]
    assert [float(s["value"][1]) for s in got] == [want], got
    assert all(float(s["value"][1]) > 0 for s in guest["instant"]["self_bpf_run_events"])
