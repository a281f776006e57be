"""--self-cost: BPF_ENABLE_STATS held while the tool runs, per-program run counts and times in
self_cost.programs, consistent reads, schema-valid snapshots."""

from __future__ import annotations

import ctypes
import os
import socket
import struct

import pytest

from rcupending_tools.pipeline import selfcost
from rcupending_tools.pipeline.collector import Collector, RawSample, provenance
from rcupending_tools.pipeline.live import LiveSource
from rcupending_tools.pipeline.schema import validation_errors
from rcupending_tools.surfaces.text import program_lines
from tests.socket_filter import load_socket_filter
from tests.unit.test_selfcost import PROG_FDINFO

SO_ATTACH_BPF = 50


def _fake_proc(tmp_path, fdinfos: dict[int, str]) -> str:
    (tmp_path / "fdinfo").mkdir()
    for fd, text in fdinfos.items():
        (tmp_path / "fdinfo" / str(fd)).write_text(text)
    return str(tmp_path)


def test_program_stats_per_program(tmp_path):
    proc = _fake_proc(
        tmp_path,
        {7: PROG_FDINFO.format(ns=3000, cnt=12), 8: PROG_FDINFO.format(ns=0, cnt=0)},
    )
    progs = [
        selfcost.Program("kvfree_call_rcu", "kfunc__kvfree_call_rcu", 7),
        selfcost.Program("kvfree_call_rcu", "tracepoint__kmem__kfree", 8),
        selfcost.Program("kvfree_call_rcu", "closed_meanwhile", 9),  # no fdinfo: left out
    ]
    got = selfcost.program_stats(progs, stats_on=True, proc=proc)
    assert got == [
        {"probe": "kvfree_call_rcu", "name": "kfunc__kvfree_call_rcu", "prog_id": 311,
         "run_cnt": 12, "run_time_ns": 3000, "avg_ns": 250.0, "recursion_misses": 0},
        {"probe": "kvfree_call_rcu", "name": "tracepoint__kmem__kfree", "prog_id": 311,
         "run_cnt": 0, "run_time_ns": 0, "avg_ns": None, "recursion_misses": 0},
    ]
    assert selfcost.run_counts(progs, proc=proc) == {
        "kfunc__kvfree_call_rcu": 12, "tracepoint__kmem__kfree": 0}
    # stats off and nothing counted: no numbers rather than zeros
    off = selfcost.program_stats(progs[1:], stats_on=False, proc=proc)
    assert off is None
    assert selfcost.program_stats([], stats_on=True, proc=proc) is None


def test_snapshot_with_programs_validates_and_prints():
    progs = [{"probe": "kvfree_call_rcu", "name": "kfunc__kvfree_call_rcu", "prog_id": 5,
              "run_cnt": 10, "run_time_ns": 2500, "avg_ns": 250.0, "recursion_misses": 0}]
    sc = {"cpu_seconds": 0.5, "rss_bytes": 1 << 20, "bpf_run_ns": 2500, "bpf_run_count": 10,
          "bpf_stats": "fd", "programs": progs}
    col = Collector(provenance("6.12.1", "rcupending test"), [], source="synthetic")
    snap = col.update(RawSample(time=1.0, self_cost=sc))
    assert validation_errors(snap) == []
    assert snap["self_cost"]["programs"] == progs
    assert validation_errors(dict(snap, self_cost=dict(sc, programs=None))) == []
    bad = dict(snap, self_cost=dict(sc, bpf_stats="magic"))
    assert any("self_cost" in e for e in validation_errors(bad))
    bad = dict(snap, self_cost=dict(sc, programs=[{"name": "x"}]))
    assert any("self_cost" in e for e in validation_errors(bad))
    lines = program_lines(sc)
    assert "stats by fd" in lines[0]
    assert "kfunc__kvfree_call_rcu" in lines[1] and "avg 250 ns/run" in lines[1]
    assert program_lines(None) == [] and program_lines({"programs": None}) == []


