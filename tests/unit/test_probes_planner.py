"""The probe table and the planner's binding logic, on recorded kallsyms and synthetic BTF."""

from __future__ import annotations

from pathlib import Path

import pytest

from rcupending_tools import config
from rcupending_tools.kernel import KernelInfo, parse_kallsyms, parse_version
from rcupending_tools.probes import planner
from rcupending_tools.probes.table import KVFREE_CALL_RCU, NOLOCK_ALLOC, PROBES, RCU_PENDING_ENQUEUE


class FakeBtf:
    def __init__(self, funcs: dict[str, list[str]]) -> None:
        self.funcs = funcs

    def func_params(self, name: str):
        p = self.funcs.get(name)
        return None if p is None else [(n, "void *") for n in p]

    def member_offset(self, struct: str, path: str) -> int | None:
        return None  # no struct layouts in these tests


def kernel(tmp_path: Path, release: str, syms: list[str], btf: dict | None) -> KernelInfo:
    ks = tmp_path / "kallsyms"
    ks.write_text("".join(f"ffffffff8100{i * 256:04x} T {s}\n" for i, s in enumerate(syms)))
    btf_dir = tmp_path / "btf"
    btf_dir.mkdir()
    k = KernelInfo(release=release, kallsyms_path=ks, btf_dir=btf_dir)
    if btf is not None:
        (btf_dir / "vmlinux").write_bytes(b"")
        k.__dict__["btf"] = FakeBtf(btf)
    return k


def test_table_is_consistent():
    names = [p.name for p in PROBES]
    assert len(names) == len(set(names))
    for p in PROBES:
        assert p.candidates and p.absent_reason
        assert (Path(__file__).parents[2] / "bpf" / p.bpf_file).exists()
        for c in p.candidates:
            assert c.until is None or c.since < c.until


def test_parse_version():
    assert parse_version("6.12.57+deb13-amd64") == (6, 12)
    assert parse_version("7.3.4-amd64") == (7, 3)


def test_kvfree_signatures_follow_btf(tmp_path):
    k61 = kernel(
        tmp_path, "6.1.0-56-amd64", ["kvfree_call_rcu"], {"kvfree_call_rcu": ["head", "func"]}
    )
    b = planner.bind(KVFREE_CALL_RCU, k61)
    assert isinstance(b, planner.Binding)
    assert b.candidate.params == ("head", "func") and b.params == ["head", "func"]
    (tmp_path / "b").mkdir()
    k612 = kernel(
        tmp_path / "b", "6.12.1", ["kvfree_call_rcu"], {"kvfree_call_rcu": ["head", "ptr"]}
    )
    b = planner.bind(KVFREE_CALL_RCU, k612)
    assert b.candidate.params == ("head", "ptr")


def test_nolock_gfp_argument_sets_define(tmp_path):
    k = kernel(
        tmp_path,
        "6.18.1",
        ["alloc_pages_nolock_noprof"],
        {"alloc_pages_nolock_noprof": ["gfp_flags", "nid", "order"]},
    )
    b = planner.bind(NOLOCK_ALLOC, k)
    kinds = planner.attempts(b, k)
    assert [str(kind) for kind, *_ in kinds] == ["fentry", "kprobe"]
    fentry_defines = kinds[0][1]
    assert fentry_defines["NOLOCK_SYM"] == "alloc_pages_nolock_noprof"
    assert "NOLOCK_GFP_ARG" in fentry_defines and "NOLOCK_FENTRY" in fentry_defines
    assert kinds[1][2] == [("kretprobe", "alloc_pages_nolock_noprof", "kretprobe_nolock")]


def test_nolock_6_16_has_no_gfp(tmp_path):
    k = kernel(
        tmp_path,
        "6.16.3",
        ["alloc_pages_nolock_noprof"],
        {"alloc_pages_nolock_noprof": ["nid", "order"]},
    )
    b = planner.bind(NOLOCK_ALLOC, k)
    assert "NOLOCK_GFP_ARG" not in planner.attempts(b, k)[0][1]


