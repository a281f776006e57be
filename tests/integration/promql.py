"""A real Prometheus for the integration tier: Debian's binary (scripts/setup-integration.sh),
run on loopback with its own temporary config and data directory, and the dashboards'
expressions evaluated through its HTTP API.

Imported by the host tests and by tests/integration/guest_prom.py inside lab VMs, so it needs
nothing beyond the standard library."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcupending_tools.surfaces import grafana

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
SCRAPE_S = 1  # scrape and evaluation interval: short, so a test sees many points quickly
NAME = re.compile(r"\brcupending_[a-z0-9_]+")


@dataclass(frozen=True)
class Expr:
    dashboard: str  # file name
    panel: str  # panel title (or "templating")
    ref: str  # the target's refId (or the variable's name)
    expr: str  # as written in the dashboard, variables unsubstituted


def prometheus_bin_dir() -> Path:
    """Where scripts/setup-integration.sh unpacked Debian's prometheus package for this host's
    candidate version (RCUPENDING_PROMETHEUS_BIN overrides). Raises if it is not there."""
    if env := os.environ.get("RCUPENDING_PROMETHEUS_BIN"):
        d = Path(env)
    else:
        pol = subprocess.run(["apt-cache", "policy", "prometheus"], capture_output=True,
                             text=True, check=False).stdout
        m = re.search(r"Candidate:\s*(\S+)", pol)
        if not m or m.group(1) == "(none)":
            raise RuntimeError("no prometheus package in this machine's apt sources")
        cache = Path(os.environ.get("RCUPENDING_CACHE") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rcupending-tools")
        d = cache / "prometheus" / m.group(1) / "usr" / "bin"
    for tool in ("prometheus", "promtool"):
        if not os.access(d / tool, os.X_OK):
            raise RuntimeError(f"{d / tool} missing: run scripts/setup-integration.sh")
    return d


def dashboard_exprs(dashboards: dict[str, dict] | None = None) -> list[Expr]:
    """Every query of the Grafana dashboard `rcupending grafana` writes (or of `dashboards`,
    name -> JSON): panel targets (rows' nested panels too) and query variables
    (`label_values(...)` definitions)."""
    out: list[Expr] = []

    def panels(node: dict, name: str) -> None:
        for p in node.get("panels") or []:
            for t in p.get("targets") or []:
                if isinstance(t.get("expr"), str) and t["expr"].strip():
                    out.append(Expr(name, p.get("title", ""), t.get("refId", ""), t["expr"]))
            panels(p, name)

    if dashboards is None:
        dashboards = {"rcupending grafana": grafana.dashboard()}
    for name, dash in dashboards.items():
        panels(dash, name)
        for var in (dash.get("templating") or {}).get("list") or []:
            q = var.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if var.get("type") == "query" and isinstance(q, str) and q:
                out.append(Expr(name, "templating", var["name"], q))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable forms ($name, ${name}, ${name:fmt}, [[name]]) replaced; an unknown
    variable raises KeyError, so a dashboard cannot use one the tests do not know."""

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", one, expr)


def metric_names(expr: str) -> set[str]:
    return set(NAME.findall(expr))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromError(RuntimeError):
    pass


class Prometheus:
    """`prometheus` on 127.0.0.1:<free port>, scraping `targets` every `scrape_s` seconds into a
    temporary data directory; stopped and removed on exit."""

    def __init__(self, bin_dir: Path, targets: list[str], *, job: str = "rcupending",
                 rule_files: Sequence[Path] = (), workdir: Path | None = None,
                 scrape_s: int = SCRAPE_S) -> None:
        self.bin_dir = bin_dir
        self.scrape_s = scrape_s
        self.targets = targets
        self.job = job
        self.rule_files = list(rule_files)
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="rcupending-prom-"))
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def rate_interval(self) -> str:
        """Grafana's $__rate_interval: max(4 x the data source's scrape interval, step +
        scrape interval), the data source set to this scrape interval and queries stepped by
        it: 4 intervals, one more for a late scrape."""
        return f"{5 * self.scrape_s}s"

    def variables(self, instance: str = ".*") -> dict[str, str]:
        """The dashboard's template variables as Grafana would fill them ("All" by default)."""
        return {"instance": instance, "__rate_interval": self.rate_interval}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            "global:",
            f"  scrape_interval: {self.scrape_s}s",
            f"  evaluation_interval: {self.scrape_s}s",
            f"  scrape_timeout: {self.scrape_s}s",
        ]
        if self.rule_files:
            lines += ["rule_files:"] + [f"  - {json.dumps(str(p))}" for p in self.rule_files]
        lines += [
            "scrape_configs:",
            f"  - job_name: {json.dumps(self.job)}",
            "    static_configs:",
            f"      - targets: {json.dumps(self.targets)}",
        ]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> Prometheus:
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(self.config())
        for _attempt in range(3):  # a free port can be taken before prometheus binds it
            self.port = free_port()
            self._start(cfg)
            if self._wait_ready():
                return self
            if "address already in use" not in self.log_tail():
                break
        self.__exit__(None, None, None)
        raise PromError(f"prometheus did not start: {self.log_tail()}")

    def _start(self, cfg: Path) -> None:
        self.log = (self.dir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "prometheus"), f"--config.file={cfg}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1d", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, timeout: float = 120) -> bool:
        """True once /-/ready answers; False if prometheus exited or never got ready."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.dir / "prometheus.log").read_text().splitlines()[-n:])
        except OSError:
            return ""

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/<path>; the JSON answer whether its status is success or error."""
        query = urllib.parse.urlencode(
            [("match[]" if k == "match_" else k, x) for k, v in params.items()
             for x in (v if isinstance(v, list) else [v])])
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 400/422: a bad expression, with its error JSON
            return json.load(e)

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        return self.api("query", query=expr, **({"time": f"{at:.3f}"} if at else {}))

    def query_range(self, expr: str, start: float, end: float) -> dict:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=str(self.scrape_s))

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of an instant query (None if empty)."""
        res = self.query(expr, at)
        if res.get("status") != "success":
            raise PromError(f"{expr}: {res}")
        vec = res["data"]["result"]
        assert len(vec) <= 1, (expr, vec)
        return float(vec[0]["value"][1]) if vec else None

    def wait_for(self, expr: str, timeout: float = 60) -> float:
        """Poll until the instant query has a value; that value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.value(expr)
            if v is not None:
                return v
            time.sleep(0.5)
        raise PromError(f"no value for {expr} after {timeout:.0f} s; targets: "
                        f"{self.api('targets')['data']}; log: {self.log_tail()}")

    def series_names(self, start: float, end: float) -> set[str]:
        """Names of every rcupending_ series stored between start and end."""
        res = self.api("label/__name__/values", start=f"{start:.0f}", end=f"{end + 1:.0f}")
        return {n for n in res["data"] if n.startswith("rcupending_")}


