"""Kernel layout for the BPF side, from the running kernel's kallsyms and BTF (never headers).

`kvfree_layout()` turns what this kernel has into -D defines for bpf/kvfree_rcu.bpf.c: symbol
addresses (KASLR bases, rcu_state), struct offsets, how a slab page is recognised, and which
free paths exist to hook. Missing pieces become `unavailable` reasons, not guesses.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ... import config
from ...kernel import KernelInfo

Defines = dict[str, str | int | None]


@dataclass
class Layout:
    defines: Defines = field(default_factory=dict)
    # (mechanism, symbol, fn_name) for the kprobe fallback's extra attach points
    kprobes: list[tuple[str, str, str]] = field(default_factory=list)
    # kprobes the fentry variant needs too (what fentry cannot read)
    fentry_kprobes: list[tuple[str, str, str]] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> reason
    facts: dict[str, str] = field(default_factory=dict)  # what was found, e.g. the backend


def tracking_defines(lay: Layout) -> None:
    """The per-object map's size (TRACK_MAX) and sampling (SAMPLE_MASK) from the environment."""
    if (cap := config.track_max()) is not None:
        lay.defines["TRACK_MAX"] = cap  # objects over it count as untracked
    if (n := config.sample_one_in()) is not None:
        lay.defines["SAMPLE_MASK"] = n - 1  # others count as untracked (and unsampled)
        lay.facts["sample_one_in"] = str(n)


def _addr(kernel: KernelInfo, name: str) -> int | None:
    sym = kernel.symbol(name)
    return sym.address if sym else None


def kvfree_layout(kernel: KernelInfo, params: list[str] | None, kind: str) -> Layout:
    """Defines for bpf/kvfree_rcu.bpf.c on this kernel; `kind` is "fentry" or "kprobe"."""
    lay = Layout()
    d = lay.defines
    tracking_defines(lay)
    version = kernel.version
    if (params and params[1:2] == ["func"]) or (params is None and version < (6, 3)):
        d["KVFREE_ARGS_OFFSET"] = None  # 6.1: (head, func) with func = offset of the head
    btf = kernel.btf

    bytes_defines(kernel, lay)

    gp_seq_define(kernel, lay)
    have = _hookable(kernel, kind)

    enqueue_sym = kernel.clone_name("kvfree_call_rcu") or "kvfree_call_rcu"
    lay.kprobes += [("kretprobe", enqueue_sym, "kretprobe_kvfree_call_rcu"),
                    ("kprobe", "synchronize_rcu", "kprobe_synchronize_rcu")]
    bnode_nr = btf.member_offset("kvfree_rcu_bulk_data", "nr_records") if btf else None
    bnode_rec = btf.member_offset("kvfree_rcu_bulk_data", "records") if btf else None
    if have("kvfree_rcu_bulk") and None not in (bnode_nr, bnode_rec):
        d.update(HAVE_KVFREE_RCU_BULK=None, OFF_BNODE_NR=bnode_nr, OFF_BNODE_RECORDS=bnode_rec)
        lay.kprobes.append(("kprobe", "kvfree_rcu_bulk", "kprobe_ctx_bulk"))
    if have("kvfree_rcu_list"):
        d["HAVE_KVFREE_RCU_LIST"] = None  # its kfree()s are seen at the kmem:kfree tracepoint
        lay.kprobes += [("kprobe", "kvfree_rcu_list", "kprobe_kvfree_rcu_list"),
                        ("kretprobe", "kvfree_rcu_list", "kretprobe_list_exit")]
    if "HAVE_KVFREE_RCU_BULK" not in d and have("kfree_rcu_work"):
        d["HAVE_KFREE_RCU_WORK_CTX"] = None  # 6.1: the work frees everything itself
        # fentry cannot read these functions' (const) void pointers: kprobes in both modes
        frees = [("kprobe", "kmem_cache_free_bulk", "kprobe_kmem_cache_free_bulk"),
                 ("kprobe", "vfree", "kprobe_vfree")]
        lay.kprobes += [("kprobe", "kfree_rcu_work", "kprobe_ctx_bulk"),
                        ("kretprobe", "kfree_rcu_work", "kretprobe_list_exit"), *frees]
        lay.fentry_kprobes += frees
    lay.facts["backend"] = kvfree_backend(kernel)
    if lay.facts["backend"] == "rcu_pending":
        _pending_backend_defines(kernel, lay)
    elif "HAVE_KVFREE_RCU_BULK" not in d and "HAVE_KFREE_RCU_WORK_CTX" not in d:
        lay.unavailable["frees"] = "neither kvfree_rcu_bulk nor kfree_rcu_work can be hooked"

    if kernel.symbol("__kfree_rcu_sheaf") is None:
        lay.unavailable["sheaf"] = "no kfree_rcu sheaf bypass in this kernel (it arrived in 6.18)"
    elif not (have("__kfree_rcu_sheaf") and have("rcu_free_sheaf") and btf is not None):
        lay.unavailable["sheaf"] = "__kfree_rcu_sheaf/rcu_free_sheaf not hookable here"
    else:
        size = btf.member_offset("slab_sheaf", "size")
        objects = btf.member_offset("slab_sheaf", "objects")
        head = btf.member_offset("slab_sheaf", "rcu_head")
        if None in (size, objects, head):
            lay.unavailable["sheaf"] = "struct slab_sheaf layout not in BTF"
        elif kind != "fentry":
            lay.unavailable["sheaf"] = "the sheaf path needs fexit (kprobe fallback in use)"
        else:
            # rcu_free_sheaf() gets &sheaf->rcu_head; offsets are relative to it.
            d.update(
                HAVE_KFREE_RCU_SHEAF=None,
                OFF_SHEAF_SIZE=size - head,
                OFF_SHEAF_OBJECTS=objects - head,
            )
            if have("rcu_free_sheaf_nobarn"):
                d["HAVE_RCU_FREE_SHEAF_NOBARN"] = None
            if len(btf.func_params("__kfree_rcu_sheaf") or []) == 3:
                d["SHEAF_FREE_FLAGS_ARG"] = None  # 7.x: (s, obj, free_flags); ret is 4th
    _extras(lay, kind, have, kernel)
    return lay


