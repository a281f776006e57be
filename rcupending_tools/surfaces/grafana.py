"""The Grafana dashboard of `rcupending serve`, derived from the metric families: one row per
family, one panel per metric (a metric's `_by_<label>` splits join its panel), laid out by a
grid packer. A family or a metric added is a panel added; nothing is placed by hand.

Queries name the exported sample names exactly (`rcupending_` + metric, `_total` on counters,
`_bucket` on histograms) and filter by the `$instance` template variable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..families import FAMILIES
from ..families.base import Metric
from .samples import CORE, PREFIX

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
RATE = "[$__rate_interval]"
WIDTH, HEIGHT, COLUMNS = 24, 8, 2  # the grid, panel height, panels per row
QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Panel:
    title: str
    kind: str  # timeseries, table
    targets: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _base_unit(name: str) -> str:
    if name.endswith("_bytes") or "_bytes_by_" in name:
        return "bytes"
    if name.endswith("_seconds") or "_seconds_by_" in name:
        return "s"
    return "short"


def _legend(m: Metric) -> str:
    labels = [lab for lab in m.labels if lab not in ("tgid",)] or []
    parts = [f"{{{{{lab}}}}}" for lab in labels] + (["{{tgid}}"] if "tgid" in m.labels else [])
    return " ".join(parts + ["{{instance}}"])


def _targets(m: Metric) -> list[tuple[str, str]]:
    name = PREFIX + m.name
    if m.kind == "counter":
        unit_rate = f"rate({name}_total{{{SEL}}}{RATE})"
        return [(unit_rate, _legend(m))]
    if m.kind == "histogram":
        by = ", ".join(("le", *m.labels, "instance"))
        return [
            (f"histogram_quantile({q}, sum by ({by}) (rate({name}_bucket{{{SEL}}}{RATE})))",
             f"p{round(q * 100)} " + _legend(m))
            for q in QUANTILES
        ]
    return [(f"{name}{{{SEL}}}", _legend(m))]


def _unit(m: Metric) -> str:
    base = _base_unit(m.name)
    if m.kind == "counter":
        return {"bytes": "Bps", "s": "percentunit"}.get(base, "ops")
    return base


def _title(m: Metric, family: str) -> str:
    title = m.name.removeprefix(family + "_").replace("_", " ")
    return title + (" / s" if m.kind == "counter" else "")


def panels(family: str, metrics: tuple[Metric, ...]) -> Iterator[Panel]:
    """One panel per metric of `family`; a metric named `<base>_by_<label>` whose base metric
    exists is drawn in the base metric's panel. Info metrics are tables."""
    names = {m.name for m in metrics}
    joined: dict[str, list[Metric]] = {}
    for m in metrics:
        base = m.name.rsplit("_by_", 1)[0] if "_by_" in m.name else None
        joined.setdefault(base if base in names else m.name, []).append(m)
    for head, group in joined.items():
        first = next(m for m in group if m.name == head)
        if first.kind == "info":
            yield Panel(first.help, "table", _targets(first), description=first.help,
                        extra={"transformations": [{"id": "labelsToFields",
                                                    "options": {"mode": "columns"}}]})
            continue
        targets = [t for m in group for t in _targets(m)]
        yield Panel(_title(first, family), "timeseries", targets, _unit(first),
                    "; ".join(f"{m.name}: {m.help}" for m in group))


def _json(p: Panel, pid: int, x: int, y: int, w: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": HEIGHT},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(p.targets)
        ],
        **p.extra,
    }


def sections() -> list[tuple[str, list[Panel]]]:
    """(row title, panels) per family, then the tool's own metrics."""
    out = [(f.name, list(panels(f.name, f.metrics))) for f in FAMILIES]
    out.append(("source, probes and the tool's own cost", list(panels("", CORE))))
    return out


def dashboard() -> dict[str, Any]:
    """The dashboard JSON (Grafana schema 39), laid out row by row."""
    items: list[dict[str, Any]] = []
    y = pid = 0
    w = WIDTH // COLUMNS
    for title, group in sections():
        pid += 1
        items.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                      "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1}, "panels": []})
        y += 1
        col = 0  # panels already on the current line
        for p in group:
            pid += 1
            span = COLUMNS if p.kind == "table" else 1  # a table takes a line of its own
            if col + span > COLUMNS:
                y, col = y + HEIGHT, 0
            items.append(_json(p, pid, col * w, y, span * w))
            col += span
        y += HEIGHT if col else 0
    variable = "label_values(rcupending_source_info, instance)"
    return {
        "title": "rcupending: memory waiting behind RCU",
        "uid": "rcupending",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-30m", "to": "now"},
        "refresh": "10s",
        "tags": ["rcupending", "rcu", "ebpf"],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus"},
            {"name": "instance", "type": "query", "datasource": DS, "label": "instance",
             "query": {"query": variable, "refId": "instance"}, "definition": variable,
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2},
        ]},
        "panels": items,
    }
