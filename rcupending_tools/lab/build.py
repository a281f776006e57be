"""`rcupending lab-build`: build a recipe's kernel variants and lab module into the lab cache.

One source tree per (source version, patches); variants are built one after the other in it,
each only changing its own options, so every variant after the first rebuilds incrementally.
Results go to cache_dir()/lab/<recipe>-<variant>/ (what `lab:<recipe>-<variant>` resolves).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..paths import (
    MARKER,
    REPO_ROOT,
    cache_dir,
    extract_debs,
    locked,
    read_marker,
    write_marker,
)
from .apt import PrivateApt
from .kernels import bzimage_version
from .packages import PkgVer
from .recipe import (
    Recipe,
    Variant,
    config_mismatches,
    kernel_hash,
    module_hash,
    parse_fragment,
    parse_recipe,
    pick_source,
    recipe_hash,
    scripts_config_args,
    tree_key,
)

Progress = Callable[[str], None]
TREE_MARKER = ".rcupending-tree.json"
PROGRESS_EVERY = 30.0  # seconds between progress lines of a running make


def default_recipe() -> Path:
    return REPO_ROOT / "kernel" / "lab-6.12"


def build_root(recipe: Recipe) -> Path:
    return cache_dir() / "lab-build" / recipe.name


def install_dir(recipe: Recipe, variant: Variant) -> Path:
    return cache_dir() / "lab" / variant.label(recipe)


@dataclass
class VariantResult:
    variant: str
    label: str
    dest: Path
    release: str
    seconds: float  # wall time of this variant's kernel + module build (0 when cached)
    cached: bool
    module_only: bool = False  # the kernel was current: only its module was rebuilt


# ---------------------------------------------------------------- source


def _resolve_source(recipe: Recipe, progress: Progress) -> tuple[PrivateApt | None, PkgVer]:
    """The package version to build: from the mirror, or the last one built when offline."""
    try:
        apt = PrivateApt(cache_dir() / "apt")
        apt.ensure_lists(progress)
        pkg = pick_source(recipe, apt.candidates([recipe.package]))
        return apt, pkg
    except UserError as e:
        for v in recipe.variants:
            m = read_marker(install_dir(recipe, v))
            if m and m.get("source", {}).get("package") == recipe.package:
                progress(f"warning: {e}; using the source of the last build")
                return None, PkgVer(**m["source"]["pkg"])
        raise


def _prepare_tree(recipe: Recipe, apt: PrivateApt | None, pkg: PkgVer, progress: Progress) -> Path:
    """The extracted and patched source tree for (pkg, patches), reused when it exists."""
    base = build_root(recipe)
    key = tree_key(recipe, pkg.version)
    work = base / f"tree-{key}"
    top = work / "linux"
    try:
        if json.loads((work / TREE_MARKER).read_text()).get("key") == key:
            progress(f"source tree {top} (reused)")
            return top
    except (OSError, ValueError):
        pass
    repatched = _repatch(recipe, pkg, base, work, progress)
    if repatched is not None:
        return repatched
    if apt is None:
        raise UserError(f"no source tree for {pkg.name} {pkg.version} and no mirror to fetch it")
    for old in base.glob("tree-*"):  # one tree at a time: each is ~1.5 GB once built
        progress(f"removing the old tree {old}")
        shutil.rmtree(old)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    progress(f"fetching {pkg.name} {pkg.version} ({pkg.suite}) with the private apt")
    debs = apt.download([pkg], work / "debs", progress)
    extract_debs(debs, work / "deb", progress)
    tarball = work / "deb" / recipe.tarball
    if not tarball.is_file():
        raise UserError(f"{pkg.name} {pkg.version} has no {recipe.tarball}")
    progress(f"extracting {tarball.name}")
    src = work / "src"
    src.mkdir()
    _run(["tar", "-xf", str(tarball), "-C", str(src)], work, f"tar -xf {tarball.name}")
    tops = list(src.iterdir())
    if len(tops) != 1 or not tops[0].is_dir():
        raise UserError(f"{tarball.name}: expected one top directory, got {tops[:5]}")
    tops[0].rename(top)
    src.rmdir()
    shutil.rmtree(work / "deb")
    shutil.rmtree(work / "debs")
    _apply_series(recipe.patches, top, work, pkg, progress)
    _save_series(recipe, pkg, key, work)
    progress(f"source tree ready in {time.monotonic() - t0:.0f} s: {top}")
    return top


def _git_apply(patch: Path, top: Path, work: Path, reverse: bool = False) -> str | None:
    """None on success, else git's complaint (never looks at an outer repository)."""
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(work))
    argv = ["git", "apply", "--whitespace=nowarn", *(["-R"] if reverse else []), str(patch)]
    r = subprocess.run(argv, cwd=top, env=env, capture_output=True, text=True)
    return None if r.returncode == 0 else r.stderr.strip()


