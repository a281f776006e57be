"""dashboards/alerts.yml judged by Debian's promtool: it parses (`check rules`) and its unit tests
(dashboards/tests/alerts_test.yml: series that must fire and series that must not) pass."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

ALERTS = REPO / "dashboards" / "alerts.yml"
RULE_TESTS = REPO / "dashboards" / "tests" / "alerts_test.yml"


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def promtool(prom_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(prom_bin / "promtool"), *args], capture_output=True, text=True,
                          timeout=120)


def test_promtool_check_rules(prom_bin):
    res = promtool(prom_bin, "check", "rules", str(ALERTS))
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(alerts())
    assert n >= 7 and f"SUCCESS: {n} rules found" in res.stdout, res.stdout


def test_promtool_test_rules(prom_bin):
    res = promtool(prom_bin, "test", "rules", str(RULE_TESTS))
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_every_alert_has_cases_that_fire_and_cases_that_must_not():
    fires: set[str] = set()
    silent: set[str] = set()
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        instances = {m.group(1) for s in group["input_series"]
                     if (m := re.search(r'instance="([^"]*)"', s["series"]))}
        for case in group["alert_rule_test"]:
            exp = case.get("exp_alerts") or []
            if exp:
                fires.add(case["alertname"])
            # an instance with input series that is not expected to fire at that time
            if not exp or instances - {a["exp_labels"].get("instance") for a in exp}:
                silent.add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fires == set(), f"alerts without a case that must fire: {names - fires}"
    assert names - silent == set(), f"alerts without a case that must not: {names - silent}"


def test_rule_tests_pin_each_for_duration(prom_bin, tmp_path):
    """With an alert's `for:` removed the tests must fail: they check its hold time, not only
    its condition (a sharper oracle than the unmutated SUCCESS)."""
    (tmp_path / "tests").mkdir()
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    text = ALERTS.read_text()
    mutated = []
    for a in alerts():
        if a.get("for", "0m") in ("0m", "0s", 0):
            continue
        block = re.compile(rf"(- alert: {a['alert']}\n(?:(?!      - alert:).*\n)*?\s+for: )\S+")
        (tmp_path / "alerts.yml").write_text(block.sub(r"\g<1>0m", text, count=1))
        res = promtool(prom_bin, "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
        out = res.stdout + res.stderr
        assert res.returncode != 0 and f"alertname: {a['alert']}," in out, (a["alert"], out)
        mutated.append(a["alert"])
    assert len(mutated) >= 5, mutated
