"""The choice of Debian kernel packages among the versions a mirror offers (versions ordered
by libapt-pkg, python3-apt)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key

import apt_pkg

FLAVOUR = "amd64"


@dataclass(frozen=True)
class PkgVer:
    """One binary package version available from one suite."""

    name: str
    version: str
    suite: str


@dataclass(frozen=True)
class KernelPick:
    """The packages that make up one bootable Debian kernel."""

    abi: str  # e.g. "6.12.107+deb13"; uname -r is f"{abi}-{FLAVOUR}"
    layout: str  # "image": one linux-image deb; "split": linux-binary + linux-modules (+ base)
    packages: tuple[PkgVer, ...]  # main package first

    @property
    def main(self) -> PkgVer:
        return self.packages[0]

    @property
    def release(self) -> str:
        return f"{self.abi}-{FLAVOUR}"


def compare_versions(a: str, b: str) -> int:
    """dpkg's ordering of two Debian versions (<0, 0, >0), by libapt-pkg."""
    if apt_pkg.config.find("APT::Architecture") == "":
        apt_pkg.init()  # once per process: libapt's version system
    return apt_pkg.version_compare(a, b)


version_key = cmp_to_key(compare_versions)


def parse_series(series: str) -> str:
    """Validate an "X.Y" kernel series; raises ValueError."""
    if not re.fullmatch(r"\d+\.\d+", series):
        raise ValueError(f"not a kernel series X.Y: {series!r}")
    return series


def _pkg_re(series: str) -> re.Pattern[str]:
    abi = rf"{re.escape(series)}(?:\.\d+)*(?:-\d+)?(?:\+deb\d+(?:\.\d+)*)?"
    kinds = "image|binary|modules|base|headers"
    return re.compile(rf"^linux-({kinds})-({abi})-(?:({FLAVOUR})(-unsigned)?|(common))$")


def _by_abi(series: str, cands: Iterable[PkgVer]) -> dict[str, dict[str, PkgVer]]:
    """abi -> {kind: newest PkgVer}; kinds: image, image-unsigned, binary, modules, base,
    headers, headers-common."""
    rx = _pkg_re(series)
    out: dict[str, dict[str, PkgVer]] = {}
    for p in cands:
        m = rx.match(p.name)
        if not m:
            continue
        kind, abi, flav, unsigned, common = m.groups()
        if common and kind != "headers":
            continue
        key = kind + ("-unsigned" if unsigned else "") + ("-common" if common else "")
        slot = out.setdefault(abi, {})
        old = slot.get(key)
        if old is None or compare_versions(p.version, old.version) > 0:
            slot[key] = p
    return out


def _newest(picks: list[KernelPick]) -> KernelPick:
    def key(k: KernelPick) -> tuple:
        return (version_key(k.main.version), version_key(k.abi))

    return max(picks, key=key)


def pick_kernel(series: str, cands: Iterable[PkgVer]) -> KernelPick:
    """The newest complete amd64 kernel of `series` among `cands`; LookupError says why not."""
    picks: list[KernelPick] = []
    gaps: list[str] = []
    for abi, kinds in _by_abi(series, cands).items():
        if "binary" in kinds:
            if "modules" not in kinds:
                gaps.append(f"linux-binary-{abi}-{FLAVOUR} has no linux-modules package")
                continue
            pkgs = [kinds["binary"], kinds["modules"]] + (
                [kinds["base"]] if "base" in kinds else []
            )
            picks.append(KernelPick(abi, "split", tuple(pkgs)))
        elif "image-unsigned" in kinds or "image" in kinds:
            img = kinds.get("image-unsigned") or kinds["image"]
            picks.append(KernelPick(abi, "image", (img,)))
    if not picks:
        why = "; ".join(sorted(gaps)) or "no linux-image/linux-binary package"
        raise LookupError(f"no complete Debian {FLAVOUR} kernel {series}: {why}")
    return _newest(picks)


def pick_headers(series: str, cands: Iterable[PkgVer]) -> tuple[str, tuple[PkgVer, PkgVer]]:
    """(abi, (flavour headers, common headers)) of the newest complete headers of `series`."""
    best: tuple[str, tuple[PkgVer, PkgVer]] | None = None
    for abi, kinds in _by_abi(series, cands).items():
        if "headers" in kinds and "headers-common" in kinds:
            cand = (abi, (kinds["headers"], kinds["headers-common"]))
            if best is None or compare_versions(cand[1][0].version, best[1][0].version) > 0:
                best = cand
    if best is None:
        raise LookupError(f"no Debian {FLAVOUR} kernel headers {series}")
    return best


def parse_madison(text: str) -> list[PkgVer]:
    """Parse `apt-cache madison` lines: 'name | version | URI suite/comp arch Packages'."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or not parts[2].endswith("Packages"):
            continue
        where = parts[2].split()
        if len(where) < 2:
            continue
        out.append(PkgVer(parts[0], parts[1], where[1].split("/")[0]))
    return out
