"""Tests for rcupending_tools.btf using synthetic BTF blobs (and the host kernel if present)."""

from __future__ import annotations

import os
import struct
import time

import pytest

from rcupending_tools.kernel.btf import Btf, BtfError

# BTF kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19
INT_SIGNED = 1

HOST_VMLINUX = "/sys/kernel/btf/vmlinux"


class Enc:
    """Tiny BTF encoder. Type ids start at 1 (or after ``base``'s types for split BTF)."""

    def __init__(self, base: Enc | None = None, order: str = "<") -> None:
        self.order = order
        self.base = base
        self.types: list[bytes] = []
        self.strs = bytearray() if base else bytearray(b"\0")
        self.str_start = base.str_start + len(base.strs) if base else 0
        self.start_id = base.start_id + len(base.types) if base else 1
        self._str_cache: dict[str, int] = {}

    def s(self, text: str) -> int:
        """Offset of ``text`` (reusing the base's copy when it has one)."""
        if not text:
            return 0
        if self.base is not None and text in self.base._str_cache:
            return self.base._str_cache[text]
        if text not in self._str_cache:
            self._str_cache[text] = self.str_start + len(self.strs)
            self.strs += text.encode() + b"\0"
        return self._str_cache[text]

    def _add(
        self, name: str, kind: int, vlen: int, size_or_type: int, *extra: int, kflag: bool = False
    ) -> int:
        info = (int(kflag) << 31) | (kind << 24) | vlen
        words = (self.s(name), info, size_or_type, *extra)
        self.types.append(struct.pack(f"{self.order}{len(words)}I", *words))
        return self.start_id + len(self.types) - 1

    def int_(self, name: str, size: int, signed: bool = False, bits: int | None = None) -> int:
        enc = (INT_SIGNED if signed else 0) << 24 | (size * 8 if bits is None else bits)
        return self._add(name, INT, 0, size, enc)

    def ptr(self, target: int) -> int:
        return self._add("", PTR, 0, target)

    def const(self, target: int) -> int:
        return self._add("", CONST, 0, target)

    def volatile(self, target: int) -> int:
        return self._add("", VOLATILE, 0, target)

    def typedef(self, name: str, target: int) -> int:
        return self._add(name, TYPEDEF, 0, target)

    def array(self, elem: int, index: int, n: int) -> int:
        return self._add("", ARRAY, 0, 0, elem, index, n)

    def fwd(self, name: str, union: bool = False) -> int:
        return self._add(name, FWD, 0, 0, kflag=union)

    def composite(
        self,
        name: str,
        size: int,
        members: list[tuple[str, int, int] | tuple[str, int, int, int]],
        union: bool = False,
    ) -> int:
        """members: (name, type, bit_offset[, bitfield_size]); any bitfield size -> kind_flag."""
        kflag = any(len(m) == 4 for m in members)
        extra: list[int] = []
        for m in members:
            off = m[2] | (m[3] << 24 if len(m) == 4 else 0)
            extra += [self.s(m[0]), m[1], off]
        kind = UNION if union else STRUCT
        return self._add(name, kind, len(members), size, *extra, kflag=kflag)

    def func_proto(self, ret: int, params: list[tuple[str, int]]) -> int:
        extra: list[int] = []
        for p_name, p_type in params:
            extra += [self.s(p_name), p_type]
        return self._add("", FUNC_PROTO, len(params), ret, *extra)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self._add(name, FUNC, linkage, proto)

    def var(self, name: str, type_id: int, linkage: int = 1) -> int:
        return self._add(name, VAR, 0, type_id, linkage)

    def enum(self, name: str, values: list[tuple[str, int]]) -> int:
        extra: list[int] = []
        for v_name, val in values:
            extra += [self.s(v_name), val & 0xFFFFFFFF]
        return self._add(name, ENUM, len(values), 4, *extra)

    def datasec(self, name: str, vars_: list[tuple[int, int, int]]) -> int:
        extra = [x for v in vars_ for x in v]
        return self._add(name, DATASEC, len(vars_), 0, *extra)

    def build(self) -> bytes:
        types = b"".join(self.types)
        hdr = struct.pack(
            f"{self.order}HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strs)
        )
        return hdr + types + bytes(self.strs)


