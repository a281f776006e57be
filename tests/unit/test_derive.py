"""pipeline.derive: the one place rates and percentiles are computed."""

import random

import pandas as pd

from rcupending_tools.pipeline import derive


def test_percentile_bounds():
    counts = [0] * 64
    counts[10], counts[20] = 90, 10  # 90 values in [1024, 2048), 10 in [2^20, 2^21)
    b = derive.percentile_bounds(counts)
    assert {k: b[k] for k in ("p50", "p90", "p99", "max")} == {
        "p50": 2048, "p90": 2048, "p99": 1 << 21, "max": 1 << 21}
    assert b["ranges"]["p50"] == [1024, 2048] and b["ranges"]["p99"] == [1 << 20, 1 << 21]
    assert derive.percentile_bounds([0] * 64)["p50"] is None


def test_percentile_is_exact_at_the_boundary():
    # 90 of 100 values in the first bucket: p90 is that bucket, p91 the next
    buckets = [[1, 2, 90], [2, 4, 10]]
    assert derive.percentile(buckets, 90) == 2
    assert derive.percentile(buckets, 91) == 4
    assert derive.percentile([], 50) is None


def test_rate_between_snapshots():
    a, b = {"time": 10.0, "n": 5}, {"time": 12.0, "n": 9}
    assert derive.rate(a, b, lambda s: s["n"]) == 2.0
    assert derive.rate(None, b, lambda s: s["n"]) is None
    assert derive.rate(b, b, lambda s: s["n"]) is None  # no time passed
    assert derive.rate(a, b, lambda s: None) is None


def test_rates_of_a_series():
    s = pd.Series([0, 10, 30], index=[0.0, 1.0, 3.0])
    assert derive.rates(s).tolist() == [10.0, 10.0]


def test_ranges_are_what_people_read():
    assert derive.fmt_range([1 << 24, 1 << 25]) == "16.8–33.6 ms"
    assert derive.fmt_range([2, 4], "grace periods + 1") == "2–4"
    assert derive.fmt_range(None) == "?"


def test_interval_buckets_are_the_difference():
    before = [[1, 2, 5], [2, 4, 1]]
    after = [[1, 2, 5], [2, 4, 3], [4, 8, 2]]
    assert derive.interval(before, after) == [[2, 4, 2], [4, 8, 2]]
    assert derive.percentile_range(derive.interval(before, after), 50) == (2, 4)


def _bounds_by_range(counts: list[int]) -> dict:
    """percentile_bounds() as percentile_range() over the buckets gives it (the reference)."""
    buckets = derive.log2_buckets(counts)
    ranges = {f"p{p}": derive.percentile_range(buckets, p) for p in derive.PERCENTILES}
    ranges["max"] = (buckets[-1][0], buckets[-1][1]) if buckets else None
    out = {k: None if r is None else r[1] for k, r in ranges.items()}
    out["ranges"] = {k: None if r is None else list(r) for k, r in ranges.items()}
    return out


def test_percentile_bounds_agree_with_percentile_range():
    rng = random.Random(5)
    cases = [[0] * 64, [3] + [0] * 63, [0] * 63 + [1 << 62], [-2, 1, 0, 4], [5, -5, 0, 1]]
    for _ in range(300):
        cases.append([rng.choice((0, 0, 1, rng.randrange(1 << 40))) for _ in range(64)])
    for counts in cases:
        assert derive.percentile_bounds(counts) == _bounds_by_range(counts), counts


def test_rows_at_once_agree_with_one_row_at_a_time():
    """percentile_bounds_rows() and log2_buckets_rows() (numpy over many histograms) give
    what percentile_bounds() and log2_buckets() give each row, overflow-prone rows included."""
    rng = random.Random(7)
    for width in (0, 4, 64):
        rows = [[0] * width, [1] * width]
        for _ in range(200):
            rows.append([rng.choice((0, 0, 0, 1, -1, rng.randrange(1 << 40)))
                         for _ in range(width)])
        for batch in (rows, rows[2:12], [[0] * (width - 1) + [1 << 62]] if width else []):
            if not batch:
                continue
            assert derive.percentile_bounds_rows(batch) == [derive.percentile_bounds(r)
                                                             for r in batch]
            assert derive.log2_buckets_rows(batch) == [derive.log2_buckets(r) for r in batch]