class _Flaky(LiveSource):
    """A source whose program runs move during the first read and then stop."""

    def __init__(self) -> None:
        super().__init__(probes=())
        self.stats_fd = 99
        self.reads = 0
        self.counts = iter([{"p": 1}, {"p": 2}, {"p": 2}, {"p": 2}])

    def programs(self) -> list[selfcost.Program]:
        return []

    def _read_once(self, count_map, progs):  # noqa: ANN001, ANN202
        self.reads += 1
        return RawSample(time=float(self.reads))


def test_read_retries_until_no_program_ran(monkeypatch):
    src = _Flaky()
    monkeypatch.setattr(selfcost, "run_counts", lambda progs: next(src.counts))
    raw = src.read()
    assert src.reads == 2 and raw.time == 2.0  # the first read overlapped a run


def _run_filter_once(fd: int) -> None:
    """Attach the socket filter to a UDP socket on loopback and send it one datagram."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, struct.pack("i", fd))
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"x", rx.getsockname())
    finally:
        tx.close()
        rx.close()


def test_enable_stats_counts_runs_only_while_the_fd_is_held():
    if os.uname().machine != "x86_64":
        pytest.skip("the raw bpf() syscall number is x86-64's")
    with open(selfcost.STATS_SYSCTL) as f:
        if f.read().strip() == "1":
            pytest.skip("kernel.bpf_stats_enabled=1 here: stats are on regardless of the fd")
    fd = load_socket_filter()
    if fd < 0:
        pytest.skip("this kernel refuses BPF_PROG_LOAD here")
    prog = [selfcost.Program("test", "socket_filter", fd)]
    try:
        _run_filter_once(fd)
        assert selfcost.run_counts(prog) == {"socket_filter": 0}  # stats off: not counted
        stats = selfcost.enable_stats()
        try:
            assert os.readlink(f"/proc/self/fd/{stats}") == "anon_inode:bpf-stats"
            _run_filter_once(fd)
            sc = selfcost.sample(prog)
            assert sc["bpf_stats"] == "fd"
            (p,) = sc["programs"]
            assert p["run_cnt"] == 1 and p["run_time_ns"] > 0 and p["avg_ns"] > 0, p
            with open(selfcost.STATS_SYSCTL) as f:
                assert f.read().strip() == "0"  # the fd does not flip the sysctl
        finally:
            selfcost.disable_stats(stats)
        _run_filter_once(fd)
        assert selfcost.run_counts(prog) == {"socket_filter": 1}  # off again
        assert "programs" not in selfcost.sample(prog)
    finally:
        os.close(fd)


def test_enable_stats_refusal_is_one_line(monkeypatch):
    def refuse(*args: object) -> int:
        ctypes.set_errno(22)
        return -1

    monkeypatch.setattr(selfcost, "_syscall", refuse)
    from rcupending_tools.errors import UserError

    with pytest.raises(UserError, match="BPF_ENABLE_STATS refused .EINVAL"):
        selfcost.enable_stats()


def test_bpf_loads_libc_once(monkeypatch):
    """Each bpf() call (one per program per snapshot) reuses libc's syscall(): loading it
    again per call cost CPU for nothing."""
    if selfcost._NR is None:
        pytest.skip(f"no bpf() syscall number for {os.uname().machine}")
    attr = ctypes.create_string_buffer(16)  # BPF_OBJ_GET_INFO_BY_FD of fd -1: refused
    struct.pack_into("<i", attr, 0, -1)
    with pytest.raises(OSError):
        selfcost._bpf(selfcost.BPF_OBJ_GET_INFO_BY_FD, attr)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: pytest.fail("libc loaded again"))
    with pytest.raises(OSError) as e:
        selfcost._bpf(selfcost.BPF_OBJ_GET_INFO_BY_FD, attr)
    assert e.value.errno  # the kernel's errno, carried