def bytes_defines(kernel: KernelInfo, lay: Layout) -> None:
    """Defines for kmem.bpf.h's slab_lookup(): KASLR bases and struct offsets from BTF, how a
    slab page is recognised; BYTES_UNAVAILABLE (and a reason) when a piece is missing."""
    d = lay.defines
    btf = kernel.btf
    bases = {n: _addr(kernel, n) for n in ("page_offset_base", "vmemmap_base", "vmalloc_base")}
    offsets = {}
    if btf is not None:
        offsets = {
            "PAGE_STRUCT_SIZE": btf.struct_size("page"),
            # 7.x renamed it compound_info (a head pointer, or a mask with HVO)
            "OFF_PAGE_COMPOUND_HEAD": btf.member_offset("page", "compound_head")
            if btf.member_offset("page", "compound_head") is not None
            else btf.member_offset("page", "compound_info"),
            "OFF_SLAB_CACHE": btf.member_offset("slab", "slab_cache"),
            "OFF_KMEM_CACHE_SIZE": btf.member_offset("kmem_cache", "size"),
        }
    missing = [k for k, v in {**bases, **offsets}.items() if v is None]
    if btf is None or missing:
        why = "no kernel BTF" if btf is None else f"missing {', '.join(missing)} (kallsyms/BTF)"
        lay.unavailable["bytes"] = why
        d["BYTES_UNAVAILABLE"] = None
    else:
        d.update(
            PAGE_OFFSET_BASE_ADDR=hex(bases["page_offset_base"]),
            VMEMMAP_BASE_ADDR=hex(bases["vmemmap_base"]),
            VMALLOC_BASE_ADDR=hex(bases["vmalloc_base"]),
            **{k: v for k, v in offsets.items()},
        )
        slab_type = btf.enum_value("PGTY_slab", "pagetype")
        slab_bit = btf.enum_value("PG_slab", "pageflags")
        if slab_type is not None:
            d.update(
                SLAB_BY_PAGE_TYPE=None,
                SLAB_TYPE=slab_type,
                OFF_PAGE_TYPE=btf.member_offset("page", "page_type"),
            )
        elif slab_bit is not None:
            d.update(
                SLAB_BY_FLAG=None,
                SLAB_FLAG_BIT=slab_bit,
                OFF_PAGE_FLAGS=btf.member_offset("page", "flags"),
            )
        else:
            lay.unavailable["slab_check"] = "neither PGTY_slab nor PG_slab in BTF"


def gp_seq_define(kernel: KernelInfo, lay: Layout) -> None:
    """RCU_GP_SEQ_ADDR: rcu_state.gp_seq, the counter normal-RCU cookies come from."""
    btf = kernel.btf
    rcu_state = _addr(kernel, "rcu_state")
    gp_off = btf.member_offset("rcu_state", "gp_seq") if btf is not None else None
    if rcu_state is not None and gp_off is not None:
        lay.defines["RCU_GP_SEQ_ADDR"] = hex(rcu_state + gp_off)
    else:
        lay.unavailable["latency_gps"] = "rcu_state not in kallsyms (CONFIG_KALLSYMS_ALL off?)"