def make_base(order: str = "<") -> tuple[Enc, dict[str, int]]:
    e = Enc(order=order)
    t: dict[str, int] = {}
    t["int"] = e.int_("int", 4, signed=True)
    t["uint"] = e.int_("unsigned int", 4)
    t["ulong"] = e.int_("unsigned long", 8)
    t["char"] = e.int_("char", 1, signed=True)
    t["void_p"] = e.ptr(0)
    t["gfp_t"] = e.typedef("gfp_t", t["uint"])
    t["head_fwd"] = e.fwd("rcu_head")
    t["head_p_fwd"] = e.ptr(t["head_fwd"])
    t["cb_proto"] = e.func_proto(0, [("", t["head_p_fwd"])])
    t["cb_p"] = e.ptr(t["cb_proto"])
    t["cb_t"] = e.typedef("rcu_callback_t", t["cb_p"])
    t["rcu_head"] = e.composite(
        "rcu_head", 16, [("next", t["head_p_fwd"], 0), ("func", t["cb_p"], 64)]
    )
    t["head_p"] = e.ptr(t["rcu_head"])
    t["cchar"] = e.const(t["char"])
    t["cchar_p"] = e.ptr(t["cchar"])
    t["char_p"] = e.ptr(t["char"])
    t["char_pp"] = e.ptr(t["char_p"])
    t["char_p_const"] = e.const(t["char_p"])
    t["ulong4"] = e.array(t["ulong"], t["int"], 4)
    t["ulong4_p"] = e.ptr(t["ulong4"])
    t["vint"] = e.volatile(t["int"])
    # struct work_struct { unsigned long data; void (*func)(struct work_struct *); }
    t["work_fwd"] = e.fwd("work_struct")
    t["work_proto"] = e.func_proto(0, [("", e.ptr(t["work_fwd"]))])
    t["work_func_t"] = e.typedef("work_func_t", e.ptr(t["work_proto"]))
    t["work"] = e.composite(
        "work_struct", 16, [("data", t["ulong"], 0), ("func", t["work_func_t"], 64)]
    )
    t["rcu_work"] = e.composite(
        "rcu_work", 32, [("work", t["work"], 0), ("rcu", t["rcu_head"], 128)]
    )
    # struct outer {
    #   int a;                                   // 0
    #   union { struct { int x; int y; }; char *name; };   // 8 (anonymous)
    #   struct rcu_head rh;                     // 24
    #   unsigned long arr[4];                   // 40
    #   unsigned int flag : 3;                  // bitfield at bit 576
    #   const char *const s;                    // 80
    #   volatile int v;                         // 88
    # }
    inner = e.composite("", 8, [("x", t["int"], 0), ("y", t["int"], 32)])
    anon_union = e.composite("", 8, [("", inner, 0), ("name", t["char_p"], 0)], union=True)
    t["outer"] = e.composite(
        "outer",
        96,
        [
            ("a", t["int"], 0),
            ("", anon_union, 64),
            ("rh", t["rcu_head"], 192),
            ("arr", t["ulong4"], 320),
            ("flag", t["uint"], 576, 3),
            ("s", e.const(t["cchar_p"]), 640),
            ("v", t["vint"], 704),
        ],
    )
    t["u"] = e.composite("small_union", 8, [("i", t["int"], 0), ("l", t["ulong"], 0)], union=True)
    proto = e.func_proto(0, [("head", t["head_p"]), ("ptr", t["void_p"])])
    t["kvfree_call_rcu"] = e.func("kvfree_call_rcu", proto)
    params = [("gfp_flags", t["gfp_t"]), ("nid", t["int"]), ("order", t["uint"])]
    proto = e.func_proto(t["head_p"], params)
    t["alloc"] = e.func("alloc_thing", proto)
    t["noargs"] = e.func("noargs", e.func_proto(t["int"], []))
    t["printk"] = e.func("printk", e.func_proto(t["int"], [("fmt", t["cchar_p"]), ("", 0)]))
    t["krc"] = e.var("krc", t["outer"])
    e.datasec(".data..percpu", [(t["krc"], 0, 96)])
    t["color"] = e.enum("color", [("RED", 0), ("BLUE", -1)])
    return e, t


@pytest.fixture(scope="module")
def base() -> Btf:
    e, _ = make_base()
    return Btf.from_bytes(e.build())


def test_func_params_and_return(base: Btf) -> None:
    assert base.func_params("kvfree_call_rcu") == [
        ("head", "struct rcu_head *"),
        ("ptr", "void *"),
    ]
    assert base.func_return("kvfree_call_rcu") == "void"
    assert base.func_params("alloc_thing") == [
        ("gfp_flags", "gfp_t"),
        ("nid", "int"),
        ("order", "unsigned int"),
    ]
    assert base.func_return("alloc_thing") == "struct rcu_head *"
    assert base.func_params("noargs") == []
    assert base.func_return("noargs") == "int"
    assert base.func_params("printk") == [("fmt", "const char *"), ("", "...")]
    assert base.func_params("missing") is None
    assert base.func_return("missing") is None
    # a VAR or struct of that name is not a FUNC
    assert base.func_params("krc") is None
    assert base.func_params("outer") is None


