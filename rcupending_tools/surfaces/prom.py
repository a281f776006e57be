"""Prometheus exposition of the latest snapshot (prometheus_client, own registry).

Families and names come from views/metrics.py (`rcupending_` + family). One process serves one
kernel; Prometheus carries a fleet, so there is no aggregation here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ..errors import UserError
from ..pipeline.schema import Snapshot
from . import samples as metrics
from .samples import PREFIX


class SnapshotExporter(Collector):
    """Exposes whatever snapshot was last `update()`d (none: only the families' HELP/TYPE)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None

    def update(self, snap: Snapshot) -> None:
        with self._lock:
            self._snap = snap

    @property
    def snapshot(self) -> Snapshot | None:
        with self._lock:
            return self._snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        by_family: dict[str, list[metrics.Sample]] = {}
        if snap is not None:
            for s in metrics.samples(snap):
                by_family.setdefault(s.family, []).append(s)
        for fam in metrics.METRICS:
            smps = by_family.pop(fam.name, [])
            if fam.kind == "histogram":
                yield _histogram(PREFIX + fam.name, fam.help, list(fam.labels), smps)
                continue
            labels = list(fam.labels)
            if fam.kind == "counter":
                m: Metric = CounterMetricFamily(PREFIX + fam.name, fam.help, labels=labels)
            else:
                m = GaugeMetricFamily(PREFIX + fam.name, fam.help, labels=labels)
            for s in smps:
                m.add_metric([s.labels[k] for k in labels], s.value)
            yield m
        for name, smps in sorted(by_family.items()):  # histograms without a family of their own
            labels = sorted({k for s in smps for k in s.labels if k != "le"})
            yield _histogram(PREFIX + name, f"log2 histogram {name}", labels, smps)


def _histogram(
    name: str, doc: str, labels: list[str], smps: list[metrics.Sample]
) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=labels)
    series: dict[tuple[str, ...], list[tuple[str, float]]] = {}
    for s in smps:
        key = tuple(s.labels.get(k, "") for k in labels)
        series.setdefault(key, [])
        if s.name.endswith("_bucket"):
            series[key].append((s.labels["le"], s.value))
    for key, buckets in series.items():
        h.add_metric(list(key), buckets, None)
    return h


def start_server(exporter: SnapshotExporter, host: str, port: int):  # noqa: ANN201
    """Serve /metrics of `exporter` on host:port in a thread; one line when it cannot listen."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry(exporter))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return server


def registry(exporter: SnapshotExporter) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(exporter)
    return reg


def exposition(snap: Snapshot) -> str:
    """The /metrics text of one snapshot (for tests and `export --prom`-style uses)."""
    exp = SnapshotExporter()
    exp.update(snap)
    return generate_latest(registry(exp)).decode()


def exported_families() -> set[str]:
    """Every fixed family name as exposed (with prefix, without _total)."""
    return {PREFIX + f.name for f in metrics.METRICS}
