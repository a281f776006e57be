"""Every environment knob of the tool, read here and nowhere else.

RCUPENDING_SAMPLE      follow 1 in N kvfree_rcu/rcu_pending objects (N a power of two; kvfree_rcu
                       default 64 after the settling window, rcu_pending every object)
RCUPENDING_SETTLE      kvfree_rcu: seconds after attach in which every object is followed, so
                       frees of objects enqueued before attach are told apart (default 30)
RCUPENDING_PENDING_PEAK  1: keep kvfree_rcu's pending high-water mark (a global atomic)
RCUPENDING_TRACK_MAX   size of the per-object tracking maps (loss tests, tiny hosts)
RCUPENDING_LAB_SPEC    set by `rcupending lab` in the guest: the kernel SPEC it booted
RCUPENDING_LAB_SOURCE  ... and where that kernel came from
RCUPENDING_CACHE       cache dir (else $XDG_CACHE_HOME/rcupending-tools, ~/.cache/...)
RCUPENDING_SHARED_KERNELS  project-built kernels (else ../shared/kernels beside the repo)
RCUPENDING_BPF_DIR     the BPF sources (else bpf/ of this checkout)
RCUPENDING_VM_ACCEL    auto | kvm | tcg: how lab VMs boot
BCC_KERNEL_SOURCE      bcc's headers tree (bcc reads it too)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

SAMPLE_ENV = "RCUPENDING_SAMPLE"
SETTLE_ENV = "RCUPENDING_SETTLE"
PENDING_PEAK_ENV = "RCUPENDING_PENDING_PEAK"
KVFREE_SAMPLE_DEFAULT = 64
SETTLE_DEFAULT_S = 30
TRACK_MAX_ENV = "RCUPENDING_TRACK_MAX"
LAB_SPEC_ENV = "RCUPENDING_LAB_SPEC"
LAB_SOURCE_ENV = "RCUPENDING_LAB_SOURCE"
CACHE_ENV = "RCUPENDING_CACHE"
SHARED_KERNELS_ENV = "RCUPENDING_SHARED_KERNELS"
BPF_DIR_ENV = "RCUPENDING_BPF_DIR"
VM_ACCEL_ENV = "RCUPENDING_VM_ACCEL"
HEADERS_ENV = "BCC_KERNEL_SOURCE"
VM_ACCEL_CHOICES = ("auto", "kvm", "tcg")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_int(name: str, ok: Callable[[int], bool], what: str) -> int | None:
    """Environment variable `name` as an int (None when unset); one line unless ok(value)."""
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not ok(value):
        raise UserError(f"{name}={text!r}: give {what}")
    return value


def track_max() -> int | None:
    """RCUPENDING_TRACK_MAX (None when unset): one line when it is not 1..2^24."""
    return _env_int(TRACK_MAX_ENV, lambda v: 1 <= v <= 1 << 24, "a number of objects, 1..16777216")


def sample_one_in() -> int | None:
    """RCUPENDING_SAMPLE (None when unset or 1): one line unless a power of two."""
    value = _env_int(SAMPLE_ENV, lambda v: 1 <= v <= 1 << 16 and not v & (v - 1),
                     "a power of two, 1..65536 (1: every object)")
    return value if value is not None and value > 1 else None


def kvfree_sample_one_in() -> int:
    """kvfree_rcu follows 1 in this many objects after its settling window (1: all)."""
    value = _env_int(SAMPLE_ENV, lambda v: 1 <= v <= 1 << 16 and not v & (v - 1),
                     "a power of two, 1..65536 (1: every object)")
    return KVFREE_SAMPLE_DEFAULT if value is None else value


def settle_seconds() -> int:
    """kvfree_rcu's settling window: every object followed for this long after attach."""
    value = _env_int(SETTLE_ENV, lambda v: 0 <= v <= 3600, "seconds, 0..3600")
    return SETTLE_DEFAULT_S if value is None else value


def default_settle(seconds: int) -> None:
    """A command's own settling window unless RCUPENDING_SETTLE says otherwise (bench
    overhead measures the steady state: 0)."""
    os.environ.setdefault(SETTLE_ENV, str(seconds))


def pending_peak() -> bool:
    return os.environ.get(PENDING_PEAK_ENV, "") == "1"


def keep_pending_peak() -> None:
    """Keep kvfree_rcu's pending high-water mark (compare's runs), in this process."""
    os.environ[PENDING_PEAK_ENV] = "1"


def set_sample(n: int) -> None:
    """`--sample N`: for this process and every child (lab guests inherit it)."""
    os.environ[SAMPLE_ENV] = str(n)
    sample_one_in()


def lab() -> dict[str, str] | None:
    """{spec, source} inside a lab VM (set by `rcupending lab`), else None."""
    if spec := os.environ.get(LAB_SPEC_ENV):
        return {"spec": spec, "source": os.environ.get(LAB_SOURCE_ENV, "")}
    return None


def lab_env(spec: str, source: str) -> dict[str, str]:
    """What a lab guest's environment says about its kernel (read back by lab())."""
    return {LAB_SPEC_ENV: spec, LAB_SOURCE_ENV: source}


def cache_dir() -> Path:
    """$RCUPENDING_CACHE, or $XDG_CACHE_HOME/rcupending-tools, or ~/.cache/rcupending-tools."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rcupending-tools"


def shared_kernels_dir() -> Path:
    env = os.environ.get(SHARED_KERNELS_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "kernels"


def bpf_dir() -> Path:
    return Path(os.environ.get(BPF_DIR_ENV) or REPO_ROOT / "bpf")


def headers_dir() -> Path | None:
    env = os.environ.get(HEADERS_ENV)
    return Path(env) if env else None


def set_headers_dir(path: Path) -> None:
    os.environ[HEADERS_ENV] = str(path)  # bcc reads it at compile time


def vm_accel() -> str:
    value = os.environ.get(VM_ACCEL_ENV, "auto").strip().lower() or "auto"
    if value not in VM_ACCEL_CHOICES:
        raise UserError(f"{VM_ACCEL_ENV}={value!r}: expected one of {', '.join(VM_ACCEL_CHOICES)}")
    return value