@pytest.mark.parametrize(
    "release,reason",
    [
        ("6.1.0-56-amd64", "arrived in 6.15"),
        ("6.12.57+deb13-amd64", "arrived in 6.15"),
    ],
)
def test_nolock_absent_with_version_reason(tmp_path, release, reason):
    k = kernel(tmp_path, release, ["kvfree_call_rcu"], {})
    st = planner.bind(NOLOCK_ALLOC, k)
    assert isinstance(st, planner.ProbeStatus)
    assert st.status is planner.Status.ABSENT
    major, minor = parse_version(release)
    assert reason in st.detail and f"this kernel is {major}.{minor}" in st.detail


def test_rcu_pending_absent_on_6_18(tmp_path):
    k = kernel(tmp_path, "6.18.4", ["kvfree_call_rcu"], {})
    st = planner.bind(RCU_PENDING_ENQUEUE, k)
    assert st.status is planner.Status.ABSENT
    assert "6.12-6.17" in st.detail and "6.18" in st.detail


def test_rcu_pending_in_module_blocks_fentry(tmp_path):
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffffc0001000 t rcu_pending_enqueue\t[bcachefs]\n")
    btf_dir = tmp_path / "btf"
    btf_dir.mkdir()
    k = KernelInfo(release="6.12.5", kallsyms_path=ks, btf_dir=btf_dir)
    b = planner.bind(RCU_PENDING_ENQUEUE, k)
    assert b.module == "bcachefs"
    assert "no kernel BTF" in planner._fentry_precheck(b, k)


def test_isra_clone_is_found_but_not_fentry(tmp_path):
    k = kernel(
        tmp_path,
        "6.12.5",
        ["rcu_pending_enqueue.isra.0"],
        {"rcu_pending_enqueue": ["pending", "obj"]},
    )
    b = planner.bind(RCU_PENDING_ENQUEUE, k)
    assert b.symbol == "rcu_pending_enqueue.isra.0"
    assert "clone" in planner._fentry_precheck(b, k)


def test_parse_kallsyms_modules():
    syms = parse_kallsyms("ffffffff81000000 T foo\nffffffffc0000000 t bar\t[mod]\n")
    assert syms["foo"][0].module is None and syms["bar"][0].module == "mod"


def test_ksym_at_finds_containing_symbol(tmp_path):
    k = kernel(tmp_path, "6.12.1", ["a", "b", "c"], None)
    base = k.kallsyms["b"][0].address
    assert k.ksym_at(base) == "b" and k.ksym_at(base + 1) == "b"
    assert k.ksym_at(base - 1) == "a"
    assert k.ksym_at(0) is None


class LayoutBtf(FakeBtf):
    """Enough BTF for kvfree_layout to run: functions only, no struct offsets."""

    def struct_size(self, name: str):
        return None

    def member_offset(self, struct: str, member: str):
        return None

    def enum_value(self, name: str, enum: str):
        return None


def test_optional_metrics_name_their_reason(tmp_path):
    from rcupending_tools.probes import layouts as layout

    funcs = ["kvfree_call_rcu", "queue_rcu_work", "kfree_rcu_work", "rcu_gp_init",
             "rcu_gp_cleanup", "kfree_rcu_shrink_scan"]
    k = kernel(tmp_path, "6.12.1", funcs + ["fill_page_cache_func.isra.0"], None)
    k.__dict__["btf"] = LayoutBtf({f: ["a"] for f in funcs})
    lay = layout.kvfree_layout(k, ["head", "ptr"], "fentry")
    for define in ("HAVE_PHASES", "HAVE_GP_DURATION", "HAVE_SHRINK_SCAN"):
        assert define in lay.defines, define
    assert lay.unavailable["barrier"] == "kvfree_rcu_barrier not in this kernel"
    assert "not hookable" in lay.unavailable["page_refill"]  # a compiler clone only
    assert "arrived in 6.18" in lay.unavailable["sheaf"]
    kp = layout.kvfree_layout(k, ["head", "ptr"], "kprobe")
    assert "HAVE_PHASES" not in kp.defines and "kprobe fallback" in kp.unavailable["phases"]