def _hookable(kernel: KernelInfo, kind: str):  # noqa: ANN202
    """have(sym): the function exists and, for fentry, is a BTF function (not a clone)."""
    btf = kernel.btf

    def have(sym: str) -> bool:
        return kernel.symbol(sym) is not None and (
            kind != "fentry"
            or (
                btf is not None
                and btf.func_params(sym) is not None
                and "." not in (kernel.clone_name(sym) or "")
            )
        )

    return have


# A patched kernel whose kvfree_call_rcu() enqueues on an rcu_pending (the seed's patch 9/9):
# the enqueue is an always-inline __rcu_pending_enqueue(), and objects are freed by
# __process_finished_items() (kfree_bulk() per radix node, kvfree() per list object).
PENDING_KVFREE_SYMBOL = "kvfree_rcu_pending"  # the static struct rcu_pending behind kvfree_rcu
KRC_FUNCTIONS = ("kvfree_rcu_bulk", "kfree_rcu_work", "kfree_rcu_monitor")


def kvfree_backend(kernel: KernelInfo) -> str:
    """"rcu_pending" when kvfree_rcu() is backed by rcu_pending, else "krc" (the kernel's own
    batching, with the sheaf bypass where it exists)."""
    return "rcu_pending" if _pending_backend(kernel) else "krc"


def _pending_backend(kernel: KernelInfo) -> bool:
    if kernel.symbol(PENDING_KVFREE_SYMBOL) is not None:
        return True
    has_krc = any(kernel.symbol(f) is not None for f in KRC_FUNCTIONS)
    return not has_krc and kernel.symbol("__process_finished_items") is not None


def _pending_backend_defines(kernel: KernelInfo, lay: Layout) -> None:
    btf = kernel.btf
    off = btf.member_offset("rcu_pending", "process") if btf is not None else None
    proc = kernel.clone_name("__process_finished_items")
    if off is None or proc is None:
        lay.unavailable["frees"] = "rcu_pending backend: struct rcu_pending or " \
            "__process_finished_items not found (BTF/kallsyms)"
        return
    lay.defines.update(HAVE_PENDING_BACKEND=None, OFF_PENDING_PROCESS=off)
    # kprobes in both modes: fentry cannot read kfree_bulk()'s and vfree()'s const pointers
    hooks = [
        ("kprobe", proc, "kprobe_pending_process_enter"),
        ("kretprobe", proc, "kretprobe_pending_process_exit"),
        ("kprobe", "kmem_cache_free_bulk", "kprobe_kmem_cache_free_bulk"),
        ("kprobe", "vfree", "kprobe_vfree"),
    ]
    lay.kprobes += hooks
    lay.fentry_kprobes += hooks
    lay.unavailable["pre_attach_list"] = (
        "rcu_pending backend: list-path frees of objects enqueued before attach are not "
        "counted (the headless rcu_head kfree() looks alike)"
    )


# Known rcu_pending process callbacks (pending, obj): the objects they get have waited out
# their grace period. The lab module's (kernel/lab-6.12/module) and bcachefs's key cache.
PROCESS_CALLBACKS = ("rcupending_lab_process", "__bkey_cached_free")


