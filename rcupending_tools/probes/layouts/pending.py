"""The layout of bpf/rcu_pending.bpf.c on this kernel: struct offsets, the list fallback,
dequeues, processing runs and the known process callbacks."""

from __future__ import annotations

from ...kernel import KernelInfo
from .common import Layout, bytes_defines, gp_seq_define, tracking_defines

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
