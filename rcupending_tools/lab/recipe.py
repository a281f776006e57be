"""Lab kernel recipes (kernel/lab-*/recipe.toml): parsing, hashing, config fragments (pure)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .packages import PkgVer, compare_versions

RECIPE_FILE = "recipe.toml"
_CONSTRAINT = re.compile(r"^\s*(>=|<=|>>|<<|=)\s*(\S+)\s*$")
_OPTION = re.compile(r"^[A-Z0-9_]+$")
_VALUE = {"y", "n", "m"}


@dataclass(frozen=True)
class Variant:
    name: str
    options: dict[str, str]  # OPTION (no CONFIG_ prefix) -> "y" | "n" | "m" | value

    def label(self, recipe: Recipe) -> str:
        return f"{recipe.name}-{self.name}"  # the lab:NAME of the installed kernel


@dataclass(frozen=True)
class Recipe:
    root: Path  # the directory holding recipe.toml
    name: str
    package: str
    version: list[str]  # constraints, e.g. [">= 6.12.107-1", "<< 6.13"]
    tarball: str
    fragment: Path
    patches: list[Path]
    targets: list[str]
    module_dir: Path | None
    module_name: str | None
    variants: list[Variant] = field(default_factory=list)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise UserError(f"recipe {self.name} has no variant {name!r} (known: {known}, all)")

    def files(self) -> list[Path]:
        """Every file whose content defines the build (hashed)."""
        return self.kernel_files() + self.module_files()

    def kernel_files(self) -> list[Path]:
        """The files the kernels depend on (not the module)."""
        return [self.root / RECIPE_FILE, self.fragment, *self.patches]

    def module_files(self) -> list[Path]:
        if self.module_dir is None:
            return []
        return sorted(p for p in self.module_dir.rglob("*") if p.is_file())


def _need(table: dict, key: str, kind: type, where: str):
    value = table.get(key)
    if not isinstance(value, kind):
        raise UserError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


def parse_recipe(path: Path) -> Recipe:
    """Read recipe.toml (a file, or a directory holding one); UserError when malformed."""
    path = path / RECIPE_FILE if path.is_dir() else path
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read recipe {where}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where}: {e}") from None
    root = path.parent
    src = _need(data, "source", dict, where)
    version = src.get("version", [])
    version = [version] if isinstance(version, str) else version
    for c in version:
        if not isinstance(c, str) or not _CONSTRAINT.match(c):
            raise UserError(f"{where}: bad version constraint {c!r} (e.g. '>= 6.12.107-1')")
    cfg = _need(data, "config", dict, where)
    patches = [root / p for p in data.get("patches", {}).get("series", [])]
    fragment = root / _need(cfg, "fragment", str, where)
    for f in [fragment, *patches]:
        if not f.is_file():
            raise UserError(f"{where}: {f} does not exist")
    module = data.get("module")
    module_dir = root / _need(module, "dir", str, where) if module else None
    variants = []
    for v in data.get("variant", []):
        name = _need(v, "name", str, where)
        opts = v.get("options", {})
        for k, val in opts.items():
            if not _OPTION.match(k) or not isinstance(val, str):
                raise UserError(f"{where}: variant {name}: bad option {k!r} = {val!r}")
        variants.append(Variant(name, dict(opts)))
    if not variants:
        raise UserError(f"{where}: no [[variant]]")
    if len({v.name for v in variants}) != len(variants):
        raise UserError(f"{where}: duplicate variant names")
    return Recipe(
        root=root,
        name=_need(data, "name", str, where),
        package=_need(src, "package", str, where),
        version=list(version),
        tarball=_need(src, "tarball", str, where),
        fragment=fragment,
        patches=patches,
        targets=list(data.get("build", {}).get("targets", ["bzImage", "modules"])),
        module_dir=module_dir,
        module_name=module.get("name") if module else None,
        variants=variants,
    )


def satisfies(version: str, constraints: list[str]) -> bool:
    """Debian-version constraints as in control files: >=, <=, >>, <<, =."""
    for c in constraints:
        m = _CONSTRAINT.match(c)
        assert m is not None
        op, ref = m.groups()
        cmp = compare_versions(version, ref)
        ok = {">=": cmp >= 0, "<=": cmp <= 0, ">>": cmp > 0, "<<": cmp < 0, "=": cmp == 0}[op]
        if not ok:
            return False
    return True


def pick_source(recipe: Recipe, candidates: list[PkgVer]) -> PkgVer:
    """The newest candidate of the recipe's package that satisfies its constraints."""
    ok = [
        p for p in candidates if p.name == recipe.package and satisfies(p.version, recipe.version)
    ]
    if not ok:
        seen = sorted({p.version for p in candidates if p.name == recipe.package})
        raise UserError(
            f"no {recipe.package} satisfying {', '.join(recipe.version) or 'any'}"
            f" (available: {', '.join(seen) or 'none'})"
        )
    best = ok[0]
    for p in ok[1:]:
        if compare_versions(p.version, best.version) > 0:
            best = p
    return best


