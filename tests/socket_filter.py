"""A minimal BPF program for tests that need a real program fd: shared by the unit tier and
the overhead VM guest (which puts the repository root on sys.path)."""

from __future__ import annotations

import ctypes
import struct


def load_socket_filter() -> int:
    """A 2-instruction socket filter (r0 = 0; exit) loaded with bpf(BPF_PROG_LOAD); -1 if the
    kernel refuses it (no root/CAP_BPF)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    insns = ctypes.create_string_buffer(struct.pack("<BBhiBBhi", 0xB7, 0, 0, 0, 0x95, 0, 0, 0))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack(
        "<IIQQIIQI", 1, 2, ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0, 0
    ).ljust(128, b"\0")
    buf = ctypes.create_string_buffer(attr, 128)
    return int(libc.syscall(321, 5, buf, 128))  # x86-64 __NR_bpf, BPF_PROG_LOAD
