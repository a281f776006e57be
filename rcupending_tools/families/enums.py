"""The BPF side's enums, read from its headers (bpf/*.h): one source of truth for C and Python.

A family's header declares its counter indexes, paths, contexts and reasons as C enums; the
family module reads them here instead of mirroring them. Enumerator values may be integers,
earlier enumerators and + - * << of those (`ST_FREED_BYTES = ST_FREED + NPATH`), as C allows.
tests/unit/test_enums.py compiles each header with the C compiler and checks every value.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .. import config

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_ENUM = re.compile(r"\benum\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(\(?-?(?:0x[0-9a-fA-F]+|\d+)\)?)[uUlL]*\s*$",
                     re.M)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.LShift: operator.lshift, ast.BitOr: operator.or_}


class EnumError(ValueError):
    """A header the parser does not understand (a test, not a user, should ever see this)."""


def _eval(expr: str, known: dict[str, int]) -> int:
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in known:
            return known[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise EnumError(f"cannot evaluate {expr!r}")

    try:
        return walk(ast.parse(expr.strip(), mode="eval"))
    except SyntaxError as e:
        raise EnumError(f"cannot parse {expr!r}") from e


@dataclass(frozen=True)
class Enum:
    """One C enum: its enumerators in declaration order with their values."""

    name: str
    members: tuple[tuple[str, int], ...]

    def names(self, prefix: str) -> tuple[str, ...]:
        """The lowercased names after `prefix` of the members that carry it, by value, without
        the count/sentinel member (`..._MAX`): `PATH_BULK` -> "bulk"."""
        picked = sorted((v, n) for n, v in self.members
                        if n.startswith(prefix) and not n.endswith("_MAX"))
        out = tuple(n[len(prefix):].lower() for _, n in picked)
        if [v for v, _ in picked] != list(range(len(picked))):
            raise EnumError(f"enum {self.name}: {prefix}* values are not 0..{len(picked) - 1}")
        return out


@dataclass(frozen=True)
class Header:
    """Every enum and integer #define of one BPF header, and all their values by name."""

    path: Path
    enums: dict[str, Enum]
    values: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def enum(self, name: str) -> Enum:
        return self.enums[name]


def parse(text: str, path: Path = Path("<text>")) -> Header:
    text = _COMMENTS.sub(" ", text)
    values: dict[str, int] = {}
    for name, expr in _DEFINE.findall(text):
        values[name] = _eval(expr, values)
    enums: dict[str, Enum] = {}
    for enum_name, body in _ENUM.findall(text):
        members: list[tuple[str, int]] = []
        nxt = 0
        for item in (i.strip() for i in body.split(",")):
            if not item:
                continue
            name, _, expr = (p.strip() for p in item.partition("="))
            if not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise EnumError(f"{path}: enum {enum_name}: bad enumerator {item!r}")
            value = _eval(expr, values) if expr else nxt
            values[name] = value
            members.append((name, value))
            nxt = value + 1
        enums[enum_name] = Enum(enum_name, tuple(members))
    return Header(path, enums, values)


@cache
def header(name: str) -> Header:
    """bpf/`name` (the loader's BPF directory), parsed once."""
    path = config.bpf_dir() / name
    return parse(path.read_text(), path)
