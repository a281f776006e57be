"""stress/oracle.py: the kernel's kmem:kmalloc figures beside the tool's (synthetic maps)."""

from __future__ import annotations

from types import SimpleNamespace

from rcupending_tools.probes.bpfload import Loaded
from rcupending_tools.stress import oracle
from rcupending_tools.surfaces.text import oracle_lines

SITES = {0x100: "ip_options_get", 0x200: "kernfs_rename_ns", 0x300: "sock_alloc"}


class Kernel:
    def ksym_at(self, addr: int) -> str | None:
        return SITES.get(addr)


def loaded(rows: list[tuple[int, int, int, int]]) -> Loaded:
    items = [(SimpleNamespace(tgid=t, call_site=c), SimpleNamespace(count=n, bytes_alloc=b))
             for t, c, n, b in rows]
    return Loaded(bpf={"kmalloc_sites": SimpleNamespace(items=lambda: items)}, kind="tracepoint")


def kv(enqueued: int, nbytes: int, headless: int = 0, hbytes: int = 0) -> dict:
    return {"by_stress": {"enqueued": enqueued, "enqueued_bytes": nbytes,
                          "enqueued_headless": headless, "enqueued_headless_bytes": hbytes}}


EXPECTED = {"pids": [10, 11], "sockets_with_options": 8, "kvfree_rcu": {"enqueued": 1000}}


def test_ip_options_enqueues_are_allocations_less_first_sets():
    lo = loaded([(10, 0x100, 504, 504 * 64), (11, 0x100, 504, 504 * 64),
                 (12, 0x100, 9, 9 * 64),  # another process: not the stress's
                 (10, 0x300, 3, 3 * 512)])  # another call site
    fig = oracle.figures(lo, Kernel(), EXPECTED, headless=False)
    assert (fig["allocations"], fig["slot"], fig["enqueued"]) == (1008, 64, 1000)
    assert fig["enqueued_bytes"] == 64000 and fig["one_slot_size"]
    assert oracle.compare(fig, kv(1000, 64000), False)["match"] is True
    bad = oracle.compare(fig, kv(1000, 0), False)  # bytes the tool did not see
    assert bad["match"] is False and bad["kernel"]["enqueued_bytes"] == 64000
    text = "\n".join(oracle_lines(fig | bad))
    assert "kmem:kmalloc at ip_options_get" in text and "DIFFER" in text


def test_headless_and_unavailable():
    exp = {"pids": [10], "sockets_with_options": 0, "kvfree_rcu": {"enqueued": 20}}
    fig = oracle.figures(loaded([(10, 0x200, 20, 20 * 32)]), Kernel(), exp, headless=True)
    assert (fig["enqueued"], fig["enqueued_bytes"]) == (20, 640)
    assert oracle.compare(fig, kv(21, 700, 20, 640), True)["match"] is True
    before_615 = dict(exp, kvfree_rcu={"enqueued": 0})  # kfree_const(): nothing enqueued
    assert oracle.figures(loaded([(10, 0x200, 20, 640)]), Kernel(), before_615,
                          True)["enqueued"] == 0
    gone = oracle.figures("tracepoints refused", Kernel(), exp, headless=True)
    assert oracle.compare(gone, kv(1, 1), True) == {"match": None}
    assert oracle_lines(gone) == ["  kernel     unavailable: tracepoints refused"]
