"""The kvfree_rcu family: kvfree_call_rcu() enqueues and the frees that end each object's wait
(bpf/kvfree_rcu.bpf.c; its indexes in bpf/kvfree_rcu.h): read, section, samples."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import config
from ..pipeline.derive import log2_buckets_rows, percentile_bounds_rows
from . import base, enums
from .base import Family, Metric, Raw, Samples, Section

H = enums.header("kvfree_rcu.h")
PATHS = H.enum("free_path").names("PATH_")
NPATH = H["NPATH"]
HIST_SLOTS = 64
ST_ENQ_HEAD, ST_ENQ_HEADLESS = H["ST_ENQ_HEAD"], H["ST_ENQ_HEADLESS"]
ST_ENQ_BYTES = H["ST_ENQ_BYTES"]
ST_ENQ_UNSIZED, ST_ENQ_VMALLOC = H["ST_ENQ_UNSIZED"], H["ST_ENQ_VMALLOC"]
ST_ENQ_SHEAF, ST_ENQ_SHEAF_BYTES = H["ST_ENQ_SHEAF"], H["ST_ENQ_SHEAF_BYTES"]
ST_UNTRACKED, ST_UNTRACKED_BYTES = H["ST_UNTRACKED"], H["ST_UNTRACKED_BYTES"]
ST_REPLACED, ST_FREED, ST_FREED_BYTES = H["ST_REPLACED"], H["ST_FREED"], H["ST_FREED_BYTES"]
ST_UNMATCHED, ST_REPLACED_BYTES, ST_MAX = H["ST_UNMATCHED"], H["ST_REPLACED_BYTES"], H["ST_MAX"]
EVENTS = H.enum("kv_event").names("EV_")
NEV = H["NEV"]
DURATIONS = H.enum("kv_dur").names("DUR_")
NDUR = H["NDUR"]
PHASES = DURATIONS[:4]
TOP_PROCESSES = 20
WATCH_MAX = H["KV_WATCH_MAX"]
# the settling window: pushed a third of its length past each pre-attach free, to at most 5x
WINDOW_QUIET_DIVISOR, WINDOW_CAP_FACTOR = 3, 5
ST_ENQ_LARGE, ST_TRACKED = H["ST_ENQ_LARGE"], H["ST_TRACKED"]
ST_TRACKED_BYTES = H["ST_TRACKED_BYTES"]
ST_LATE_UNMATCHED, ST_ENQ_NOLOCK = H["ST_LATE_UNMATCHED"], H["ST_ENQ_NOLOCK"]
W_STATS = ("enqueued", "enqueued_bytes", "enqueued_headless", "enqueued_headless_bytes", "freed",
           "freed_bytes", "untracked", "untracked_bytes")  # ST_W_ENQ.. in this order
ST_W_FIRST = H["ST_W_ENQ"]
ST_WINDOW_TRACKED, ST_WINDOW_GONE = H["ST_WINDOW_TRACKED"], H["ST_WINDOW_GONE"]
INF_SHEAF = H["INF_SHEAF"]
INF_WINDOW = H["INF_WINDOW"]
INF_WATCHED = H["INF_WATCHED"]
INF_PENDING, INF_OTHER, INF_SHIFT = H["INF_PENDING"], H["INF_OTHER"], H["INF_SHIFT"]
TGID_OTHER = H["KV_TGID_OTHER"]  # kv_pending_tgid's overflow slot: processes without their own


# ---------------------------------------------------------------- read

KV_END, KV_STATS, KV_EVENTS, KV_GAUGE = H["KV_END"], H["KV_STATS"], H["KV_EVENTS"], H["KV_GAUGE"]
KV_LAT, KV_GPS, KV_DUR, KV_GONE = H["KV_LAT"], H["KV_GPS"], H["KV_DUR"], H["KV_GONE"]


def read(b: Any, ctx: base.ReadContext) -> Raw:
    """The maps of bpf/kvfree_rcu.bpf.c: per-process records and pending first (batch lookups),
    then every counter of every CPU in one lookup (kv_counters), so the totals and their
    per-CPU and per-path splits describe one instant. The pending followed objects by process
    (the weights of the per-process split) come from kv_pending_tgid, a slot per process the
    kernel side keeps; only with `count_map` is the tracking map itself read (its 65,536
    buckets are most of a snapshot's cost under emulation), again until no counter moved
    across its read (its totals and the per-process slots are then checked)."""
    raw: Raw = {"misses": base.program_misses(b)}  # before the counters: never more
    raw["by_task"] = by_task(*base.batch_arrays(b["kvfree_by_task"]))
    raw["pending_by_tgid"] = tgid_rows(*base.batch_arrays(b["kv_pending_tgid"]))
    words, raw["torn"] = base.whole_words(b["kv_counters"], KV_END)
    raw["counters"] = words.tolist()
    if ctx.count_map:
        raw["in_map"] = None
        for _ in range(5):
            before = raw["counters"]
            inflight = base.batch_values(b["kv_inflight"])
            slots = base.batch_arrays(b["kv_pending_tgid"])
            words, raw["torn"] = base.whole_words(b["kv_counters"], KV_END)
            raw["counters"] = words.tolist()
            if raw["counters"] == before:
                raw["in_map"] = in_map_counts(inflight)
                raw["pending_by_tgid"] = tgid_rows(*slots)
                break
            time.sleep(0.05)
    _remember_words(raw["counters"], words)
    # kv_cfg looked up once (each lookup or update is a bpf() call): the helpers below change
    # this copy, written back once if one did (only user space writes kv_cfg)
    cfg = b["kv_cfg"][0]
    raw["sample_one_in"] = int(cfg.sample_mask) + 1
    # built with the gauge (RCUPENDING_PENDING_PEAK=1, compare). Not `"kv_pending_gauge" in
    # b`: a bcc module iterates only the tables already looked up, so that was never true
    if config.pending_peak():
        g = b["kv_pending_gauge"][0]
        raw["pending_gauge"] = [int(g.objects), int(g.bytes), int(g.peak_objects),
                                int(g.peak_bytes)]
    changed = _extend_window(cfg, raw["counters"])
    changed |= _end_look_all(cfg, raw["counters"])  # `|=`: every helper runs, in this order
    changed |= _close_window(cfg)
    if changed:
        b["kv_cfg"][0] = cfg
    return raw


TASK_FIELDS = ("objects", "bytes", "headless", "headless_bytes", "sampled", "sampled_bytes",
               "untracked", "untracked_bytes")  # struct task_bytes: raw by_task's columns
_TASK_DTYPE = np.dtype([(f, np.uint64) for f in TASK_FIELDS])  # struct task_bytes as bcc has it


def by_task(keys: np.ndarray, values: np.ndarray) -> list[list[Any]]:
    """[tgid, comm, *TASK_FIELDS] per process and name (kvfree_by_task's keys and values),
    sorted; two keys whose comm differs only after its NUL are one row."""
    tasks: dict[tuple[int, str], list[int]] = {}
    comms = keys["comm"].view(f"S{keys.dtype['comm'].itemsize}").ravel()
    names = list(map(base.comm_of, comms.tolist()))
    if values.dtype == _TASK_DTYPE:  # the columns in order, nothing between: a plain view
        counts = values.view(np.uint64).reshape(-1, len(TASK_FIELDS)).tolist()
    else:
        counts = np.stack([values[f] for f in TASK_FIELDS], axis=1).tolist() if len(values) else []
    for tgid, name, row in zip(keys["tgid"].tolist(), names, counts, strict=True):
        if (cur := tasks.get((tgid, name))) is None:
            tasks[tgid, name] = row
        else:
            cur[:] = [a + b for a, b in zip(cur, row, strict=True)]
    return [[t, c, *v] for (t, c), v in sorted(tasks.items())]


def _extend_window(cfg: Any, counters: list[list[int]]) -> bool:
    """While frees of objects from before attach still come, the window stays open (every
    object followed, so each such free is told apart): each new one pushes its end to a quiet
    period from now, up to RCUPENDING_SETTLE x WINDOW_CAP_FACTOR after attach. A backlog that
    outlived a fixed window was counted as post-attach frees (a debian:6.12 VM: pending -18).
    Changes `cfg` (kv_cfg's value) in place; True when it did."""
    early = sum(row[KV_STATS + ST_UNMATCHED + i] for row in counters for i in range(NPATH))
    now = time.monotonic_ns()
    if early <= cfg.early_seen or now >= cfg.window_end:
        return False
    cfg.early_seen = early
    quiet = max(1, config.settle_seconds() // WINDOW_QUIET_DIVISOR) * 1_000_000_000
    cfg.window_end = min(max(cfg.window_end, now + quiet), cfg.window_cap)
    return True


def _close_window(cfg: Any) -> bool:
    """A window that has passed (and can no longer be pushed) becomes 0: the enqueue side
    then skips its clock read for objects it does not follow. Changes `cfg` in place; True
    when it did."""
    if cfg.window_end and time.monotonic_ns() >= cfg.window_end:
        cfg.window_end = 0
        return True
    return False


def tgid_rows(keys: np.ndarray, values: np.ndarray) -> list[list[int]]:
    """[tgid, objects, bytes] of the kv_pending_tgid slots that hold any (a process's slot
    stays, at zero, once its objects have left), by tgid: each object weighed at its enqueue
    by the inverse of its chance to be followed (1 in the window or watched, the sample's
    one_in else). The overflow slot TGID_OTHER, if it holds any, is the last row."""
    objects, nbytes = values["objects"], values["bytes"]
    keep = (objects != 0) | (nbytes != 0)
    order = np.argsort(keys[keep], kind="stable")
    return np.stack([keys[keep].astype(np.int64)[order], objects[keep].astype(np.int64)[order],
                     nbytes[keep].astype(np.int64)[order]], axis=1).tolist()


def record_weights(flags: np.ndarray) -> np.ndarray:
    """The weight each tracking-map record added to its kv_pending_tgid slot (flags: its
    INF_PENDING and log2 above INF_SHIFT; 0 when it counted in no slot)."""
    f = flags.astype(np.int64)
    return np.where(f & INF_PENDING, np.left_shift(1, (f >> INF_SHIFT) & 63), 0)


def pending_by_tgid(inflight: Any) -> list[list[int]]:
    """[tgid, objects, bytes] of the followed objects still pending, by enqueuing process, as
    kv_pending_tgid should hold them (tgid_rows): each object by the weight its record says it
    added (the inverse of its chance to be followed), to its slot (TGID_OTHER for INF_OTHER)."""
    if not len(inflight):
        return []
    flags = inflight["flags"]
    weight = record_weights(flags)
    tgid = np.where(flags & INF_OTHER, TGID_OTHER, inflight["tgid"]).astype(np.int64)
    tgids = np.unique(tgid)  # a sort; each object's row found by bisection,
    where = np.searchsorted(tgids, tgid)  # cheaper than unique's inverse
    objects = np.bincount(where, weights=weight)
    nbytes = np.bincount(where, weights=weight * inflight["bytes"].astype(np.float64))
    # int64 truncates as int() of each float did (the sums are far below 2^53 here)
    rows = zip(tgids.tolist(), objects.astype(np.int64).tolist(),
               nbytes.astype(np.int64).tolist(), strict=True)
    return [list(r) for r in rows if r[1] or r[2]]


def in_map_counts(inflight: Any) -> dict[str, Any]:
    """The tracking map's objects and bytes (and how many went by the sheaf bypass), and the
    per-process pending its records add up to (kv_pending_tgid's, checked against it)."""
    sheaf = int(np.count_nonzero(inflight["flags"] & INF_SHEAF))
    return {"objects": len(inflight), "bytes": int(inflight["bytes"].sum()),
            "krc": len(inflight) - sheaf, "sheaf": sheaf,
            "pending_by_tgid": pending_by_tgid(inflight)}


def _end_look_all(cfg: Any, counters: list[list[int]]) -> bool:
    """After the settling window, once every object it followed has left the tracking map,
    the free side stops looking up objects outside the sample (kv_cfg.look_all). Changes
    `cfg` in place; True when it did."""
    gone = sum(row[KV_STATS + ST_WINDOW_GONE] for row in counters)
    tracked = sum(row[KV_STATS + ST_WINDOW_TRACKED] for row in counters)
    if gone < tracked:
        return False
    # a watched stress's objects are followed whatever the sample: look every free up while
    # one is watched, or they would stay in the map
    if cfg.look_all and not cfg.nwatch and time.monotonic_ns() > cfg.window_end:
        cfg.look_all = 0
        return True
    return False


def arm(b: Any) -> None:
    """Before counting starts: follow every object for the settling window (frees of objects
    enqueued before attach are then told apart), 1 in RCUPENDING_SAMPLE after it."""
    cfg = b["kv_cfg"][0]
    now, settle = time.monotonic_ns(), config.settle_seconds() * 1_000_000_000
    cfg.window_end = now + settle if settle else 0  # 0: no window, no clock read
    cfg.window_cap = now + settle * WINDOW_CAP_FACTOR
    cfg.early_seen = 0
    cfg.sample_mask = config.kvfree_sample_one_in() - 1
    cfg.look_all = int(settle > 0)  # no window: only the sample is looked up
    cfg.nwatch = 0
    b["kv_cfg"][0] = cfg
    # the overflow slot, made before any program needs it: a full map cannot make it then
    slots = b["kv_pending_tgid"]
    slots[slots.Key(TGID_OTHER)] = slots.Leaf()


def watch(b: Any, tgids: set[int]) -> None:
    """Follow these processes' objects and count them apart (a stress's, before it starts)."""
    cfg = b["kv_cfg"][0]
    ids = sorted(tgids)[:WATCH_MAX]
    for i, t in enumerate(ids):
        cfg.watch[i] = t
    cfg.nwatch = len(ids)
    if ids:  # their objects are followed whatever the sample: look every free up
        cfg.look_all = 1
    b["kv_cfg"][0] = cfg


# ---------------------------------------------------------------- section


# _view's `hists`, one histogram of HIST_SLOTS a row: latency and grace periods summed over
# paths, then by path, then the durations
HI_LAT, HI_GP, HI_LAT_PATH = 0, 1, 2
HI_GP_PATH = HI_LAT_PATH + NPATH
HI_DUR = HI_GP_PATH + NPATH
# the rows whose percentiles a section gives: all but the grace periods by path
BOUNDED = [HI_LAT, HI_GP, *range(HI_LAT_PATH, HI_GP_PATH), *range(HI_DUR, HI_DUR + NDUR)]


def _view(words: np.ndarray) -> dict[str, Any]:
    """The packed per-CPU counters (kv_slot) as the figures they hold; the histograms as rows
    of HIST_SLOTS (`hists`, rows HI_*) and their counts, summed by numpy over CPUs and rows
    at once."""
    ncpu, slots_ = words.shape
    nslots = (slots_ - KV_GONE - 1) // 2  # the KV_NCPUS the program was built with
    column = words.sum(axis=0)

    def total(lo: int, n: int) -> list[int]:
        return column[lo:lo + n].tolist()

    def rows(lo: int, n: int) -> np.ndarray:
        return column[lo:lo + n * HIST_SLOTS].reshape(n, HIST_SLOTS)

    lat, gps = rows(KV_LAT, NPATH), rows(KV_GPS, NPATH)
    hists = np.vstack([lat.sum(axis=0), gps.sum(axis=0), lat, gps, rows(KV_DUR, NDUR)])
    gone = total(KV_GONE, 2 * nslots)
    return {
        "stats": words[:, KV_STATS:KV_STATS + ST_MAX].T.tolist(),
        "stat_totals": total(KV_STATS, ST_MAX),  # each stat summed over CPUs
        "events": total(KV_EVENTS, NEV),
        "gauge": total(KV_GAUGE, 2),
        "hists": hists,
        "hist_counts": hists.sum(axis=1).tolist(),
        "gone_by_cpu": [[gone[2 * c], gone[2 * c + 1]] if c < nslots else [0, 0]
                        for c in range(ncpu)],
    }


_last_view: tuple[list[list[int]], dict[str, Any]] | None = None
_last_words: tuple[list[list[int]], np.ndarray] | None = None


def _remember_words(counters: list[list[int]], words: np.ndarray) -> None:
    """The array read() made `counters` from, for _view_of(): an array from the lists again
    costs more than the rest of the view."""
    global _last_words
    _last_words = counters, words


def _view_of(counters: list[list[int]]) -> dict[str, Any]:
    """_view() of a reading's counters made once per reading: a snapshot's section() and
    histograms() both need it. A reading is never changed once read, so the same list holds
    the same figures (the list is kept: its id cannot be reused meanwhile); the view is only
    read from. From read()'s array when it made these lists, else from the lists (a
    recording's reading)."""
    global _last_view
    last = _last_view  # one read: another thread may set it meanwhile
    if last is None or last[0] is not counters:
        kept = _last_words
        words = (kept[1] if kept is not None and kept[0] is counters
                 else np.asarray(counters, dtype=np.int64))  # signed 64-bit (whole_words)
        last = _last_view = counters, _view(words)
    return last[1]


def _int_fact(ctx: base.SectionContext, name: str) -> int | None:
    value = (ctx.probe.get("facts") or {}).get(name)
    return int(value) if value is not None and str(value).isdigit() else None


def section(raw: Raw | None, ctx: base.SectionContext) -> Section | None:
    """Snapshot section `kvfree_rcu` (None when the probe is not attached). Every total and
    its per-CPU and per-path splits come from one read of the counters (raw `counters`)."""
    if raw is None or raw.get("counters") is None:
        return None
    view = _view_of(raw["counters"])
    st, tot = view["stats"], view["stat_totals"]
    ncpu = len(st[0])
    head, headless = tot[ST_ENQ_HEAD], tot[ST_ENQ_HEADLESS]
    enq_by_cpu = [st[ST_ENQ_HEAD][c] + st[ST_ENQ_HEADLESS][c] for c in range(ncpu)]
    enq_bytes_by_cpu = list(st[ST_ENQ_BYTES])
    enq, enq_bytes = head + headless, sum(enq_bytes_by_cpu)
    sheaf, sheaf_bytes = tot[ST_ENQ_SHEAF], tot[ST_ENQ_SHEAF_BYTES]
    by_path = {
        p: {"objects": tot[ST_FREED + i], "bytes": tot[ST_FREED_BYTES + i]}
        for i, p in enumerate(PATHS)
    }
    freed = sum(v["objects"] for v in by_path.values())
    freed_bytes = sum(v["bytes"] for v in by_path.values())
    untracked, untracked_bytes = tot[ST_UNTRACKED], tot[ST_UNTRACKED_BYTES]
    replaced, replaced_bytes = tot[ST_REPLACED], tot[ST_REPLACED_BYTES]
    # exact: every object is counted at its enqueue and at its free
    pending = enq - freed - replaced
    pending_bytes = enq_bytes - freed_bytes - replaced_bytes
    # by CPU: the exact totals split as the followed objects (per-object records) split
    gone = view["gone_by_cpu"]
    followed = [st[ST_TRACKED][c] - gone[c][0] for c in range(ncpu)]
    followed_bytes = [st[ST_TRACKED_BYTES][c] - gone[c][1] for c in range(ncpu)]
    # no followed object pending (a few unsampled ones): split as the enqueues did
    pending_by_cpu = shares(pending, followed, enq_by_cpu)
    pending_bytes_by_cpu = shares(pending_bytes, followed_bytes, enq_bytes_by_cpu)
    tracked = tot[ST_TRACKED]
    tracking = {
        "one_in": _int_fact(ctx, "sample_one_in"),
        "settle_s": _int_fact(ctx, "settle_s"),
        "followed": tracked,
        # every object followed (the settling window, --sample 1, or all of them a stress's):
        # per-CPU and per-process splits are then exact, else estimated from the sample
        "exact": tracked == enq and sum(followed) == pending
        and sum(followed_bytes) == pending_bytes,
        "late_unmatched": tot[ST_LATE_UNMATCHED],
    }
    counts = view["hist_counts"]
    bounds = dict(zip(BOUNDED, percentile_bounds_rows(view["hists"][BOUNDED]), strict=True))
    out: Section = {
        "enqueued": {
            "objects": enq,
            "bytes": enq_bytes,
            "by_kind": {"head": head, "headless": headless},
            "by_cpu": enq_by_cpu,
            "bytes_by_cpu": enq_bytes_by_cpu,
            "by_route": {
                "krc": {"objects": enq - sheaf, "bytes": enq_bytes - sheaf_bytes},
                "sheaf": {"objects": sheaf, "bytes": sheaf_bytes},
            },
            "unsized": tot[ST_ENQ_UNSIZED],
            "vmalloc": tot[ST_ENQ_VMALLOC],
            "large": tot[ST_ENQ_LARGE],
            "nolock": tot[ST_ENQ_NOLOCK],
            # calls while the tool was still attaching its hooks (not counted above)
            "before_armed": _event(view, "unarmed"),
        },
        "freed": {
            "objects": freed,
            "bytes": freed_bytes,
            "by_path": by_path,
            # frees of objects enqueued before attach: their own row, subtracted from nothing
            "pre_attach": {p: tot[ST_UNMATCHED + i] for i, p in enumerate(PATHS)},
        },
        "pending": {
            "objects": pending,
            "bytes": pending_bytes,
            "by_cpu": pending_by_cpu,
            "bytes_by_cpu": pending_bytes_by_cpu,
            # the kernel side's own running count of pending, from the same read
            "gauge": {"objects": view["gauge"][0], "bytes": view["gauge"][1]},
        },
        # to be followed per object but the tracking map was full; outside the sample
        "untracked": {"objects": untracked, "bytes": untracked_bytes,
                      "unsampled": _event(view, "unsampled")},
        "tracking": tracking,
        "replaced": replaced,
        "replaced_bytes": replaced_bytes,
        "fallback": {
            "list": by_path["list"]["objects"],
            "inline": by_path["inline"]["objects"],
            "list_ratio": by_path["list"]["objects"] / freed if freed else None,
            "inline_ratio": by_path["inline"]["objects"] / freed if freed else None,
        },
        "latency": {
            "count": counts[HI_LAT],
            "ns": bounds[HI_LAT],
            "gps": bounds[HI_GP],
            "by_path": {
                p: {"count": n, "ns": bounds[HI_LAT_PATH + i]}
                for i, p in enumerate(PATHS)
                if (n := counts[HI_LAT_PATH + i])
            },
        },
        "conservation": conservation(tracked, sum(g[0] for g in gone), raw.get("in_map"),
                                     raw.get("pending_by_tgid")),
    }
    tasks = {(t, c): rest for t, c, *rest in raw.get("by_task") or []}
    pending_tgid = {t: [o, nb] for t, o, nb in raw.get("pending_by_tgid") or []}
    out["by_process"], out["by_process_other"] = _by_process(
        tasks, pending_tgid, out, int(raw.get("sample_one_in") or 1))
    if raw.get("pending_gauge"):
        # high-water mark kept by the kernel side at every enqueue and free (tracked objects):
        # a peak between two reads that sampling the pending level would miss
        _, _, peak_objects, peak_bytes = raw["pending_gauge"]
        out["pending"]["peak"] = {"objects": peak_objects, "bytes": peak_bytes}
    out.update(_kernel_events(view, bounds))
    if (m := raw.get("misses")) is not None:
        # runs the kernel skipped: fentry's per-program recursion check (a preempted program
        # on that CPU counts too, on preemptible kernels), or kprobe programs nested in another
        # BPF program; an enqueue missed here is not counted anywhere else
        out["misses"] = {
            "recursion": sum(m.values()),
            "enqueue": sum(n for p, n in m.items() if p.endswith("kvfree_call_rcu")
                           and not p.startswith(("kretfunc", "kretprobe"))),
            "by_program": {p: n for p, n in sorted(m.items()) if n},
        }
    if ctx.stress_tgids:
        out["by_stress"] = _by_stress(tot)
    return out


def _by_stress(tot: list[int]) -> dict[str, int]:
    """The watched processes' (a stress's) objects, counted apart and followed one by one from
    before their first enqueue: exact, whatever the sample. `tot`: each stat summed over CPUs."""
    bs = {name: tot[ST_W_FIRST + i] for i, name in enumerate(W_STATS)}
    bs["pending"] = bs["enqueued"] - bs["freed"] - bs["untracked"]
    bs["pending_bytes"] = bs["enqueued_bytes"] - bs["freed_bytes"] - bs["untracked_bytes"]
    return bs


def _event(raw: Raw, name: str) -> int:
    ev = raw.get("events")
    i = EVENTS.index(name)
    return int(ev[i]) if ev is not None and i < len(ev) else 0


def _kernel_events(view: dict[str, Any], bounds: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Phases, grace periods, barrier, shrinker, page refill and nolock counters (None when
    this kernel or attach kind has no hook for them: the probe's `unavailable` says why);
    `bounds`: the percentile bounds of the view's `hists`, by row."""
    if view.get("events") is None:
        return {"phases": None, "rcu_gp": None, "events": None}
    ev = dict(zip(EVENTS, view["events"], strict=True))

    def timed(name: str) -> dict[str, Any]:
        row = HI_DUR + DURATIONS.index(name)
        return {"count": view["hist_counts"][row], "ns": bounds[row]}

    return {
        "phases": {
            "objects": {"phased": ev["phased"], "ready": ev["ready"]},
            **{p: timed(p) for p in PHASES},
        },
        "rcu_gp": {"completed": ev["gp"], "duration": timed("rcu_gp")},
        "events": {
            "barrier": {"calls": ev["barrier"], "duration": timed("barrier")},
            "shrinker": {"scans": ev["shrink_scan"], "freed": ev["shrink_freed"]},
            "page_refill": ev["refill"],
            "reclaim_work": ev["reclaim_work"],
            "bulk_pages": ev["bulk_pages"],
            "kfree_rcu_nolock": {"calls": ev["nolock_enq"], "deferred": ev["nolock_defer"]},
        },
    }


def histograms(raw: Raw | None) -> dict[str, Any]:
    """Log2 latency histograms of the kvfree family, per path and in total."""
    if raw is None or raw.get("counters") is None:
        return {}
    view = _view_of(raw["counters"])
    buckets, counts = log2_buckets_rows(view["hists"]), view["hist_counts"]
    out: dict[str, Any] = {}
    for name, total, by_path, unit in (("latency_ns", HI_LAT, HI_LAT_PATH, "ns"),
                                       ("latency_gps", HI_GP, HI_GP_PATH, "grace periods + 1")):
        out[f"kvfree_rcu.{name}"] = {"unit": unit, "buckets": buckets[total]}
        for i, p in enumerate(PATHS):
            if counts[by_path + i]:
                out[f"kvfree_rcu.{name}.{p}"] = {"unit": unit, "buckets": buckets[by_path + i]}
    for i, d in enumerate(DURATIONS):
        if counts[HI_DUR + i]:
            key = f"kvfree_rcu.phase_ns.{d}" if d in PHASES else f"kvfree_rcu.{d}_ns"
            out[key] = {"unit": "ns", "buckets": buckets[HI_DUR + i]}
    return out


def conservation(tracked: int, gone: int, in_map: dict[str, Any] | None,
                 by_tgid: list[list[int]] | None = None) -> dict[str, Any]:
    """The followed objects: tracked = gone (freed or replaced) + still in the tracking map,
    with the map counted when the read asked for it (`in_map`), else derived (unchecked).
    `by_process_ok`: the kernel's per-process pending slots (`by_tgid`) hold what the map's
    records add up to (None unchecked)."""
    derived = tracked - gone
    counted = None if in_map is None else in_map.get("objects")
    want = None if in_map is None else in_map.get("pending_by_tgid")
    return {
        "tracked": tracked,
        "gone": gone,
        "pending": derived if counted is None else counted,
        "pending_in_map": counted,
        "ok": None if counted is None else counted == derived,
        "by_process_ok": None if want is None else want == (by_tgid or []),
    }


def _by_process(tasks: dict, pending: dict, kv: Section,
                one_in: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The top processes and an `other` row that together make the exact totals. A process's
    enqueued objects and bytes are its shares of the totals weighed by its followed enqueues,
    each by the inverse of its chance to be followed (1 in the window or watched, `one_in` in
    the sample: an unbiased estimate); its pending ones, weighed likewise by its followed
    objects in the tracking map (`pending`: tgid -> [objects, bytes], weighed at read).
    Largest remainders, so that rows + other = the totals."""
    extra = one_in - 1
    # tgid -> [objects by comm, objects, bytes, weighed objects, weighed bytes]
    procs: dict[int, list[Any]] = {}
    for (tgid, name), v in tasks.items():
        objects, nbytes, _, _, sampled, sampled_bytes = (
            v[:6] if len(v) >= 6 else (list(v) + [0] * 6)[:6])
        if (r := procs.get(tgid)) is None:
            procs[tgid] = [{name: objects}, objects, nbytes, objects + extra * sampled,
                           nbytes + extra * sampled_bytes]
            continue
        r[0][name] = r[0].get(name, 0) + objects
        r[1] += objects
        r[2] += nbytes
        r[3] += objects + extra * sampled
        r[4] += nbytes + extra * sampled_bytes
    for tgid in pending.keys() - procs.keys():  # its per-process record did not fit
        if tgid != TGID_OTHER:  # (the set's own order: ties in the shares go by it)
            procs[tgid] = [{"?": 0}, 0, 0, 0, 0]
    rows, ws = [], []
    for tgid, (by_comm, objects, _, wo, wb) in procs.items():
        p_objects, p_bytes = pending.get(tgid, (0, 0))
        comms = list(by_comm)
        row = {"tgid": tgid, "comm": comms[0], "followed": objects}
        if len(comms) > 1:  # most processes enqueue under one name
            comms.sort(key=lambda c: (-by_comm[c], c))
            row["comm"], row["comms"] = comms[0], comms
        rows.append(row)
        ws.append((wo, wb, p_objects, p_bytes))
    if (o := pending.get(TGID_OTHER)) is not None:  # processes with no pending slot of their
        ws.append((0, 0, o[0], o[1]))  # own: their share is weighed, and left to `other`
    enq, pend = kv["enqueued"], kv["pending"]
    totals = (("objects", enq["objects"]), ("bytes", enq["bytes"]),
              ("pending_objects", pend["objects"]), ("pending_bytes", pend["bytes"]))
    weights = [list(w) for w in zip(*ws, strict=True)] or [[]] * len(totals)  # per total
    for (key, total), w in zip(totals, weights, strict=True):
        for r, share in zip(rows, shares(total, w)[:len(rows)], strict=True):
            r[key] = share
    rows.sort(key=lambda r: (-r["pending_bytes"], -r["objects"], r["tgid"]))
    top = rows[:TOP_PROCESSES]
    other = {"processes": len(rows) - len(top)}
    other |= {key: total - sum(r[key] for r in top) for key, total in totals}
    return top, other


def shares(total: int, weights: list[int], fallback: list[int] | None = None) -> list[int]:
    """`total` split in proportion to `weights` in whole units that sum to it exactly (largest
    remainders). When the weights are all zero: in proportion to `fallback` if given (a split
    with no `other`, such as per CPU, must still sum to the total), else all to nobody (zeros),
    the remainder then staying with `other`; zeros when the total is not positive."""
    wsum = sum(weights)
    if wsum <= 0 and fallback is not None and total > 0:
        weights, wsum = fallback, sum(fallback)
        if wsum <= 0:  # nothing to go by: the first slot holds it, the sum stays exact
            weights, wsum = [1] + [0] * (len(fallback) - 1), 1
    if total <= 0 or wsum <= 0:
        return [0] * len(weights)
    parts = [divmod(total * w, wsum) for w in weights]  # integers: exact for any size
    out = [q for q, _ in parts]
    if left := total - sum(out):  # to the largest remainders, the first on a tie (stable)
        rems = [r for _, r in parts]
        for i in sorted(range(len(rems)), key=rems.__getitem__, reverse=True)[:left]:
            out[i] += 1
    return out


# ---------------------------------------------------------------- metrics

METRICS: tuple[Metric, ...] = (
    Metric("kvfree_rcu_enqueued_objects", "counter", "objects queued by kvfree_call_rcu()"),
    Metric("kvfree_rcu_enqueued_bytes", "counter", "bytes queued by kvfree_call_rcu() (ksize)"),
    Metric("kvfree_rcu_enqueued_objects_by_kind", "counter",
           "kvfree_call_rcu() objects by kind (head: kfree_rcu(ptr, rhf); headless)", ("kind",)),
    Metric("kvfree_rcu_enqueued_objects_by_cpu", "counter",
           "kvfree_call_rcu() objects by CPU", ("cpu",)),
    Metric("kvfree_rcu_enqueued_bytes_by_cpu", "counter",
           "kvfree_call_rcu() bytes by CPU", ("cpu",)),
    Metric("kvfree_rcu_enqueued_objects_by_route", "counter",
           "kvfree_call_rcu() objects by route (krc batching, slab sheaf)", ("route",)),
    Metric("kvfree_rcu_enqueued_bytes_by_route", "counter",
           "kvfree_call_rcu() bytes by route", ("route",)),
    Metric("kvfree_rcu_enqueued_unsized_objects", "counter",
           "enqueued objects whose size is unknown"),
    Metric("kvfree_rcu_enqueued_vmalloc_objects", "counter", "enqueued vmalloc'ed objects"),
    Metric("kvfree_rcu_freed_objects", "counter", "tracked objects whose wait behind RCU ended"),
    Metric("kvfree_rcu_freed_bytes", "counter", "bytes of tracked objects freed after their wait"),
    Metric("kvfree_rcu_freed_objects_by_path", "counter",
           "freed objects by free path (bulk, list, inline: kvfree_rcu's; list, inline: fallbacks)",
           ("path",)),
    Metric("kvfree_rcu_freed_bytes_by_path", "counter", "freed bytes by free path", ("path",)),
    Metric("kvfree_rcu_freed_pre_attach_objects_by_path", "counter",
           "frees of objects enqueued before attach (not matched, not subtracted)", ("path",)),
    Metric("kvfree_rcu_pending_objects", "gauge", "tracked objects enqueued and not yet freed"),
    Metric("kvfree_rcu_pending_bytes", "gauge", "bytes enqueued and not yet freed (stranded)"),
    Metric("kvfree_rcu_pending_objects_by_cpu", "gauge",
           "pending objects by enqueuing CPU", ("cpu",)),
    Metric("kvfree_rcu_pending_bytes_by_cpu", "gauge", "pending bytes by enqueuing CPU", ("cpu",)),
    Metric("kvfree_rcu_untracked_objects", "counter", "enqueues the tracking map could not hold"),
    Metric("kvfree_rcu_untracked_bytes", "counter", "bytes of untracked enqueues"),
    Metric("kvfree_rcu_bulk_page_free_events", "counter", "krc bulk pages freed (kvfree_rcu_bulk)"),
    Metric("kvfree_rcu_followed_objects", "counter",
           "objects followed one by one (latency, per-CPU and per-process splits)"),
    Metric("kvfree_rcu_sample_period_objects", "gauge",
           "after the settling window one object in this many is followed (1: all)"),
    Metric("kvfree_rcu_splits_exact_info", "gauge",
           "1 while every object is followed: per-CPU and per-process splits exact; 0: they "
           "are estimated from the sample"),
    Metric("kvfree_rcu_replaced_objects", "counter",
           "tracked addresses enqueued again before their free was seen"),
    Metric("kvfree_rcu_latency_seconds", "histogram",
           "enqueue -> free time per object (log2 buckets)"),
    Metric("kvfree_rcu_latency_by_path_seconds", "histogram",
           "enqueue -> free time per object by free path (log2 buckets)", ("path",)),
    Metric("kvfree_rcu_latency_grace_periods", "histogram",
           "grace periods elapsed + 1 between enqueue and free (log2 buckets)"),
    Metric("kvfree_rcu_latency_by_path_grace_periods", "histogram",
           "grace periods elapsed + 1 between enqueue and free, by free path", ("path",)),
    Metric("kvfree_rcu_process_enqueued_objects", "counter",
           "kvfree_call_rcu() objects of the top 20 processes and of all others (tgid other)",
           ("tgid", "comm")),
    Metric("kvfree_rcu_process_pending_bytes", "gauge",
           "a top process's share of the pending bytes (tgid other: the rest)", ("tgid", "comm")),
    Metric("kvfree_rcu_stress_enqueued_objects", "counter",
           "kvfree_call_rcu() objects of the running stress scenario's workers"),
)

HISTOGRAM_FAMILIES = (
    base.HistogramFamily("kvfree_rcu.latency_ns", "kvfree_rcu_latency_seconds",
                    "kvfree_rcu_latency_by_path_seconds", "path", 1e-9),
    base.HistogramFamily("kvfree_rcu.latency_gps", "kvfree_rcu_latency_grace_periods",
                    "kvfree_rcu_latency_by_path_grace_periods", "path"),
)


def samples(kv: Section) -> list:
    """The metric samples of a `kvfree_rcu` section (fields an older snapshot lacks: none)."""
    c = Samples(METRICS)
    enq = kv["enqueued"]
    c("kvfree_rcu_enqueued_objects", enq["objects"])
    if "bytes" in enq:
        c("kvfree_rcu_enqueued_bytes", enq["bytes"])
    for kind, n in enq.get("by_kind", {}).items():
        c("kvfree_rcu_enqueued_objects_by_kind", n, kind=kind)
    for cpu, n in enumerate(enq["by_cpu"]):
        c("kvfree_rcu_enqueued_objects_by_cpu", n, cpu=cpu)
    for cpu, n in enumerate(enq.get("bytes_by_cpu", [])):
        c("kvfree_rcu_enqueued_bytes_by_cpu", n, cpu=cpu)
    for route, v in enq.get("by_route", {}).items():
        c("kvfree_rcu_enqueued_objects_by_route", v["objects"], route=route)
        c("kvfree_rcu_enqueued_bytes_by_route", v["bytes"], route=route)
    if "unsized" in enq:
        c("kvfree_rcu_enqueued_unsized_objects", enq["unsized"])
    if "vmalloc" in enq:
        c("kvfree_rcu_enqueued_vmalloc_objects", enq["vmalloc"])
    if (freed := kv.get("freed")) is not None:
        c("kvfree_rcu_freed_objects", freed["objects"])
        c("kvfree_rcu_freed_bytes", freed["bytes"])
        for path, v in freed.get("by_path", {}).items():
            c("kvfree_rcu_freed_objects_by_path", v["objects"], path=path)
            c("kvfree_rcu_freed_bytes_by_path", v["bytes"], path=path)
        for path, n in freed.get("pre_attach", {}).items():
            c("kvfree_rcu_freed_pre_attach_objects_by_path", n, path=path)
    if (pend := kv.get("pending")) is not None:
        c("kvfree_rcu_pending_objects", pend["objects"])
        c("kvfree_rcu_pending_bytes", pend["bytes"])
        for cpu, n in enumerate(pend.get("by_cpu", [])):
            c("kvfree_rcu_pending_objects_by_cpu", n, cpu=cpu)
        for cpu, n in enumerate(pend.get("bytes_by_cpu", [])):
            c("kvfree_rcu_pending_bytes_by_cpu", n, cpu=cpu)
    if (unt := kv.get("untracked")) is not None:
        c("kvfree_rcu_untracked_objects", unt.get("objects", 0))
        c("kvfree_rcu_untracked_bytes", unt.get("bytes", 0))
    if "replaced" in kv:
        c("kvfree_rcu_replaced_objects", kv["replaced"])
    if (t := kv.get("tracking")) is not None:
        c("kvfree_rcu_followed_objects", t["followed"])
        c("kvfree_rcu_splits_exact_info", int(bool(t["exact"])))
        if t.get("one_in"):
            c("kvfree_rcu_sample_period_objects", int(t["one_in"]))
    if (ev := kv.get("events")) and "bulk_pages" in ev:
        c("kvfree_rcu_bulk_page_free_events", ev["bulk_pages"])
    rows = [*kv["by_process"]]
    if (other := kv.get("by_process_other")) is not None:
        rows.append(dict(other, tgid="other", comm="other"))  # rows + other = the totals
    for p in rows:
        c("kvfree_rcu_process_enqueued_objects", p["objects"], tgid=p["tgid"], comm=p["comm"])
        if "pending_bytes" in p:
            c("kvfree_rcu_process_pending_bytes", p["pending_bytes"], tgid=p["tgid"],
              comm=p["comm"])
    if "by_stress" in kv:
        c("kvfree_rcu_stress_enqueued_objects", kv["by_stress"].get("enqueued", 0))
    return c.out


FAMILY = Family("kvfree_rcu", "kvfree_call_rcu", read, section, histograms, samples, METRICS,
                HISTOGRAM_FAMILIES, arm=arm, watch=watch)
