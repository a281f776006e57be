"""Read the machine's apt sources (one-line and deb822) and pick its Debian mirror."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Suite names (before any -updates/-backports suffix) that mean the Debian archive.
DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "experimental",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}  # fmt: skip


@dataclass
class AptSource:
    """One source entry: the fields we need from either format."""

    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str] = field(default_factory=list)
    signed_by: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Mirror:
    uri: str
    keyring: str


def parse_one_line(text: str) -> list[AptSource]:
    """Parse sources.list lines: `deb [opt=v ...] URI SUITE [COMPONENT...]`."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opts: dict[str, str] = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s*(.*)$", line)
        if m:
            typ, optstr, rest = m.groups()
            for o in optstr.split():
                k, _, v = o.partition("=")
                opts[k.lower()] = v
        else:
            typ, _, rest = line.partition(" ")
        words = rest.split()
        if len(words) < 2:
            continue
        out.append(AptSource([typ], [words[0]], [words[1]], words[2:], opts.get("signed-by")))
    return out


def parse_deb822(text: str) -> list[AptSource]:
    """Parse a .sources file: blank-line separated stanzas of `Field: value` lines."""
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and last:
                fields[last] += "\n" + raw.strip()
                continue
            k, sep, v = raw.partition(":")
            if not sep:
                continue
            last = k.strip().lower()
            fields[last] = v.strip()
        if "uris" not in fields or "suites" not in fields:
            continue
        signed = fields.get("signed-by", "").strip()
        keyring = signed.split()[0] if signed.startswith("/") else None  # not an inline key
        out.append(
            AptSource(
                fields.get("types", "deb").split(),
                fields["uris"].split(),
                fields["suites"].split(),
                fields.get("components", "").split(),
                keyring,
                fields.get("enabled", "yes").lower() not in ("no", "false", "0"),
            )
        )
    return out


def read_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """All entries of etc_apt/sources.list and etc_apt/sources.list.d/*.list|*.sources."""
    out: list[AptSource] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        out += parse_one_line(main.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    for p in sorted(parts.glob("*")) if parts.is_dir() else []:
        if p.suffix == ".list":
            out += parse_one_line(p.read_text(errors="replace"))
        elif p.suffix == ".sources":
            out += parse_deb822(p.read_text(errors="replace"))
    return out


def _is_debian_archive(src: AptSource) -> bool:
    if not src.enabled or "deb" not in src.types:
        return False
    bases = {s.split("-", 1)[0] for s in src.suites}
    if any(s.endswith("-security") or s.endswith("/updates") for s in src.suites):
        return False
    return bool(bases) and bases <= DEBIAN_SUITES


def debian_mirrors(sources: list[AptSource]) -> list[Mirror]:
    """Distinct Debian archive mirrors, in file order (no -security, no third-party repos)."""
    seen: set[str] = set()
    out = []
    for src in sources:
        if not _is_debian_archive(src):
            continue
        for uri in src.uris:
            uri = uri.rstrip("/")
            if uri in seen or uri.startswith("cdrom:") or "security" in uri:
                continue
            seen.add(uri)
            out.append(Mirror(uri, src.signed_by or DEFAULT_KEYRING))
    return out


def private_sources(mirror: Mirror, suites: list[str]) -> str:
    """The deb822 text of the lab's own source entry."""
    return (
        f"Types: deb\nURIs: {mirror.uri}\nSuites: {' '.join(suites)}\n"
        f"Components: main\nSigned-By: {mirror.keyring}\n"
    )