def pending_layout(kernel: KernelInfo, params: list[str] | None, kind: str) -> Layout:
    """Defines and extra kprobes for bpf/rcu_pending.bpf.c on this kernel."""
    lay = Layout()
    d = lay.defines
    tracking_defines(lay)
    btf = kernel.btf
    bytes_defines(kernel, lay)
    gp_seq_define(kernel, lay)

    def off(struct: str, member: str) -> int | None:
        return btf.member_offset(struct, member) if btf is not None else None

    srcu, process = off("rcu_pending", "srcu"), off("rcu_pending", "process")
    # Without BTF: the layout every rcu_pending copy has had ({p, srcu, process} pointers).
    d.update(OFF_PENDING_SRCU=8 if srcu is None else srcu,
             OFF_PENDING_PROCESS=16 if process is None else process)
    sup, sgp = off("srcu_struct", "srcu_sup"), off("srcu_usage", "srcu_gp_seq")
    if None in (sup, sgp):
        lay.unavailable["latency_gps_srcu"] = "srcu_struct.srcu_sup / srcu_usage.srcu_gp_seq " \
            "not in BTF"
    else:
        d.update(OFF_SRCU_SUP=sup, OFF_SRCU_GP_SEQ=sgp)

    hooks: list[tuple[str, str, str]] = []
    parent = off("rcu_pending_pcpu", "parent")
    if (sym := kernel.clone_name("rcu_pending_enqueue_list")) and parent is not None:
        d.update(HAVE_ENQUEUE_LIST=None, OFF_PCPU_PARENT=parent)
        hooks.append(("kprobe", sym, "kprobe_pending_enqueue_list"))
    else:
        lay.unavailable["list_fallback"] = "rcu_pending_enqueue_list or struct " \
            "rcu_pending_pcpu not found (inlined, or no BTF)"
    for name in ("rcu_pending_dequeue", "rcu_pending_dequeue_from_all"):
        if sym := kernel.clone_name(name):
            hooks.append(("kretprobe", sym, "kretprobe_pending_dequeue"))
    if sym := kernel.clone_name("__process_finished_items"):
        d["HAVE_PROCESS_FINISHED"] = None
        hooks += [("kprobe", sym, "kprobe_pending_process_run"),
                  ("kretprobe", sym, "kretprobe_pending_process_run")]
    else:
        lay.unavailable["runs"] = "__process_finished_items not in kallsyms (inlined)"
    callbacks = [c for c in PROCESS_CALLBACKS if kernel.symbol(c) is not None]
    hooks += [("kprobe", c, "kprobe_pending_processed") for c in callbacks]
    lay.facts["process_callbacks"] = ",".join(callbacks)
    if not callbacks:
        lay.unavailable["processed"] = "no known process callback in this kernel " \
            f"({', '.join(PROCESS_CALLBACKS)}): enqueued objects are not followed to processing"
    lay.kprobes += hooks
    lay.fentry_kprobes += hooks
    return lay


# Optional fentry-only metrics: define -> (functions it hooks, metric name in `unavailable`).
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "HAVE_PHASES": (("queue_rcu_work", "kfree_rcu_work"), "phases"),
    "HAVE_GP_DURATION": (("rcu_gp_init", "rcu_gp_cleanup"), "gp_duration"),
    "HAVE_KVFREE_BARRIER": (("kvfree_rcu_barrier",), "barrier"),
    "HAVE_SHRINK_SCAN": (("kfree_rcu_shrink_scan",), "shrinker"),
    "HAVE_PAGE_REFILL": (("fill_page_cache_func",), "page_refill"),
    "HAVE_KFREE_NOLOCK": (("kfree_call_rcu_nolock",), "kfree_rcu_nolock"),
    "HAVE_DEFER_KFREE": (("defer_kfree_rcu",), "kfree_rcu_nolock_deferred"),
}


def _extras(lay: Layout, kind: str, have, kernel: KernelInfo) -> None:  # noqa: ANN001
    """Counters and durations hooked by fentry/fexit where this kernel has the functions."""
    for define, (funcs, metric) in EXTRAS.items():
        if kind != "fentry":
            lay.unavailable[metric] = "needs fentry/fexit (kprobe fallback in use)"
            continue
        absent = [f for f in funcs if kernel.symbol(f) is None]
        unhookable = [f for f in funcs if f not in absent and not have(f)]
        if absent:
            lay.unavailable[metric] = f"{', '.join(absent)} not in this kernel"
        elif unhookable:
            lay.unavailable[metric] = (
                f"{', '.join(unhookable)} not hookable here (not in BTF, or a compiler clone)"
            )
        else:
            lay.defines[define] = None



def nolock_layout(kernel: KernelInfo, params: list[str] | None, kind: str) -> Layout:
    """Defines for bpf/nolock.bpf.c: where this CPU's preempt count lives (the context of each
    call: task, softirq, hard IRQ, NMI) and what the attach kind cannot see."""
    lay = Layout()
    # x86-64 6.15+: __preempt_count is its own per-CPU variable; before, a pcpu_hot member.
    count = _addr(kernel, "__preempt_count")
    if count is None and (hot := _addr(kernel, "pcpu_hot")) is not None and kernel.btf:
        off = kernel.btf.member_offset("pcpu_hot", "preempt_count")
        count = None if off is None else hot + off
    pcpu_off = _addr(kernel, "__per_cpu_offset")
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


def symbol_range(kernel: KernelInfo, name: str) -> tuple[int, int] | None:
    """[start, end) of text symbol `name`: up to the next text symbol's address."""
    sym = kernel.symbol(name)
    if sym is None:
        return None
    addrs, _ = kernel._text_symbols
    i = bisect.bisect_right(addrs, sym.address)
    return (sym.address, addrs[i]) if i < len(addrs) else None


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