def _digest(parts: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in parts:
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def tree_key(recipe: Recipe, source_version: str) -> str:
    """What the source tree depends on: the package version and the patches."""
    parts = [("source", f"{recipe.package}={source_version}".encode())]
    parts += [(p.name, p.read_bytes()) for p in recipe.patches]
    return _digest(parts)


def _hash_files(recipe: Recipe, source_version: str | None, files: list[Path]) -> str:
    parts = [] if source_version is None else [
        ("source", f"{recipe.package}={source_version}".encode())]
    parts += [(str(p.relative_to(recipe.root)), p.read_bytes()) for p in files]
    return _digest(parts)


def recipe_hash(recipe: Recipe, source_version: str) -> str:
    """The cache key of the whole build: source version + every recipe file's content."""
    return _hash_files(recipe, source_version, recipe.files())


def kernel_hash(recipe: Recipe, source_version: str) -> str:
    """The kernels' part of it: a module-only change keeps the kernels."""
    return _hash_files(recipe, source_version, recipe.kernel_files())


def module_hash(recipe: Recipe) -> str:
    """The module's sources alone (also the key of its builds for Debian kernels)."""
    return _hash_files(recipe, None, recipe.module_files())


# ---------------------------------------------------------------- config fragments


def parse_fragment(text: str) -> dict[str, str]:
    """CONFIG_X=y|m|value and '# CONFIG_X is not set' (-> "n") lines; other comments ignored."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        m = re.fullmatch(r"#\s*CONFIG_([A-Za-z0-9_]+) is not set", line)
        if m:
            out[m.group(1)] = "n"
            continue
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"CONFIG_([A-Za-z0-9_]+)=(.*)", line)
        if not m:
            raise UserError(f"config fragment line {n}: cannot parse {raw!r}")
        out[m.group(1)] = m.group(2)
    return out


def scripts_config_args(options: dict[str, str]) -> list[str]:
    """Arguments for the kernel's scripts/config that set `options`."""
    args: list[str] = []
    for name, value in options.items():
        if value == "y":
            args += ["--enable", name]
        elif value == "n":
            args += ["--disable", name]
        elif value == "m":
            args += ["--module", name]
        elif value.startswith('"') and value.endswith('"') and len(value) >= 2:
            args += ["--set-str", name, value[1:-1]]
        else:
            args += ["--set-val", name, value]
    return args


def config_values(text: str) -> dict[str, str]:
    """A full .config as OPTION -> value ("n" for 'is not set')."""
    return parse_fragment(text)


def config_mismatches(config_text: str, wanted: dict[str, str]) -> list[str]:
    """Options of `wanted` that the resolved .config does not have (Kconfig refused them)."""
    have = config_values(config_text)
    bad = []
    for name, value in wanted.items():
        got = have.get(name, "n")
        if got != value:
            bad.append(f"CONFIG_{name}={value} (got {got})")
    return bad


def config_diff(a: str, b: str) -> dict[str, tuple[str, str]]:
    """OPTION -> (value in a, value in b) for every option whose value differs."""
    va, vb = config_values(a), config_values(b)
    return {
        k: (va.get(k, "n"), vb.get(k, "n"))
        for k in sorted(set(va) | set(vb))
        if va.get(k, "n") != vb.get(k, "n")
    }
