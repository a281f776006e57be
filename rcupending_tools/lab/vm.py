"""Run a command in a virtme-ng VM (KVM where it works, else QEMU TCG: lab/accel.py) on a
LabKernel and collect rc, output, dmesg."""

from __future__ import annotations

import atexit
import codecs
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .. import config
from ..errors import UserError
from ..paths import cache_dir
from ..signals import terminate_as_interrupt
from . import accel
from .kernels import LabKernel

TAIL_LINES = 20
KEPT_CONSOLES = 20  # failed VMs' whole consoles kept in the cache (keep_console)
STOP_GRACE = 10.0  # seconds vng gets to exit on SIGTERM before its process group gets SIGKILL

# Kernel splats, after the "[  12.345678] " / "<4>" / "[T123]" prefixes are stripped.
_PREFIX = re.compile(r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\]\s*)?(?:\[\s*[TC]\d+\]\s*)?")
_SPLAT = re.compile(
    r"^WARNING: "  # WARN*() and lockdep/RCU-lockdep reports
    r"|(?:^|\w: )BUG: "  # BUG: ..., watchdog: BUG: soft lockup, BUG: KASAN: ...
    r"|^kernel BUG at "
    r"|^Oops\b"
    r"|general protection fault"
    r"|INFO: rcu_\w+ (?:self-)?detected (?:expedited )?stalls?"
    r"|rcu_\w+ kthread starved for"
    r"|\bsoft lockup\b|\bhard LOCKUP\b"
    r"|INFO: task \S+ blocked for more than"
    r"|^\S*KASAN: |^UBSAN: "
    r"|Kernel panic - not syncing"
)


# QEMU's multi-threaded TCG races the kernel's int3-based live patching (jump labels at boot,
# fentry nops when a BPF trampoline attaches): an `Oops: int3` on a half-patched instruction.
# Hardware and KVM do not do this; such a VM is booted again (up to twice: a CI rehearsal of
# 2026-12-07 saw lab:6.12-rcupending die of it at 1.9 s, then again at 35.6 s), and the
# failures kept.
_TCG_INT3 = re.compile(r"Oops: int3\b")


@dataclass
class VmResult:
    rc: int
    output: str  # the command's stdout+stderr
    dmesg: str
    splats: list[str]
    boot_ok: bool  # False if the command never ran to completion (no rc from the guest)
    seconds: float
    console: str = ""  # vng's stderr: kernel console and virtme messages
    accel: str = "tcg"  # "kvm" or "tcg"
    started: bool = True  # the guest script began (False: the boot itself failed)
    # VMs run again (died before the command started, or of a TCG int3 Oops): their first
    # splat (or last console line); kept so that a rerun is reported, never hidden
    boot_failures: list[str] = field(default_factory=list)
    why: str = ""  # when boot_ok is False: timeout or vng's exit


def scan_splats(dmesg: str) -> list[str]:
    """Lines of `dmesg` that report a kernel warning, bug, oops, stall, lockup or hang."""
    return [ln.strip() for ln in dmesg.splitlines() if _SPLAT.search(_PREFIX.sub("", ln))]


def _tool(name: str, install: str) -> str:
    local = Path(sys.executable).parent / name  # the venv's own, beside the interpreter
    exe = str(local) if local.is_file() else shutil.which(name)
    if exe is None:
        raise UserError(f"{name} not found: {install}")
    return exe


def guest_script(kernel: LabKernel, cmd: Sequence[str], xch: Path, env: dict[str, str]) -> str:
    """The sh wrapper run inside the guest (pure; exposed for tests)."""
    exports = {"PATH": shlex.quote(str(Path(sys.executable).parent)) + ":$PATH"}
    if kernel.headers is not None:
        exports["BCC_KERNEL_SOURCE"] = shlex.quote(str(kernel.headers))
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise UserError(f"bad environment variable name {k!r}")
        exports[k] = shlex.quote(v)
    x = shlex.quote(str(xch))
    lines = ["#!/bin/sh"] + [f"export {k}={v}" for k, v in exports.items()]
    lines += [
        f": > {x}/started",
        'mnt() { grep -q " $2 " /proc/mounts || mount -t $1 $1 $2 2>/dev/null; }',
        "mnt tracefs /sys/kernel/tracing",
        "mnt debugfs /sys/kernel/debug",
        f"cd {shlex.quote(os.getcwd())} || exit 125",
        f"{shlex.join(cmd)} 2>&1",
        "rc=$?",
        f"dmesg > {x}/dmesg 2>&1",
        f"echo $rc > {x}/rc.tmp && mv {x}/rc.tmp {x}/rc",
        "exit $rc",
    ]
    return "\n".join(lines) + "\n"


