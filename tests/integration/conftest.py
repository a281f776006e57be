"""Integration tier: Debian's own prometheus/promtool, systemd-analyze and a debootstrap'd Debian
13 tree judge what we ship. Tools missing is a failure, never a skip: CI installs them with
scripts/setup-integration.sh (scripts/test.sh runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.promql import prometheus_bin_dir


@pytest.fixture(scope="session")
def prom_bin() -> Path:
    try:
        return prometheus_bin_dir()
    except RuntimeError as e:
        pytest.fail(str(e))
