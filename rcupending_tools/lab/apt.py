"""A private apt (own sources, lists and cache under the lab cache) to find and fetch debs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import UserError
from .packages import PkgVer, parse_madison
from .sources import Mirror, debian_mirrors, private_sources

SUITES = ["bookworm", "bookworm-backports", "trixie", "trixie-backports"]
MAX_AGE = 24 * 3600  # apt-get update at most once a day

Progress = Callable[[str], None]


class PrivateApt:
    """apt-get/apt-cache with Dir::* pointing into `root`; the host's apt state is untouched."""

    def __init__(self, root: Path, mirror: Mirror | None = None) -> None:
        self.root = root
        if mirror is None:
            mirrors = debian_mirrors()
            if not mirrors:
                raise UserError(
                    "no Debian archive in /etc/apt/sources.list{,.d}: add one to fetch kernels"
                )
            mirror = mirrors[0]
        self.mirror = mirror
        self.stamp = root / "last-update"

    def _opts(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::sourcelist": r / "sources.list",
            "Dir::Etc::sourceparts": r / "sources.list.d",
            "Dir::Etc::preferences": r / "preferences",
            "Dir::Etc::preferencesparts": r / "preferences.d",
            "Dir::State::Lists": r / "lists",
            "Dir::Cache": r / "cache",
            "Dir::Cache::pkgcache": "pkgcache.bin",  # docker images often disable these
            "Dir::Cache::srcpkgcache": "srcpkgcache.bin",
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "Acquire::Languages": "none",
        }
        if os.geteuid() == 0:  # fetch as root into our dirs, no "_apt cannot access" warning
            opts["APT::Sandbox::User"] = "root"
        return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]

    def _setup(self) -> bool:
        """Write the private config; True if the sources changed (lists must be refetched)."""
        for d in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list").touch()
        (self.root / "preferences").touch()
        src = self.root / "sources.list.d" / "lab.sources"
        text = private_sources(self.mirror, SUITES)
        if src.is_file() and src.read_text() == text:
            return False
        src.write_text(text)
        self.stamp.unlink(missing_ok=True)
        return True

    def _run(self, tool: str, args: list[str], **kw) -> subprocess.CompletedProcess[str]:
        exe = shutil.which(tool)
        if exe is None:
            raise UserError(f"{tool} not found: this needs a Debian host with apt")
        return subprocess.run([exe, *self._opts(), *args], text=True, **kw)

    def ensure_lists(self, progress: Progress, *, force: bool = False) -> bool:
        """`apt-get update` if the lists are older than a day (or forced); True if it ran."""
        changed = self._setup()
        age = time.time() - self.stamp.stat().st_mtime if self.stamp.exists() else None
        if not (force or changed or age is None or age > MAX_AGE):
            return False
        progress(f"apt: updating package lists of {self.mirror.uri} ({', '.join(SUITES)})")
        r = self._run("apt-get", ["-q", "update"], capture_output=True)
        errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(("E:", "W:"))]
        if r.returncode != 0 or any(e.startswith("E:") for e in errors):
            raise UserError(f"apt-get update failed: {' / '.join(errors) or r.returncode}")
        self.stamp.touch()
        return True

    def candidates(self, prefixes: Iterable[str]) -> list[PkgVer]:
        """Every (name, version, suite) whose name starts with one of `prefixes`."""
        names: set[str] = set()
        for prefix in prefixes:
            r = self._run("apt-cache", ["pkgnames", prefix], capture_output=True)
            names.update(r.stdout.split())
        if not names:
            return []
        r = self._run("apt-cache", ["madison", *sorted(names)], capture_output=True)
        return [p for p in parse_madison(r.stdout) if p.suite in SUITES]

    def sizes(self, pkgs: Iterable[PkgVer]) -> dict[str, int]:
        """name -> .deb size in bytes, from `apt-get download --print-uris`."""
        r = self._run(
            "apt-get",
            ["download", "--print-uris", *(f"{p.name}={p.version}" for p in pkgs)],
            capture_output=True,
        )
        out = {}
        for line in r.stdout.splitlines():
            m = re.match(r"^'\S+' (\S+?)_\S+ (\d+) ", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def download(self, pkgs: list[PkgVer], dest: Path, progress: Progress) -> list[Path]:
        """Fetch the debs into `dest`, reporting every 10%; returns the .deb paths."""
        sizes = self.sizes(pkgs)
        total = sum(sizes.values())
        progress(f"downloading {len(pkgs)} package(s), {total / 1e6:.1f} MB:")
        for p in pkgs:
            size = sizes.get(p.name, 0) / 1e6
            progress(f"  {p.name} {p.version} ({p.suite}) {size:.1f} MB")
        dest.mkdir(parents=True, exist_ok=True)
        args = ["-o", "APT::Status-Fd=1", "download", *(f"{p.name}={p.version}" for p in pkgs)]
        exe = shutil.which("apt-get") or "apt-get"
        proc = subprocess.Popen(
            [exe, *self._opts(), *args],
            cwd=dest,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        shown, errors = -10, []
        for line in proc.stdout:
            if line.startswith("dlstatus:"):
                pct = float(line.split(":")[2])
                if pct >= shown + 10:
                    shown = int(pct // 10 * 10)
                    progress(f"  {shown:3d}% of {total / 1e6:.1f} MB")
            elif line.startswith(("E:", "Err:")):
                errors.append(line.strip())
        if proc.wait() != 0 or errors:
            raise UserError(f"apt-get download failed: {' / '.join(errors) or proc.returncode}")
        debs = []
        for p in pkgs:
            found = sorted(dest.glob(f"{p.name}_*.deb"))
            if not found:
                raise UserError(f"apt-get download left no .deb for {p.name}")
            debs.append(found[-1])
        progress(f"  done, {sum(d.stat().st_size for d in debs) / 1e6:.1f} MB")
        return debs