def test_struct_size(base: Btf) -> None:
    assert base.struct_size("rcu_head") == 16
    assert base.struct_size("outer") == 96
    assert base.struct_size("small_union") == 8
    assert base.struct_size("int") is None
    assert base.struct_size("nope") is None


def test_member_offsets(base: Btf) -> None:
    assert base.member_offset("rcu_head", "next") == 0
    assert base.member_offset("rcu_head", "func") == 8
    assert base.member_offset("outer", "a") == 0
    # through anonymous union -> anonymous struct
    assert base.member_offset("outer", "x") == 8
    assert base.member_offset("outer", "y") == 12
    assert base.member_offset("outer", "name") == 8
    assert base.member_offset("outer", "rh") == 24
    assert base.member_offset("outer", "rh.func") == 32
    assert base.member_offset("outer", "arr") == 40
    assert base.member_offset("outer", "s") == 80
    assert base.member_offset("outer", "v") == 88
    assert base.member_offset("rcu_work", "work.func") == 8
    assert base.member_offset("rcu_work", "rcu.func") == 24
    assert base.member_offset("small_union", "l") == 0
    # absent
    assert base.member_offset("outer", "zzz") is None
    assert base.member_offset("outer", "a.b") is None  # a is not a struct
    assert base.member_offset("outer", "rh.zzz") is None
    assert base.member_offset("nope", "a") is None


def test_bitfield_raises(base: Btf) -> None:
    with pytest.raises(BtfError):
        base.member_offset("outer", "flag")
    assert base.member_type("outer", "flag") == "unsigned int"


def test_member_types(base: Btf) -> None:
    assert base.member_type("rcu_head", "func") == "void (*)(struct rcu_head *)"
    assert base.member_type("rcu_head", "next") == "struct rcu_head *"
    assert base.member_type("outer", "name") == "char *"
    assert base.member_type("outer", "x") == "int"
    assert base.member_type("outer", "rh") == "struct rcu_head"
    assert base.member_type("outer", "arr") == "unsigned long[4]"
    assert base.member_type("outer", "s") == "const char *const"
    assert base.member_type("outer", "v") == "volatile int"
    assert base.member_type("rcu_work", "work.func") == "work_func_t"
    assert base.member_type("outer", "zzz") is None


def test_type_strings(base: Btf) -> None:
    _, t = make_base()
    assert base.type_str(0) == "void"
    assert base.type_str(t["char_pp"]) == "char **"
    assert base.type_str(t["cchar_p"]) == "const char *"
    assert base.type_str(t["char_p_const"]) == "char *const"
    assert base.type_str(t["cb_t"]) == "rcu_callback_t"
    assert base.type_str(t["ulong4_p"]) == "unsigned long (*)[4]"
    assert base.type_str(t["color"]) == "enum color"
    assert base.type_str(t["u"]) == "union small_union"


def test_has_var_and_type(base: Btf) -> None:
    assert base.has_var("krc") is True
    assert base.has_var("outer") is False
    assert base.has_var("nope") is False
    assert base.has_type("rcu_head") is True
    assert base.has_type("small_union") is False
    assert base.has_type("small_union", "union") is True
    assert base.has_type("gfp_t", "typedef") is True
    assert base.has_type("gfp_t") is False
    assert base.has_type("color", "enum") is True
    assert base.has_type("kvfree_call_rcu", "func") is True
    assert base.has_type("work_struct", "fwd") is True
    with pytest.raises(ValueError):
        base.has_type("x", "bogus")


def test_big_endian_blob() -> None:
    e, _ = make_base(order=">")
    btf = Btf.from_bytes(e.build())
    assert btf.member_offset("outer", "y") == 12
    assert btf.func_params("kvfree_call_rcu") == [("head", "struct rcu_head *"), ("ptr", "void *")]


