"""What a metric family is: how it reads its BPF maps (`read` -> a raw reading), turns a reading
into its snapshot section (`section`), and its section into metric samples (`samples`, named
by `metrics`: the one list behind Prometheus, CSV, the report and the Grafana dashboard).

A raw reading is a JSON-able dict of cumulative kernel-side values at one instant; the live
source makes it from attached programs, tests make it up. Nothing else knows its fields.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..pipeline.selfcost import recursion_misses

Raw = dict[str, Any]
ENOTSUPP = 524  # the kernel's own 'operation not supported' (no batch ops)
Section = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    """One exported metric family: name without the `rcupending_` prefix and `_total`."""

    name: str
    kind: str  # counter, gauge, info (gauge of value 1), histogram
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""  # what a panel shows: bytes, ops (rates of counters), s, ...

    @property
    def sample_name(self) -> str:
        return self.name + ("_total" if self.kind == "counter" else "")


@dataclass(frozen=True)
class Sample:
    family: str  # Metric.name (or a histogram family)
    name: str  # sample name: family, + _total (counter) or _bucket (histogram)
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class HistogramFamily:
    """Histograms of the snapshot's `histograms` map exported under one metric family: the
    total `name` -> `metric`, parts `name.<label value>` -> `by_metric` with `label`."""

    name: str
    metric: str
    by_metric: str
    label: str
    scale: float = 1.0  # recorded unit -> the metric's unit (ns -> s: 1e-9)


class Samples:
    """Appends samples of the metrics a family declares (unknown names fail loudly)."""

    def __init__(self, metrics: tuple[Metric, ...]) -> None:
        self.by_name = {m.name: m for m in metrics}
        self.out: list[Sample] = []

    def __call__(self, name: str, value: float, **labels: Any) -> None:
        m = self.by_name[name]
        self.out.append(Sample(name, m.sample_name, {k: str(v) for k, v in labels.items()},
                               value))


@dataclass(frozen=True)
class ReadContext:
    """What a family's `read` may need besides its maps: the probe's status (facts and
    unavailable metrics), the kernel (symbols), the attach kind, and whether to walk the
    per-object tracking map (costly: conservation checks only)."""

    status: Any  # probes.planner.ProbeStatus
    kernel: Any  # kernel.KernelInfo
    kind: str
    count_map: bool = False


@dataclass(frozen=True)
class SectionContext:
    """What a family's `section` may need besides its reading: the probe's status (as in the
    snapshot's `probes`) and the processes of a running stress scenario."""

    probe: dict[str, Any] = field(default_factory=dict)
    stress_tgids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Family:
    name: str  # snapshot key, e.g. "kvfree_rcu"
    probe: str  # probe table name, e.g. "kvfree_call_rcu"
    read: Callable[[Any, ReadContext], Raw]
    section: Callable[[Raw | None, SectionContext], Section | None]
    histograms: Callable[[Raw | None], dict[str, Any]]
    samples: Callable[[Section], Iterator[Sample] | list[Sample]]
    metrics: tuple[Metric, ...]
    histogram_families: tuple[HistogramFamily, ...] = ()
    # user space's part in the kernel side's settings: before counting starts (arm), and
    # the processes whose objects to follow and count apart (a stress's)
    arm: Callable[[Any], None] = lambda bpf: None
    watch: Callable[[Any, set[int]], None] = lambda bpf, tgids: None


# ---------------------------------------------------------------- map reading helpers


def percpu_rows(table: Any, n: int) -> list[list[int]]:
    """Rows 0..n-1 of a per-CPU array of integers: [row][cpu]. The whole array in one batch
    lookup (one bpf() call, not one per row: a histogram map has hundreds of rows)."""
    keys, values, total = _lookup_batch(table)
    if n <= total == len(values):  # every row read: an array's batch goes by index from 0
        return values[:n].tolist()  # (`lost` has 8 rows for 6 reasons: no numpy indexing)
    rows = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    mine = keys[:total] < n  # an array's keys are its rows, in order
    rows[keys[:total][mine]] = values[:total][mine]
    return rows.tolist()


def summed(table: Any, n: int) -> list[int]:
    """Rows 0..n-1 of a per-CPU array, summed over CPUs (in Python: exact, as u64 sums of
    numpy would not be)."""
    return [sum(row) for row in percpu_rows(table, n)]


def comm(raw: bytes) -> str:
    """A task's comm as the kernel stores it (NUL-padded bytes)."""
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


@functools.lru_cache(maxsize=4096)
def comm_of(raw: bytes) -> str:
    """comm() of bytes, remembered: a map's few process names come back at every snapshot."""
    return comm(raw)


_BUFFERS: dict[tuple[int, ...], tuple[Any, Any, np.ndarray, np.ndarray]] = {}


def _batch_buffers(table: Any, n: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The key and value buffers of a map's batch reads, and numpy arrays over the same
    memory, made once (a 65536-entry map's are megabytes to allocate and zero, and numpy's
    view of a ctypes array costs more than the copy out of it, at every snapshot); by fd,
    entries and entry sizes."""
    key = (table.map_fd, n, ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf))
    if key not in _BUFFERS:
        keys, values = (table.Key * n)(), (table.Leaf * n)()
        _BUFFERS[key] = (keys, values, np.frombuffer(keys, dtype=np.dtype(table.Key)),
                         np.frombuffer(values, dtype=np.dtype(table.Leaf)))
    return _BUFFERS[key]


def batch_values(table: Any) -> np.ndarray:
    """Every value of a hash map as one numpy structured array (the map's value type), read
    with batch lookups into a buffer of the map's size: a few syscalls and no Python object
    per entry, so a full 65536-entry map reads in milliseconds. Where the kernel has no batch
    operations (< 5.6), one lookup per key."""
    _, values, total = _lookup_batch(table)
    return values[:total].copy()


def batch_arrays(table: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every key and value of a hash map as numpy structured arrays (the map's types), read
    as batch_values() reads the values."""
    keys, values, total = _lookup_batch(table)
    return keys[:total].copy(), values[:total].copy()


def _lookup_batch(table: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Batch lookups of a whole hash map into its kept buffers: numpy arrays over them and
    how many entries they now hold (the caller copies what it needs). Where the kernel has no
    batch operations, fresh arrays of every entry, from one lookup per key."""
    n = int(table.max_entries)
    keys, values, key_array, value_array = _batch_buffers(table, n)
    token_in, token_out, count = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
    total, first = 0, True
    while total < n:
        count.value = n - total
        res = bcc_lib().bpf_lookup_batch(
            table.map_fd, None if first else ctypes.byref(token_in), ctypes.byref(token_out),
            ctypes.byref(keys, ctypes.sizeof(table.Key) * total),
            ctypes.byref(values, ctypes.sizeof(table.Leaf) * total), ctypes.byref(count))
        err = ctypes.get_errno()
        total += count.value
        if res != 0:
            if err == errno.ENOENT:  # the end of the map
                break
            if first and err in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP):
                items = list(table.items())
                return (np.frombuffer(b"".join(bytes(k) for k, _ in items),
                                      dtype=np.dtype(table.Key)),
                        np.frombuffer(b"".join(bytes(v) for _, v in items),
                                      dtype=np.dtype(table.Leaf)), len(items))
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
        if count.value == 0:
            break
        first = False
        token_in.value = token_out.value
    return key_array, value_array, total


def bcc_lib() -> Any:
    """bcc's libbcc (its bpf_lookup_batch): imported where maps are read, as bcc is only
    there where probes load."""
    import bcc.libbcc

    return bcc.libbcc.lib


def scalar(key: Any) -> int:
    """A map key of an integer type, as batch lookups (int) and item lookups (ctypes) give it."""
    return int(getattr(key, "value", key))


def whole_words(table: Any, end: int, tries: int = 8) -> tuple[np.ndarray, bool]:
    """Every CPU's copy of entry 0 of a per-CPU array of u64 words, in one lookup, as one
    int64 array [cpu][word]; read again (up to `tries` times) while a CPU's copy was taken in
    the middle of an update: its first word (`end`, the updates finished) differs from its
    last (the updates begun). Words are signed (a gauge may be negative on one CPU).
    (words, torn: the last try still was)."""
    for _ in range(tries):
        value = table[0]  # bcc: a ctypes array of every CPU's copy, one buffer
        data = value if isinstance(value, ctypes.Array) else b"".join(map(bytes, value))
        words = np.frombuffer(data, dtype=np.int64).reshape(len(value), -1)
        if (words[:, end] == words[:, -1]).all():
            return words, False
    return words, True


def program_misses(b: Any) -> dict[str, int]:
    """recursion_misses per program of a bcc module (fdinfo), for the kernels that report it:
    runs the kernel skipped because a BPF program was already running on that CPU."""
    out: dict[str, int] = {}
    for name, fn in b.funcs.items():
        if (n := recursion_misses(fn.fd)) is not None:
            out[name.decode(errors="replace")] = n
    return out


def slots(h: list[int] | None, row: int, width: int = 64) -> list[int]:
    """Row `row` of a histogram stored as rows of `width` log2 slots."""
    if not h:
        return [0] * width
    return list(h[row * width:(row + 1) * width])