def vng_command(
    vng: str,
    kernel: LabKernel,
    xch: Path,
    *,
    append: Sequence[str],
    memory: str,
    cpus: int,
    rwdirs: Sequence[Path] = (),
    accel: str = "tcg",
) -> list[str]:
    argv = [vng, "-v", "-r", str(kernel.image)]
    if accel != "kvm":
        argv.append("--disable-kvm")
    argv += ["--memory", memory, "--cpus", str(cpus)]
    for a in append:
        argv += ["--append", a]
    for d in rwdirs:  # host dirs the guest may write (the rest of its view is copy-on-write)
        argv += ["--rwdir", str(Path(d).resolve())]
    return argv + ["--rwdir", str(xch), "--", f"sh {shlex.quote(str(xch / 'guest.sh'))}"]


def _pump(src, sink: list[str], stream: TextIO | None) -> None:
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    while chunk := src.read1(65536):
        text = dec.decode(chunk)
        sink.append(text)
        if stream is not None:
            stream.write(text)
            stream.flush()
    sink.append(dec.decode(b"", final=True))


def run_in_vm(
    kernel: LabKernel,
    cmd: list[str],
    *,
    append: Sequence[str] = (),
    memory: str = "2G",
    cpus: int = 2,
    env: dict[str, str] | None = None,
    stream: TextIO | None = sys.stdout,
    timeout: float = 1800,
    check: bool = True,
    rwdirs: Sequence[Path] = (),
    boot_retries: int = 2,
) -> VmResult:
    """Boot `kernel` (KVM where it works, else TCG), run `cmd` as root in the host's cwd,
    stream its output. The guest's environment names the kernel (config.lab()) and adds `env`.

    A VM that dies before the command starts, or of a TCG int3 Oops at any time (an
    instruction being live-patched while another vCPU runs it), is run again up to
    `boot_retries` times; the failure is printed and kept in `boot_failures`. Raises
    UserError (with the console tail) if the command never completed, unless check=False,
    which returns a VmResult with boot_ok=False instead.
    """
    stop_on_exit()
    _tool("qemu-system-x86_64", "apt-get install qemu-system-x86")
    vng = _tool("vng", "pip install virtme-ng (in this venv)")
    if not kernel.image.is_file():
        raise UserError(f"kernel image {kernel.image} is missing")
    for d in rwdirs:
        if not Path(d).is_dir():
            raise UserError(f"--rwdir {d}: not a directory")
    failures: list[str] = []
    while True:
        res = _boot_and_run(kernel, cmd, vng, append=append, memory=memory, cpus=cpus,
                            env={**config.lab_env(kernel.spec, kernel.source), **(env or {})},
                            stream=stream, timeout=timeout, rwdirs=rwdirs)
        res.boot_failures = list(failures)
        if res.boot_ok or len(failures) >= boot_retries or _exiting:
            break
        if res.started and not any(_TCG_INT3.search(sp) for sp in res.splats):
            break  # the command ran and the VM died of something else: that is a result
        what = (res.splats or [ln for ln in res.console.splitlines() if ln.strip()][-1:]
                or [f"vng exit {res.rc}"])[0]
        failures.append(what)
        print(f"VM {kernel.spec} died {'running' if res.started else 'before'} the command "
              f"({what}): running it again", file=sys.stderr)
    if not res.boot_ok and check:
        tail = "\n".join((res.console + res.output).splitlines()[-TAIL_LINES:])
        kept = keep_console(kernel.spec, res)
        raise UserError(
            f"VM {kernel.spec} ({kernel.release}) did not complete the command "
            f"({res.why}); whole console in {kept}; console tail:\n{tail}"
        )
    return res


def keep_console(spec: str, res: VmResult) -> Path:
    """Write a failed VM's whole console and output to the cache (a panic's first lines, the
    ones that say what happened, are far above the tail an error message holds)."""
    d = cache_dir() / "vm-consoles"
    d.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^\w.-]", "-", spec) + time.strftime("-%Y%m%dT%H%M%S") + f"-{os.getpid()}.log"
    path = d / name
    path.write_text(f"{res.console}\n--- command output ---\n{res.output}", errors="replace")
    for old in sorted(d.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-KEPT_CONSOLES]:
        old.unlink(missing_ok=True)  # the newest few: a failing matrix must not fill the disk
    return path


