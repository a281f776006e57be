"""kvfree_rcu family: pending, fallback, conservation, phases, from made-up readings."""

from __future__ import annotations

import copy
import ctypes
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from rcupending_tools import config
from rcupending_tools.families import BY_PROBE
from rcupending_tools.families import kvfree as km
from rcupending_tools.pipeline.collector import Collector, provenance
from rcupending_tools.pipeline.raw import RawSample
from rcupending_tools.pipeline.schema import validation_errors
from rcupending_tools.surfaces.samples import samples
from tests.unit.kvfree_raw import counters


def full_raw(t: float, enq: int, freed_bulk: int, freed_list: int, in_map: int | None,
             **extra):  # noqa: ANN003 - events, dur: see counters()
    stats = {
        km.ST_ENQ_HEAD: [enq, 0], km.ST_ENQ_BYTES: [64 * enq, 0],
        km.ST_FREED + km.PATHS.index("bulk"): [0, freed_bulk],
        km.ST_FREED_BYTES + km.PATHS.index("bulk"): [0, 64 * freed_bulk],
        km.ST_FREED + km.PATHS.index("list"): [freed_list, 0],
        km.ST_FREED_BYTES + km.PATHS.index("list"): [64 * freed_list, 0],
        # every object followed (the settling window), all of them the stress's
        km.ST_TRACKED: [enq, 0], km.ST_TRACKED_BYTES: [64 * enq, 0],
        km.ST_W_FIRST + 0: [enq, 0], km.ST_W_FIRST + 1: [64 * enq, 0],
        km.ST_W_FIRST + 2: [4, 0], km.ST_W_FIRST + 3: [4 * 32, 0],
        km.ST_W_FIRST + 4: [0, freed_bulk + freed_list],
        km.ST_W_FIRST + 5: [0, 64 * (freed_bulk + freed_list)],
    }
    lat = [0] * (km.NPATH * km.HIST_SLOTS)
    lat[32] = freed_bulk  # ~4 s
    lat[km.HIST_SLOTS + 20] = freed_list
    freed = freed_bulk + freed_list
    return RawSample(t, {"kvfree_rcu": {
        "counters": counters(2, stats, lat=lat, gps=list(lat), gone={0: [freed, 64 * freed]},
                             **extra),
        "by_task": [[9, "w", enq, 64 * enq, 4, 4 * 32]],  # followed objects
        "pending_by_tgid": [[9, enq - freed, 64 * (enq - freed)]],  # its objects in the map
        "in_map": None if in_map is None else {"objects": in_map, "bytes": 64 * in_map},
    }})


def test_pending_fallback_and_conservation():
    col = Collector(provenance("6.12.1"), [], source="synthetic", stress_tgids={9})
    s = col.update(full_raw(1.0, 100, 60, 10, in_map=30))
    assert validation_errors(s) == []
    kv = s["kvfree_rcu"]
    assert kv["freed"]["objects"] == 70 and kv["freed"]["bytes"] == 70 * 64
    assert kv["pending"] == {
        "objects": 30,
        "bytes": 30 * 64,
        "by_cpu": [30, 0],
        "bytes_by_cpu": [30 * 64, 0],
        "gauge": {"objects": 30, "bytes": 30 * 64},
    }
    assert kv["fallback"]["list"] == 10 and kv["fallback"]["list_ratio"] == 10 / 70
    assert kv["conservation"]["ok"] is True
    assert kv["by_stress"] == {
        "enqueued": 100,
        "enqueued_bytes": 6400,
        "enqueued_headless": 4,
        "enqueued_headless_bytes": 128,
        "untracked": 0,
        "freed": 70,
        "freed_bytes": 4480,
        "pending": 30,
        "pending_bytes": 1920,
        "untracked_bytes": 0,
    }
    assert kv["latency"]["count"] == 70
    assert kv["latency"]["by_path"]["bulk"]["ns"]["p50"] == 1 << 33
    assert "kvfree_rcu.latency_ns.list" in s["histograms"]
    # a tracking map that disagrees with the counters breaks the invariant
    bad = col.update(full_raw(2.0, 100, 60, 10, in_map=29))
    assert bad["kvfree_rcu"]["conservation"]["ok"] is False


