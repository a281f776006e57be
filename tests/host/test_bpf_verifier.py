"""Host tier: this kernel's verifier accepts kvfree_rcu's free-side loops at full length (a krc
bulk page holds up to 510 records, a sheaf up to its capacity) and its enqueue side (the tracking
map's insert and the process's pending slot), and the tracking map reads back
whole in one batch. The loops run inside a tracepoint program here (this host refuses fentry),
the same inlined code the fentry and kprobe programs carry."""

from __future__ import annotations

import ctypes
import os

import pytest

from rcupending_tools.families import base
from rcupending_tools.kernel import KernelInfo
from rcupending_tools.probes import bpfload
from rcupending_tools.probes.layouts import kvfree_layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="host tier needs root")

# the loop helpers of the fentry build, compiled without its fentry programs
CALLERS = r"""
TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    u64 rec = bpf_get_current_pid_tgid();
    on_bulk_records(rec, rec & 1023, 0);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_enter_getpgid)
{
    on_sheaf(bpf_get_current_pid_tgid());
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_enter_getsid)
{
    on_enqueue(bpf_get_current_pid_tgid(), false, 64, 0, NULL, MEMO_KVFREE);
    return 0;
}
"""


@pytest.fixture(scope="module")
def module():
    bcc = bpfload.import_bcc()
    lay = kvfree_layout(KernelInfo(), ["head", "ptr"], "fentry")
    defines = {k: v for k, v in lay.defines.items() if not k.startswith("HAVE_")}
    defines |= {"HAVE_KVFREE_RCU_BULK": None, "OFF_BNODE_NR": 0, "OFF_BNODE_RECORDS": 16,
                "HAVE_KFREE_RCU_SHEAF": None, "OFF_SHEAF_SIZE": 0, "OFF_SHEAF_OBJECTS": 8,
                "BULK_CHUNK": 512}
    src = bpfload.program_text("kvfree_rcu.bpf.c")
    # no fentry programs here: their bodies stay, as plain functions
    src = src.replace("KFUNC_PROBE(", "static int __host_only_").replace(
        "KRETFUNC_PROBE(", "static int __host_only_ret_")
    if (h := bpfload.find_headers()) is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(h)
    cflags = [f"-I{bpfload.BPF_DIR}", "-Wno-macro-redefined", "-Wno-unused-function"] + [
        f"-D{k}" if v is None else f"-D{k}={v}" for k, v in defines.items()]
    with bpfload.captured_stderr() as err:
        try:
            b = bcc.BPF(text=(src + CALLERS).encode(), cflags=cflags)
        except Exception as e:  # the compile error, with its log
            pytest.fail(f"{e}\n{(err[0] if err else '')[-3000:]}")
    yield b
    b.cleanup()


@pytest.mark.parametrize("prog", ["sys_enter_getppid", "sys_enter_getpgid", "sys_enter_getsid"])
def test_the_free_loops_pass_the_verifier_at_full_length(module, prog):
    bcc = bpfload.import_bcc()
    with bpfload.captured_stderr() as err:
        try:
            module.load_func(f"tracepoint__syscalls__{prog}".encode(), bcc.BPF.TRACEPOINT)
        except Exception as e:
            log = (err[0] if err else "")[-2000:]
            pytest.fail(f"{prog}: {e}\n{log}")


def test_the_tracking_map_reads_back_whole_in_one_batch(module):
    """What user space wrote (tgid, bytes per address) comes back, every entry once."""
    table = module["kv_inflight"]
    n = min(int(table.max_entries), 20000)
    for i in range(n):
        v = table.Leaf()
        v.bytes, v.tgid, v.flags = 64 + i % 7, 100 + i % 13, i % 3
        table[ctypes.c_uint64(0xFFFF888000000000 + 64 * i)] = v
    got = base.batch_values(table)
    assert len(got) == n
    assert int(got["bytes"].sum()) == sum(64 + i % 7 for i in range(n))
    assert sorted(map(int, got["tgid"]))[::1000] == sorted(100 + i % 13 for i in range(n))[::1000]
    table.clear()
    assert len(base.batch_values(table)) == 0
