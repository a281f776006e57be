"""Minimal, dependency-free reader of Linux kernel BTF (``/sys/kernel/btf/*``).

Implements the format of include/uapi/linux/btf.h: a header (magic 0xeB9F), a type
section of variable-length ``struct btf_type`` records (kinds INT..ENUM64) and a string
section. Split BTF (kernel modules) is supported by passing the base BTF: the split
blob's type ids continue after the base's last id and its string offsets continue after
the base's string section.

Only a single pass over the type section is done at load (to record where each record
starts); names are indexed lazily on the first by-name query and types are decoded on
demand.
"""

from __future__ import annotations

import struct
import sys
from array import array
from pathlib import Path

__all__ = ["Btf", "BtfError"]

BTF_MAGIC = 0xEB9F
_HDR_MIN_LEN = 24

# Type kinds (include/uapi/linux/btf.h).
KIND_UNKN = 0
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19
_KIND_MAX = KIND_ENUM64

_KIND_NAMES = {
    "int": (KIND_INT,),
    "ptr": (KIND_PTR,),
    "array": (KIND_ARRAY,),
    "struct": (KIND_STRUCT,),
    "union": (KIND_UNION,),
    "enum": (KIND_ENUM, KIND_ENUM64),
    "enum64": (KIND_ENUM64,),
    "fwd": (KIND_FWD,),
    "typedef": (KIND_TYPEDEF,),
    "volatile": (KIND_VOLATILE,),
    "const": (KIND_CONST,),
    "restrict": (KIND_RESTRICT,),
    "func": (KIND_FUNC,),
    "func_proto": (KIND_FUNC_PROTO,),
    "var": (KIND_VAR,),
    "datasec": (KIND_DATASEC,),
    "float": (KIND_FLOAT,),
    "decl_tag": (KIND_DECL_TAG,),
    "type_tag": (KIND_TYPE_TAG,),
}

# Size in u32 words of the data following the 3-word btf_type header: fixed part and
# per-vlen part. INT: u32 encoding; ARRAY: btf_array; STRUCT/UNION: btf_member[vlen];
# ENUM: btf_enum[vlen]; FUNC_PROTO: btf_param[vlen]; VAR: btf_var; DATASEC:
# btf_var_secinfo[vlen]; DECL_TAG: btf_decl_tag; ENUM64: btf_enum64[vlen].
_EXTRA_FIXED = (0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
_EXTRA_PER_VLEN = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)

# Identifiers renamed by the C preprocessor before the compiler (and hence BTF) sees them:
# include/linux/types.h has "#define rcu_head callback_head", so BTF only knows
# "struct callback_head" (and members declared "struct rcu_head rcu_head" are named
# "callback_head"). Lookups by name fall back to these spellings when the literal fails.
NAME_ALIASES = {"rcu_head": "callback_head"}

_QUALIFIERS = {KIND_CONST: "const", KIND_VOLATILE: "volatile", KIND_RESTRICT: "restrict"}
_MAX_DEPTH = 64


class BtfError(Exception):
    """Malformed BTF data, or a query that BTF cannot answer (e.g. a bitfield offset)."""