def test_sampling_and_cap_defines(monkeypatch):
    from rcupending_tools.probes import layouts as layout

    monkeypatch.setenv(config.SAMPLE_ENV, "16")
    monkeypatch.setenv(config.TRACK_MAX_ENV, "128")
    lay = layout.Layout()
    layout.tracking_defines(lay)
    assert lay.defines == {"TRACK_MAX": 128, "SAMPLE_MASK": 15}
    assert lay.facts == {"sample_one_in": "16"}
    monkeypatch.setenv(config.SAMPLE_ENV, "1")  # every object: no sampling code at all
    lay = layout.Layout()
    layout.tracking_defines(lay)
    assert "SAMPLE_MASK" not in lay.defines


def test_nolock_6_18_hooks_wrapper_and_inner_once_each(tmp_path):
    """6.18+: the wrapper calls alloc_frozen_pages_nolock_noprof (or has it inlined) and
    kmalloc_nolock calls it directly: both are hooked, and the inner program skips calls whose
    stack is inside the wrapper's text (its range from kallsyms)."""
    params = {s: ["gfp_flags", "nid", "order"] for s in
              ("alloc_pages_nolock_noprof", "alloc_frozen_pages_nolock_noprof")}
    k = kernel(tmp_path, "6.18.15+deb13-amd64",
               ["alloc_frozen_pages_nolock_noprof", "alloc_pages_nolock_noprof", "after"], params)
    b = planner.bind(NOLOCK_ALLOC, k)
    assert b.symbol == "alloc_pages_nolock_noprof"
    fentry, kprobe = planner.attempts(b, k)[:2]
    d = fentry[1]
    assert d["NOLOCK_SYM"] == "alloc_pages_nolock_noprof" and "NOLOCK_GFP_ARG" in d
    assert d["NOLOCK_INNER_SYM"] == "alloc_frozen_pages_nolock_noprof"
    # the wrapper is the 2nd symbol of the fake kallsyms (0x100 apart): [0x...0100, 0x...0200)
    assert (d["NOLOCK_WRAPPER_START"], d["NOLOCK_WRAPPER_END"]) == (
        "0xffffffff81000100", "0xffffffff81000200")
    assert kprobe[2] == [("kretprobe", "alloc_pages_nolock_noprof", "kretprobe_nolock"),
                         ("kretprobe", "alloc_frozen_pages_nolock_noprof",
                          "kretprobe_nolock_inner")]
    # no per-CPU preempt count or memcg layout in these kallsyms/BTF: named unavailable
    assert "context" in fentry[3] and "memcg_cause" in fentry[3] and "gfp" not in fentry[3]
    assert {"order", "nid", "gfp", "pages"} <= set(kprobe[3])


def test_nolock_6_17_has_one_function_and_no_gfp(tmp_path):
    k = kernel(tmp_path, "6.17.13+deb13-amd64", ["alloc_pages_nolock_noprof"],
               {"alloc_pages_nolock_noprof": ["nid", "order"]})
    b = planner.bind(NOLOCK_ALLOC, k)
    assert b.symbol == "alloc_pages_nolock_noprof"
    fentry = planner.attempts(b, k)[0]
    assert fentry[3]["gfp"] == "no gfp argument before 6.18"


class MaskBtf(FakeBtf):
    def __init__(self, var: str | None) -> None:
        super().__init__({})
        self.var = var

    def var_type(self, name: str) -> str | None:
        return self.var if name == "__preempt_count" else None


@pytest.mark.parametrize("var,masks", [
    ("int", (0x00F00000, 0x000F0000)),  # 6.15-6.18: NMI above HARDIRQ in the low 24 bits
    ("unsigned long", (0xF0000000, 0x0F000000)),  # 7.3: HARDIRQ_DISABLE bits 16-23 below
    (None, None),
])
def test_preempt_count_layout_follows_the_btf_type(tmp_path, var, masks):
    from rcupending_tools.probes import layouts as layout

    k = kernel(tmp_path, "7.3.4", ["__preempt_count", "__per_cpu_offset"], {})
    k.__dict__["btf"] = MaskBtf(var)
    assert layout.preempt_masks(k) == masks
    lay = layout.nolock_layout(k, ["gfp_flags", "nid", "order"], "fentry")
    if masks is None:
        assert "context" in lay.unavailable
    else:
        assert lay.defines["NOLOCK_HARDIRQ_MASK"] == hex(masks[1])


