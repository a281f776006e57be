"""Compile and load bpf/*.bpf.c with bcc, and explain failures in one line.

bcc is Debian's python3-bpfcc (the PyPI package named "bcc" is unrelated). It needs a kernel
headers tree to compile; any recent one works because struct layouts come from BTF at run time.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..errors import UserError
from ..kernel import kprobes_available
from ..paths import TRACEFS, TRACEFS_DIRS, cache_dir

BPF_DIR = config.bpf_dir()


class LoadError(Exception):
    """A BPF program failed to compile, load or attach; `reason` is one line for users."""

    def __init__(self, reason: str, log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


def ensure_tracefs() -> None:
    """bcc picks its tracefs path at import time: mount tracefs first if it is not."""
    if any((d / "events").is_dir() for d in TRACEFS_DIRS):
        return
    if os.geteuid() == 0:
        subprocess.run(
            ["mount", "-t", "tracefs", "tracefs", str(TRACEFS)], check=False, capture_output=True
        )


def find_headers() -> Path | None:
    """A headers tree for bcc: the running kernel's, the set-up's cached copy, or kheaders.

    The cached copy comes before kheaders: bcc unpacks /sys/kernel/kheaders.tar.xz at every
    boot, seconds of xz under TCG, and any recent tree compiles (layouts come from BTF)."""
    if env := config.headers_dir():
        return env
    release = os.uname().release
    if Path(f"/lib/modules/{release}/build/include").is_dir():
        return Path(f"/lib/modules/{release}/build")
    # scripts/setup.sh caches Debian's headers there (lab.kernels.debian_headers).
    for candidate in sorted((cache_dir() / "headers").glob("*/src/include/linux"), reverse=True):
        return candidate.parent.parent
    return None  # bcc unpacks kheaders itself when the kernel has them


def import_bcc() -> Any:
    """Import Debian's bcc module, or say how to get it."""
    ensure_tracefs()
    try:
        import bcc  # noqa: PLC0415
    except ImportError as e:
        raise UserError(
            "bcc is not importable: install Debian's python3-bpfcc and use a venv with "
            "--system-site-packages (run scripts/setup.sh)"
        ) from e
    if not hasattr(bcc, "BPF"):
        raise UserError(
            f"the 'bcc' module at {bcc.__file__} is not BPF Compiler Collection "
            "(PyPI's 'bcc' is unrelated): pip uninstall bcc"
        )
    return bcc


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("BPF needs root (CAP_BPF and CAP_PERFMON): run with sudo")


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what libbcc prints on fd 2 (verifier logs, errno text) while loading."""
    out: list[str] = []
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        libc.fflush(None)
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            libc.fflush(None)
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def classify(kind: str, message: str, log: str) -> str:
    """One-line reason for a failed load/attach of an attach `kind`."""
    text = f"{message}\n{log}"
    if (
        "Unable to find kernel headers" in text
        or "chdir(/lib/modules" in text
        and "Failed to compile" in text
    ):
        return "bcc found no kernel headers (run scripts/setup.sh, or set BCC_KERNEL_SOURCE)"
    if "processed " in log and " insns" in log:  # the verifier's log: quote its verdict
        lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
        idx = next((i for i, ln in enumerate(lines) if ln.startswith("processed ")), len(lines))
        verdict = lines[idx - 1] if idx > 0 else "rejected"
        return f"{kind}: verifier rejected the program: {verdict}"
    if kind == "fentry":
        if "Operation not permitted" in text or "super-user" in text:
            return "BPF tracing programs refused" + (
                " (EPERM as root)" if os.geteuid() == 0 else " (not root)"
            )
        if "No such file" in text or "Invalid argument" in text and "btf" in text.lower():
            return "fentry: function not in BTF (inlined or notrace)"
        if "Device or resource busy" in text:
            return "fentry: trampoline busy"
    if kind == "kprobe":
        if not kprobes_available():
            return "kprobes unavailable (CONFIG_KPROBES off: no kprobe PMU, no kprobe_events)"
        if "not traceable" in text or "No such file" in text:
            return "kprobe: not traceable (inlined, notrace or blacklisted)"
        if "Operation not permitted" in text:
            return "kprobe: attach refused (EPERM)"
    compile_error = next((ln.strip() for ln in log.splitlines() if "error:" in ln), None)
    if compile_error:
        return f"{kind}: BPF compile error: {compile_error}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "unknown error")
    return f"{kind}: {first}"


@dataclass
class Loaded:
    """A loaded bcc module and what it attached; `close()` detaches everything."""

    bpf: Any
    kind: str

    def close(self) -> None:
        self.bpf.cleanup()

    def __enter__(self) -> Loaded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def program_text(bpf_file: str) -> str:
    """bpf/common.bpf.c followed by `bpf_file`: bcc rewrites map calls only in its main
    source, so the shared map helpers cannot live in a header."""
    parts = []
    for name in ("common.bpf.c", bpf_file):
        path = BPF_DIR / name
        if not path.exists():
            raise UserError(f"BPF source {path} is missing (set RCUPENDING_BPF_DIR?)")
        parts.append(f'#line 1 "{path}"\n{path.read_text()}')
    return "\n".join(parts)


def load(
    bpf_file: str,
    defines: dict[str, str | int | None],
    kind: str,
    attach: list[tuple[str, str, str]] = (),
) -> Loaded:
    """Compile `bpf_file` with -D `defines`, load it (fentry programs auto-attach) and attach
    each (mechanism, target, fn_name) in `attach`: mechanism "kprobe" | "kretprobe"."""
    bcc = import_bcc()
    headers = find_headers()
    if headers is not None:
        config.set_headers_dir(headers)
    cflags = [f"-I{BPF_DIR}", "-Wno-macro-redefined"]
    cflags += [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in defines.items()]
    text = program_text(bpf_file)
    b = None
    with captured_stderr() as err:
        try:
            b = bcc.BPF(text=text.encode(), cflags=cflags)
            for mechanism, target, fn_name in attach:
                if mechanism == "kprobe":
                    b.attach_kprobe(event=target, fn_name=fn_name)
                elif mechanism == "kretprobe":
                    b.attach_kretprobe(event=target, fn_name=fn_name)
                else:
                    raise ValueError(mechanism)
        except Exception as e:  # bcc raises bare Exception with a message
            message = str(e)
            if b is not None:
                b.cleanup()
            exc: Exception | None = e
        else:
            exc = None
    if exc is not None:
        log = err[0] if err else ""
        raise LoadError(classify(kind, message, log), log) from exc
    return Loaded(b, kind)

