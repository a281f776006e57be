"""This machine's Debian mirror, from its own apt sources as apt reads them (python3-apt's
apt_pkg.SourceList: sources.list and sources.list.d, one-line and deb822, disabled entries
skipped), and the deb822 text of the lab's private source entry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import apt_pkg

from ..errors import UserError

# python-apt does not expose an entry's Signed-By: the lab's own entry is verified with the
# Debian archive keyring (what Debian's archive and its mirrors are signed with).
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Suite names (before any -updates/-backports suffix) that mean the Debian archive.
DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "experimental",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}  # fmt: skip


@dataclass(frozen=True)
class Mirror:
    uri: str
    keyring: str = DEFAULT_KEYRING


@contextmanager
def _etc(etc_apt: Path | None) -> Iterator[None]:
    """apt's configuration, with its sources read from `etc_apt` (None: the system's)."""
    apt_pkg.init_config()
    if etc_apt is None:
        apt_pkg.init_system()
        yield
        return
    keys = ("Dir::Etc", "Dir::Etc::sourcelist", "Dir::Etc::sourceparts")
    saved = {k: apt_pkg.config.find(k) for k in keys}
    apt_pkg.config.set("Dir::Etc", str(etc_apt))
    apt_pkg.config.set("Dir::Etc::sourcelist", "sources.list")
    apt_pkg.config.set("Dir::Etc::sourceparts", "sources.list.d")
    try:
        apt_pkg.init_system()
        yield
    finally:
        for k, v in saved.items():
            apt_pkg.config.set(k, v)


def _is_debian_archive(uri: str, dist: str) -> bool:
    if dist.endswith("-security") or dist.endswith("/updates") or "security" in uri:
        return False
    return dist.split("-", 1)[0] in DEBIAN_SUITES and not uri.startswith("cdrom:")


def debian_mirrors(etc_apt: Path | None = None) -> list[Mirror]:
    """Distinct Debian archive mirrors of the machine's `deb` entries, in apt's order (no
    -security, no third-party repositories)."""
    with _etc(etc_apt):
        sources = apt_pkg.SourceList()
        try:
            sources.read_main_list()
        except apt_pkg.Error as e:
            raise UserError(f"apt sources of this machine: {str(e).splitlines()[0]}") from None
        # binary entries: a deb-src entry's MetaIndex is also of type "deb"
        entries = [(m.uri, m.dist) for m in sources.list
                   if any(f.label == "Debian Package Index" for f in m.index_files)]
    out: list[Mirror] = []
    for uri, dist in entries:
        uri = uri.rstrip("/")
        if _is_debian_archive(uri, dist) and Mirror(uri) not in out:
            out.append(Mirror(uri))
    return out


def private_sources(mirror: Mirror, suites: list[str]) -> str:
    """The deb822 text of the lab's own source entry."""
    return (
        f"Types: deb\nURIs: {mirror.uri}\nSuites: {' '.join(suites)}\n"
        f"Components: main\nSigned-By: {mirror.keyring}\n"
    )
