"""Facts about the running kernel: release, version, kallsyms, BTF, modules."""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import UserError
from ..paths import TRACEFS
from .btf import Btf

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")


def kprobes_available() -> bool:
    """This kernel offers kprobes (a PMU, or kprobe_events in tracefs)."""
    return (
        Path("/sys/bus/event_source/devices/kprobe").exists()
        or (TRACEFS / "kprobe_events").exists()
        or Path("/sys/kernel/debug/tracing/kprobe_events").exists()
    )


def parse_version(release: str) -> tuple[int, int]:
    """'6.12.57+deb13-amd64' -> (6, 12)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise UserError(f"unknown kernel release {release!r}: expected it to start with X.Y")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class KSym:
    address: int
    kind: str  # nm-style type letter
    module: str | None


def parse_cpu_list(text: str) -> int:
    """The highest CPU of a kernel CPU list such as "0-3,8,10-11" (-1 when empty)."""
    top = -1
    for part in text.strip().split(","):
        if part:
            top = max(top, int(part.rpartition("-")[2]))
    return top


def parse_kallsyms(text: str) -> dict[str, list[KSym]]:
    """Index /proc/kallsyms text by symbol name (a name may occur more than once)."""
    syms: dict[str, list[KSym]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        module = parts[3].strip("[]") if len(parts) > 3 else None
        syms.setdefault(parts[2], []).append(KSym(int(parts[0], 16), parts[1], module))
    return syms


def module_in_dep(dep_text: str, module: str) -> bool:
    """Whether modules.dep (`path/name.ko[.xz]: deps...` lines) lists `module`."""
    want = module.replace("-", "_")
    for line in dep_text.splitlines():
        name = line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko", 1)[0]
        if name.replace("-", "_") == want:
            return True
    return False


@dataclass
class KernelInfo:
    """A view of one kernel; paths are injectable so tests can use recorded files."""

    release: str = field(default_factory=lambda: os.uname().release)
    kallsyms_path: Path = Path("/proc/kallsyms")
    btf_dir: Path = Path("/sys/kernel/btf")

    @property
    def version(self) -> tuple[int, int]:
        return parse_version(self.release)

    @cached_property
    def kallsyms(self) -> dict[str, list[KSym]]:
        try:
            return parse_kallsyms(self.kallsyms_path.read_text())
        except OSError as e:
            raise UserError(f"cannot read {self.kallsyms_path}: {e.strerror}") from e

    def symbol(self, name: str) -> KSym | None:
        """The symbol `name`, or its compiler clone (name.isra.0, name.constprop.0...)."""
        found = self.kallsyms.get(name)
        if found:
            return found[0]
        for full, syms in self.kallsyms.items():
            if full.startswith(name + "."):
                return syms[0]
        return None

    def clone_name(self, name: str) -> str | None:
        """The kallsyms name actually bound to `name` (itself or a .isra/.constprop clone)."""
        if name in self.kallsyms:
            return name
        return next((full for full in self.kallsyms if full.startswith(name + ".")), None)

    @property
    def has_btf(self) -> bool:
        return (self.btf_dir / "vmlinux").exists()

    @cached_property
    def btf(self) -> Btf | None:
        path = self.btf_dir / "vmlinux"
        return Btf.load(path) if path.exists() else None

    def module_btf(self, module: str) -> Btf | None:
        path = self.btf_dir / module
        base = self.btf
        return Btf.load(path, base=base) if path.exists() and base is not None else None

    def module_loaded(self, module: str) -> bool:
        return Path("/sys/module", module).is_dir()

    def module_available(self, module: str) -> bool:
        """A loadable module file for this kernel exists (modules.dep lists every one: a
        directory walk costs tens of seconds over a lab VM's 9p root)."""
        base = Path("/lib/modules", self.release)
        try:
            return module_in_dep((base / "modules.dep").read_text(), module)
        except OSError:
            return any(base.rglob(f"{module}.ko*")) if base.is_dir() else False

    def func_params(self, symbol: str, module: str | None = None) -> list[str] | None:
        """Parameter names of `symbol` from BTF (module BTF when `module` is given)."""
        btf = self.module_btf(module) if module else self.btf
        if btf is None:
            return None
        params = btf.func_params(symbol)
        return [p[0] for p in params] if params is not None else None

    @cached_property
    def _text_symbols(self) -> tuple[list[int], list[str]]:
        pairs = sorted(
            (k.address, name)
            for name, syms in self.kallsyms.items()
            for k in syms
            if k.kind in "tTwW"
        )
        return [a for a, _ in pairs], [n for _, n in pairs]

    @cached_property
    def possible_cpus(self) -> int:
        """How many CPUs per-CPU maps have a slot for (highest possible CPU + 1)."""
        return parse_cpu_list(Path("/sys/devices/system/cpu/possible").read_text()) + 1

    @cached_property
    def _core_text(self) -> tuple[int, int]:
        lo, hi = self.symbol("_stext"), self.symbol("_etext")
        return (lo.address if lo else 0, hi.address if hi else 0)

    def core_text_symbol(self, address: int) -> str | None:
        """The kernel text symbol at `address`; None outside _stext.._etext (BPF JIT images,
        trampolines, modules)."""
        lo, hi = self._core_text
        return self.ksym_at(address) if lo <= address < hi else None

    def ksym_at(self, address: int) -> str | None:
        """Name of the text symbol containing `address` (for call sites)."""
        addrs, names = self._text_symbols
        i = bisect.bisect_right(addrs, address) - 1
        return names[i] if i >= 0 else None
