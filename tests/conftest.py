"""Shared fixtures and tier markers: unit (default), host (root on this kernel), vm (lab VMs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RCUPENDING = [sys.executable, "-m", "rcupending_tools.cli"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, **kw
) -> subprocess.CompletedProcess:
    """Run `rcupending ARGS` as a subprocess (the real entry point, exit codes and all)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*RCUPENDING, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=timeout,
        **kw,
    )


@pytest.fixture
def cli():
    return run_cli


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if "/tests/host/" in path:
            item.add_marker(pytest.mark.host)
        elif "/tests/vm/" in path:
            item.add_marker(pytest.mark.vm)
