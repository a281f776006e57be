"""`serve`: /metrics and nothing else, 503 (never stale 200s) and exit 1 when the feed fails, 200
concurrent loopback scrapers for 10 s without an error, a warning beyond loopback, IPv6 URLs;
every shown string escaped (Prometheus labels, the report page, text output)."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from rcupending_tools.surfaces import prom, text
from tests.conftest import REPO, run_cli
from tests.unit.surfaces_fixtures import SHIPPED, full_snapshots, write_recording


def start_serve(*args: str, wait: float = 60) -> tuple[subprocess.Popen, str, str]:
    """`serve ARGS --port 0`: the process, its URL and the stderr lines up to it. A serve that
    says nothing for `wait` s is aborted (its Python stack, by faulthandler, in the failure)."""
    proc = subprocess.Popen([sys.executable, "-m", "rcupending_tools.cli", "serve", *args,
                             "--port", "0"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:  # raw reads: select() sees no buffer
        if not select.select([fd], [], [], left)[0]:
            break
        if not (chunk := os.read(fd, 4096)):
            break
        seen += chunk
        text = seen.decode(errors="replace")
        if m := re.search(r"^serving (http://\S+)/metrics.*\n", text, re.M):
            proc.after_serving = text[m.end():]  # read with it: stop() returns it too
            return proc, m.group(1), m.group(0)
    if proc.poll() is None:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
    rest = proc.stderr.read()
    raise AssertionError(f"serve exited {proc.returncode} without serving:\n"
                         + seen.decode(errors="replace") + rest)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    err = getattr(proc, "after_serving", "") + proc.stderr.read()
    assert proc.returncode == 0, err
    return err


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_only_metrics_and_a_page():
    proc, base, _ = start_serve("--replay", str(SHIPPED), "--speed", "0")
    try:
        status, body = get(base + "/metrics")
        assert status == 200 and "rcupending_kvfree_rcu_enqueued_objects_total" in body
        assert get(base + "/")[0] == 200 and "/metrics" in get(base + "/")[1]
        for path in ("/foo", "/metricsx", "/../../etc/passwd", "/metrics/../x"):
            status, body = get(base + path)
            assert status == 404 and "rcupending" not in body, path
        conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        conn.request("HEAD", "/metrics")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
    finally:
        stop(proc)


def test_a_failed_feed_answers_503_and_exits_1(tmp_path):
    exporter = prom.SnapshotExporter()
    exporter.update(full_snapshots(2)[1])
    server = prom.start_server(exporter, "127.0.0.1", 0)
    try:
        url = prom.url(server)
        assert get(url)[0] == 200
        exporter.fail("a snapshot with an absurd time")
        status, body = get(url)
        assert status == 503 and "absurd time" in body and "rcupending_" not in body
    finally:
        server.shutdown_quietly()
    snaps = full_snapshots(5)
    path = write_recording(tmp_path / "r.jsonl", snaps)
    lines = path.read_text().splitlines(keepends=True)
    bad = json.loads(lines[4])
    bad["time"] = 1e20  # schema-valid once; it killed the feed thread and left stale 200s
    lines[4] = json.dumps(bad) + "\n"
    path.write_text("".join(lines))
    proc = run_cli("serve", "--replay", str(path), "--port", "0", "--speed", "0", timeout=60)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("rcupending: error: the feed failed: ") and "line 5" in err[-1]
    assert "Traceback" not in proc.stderr


def test_two_hundred_concurrent_scrapers_for_ten_seconds():
    proc, base, _ = start_serve("--replay", str(SHIPPED), "--speed", "0")
    host, port = base.removeprefix("http://").rsplit(":", 1)
    errors: list[str] = []
    counts = [0] * 200
    end = time.monotonic() + 10
    barrier = threading.Barrier(200)

    def client(i: int) -> None:
        barrier.wait()
        while time.monotonic() < end:
            try:  # a new connection each time: the listen backlog is what this tries
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read()
                conn.close()
                if r.status != 200 or b"rcupending_snapshot_seq" not in body:
                    errors.append(f"status {r.status}")
                counts[i] += 1
            except OSError as e:
                errors.append(repr(e))
            if len(errors) > 50:
                return

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, f"{len(errors)} errors, first: {errors[:3]}"
        assert min(counts) >= 1, "a client never got an answer"
        assert get(base + "/nope")[0] == 404
    finally:
        stop(proc)


def test_warning_beyond_loopback_and_ipv6_urls():
    proc, base, _ = start_serve("--replay", str(SHIPPED), "--speed", "0", "--host", "0.0.0.0")
    try:
        port = base.rsplit(":", 1)[1]
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        err = stop(proc)
    assert "rcupending: warning: listening on 0.0.0.0, beyond loopback" in err
    if not socket.has_ipv6:
        return
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here (the IPv4 half above ran)")
    proc, base, line = start_serve("--replay", str(SHIPPED), "--speed", "0", "--host", "::1")
    try:
        assert re.match(r"http://\[::1\]:\d+$", base), line
        assert get(base + "/metrics")[0] == 200
    finally:
        err = stop(proc)
    assert "warning" not in err


def test_labels_and_text_escape_control_characters(tmp_path):
    s = full_snapshots(3)[-1]
    s["kvfree_rcu"]["by_process"][0]["comm"] = "evil\x1b]2;T\x07\n"
    s["provenance"] = dict(s["provenance"], kernel_release="6.1\x1b[2J")
    exposition = prom.exposition(s)
    assert "\x1b" not in exposition and "\x07" not in exposition
    assert 'comm="evil\\\\x1b]2;T\\\\x07\\\\n"' in exposition  # escaped, then quoted
    out = text.summary(s)
    assert "\x1b" not in out and "6.1\\x1b[2J" in out
    path = write_recording(tmp_path / "r.jsonl", [s])
    proc = run_cli("report", str(path), "-o", str(tmp_path / "rep"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "\x1b" not in page and "6.1\\x1b[2J" in page
