"""Made-up readings of the kvfree family's packed per-CPU counters (bpf/kvfree_rcu.h)."""

from __future__ import annotations

from rcupending_tools.families import kvfree as km


def counters(ncpu: int, stats: dict[int, list[int]] | None = None,
             events: list[int] | None = None, lat: list[int] | None = None,
             gps: list[int] | None = None, dur: list[int] | None = None,
             gone: dict[int, list[int]] | None = None) -> list[list[int]]:
    """Rows of kv_counters per CPU: `stats` per kv_stat index per CPU; events and histograms
    (flat, as the kernel lays them out) on CPU 0; `gone` {enqueue CPU: [objects, bytes]}
    counted by CPU 0; the gauge follows from the stats; every copy whole."""
    rows = [[0] * (km.KV_GONE + 2 * ncpu + 1) for _ in range(ncpu)]
    for idx, per_cpu in (stats or {}).items():
        for c, v in enumerate(per_cpu):
            rows[c][km.KV_STATS + idx] = v
    for base, flat in ((km.KV_EVENTS, events), (km.KV_LAT, lat), (km.KV_GPS, gps),
                       (km.KV_DUR, dur)):
        for i, v in enumerate(flat or []):
            rows[0][base + i] = v
    for c, (objects, nbytes) in (gone or {}).items():
        rows[0][km.KV_GONE + 2 * c] = objects
        rows[0][km.KV_GONE + 2 * c + 1] = nbytes
    st = stats or {}

    def total(idx: int) -> int:
        return sum(st.get(idx, []))

    freed = [sum(total(km.ST_FREED + i) for i in range(km.NPATH)),
             sum(total(km.ST_FREED_BYTES + i) for i in range(km.NPATH))]
    rows[0][km.KV_GAUGE] = (total(km.ST_ENQ_HEAD) + total(km.ST_ENQ_HEADLESS)
                            - total(km.ST_UNTRACKED) - total(km.ST_REPLACED) - freed[0])
    rows[0][km.KV_GAUGE + 1] = (total(km.ST_ENQ_BYTES) - total(km.ST_UNTRACKED_BYTES)
                                - total(km.ST_REPLACED_BYTES) - freed[1])
    for row in rows:
        row[km.KV_END] = row[-1] = 1
    return rows
