"""Resolve a kernel SPEC (debian:X.Y, lab:NAME, or a file) to a bootable, cached kernel."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..paths import (
    REPO_ROOT,
    cache_dir,
    extract_debs,
    locked,
    read_marker,
    shared_kernels_dir,
    write_marker,
)
from .apt import SUITES, PrivateApt
from .packages import KernelPick, PkgVer, parse_series, pick_headers, pick_kernel

DEBIAN_SERIES = ["6.1", "6.12", "6.16", "6.17", "6.18", "7.2", "7.3"]
# bcc's clang (Debian bookworm, LLVM 14) cannot parse newer kernels' headers; the 6.1 ones
# compile for every guest kernel, so all Debian and header-less kernels share them.
HEADERS_SERIES = "6.1"
FORMS = "debian:X.Y, lab:NAME, or a path to a bzImage/vmlinuz file"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabKernel:
    spec: str
    release: str  # uname -r of the guest kernel
    image: Path  # vmlinuz/bzImage for `vng -r`
    headers: Path | None  # BCC_KERNEL_SOURCE in the guest; None with CONFIG_IKHEADERS=y
    source: str  # where it came from, for humans








# ---------------------------------------------------------------- spec parsing


def parse_spec(spec: str) -> tuple[str, str]:
    """("debian", "X.Y") | ("lab", NAME) | ("file", PATH); UserError when malformed."""
    kind, sep, arg = spec.partition(":")
    if sep and kind == "debian":
        try:
            return "debian", parse_series(arg)
        except ValueError:
            pass
    elif sep and kind == "lab" and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", arg):
        return "lab", arg
    elif Path(spec).is_file():
        return "file", spec
    known = ", ".join(known_specs())
    raise UserError(f"unknown kernel spec {spec!r}: use {FORMS} (known: {known})")


def spec_dirname(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", spec)


def _lab_dirs() -> dict[str, Path]:
    """lab NAME -> dir with the image: project builds first, then ../shared/kernels."""
    out: dict[str, Path] = {}
    for base in (shared_kernels_dir(), cache_dir() / "lab"):  # later wins
        if base.is_dir():
            for d in sorted(base.iterdir()):
                if d.is_dir() and _image_in(d):
                    out[d.name] = d
    return out


def known_specs() -> list[str]:
    return [f"debian:{s}" for s in DEBIAN_SERIES] + [f"lab:{n}" for n in _lab_dirs()]


# ---------------------------------------------------------------- image facts


def _image_in(d: Path) -> Path | None:
    for name in ("bzImage", "vmlinuz"):
        if (d / name).is_file():
            return d / name
    found = sorted(d.glob("vmlinuz-*"))
    return found[-1] if found else None


def bzimage_version(path: Path) -> str | None:
    """The release (first word of the version string) in an x86 bzImage setup header."""
    try:
        with path.open("rb") as f:
            head = f.read(0x10000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    off = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    raw = head[off : off + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    return raw.split()[0] if raw.strip() else None


def config_has(config: Path, option: str) -> bool:
    try:
        return f"\n{option}=y\n" in "\n" + config.read_text(errors="replace")
    except OSError:
        return False


def _modules_release(root: Path, hint: str | None = None) -> str | None:
    """The one dir name in root/lib/modules or root/usr/lib/modules (`hint` only, if given)."""
    names: set[str] = set()
    for m in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        if m.is_dir():
            names.update(d.name for d in m.iterdir() if d.is_dir())
    if hint:
        return hint if hint in names else None
    return names.pop() if len(names) == 1 else None


# ---------------------------------------------------------------- locking and markers










# ---------------------------------------------------------------- Debian kernels


def _apt() -> PrivateApt:
    return PrivateApt(cache_dir() / "apt")


def _prefixes(series: str) -> list[str]:
    return [f"linux-{k}-{series}" for k in ("image", "binary", "modules", "base", "headers")]


def _pick(apt: PrivateApt, series: str, picker, progress: Progress):
    """Run picker on the apt candidates (lists refreshed at most daily)."""
    apt.ensure_lists(progress)
    try:
        return picker(series, apt.candidates(_prefixes(series)))
    except LookupError as e:
        raise UserError(f"{e} in {apt.mirror.uri} ({', '.join(SUITES)})") from None


def _finish_tree(root: Path, release: str, progress: Progress) -> Path:
    """Make root boot-ready for vng: lib/modules/REL with modules.dep; return the image."""
    if not (root / "lib").exists() and (root / "usr" / "lib" / "modules").is_dir():
        (root / "lib").symlink_to("usr/lib")  # merged /usr, as vng and depmod expect
    moddir = root / "lib" / "modules" / release
    for img in (root / "boot" / f"vmlinuz-{release}", moddir / "vmlinuz"):
        if img.is_file():
            break
    else:
        raise UserError(f"no vmlinuz for {release} in the unpacked packages ({root})")
    depmod = shutil.which("depmod") or next(
        (p for p in ("/usr/sbin/depmod", "/sbin/depmod") if os.path.exists(p)), None
    )
    if depmod is None:
        raise UserError("depmod not found: install kmod")
    progress(f"depmod {release}")
    r = subprocess.run([depmod, "-a", "-b", str(root), release], capture_output=True, text=True)
    if r.returncode != 0 or not (moddir / "modules.dep").is_file():
        raise UserError(f"depmod for {release} failed: {r.stderr.strip()[-300:]}")
    return img


def _fetch_into(apt: PrivateApt, pkgs: list[PkgVer], d: Path, progress: Progress) -> int:
    """Download and unpack `pkgs` into d/root; returns the bytes downloaded."""
    if d.exists():
        shutil.rmtree(d)
    try:
        debs = apt.download(pkgs, d / "debs", progress)
    except UserError as e:  # most likely stale lists: the mirror moved on
        apt.ensure_lists(progress, force=True)
        raise UserError(f"{e} (package lists refreshed now: run again)") from None
    size = sum(x.stat().st_size for x in debs)
    extract_debs(debs, d / "root", progress)
    shutil.rmtree(d / "debs")
    return size


def debian_headers(progress: Progress = print, apt: PrivateApt | None = None) -> Path:
    """The merged bookworm 6.1 headers dir (cached; any complete one is reused)."""
    base = cache_dir() / "headers"
    done = sorted((d for d in base.glob("*") if read_marker(d)), key=lambda d: d.stat().st_mtime)
    if done:
        return done[-1] / "src"
    apt = apt or _apt()
    with locked(cache_dir() / "lab.lock"):
        abi, pkgs = _pick(apt, HEADERS_SERIES, pick_headers, progress)
        d = base / abi
        if read_marker(d):
            return d / "src"
        progress(f"fetching kernel headers {abi} for bcc")
        size = _fetch_into(apt, list(pkgs), d, progress)
        src = d / "src"
        src.mkdir()
        for p in (f"{abi}-common", f"{abi}-amd64"):  # common first, flavour overrides
            _merge_tree(d / "root" / "usr" / "src" / f"linux-headers-{p}", src)
        shutil.rmtree(d / "root")
        write_marker(d, {"abi": abi, "packages": [p.__dict__ for p in pkgs], "bytes": size})
    return src


def _merge_tree(src: Path, dst: Path) -> None:
    """Like `cp -a src/. dst/`, but a symlink never replaces an existing directory
    (the flavour headers' scripts -> kbuild links would hide the common scripts/)."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in dirnames + filenames:
            s, t = Path(dirpath) / name, dst / rel / name
            if s.is_symlink():
                if not t.is_dir():
                    t.unlink(missing_ok=True)
                    t.symlink_to(os.readlink(s))
            elif s.is_file():
                shutil.copy2(s, t)


def _describe(pick: KernelPick) -> str:
    m = pick.main
    extra = " (+ " + ", ".join(p.name for p in pick.packages[1:]) + ")" if pick.packages[1:] else ""
    return f"Debian package {m.name}{extra} {m.version} ({m.suite})"


def _debian(spec: str, series: str, progress: Progress) -> LabKernel:
    d = cache_dir() / "kernels" / spec_dirname(spec)
    apt = pick = None
    try:
        apt = _apt()
        pick = _pick(apt, series, pick_kernel, progress)
    except UserError as e:  # offline or no mirror: a cached kernel still does
        cached = read_marker(d)
        if cached is None:
            raise
        progress(f"warning: {e}; using the cached {cached['release']}")
    with locked(cache_dir() / "lab.lock"):
        m = read_marker(d)
        wanted = [p.__dict__ for p in pick.packages] if pick else m and m["packages"]
        if m is None or m["packages"] != wanted:
            assert apt is not None and pick is not None
            progress(f"{spec}: {_describe(pick)}")
            size = _fetch_into(apt, list(pick.packages), d, progress)
            release = _modules_release(d / "root", pick.release)
            if release is None:
                raise UserError(f"no lib/modules/<release> in the packages of {spec}")
            img = _finish_tree(d / "root", release, progress)
            m = {
                "spec": spec,
                "release": release,
                "image": str(img.relative_to(d)),
                "source": _describe(pick),
                "packages": wanted,
                "bytes": size,
            }
            write_marker(d, m)  # last: an interrupted download is redone next time
            progress(f"{spec}: cached {release} in {d} ({size / 1e6:.1f} MB downloaded)")
    headers = debian_headers(progress, apt)
    return LabKernel(spec, m["release"], d / m["image"], headers, m["source"])


# ---------------------------------------------------------------- lab and file kernels


def _headers_for(config: Path | None, progress: Progress) -> Path | None:
    if config is not None and config_has(config, "CONFIG_IKHEADERS"):
        return None
    return debian_headers(progress)


def _lab(spec: str, name: str, progress: Progress) -> LabKernel:
    dirs = _lab_dirs()
    d = dirs.get(name) or dirs.get(f"lab-{name}")
    if d is None:
        raise UserError(
            f"no lab kernel {name!r} in {cache_dir() / 'lab'} or {shared_kernels_dir()} "
            f"(known: {', '.join(known_specs())})"
        )
    img = _image_in(d)
    assert img is not None
    release = bzimage_version(img) or _modules_release(d)
    if release is None:
        raise UserError(f"cannot tell the kernel release of {img}")
    config = next((c for c in (d / "config", d / ".config") if c.is_file()), None)
    try:
        where = os.path.relpath(d, REPO_ROOT)
    except ValueError:
        where = str(d)
    return LabKernel(spec, release, img, _headers_for(config, progress), f"lab build {where}")


def _file(spec: str, progress: Progress) -> LabKernel:
    img = Path(spec).resolve()
    version = bzimage_version(img)
    release, root = None, img.parent
    while release is None and root != root.parent:  # like vng: modules beside the image
        release = _modules_release(root, version)
        root = root.parent if release is None else root
    release = release or version
    if release is None:
        raise UserError(f"cannot tell the kernel release of {img}")
    configs = [img.parent / "config", img.parent / ".config", img.parent / f"config-{release}",
               root / "lib" / "modules" / release / "config"]  # fmt: skip
    config = next((c for c in configs if c.is_file()), None)
    return LabKernel(spec, release, img, _headers_for(config, progress), f"file {img}")


def resolve(spec: str, progress: Progress = print) -> LabKernel:
    """Resolve SPEC to a bootable kernel, downloading and caching on first use."""
    kind, arg = parse_spec(spec)
    if kind == "debian":
        return _debian(spec, arg, progress)
    if kind == "lab":
        return _lab(spec, arg, progress)
    return _file(spec, progress)