def test_pending_peak_comes_from_the_kernel_gauge():
    """The high-water mark the kernel kept is reported as is (sampling would see 30 here);
    a raw sample without the gauge (older recordings) has no peak."""
    col = Collector(provenance("6.12.1"), [], source="synthetic")
    raw = full_raw(1.0, 100, 60, 10, in_map=None)
    assert "peak" not in col.update(raw)["kvfree_rcu"]["pending"]
    raw.families["kvfree_rcu"]["pending_gauge"] = [30, 30 * 64, 95, 95 * 64]
    s = col.update(RawSample.from_json(raw.to_json()))
    assert validation_errors(s) == []
    assert s["kvfree_rcu"]["pending"]["peak"] == {"objects": 95, "bytes": 95 * 64}


def test_phases_gp_durations_and_events():
    col = Collector(provenance("6.12.1"), [], source="synthetic")
    ev = dict.fromkeys(km.EVENTS, 0) | {"phased": 65, "ready": 5, "gp": 40, "barrier": 2,
                                        "shrink_scan": 1, "shrink_freed": 7, "bulk_pages": 3}
    dur = [0] * (km.NDUR * km.HIST_SLOTS)
    for i, (name, slot, n) in enumerate(
        [("batch", 32, 65), ("gp", 24, 65), ("reclaim", 10, 65), ("ready", 33, 5),
         ("rcu_gp", 23, 40), ("barrier", 26, 2)]
    ):
        assert km.DURATIONS[i] == name
        dur[i * km.HIST_SLOTS + slot] = n
    raw = full_raw(1.0, 100, 60, 10, in_map=30, events=[ev[e] for e in km.EVENTS], dur=dur)
    kv_raw = raw.families["kvfree_rcu"]
    s = col.update(raw)
    assert validation_errors(s) == []
    kv = s["kvfree_rcu"]
    assert kv["phases"]["objects"] == {"phased": 65, "ready": 5}
    assert kv["phases"]["ready"]["count"] == 5
    batch = kv["phases"]["batch"]
    assert batch["count"] == 65 and batch["ns"]["p50"] == batch["ns"]["max"] == 1 << 33
    assert batch["ns"]["ranges"]["p99"] == [1 << 32, 1 << 33]
    assert kv["phases"]["gp"]["ns"]["p50"] == 1 << 25
    assert kv["rcu_gp"]["completed"] == 40 and kv["rcu_gp"]["duration"]["count"] == 40
    assert kv["rcu_gp"]["duration"]["ns"]["p50"] == 1 << 24
    assert kv["events"]["barrier"]["calls"] == 2
    assert kv["events"]["shrinker"] == {"scans": 1, "freed": 7}
    assert kv["events"]["bulk_pages"] == 3
    name = "kvfree_rcu_bulk_page_free_events_total"
    assert [x.value for x in samples(s) if x.name == name] == [3]
    assert "kvfree_rcu.phase_ns.batch" in s["histograms"]
    assert "kvfree_rcu.rcu_gp_ns" in s["histograms"]
    # the raw form round-trips (recordings)
    assert RawSample.from_json(raw.to_json()).families["kvfree_rcu"] == kv_raw


def test_process_rows_and_other_make_the_totals():
    """Two comms of one process are one row; rows + other = the totals, shares are whole."""
    raw = full_raw(1.0, 100, 60, 10, in_map=None)
    kv_raw = raw.families["kvfree_rcu"]
    kv_raw["by_task"] = [[9, "w", 60, 60 * 64, 0, 0], [9, "w2", 20, 20 * 64, 0, 0]] + [
        [100 + i, f"p{i}", 1, 64, 0, 0] for i in range(km.TOP_PROCESSES + 5)]  # 105 followed
    kv_raw["pending_by_tgid"] = [[9, 10, 10 * 64]] + [
        [100 + i, 1, 64] for i in range(km.TOP_PROCESSES + 5)]
    kv = Collector(provenance("6.12.1"), [], source="synthetic").update(raw)["kvfree_rcu"]
    rows, other = kv["by_process"], kv["by_process_other"]
    assert rows[0]["tgid"] == 9 and rows[0]["comms"] == ["w", "w2"] and rows[0]["followed"] == 80
    assert rows[0]["objects"] == 76  # its share of the 100 enqueued: 80 of 105 followed
    assert len(rows) == km.TOP_PROCESSES and other["processes"] == 6
    for key, total in (("objects", kv["enqueued"]["objects"]),
                       ("pending_bytes", kv["pending"]["bytes"]),
                       ("pending_objects", kv["pending"]["objects"])):
        assert sum(r[key] for r in rows) + other[key] == total, key
        assert min(r[key] for r in rows) >= 0 and other[key] >= 0


