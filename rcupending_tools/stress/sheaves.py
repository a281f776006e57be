"""Flush per-CPU rcu_free sheaves (6.18+), where kvfree_rcu objects wait until a sheaf fills.

Writing to /sys/kernel/slab/<cache>/shrink runs kmem_cache_shrink(): flush_all() makes every
CPU hand its rcu_free sheaf to call_rcu(rcu_free_sheaf_nobarn) (mm/slub.c pcs_flush_all), so
those objects are freed one grace period later. Only the kmalloc caches are shrunk.
"""

from __future__ import annotations

from pathlib import Path

SLAB_SYSFS = Path("/sys/kernel/slab")


def flush_kmalloc_sheaves(root: Path = SLAB_SYSFS) -> dict:
    """Shrink every kmalloc cache once; {"caches": shrunk, "failed": refused}."""
    done = failed = 0
    for cache in sorted(root.glob("kmalloc*")):
        try:
            (cache / "shrink").write_text("1")
            done += 1
        except OSError:
            failed += 1
    return {"caches": done, "failed": failed}
