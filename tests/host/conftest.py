"""Host tier fixtures: what this kernel lets any BPF program attach, asked without the tool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def _bcc_attaches(text: str) -> bool:
    from bcc import BPF  # Debian's bcc, directly: not the tool's loader

    try:
        b = BPF(text=text.encode())
    except Exception:  # noqa: BLE001 - any refusal (compile, load, attach) means "no"
        return False
    b.cleanup()
    return True


@pytest.fixture(scope="session")
def attachable() -> list[str]:
    """Hooks a minimal bcc program attaches to on this kernel, of those the tool can use:
    kvfree_call_rcu by kprobe, the kmem:mm_page_alloc tracepoint (the nolock stand-in). When
    this is not empty, a command that attaches "nothing" is wrong, not excused."""
    if os.geteuid() != 0:
        return []
    out = []
    if any((t / "events" / "kmem" / "mm_page_alloc").is_dir() for t in TRACEFS) and \
            _bcc_attaches("TRACEPOINT_PROBE(kmem, mm_page_alloc) { return 0; }"):
        out.append("tracepoint:kmem:mm_page_alloc")
    kallsyms = Path("/proc/kallsyms").read_text()
    if " kvfree_call_rcu\n" in kallsyms and _bcc_attaches(
            "int kprobe__kvfree_call_rcu(void *ctx) { return 0; }"):
        out.append("kprobe:kvfree_call_rcu")
    return out