def _inflight(rows: list[tuple[int, int, int]]) -> np.ndarray:
    """Tracking-map values as the batch read gives them: (tgid, bytes, flags) per object."""
    dt = np.dtype([("ts", "<u8"), ("gp_seq", "<u8"), ("bytes", "<u8"), ("tgid", "<u4"),
                   ("cpu", "<u2"), ("flags", "<u2")])
    return np.array([(0, 0, b, t, 0, f) for t, b, f in rows], dtype=dt)


def _kflags(flags: int, one_in: int = 1, other: bool = False) -> int:
    """A record's flags as the enqueue side sets them: counted in a kv_pending_tgid slot
    (the overflow one with `other`) with the weight `one_in` (a power of two)."""
    return (flags | km.INF_PENDING | (km.INF_OTHER if other else 0)
            | (one_in.bit_length() - 1) << km.INF_SHIFT)


def _weighed_by_chance(inflight: np.ndarray, one_in: int) -> list[list[int]]:
    """The reference for the records' weights: [tgid, objects, bytes] by process, each object
    weighed by the inverse of its chance to be followed, 1 for the window's and a watched
    process's, `one_in` for the sample's (unweighed, a stress or a process of the window
    outweighed the others `one_in` times)."""
    rows: dict[int, list[int]] = {}
    for tgid, nbytes, flags in zip(inflight["tgid"].tolist(), inflight["bytes"].tolist(),
                                   inflight["flags"].tolist(), strict=True):
        w = 1 if flags & (km.INF_WINDOW | km.INF_WATCHED) else one_in
        r = rows.setdefault(tgid, [0, 0])
        r[0] += w
        r[1] += w * nbytes
    return [[t, *v] for t, v in sorted(rows.items())]


def test_the_tracking_map_gives_pending_by_process_and_its_totals():
    m = _inflight([(7, 64, _kflags(0, 4)), (9, 128, _kflags(km.INF_SHEAF)),
                   (7, 32, _kflags(km.INF_WINDOW)), (8, 16, 0), (5, 8, _kflags(0, 2, True))])
    # each record by the weight and slot it says it added to (none: 0, not a row)
    assert km.pending_by_tgid(m) == [[7, 5, 288], [9, 1, 128], [km.TGID_OTHER, 2, 16]]
    assert _weighed_by_chance(m, 4) == [[5, 4, 32], [7, 5, 288], [8, 4, 64], [9, 4, 512]]
    assert km.in_map_counts(m) == {"objects": 5, "bytes": 248, "krc": 4, "sheaf": 1,
                                   "pending_by_tgid": km.pending_by_tgid(m)}
    assert km.pending_by_tgid(_inflight([])) == []


