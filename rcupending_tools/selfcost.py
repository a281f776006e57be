"""The tool's own cost: CPU and memory of this process, and run time of its BPF programs.

`mark_attach()` stores the CPU baseline when the probes are attached (LiveSource.attach());
`sample()` returns the snapshot's `self_cost` object. Everything is read from this process's own
/proc files; nothing is enabled here.

BPF run time: the kernel prints `run_time_ns` and `run_cnt` in /proc/self/fdinfo/<fd> of every
BPF program fd (since 5.1), but only counts while BPF statistics are enabled
(`sysctl kernel.bpf_stats_enabled=1` or a BPF_ENABLE_STATS fd held by some process); otherwise
they stay 0. So the sums are reported only when the sysctl reads 1 or some program's count
moved (stats enabled through an fd, which the sysctl does not show); else null, as on kernels
whose fdinfo lacks the fields. Counts cover only the time stats were on.
"""

from __future__ import annotations

import os
from typing import Any

PROC = "/proc/self"
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"

_baseline: float | None = None  # user+system CPU seconds at attach


def _cpu() -> float:
    t = os.times()
    return t.user + t.system  # this process, all threads; not its (stress) children


def mark_attach() -> None:
    """Remember this process's CPU time now: `cpu_seconds` counts from here."""
    global _baseline
    _baseline = _cpu()


def rss_bytes(proc: str = PROC) -> int:
    with open(f"{proc}/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def parse_fdinfo(text: str) -> dict[str, str]:
    """`key:\tvalue` lines of an fdinfo file -> {key: value}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def bpf_prog_stats(fdinfos: list[str], stats_enabled: bool) -> tuple[int | None, int | None]:
    """(run_time_ns, run_cnt) summed over the fdinfo texts of BPF programs (`prog_type`), or
    (None, None) when none shows them or statistics are evidently off (all counts 0 and the
    sysctl off)."""
    ns = cnt = 0
    seen = False
    for text in fdinfos:
        info = parse_fdinfo(text)
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


def _fdinfos(proc: str = PROC) -> list[str]:
    out = []
    try:
        fds = os.listdir(f"{proc}/fdinfo")
    except OSError:
        return out
    for fd in fds:
        try:
            with open(f"{proc}/fdinfo/{fd}") as f:
                out.append(f.read())
        except OSError:  # closed meanwhile (e.g. listdir's own fd)
            continue
    return out


def _stats_sysctl() -> bool:
    try:
        with open(STATS_SYSCTL) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def sample() -> dict[str, Any]:
    """The snapshot's `self_cost`: cpu_seconds since mark_attach() (since process start if it
    was never called), rss_bytes, bpf_run_ns and bpf_run_count (null unless BPF stats are on)."""
    cpu = _cpu() - (_baseline or 0.0)
    try:
        rss = rss_bytes()
    except (OSError, ValueError, IndexError):
        rss = 0
    ns, cnt = bpf_prog_stats(_fdinfos(), _stats_sysctl())
    return {
        "cpu_seconds": round(max(0.0, cpu), 6),
        "rss_bytes": rss,
        "bpf_run_ns": ns,
        "bpf_run_count": cnt,
    }
