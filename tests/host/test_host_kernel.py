"""Host tier: what this machine's own kernel allows (needs root; tracepoints at least)."""

from __future__ import annotations

import json
import os

import pytest

from rcupending_tools.pipeline.schema import validation_errors
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="host tier needs root")

KNOWN_BLOCK_REASONS = ("BPF tracing programs refused", "kprobes unavailable", "not traceable",
                       "not in BTF", "attach refused")


def test_check_reports_real_status(attachable):
    proc = run_cli("check", "--json", timeout=300)
    out = json.loads(proc.stdout)
    statuses = {p["name"]: p for p in out["probes"]}
    assert set(statuses) == {"kvfree_call_rcu", "rcu_pending_enqueue", "alloc_pages_nolock"}
    blocked = [p for p in out["probes"] if p["status"] == "blocked"]
    assert proc.returncode == (1 if blocked else 0)
    assert out["ok"] is (not blocked)
    for p in blocked:
        assert any(r in p["detail"] for r in KNOWN_BLOCK_REASONS), p
    kv = statuses["kvfree_call_rcu"]
    if kv["status"] == "attached":
        assert kv["mechanism"] in ("fentry", "kprobe")
    else:  # this machine kind: fentry refused, no kprobes (bcc cannot kprobe it either)
        assert kv["status"] == "blocked"
        assert "BPF tracing programs refused" in kv["detail"]
        assert "kprobe:kvfree_call_rcu" not in attachable, (attachable, kv)
    if "tracepoint:kmem:mm_page_alloc" in attachable:  # then the stand-in at least attaches
        assert statuses["alloc_pages_nolock"]["status"] in ("attached", "stand-in"), statuses


def test_check_text_mentions_every_probe():
    proc = run_cli("check", timeout=300)
    for name in ("kvfree_call_rcu", "rcu_pending_enqueue", "alloc_pages_nolock"):
        assert name in proc.stdout
    assert proc.returncode in (0, 1)


def test_collect_gives_valid_snapshots_of_what_attaches(attachable):
    proc = run_cli("collect", "--duration", "1", "--interval", "0.5", "--json", timeout=300)
    if proc.returncode != 0:  # nothing attachable: one clear line, only where bcc agrees
        assert not attachable, (attachable, proc.stderr)
        assert proc.stderr.startswith("rcupending: error: no probe could attach"), proc.stderr
        return
    snaps = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert len(snaps) >= 2
    for s in snaps:
        assert validation_errors(s) == []
    last = snaps[-1]
    for p in last["probes"]:
        family = {"kvfree_call_rcu": "kvfree_rcu", "rcu_pending_enqueue": "rcu_pending",
                  "alloc_pages_nolock": "nolock"}[p["name"]]
        attached = p["status"] in ("attached", "stand-in")
        assert (last[family] is not None) == attached, p
