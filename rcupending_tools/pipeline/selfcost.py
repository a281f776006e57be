"""The tool's own cost: CPU and memory of this process, and run time of its BPF programs.

`mark_attach()` stores the CPU baseline when the probes are attached (LiveSource.attach());
`sample()` returns the snapshot's `self_cost` object. Everything is read from this process's own
/proc files. Only `enable_stats()` (opt-in, `--self-cost`) turns BPF run-time statistics on, for
as long as the fd it returns stays open, like bpftop: the kernel drops it when the process dies.

BPF run time: the kernel prints `run_time_ns` and `run_cnt` in /proc/self/fdinfo/<fd> of every
BPF program fd (since 5.1), but only counts while BPF statistics are enabled
(`sysctl kernel.bpf_stats_enabled=1` or a BPF_ENABLE_STATS fd held by some process); otherwise
they stay 0. So the sums are reported only when the sysctl reads 1 or some program's count
moved (stats enabled through an fd, which the sysctl does not show); else null, as on kernels
whose fdinfo lacks the fields. Counts cover only the time stats were on.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

PROC = "/proc/self"
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"

BPF_ENABLE_STATS = 32  # bpf(2) command (5.8+)
BPF_STATS_RUN_TIME = 0
_NR_BPF = {"x86_64": 321, "aarch64": 280}
_NR = _NR_BPF.get(os.uname().machine)  # this machine's bpf() syscall number
_syscall: Any = None  # libc's syscall(), loaded by the first _bpf() call

_baseline: float | None = None  # user+system CPU seconds at attach
_stats_fd: int | None = None  # a BPF_ENABLE_STATS fd this process holds


@dataclass(frozen=True)
class Program:
    """One attached BPF program of this process: its probe, bcc function name and fd."""

    probe: str
    name: str
    fd: int


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """bpf(cmd, attr, sizeof(attr)): its result (an fd, or 0). OSError with the errno when it
    fails, ENOSYS where this machine's syscall number is unknown."""
    global _syscall
    if _NR is None:
        raise OSError(errno.ENOSYS, f"no bpf() syscall number for {os.uname().machine}")
    if _syscall is None:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
        _syscall.restype = ctypes.c_long
        # typed once: no ctypes objects made per call (a snapshot makes one per program)
        _syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
    ret = _syscall(_NR, cmd, attr, ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def enable_stats() -> int:
    """bpf(BPF_ENABLE_STATS, BPF_STATS_RUN_TIME): run-time stats stay on while the returned
    fd is open (close it with `disable_stats`). One line on refusal."""
    global _stats_fd
    if _NR is None:
        raise UserError(f"--self-cost: no bpf() syscall number for {os.uname().machine}")
    attr = ctypes.create_string_buffer(128)  # union bpf_attr: enable_stats.type = RUN_TIME
    ctypes.c_uint32.from_buffer(attr).value = BPF_STATS_RUN_TIME
    try:
        fd = _bpf(BPF_ENABLE_STATS, attr)
    except OSError as e:
        err = e.errno
        raise UserError(
            f"--self-cost: BPF_ENABLE_STATS refused ({errno.errorcode.get(err, err)}: "
            f"{os.strerror(err)}); it needs Linux 5.8+ and CAP_SYS_ADMIN"
        ) from None
    _stats_fd = fd
    return fd


def disable_stats(fd: int | None) -> None:
    """Close a BPF_ENABLE_STATS fd (statistics stop unless someone else holds one)."""
    global _stats_fd
    if fd is None:
        return
    try:
        os.close(fd)
    except OSError:
        pass
    if _stats_fd == fd:
        _stats_fd = None


def _cpu() -> float:
    t = os.times()
    return t.user + t.system  # this process, all threads; not its (stress) children


def mark_attach() -> None:
    """Remember this process's CPU time now: `cpu_seconds` counts from here."""
    global _baseline
    _baseline = _cpu()


def read_proc(path: str) -> str:
    """A small /proc file in three system calls (open, read, close: a snapshot's own cost is
    counted, README OVERHEAD); open() would add fstat, ioctl and lseek calls."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode(errors="replace")
    finally:
        os.close(fd)


_kept: dict[str, tuple[int, int]] = {}  # path -> (pid that opened it, fd)


def read_kept(path: str) -> str:
    """A small /proc file read at every snapshot, in one pread() on an fd kept open (offset 0
    makes the kernel print it afresh); opened again in a forked child, whose /proc/self is
    another process."""
    pid = os.getpid()
    kept = _kept.get(path)
    if kept is None or kept[0] != pid:
        kept = _kept[path] = pid, os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return os.pread(kept[1], 65536, 0).decode(errors="replace")


def rss_bytes(proc: str = PROC) -> int:
    statm = f"{proc}/statm"
    resident_pages = int((read_kept(statm) if proc == PROC else read_proc(statm)).split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def parse_fdinfo(text: str) -> dict[str, str]:
    """`key:\tvalue` lines of an fdinfo file -> {key: value}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


BPF_OBJ_GET_INFO_BY_FD = 15
# struct bpf_prog_info is UAPI and only grows: these offsets hold on every kernel that has the
# fields (run_* 5.1+, recursion_misses 5.12+; checked against this host's BTF by a host test)
PROG_INFO = {"prog_type": (0, "<I"), "prog_id": (4, "<I"), "run_time_ns": (192, "<Q"),
             "run_cnt": (200, "<Q"), "recursion_misses": (208, "<Q")}
PROG_INFO_LEN = 216
_PROG_FIELDS = tuple((k, off, struct.Struct(fmt)) for k, (off, fmt) in PROG_INFO.items())
_INFO_ATTR = struct.Struct("<IIQ")  # info: bpf_fd, info_len, info pointer


def _whole_info() -> struct.Struct:
    """Every PROG_INFO field of a full-length bpf_prog_info in one unpack (pad bytes between)."""
    fmt, at = "<", 0
    for off, f in sorted(PROG_INFO.values()):
        fmt += f"{off - at}x{f[1:]}" if off > at else f[1:]
        at = off + struct.calcsize("<" + f[1:])
    return struct.Struct(fmt)


_WHOLE_INFO = _whole_info()
assert [k for k, _ in sorted(PROG_INFO.items(), key=lambda kv: kv[1][0])] == [
    "prog_type", "prog_id", "run_time_ns", "run_cnt", "recursion_misses"]  # _bpf_prog_info's
_prog_info_ok = True  # False once the kernel refused: fdinfo from then on
_read_cache: dict[int, dict[str, Any]] | None = None  # within one_read()
_info_bufs = threading.local()  # bpf_prog_info's buffer and the call's attr, per thread


def _bpf_prog_info(fd: int) -> dict[str, int] | None:
    """The run statistics of the BPF program behind `fd` in one bpf(2) call (fdinfo takes
    three: open, read, close), under fdinfo's keys (as integers); None when the kernel
    refuses. The buffers are made once per thread and zeroed before each call (the kernel
    reads info's length and pointer fields too)."""
    global _prog_info_ok
    if not _prog_info_ok:
        return None
    if (bufs := getattr(_info_bufs, "bufs", None)) is None:
        info = (ctypes.c_char * PROG_INFO_LEN)()
        bufs = _info_bufs.bufs = info, (ctypes.c_char * _INFO_ATTR.size)(), ctypes.addressof(info)
    info, attr, address = bufs
    ctypes.memset(address, 0, PROG_INFO_LEN)
    _INFO_ATTR.pack_into(attr, 0, fd, PROG_INFO_LEN, address)
    try:
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    except OSError as e:
        if e.errno != errno.EBADF:  # refused (not a closed fd): fdinfo from then on
            _prog_info_ok = False
        return None
    filled = _INFO_ATTR.unpack_from(attr)[1]  # what this kernel's struct holds
    if filled >= _WHOLE_INFO.size:  # a dict display: dict(zip()) took as long as the call
        kind, prog_id, run_ns, runs, misses = _WHOLE_INFO.unpack_from(info)
        return {"prog_type": kind, "prog_id": prog_id, "run_time_ns": run_ns, "run_cnt": runs,
                "recursion_misses": misses}
    return {k: field.unpack_from(info, off)[0] for k, off, field in _PROG_FIELDS
            if off + field.size <= filled}


def program_info(fd: int, proc: str = PROC) -> dict[str, Any]:
    """prog_type, prog_id, run_time_ns, run_cnt, recursion_misses (those the kernel reports)
    of the BPF program behind `fd`: bpf_prog_info (this process's fds), else its fdinfo under
    `proc` (recorded files, tests); {} when neither (a closed fd). Within `one_read()`, this
    process's read once."""
    own = proc == PROC
    if own and _read_cache is not None and fd in _read_cache:
        return _read_cache[fd]
    info = _bpf_prog_info(fd) if own else None
    if info is None:
        try:
            info = parse_fdinfo(read_proc(f"{proc}/fdinfo/{fd}"))
        except OSError:
            info = {}
    if own and _read_cache is not None:
        _read_cache[fd] = info
    return info


@contextlib.contextmanager
def one_read() -> Iterator[None]:
    """Each program's statistics read once for the whole block (one snapshot: its families'
    recursion misses and its self_cost share them)."""
    global _read_cache
    _read_cache = {}
    try:
        yield
    finally:
        _read_cache = None


def recursion_misses(fd: int) -> int | None:
    """Runs the kernel skipped for the BPF program behind `fd` (another BPF program was
    running on that CPU); None when the kernel does not say."""
    value = program_info(fd).get("recursion_misses")
    return None if value is None else int(value)


def bpf_prog_stats(fdinfos: list[str | dict[str, str]],
                   stats_enabled: bool) -> tuple[int | None, int | None]:
    """(run_time_ns, run_cnt) summed over BPF programs (fdinfo texts, or their parsed keys:
    those with `prog_type`), or (None, None) when none shows them or statistics are evidently
    off (all counts 0 and the sysctl off)."""
    ns = cnt = 0
    seen = False
    for text in fdinfos:
        info = parse_fdinfo(text) if isinstance(text, str) else text
        if "prog_type" not in info or "run_time_ns" not in info or "run_cnt" not in info:
            continue
        try:
            ns += int(info["run_time_ns"])
            cnt += int(info["run_cnt"])
        except ValueError:
            continue
        seen = True
    if not seen or not (stats_enabled or cnt > 0):
        return None, None
    return ns, cnt


def program_infos(programs: list[Program], proc: str = PROC) -> dict[int, dict[str, Any]]:
    """fd -> program_info() of each program (a closed fd is left out)."""
    return {p.fd: info for p in programs if (info := program_info(p.fd, proc))}


def program_stats(
    programs: list[Program], stats_on: bool, proc: str = PROC,
    infos: dict[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]] | None:
    """Per program: probe, name, prog_id, run_cnt, run_time_ns, avg_ns (null before its first
    run) and recursion_misses (runs the kernel skipped), from bpf_prog_info or
    /proc/self/fdinfo/<fd> (`proc`: recorded files, tests), or the infos given; None when
    stats are off or the kernel does not report them."""
    if infos is None:
        infos = program_infos(programs, proc)
    out: list[dict[str, Any]] = []
    for p in programs:
        try:
            info = infos[p.fd]
            cnt, ns = int(info["run_cnt"]), int(info["run_time_ns"])
        except (KeyError, ValueError):
            continue
        out.append(
            {
                "probe": p.probe,
                "name": p.name,
                "prog_id": int(info.get("prog_id", 0)),
                "run_cnt": cnt,
                "run_time_ns": ns,
                "avg_ns": round(ns / cnt, 1) if cnt else None,
                "recursion_misses": int(info.get("recursion_misses", 0)),
            }
        )
    if not out or not (stats_on or any(e["run_cnt"] for e in out)):
        return None
    return out


def run_counts(programs: list[Program], proc: str = PROC) -> dict[str, int]:
    """run_cnt per program name (cheap: one bpf() call or fdinfo read each; a closed fd is
    left out)."""
    out = {}
    for p in programs:
        if info := program_info(p.fd, proc):
            with contextlib.suppress(ValueError):
                out[p.name] = int(info.get("run_cnt", -1))
    return out


def _fdinfos(proc: str = PROC) -> list[str]:
    out = []
    try:
        fds = os.listdir(f"{proc}/fdinfo")
    except OSError:
        return out
    for fd in fds:
        try:
            out.append(read_proc(f"{proc}/fdinfo/{fd}"))
        except OSError:  # closed meanwhile (e.g. listdir's own fd)
            continue
    return out


def _stats_sysctl() -> bool:
    try:
        return read_kept(STATS_SYSCTL).strip() == "1"
    except OSError:
        return False


def sample(programs: list[Program] | None = None) -> dict[str, Any]:
    """The snapshot's `self_cost`: cpu_seconds since mark_attach() (since process start if it
    was never called), rss_bytes, bpf_run_ns and bpf_run_count (null unless BPF stats are on);
    while stats are on also `bpf_stats` (who enabled them) and `programs` (per program)."""
    cpu = _cpu() - (_baseline or 0.0)
    try:
        rss = rss_bytes()
    except (OSError, ValueError, IndexError):
        rss = 0
    sysctl = _stats_sysctl()
    # the programs' own fdinfo when they are known (a live read), else every fd's
    infos = program_infos(programs) if programs else None
    ns, cnt = bpf_prog_stats(list(infos.values()) if infos is not None else _fdinfos(),
                             sysctl or _stats_fd is not None)
    out: dict[str, Any] = {
        "cpu_seconds": round(max(0.0, cpu), 6),
        "rss_bytes": rss,
        "bpf_run_ns": ns,
        "bpf_run_count": cnt,
    }
    if _stats_fd is not None or sysctl:
        out["bpf_stats"] = "fd" if _stats_fd is not None else "sysctl"
        out["programs"] = program_stats(programs or [], True, infos=infos)
    return out
