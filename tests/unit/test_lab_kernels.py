"""Unit tests of the lab kernel resolver: spec parsing, apt sources, package choice (no network)."""

import struct
from pathlib import Path

import pytest

from rcupending_tools.errors import UserError
from rcupending_tools.lab import kernels
from rcupending_tools.lab.packages import (
    PkgVer,
    compare_versions,
    parse_madison,
    pick_headers,
    pick_kernel,
)
from rcupending_tools.lab.sources import DEFAULT_KEYRING, Mirror, debian_mirrors, private_sources


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("RCUPENDING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RCUPENDING_SHARED_KERNELS", str(tmp_path / "shared"))


def fake_bzimage(path: Path, version: str = "6.12.107 (root@vm) #1 SMP") -> Path:
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x400)
    raw = version.encode() + b"\0"
    head[0x600 : 0x600 + len(raw)] = raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(head))
    return path


# ---------------------------------------------------------------- specs


def test_cache_dir_env_order(monkeypatch, tmp_path):
    assert kernels.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("RCUPENDING_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernels.cache_dir() == tmp_path / "xdg" / "rcupending-tools"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert kernels.cache_dir() == Path.home() / ".cache" / "rcupending-tools"


@pytest.mark.parametrize(
    ("spec", "want"),
    [("debian:6.12", ("debian", "6.12")), ("debian:7.3", ("debian", "7.3")),
     ("lab:lab-6.12-bcachefs", ("lab", "lab-6.12-bcachefs"))],
)  # fmt: skip
def test_parse_spec(spec, want):
    assert kernels.parse_spec(spec) == want


@pytest.mark.parametrize(
    "spec", ["debian:6", "debian:six", "debian:6.12.1", "ubuntu:6.8", "lab:", "lab:a b", "/nope"]
)
def test_bad_spec_lists_forms(spec):
    with pytest.raises(UserError) as e:
        kernels.parse_spec(spec)
    msg = str(e.value)
    assert "debian:X.Y" in msg and "lab:NAME" in msg and "debian:6.1," in msg
    assert "\n" not in msg


def test_known_specs_and_lab_dirs(tmp_path):
    fake_bzimage(tmp_path / "shared" / "lab-6.12-bcachefs" / "bzImage")
    (tmp_path / "shared" / "lab-6.12-bcachefs" / "config").write_text("CONFIG_IKHEADERS=y\n")
    (tmp_path / "shared" / "empty").mkdir()
    fake_bzimage(tmp_path / "cache" / "lab" / "mine" / "bzImage", "6.15.0-rc1 #2")
    specs = kernels.known_specs()
    assert specs[:7] == [f"debian:{s}" for s in kernels.DEBIAN_SERIES]
    assert specs[7:] == ["lab:lab-6.12-bcachefs", "lab:mine"]
    # lab:6.12-bcachefs is short for the lab-6.12-bcachefs dir; IKHEADERS means no headers
    k = kernels.resolve("lab:6.12-bcachefs", progress=lambda m: None)
    assert (k.release, k.headers) == ("6.12.107", None)
    assert k.image.name == "bzImage" and k.source.startswith("lab build ")
    with pytest.raises(UserError, match="no lab kernel 'other'"):
        kernels.resolve("lab:other")


def test_project_build_wins_over_shared(tmp_path):
    fake_bzimage(tmp_path / "shared" / "x" / "bzImage", "6.12.1 #1")
    (tmp_path / "shared" / "x" / "config").write_text("CONFIG_IKHEADERS=y\n")
    fake_bzimage(tmp_path / "cache" / "lab" / "x" / "bzImage", "6.12.2 #1")
    (tmp_path / "cache" / "lab" / "x" / "config").write_text("CONFIG_IKHEADERS=y\n")
    assert kernels.resolve("lab:x", progress=lambda m: None).release == "6.12.2"


def test_file_spec_release_from_modules_dir(tmp_path):
    root = tmp_path / "unpacked"
    img = fake_bzimage(root / "boot" / "vmlinuz-6.1.0-50-amd64", "6.1.0-50-amd64 (dk@d) #1")
    (root / "lib" / "modules" / "6.1.0-50-amd64").mkdir(parents=True)
    (root / "boot" / "config-6.1.0-50-amd64").write_text("CONFIG_IKHEADERS=y\n")
    k = kernels.resolve(str(img), progress=lambda m: None)
    assert (k.release, k.headers, k.image) == ("6.1.0-50-amd64", None, img.resolve())


def test_bzimage_version(tmp_path):
    assert kernels.bzimage_version(fake_bzimage(tmp_path / "b")) == "6.12.107"
    (tmp_path / "n").write_bytes(b"\0" * 0x1000)
    assert kernels.bzimage_version(tmp_path / "n") is None


# ---------------------------------------------------------------- apt sources

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://third.example/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://inline.example/debian/
Suites: sid
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 abc
 -----END PGP PUBLIC KEY BLOCK-----
"""

ONE_LINE = """\
# comment
deb https://packages.example/apt cloud-sdk-bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/other.gpg] http://one.example/debian trixie main
deb-src [signed-by=/usr/share/keyrings/other.gpg] http://one.example/debian trixie main
deb http://one.example/debian-security trixie-security main
deb http://two.example/debian/ bookworm-backports main contrib  # trailing comment
"""


def test_debian_mirrors_from_files(tmp_path):
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(ONE_LINE)
    (etc / "sources.list.d" / "debian.sources").write_text(DEB822)
    (etc / "sources.list.d" / "x.list.disabled").write_text(
        "deb http://off.example/debian sid main"
    )
    mirrors = debian_mirrors(etc)  # apt's own reading of both formats
    assert mirrors == [
        Mirror("http://one.example/debian", DEFAULT_KEYRING),
        Mirror("http://two.example/debian", DEFAULT_KEYRING),
        Mirror("http://mirror.example/debian", DEFAULT_KEYRING),
        Mirror("http://inline.example/debian", DEFAULT_KEYRING),
    ]


def test_private_sources_text(tmp_path):
    text = private_sources(Mirror("http://m.example/debian", "/k.gpg"), ["bookworm", "trixie"])
    assert "Signed-By: /k.gpg\n" in text
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "lab.sources").write_text(text)
    assert debian_mirrors(tmp_path) == [Mirror("http://m.example/debian")]  # apt reads it


def test_broken_sources_are_one_line(tmp_path):
    (tmp_path / "sources.list").write_text("deb http://x.example/debian\n")  # no suite
    with pytest.raises(UserError, match="apt sources"):
        debian_mirrors(tmp_path)


# ---------------------------------------------------------------- versions and choice


@pytest.mark.parametrize(
    ("a", "b"),
    [("6.12.107-1", "6.12.95-1~bpo12+1"), ("7.3.4-1~bpo13+1", "7.3~rc7-1~exp1"),
     ("1.0-1", "1.0~rc1-1"), ("1:0.1-1", "9.9-1"), ("6.1.176-1", "6.1.99-1"),
     ("6.12.90-1~bpo12+2", "6.12.90-1~bpo12+1"), ("1.0a-1", "1.0-1"), ("1.0-1", "1.0-0")],
)  # fmt: skip
def test_compare_versions(a, b):
    assert compare_versions(a, b) > 0 and compare_versions(b, a) < 0
    assert compare_versions(a, a) == 0


def P(name: str, version: str, suite: str = "trixie-backports") -> PkgVer:  # noqa: N802
    return PkgVer(name, version, suite)


ARCHIVE = [
    P("linux-image-6.1.0-47-amd64-unsigned", "6.1.170-1", "bookworm"),
    P("linux-image-6.1.0-50-amd64", "6.1.176-1", "bookworm"),
    P("linux-image-6.1.0-50-amd64-unsigned", "6.1.176-1", "bookworm"),
    P("linux-image-6.1.0-50-cloud-amd64-unsigned", "6.1.176-1", "bookworm"),
    P("linux-headers-6.1.0-47-amd64", "6.1.170-1", "bookworm"),
    P("linux-headers-6.1.0-47-common", "6.1.170-1", "bookworm"),
    P("linux-headers-6.1.0-50-amd64", "6.1.176-1", "bookworm"),
    P("linux-headers-6.1.0-50-common", "6.1.176-1", "bookworm"),
    P("linux-image-6.12.95+deb12-amd64-unsigned", "6.12.95-1~bpo12+1", "bookworm-backports"),
    P("linux-image-6.12.107+deb13-amd64", "6.12.107-1", "trixie"),
    P("linux-image-6.12.107+deb13-amd64-unsigned", "6.12.107-1", "trixie"),
    P("linux-image-6.12.107+deb13-rt-amd64-unsigned", "6.12.107-1", "trixie"),
    P("linux-image-6.17.8+deb13-amd64", "6.17.8-1~bpo13+1"),
    P("linux-image-6.17.13+deb13-amd64", "6.17.13-1~bpo13+1"),
    # 6.19+: linux-image is a meta package over linux-binary + linux-modules (+ linux-base)
    P("linux-image-7.0.13+deb13-amd64", "7.0.13-1~bpo13+1"),
    P("linux-binary-7.0.13+deb13-amd64", "7.0.13-1~bpo13+1"),
    P("linux-image-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
    P("linux-binary-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
    P("linux-modules-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
    P("linux-base-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
    P("linux-binary-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1"),
    P("linux-image-7.3-amd64", "7.3~rc7-1~exp1", "experimental"),
    P("linux-binary-7.3-amd64", "7.3~rc7-1~exp1", "experimental"),
    P("linux-modules-7.3-amd64", "7.3~rc7-1~exp1", "experimental"),
]


def test_pick_image_layout_newest_unsigned():
    k = pick_kernel("6.1", ARCHIVE)
    assert (k.release, k.layout, k.main.name) == (
        "6.1.0-50-amd64",
        "image",
        "linux-image-6.1.0-50-amd64-unsigned",
    )
    k = pick_kernel("6.12", ARCHIVE)  # not confused by 6.1, newest across suites
    assert (k.main.name, k.main.suite) == ("linux-image-6.12.107+deb13-amd64-unsigned", "trixie")
    k = pick_kernel("6.17", ARCHIVE)  # signed only
    assert k.main.name == "linux-image-6.17.13+deb13-amd64"


def test_pick_split_layout():
    k = pick_kernel("7.3", ARCHIVE)
    assert k.layout == "split" and k.release == "7.3.4+deb13-amd64"  # 7.3.4 > 7.3~rc7
    assert [p.name for p in k.packages] == [
        "linux-binary-7.3.4+deb13-amd64",
        "linux-modules-7.3.4+deb13-amd64",
        "linux-base-7.3.4+deb13-amd64",
    ]


def test_pick_incomplete_or_missing():
    with pytest.raises(LookupError, match="linux-binary-7.0.13.*no linux-modules"):
        pick_kernel("7.0", ARCHIVE)
    with pytest.raises(LookupError, match="no linux-image"):
        pick_kernel("5.10", ARCHIVE)


def test_pick_headers():
    abi, (flav, common) = pick_headers("6.1", ARCHIVE)
    assert (abi, flav.name, common.name) == (
        "6.1.0-50",
        "linux-headers-6.1.0-50-amd64",
        "linux-headers-6.1.0-50-common",
    )


def test_parse_madison():
    text = (
        " linux-image-6.12.107+deb13-amd64 | 6.12.107-1 | http://m.example/debian trixie/main"
        " amd64 Packages\n"
        "     linux | 6.12.107-1 | http://m.example/debian trixie/main Sources\n"
        "garbage line\n"
    )
    assert parse_madison(text) == [P("linux-image-6.12.107+deb13-amd64", "6.12.107-1", "trixie")]


def test_merge_tree_keeps_dirs_over_symlinks(tmp_path):
    common, flav, dst = tmp_path / "common", tmp_path / "flav", tmp_path / "dst"
    (common / "scripts").mkdir(parents=True)
    (common / "scripts" / "x.sh").write_text("x")
    (common / "Makefile").write_text("common")
    (flav / "include").mkdir(parents=True)
    (flav / "include" / "autoconf.h").write_text("h")
    (flav / "Makefile").write_text("flavour")
    (flav / "scripts").symlink_to("../../lib/kbuild/scripts")
    kernels._merge_tree(common, dst)
    kernels._merge_tree(flav, dst)
    assert (dst / "scripts" / "x.sh").is_file() and not (dst / "scripts").is_symlink()
    assert (dst / "Makefile").read_text() == "flavour"
    assert (dst / "include" / "autoconf.h").is_file()