def _slots(rows: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """kv_pending_tgid's keys and values as a batch read gives them."""
    keys = np.array([t for t, _, _ in rows], dtype="<u4")
    values = np.array([(o, b) for _, o, b in rows], dtype=[("objects", "<i8"), ("bytes", "<i8")])
    return keys, values


def test_the_kernels_pending_slots_are_rows_by_tgid_without_the_empty_ones():
    keys, values = _slots([(km.TGID_OTHER, 3, 96), (9, 0, 0), (7, 2, 128), (0, 1, 64)])
    assert km.tgid_rows(keys, values) == [[0, 1, 64], [7, 2, 128], [km.TGID_OTHER, 3, 96]]
    assert km.tgid_rows(*_slots([])) == []


def test_the_overflow_slots_share_of_pending_goes_to_other():
    """Objects of processes the slot map had no room for are weighed with the rest, and
    their share stays with `other` (rows + other = the totals)."""
    tasks = {(7, "a"): [10, 640, 0, 0, 0, 0], (9, "b"): [10, 640, 0, 0, 0, 0]}
    kv = {"enqueued": {"objects": 20, "bytes": 1280}, "pending": {"objects": 8, "bytes": 512}}
    pending = {7: [2, 128], 9: [2, 128], km.TGID_OTHER: [4, 256]}
    rows, other = km._by_process(tasks, pending, kv)
    assert [(r["tgid"], r["pending_objects"], r["pending_bytes"]) for r in rows] == [
        (7, 2, 128), (9, 2, 128)]
    assert other == {"processes": 0, "objects": 0, "bytes": 0, "pending_objects": 4,
                     "pending_bytes": 256}
    only, rest = km._by_process({}, {km.TGID_OTHER: [4, 256]}, kv)
    assert only == [] and rest["pending_objects"] == 8


def test_conservation_checks_the_slots_against_the_records():
    records = [[7, 2, 128]]
    got = km.conservation(5, 3, {"objects": 2, "pending_by_tgid": records}, [[7, 2, 128]])
    assert got["ok"] is True and got["by_process_ok"] is True
    got = km.conservation(5, 3, {"objects": 2, "pending_by_tgid": records}, [[7, 1, 64]])
    assert got["by_process_ok"] is False
    assert km.conservation(5, 3, None, [[7, 2, 128]])["by_process_ok"] is None
    assert km.conservation(5, 3, {"objects": 2})["by_process_ok"] is None  # older recordings


def test_per_process_estimates_weigh_each_object_by_its_chance_to_be_followed():
    """Truth from a simulation, not from the estimator: a watched stress W (every object
    followed) and A (busy during the settling window, then sampled) beside B (sampled only),
    1 in 16 followed outside the window. Each row must land near the truth; weighing every
    followed object alike put W and A several times over their share (the fleet test then
    needed --sample 1)."""
    rng = np.random.default_rng(7)
    one_in = 16
    truth = {1: 40_000, 2: 20_000, 3: 40_000}  # W, A, B: enqueued objects
    window = {2: 8_000}  # of A's, during the window
    tasks, inflight = {}, []
    for tgid, n in truth.items():
        always = n if tgid == 1 else window.get(tgid, 0)
        sampled = int((rng.random(n - always) < 1 / one_in).sum())
        flags = _kflags(km.INF_WATCHED if tgid == 1 else km.INF_WINDOW)
        tasks[(tgid, f"p{tgid}")] = [always + sampled, 64 * (always + sampled), 0, 0,
                                     sampled, 64 * sampled]
        # pending: a tenth of each process's objects, of the window's none (drained)
        if tgid == 1:
            inflight += [(tgid, 64, flags)] * (n // 10)
        else:
            inflight += [(tgid, 64, _kflags(0, one_in))] * int(
                (rng.random(n // 10) < 1 / one_in).sum())
    enq = sum(truth.values())
    pend = sum(n // 10 for n in truth.values())
    pending = {t: [o, b] for t, o, b in _weighed_by_chance(_inflight(inflight), one_in)}
    # the weights the records carry (what kv_pending_tgid holds) are the same
    assert km.pending_by_tgid(_inflight(inflight)) == [[t, *v] for t, v in sorted(pending.items())]
    kv = {"enqueued": {"objects": enq, "bytes": 64 * enq},
          "pending": {"objects": pend, "bytes": 64 * pend}}
    rows, other = km._by_process(tasks, pending, kv, one_in)
    got = {r["tgid"]: r for r in rows}
    for tgid, n in truth.items():
        assert abs(got[tgid]["objects"] - n) < 0.05 * n, (tgid, got[tgid]["objects"], n)
        assert abs(got[tgid]["pending_objects"] - n // 10) < 0.15 * (n // 10), tgid
    assert other["objects"] == 0 and other["pending_objects"] == 0
    # unweighed (the estimate before): W's share far from its truth
    flat, _ = km._by_process(tasks, {t: [o, b] for t, o, b in _weighed_by_chance(
        _inflight(inflight), 1)}, kv, 1)
    assert next(r for r in flat if r["tgid"] == 1)["objects"] > 1.5 * truth[1]


def _by_process_reference(tasks: dict, pending: dict, kv: dict,
                one_in: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """km._by_process as it was before it was made faster (c1452c2): the reference."""
    procs: dict[int, dict[str, Any]] = {}
    for (tgid, name), (objects, nbytes, _, _, sampled, sampled_bytes) in (
            (k, (list(v) + [0] * 6)[:6]) for k, v in tasks.items()):
        r = procs.setdefault(tgid, {"comms": {}, "objects": 0, "bytes": 0, "wo": 0, "wb": 0})
        r["comms"][name] = r["comms"].get(name, 0) + objects
        r["objects"] += objects
        r["bytes"] += nbytes
        r["wo"] += objects + (one_in - 1) * sampled
        r["wb"] += nbytes + (one_in - 1) * sampled_bytes
    for tgid in pending.keys() - procs.keys():  # its per-process record did not fit
        procs[tgid] = {"comms": {"?": 0}, "objects": 0, "bytes": 0, "wo": 0, "wb": 0}
    rows = []
    for tgid, r in procs.items():
        p_objects, p_bytes = pending.get(tgid, [0, 0])
        comms = list(r["comms"])
        if len(comms) > 1:  # most processes enqueue under one name
            comms.sort(key=lambda c: (-r["comms"][c], c))
        rows.append({"tgid": tgid, "comm": comms[0], "followed": r["objects"],
                     "w": (r["wo"], r["wb"], p_objects, p_bytes)}
                    | ({"comms": comms} if len(comms) > 1 else {}))
    enq, pend = kv["enqueued"], kv["pending"]
    totals = (("objects", enq["objects"]), ("bytes", enq["bytes"]),
              ("pending_objects", pend["objects"]), ("pending_bytes", pend["bytes"]))
    for i, (key, total) in enumerate(totals):
        for r, share in zip(rows, km.shares(total, [r["w"][i] for r in rows]), strict=True):
            r[key] = share
    rows.sort(key=lambda r: (-r["pending_bytes"], -r["objects"], r["tgid"]))
    top = rows[:km.TOP_PROCESSES]
    for r in rows:
        del r["w"]
    other = {"processes": len(rows) - len(top)}
    other |= {key: total - sum(r[key] for r in top) for key, total in totals}
    return top, other


def test_process_rows_are_the_reference_ones():
    """_by_process() gives what its earlier, slower form gave, figure for figure and in the
    same order: ties in the shares, several comms, short rows, processes only pending."""
    rng = np.random.default_rng(3)
    for case in range(300):
        tasks = {}
        for _ in range(int(rng.integers(0, 45))):
            tgid = int(rng.integers(1, 30))
            row = [int(x) for x in rng.integers(0, 1 << int(rng.integers(1, 40)), 8)]
            tasks[(tgid, f"c{int(rng.integers(0, 3))}")] = row[:6] if case % 7 == 0 else row
        pending = {int(t): [int(rng.integers(0, 50)), int(rng.integers(0, 1 << 20))]
                   for t in rng.integers(1, 40, int(rng.integers(0, 30)))}
        kv = {"enqueued": {"objects": int(rng.integers(0, 1 << 30)),
                           "bytes": int(rng.integers(0, 1 << 50)) << 10},
              "pending": {"objects": int(rng.integers(-5, 1 << 20)),
                          "bytes": int(rng.integers(0, 1 << 40))}}
        one_in = int(rng.choice([1, 16, 64]))
        got = km._by_process(copy.deepcopy(tasks), dict(pending), kv, one_in)
        want = _by_process_reference(copy.deepcopy(tasks), dict(pending), kv, one_in)
        assert got == want
        assert [list(r) for r in got[0]] == [list(r) for r in want[0]]  # key order too


class _Cfg:
    look_all, window_end, nwatch = 1, 0, 0


def test_lookups_of_every_free_end_when_the_window_objects_are_gone():
    """kv_cfg.look_all is cleared only after the window and once every object it followed
    has left the tracking map (its frees and replacements counted)."""
    cfg = _Cfg()
    row = [0] * (km.KV_STATS + km.ST_MAX)
    row[km.KV_STATS + km.ST_WINDOW_TRACKED] = 5
    row[km.KV_STATS + km.ST_WINDOW_GONE] = 4
    assert not km._end_look_all(cfg, [row]) and cfg.look_all == 1
    row[km.KV_STATS + km.ST_WINDOW_GONE] = 5
    cfg.window_end = time.monotonic_ns() + 10**12  # the window still open
    assert not km._end_look_all(cfg, [row]) and cfg.look_all == 1
    cfg.window_end = 0
    cfg.nwatch = 2  # a stress watched: its objects are looked up, sampled or not
    assert not km._end_look_all(cfg, [row]) and cfg.look_all == 1
    cfg.nwatch = 0
    assert km._end_look_all(cfg, [row]) and cfg.look_all == 0
    assert not km._end_look_all(cfg, [row])  # already 0: nothing to write


def test_frees_from_before_attach_keep_the_window_open_up_to_its_cap():
    """Each read that sees a new pre-attach free (ST_UNMATCHED) pushes the window's end to a
    quiet period from now, never past its cap; none seen, or the window over: no change."""
    now = time.monotonic_ns()
    cfg = _FullCfg()
    cfg.window_end, cfg.window_cap, cfg.early_seen = now + 10**9, now + 10**15, 0
    row = [0] * (km.KV_STATS + km.ST_MAX)
    assert not km._extend_window(cfg, [row])
    assert cfg.window_end == now + 10**9  # nothing from before attach freed
    row[km.KV_STATS + km.ST_UNMATCHED + 1] = 3
    assert km._extend_window(cfg, [row])
    quiet = max(1, config.settle_seconds() // km.WINDOW_QUIET_DIVISOR) * 10**9
    assert cfg.early_seen == 3 and cfg.window_end >= now + quiet
    assert not km._extend_window(cfg, [row])  # the same 3 again: no change
    cfg.window_cap = now + 2 * 10**9
    row[km.KV_STATS + km.ST_UNMATCHED] = 1
    assert km._extend_window(cfg, [row])
    assert cfg.window_end == now + 2 * 10**9 and cfg.early_seen == 4  # capped
    cfg.window_end = 0  # over: a late one does not reopen it
    row[km.KV_STATS + km.ST_UNMATCHED] = 9
    assert not km._extend_window(cfg, [row])
    assert cfg.window_end == 0 and cfg.early_seen == 4


def test_a_passed_window_becomes_zero_and_an_open_one_stays():
    """The enqueue side reads the clock only while window_end is set: a window in the
    past must read 0 (else every enqueue pays a clock read for nothing)."""
    now = time.monotonic_ns()
    cfg = _FullCfg()
    cfg.window_end = now + 10**12
    assert not km._close_window(cfg)
    assert cfg.window_end == now + 10**12
    cfg.window_end = now - 1
    assert km._close_window(cfg)
    assert cfg.window_end == 0
    assert not km._close_window(cfg)  # 0 already: nothing to write


class _CountedTable:
    """A one-entry BPF array as bcc shows it: each lookup returns a copy and each update
    stores one, each a bpf() call (counted)."""

    def __init__(self, value: object) -> None:
        self.value, self.lookups, self.updates = value, 0, 0

    def __getitem__(self, key: int) -> object:
        self.lookups += 1
        return copy.copy(self.value)

    def __setitem__(self, key: int, value: object) -> None:
        self.updates += 1
        self.value = copy.copy(value)


class _Module(dict):
    funcs: dict = {}  # no programs: no recursion misses read


def test_a_snapshot_reads_kv_cfg_once_and_writes_it_only_when_it_changed(monkeypatch):
    """kv_cfg costs one lookup per read() (sample, window, look_all all from it) and at most
    one update: none while nothing changes, one when the window or look_all does."""
    row = [0] * (km.KV_STATS + km.ST_MAX)
    row[km.KV_STATS + km.ST_WINDOW_TRACKED] = row[km.KV_STATS + km.ST_WINDOW_GONE] = 5
    inflight = np.zeros(0, dtype=[("tgid", "u4"), ("flags", "u2"), ("bytes", "u8")])
    no_tasks = (np.zeros(0, dtype=[("tgid", "u4"), ("comm", "S1", (16,))]),
                np.zeros(0, dtype=[(f, "u8") for f in km.TASK_FIELDS]))
    monkeypatch.setattr(km.base, "batch_arrays",
                        lambda table: _slots([]) if table == "slots" else no_tasks)
    monkeypatch.setattr(km.base, "batch_values", lambda table: inflight)
    monkeypatch.setattr(km.base, "whole_words", lambda table, end: (np.array([row]), False))
    now = time.monotonic_ns()
    cfg = _FullCfg()
    cfg.window_end, cfg.window_cap = now + 10**12, now + 10**13
    cfg.look_all, cfg.sample_mask = 1, 15
    table = _CountedTable(cfg)
    b = _Module(kv_cfg=table, kvfree_by_task=None, kv_inflight=None, kv_counters=None,
                kv_pending_tgid="slots")
    ctx = SimpleNamespace(count_map=False)

    def read() -> tuple[int, int]:
        lookups, updates = table.lookups, table.updates
        raw = km.read(b, ctx)
        assert raw["sample_one_in"] == 16
        return table.lookups - lookups, table.updates - updates

    assert read() == (1, 0)  # the window open, nothing new: kv_cfg unchanged
    row[km.KV_STATS + km.ST_UNMATCHED] = 2  # a free from before attach: early_seen moves
    assert read() == (1, 1) and table.value.early_seen == 2
    assert read() == (1, 0)
    table.value.window_end = now - 1  # passed: closed and look_all ended, in one update
    assert read() == (1, 1)
    assert table.value.window_end == 0 and table.value.look_all == 0
    assert read() == (1, 0)


def test_shares_are_whole_and_exact():
    assert km.shares(10, [1, 1, 1]) == [4, 3, 3]
    assert km.shares(7, [0, 0]) == [0, 0]  # no weight: all stays with `other`
    assert km.shares(0, [5, 1]) == [0, 0]
    # a split with no `other` row (per CPU): no weight, then as the fallback, then slot 0
    assert km.shares(8, [0, 0], [3, 1]) == [6, 2]
    assert km.shares(8, [0, 0], [0, 0]) == [8, 0]
    assert km.shares(8, [1, 3], [3, 1]) == [2, 6]
    big = km.shares(10**18 + 1, [3, 7])
    assert sum(big) == 10**18 + 1 and big[0] < big[1]


def test_a_torn_copy_is_read_again():
    """A CPU's copy taken mid-update (its first and last words differ) is not used."""
    import ctypes

    from rcupending_tools.families import base

    class Slot(ctypes.Structure):
        _fields_ = [("v", ctypes.c_int64 * 4)]

    copies = [(Slot((1, 5, 5, 2)), Slot((1, 0, 0, 1))), (Slot((2, 6, 6, 2)), Slot((1, 0, 0, 1)))]

    class Table:
        def __getitem__(self, key):
            return copies.pop(0)

    words, torn = base.whole_words(Table(), 0)
    assert words.tolist() == [[2, 6, 6, 2], [1, 0, 0, 1]] and torn is False


class _SlotTable:
    """kv_pending_tgid as bcc shows it: ctypes keys and values (`items`: what was stored)."""

    Key = ctypes.c_uint32

    class Leaf(ctypes.Structure):
        _fields_ = [("objects", ctypes.c_int64), ("bytes", ctypes.c_int64)]

    def __init__(self) -> None:
        self.items: dict[int, tuple[int, int]] = {}

    def __setitem__(self, key: ctypes.c_uint32, leaf: Leaf) -> None:
        self.items[key.value] = (leaf.objects, leaf.bytes)


def test_a_snapshot_reads_the_tracking_map_only_to_count_it(monkeypatch):
    """Pending by process comes from the kernel's per-process slots (weights applied); the
    tracking map is read only when the read counts it (and then checks those slots)."""
    words = np.array(counters(1, {km.ST_TRACKED: [5], km.ST_ENQ_HEAD: [5]}, gone={0: [3, 0]}))
    no_tasks = (np.zeros(0, dtype=[("tgid", "u4"), ("comm", "S1", (16,))]),
                np.zeros(0, dtype=[(f, "u8") for f in km.TASK_FIELDS]))
    slots = _slots([(9, 1, 64), (7, 4, 128), (8, 0, 0)])
    inflight = _inflight([(7, 32, _kflags(0, 4)), (9, 64, _kflags(km.INF_WINDOW))])
    read_map = []
    monkeypatch.setattr(km.base, "batch_arrays",
                        lambda table: slots if table == "slots" else no_tasks)
    monkeypatch.setattr(km.base, "batch_values", lambda table: read_map.append(table) or inflight)
    monkeypatch.setattr(km.base, "whole_words", lambda table, end: (words, False))
    cfg = _FullCfg()
    cfg.sample_mask = 3
    b = _Module(kv_cfg=_CountedTable(cfg), kvfree_by_task="tasks", kv_inflight="map",
                kv_counters=None, kv_pending_tgid="slots")
    raw = km.read(b, SimpleNamespace(count_map=False))
    assert raw["pending_by_tgid"] == [[7, 4, 128], [9, 1, 64]] and read_map == []
    assert "in_map" not in raw
    raw = km.read(b, SimpleNamespace(count_map=True))
    assert read_map == ["map"] and raw["in_map"]["objects"] == 2
    assert raw["in_map"]["pending_by_tgid"] == raw["pending_by_tgid"]
    kv = Collector(provenance("6.12.1"), [], source="synthetic").update(
        RawSample(1.0, {"kvfree_rcu": raw}))["kvfree_rcu"]
    assert kv["conservation"]["ok"] is True and kv["conservation"]["by_process_ok"] is True


class _FullCfg:
    def __init__(self) -> None:
        self.window_end = self.sample_mask = self.nwatch = self.look_all = 0
        self.early_seen = self.window_cap = 0
        self.watch = [0] * km.WATCH_MAX


def test_a_live_session_arms_and_watches_the_kvfree_program():
    """What LiveSource calls through the family registry reaches the kernel side's settings:
    the window, the sample, and the stress's processes (a family that does not pass them
    leaves every object sampled and no stress counted apart, as a 6.12 VM showed)."""
    b = {"kv_cfg": [_FullCfg()], "kv_pending_tgid": _SlotTable()}
    fam = BY_PROBE["kvfree_call_rcu"]
    fam.arm(b)
    assert b["kv_pending_tgid"].items == {km.TGID_OTHER: (0, 0)}  # the overflow slot, made
    cfg = b["kv_cfg"][0]
    assert cfg.window_end > time.monotonic_ns() - 1 and cfg.look_all == 1
    assert cfg.sample_mask == config.kvfree_sample_one_in() - 1 and cfg.nwatch == 0
    b["kv_cfg"][0].look_all = 0  # the window over: only the sample was looked up
    fam.watch(b, {41, 7})
    assert b["kv_cfg"][0].nwatch == 2 and b["kv_cfg"][0].watch[:2] == [7, 41]
    assert b["kv_cfg"][0].look_all == 1  # a stress's objects are looked up, sampled or not


class _BccModule:
    """Tables as a bcc module has them: looked up by name on first use; iterating (and so
    `in`) goes over the tables looked up so far, not over those the program has."""

    def __init__(self, **tables: object) -> None:
        self._all, self._seen = tables, {}
        self.funcs: dict = {}

    def __getitem__(self, name: str) -> object:
        if name not in self._seen:
            self._seen[name] = self._all[name]  # KeyError: the program has no such table
        return self._seen[name]

    def __iter__(self):
        return iter(self._seen)


def test_the_pending_peak_is_read_from_a_module_built_with_it(monkeypatch):
    """RCUPENDING_PENDING_PEAK=1 (compare): the kernel gauge's peak reaches the snapshot's raw
    reading from a real bcc module, whose `in` knows only the tables already looked up."""
    words = np.array(counters(1, {km.ST_ENQ_HEAD: [5]}))
    no_tasks = (np.zeros(0, dtype=[("tgid", "u4"), ("comm", "S1", (16,))]),
                np.zeros(0, dtype=[(f, "u8") for f in km.TASK_FIELDS]))
    monkeypatch.setattr(km.base, "batch_arrays",
                        lambda table: _slots([]) if table == "slots" else no_tasks)
    monkeypatch.setattr(km.base, "whole_words", lambda table, end: (words, False))
    gauge = SimpleNamespace(objects=3, bytes=192, peak_objects=95, peak_bytes=95 * 64)
    b = _BccModule(kv_cfg=_CountedTable(_FullCfg()), kvfree_by_task="tasks",
                   kv_counters=None, kv_pending_tgid="slots", kv_pending_gauge=[gauge])
    monkeypatch.delenv("RCUPENDING_PENDING_PEAK", raising=False)
    assert "pending_gauge" not in km.read(b, SimpleNamespace(count_map=False))
    monkeypatch.setenv("RCUPENDING_PENDING_PEAK", "1")
    raw = km.read(b, SimpleNamespace(count_map=False))
    assert raw["pending_gauge"] == [3, 192, 95, 95 * 64]
