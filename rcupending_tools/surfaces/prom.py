"""Prometheus exposition of the latest snapshot (prometheus_client, own registry).

Families and names come from views/metrics.py (`rcupending_` + family). One process serves one
kernel; Prometheus carries a fleet, so there is no aggregation here.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from .. import sanitize
from ..errors import UserError
from ..pipeline.schema import Snapshot
from . import samples as metrics
from .samples import PREFIX


class SnapshotExporter(Collector):
    """Exposes whatever snapshot was last `update()`d (none: only the families' HELP/TYPE);
    after `fail()` it has nothing to expose (the server answers 503)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._cache: dict[str, bytes] = {}  # content type -> body of the current snapshot
        self.failed = threading.Event()
        self.failure = ""

    def update(self, snap: Snapshot) -> None:
        with self._lock:
            self._snap = snap
            self._cache = {}

    def fail(self, why: str) -> None:
        self.failure = why
        self.failed.set()

    def body(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition of the current snapshot in the format `accept` asks for (rendered
        once per snapshot and format, however many scrapers ask)."""
        encoder, ctype = choose_encoder(accept or "")
        with self._lock:
            cached = self._cache.get(ctype)
            cache = self._cache
        if cached is None:
            cached = encoder(registry(self))
            with self._lock:
                if self._cache is cache:
                    self._cache[ctype] = cached
        return cached, ctype

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
                m.add_metric([sanitize.text(s.labels[k]) for k in labels], s.value)
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
        key = tuple(sanitize.text(s.labels.get(k, "")) for k in labels)
        series.setdefault(key, [])
        if s.name.endswith("_bucket"):
            series[key].append((s.labels["le"], s.value))
    for key, buckets in series.items():
        h.add_metric(list(key), buckets, None)
    return h


INDEX = (b"<!doctype html><html><head><title>rcupending</title></head><body>"
         b"<h1>rcupending</h1><p><a href=\"/metrics\">/metrics</a>: memory waiting behind RCU "
         b"(kvfree_rcu, rcu_pending, nolock allocator)</p></body></html>\n")


class _Handler(BaseHTTPRequestHandler):
    """/metrics (200, or 503 once the feed failed), / (a short page), 404 elsewhere."""

    server: MetricsServer
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per scraper
    timeout = 15  # seconds a connection may stay idle (or dribble a request) before closing

    def _send(self, code: int, body: bytes, ctype: str, head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        exporter = self.server.exporter
        if path == "/metrics":
            if exporter.failed.is_set():
                msg = f"rcupending: the feed failed: {exporter.failure}\n".encode(errors="replace")
                self._send(503, msg, "text/plain; charset=utf-8", head)
                return
            body, ctype = exporter.body(self.headers.get("Accept"))
            self._send(200, body, ctype, head)
        elif path in ("/", "/index.html"):
            self._send(200, INDEX, "text/html; charset=utf-8", head)
        else:
            self._send(404, b"not found: try /metrics\n", "text/plain; charset=utf-8", head)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # a scrape every few seconds is not news


class MetricsServer(ThreadingHTTPServer):
    """A thread per connection (daemon), a listen backlog for a burst of scrapers, and
    connections that idle past the handler's timeout closed."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr: tuple, family: int, exporter: SnapshotExporter) -> None:
        self.address_family = family
        self.exporter = exporter
        super().__init__(addr, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away mid-answer is not the server's error

    def shutdown_quietly(self) -> None:
        try:
            self.shutdown()
            self.server_close()
        except OSError:
            pass


def _family(host: str, port: int) -> tuple[int, tuple]:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    family, _, _, _, addr = infos[0]
    return family, addr


def start_server(exporter: SnapshotExporter, host: str, port: int) -> MetricsServer:
    """Serve `exporter` on host:port (IPv4 or IPv6) in a thread; one line when it cannot."""
    family, addr = _family(host, port)
    try:
        server = MetricsServer(addr[:2] if family == socket.AF_INET else addr, family, exporter)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url(server: MetricsServer) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


def exposure_warning(host: str) -> str | None:
    """A warning when `host` is reachable beyond this machine (not loopback)."""
    try:
        addrs = {i[4][0] for i in socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM,
                                                    flags=socket.AI_PASSIVE)}
    except socket.gaierror:
        return None
    wide = sorted(a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if not wide:
        return None
    return (f"listening on {', '.join(wide)}, beyond loopback: anyone who can reach this host "
            "reads its metrics (process names, kernel release); bind 127.0.0.1 or firewall it")


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