def evaluate(prom: Prometheus, exprs: list[Expr], variables: dict[str, str], start: float,
             end: float) -> list[dict[str, Any]]:
    """Each expression as Grafana would send it (variables substituted) over [start, end]: a
    range query for panel targets, the label-values API for `label_values()` variables.
    Plain data (JSON-able) so that a lab VM can hand it to the host."""
    present = prom.series_names(start, end)
    out = []
    for e in exprs:
        row: dict[str, Any] = {"dashboard": e.dashboard, "panel": e.panel, "ref": e.ref,
                               "expr": e.expr, "names": sorted(metric_names(e.expr))}
        row["missing"] = sorted(set(row["names"]) - present)
        m = re.fullmatch(r"\s*label_values\((\w+)\s*,\s*(\w+)\)\s*", e.expr)
        if m:  # a Grafana function, not PromQL: what Grafana asks Prometheus for it
            res = prom.api(f"label/{m.group(2)}/values", match_=[m.group(1)],
                           start=f"{start:.0f}", end=f"{end + 1:.0f}")
            row["query"] = f"label_values({m.group(1)}, {m.group(2)})"
            row["status"] = res.get("status")
            row["error"] = res.get("error", "")
            row["values"] = res.get("data") or []
            row["series"] = len(row["values"])
            row["finite_points"] = len(row["values"])
        else:
            q = substitute(e.expr, variables)
            res = prom.query_range(q, start, end)
            row["query"] = q
            row["status"] = res.get("status")
            row["error"] = res.get("error", "")
            result = (res.get("data") or {}).get("result") or []
            row["series"] = len(result)
            row["finite_points"] = sum(
                1 for s in result for _, v in s["values"] if math.isfinite(float(v)))
        out.append(row)
    return out


def problems(rows: list[dict[str, Any]]) -> list[str]:
    """What contradicts "every expression is accepted, and returns data where the exporter has
    the series": a rejected query, no finite point although every metric it names was scraped,
    or data although none was (the expression would then not depend on our series)."""
    bad = []
    for r in rows:
        where = f"{r['dashboard']} / {r['panel']} / {r['ref']}: {r['query']}"
        if r["status"] != "success":
            bad.append(f"rejected: {where}: {r['error']}")
        elif not r["missing"] and r["finite_points"] == 0:
            bad.append(f"no data although every series is there: {where}")
        elif r["names"] and set(r["missing"]) == set(r["names"]) and r["series"]:
            bad.append(f"data although no series it names was scraped: {where}")
    return bad
