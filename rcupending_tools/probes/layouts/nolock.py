"""The layout of bpf/nolock.bpf.c on this kernel: where the per-CPU preempt count lives (the
context of a call), the inner function of 6.18+, the memcg cause of failures."""

from __future__ import annotations

from ...kernel import KernelInfo
from .common import Layout, addr, symbol_range


def nolock_layout(kernel: KernelInfo, params: list[str] | None, kind: str) -> Layout:
    """Defines for bpf/nolock.bpf.c: where this CPU's preempt count lives (the context of each
    call: task, softirq, hard IRQ, NMI) and what the attach kind cannot see."""
    lay = Layout()
    # x86-64 6.15+: __preempt_count is its own per-CPU variable; before, a pcpu_hot member.
    count = addr(kernel, "__preempt_count")
    if count is None and (hot := addr(kernel, "pcpu_hot")) is not None and kernel.btf:
        off = kernel.btf.member_offset("pcpu_hot", "preempt_count")
        count = None if off is None else hot + off
    pcpu_off = addr(kernel, "__per_cpu_offset")
    if count is None or pcpu_off is None:
        lay.unavailable["context"] = (
            "__preempt_count/__per_cpu_offset not in kallsyms (CONFIG_KALLSYMS_ALL off?)"
        )
    elif (masks := preempt_masks(kernel)) is None:
        lay.unavailable["context"] = "preempt_count layout unknown (__preempt_count not in BTF)"
    else:
        lay.defines.update(
            NOLOCK_PREEMPT_COUNT_ADDR=hex(count),
            NOLOCK_PCPU_OFF_ADDR=hex(pcpu_off),
            NOLOCK_NMI_MASK=hex(masks[0]),
            NOLOCK_HARDIRQ_MASK=hex(masks[1]),
        )
    btf = kernel.btf
    inner_defines(kernel, kind, lay)
    offsets = {}
    if btf is not None:
        offsets = {
            "OFF_TASK_ACTIVE_MEMCG": btf.member_offset("task_struct", "active_memcg"),
            "OFF_MEMCG_CSS_CGROUP": btf.member_offset("mem_cgroup", "css.cgroup"),
            "OFF_CGROUP_KN": btf.member_offset("cgroup", "kn"),
            "OFF_KERNFS_NODE_ID": btf.member_offset("kernfs_node", "id"),
        }
    charge = "__memcg_kmem_charge_page"
    if kind != "fentry":
        lay.unavailable["memcg_cause"] = "needs fexit on __memcg_kmem_charge_page"
    elif btf is None or btf.func_params(charge) is None or kernel.symbol(charge) is None:
        lay.unavailable["memcg_cause"] = f"{charge} not hookable here (absent or not in BTF)"
    elif None in offsets.values():
        missing = ", ".join(k for k, v in offsets.items() if v is None)
        lay.unavailable["memcg_cause"] = f"memcg layout not in BTF ({missing})"
    else:
        lay.defines.update(NOLOCK_MEMCG_CAUSE=None, **offsets)
    if kind == "kprobe":
        why = "a kretprobe sees the return value only (fexit refused)"
        lay.unavailable.update(order=why, nid=why, gfp=why, pages=why)
    elif kind == "tracepoint":
        why = "kmem:mm_page_alloc has no nid and shows the allocator's gfp, not the argument"
        lay.unavailable.update(nid=why, gfp=why)
    elif not params or params[:1] != ["gfp_flags"]:
        lay.unavailable["gfp"] = "no gfp argument before 6.18"
    return lay


NOLOCK_WRAPPER = "alloc_pages_nolock_noprof"
NOLOCK_INNER = "alloc_frozen_pages_nolock_noprof"


def inner_defines(kernel: KernelInfo, kind: str, lay: Layout) -> None:
    """6.18+: also hook alloc_frozen_pages_nolock_noprof, counting only the calls that do not
    come from the wrapper (kmalloc_nolock's slab refills), so each allocation counts once."""
    if kernel.symbol(NOLOCK_INNER) is None:
        return  # 6.15-6.17: one function
    wrapper = symbol_range(kernel, NOLOCK_WRAPPER)
    btf = kernel.btf
    if wrapper is None:
        lay.unavailable["direct_inner_calls"] = f"{NOLOCK_WRAPPER} not in kallsyms"
        return
    if kind == "fentry" and (btf is None or btf.func_params(NOLOCK_INNER) is None):
        lay.unavailable["direct_inner_calls"] = f"{NOLOCK_INNER} not in BTF"
        return
    if kind == "tracepoint":
        return
    lay.defines.update(
        NOLOCK_INNER_SYM=NOLOCK_INNER,
        NOLOCK_WRAPPER_START=hex(wrapper[0]),
        NOLOCK_WRAPPER_END=hex(wrapper[1]),
    )
    if kind == "kprobe":
        lay.kprobes.append(("kretprobe", NOLOCK_INNER, "kretprobe_nolock_inner"))


def preempt_masks(kernel: KernelInfo) -> tuple[int, int] | None:
    """(NMI_MASK, HARDIRQ_MASK) of this kernel's preempt count. Through 6.x an `int` count:
    NMI 0x00f00000, HARDIRQ 0x000f0000. Debian 7.3's is an `unsigned long` (NEED_RESCHED in
    bit 63) with HARDIRQ_DISABLE bits 16-23 below HARDIRQ 0x0f000000 and NMI 0xf0000000
    (include/linux/preempt.h); the BTF type of __preempt_count tells the two apart.
    SOFTIRQ_OFFSET (0x100) is the same in both."""
    btf = kernel.btf
    kind = btf.var_type("__preempt_count") if btf is not None else None
    if kind is None and btf is not None and btf.member_offset("pcpu_hot", "preempt_count"):
        kind = "int"  # before 6.15: a pcpu_hot member, the 6.x layout
    if kind == "int":
        return 0x00F00000, 0x000F0000
    if kind in ("unsigned long", "long unsigned int"):
        return 0xF0000000, 0x0F000000
    return None
