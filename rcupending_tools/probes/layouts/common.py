"""What every layout shares: the Layout a layout function returns, the per-object tracking
defines, slab object sizes and the grace-period counter (from kallsyms and BTF, never
headers), and symbol ranges."""

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


def addr(kernel: KernelInfo, name: str) -> int | None:
    sym = kernel.symbol(name)
    return sym.address if sym else None


def bytes_defines(kernel: KernelInfo, lay: Layout) -> None:
    """Defines for kmem.bpf.h's slab_lookup(): KASLR bases and struct offsets from BTF, how a
    slab page is recognised; BYTES_UNAVAILABLE (and a reason) when a piece is missing."""
    d = lay.defines
    btf = kernel.btf
    bases = {n: addr(kernel, n) for n in ("page_offset_base", "vmemmap_base", "vmalloc_base")}
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
        folio_order_defines(kernel, lay)
        vmap_defines(kernel, lay)
        d.update(page_header(d))


# The struct page fields kmem.bpf.h reads from a page's header, and their widths in bytes.
HEADER_FIELDS = {"OFF_PAGE_COMPOUND_HEAD": 8, "OFF_SLAB_CACHE": 8, "OFF_PAGE_TYPE": 4,
                 "OFF_PAGE_FLAGS": 8}


def page_header(defines: dict) -> dict[str, int]:
    """PAGE_HDR_FIRST and PAGE_HDR_LEN: the 8-aligned span of struct page holding every
    header field this layout uses, read at once (kmem.bpf.h page_hdr_read)."""
    spans = [(defines[k], defines[k] + width) for k, width in HEADER_FIELDS.items()
             if defines.get(k) is not None]
    first = min(a for a, _ in spans) // 8 * 8
    end = -(-max(b for _, b in spans) // 8) * 8
    if end > defines["PAGE_STRUCT_SIZE"]:
        raise ValueError(f"struct page header fields end at {end}, past the struct")
    return {"PAGE_HDR_FIRST": first, "PAGE_HDR_LEN": end - first}


def folio_order_defines(kernel: KernelInfo, lay: Layout) -> None:
    """Where a large kmalloc's order lives, from its head page: folio._folio_order (a byte
    of the first tail page, up to 6.5; 6.1 also has a _flags_1 there, without the order),
    the low byte of folio._flags_1 (6.6+), or the first tail page's compound_order."""
    btf = kernel.btf
    head_bit = btf.enum_value("PG_head", "pageflags")
    flags = btf.member_offset("page", "flags")
    order = btf.member_offset("folio", "_folio_order")
    if order is None:
        order = btf.member_offset("folio", "_flags_1")
    if order is None and (old := btf.member_offset("page", "compound_order")) is not None:
        order = btf.struct_size("page") + old
    if None in (head_bit, flags, order):
        lay.unavailable["large_kmalloc_bytes"] = "PG_head, page.flags or the folio order " \
            "not in BTF: kmalloc > 8 KiB counts as unsized"
        return
    lay.defines.update(HAVE_FOLIO_ORDER=None, PG_HEAD_BIT=head_bit, OFF_PAGE_FLAGS=flags,
                       OFF_FOLIO_ORDER=order)


# vmap_area's fields as kmem.bpf.h's vmalloc walk reads them at once (struct vmap_walk).
VMAP_WALK_LAYOUT = {("vmap_area", "va_start"): 0, ("vmap_area", "va_end"): 8,
                    ("vmap_area", "rb_node"): 16, ("rb_node", "rb_right"): 8,
                    ("rb_node", "rb_left"): 16}


def vmap_defines(kernel: KernelInfo, lay: Layout) -> None:
    """Where a vmalloc object's area is found (kmem.bpf.h vmalloc_bytes()): the busy tree of
    vmap_nodes[(addr / vmap_zone_size) % nr_vmap_nodes] (6.9+) or vmap_area_root (before),
    and the vm_struct's page count. Static variables: from kallsyms (CONFIG_KALLSYMS_ALL)."""
    btf = kernel.btf
    moved = [f"{s}.{m}" for (s, m), off in VMAP_WALK_LAYOUT.items()
             if btf.member_offset(s, m) != off]
    found = {"OFF_VA_VM": btf.member_offset("vmap_area", "vm"),
             "OFF_VM_NR_PAGES": btf.member_offset("vm_struct", "nr_pages")}
    nodes = {n: addr(kernel, n) for n in ("vmap_nodes", "nr_vmap_nodes", "vmap_zone_size")}
    if all(v is not None for v in nodes.values()):
        found.update(VMAP_NODES_ADDR=nodes["vmap_nodes"], NR_VMAP_NODES_ADDR=nodes["nr_vmap_nodes"],
                     VMAP_ZONE_SIZE_ADDR=nodes["vmap_zone_size"],
                     VMAP_NODE_SIZE=btf.struct_size("vmap_node"),
                     OFF_VMAP_NODE_ROOT=btf.member_offset("vmap_node", "busy.root"))
    else:
        found["VMAP_AREA_ROOT_ADDR"] = addr(kernel, "vmap_area_root")
    missing = [k for k, v in found.items() if v is None]
    if moved or missing:
        lay.unavailable["vmalloc_bytes"] = (
            f"vmalloc objects count unsized: {', '.join(moved + missing)} "
            f"{'moved' if moved else 'not found'} (kallsyms/BTF)")
        return
    lay.defines.update({k: hex(v) if k.endswith("_ADDR") else v for k, v in found.items()},
                       HAVE_VMAP_LOOKUP=None)


def gp_seq_define(kernel: KernelInfo, lay: Layout) -> None:
    """RCU_GP_SEQ_ADDR: rcu_state.gp_seq_polled (5.19+), the counter get_state_synchronize_rcu()
    cookies come from, which every grace period advances, normal or expedited (poll_state_*()
    take either, and so do krc and rcu_pending); else rcu_state.gp_seq, normal ones only."""
    btf = kernel.btf
    rcu_state = addr(kernel, "rcu_state")
    gp_off = polled = None
    if btf is not None:
        gp_off = polled = btf.member_offset("rcu_state", "gp_seq_polled")
        if gp_off is None:
            gp_off = btf.member_offset("rcu_state", "gp_seq")
    if rcu_state is not None and gp_off is not None:
        lay.defines["RCU_GP_SEQ_ADDR"] = hex(rcu_state + gp_off)
        if polled is not None:  # every grace period moves it: kvfree's size memo relies on it
            lay.defines["RCU_GP_SEQ_POLLED"] = None
    else:
        lay.unavailable["latency_gps"] = "rcu_state not in kallsyms (CONFIG_KALLSYMS_ALL off?)"


def hookable(kernel: KernelInfo, kind: str):  # noqa: ANN202
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


def symbol_range(kernel: KernelInfo, name: str) -> tuple[int, int] | None:
    """[start, end) of text symbol `name`: up to the next text symbol's address."""
    sym = kernel.symbol(name)
    if sym is None:
        return None
    addrs, _ = kernel._text_symbols
    i = bisect.bisect_right(addrs, sym.address)
    return (sym.address, addrs[i]) if i < len(addrs) else None
