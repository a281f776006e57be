"""This thread's system calls, as the kernel counts them: a perf counter on the
raw_syscalls:sys_enter tracepoint bound to the calling thread (perf_event_open; nothing of the
tool's own code is in the count). While it is open every task takes the syscall tracepoint's
slow path, so only the benchmark opens it."""

from __future__ import annotations

import ctypes
import os
import platform
import struct

from ..errors import UserError
from ..paths import TRACEFS_DIRS

PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
ATTR_SIZE = 64  # PERF_ATTR_SIZE_VER0: type, size, config, period, sample_type, read_format,
# the flag bits (all 0: counting now, this thread only), wakeup, bp_type, config1


def tracepoint_id(event: str = "raw_syscalls/sys_enter") -> int:
    for d in TRACEFS_DIRS:
        path = d / "events" / event / "id"
        if path.is_file():
            return int(path.read_text())
    raise UserError(f"bench: no tracefs with events/{event} (mount tracefs)")


class SyscallCounter:
    """`with SyscallCounter() as c: ...; c.count()`: system calls made by this thread since
    the counter was opened."""

    def __init__(self) -> None:
        nr = NR_PERF_EVENT_OPEN.get(platform.machine())
        if nr is None:
            raise UserError(f"bench: no perf_event_open number for {platform.machine()}")
        attr = struct.pack("<IIQ", PERF_TYPE_TRACEPOINT, ATTR_SIZE, tracepoint_id())
        attr = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        fd = libc.syscall(ctypes.c_long(nr), attr, ctypes.c_int(0), ctypes.c_int(-1),
                          ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise UserError(f"bench: perf_event_open(raw_syscalls:sys_enter): "
                            f"{os.strerror(err)}")
        self.fd = int(fd)

    def count(self) -> int:
        return struct.unpack("<Q", os.read(self.fd, 8))[0]

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> SyscallCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
