"""Set-up on Debian 13 (trixie) from this Debian 12 host: a debootstrap'd minbase tree
(scripts/debian-tree.sh, cached; scripts/test.sh starts it in the background) in which
scripts/setup.sh ran and installed trixie's own bcc, QEMU, clang and Python; then
`rcupending check` there must agree with this checkout's on the same kernel, and a lab VM
booted from the tree (trixie's QEMU, the guest seeing the tree) must attach by fentry."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration

SUITE = "trixie"
TREE = ["bash", str(REPO / "scripts" / "debian-tree.sh")]
VERSIONED = ["python3", "python3-bpfcc", "qemu-system-x86", "clang", "apt"]


def in_tree(*cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TREE, "run", SUITE, "--", *cmd], capture_output=True, text=True,
                          timeout=timeout)


def versions(run) -> dict[str, str]:  # noqa: ANN001
    fmt = "${Package} ${Version}\n"
    res = run("dpkg-query", "-W", f"-f={fmt}", *VERSIONED)
    assert res.returncode == 0, res.stderr
    return dict(ln.split(" ", 1) for ln in res.stdout.splitlines())


@pytest.fixture(scope="module")
def tree() -> dict:
    """The prepared tree; prepare's exit status is scripts/setup.sh's in the tree (a cached
    tree of this checkout returns at once; one being prepared by scripts/test.sh is waited
    for)."""
    t0 = time.monotonic()
    res = subprocess.run([*TREE, "prepare", SUITE], capture_output=True, text=True,
                         timeout=3600)
    assert res.returncode == 0, f"set-up in Debian 13 failed:\n{res.stdout}{res.stderr}"
    return {"prepare_s": time.monotonic() - t0}


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
    tree): every probe's status, mechanism and reason are the same, and so is the exit."""
    theirs = in_tree(".venv/bin/rcupending", "check", "--json")
    ours = run_cli("check", "--json")
    assert theirs.returncode == ours.returncode, (theirs.stderr, ours.stderr)
    a, b = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert a["kernel_release"] == b["kernel_release"]
    assert [p["name"] for p in a["probes"]] == [p["name"] for p in b["probes"]]
    for x, y in zip(a["probes"], b["probes"], strict=True):
        assert {k: x[k] for k in ("status", "mechanism", "detail", "params")} == {
            k: y[k] for k in ("status", "mechanism", "detail", "params")}, (x, y)


@pytest.mark.vm
def test_lab_vm_boots_from_13(tree):
    """`rcupending lab` run in the tree: trixie's QEMU and virtme-ng boot Debian's 6.12, the
    guest sees the tree, and trixie's bcc attaches kvfree_call_rcu by fentry in it."""
    res = in_tree(".venv/bin/rcupending", "lab", "--kernel", "debian:6.12", "--", "sh", "-c",
                  "cat /etc/debian_version; .venv/bin/rcupending check --json", timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    release, _, out = res.stdout.partition("\n")
    assert release.startswith("13."), release
    check = json.loads(out[out.index("{"):])
    assert check["kernel_release"].startswith("6.12."), check["kernel_release"]
    kv = next(p for p in check["probes"] if p["name"] == "kvfree_call_rcu")
    assert kv["status"] == "attached" and kv["mechanism"] == "fentry", kv
    assert kv["params"] == ["head", "ptr"], kv
