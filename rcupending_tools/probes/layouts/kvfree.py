"""The layout of bpf/kvfree_rcu.bpf.c on this kernel: which free paths exist to hook, the
kvfree_rcu() backend (krc, or rcu_pending on a patched kernel), signature and offsets."""

from __future__ import annotations

from ... import config
from ...kernel import KernelInfo, kprobes_available
from .common import (
    Layout,
    bytes_defines,
    gp_seq_define,
    hookable,
    symbol_range,
    tracking_defines,
)


def kvfree_layout(kernel: KernelInfo, params: list[str] | None, kind: str) -> Layout:
    """Defines for bpf/kvfree_rcu.bpf.c on this kernel; `kind` is "fentry" or "kprobe"."""
    lay = Layout()
    d = lay.defines
    tracking_defines(lay)
    d["KV_NCPUS"] = kernel.possible_cpus  # slots of the per-CPU split by enqueue CPU
    d.pop("SAMPLE_MASK", None)  # kvfree_rcu samples at run time (families/kvfree.py arm())
    lay.facts["sample_one_in"] = str(config.kvfree_sample_one_in())
    lay.facts["settle_s"] = str(config.settle_seconds())
    if config.pending_peak():
        d["PENDING_PEAK"] = None
    version = kernel.version
    if (params and params[1:2] == ["func"]) or (params is None and version < (6, 3)):
        d["KVFREE_ARGS_OFFSET"] = None  # 6.1: (head, func) with func = offset of the head
    btf = kernel.btf

    bytes_defines(kernel, lay)

    gp_seq_define(kernel, lay)
    have = hookable(kernel, kind)

    enqueue_sym = kernel.clone_name("kvfree_call_rcu") or "kvfree_call_rcu"
    if (span := symbol_range(kernel, enqueue_sym)) is not None:  # inline frees: the caller
        d.update(KVFREE_START=hex(span[0]), KVFREE_END=hex(span[1]))
    lay.kprobes += [("kretprobe", enqueue_sym, "kretprobe_kvfree_call_rcu"),
                    ("kprobe", "synchronize_rcu", "kprobe_synchronize_rcu")]
    bnode_nr = btf.member_offset("kvfree_rcu_bulk_data", "nr_records") if btf else None
    bnode_rec = btf.member_offset("kvfree_rcu_bulk_data", "records") if btf else None
    if have("kvfree_rcu_bulk") and None not in (bnode_nr, bnode_rec):
        d.update(HAVE_KVFREE_RCU_BULK=None, OFF_BNODE_NR=bnode_nr, OFF_BNODE_RECORDS=bnode_rec)
        lay.kprobes.append(("kprobe", "kvfree_rcu_bulk", "kprobe_ctx_bulk"))
        if kind == "fentry" and kprobes_available():  # see BULK_BY_KPROBE in the .bpf.c
            d.update(BULK_BY_KPROBE=None, BULK_CHUNK=256)
            lay.fentry_kprobes += [("kprobe", "kvfree_rcu_bulk", "kprobe_ctx_bulk"),
                                   ("kprobe", "kvfree_rcu_bulk", "kprobe_ctx_bulk_hi")]
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
    _list_frees(kernel, lay, kind)

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


# A list path, by its define, and the function whose own kvfree() calls free its objects:
# krc's channel 3 (6.3+), 6.1's kfree_rcu_work, rcu_pending's __process_finished_items.
LIST_CALLERS = {"HAVE_KVFREE_RCU_LIST": "kvfree_rcu_list",
                "HAVE_KFREE_RCU_WORK_CTX": "kfree_rcu_work",
                "HAVE_PENDING_BACKEND": "__process_finished_items"}
LIST_PATHS = tuple(LIST_CALLERS)


def _list_frees(kernel: KernelInfo, lay: Layout, kind: str) -> None:
    """A list path's objects are its kvfree() calls: a kprobe on kvfree() where kprobes exist
    (KVFREE_BY_KPROBE), else the kmem:kfree tracepoint, which also sees the path's other
    kfree()s (a vmalloc object's vm_struct, rcu_pending's radix nodes and headless rcu_heads)."""
    if not any(k in lay.defines for k in LIST_PATHS):
        return
    if kind == "kprobe" or kprobes_available():
        lay.defines["KVFREE_BY_KPROBE"] = None
        hook = ("kprobe", "kvfree", "kprobe_kvfree")
        lay.kprobes.append(hook)
        lay.fentry_kprobes.append(hook)
        _list_callers(kernel, lay)
        _pending_inline_callers(kernel, lay)
    else:
        lay.facts["list_frees"] = "kmem:kfree (no kprobes: a vmalloc list object's " \
            "vm_struct counts in its place)"


def _text_ranges(kernel: KernelInfo, lay: Layout, names: list[str], prefix: str) -> int:
    """{prefix}_{A,B}_{START,END}: the text of the first two of `names` that kallsyms has
    (B empty, 0 to 0, when only one has), for the BPF's caller_in(); how many it found."""
    spans = [span for name in names
             if (span := symbol_range(kernel, kernel.clone_name(name) or name)) is not None]
    if spans:
        for tag, (start, end) in zip("AB", [*spans[:2], (0, 0)][:2], strict=True):
            lay.defines.update({f"{prefix}_{tag}_START": hex(start),
                                f"{prefix}_{tag}_END": hex(end)})
    return len(spans)


def _list_callers(kernel: KernelInfo, lay: Layout) -> None:
    """LIST_CALLER_*: the text of this kernel's list functions, so that only their own kvfree()
    calls count, not one nested in a vmalloc object's vfree() (which kvfree()s its page array)
    inside the same path."""
    names = [name for define, name in LIST_CALLERS.items() if define in lay.defines]
    _text_ranges(kernel, lay, names, "LIST_CALLER")


# rcu_pending backend: the functions whose kvfree() of a headless object frees it inside its
# own enqueue (its grace period ended while the enqueue slept for memory).
PENDING_INLINE_CALLERS = ["kvfree_call_rcu_pending", "rcu_pending_enqueue_list"]


def _pending_inline_callers(kernel: KernelInfo, lay: Layout) -> None:
    """PENDING_INLINE_*: their text, for kprobe_kvfree (HAVE_PENDING_BACKEND)."""
    if "HAVE_PENDING_BACKEND" not in lay.defines:
        return
    if not _text_ranges(kernel, lay, PENDING_INLINE_CALLERS, "PENDING_INLINE"):
        lay.facts["pending_inline_frees"] = "not counted: kvfree_call_rcu_pending and " \
            "rcu_pending_enqueue_list not in kallsyms"


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
