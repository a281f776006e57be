"""Host tier: the benchmark's syscall counter (a perf counter on raw_syscalls:sys_enter for
this thread) against calls whose number the test knows, and a snapshot's own count (README
OVERHEAD: a target of at most 50 per snapshot)."""

from __future__ import annotations

import os
import time

from rcupending_tools.bench.syscalls import SyscallCounter
from rcupending_tools.pipeline.session import open_live


def test_the_counter_counts_exactly_the_calls_made():
    with SyscallCounter() as c:
        for n in (0, 1, 37, 500):
            before = c.count()
            for _ in range(n):
                os.getppid()  # one system call each, never cached by libc
            assert c.count() - before - 1 == n  # less the second count's own read()


def test_a_snapshot_of_what_attaches_here_takes_few_system_calls():
    """Every fd's fdinfo was read for self_cost (about 380 calls per snapshot on this host):
    only the programs' own are read now."""
    session = open_live()
    try:
        session.read()
        with SyscallCounter() as c:
            counts = []
            for _ in range(3):
                time.sleep(0.2)
                before = c.count()
                session.read()
                counts.append(c.count() - before - 1)
        programs = len(session.source.programs())
    finally:
        session.close()
    assert min(counts) <= 50, (counts, f"{programs} programs")


def test_bpf_prog_info_says_what_fdinfo_says():
    """The statistics read by bpf(BPF_OBJ_GET_INFO_BY_FD) at fixed UAPI offsets equal the
    kernel's own fdinfo text of the same program, and the offsets are this kernel's BTF's."""
    from rcupending_tools.kernel import KernelInfo
    from rcupending_tools.pipeline import selfcost

    btf = KernelInfo().btf
    for key, (off, _) in selfcost.PROG_INFO.items():
        field = {"prog_type": "type", "prog_id": "id"}.get(key, key)
        assert btf.member_offset("bpf_prog_info", field) == off, key
    session = open_live()
    try:
        fd = selfcost.enable_stats()
        try:
            session.read()
            for p in session.source.programs():
                via_info = selfcost._bpf_prog_info(p.fd)
                text = selfcost.parse_fdinfo(selfcost.read_proc(f"/proc/self/fdinfo/{p.fd}"))
                assert via_info is not None
                for key in ("prog_type", "prog_id", "recursion_misses"):
                    assert via_info[key] == int(text[key]), (p.name, key)
                # run counts move between the two reads: the later fdinfo is never below
                assert int(text["run_cnt"]) >= int(via_info["run_cnt"]), p.name
        finally:
            selfcost.disable_stats(fd)
    finally:
        session.close()