def _boot_and_run(
    kernel: LabKernel,
    cmd: list[str],
    vng: str,
    *,
    append: Sequence[str],
    memory: str,
    cpus: int,
    env: dict[str, str],
    stream: TextIO | None,
    timeout: float,
    rwdirs: Sequence[Path],
) -> VmResult:
    """One boot: the guest script's rc, output and dmesg, or boot_ok=False."""
    xch = Path(tempfile.mkdtemp(prefix="rcupending-vm-"))
    try:
        (xch / "guest.sh").write_text(guest_script(kernel, cmd, xch, env))
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        vm_env = {**os.environ, "PATH": path}
        how = accel.select(cache_dir(), lambda: accel.probe_kvm(vng, kernel.image, vm_env))
        argv = vng_command(vng, kernel, xch, append=append, memory=memory, cpus=cpus,
                           rwdirs=rwdirs, accel=how)
        print(f"booting {kernel.spec} ({kernel.release}) under {accel.label(how)}…",
              file=sys.stderr)
        start = time.monotonic()
        out: list[str] = []
        con: list[str] = []
        timed_out = False
        with _vm_process(argv, vm_env) as proc:  # Ctrl-C or SIGTERM/SIGHUP unwinding stop it
            pumps = [
                threading.Thread(target=_pump, args=(proc.stdout, out, stream), daemon=True),
                threading.Thread(target=_pump, args=(proc.stderr, con, None), daemon=True),
            ]
            for t in pumps:
                t.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _stop(proc)
            for t, pipe in zip(pumps, (proc.stdout, proc.stderr), strict=True):
                t.join(timeout=10)
                if not t.is_alive():
                    pipe.close()
        seconds = time.monotonic() - start
        output, console = "".join(out), "".join(con)
        rc_file = xch / "rc"
        started = (xch / "started").exists()
        dmesg = (xch / "dmesg").read_text(errors="replace") if (xch / "dmesg").exists() else ""
        if rc_file.exists():
            rc = int(rc_file.read_text().strip() or 255)
            return VmResult(rc, output, dmesg, scan_splats(dmesg), True, seconds, console, how,
                            started)
        rc = proc.returncode if proc.returncode is not None else -1
        res = VmResult(rc, output, dmesg, scan_splats(console), False, seconds, console, how,
                       started)
        res.why = f"timed out after {timeout:.0f} s" if timed_out else f"vng exit {rc}"
        return res
    finally:
        shutil.rmtree(xch, ignore_errors=True)


# Running VMs (vng, each leading its own process group), stopped when this process exits:
# a VM run from a daemon thread (`top`'s lab feed) never unwinds at interpreter exit.
_running: set[subprocess.Popen] = set()
_lock = threading.Lock()
_exiting = False  # set at exit: no VM starts after the registry's stop


def stop_on_exit() -> None:
    """Make SIGTERM/SIGHUP (where no handler is set) unwind like Ctrl-C, so that the exit
    stops running VMs. Needs the main thread: call it there before running VMs in another
    one (run_in_vm calls it, to no effect outside the main thread)."""
    if threading.current_thread() is threading.main_thread():
        terminate_as_interrupt(keep=True)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start vng in its own session (one process group to stop) and register it, from a
    thread of its own: signals interrupt only the main thread, and a Ctrl-C or SIGTERM in
    the middle of Popen would lose a started VM."""
    got: list[subprocess.Popen | BaseException] = []

    def start() -> None:
        try:
            with _lock:  # started and registered at once, or not after the exit's stop
                if _exiting:
                    raise UserError("exiting: not starting a VM")
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, start_new_session=True)
                _running.add(proc)
            got.append(proc)
        except BaseException as e:  # raised in the caller's thread
            got.append(e)

    t = threading.Thread(target=start, name="vm-start")  # not a daemon: the exit waits for it
    t.start()
    t.join()
    if isinstance(res := got[0], BaseException):
        raise res
    return res


@contextmanager
def _vm_process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """vng, in the registry while the block runs; leaving the block stops it unless it
    ended."""
    proc = _spawn(argv, env)
    try:
        yield proc
    finally:
        _stop(proc)
        with _lock:
            _running.discard(proc)


def stop_all() -> None:
    """Stop every registered VM that is still running."""
    with _lock:
        procs = list(_running)
    for proc in procs:
        _stop(proc)


@atexit.register
def _stop_at_exit() -> None:
    global _exiting
    with _lock:
        _exiting = True
        busy = bool(_running)
    if busy and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C or kill
            signal.signal(sig, signal.SIG_IGN)  # does not cut the stop short
    stop_all()


def _stop(proc: subprocess.Popen) -> None:
    """Stop vng and its QEMU: SIGTERM to their process group, then (vng gone, or after
    STOP_GRACE s) SIGKILL to what is left of it. A VM that ended is left alone: once reaped,
    its pid may be another process's."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 5.0)):
        try:  # the group's id stays its own while a member (QEMU) lives, after vng's reaping
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
