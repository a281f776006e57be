"""The nolock stress: real calls of the any-context page allocator, made by BPF programs.

bcc cannot call kfuncs, so the driver is a libbpf object (bpf/nolock_stress.bpf.c, built with
Debian's clang) plus a small C loader (stress/native/nolock_driver.c, gcc + libbpf-dev), both
cached under ~/.cache/rcupending-tools/bin by a hash of their sources (scripts/setup.sh builds
them; here at first use otherwise). Lab VMs see the host's filesystem, so they run the host's
build; kfunc calls are resolved against the running kernel's BTF when the object loads.

Scenarios, by what the kernel has:
- `stream` (6.17+): a socket-filter program run by BPF_PROG_TEST_RUN prints ~240-byte
  messages to its BPF stderr stream (bpf_stream_vprintk, `_impl` from 6.18). 6.17/6.18 carve
  messages out of a per-CPU page from alloc_pages_nolock() (bpf_stream_page_replace); 7.x
  kmalloc_nolock()s each message (slab refills reach alloc_frozen_pages_nolock()).
- `arena` (7.x): a non-sleepable program calls bpf_arena_alloc_pages() for one page per run:
  one memcg-charged alloc_pages_nolock(__GFP_ACCOUNT) each (bh disabled in a test run, so
  __bpf_alloc_page takes the nolock path). `memory_max` puts the driver in a fresh cgroup whose
  memory.max is set just above its usage once the object is loaded: the charges then fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..kernel import KernelInfo
from ..paths import bin_dir, process_running
from . import reap

HERE = Path(__file__).resolve().parent
LOADER = HERE / "native" / "nolock_driver.c"
BPF_SOURCE = HERE.parent.parent / "bpf" / "nolock_stress.bpf.c"
STREAM_KFUNCS = ("bpf_stream_vprintk_impl", "bpf_stream_vprintk")  # 6.18+, 6.17
ARENA_NON_SLEEPABLE = "bpf_arena_alloc_pages_non_sleepable"  # 7.x: arena alloc from atomic
CGROUP_ROOT = Path("/sys/fs/cgroup")
# objects of the BPF source: variant -> clang -D flags
VARIANTS: dict[str, list[str]] = {
    "stream-bpf_stream_vprintk": ["-DSTREAM_KFUNC=bpf_stream_vprintk"],
    "stream-bpf_stream_vprintk_impl": ["-DSTREAM_KFUNC=bpf_stream_vprintk_impl"],
    "stream-implicit": ["-DSTREAM_IMPLICIT"],
    "arena": ["-DARENA"],
}


def _digest() -> str:
    h = hashlib.sha256(LOADER.read_bytes() + BPF_SOURCE.read_bytes())
    return h.hexdigest()[:12]


def build_dir() -> Path:
    return bin_dir() / f"nolock-{_digest()}"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"the nolock stress driver needs {name} (apt-get install {package})")
    return path


def build() -> Path:
    """Build the loader and every BPF object variant (atomically, into a fresh directory)."""
    out = build_dir()
    if (out / "nolock_driver").is_file():
        return out
    clang = _tool("clang", "clang")
    gcc = _tool("gcc", "gcc libc6-dev")
    if not Path("/usr/include/bpf/libbpf.h").exists():
        raise UserError("the nolock stress driver needs libbpf (apt-get install libbpf-dev)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    multiarch = "/usr/include/x86_64-linux-gnu"
    steps = [
        [clang, "-O2", "-g", "-target", "bpf", f"-I{multiarch}", *flags, "-c", str(BPF_SOURCE),
         "-o", str(tmp / f"{variant}.o")]
        for variant, flags in VARIANTS.items()
    ]
    steps.append([gcc, "-O2", "-Wall", "-o", str(tmp / "nolock_driver"), str(LOADER), "-lbpf"])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln),
                         proc.stderr[:200])
            raise UserError(f"building the nolock stress driver failed: {first.strip()}")
    try:
        os.rename(tmp, out)
    except OSError:  # a concurrent build won
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def stream_variant(params: dict[str, list[str] | None]) -> str | None:
    """The stream object for the kfunc prototypes this kernel's BTF declares (name -> params):
    7.x declares bpf_stream_vprintk without its implicit aux argument (4 parameters), 6.18
    bpf_stream_vprintk_impl with it, 6.17 bpf_stream_vprintk with it (5 parameters)."""
    plain = params.get("bpf_stream_vprintk")
    if plain is not None and len(plain) == 4:
        return "stream-implicit"
    if params.get("bpf_stream_vprintk_impl") is not None:
        return "stream-bpf_stream_vprintk_impl"
    if plain is not None:
        return "stream-bpf_stream_vprintk"
    return None


def scenarios(kernel: KernelInfo) -> dict[str, str]:
    """scenario -> the object variant this kernel can run."""
    out = {}
    btf = kernel.btf
    if btf is not None:
        params = {}
        for name in STREAM_KFUNCS:
            found = btf.func_params(name)
            params[name] = None if found is None else [p[0] for p in found]
        if (variant := stream_variant(params)) is not None:
            out["stream"] = variant
    if kernel.symbol(ARENA_NON_SLEEPABLE) is not None:
        out["arena"] = "arena"
    return out


def unavailable_reason(kernel: KernelInfo, scenario: str) -> str:
    major, minor = kernel.version
    if scenario == "stream":
        return (f"no bpf_stream_vprintk kfunc (BPF streams arrived in 6.17); "
                f"this kernel is {major}.{minor}")
    return (f"no {ARENA_NON_SLEEPABLE} (arena allocation from non-sleepable programs "
            f"arrived in 7.x); this kernel is {major}.{minor}")


@dataclass
class Cgroup:
    """A fresh cgroup v2 for the driver, removed by close()."""

    path: Path
    before: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Cgroup:
        if not (CGROUP_ROOT / "cgroup.controllers").exists():
            raise UserError("--memory-max needs cgroup v2 mounted at /sys/fs/cgroup")
        if "memory" not in (CGROUP_ROOT / "cgroup.subtree_control").read_text().split():
            try:
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory")
            except OSError as e:
                raise UserError(f"cannot enable the memory controller: {e.strerror}") from e
        for stale in CGROUP_ROOT.glob("rcupending-nolock-*"):  # of a killed run
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not process_running(int(pid)):
                try:
                    stale.rmdir()
                except OSError:
                    pass
        path = CGROUP_ROOT / f"rcupending-nolock-{os.getpid()}"
        path.mkdir(exist_ok=True)
        return cls(path)

    def events(self) -> dict[str, int]:
        text = (self.path / "memory.events").read_text()
        return {k: int(v) for k, v in (ln.split() for ln in text.splitlines())}

    def close(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


@dataclass
class Run:
    proc: subprocess.Popen
    scenario: str
    cgroup: Cgroup | None = None
    limit: dict[str, Any] | None = None

    @property
    def pids(self) -> set[int]:
        return {self.proc.pid}

    def go(self) -> None:
        """Let the loaded driver start its batches."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def abort(self) -> None:
        self.proc.kill()
        self.proc.communicate()
        if self.cgroup is not None:
            self.cgroup.close()

    def wait(self, timeout: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise UserError(f"nolock stress driver did not finish in {timeout:.0f} s") from None
        finally:
            if self.cgroup is not None:
                self.cgroup.close()
        if self.proc.returncode != 0:
            raise UserError(f"nolock stress driver failed (exit {self.proc.returncode}): "
                            f"{err.strip()[-300:]}")
        result = json.loads(out.strip().splitlines()[-1])
        result["pid"] = self.proc.pid
        if self.cgroup is not None:
            result["memcg"] = {"path": str(self.cgroup.path), **(self.limit or {})}
        return result


def start(
    kernel: KernelInfo,
    scenario: str,
    batches: int,
    repeat: int,
    memory_max: int | None = None,
    irq_seconds: float = 0.0,
) -> Run:
    """Load the driver (in a tight cgroup with `memory_max` headroom bytes for `arena`) and
    wait until it is ready; `Run.go()` starts the batches."""
    have = scenarios(kernel)
    if scenario not in have:
        raise UserError(f"stress nolock {scenario}: {unavailable_reason(kernel, scenario)}")
    out = build()
    cgroup = Cgroup.create() if memory_max is not None else None

    dies_with_us = reap.preexec()

    def enter_cgroup() -> None:  # in the child, before exec: the map's memcg is this one
        dies_with_us()
        if cgroup is not None:
            (cgroup.path / "cgroup.procs").write_text("0")

    args = [str(out / "nolock_driver"), str(out / f"{have[scenario]}.o"),
            scenario.split("-")[0], "--batches", str(batches), "--repeat", str(repeat),
            "--wait", "1", "--irq-seconds", str(irq_seconds)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=enter_cgroup)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith('{"ready"'):
        proc.kill()
        _, err = proc.communicate()
        if cgroup is not None:
            cgroup.close()
        raise UserError(f"nolock stress driver failed to load: {err.strip()[-300:]}")
    run = Run(proc, scenario, cgroup)
    if cgroup is not None and memory_max is not None:
        current = int((cgroup.path / "memory.current").read_text())
        limit = current + memory_max
        (cgroup.path / "memory.max").write_text(str(limit))
        run.limit = {"memory_current_at_start": current, "memory_max": limit,
                     "headroom": memory_max, "cgroup_id": cgroup.path.stat().st_ino}
    return run
