"""Integration tier: Debian's own prometheus/promtool, systemd-analyze and a debootstrap'd Debian
13 tree judge what we ship. Tools missing is a failure, never a skip: CI installs them with
scripts/setup-integration.sh (scripts/test.sh runs it)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.promql import prometheus_bin_dir

SUITE = "trixie"
TREE = ["bash", str(REPO / "scripts" / "debian-tree.sh")]


@pytest.fixture(scope="session")
def prom_bin() -> Path:
    try:
        return prometheus_bin_dir()
    except RuntimeError as e:
        pytest.fail(str(e))


def in_tree(*cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """CMD as root in the Debian 13 tree's copy of this checkout."""
    return subprocess.run([*TREE, "run", SUITE, "--", *cmd], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def tree() -> dict:
    """The Debian 13 tree, prepared: its exit status is scripts/setup.sh's (and
    setup-integration.sh's) in the tree. A tree cached for this checkout returns at once; one
    being prepared by scripts/test.sh in the background is waited for."""
    t0 = time.monotonic()
    res = subprocess.run([*TREE, "prepare", SUITE], capture_output=True, text=True,
                         timeout=3600)
    assert res.returncode == 0, f"set-up in Debian 13 failed:\n{res.stdout}{res.stderr}"
    return {"prepare_s": time.monotonic() - t0}