def test_the_page_header_read_spans_every_field_the_layout_uses():
    """One read of struct page serves the lookups: it must cover each field (6.12: flags at 0,
    compound_head and slab_cache at 8, page_type at 48) and stay inside the struct."""
    from rcupending_tools.probes.layouts.common import page_header

    d612 = {"OFF_PAGE_COMPOUND_HEAD": 8, "OFF_SLAB_CACHE": 8, "OFF_PAGE_TYPE": 48,
            "OFF_PAGE_FLAGS": 0, "PAGE_STRUCT_SIZE": 64}
    assert page_header(d612) == {"PAGE_HDR_FIRST": 0, "PAGE_HDR_LEN": 56}
    no_flags = {**d612, "OFF_PAGE_FLAGS": None}  # no folio order: flags never read
    assert page_header(no_flags) == {"PAGE_HDR_FIRST": 8, "PAGE_HDR_LEN": 48}
    with pytest.raises(ValueError, match="past the struct"):
        page_header({**d612, "OFF_PAGE_TYPE": 62})


VMAP_612 = {("vmap_area", "va_start"): 0, ("vmap_area", "va_end"): 8, ("vmap_area", "rb_node"): 16,
            ("rb_node", "rb_right"): 8, ("rb_node", "rb_left"): 16, ("vmap_area", "vm"): 48,
            ("vm_struct", "nr_pages"): 44, ("vmap_node", "busy.root"): 0}


def vmap_layout(offsets: dict, symbols: set[str]):
    from types import SimpleNamespace

    from rcupending_tools.probes import layouts as layout

    btf = SimpleNamespace(member_offset=lambda s, m: offsets.get((s, m)),
                          struct_size=lambda n: 6280 if n == "vmap_node" else None)
    names = sorted(symbols)
    k = SimpleNamespace(btf=btf, symbol=lambda n: SimpleNamespace(
        address=0xFFFFFFFF82000000 + 8 * names.index(n)) if n in symbols else None)
    lay = layout.Layout()
    layout.common.vmap_defines(k, lay)
    return lay


def test_vmalloc_area_lookup_follows_the_kernel_generation():
    nodes = {"vmap_nodes", "nr_vmap_nodes", "vmap_zone_size"}
    d = vmap_layout(VMAP_612, nodes).defines
    assert "HAVE_VMAP_LOOKUP" in d and "VMAP_AREA_ROOT_ADDR" not in d
    assert (d["VMAP_NODE_SIZE"], d["OFF_VMAP_NODE_ROOT"], d["OFF_VA_VM"]) == (6280, 0, 48)
    assert d["VMAP_NODES_ADDR"] == hex(0xFFFFFFFF82000000 + 8)  # sorted: nr_vmap_nodes first
    old = vmap_layout(VMAP_612, {"vmap_area_root"}).defines  # before 6.9: one tree
    assert "VMAP_NODES_ADDR" not in old and old["VMAP_AREA_ROOT_ADDR"] == "0xffffffff82000000"


@pytest.mark.parametrize("change, reason", [
    ({("vmap_area", "rb_node"): 24}, "vmap_area.rb_node moved"),  # the one read's layout
    ({("vm_struct", "nr_pages"): None}, "OFF_VM_NR_PAGES not found"),
])
def test_vmalloc_bytes_say_why_they_are_unavailable(change, reason):
    lay = vmap_layout({**VMAP_612, **change}, {"vmap_area_root"})
    assert "HAVE_VMAP_LOOKUP" not in lay.defines
    assert reason in lay.unavailable["vmalloc_bytes"]
    assert "VMAP_AREA_ROOT_ADDR" in vmap_layout(VMAP_612, set()).unavailable["vmalloc_bytes"]
