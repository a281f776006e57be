"""Host tier: every probe file compiles with bcc under the define sets the layouts produce,
including those only VMs (or patched kernels) attach: a C error shows here in seconds, not
after a VM boot. kprobe builds compile without loading; fentry builds compile, then the load
may be refused (this sandbox: EPERM), which is not a compile error."""

from __future__ import annotations

import os
from unittest import mock

import pytest

from rcupending_tools.kernel import KernelInfo
from rcupending_tools.probes import bpfload
from rcupending_tools.probes import layouts as layout
from rcupending_tools.probes.layouts import common

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="host tier needs root")


def host_bytes_defines() -> dict:
    """This kernel's BTF layout. The data symbols a kallsyms without CONFIG_KALLSYMS_ALL lacks
    (this sandbox's) get a stand-in address: the code compiles the same, and nothing here
    runs it."""
    real = common.addr
    with mock.patch.object(common, "addr", lambda k, n: real(k, n) or 0xFFFFFFFF82000000):
        lay = layout.Layout()
        layout.bytes_defines(KernelInfo(), lay)
        layout.gp_seq_define(KernelInfo(), lay)
    assert "BYTES_UNAVAILABLE" not in lay.defines, lay.unavailable
    assert "HAVE_VMAP_LOOKUP" in lay.defines, lay.unavailable
    return lay.defines


def before_vmap_nodes(defines: dict) -> dict:
    """The same, as a kernel before 6.9 (one vmap_area_root, no vmap_nodes) lays it out."""
    nodes = ("VMAP_NODES_ADDR", "NR_VMAP_NODES_ADDR", "VMAP_ZONE_SIZE_ADDR", "VMAP_NODE_SIZE",
             "OFF_VMAP_NODE_ROOT")
    return {**{k: v for k, v in defines.items() if k not in nodes},
            "VMAP_AREA_ROOT_ADDR": "0xffffffff82000000"}


KVFREE_EXTRAS = {
    "krc 6.3+": {"HAVE_KVFREE_RCU_BULK": None, "OFF_BNODE_NR": 24, "OFF_BNODE_RECORDS": 32,
                 "HAVE_KVFREE_RCU_LIST": None, "KVFREE_BY_KPROBE": None,
                 "LIST_CALLER_A_START": "0xffffffff81000000",
                 "LIST_CALLER_A_END": "0xffffffff81000400",
                 "LIST_CALLER_B_START": "0xffffffff81001000",
                 "LIST_CALLER_B_END": "0xffffffff81001400"},
    "6.1 work ctx": {"KVFREE_ARGS_OFFSET": None, "HAVE_KFREE_RCU_WORK_CTX": None,
                     "VMAP_AREA_ROOT": None},
    "rcu_pending backend, sampled": {"HAVE_PENDING_BACKEND": None, "OFF_PENDING_PROCESS": 16,
                                     "SAMPLE_MASK": 7, "TRACK_MAX": 1024},
    "rcu_pending backend, inline frees": {
        "HAVE_PENDING_BACKEND": None, "OFF_PENDING_PROCESS": 16, "KVFREE_BY_KPROBE": None,
        "PENDING_INLINE_A_START": "0xffffffff81002000",
        "PENDING_INLINE_A_END": "0xffffffff81002400",
        "PENDING_INLINE_B_START": "0xffffffff81003000",
        "PENDING_INLINE_B_END": "0xffffffff81003400"},
}
PENDING = {"OFF_PENDING_SRCU": 8, "OFF_PENDING_PROCESS": 16, "HAVE_ENQUEUE_LIST": None,
           "OFF_PCPU_PARENT": 0, "HAVE_PROCESS_FINISHED": None, "OFF_SRCU_SUP": 8,
           "OFF_SRCU_GP_SEQ": 16}


def compile_ok(bpf_file: str, defines: dict, kind: str) -> None:
    try:
        loaded = bpfload.load(bpf_file, defines, kind)
    except bpfload.LoadError as e:
        assert "compile error" not in e.reason and "verifier" not in e.reason, e.reason
        assert kind == "fentry", e.reason  # kprobe builds load nothing until attached
        return
    loaded.close()


@pytest.mark.parametrize("extra", list(KVFREE_EXTRAS))
def test_kvfree_program_compiles(extra):
    defines = {"KVFREE_SYM": "kvfree_call_rcu", "KVFREE_KPROBE": None, **host_bytes_defines(),
               **KVFREE_EXTRAS[extra]}
    if defines.pop("VMAP_AREA_ROOT", False) is None:
        defines = before_vmap_nodes(defines)
    compile_ok("kvfree_rcu.bpf.c", defines, "kprobe")


FENTRY_EXTRAS = {
    "6.1 args offset": {"KVFREE_ARGS_OFFSET": None, "HAVE_KFREE_RCU_WORK_CTX": None},
    "6.1 list and vfree callers": {"KVFREE_ARGS_OFFSET": None, "HAVE_KFREE_RCU_WORK_CTX": None,
                                   "KVFREE_BY_KPROBE": None,
                                   "LIST_CALLER_A_START": "0xffffffff81000000",
                                   "LIST_CALLER_A_END": "0xffffffff81000400",
                                   "LIST_CALLER_B_START": "0x0", "LIST_CALLER_B_END": "0x0"},
    "6.12 phases": {"HAVE_PHASES": None, "HAVE_GP_DURATION": None},
    "6.12 bulk page by kprobe": {"HAVE_KVFREE_RCU_BULK": None, "OFF_BNODE_NR": 8,
                                 "OFF_BNODE_RECORDS": 16, "BULK_BY_KPROBE": None,
                                 "BULK_CHUNK": 256, "HAVE_PHASES": None},
    "7.3 sheaves, nolock": {"HAVE_KFREE_RCU_SHEAF": None, "OFF_SHEAF_SIZE": 0,
                            "OFF_SHEAF_OBJECTS": 8, "SHEAF_FREE_FLAGS_ARG": None,
                            "HAVE_KFREE_NOLOCK": None, "HAVE_DEFER_KFREE": None,
                            "HAVE_RCU_FREE_SHEAF_NOBARN": None},
}


@pytest.mark.parametrize("extra", list(FENTRY_EXTRAS))
def test_kvfree_fentry_build_compiles(extra):
    defines = {"KVFREE_SYM": "kvfree_call_rcu", "KVFREE_FENTRY": None, **host_bytes_defines(),
               **FENTRY_EXTRAS[extra]}
    compile_ok("kvfree_rcu.bpf.c", defines, "fentry")


@pytest.mark.parametrize("sample", [None, 3])
def test_rcu_pending_program_compiles(sample):
    defines = {"PENDING_SYM": "rcu_pending_enqueue", "PENDING_KPROBE": None,
               **host_bytes_defines(), **PENDING}
    if sample:
        defines["SAMPLE_MASK"] = sample
    compile_ok("rcu_pending.bpf.c", defines, "kprobe")


def test_backend_cost_program_compiles_and_its_tracepoints_load():
    """bpf/backend_cost.bpf.c (compare's callbacks and metadata): bcc loads its kmem
    tracepoint programs at compile time, so the verifier sees the site-range loop here."""
    compile_ok("backend_cost.bpf.c", {}, "kprobe")
