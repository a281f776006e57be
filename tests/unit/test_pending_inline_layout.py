"""The kvfree layout's text ranges (kallsyms faked): rcu_pending's inline frees, list callers."""

from __future__ import annotations

from pathlib import Path

from rcupending_tools.kernel import KernelInfo
from rcupending_tools.probes.layouts import kvfree
from rcupending_tools.probes.layouts.common import Layout


def kernel(tmp_path: Path, lines: str) -> KernelInfo:
    path = tmp_path / "kallsyms"
    path.write_text(lines)
    return KernelInfo(kallsyms_path=path)


SYMS = ("ffffffff811e4040 t rcu_pending_enqueue_list\n"
        "ffffffff811e41e0 t __pfx_rcu_pending_pcpu_dequeue\n"
        "ffffffff811e4bf0 T kvfree_call_rcu_pending\n"
        "ffffffff811e5060 T __pfx_kvfree_rcu_pending_barrier\n")


def test_each_function_is_its_text_up_to_the_next_symbol(tmp_path):
    lay = Layout()
    lay.defines["HAVE_PENDING_BACKEND"] = None
    kvfree._pending_inline_callers(kernel(tmp_path, SYMS), lay)
    assert lay.defines["PENDING_INLINE_A_START"] == "0xffffffff811e4bf0"  # the lab's System.map
    assert lay.defines["PENDING_INLINE_A_END"] == "0xffffffff811e5060"
    assert lay.defines["PENDING_INLINE_B_START"] == "0xffffffff811e4040"
    assert lay.defines["PENDING_INLINE_B_END"] == "0xffffffff811e41e0"


def test_nothing_without_the_backend_and_a_fact_without_the_symbols(tmp_path):
    lay = Layout()
    kvfree._pending_inline_callers(kernel(tmp_path, SYMS), lay)
    assert not any(k.startswith("PENDING_INLINE") for k in lay.defines)
    lay.defines["HAVE_PENDING_BACKEND"] = None
    kvfree._pending_inline_callers(kernel(tmp_path, "ffffffff81000000 T other\n"), lay)
    assert not any(k.startswith("PENDING_INLINE") for k in lay.defines)
    assert "not counted" in lay.facts["pending_inline_frees"]


def test_one_function_found_leaves_the_second_range_empty(tmp_path):
    """The BPF's CALLER_IN() reads both ranges: B is 0 to 0 (matches nothing) when only one
    of the functions is in kallsyms, as for a list path of one function (LIST_CALLER_*)."""
    lay = Layout()
    lay.defines["HAVE_KVFREE_RCU_LIST"] = None
    syms = "ffffffff81100000 t kvfree_rcu_list\nffffffff81100200 t kvfree_rcu_bulk\n"
    kvfree._list_callers(kernel(tmp_path, syms), lay)
    assert lay.defines["LIST_CALLER_A_START"] == "0xffffffff81100000"
    assert lay.defines["LIST_CALLER_A_END"] == "0xffffffff81100200"
    assert lay.defines["LIST_CALLER_B_START"] == lay.defines["LIST_CALLER_B_END"] == "0x0"
