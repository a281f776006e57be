"""The lab module (kernel/lab-6.12/module) for any kernel the VM tier boots: the lab kernels'
own build (`rcupending lab-build`), or a Debian kernel's: built against that kernel's
linux-headers package with this machine's gcc, cached by (module sources, kernel release).

A Debian headers package is a kbuild tree for its kernel: the flavour dir (.config,
Module.symvers, generated headers; its Makefile names /usr/src/... paths, pointed here at the
unpacked copy), the common dir (headers, Makefiles) and linux-kbuild (fixdep, modpost, objtool).
Two differences from the machine the kernel was built on are bridged, and recorded:
- the kernel's configuration names options of the compiler that built it (Debian 6.12 and 7.3:
  gcc-14's -fmin-function-alignment). Where this gcc lacks one, make is told the config has no
  such compiler feature, and the kernel's Makefile takes its own fallback (-falign-functions).
- linux-kbuild's tools are linked against their suite's glibc (trixie: 2.38+ symbols). When
  this machine's glibc is older, those tools run through their suite's own loader and libraries
  (libc6, libelf, zlib fetched beside them); the compiler stays this machine's.
Module BTF is not generated (it needs a pahole as new as the kernel's; nothing uses it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..paths import cache_dir, extract_debs, locked, read_marker, write_marker
from .apt import PrivateApt
from .build import default_recipe, install_dir
from .kernels import parse_spec, resolve, spec_dirname
from .packages import FLAVOUR, PkgVer, compare_versions
from .recipe import module_hash, parse_recipe

Progress = Callable[[str], None]
TOOL_LIBS = ("libc6", "libelf1t64", "libelf1", "zlib1g")
CC = "gcc"


@dataclass(frozen=True)
class ModuleBuild:
    spec: str
    release: str
    ko: Path
    notes: tuple[str, ...]  # how this build differs from the kernel's own toolchain


def _quiet(_: str) -> None:
    pass


def module_for(spec: str, progress: Progress = _quiet) -> ModuleBuild:
    """The lab module built for SPEC's kernel (building it if needed); UserError says why it
    cannot be built (no headers package, compiler refuses, ...)."""
    kind, _ = parse_spec(spec)
    recipe = parse_recipe(default_recipe())
    if kind == "lab":
        name = spec.split(":", 1)[1]
        for v in recipe.variants:
            if v.label(recipe) == name:
                d = install_dir(recipe, v)
                m = read_marker(d) or {}
                ko = d / f"{recipe.module_name}.ko"
                if m.get("module_hash") != module_hash(recipe) or not ko.is_file():
                    raise UserError(f"{spec}: its module is not built from this checkout's "
                                    "sources: run `rcupending lab-build`")
                return ModuleBuild(spec, m.get("release", "?"), ko, ())
        raise UserError(f"{spec}: not a kernel of {recipe.root.name}'s recipe")
    if kind != "debian":
        raise UserError(f"{spec}: the lab module is built for debian:X.Y and lab kernels only")
    k = resolve(spec, progress)
    if not k.release.endswith(f"-{FLAVOUR}"):
        raise UserError(f"{spec}: release {k.release} is not a Debian {FLAVOUR} kernel")
    key = module_hash(recipe)
    out = cache_dir() / "modules" / f"{spec_dirname(k.release)}-{key}"
    with locked(cache_dir() / "modules.lock"):
        m = read_marker(out)
        if m is None:
            m = _build(spec, k.release, recipe.module_dir, recipe.module_name, out, progress)
    return ModuleBuild(spec, k.release, out / m["ko"], tuple(m["notes"]))


# ---------------------------------------------------------------- headers


def _kernel_version(spec: str) -> str:
    m = read_marker(cache_dir() / "kernels" / spec_dirname(spec)) or {}
    pkgs = m.get("packages") or []
    if not pkgs:
        raise UserError(f"{spec}: no cached kernel (rcupending fetch {spec})")
    return pkgs[0]["version"]


def _pick(cands: list[PkgVer], names: list[str], version: str) -> PkgVer | None:
    for name in names:
        for p in cands:
            if p.name == name and p.version == version:
                return p
    return None


def _headers(spec: str, release: str, progress: Progress) -> tuple[Path, dict]:
    """The unpacked headers of `release` (cached): (flavour dir, facts)."""
    abi = release.removesuffix(f"-{FLAVOUR}")
    series = ".".join(abi.split(".")[:2])
    version = _kernel_version(spec)
    d = cache_dir() / "modules" / "headers" / release
    m = read_marker(d)
    if m is None:
        apt = PrivateApt(cache_dir() / "apt")
        apt.ensure_lists(progress)
        cands = apt.candidates([f"linux-headers-{abi}", "linux-kbuild-"])
        want = {
            "headers": _pick(cands, [f"linux-headers-{release}"], version),
            "common": _pick(cands, [f"linux-headers-{abi}-common"], version),
            "kbuild": _pick(cands, [f"linux-kbuild-{abi}", f"linux-kbuild-{series}"], version),
        }
        missing = [k for k, p in want.items() if p is None]
        if missing:
            names = {"headers": f"linux-headers-{release}",
                     "common": f"linux-headers-{abi}-common",
                     "kbuild": f"linux-kbuild-{abi}"}
            raise UserError(f"{spec}: no {', '.join(names[k] for k in missing)} {version} "
                            f"in the archive's suites")
        pkgs = [p for p in want.values() if p is not None]
        if d.exists():
            shutil.rmtree(d)
        progress(f"{spec}: fetching {', '.join(p.name for p in pkgs)} {version}")
        debs = apt.download(pkgs, d / "debs", progress)
        extract_debs(debs, d / "root", progress)
        shutil.rmtree(d / "debs")
        flavour = d / "root" / "usr" / "src" / f"linux-headers-{release}"
        mk = flavour / "Makefile"
        mk.write_text(mk.read_text().replace("/usr/src/", f"{d / 'root' / 'usr' / 'src'}/"))
        tools = _tool_libs(d, pkgs[-1].suite, apt, progress)
        m = {"release": release, "packages": [p.__dict__ for p in pkgs], "tool_libs": tools}
        write_marker(d, m)
    return d / "root" / "usr" / "src" / f"linux-headers-{release}", m


def _glibc_needed(exe: Path) -> tuple[int, int] | None:
    data = exe.read_bytes()
    if not data.startswith(b"\x7fELF"):
        return None
    found = [(2, int(v)) for v in re.findall(rb"GLIBC_2\.(\d+)", data)]
    return max(found) if found else None


def _host_glibc() -> tuple[int, int]:
    text = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0.0"
    major, minor = text.split()[-1].split(".")[:2]
    return int(major), int(minor)


def _tool_libs(d: Path, suite: str, apt: PrivateApt, progress: Progress) -> str | None:
    """Wrap linux-kbuild's executables that need a newer glibc than this machine's: they run
    through the loader and libraries of their own suite, fetched into d/libs."""
    root = d / "root" / "usr" / "lib"
    host = _host_glibc()
    exes = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
            and os.access(p, os.X_OK) and (_glibc_needed(p) or (0, 0)) > host]
    if not exes:
        return None
    base = suite.split("-")[0]  # trixie-backports' tools use trixie's libc
    newest: dict[str, PkgVer] = {}
    for p in apt.candidates(list(TOOL_LIBS)):
        if p.name in TOOL_LIBS and p.suite == base:
            old = newest.get(p.name)
            if old is None or compare_versions(p.version, old.version) > 0:
                newest[p.name] = p
    pkgs = [newest[n] for n in TOOL_LIBS if n in newest]
    if "libc6" not in newest:
        need = max(g for g in map(_glibc_needed, exes) if g)
        raise UserError(f"linux-kbuild needs glibc {need[0]}.{need[1]} and {base} has no libc6 "
                        "to run it with")
    progress(f"linux-kbuild needs a newer glibc: running its tools with {base}'s "
             f"{', '.join(p.name + ' ' + p.version for p in pkgs)}")
    debs = apt.download(pkgs, d / "libs-debs", progress)
    extract_debs(debs, d / "libs", progress)
    shutil.rmtree(d / "libs-debs")
    libdir = d / "libs" / "usr" / "lib" / "x86_64-linux-gnu"
    loader = libdir / "ld-linux-x86-64.so.2"
    for exe in exes:
        real = exe.with_name(exe.name + ".bin")
        exe.rename(real)
        # --argv0: launchers (objtool, modpost) exec "$0.real-<arch>" next to themselves
        exe.write_text(f'#!/bin/sh\nexec "{loader}" --library-path "{libdir}" --argv0 "$0" '
                       f'"$0.bin" "$@"\n')
        exe.chmod(0o755)
    return f"{base} " + ", ".join(f"{p.name} {p.version}" for p in pkgs)


# ---------------------------------------------------------------- build


def _cc_accepts(flag: str) -> bool:
    r = subprocess.run([CC, flag, "-c", "-x", "c", "-o", "/dev/null", "/dev/null"],
                       capture_output=True, text=True)
    return r.returncode == 0


def _config(flavour: Path) -> dict[str, str]:
    out = {}
    for line in (flavour / ".config").read_text(errors="replace").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v.strip('"')
    return out


def _build(spec: str, release: str, src: Path | None, name: str | None, out: Path,
           progress: Progress) -> dict:  # fmt: skip
    if src is None or name is None:
        raise UserError("the recipe has no [module]")
    if shutil.which(CC) is None:
        raise UserError(f"{CC} not found: install gcc")
    flavour, facts = _headers(spec, release, progress)
    cfg = _config(flavour)
    version = subprocess.run([CC, "--version"], capture_output=True, text=True).stdout
    notes = [f"compiler: {version.splitlines()[0]} (kernel built with "
             f"{cfg.get('CONFIG_CC_VERSION_TEXT', '?')})"]
    args = [f"CC={CC}", "CONFIG_DEBUG_INFO_BTF_MODULES="]
    if cfg.get("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT") == "y" and not _cc_accepts(
            "-fmin-function-alignment=16"):
        args.append("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=")
        notes.append(f"{CC} lacks -fmin-function-alignment: the kernel Makefile's fallback "
                     "-falign-functions")
    if facts.get("tool_libs"):
        notes.append(f"linux-kbuild tools run with {facts['tool_libs']}")
    if out.exists():
        shutil.rmtree(out)
    work = out / "build"
    shutil.copytree(src, work)
    progress(f"{spec}: building the lab module against linux-headers-{release}")
    r = subprocess.run(["make", "-C", str(flavour), f"M={work}", *args, "modules"],
                       capture_output=True, text=True)
    ko = work / f"{name}.ko"
    if r.returncode != 0 or not ko.is_file():
        lines = [ln for ln in (r.stdout + r.stderr).splitlines()
                 if "error" in ln.lower() or "not found" in ln]
        tail = lines[-3:] or (r.stdout + r.stderr).strip().splitlines()[-3:]
        raise UserError(f"{spec}: the lab module does not build against linux-headers-"
                        f"{release}: {' / '.join(tail)}")
    shutil.copy2(ko, out / ko.name)
    m = {"spec": spec, "release": release, "ko": ko.name, "notes": notes, "make_args": args,
         "headers": facts["packages"]}
    write_marker(out, m)
    progress(f"{spec}: built {out / ko.name}")
    return m