def test_split_btf_module(tmp_path) -> None:
    be, t = make_base()
    base_path = tmp_path / "vmlinux"
    base_path.write_bytes(be.build())
    base = Btf.load(base_path)

    me = Enc(base=be)
    # module struct referencing base types (int, struct rcu_head) by base id
    mod_struct = me.composite("mod_obj", 24, [("refs", t["int"], 0), ("rcu", t["rcu_head"], 64)])
    mod_p = me.ptr(mod_struct)
    me.func("mod_free", me.func_proto(t["int"], [("obj", mod_p), ("flags", t["gfp_t"])]))
    me.var("mod_count", t["int"])
    # name reused from base string table ("int" offset is in the base section)
    me.typedef("int", t["int"])
    mod_path = tmp_path / "mod"
    mod_path.write_bytes(me.build())
    assert me.start_id == len(be.types) + 1

    mod = Btf.load(mod_path, base=base)
    assert mod.nr_types == len(me.types)
    assert mod.struct_size("mod_obj") == 24
    assert mod.member_offset("mod_obj", "rcu.func") == 16
    assert mod.member_type("mod_obj", "rcu") == "struct rcu_head"
    assert mod.func_params("mod_free") == [("obj", "struct mod_obj *"), ("flags", "gfp_t")]
    assert mod.func_return("mod_free") == "int"
    assert mod.has_var("mod_count") is True
    assert mod.has_type("int", "typedef") is True
    # base types are visible through the module
    assert mod.func_params("kvfree_call_rcu") == [("head", "struct rcu_head *"), ("ptr", "void *")]
    assert mod.has_var("krc") is True
    # but not the other way round
    assert base.has_type("mod_obj") is False
    assert base.func_params("mod_free") is None

    # without its base, a split blob's type ids / string offsets are out of range
    with pytest.raises(BtfError):
        Btf.from_bytes(me.build()).func_params("mod_free")


def test_malformed() -> None:
    e, _ = make_base()
    good = e.build()
    with pytest.raises(BtfError):
        Btf.from_bytes(b"")
    with pytest.raises(BtfError):
        Btf.from_bytes(b"\x00\x00" + good[2:])  # bad magic
    with pytest.raises(BtfError):
        Btf.from_bytes(good[:-10])  # string section past end
    hdr = bytearray(good[:24])
    struct.pack_into("<I", hdr, 12, struct.unpack_from("<I", good, 12)[0] - 4)  # type_len - 4
    with pytest.raises(BtfError):
        Btf.from_bytes(bytes(hdr) + good[24:])  # last record truncated
    bad_kind = bytearray(good)
    struct.pack_into("<I", bad_kind, 24 + 4, 31 << 24)  # first type: unknown kind 31
    with pytest.raises(BtfError):
        Btf.from_bytes(bytes(bad_kind))


def test_cycles_raise() -> None:
    """Malformed self-referencing types raise BtfError instead of recursing forever."""
    e = Enc()
    e._add("", PTR, 0, 2)  # 1: ptr -> 2
    e._add("", CONST, 0, 1)  # 2: const -> 1
    e._add("", TYPEDEF, 0, 4)  # 3: typedef -> 4
    e._add("t", TYPEDEF, 0, 3)  # 4: typedef -> 3
    e._add("loop", STRUCT, 1, 8, 0, 5, 0)  # 5: struct loop { struct loop; } (anonymous)
    btf = Btf.from_bytes(e.build())
    with pytest.raises(BtfError):
        btf.type_str(1)
    with pytest.raises(BtfError):
        btf.member_offset("loop", "x")
    e._add("cyc", VAR, 0, 99, 1)  # 6: var of a type id past the end
    btf = Btf.from_bytes(e.build())
    with pytest.raises(BtfError):
        btf.type_str(6)


def test_rcu_head_alias() -> None:
    """BTF only has struct callback_head ("#define rcu_head callback_head" in the kernel)."""
    e = Enc()
    ptr = e.ptr(0)
    cb = e.composite("callback_head", 16, [("next", ptr, 0), ("func", ptr, 64)])
    e.composite("page", 24, [("flags", ptr, 0), ("callback_head", cb, 64)])
    btf = Btf.from_bytes(e.build())
    assert btf.struct_size("rcu_head") == 16
    assert btf.has_type("rcu_head") is True
    assert btf.member_offset("rcu_head", "func") == 8
    assert btf.member_offset("page", "rcu_head.func") == 16
    assert btf.member_type("page", "rcu_head") == "struct callback_head"


def test_host_vmlinux() -> None:
    if not os.path.exists(HOST_VMLINUX):
        pytest.skip(f"{HOST_VMLINUX} does not exist")
    t0 = time.perf_counter()
    btf = Btf.load(HOST_VMLINUX)
    params = btf.func_params("kvfree_call_rcu")
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0
    assert params is not None and len(params) == 2
    assert [p for p, _ in params] == ["head", "ptr"]
    alloc = btf.func_params("alloc_pages_nolock_noprof")
    assert alloc is not None
    assert [p for p, _ in alloc] == ["gfp_flags", "nid", "order"]
    # "rcu_head" is "#define rcu_head callback_head" in the kernel; the alias resolves it.
    assert btf.struct_size("rcu_head") == 16
    assert btf.member_offset("rcu_head", "func") == 8
    assert btf.has_var("krc") is True
