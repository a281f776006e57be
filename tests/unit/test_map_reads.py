"""families/base.py's per-CPU array rows from a batch read (no kernel: the read is faked)."""

from __future__ import annotations

import numpy as np

from rcupending_tools.families import base


def test_percpu_rows_are_the_rows_by_key_read_whole_or_not(monkeypatch):
    """Rows 0..n-1 by key, zero where the read had none: a whole array read (8 rows for 6
    asked, like `lost`) is sliced, a partial read placed by its keys."""
    vals = np.arange(16, dtype=np.uint64).reshape(8, 2)
    keys = np.arange(8, dtype=np.uint32)
    monkeypatch.setattr(base, "_lookup_batch", lambda t: (keys, vals, 8))
    assert base.percpu_rows(None, 6) == vals[:6].tolist()
    assert base.percpu_rows(None, 8) == vals.tolist()
    part_keys = np.array([5, 1, 7, 0], dtype=np.uint32)
    monkeypatch.setattr(base, "_lookup_batch", lambda t: (part_keys, vals[:4], 3))
    want = [[0, 0]] * 6
    want[5], want[1] = vals[0].tolist(), vals[1].tolist()  # key 7 is past n; key 0 not read
    assert base.percpu_rows(None, 6) == want
    monkeypatch.setattr(base, "_lookup_batch", lambda t: (keys[:4], vals[:4], 4))
    assert base.percpu_rows(None, 6) == vals[:4].tolist() + [[0, 0]] * 2  # fewer rows than n