class Btf:
    """Parsed BTF blob (base vmlinux BTF, or split module BTF on top of a base)."""

    def __init__(self, data: bytes, base: Btf | None = None) -> None:
        """Parse ``data``; prefer :meth:`load` / :meth:`from_bytes`."""
        self._base = base
        self._start_id = base._end_id if base is not None else 1
        self._str_start = base._str_start + len(base._strs) if base is not None else 0
        self._names: dict[str, list[int]] | None = None
        self._parse(bytes(data))

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, path: str | Path = "/sys/kernel/btf/vmlinux", base: Btf | None = None) -> Btf:
        """Read and parse a BTF file; pass ``base`` for split (module) BTF.

        OSError (e.g. FileNotFoundError) propagates; bad contents raise BtfError.
        """
        return cls(Path(path).read_bytes(), base)

    @classmethod
    def from_bytes(cls, data: bytes, base: Btf | None = None) -> Btf:
        """Parse an in-memory BTF blob; pass ``base`` for split (module) BTF."""
        return cls(data, base)

    def _parse(self, data: bytes) -> None:
        if len(data) < _HDR_MIN_LEN:
            raise BtfError("BTF data too short for header")
        if struct.unpack_from("<H", data)[0] == BTF_MAGIC:
            order = "<"
        elif struct.unpack_from(">H", data)[0] == BTF_MAGIC:
            order = ">"
        else:
            raise BtfError("bad BTF magic")
        _magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            order + "HBBIIIII", data
        )
        if version != 1:
            raise BtfError(f"unsupported BTF version {version}")
        if hdr_len < _HDR_MIN_LEN or hdr_len > len(data):
            raise BtfError(f"bad BTF header length {hdr_len}")
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data):
            raise BtfError("BTF section extends past end of data")
        if type_off % 4 or type_len % 4:
            raise BtfError("misaligned BTF type section")
        self._strs = data[s0 : s0 + str_len]
        if self._base is None and self._strs[:1] not in (b"", b"\0"):
            raise BtfError("BTF string section must start with NUL")

        words = array("I")
        if words.itemsize != 4:  # pragma: no cover - exotic platforms
            words = array("L")
        words.frombytes(data[t0 : t0 + type_len])
        if (order == "<") != (sys.byteorder == "little"):
            words.byteswap()
        self._w = words

        offs = array("I")
        fixed, per = _EXTRA_FIXED, _EXTRA_PER_VLEN
        i, n = 0, len(words)
        while i < n:
            if i + 3 > n:
                raise BtfError(f"truncated BTF type record at type id {self._start_id + len(offs)}")
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            if kind > _KIND_MAX or kind == KIND_UNKN:
                raise BtfError(f"unknown BTF kind {kind} at type id {self._start_id + len(offs)}")
            offs.append(i)
            i += 3 + fixed[kind] + per[kind] * (info & 0xFFFF)
        if i != n:
            raise BtfError("truncated BTF type section")
        self._offs = offs
        self._end_id = self._start_id + len(offs)

    # ------------------------------------------------------------------ low level

    def _owner(self, type_id: int) -> tuple[Btf, int]:
        """Return (btf holding ``type_id``, word index of its record)."""
        btf: Btf | None = self
        while btf is not None:
            if type_id >= btf._start_id:
                if type_id >= btf._end_id:
                    break
                return btf, btf._offs[type_id - btf._start_id]
            btf = btf._base
        raise BtfError(f"BTF type id {type_id} out of range")

    def _hdr(self, type_id: int) -> tuple[Btf, int, int, int, bool, int, int]:
        """(owner, word index, kind, vlen, kind_flag, name_off, size_or_type)."""
        btf, i = self._owner(type_id)
        w = btf._w
        info = w[i + 1]
        return btf, i, (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), w[i], w[i + 2]

    def _str(self, off: int) -> str:
        btf: Btf | None = self
        while btf is not None and off < btf._str_start:
            btf = btf._base
        if btf is None:
            raise BtfError(f"BTF string offset {off} out of range")
        rel = off - btf._str_start
        strs = btf._strs
        if rel >= len(strs):
            raise BtfError(f"BTF string offset {off} out of range")
        end = strs.find(b"\0", rel)
        if end < 0:
            end = len(strs)
        return strs[rel:end].decode("utf-8", "replace")

    def _kind(self, type_id: int) -> int:
        return 0 if type_id == 0 else self._hdr(type_id)[2]

    def _name_index(self) -> dict[str, list[int]]:
        names = self._names
        if names is None:
            names = {}
            w, strs, start = self._w, self._strs, self._start_id
            base_end = self._str_start
            for idx, i in enumerate(self._offs):
                off = w[i]
                if not off:
                    continue
                if off < base_end:
                    name = self._str(off)
                else:
                    rel = off - base_end
                    end = strs.find(b"\0", rel)
                    name = strs[rel : end if end >= 0 else len(strs)].decode("utf-8", "replace")
                names.setdefault(name, []).append(start + idx)
            self._names = names
        return names

    def _find(self, name: str, kinds: tuple[int, ...]) -> list[int]:
        """Ids of types called ``name`` with a kind in ``kinds``; own types before base.

        Falls back to NAME_ALIASES (macro-renamed identifiers) when nothing matches.
        """
        out: list[int] = []
        btf: Btf | None = self
        while btf is not None:
            for tid in btf._name_index().get(name, ()):
                if btf._kind(tid) in kinds:
                    out.append(tid)
            btf = btf._base
        if not out and name in NAME_ALIASES:
            return self._find(NAME_ALIASES[name], kinds)
        return out

    def _skip_mods(self, type_id: int, typedefs: bool = True) -> int:
        """Follow qualifiers/type tags (and typedefs if asked) to the underlying type."""
        for _ in range(_MAX_DEPTH):
            if type_id == 0:
                return 0
            _, _, kind, _, _, _, ref = self._hdr(type_id)
            if kind in _QUALIFIERS or kind == KIND_TYPE_TAG or (typedefs and kind == KIND_TYPEDEF):
                type_id = ref
            else:
                return type_id
        raise BtfError("BTF type chain too deep (loop?)")

    # ------------------------------------------------------------------ rendering

    def type_str(self, type_id: int) -> str:
        """C spelling of type ``type_id`` (typedef names are kept, not expanded)."""
        return self._render(type_id, "", 0)

    def _render(self, type_id: int, decl: str, depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise BtfError("BTF type chain too deep (loop?)")
        if type_id == 0:
            return _join("void", decl)
        btf, i, kind, vlen, _kflag, name_off, ref = self._hdr(type_id)
        name = self._str(name_off) if name_off else ""
        if kind in (KIND_INT, KIND_FLOAT, KIND_TYPEDEF):
            return _join(name or "?", decl)
        if kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FWD):
            if kind == KIND_FWD:
                tag = "union" if _kflag else "struct"
            else:
                tag = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(kind, "enum")
            return _join(f"{tag} {name}" if name else f"{tag} {{...}}", decl)
        if kind == KIND_PTR:
            target = self._skip_mods(ref, typedefs=False)
            tkind = self._kind(target)
            inner = "*" + decl
            if tkind in (KIND_ARRAY, KIND_FUNC_PROTO):
                inner = f"({inner})"
            return self._render(ref, inner, depth + 1)
        if kind in _QUALIFIERS:
            qual = _QUALIFIERS[kind]
            if self._kind(self._skip_mods(ref, typedefs=False)) == KIND_PTR:
                return self._render(ref, qual + (" " + decl if decl else ""), depth + 1)
            return qual + " " + self._render(ref, decl, depth + 1)
        if kind == KIND_TYPE_TAG:
            return self._render(ref, decl, depth + 1)
        if kind == KIND_ARRAY:
            w = btf._w
            return self._render(w[i + 3], f"{decl}[{w[i + 5]}]", depth + 1)
        if kind == KIND_FUNC_PROTO:
            params = [p for _n, p in self._params(type_id, depth + 1)] or ["void"]
            return self._render(ref, f"{decl}({', '.join(params)})", depth + 1)
        if kind == KIND_FUNC:
            return self._render(ref, name + decl, depth + 1)
        if kind in (KIND_VAR, KIND_DECL_TAG):
            return self._render(ref, decl, depth + 1)
        return _join(name or f"<kind {kind}>", decl)

    def _params(self, proto_id: int, depth: int = 0) -> list[tuple[str, str]]:
        btf, i, kind, vlen, _, _, _ = self._hdr(proto_id)
        if kind != KIND_FUNC_PROTO:
            raise BtfError(f"BTF type {proto_id} is not a FUNC_PROTO")
        w = btf._w
        out = []
        for k in range(vlen):
            p_name, p_type = w[i + 3 + 2 * k], w[i + 4 + 2 * k]
            if p_type == 0 and k == vlen - 1:
                out.append(("", "..."))
            else:
                out.append((self._str(p_name) if p_name else "", self._render(p_type, "", depth)))
        return out

    def _func_proto(self, name: str) -> int | None:
        for fid in self._find(name, (KIND_FUNC,)):
            proto = self._hdr(fid)[6]
            if self._kind(proto) == KIND_FUNC_PROTO:
                return proto
        return None

    # ------------------------------------------------------------------ members

    def _members(self, type_id: int) -> list[tuple[str, int, int, int]]:
        """Members of struct/union ``type_id`` as (name, type_id, bit_offset, bitfield_size)."""
        btf, i, kind, vlen, kflag, _, _ = self._hdr(type_id)
        w = btf._w
        out = []
        for k in range(vlen):
            base = i + 3 + 3 * k
            m_name, m_type, m_off = w[base], w[base + 1], w[base + 2]
            bits = 0
            if kflag:
                bits, m_off = m_off >> 24, m_off & 0xFFFFFF
            out.append((self._str(m_name) if m_name else "", m_type, m_off, bits))
        return out

    def _lookup_member(
        self, type_id: int, name: str, depth: int = 0
    ) -> tuple[int, int, int] | None:
        """Find ``name`` in struct/union ``type_id``, descending into anonymous members.

        Returns (bit_offset, member_type_id, bitfield_size) or None.
        """
        if depth > _MAX_DEPTH:
            raise BtfError("BTF anonymous member nesting too deep")
        members = self._members(type_id)
        for m_name, m_type, m_off, bits in members:
            if m_name == name:
                return m_off, m_type, bits
        for m_name, m_type, m_off, _bits in members:
            if m_name:
                continue
            inner = self._skip_mods(m_type)
            if self._kind(inner) in (KIND_STRUCT, KIND_UNION):
                found = self._lookup_member(inner, name, depth + 1)
                if found is not None:
                    return m_off + found[0], found[1], found[2]
        return None

    def _walk(self, struct_name: str, path: str) -> tuple[int, int, int] | None:
        """Resolve dotted ``path`` in struct/union ``struct_name``: (bit_off, type, bits)."""
        parts = path.split(".")
        if not path or any(not p for p in parts):
            raise BtfError(f"bad member path {path!r}")
        for sid in self._find(struct_name, (KIND_STRUCT, KIND_UNION)):
            cur, total, found = sid, 0, None
            for n, part in enumerate(parts):
                found = self._lookup_member(cur, part)
                if found is None and part in NAME_ALIASES:
                    found = self._lookup_member(cur, NAME_ALIASES[part])
                if found is None:
                    break
                total += found[0]
                if n + 1 < len(parts):
                    if found[2]:
                        found = None
                        break
                    cur = self._skip_mods(found[1])
                    if self._kind(cur) not in (KIND_STRUCT, KIND_UNION):
                        found = None
                        break
            if found is not None:
                return total, found[1], found[2]
        return None

    def _is_bitfield(self, m_type: int, bits: int, bit_off: int) -> bool:
        if bits:
            return True
        if bit_off % 8:
            return True
        target = self._skip_mods(m_type)
        if target and self._kind(target) == KIND_INT:
            btf, i, _, _, _, _, size = self._hdr(target)
            enc = btf._w[i + 3]
            if (enc >> 16) & 0xFF or (enc & 0xFF) != size * 8:
                return True
        return False

    # ------------------------------------------------------------------ public API

    def func_params(self, name: str) -> list[tuple[str, str]] | None:
        """Parameters of BTF_KIND_FUNC ``name`` as (param_name, C type); None if absent.

        A variadic tail appears as ("", "...").
        """
        proto = self._func_proto(name)
        return None if proto is None else self._params(proto)

    def func_return(self, name: str) -> str | None:
        """C type of the return value of FUNC ``name`` ("void" for none); None if absent."""
        proto = self._func_proto(name)
        return None if proto is None else self._render(self._hdr(proto)[6], "", 0)

    def struct_size(self, name: str) -> int | None:
        """Byte size of struct or union ``name`` (forward declarations ignored)."""
        ids = self._find(name, (KIND_STRUCT, KIND_UNION))
        return self._hdr(ids[0])[6] if ids else None

    def member_offset(self, struct: str, path: str) -> int | None:
        """Byte offset of dotted member ``path`` in struct/union ``struct``; None if absent.

        Anonymous struct/union members are searched transparently. Raises BtfError if the
        member is a bitfield (not byte addressable).
        """
        found = self._walk(struct, path)
        if found is None:
            return None
        bit_off, m_type, bits = found
        if self._is_bitfield(m_type, bits, bit_off):
            raise BtfError(f"{struct}.{path} is a bitfield")
        return bit_off // 8

    def member_type(self, struct: str, path: str) -> str | None:
        """C type of dotted member ``path`` in struct/union ``struct``; None if absent."""
        found = self._walk(struct, path)
        return None if found is None else self._render(found[1], "", 0)

    def enum_value(self, enumerator: str, enum: str | None = None) -> int | None:
        """Value of `enumerator` (e.g. "PGTY_slab"), optionally only within enum `enum`."""
        kinds = (KIND_ENUM, KIND_ENUM64)
        ids: list[int] = []
        if enum is not None:
            ids = self._find(enum, kinds)
        else:
            btf: Btf | None = self
            while btf is not None:
                ids += [
                    btf._start_id + idx
                    for idx, i in enumerate(btf._offs)
                    if (btf._w[i + 1] >> 24) & 0x1F in kinds
                ]
                btf = btf._base
        for tid in ids:
            btf, i, kind, vlen, kflag, _, _ = self._hdr(tid)
            w, per = btf._w, (2 if kind == KIND_ENUM else 3)
            for k in range(vlen):
                base = i + 3 + per * k
                if self._str(w[base]) != enumerator:
                    continue
                if kind == KIND_ENUM:
                    v = w[base + 1]
                    return v - (1 << 32) if kflag and v >> 31 else v
                return w[base + 1] | (w[base + 2] << 32)
        return None

    def var_type(self, name: str) -> str | None:
        """C type of BTF_KIND_VAR ``name`` (e.g. a per-CPU variable); None if absent."""
        ids = self._find(name, (KIND_VAR,))
        return self._render(self._hdr(ids[0])[6], "", 0) if ids else None

    def has_var(self, name: str) -> bool:
        """True if a BTF_KIND_VAR called ``name`` exists."""
        return bool(self._find(name, (KIND_VAR,)))

    def has_type(self, name: str, kind: str = "struct") -> bool:
        """True if a type ``name`` of ``kind`` exists ("struct", "union", "enum", "typedef",
        "func", "var", "int", "fwd", ...)."""
        try:
            kinds = _KIND_NAMES[kind]
        except KeyError:
            raise ValueError(f"unknown BTF kind name {kind!r}") from None
        return bool(self._find(name, kinds))

    @property
    def nr_types(self) -> int:
        """Number of types in this blob (excluding the base and void)."""
        return len(self._offs)


def _join(base: str, decl: str) -> str:
    if not decl:
        return base
    if decl[0] == "[":
        return base + decl
    return f"{base} {decl}"