def _apply_series(patches: list[Path], top: Path, work: Path, pkg: PkgVer,
                  progress: Progress) -> None:  # fmt: skip
    for patch in patches:
        progress(f"applying {patch.name}")
        err = _git_apply(patch, top, work)
        if err is not None:
            raise UserError(f"{patch.name} does not apply to {pkg.version}: {err}")


def _save_series(recipe: Recipe, pkg: PkgVer, key: str, work: Path) -> None:
    """Keep copies of the applied patches (to take them back out) and the tree's marker."""
    applied = work / "applied"
    if applied.exists():
        shutil.rmtree(applied)
    applied.mkdir()
    names = []
    for i, p in enumerate(recipe.patches):
        name = f"{i:03d}-{p.name}"
        shutil.copy2(p, applied / name)
        names.append(name)
    marker = {"key": key, "source": pkg.__dict__, "patches": names}
    (work / TREE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def patched_paths(patch_text: str) -> set[str]:
    """Every path a git-format patch touches (both sides of renames)."""
    out: set[str] = set()
    for line in patch_text.splitlines():
        if line.startswith("diff --git a/"):
            a, _, b = line[len("diff --git a/") :].partition(" b/")
            out.update((a, b))
    return out


def _repatch(recipe: Recipe, pkg: PkgVer, base: Path, work: Path,
             progress: Progress) -> Path | None:  # fmt: skip
    """Turn an existing tree of the same source version into this patch series in place:
    take the old series out, put the new one in, and give every file whose content ends up
    unchanged its old mtime back, so make rebuilds only what the new series changed."""
    for old in sorted(base.glob("tree-*")):
        try:
            marker = json.loads((old / TREE_MARKER).read_text())
        except (OSError, ValueError):
            continue
        if marker.get("source", {}).get("version") != pkg.version:
            continue
        top = old / "linux"
        old_patches = [old / "applied" / n for n in marker.get("patches", [])]
        if not top.is_dir() or not all(p.is_file() for p in old_patches):
            continue
        paths = set()
        for p in [*old_patches, *recipe.patches]:
            paths |= patched_paths(p.read_text(errors="replace"))
        before = {}
        for rel in paths:
            f = top / rel
            if f.is_file():
                before[rel] = (f.read_bytes(), f.stat().st_mtime_ns)
        progress(f"re-patching {top}: {len(old_patches)} old patches out, "
                 f"{len(recipe.patches)} in")  # fmt: skip
        (old / TREE_MARKER).unlink()  # a failure below leaves no valid tree behind
        for p in reversed(old_patches):
            err = _git_apply(p, top, old, reverse=True)
            if err is not None:
                progress(f"cannot take {p.name} back out ({err}); extracting afresh")
                return None
        _apply_series(recipe.patches, top, old, pkg, progress)
        kept = 0
        for rel, (data, mtime) in before.items():
            f = top / rel
            if f.is_file() and f.read_bytes() == data:
                os.utime(f, ns=(mtime, mtime))
                kept += 1
        if old != work:
            if work.exists():
                shutil.rmtree(work)
            old.rename(work)
        _save_series(recipe, pkg, tree_key(recipe, pkg.version), work)
        progress(f"re-patched: {len(before) - kept} file(s) changed, {kept} kept their mtime")
        return work / "linux"
    return None


# ---------------------------------------------------------------- configure and make


def _vng() -> str:
    local = Path(sys.executable).parent / "vng"
    exe = str(local) if local.is_file() else shutil.which("vng")
    if exe is None:
        raise UserError("vng not found: pip install virtme-ng (in this venv)")
    return exe


def _run(argv: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
        raise UserError(f"{what} failed ({r.returncode}):\n" + "\n".join(tail))
    return r.stdout


def configure(recipe: Recipe, variant: Variant, top: Path, progress: Progress) -> None:
    """vng --kconfig, the fragment, the variant's options, olddefconfig; checks the result."""
    vng = _vng()
    env = dict(os.environ, PATH=f"{Path(vng).parent}:{os.environ.get('PATH', '')}")
    wanted = parse_fragment(recipe.fragment.read_text()) | variant.options
    old = (top / ".config").read_text() if (top / ".config").is_file() else None
    progress(
        f"[{variant.name}] configuring: vng --kconfig + {recipe.fragment.name} + {variant.options}"
    )
    _run([vng, "--kconfig"], top, "vng --kconfig", env)
    _run(["scripts/config", *scripts_config_args(wanted)], top, "scripts/config")
    _run(["make", "olddefconfig"], top, "make olddefconfig")
    new = (top / ".config").read_text()
    bad = config_mismatches(new, variant.options)
    if bad:
        raise UserError(f"[{variant.name}] Kconfig refused the variant's options: {', '.join(bad)}")
    ignored = config_mismatches(new, wanted)
    if ignored:
        progress(f"[{variant.name}] note: Kconfig did not take {', '.join(ignored)}")
    if old is not None and old == new:
        progress(f"[{variant.name}] .config unchanged")


def make(top: Path, args: list[str], log: Path, label: str, progress: Progress) -> float:
    """Run make, log everything, show a progress line every PROGRESS_EVERY s; wall seconds."""
    t0 = last = time.monotonic()
    compiled, latest = 0, ""
    with log.open("a") as out:
        out.write(f"$ make {' '.join(args)}\n")
        proc = subprocess.Popen(
            ["make", *args], cwd=top, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            word = line.split(maxsplit=1)
            if word and word[0] in ("CC", "LD", "AR", "BTF", "BTFIDS", "CC [M]", "LD [M]"):
                compiled += word[0] == "CC"
                latest = line.strip()
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                progress(f"[{label}] {_mmss(now - t0)} elapsed, {compiled} compiled; {latest}")
        rc = proc.wait()
    seconds = time.monotonic() - t0
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise UserError(
            f"[{label}] make {' '.join(args)} failed ({rc}); log {log}:\n" + "\n".join(tail)
        )
    progress(f"[{label}] make {' '.join(args)}: {_mmss(seconds)} ({compiled} files compiled)")
    return seconds


def _mmss(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


def _module(recipe: Recipe, variant: Variant, top: Path, log: Path, jobs: int,
            progress: Progress) -> Path | None:  # fmt: skip
    if recipe.module_dir is None or recipe.module_name is None:
        return None
    mdir = build_root(recipe) / f"module-{variant.name}"
    if mdir.exists():
        shutil.rmtree(mdir)
    shutil.copytree(recipe.module_dir, mdir)  # build outputs stay out of the repository
    make(top, [f"-j{jobs}", f"M={mdir}", "modules"], log, f"{variant.name} module", progress)
    ko = mdir / f"{recipe.module_name}.ko"
    if not ko.is_file():
        raise UserError(f"module build left no {ko}")
    return ko


def _install(recipe: Recipe, variant: Variant, top: Path, ko: Path | None, meta: dict,
             progress: Progress) -> tuple[Path, str]:  # fmt: skip
    dest = install_dir(recipe, variant)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copy2(top / "arch" / "x86" / "boot" / "bzImage", tmp / "bzImage")
    shutil.copy2(top / ".config", tmp / "config")
    shutil.copy2(top / "System.map", tmp / "System.map")
    if ko is not None:
        shutil.copy2(ko, tmp / ko.name)
    if "modules" in recipe.targets:
        _run(["make", f"INSTALL_MOD_PATH={tmp}", "INSTALL_MOD_STRIP=1", "modules_install"],
             top, "make modules_install")  # fmt: skip
        for link in (tmp / "lib" / "modules").glob("*/build"):
            link.unlink()  # points into the build tree
    release = bzimage_version(tmp / "bzImage") or "?"
    meta = meta | {"release": release, "module": ko.name if ko else None}
    (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    progress(f"[{variant.name}] installed {release} in {dest} (lab:{variant.label(recipe)})")
    return dest, release


def btf_base(recipe: Recipe, variant: Variant) -> Path:
    """A variant's vmlinux reduced to its BTF (as Debian's headers ship it): the base of its
    module's BTF once the shared tree holds the other variant's vmlinux."""
    return build_root(recipe) / f"vmlinux-btf-{variant.name}"


def _save_btf_base(recipe: Recipe, variant: Variant, top: Path) -> None:
    out = btf_base(recipe, variant)
    _run(["objcopy", "--only-section=.BTF", "--only-section=.BTF_ids", str(top / "vmlinux"),
          str(out) + ".tmp"], top, "objcopy vmlinux BTF")
    Path(str(out) + ".tmp").replace(out)


@contextmanager
def _with_vmlinux(top: Path, base: Path) -> Iterator[None]:
    """Inside: the tree's vmlinux is `base`; after: the tree's own, untouched (same inode and
    mtime, so make sees nothing new)."""
    real, kept = top / "vmlinux", top / ".vmlinux.rcupending-kept"
    real.rename(kept)
    try:
        shutil.copy2(base, real)
        yield
    finally:
        real.unlink(missing_ok=True)
        kept.rename(real)


def _module_only(recipe: Recipe, v: Variant, top: Path, marker: dict, digest: str, jobs: int,
                 progress: Progress) -> VariantResult:  # fmt: skip
    """The kernel is current, its module is not: put the tree in this variant's configuration
    (its generated headers and release string) and rebuild the module alone into the
    installed kernel's dir, its BTF on the BTF of the vmlinux installed (kept at its build:
    BTF encoding is not reproducible, so a rebuilt vmlinux would not do)."""
    t0 = time.monotonic()
    log = build_root(recipe) / f"build-{v.name}.log"
    log.write_text("")
    configure(recipe, v, top, progress)
    make(top, [f"-j{jobs}", f"LOCALVERSION=-{v.name}", "modules_prepare"], log, v.name,
         progress)  # fmt: skip
    with _with_vmlinux(top, btf_base(recipe, v)):
        ko = _module(recipe, v, top, log, jobs, progress)
    dest = install_dir(recipe, v)
    if ko is not None:
        shutil.copy2(ko, dest / (ko.name + ".tmp"))
        (dest / (ko.name + ".tmp")).replace(dest / ko.name)
    seconds = time.monotonic() - t0
    meta = marker | {"recipe_hash": digest, "module_hash": module_hash(recipe),
                     "module_seconds": round(seconds, 1)}
    write_marker(dest, meta)
    progress(f"[{v.name}] module rebuilt in {_mmss(seconds)} (kernel {marker['release']} kept)")
    return VariantResult(v.name, v.label(recipe), dest, marker["release"], seconds, False, True)


# ---------------------------------------------------------------- the command


def build(
    recipe_path: Path | None = None,
    variants: list[str] | None = None,
    *,
    jobs: int = 3,
    force: bool = False,
    progress: Progress = print,
) -> list[VariantResult]:
    """Build (or find cached) the chosen variants of a recipe; results in recipe order."""
    recipe = parse_recipe(recipe_path or default_recipe())
    chosen = [recipe.variant(n) for n in variants] if variants else list(recipe.variants)
    chosen = [v for v in recipe.variants if v in chosen]
    with locked(cache_dir() / "lab-build.lock"):
        apt, pkg = _resolve_source(recipe, progress)
        digest = recipe_hash(recipe, pkg.version)
        kdigest = kernel_hash(recipe, pkg.version)
        results: list[VariantResult] = []
        todo, module_todo = [], []
        for v in chosen:
            m = read_marker(install_dir(recipe, v))
            if m and m.get("recipe_hash") == digest and not force:
                progress(
                    f"[{v.name}] up to date: lab:{v.label(recipe)} {m['release']} ({digest})"
                )
                results.append(VariantResult(v.name, v.label(recipe), install_dir(recipe, v),
                                             m["release"], 0.0, True))  # fmt: skip
            elif (m and m.get("kernel_hash") == kdigest and not force
                  and btf_base(recipe, v).is_file()):
                module_todo.append((v, m))
            else:
                todo.append(v)
        if not todo and not module_todo:
            return results
        t_all = time.monotonic()
        top = _prepare_tree(recipe, apt, pkg, progress)
        for v, m in module_todo:
            results.append(_module_only(recipe, v, top, m, digest, jobs, progress))
        for v in todo:
            t0 = time.monotonic()
            log = build_root(recipe) / f"build-{v.name}.log"
            log.write_text("")
            configure(recipe, v, top, progress)
            make(top, [f"-j{jobs}", f"LOCALVERSION=-{v.name}", *recipe.targets], log, v.name,
                 progress)  # fmt: skip
            _save_btf_base(recipe, v, top)
            ko = _module(recipe, v, top, log, jobs, progress)
            seconds = time.monotonic() - t0
            meta = {
                "spec": f"lab:{v.label(recipe)}",
                "recipe": str(recipe.root.relative_to(REPO_ROOT))
                if recipe.root.is_relative_to(REPO_ROOT) else str(recipe.root),
                "recipe_hash": digest,
                "kernel_hash": kdigest,
                "module_hash": module_hash(recipe),
                "variant": v.name,
                "options": v.options,
                "source": {"package": pkg.name, "version": pkg.version, "pkg": pkg.__dict__},
                "patches": [p.name for p in recipe.patches],
                "build_seconds": round(seconds, 1),
                "jobs": jobs,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }  # fmt: skip
            dest, release = _install(recipe, v, top, ko, meta, progress)
            results.append(VariantResult(v.name, v.label(recipe), dest, release, seconds, False))
            progress(f"[{v.name}] built in {_mmss(seconds)}")
        progress(f"all built in {_mmss(time.monotonic() - t_all)}")
        order = {v.name: i for i, v in enumerate(recipe.variants)}
        return sorted(results, key=lambda r: order[r.variant])
