"""Set-up on Debian 13 (trixie) from this Debian 12 host: a debootstrap'd minbase tree
(scripts/debian-tree.sh, cached; scripts/test.sh prepares it in the background) in which
scripts/setup.sh and scripts/setup-integration.sh ran and installed trixie's own bcc, QEMU,
clang, Python, systemd and Prometheus. `rcupending check` there must agree with this
checkout's on the same kernel, and Debian 13's promtool and systemd-analyze must accept what we
ship. The lab VM booted from the tree is test_fleet_vm.py's."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import in_tree
from tests.integration.guest_fleet import INSTALLED, UNIT

pytestmark = pytest.mark.integration

VERSIONED = ["python3", "python3-bpfcc", "qemu-system-x86", "clang", "apt", "systemd"]


def versions(run) -> dict[str, str]:  # noqa: ANN001
    res = run("dpkg-query", "-W", "-f=${Package} ${Version}\n", *VERSIONED)
    assert res.returncode == 0, res.stderr
    return dict(ln.split(" ", 1) for ln in res.stdout.splitlines())


def test_tree_is_debian_13_with_its_own_packages(tree):
    res = in_tree("sh", "-c", "cat /etc/debian_version; .venv/bin/python -c "
                  "'import sys, bcc; print(sys.version_info[:2], bcc.__file__)'")
    assert res.returncode == 0, res.stderr
    release, venv = res.stdout.splitlines()
    assert release.startswith("13."), release
    # the venv runs trixie's Python and sees trixie's bcc (Debian's, not PyPI's)
    assert venv == "(3, 13) /usr/lib/python3/dist-packages/bcc/__init__.py", venv
    theirs = versions(in_tree)
    ours = versions(lambda *c: subprocess.run(c, capture_output=True, text=True))
    assert theirs.keys() == ours.keys() == set(VERSIONED), (theirs, ours)
    same = [p for p in VERSIONED if theirs[p] == ours[p]]
    assert not same, f"the tree has bookworm's {same}: {theirs}"


def test_setup_reruns_cleanly_on_13(tree):
    """Idempotent there too: nothing left to install, the venv and caches kept."""
    res = in_tree("bash", "scripts/setup.sh")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "setup: done" in res.stdout and "installing Debian packages" not in res.stdout


def test_check_on_13_agrees_with_12_on_this_kernel(tree):
    """Same kernel, two userlands (bcc 0.26 / Python 3.11 here, bcc 0.31 / Python 3.13 in the
    tree): every probe's status, mechanism, reason and parameters are the same, and so is the
    exit status."""
    theirs = in_tree(".venv/bin/rcupending", "check", "--json")
    ours = run_cli("check", "--json")
    assert theirs.returncode == ours.returncode, (theirs.stderr, ours.stderr)
    a, b = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert a["kernel_release"] == b["kernel_release"]
    assert [p["name"] for p in a["probes"]] == [p["name"] for p in b["probes"]]
    keys = ("status", "mechanism", "detail", "params")
    for x, y in zip(a["probes"], b["probes"], strict=True):
        assert {k: x[k] for k in keys} == {k: y[k] for k in keys}, (x, y)


def test_alert_rules_pass_debian_13_promtool(tree):
    """Debian 13's promtool (2.53, a package of its own there) checks and unit-tests the same
    rules files as 12's (2.42)."""
    res = in_tree("sh", "-c", "bin=$(.venv/bin/python -c 'from tests.integration.promql import "
                  "prometheus_bin_dir as d; print(d())') && $bin/promtool --version && "
                  "$bin/promtool check rules dashboards/alerts.yml && "
                  "$bin/promtool test rules dashboards/tests/alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "version 2.53." in res.stdout and "SUCCESS" in res.stdout, res.stdout


def test_unit_verifies_with_debian_13_systemd(tree):
    """systemd 257's verify, at the tree's checkout path, prints nothing."""
    unit = "/tmp/" + UNIT.name
    res = in_tree("sh", "-c", f"sed 's#{INSTALLED}#/src/rcupending-tools#g' "
                  f"dist/{UNIT.name} > {unit} && systemd-analyze verify {unit}")
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
