"""Tidy rows, the A/B table (median and spread per kernel) and plots of `rcupending compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# metric -> (label, unit, getter on one run's guest result)
METRICS: dict[str, tuple[str, str, Any]] = {
    "rcuscale_ms": ("rcuscale kfree test, all kfree'ers (no BPF)", "ms",
                    lambda r: _get(r, "rcuscale", "ns", scale=1e-6)),
    "rcuscale_batches": ("rcuscale grace periods (batches)", "",
                         lambda r: _get(r, "rcuscale", "batches")),
    "rcuscale_mem_mb": ("rcuscale memory footprint", "MB", lambda r: _get(r, "rcuscale", "mb")),
    "flood_rate": ("flood rate (probes attached)", "objects/s",
                   lambda r: _ratio(_get(r, "flood", "enqueued"), _get(r, "flood", "flood_s"))),
    "latency_p50_ms": ("enqueue -> free p50 (log2 bucket bound)", "ms",
                       lambda r: _get(r, "flood", "latency_ns", "p50", scale=1e-6)),
    "latency_p90_ms": ("enqueue -> free p90", "ms",
                       lambda r: _get(r, "flood", "latency_ns", "p90", scale=1e-6)),
    "latency_p99_ms": ("enqueue -> free p99", "ms",
                       lambda r: _get(r, "flood", "latency_ns", "p99", scale=1e-6)),
    "latency_max_ms": ("enqueue -> free max", "ms",
                       lambda r: _get(r, "flood", "latency_ns", "max", scale=1e-6)),
    "latency_gps_p50": ("grace periods waited p50 (+1)", "GPs",
                        lambda r: _get(r, "flood", "latency_gps", "p50")),
    "pending_peak_kb": ("pending peak over the start (kernel-side high-water mark)", "KiB",
                        lambda r: _get(r, "flood", "pending_peak_bytes", scale=1 / 1024)),
    "metadata_held_kb": ("backend metadata held: krc bulk pages in use / rcu_pending radix "
                         "nodes at their peak", "KiB",
                         lambda r: _get(r, "flood", "cost", "metadata_held_bytes",
                                        scale=1 / 1024)),
    "metadata_peak_kb": ("backend metadata allocated during the run, live peak", "KiB",
                         lambda r: _get(r, "flood", "cost", "metadata_peak_bytes",
                                        scale=1 / 1024)),
    "metadata_alloc_kb": ("backend metadata allocated during the run", "KiB",
                          lambda r: _get(r, "flood", "cost", "metadata_alloc_bytes",
                                         scale=1 / 1024)),
    "mem_available_drop_mb": ("MemAvailable drop, peak", "MB",
                              lambda r: _get(r, "flood", "mem_available_drop_kb", scale=1 / 1024)),
    "grace_periods": ("RCU grace periods during the run", "",
                      lambda r: _get(r, "flood", "grace_periods")),
    "batches": ("batches (krc kfree_rcu_work / rcu_pending runs)", "",
                lambda r: _get(r, "flood", "batches")),
    "callbacks": ("RCU/SRCU callbacks queued during the run, all", "",
                  lambda r: _get(r, "flood", "cost", "callbacks")),
    "backend_callbacks": ("of those, the backend's (rcu_work_rcufn / rcu_pending_rcu_cb)", "",
                          lambda r: _get(r, "flood", "cost", "backend_callbacks")),
    "list_fallback": ("objects freed from the linked list", "",
                      lambda r: _get(r, "flood", "list_fallback")),
    "shrinker_scans": ("krc shrinker scans (9/9 drops the shrinker)", "",
                       lambda r: _get(r, "flood", "shrinker_scans")),
    "drain_s": ("drain time", "s", lambda r: _get(r, "flood", "drain_s")),
}
TIMING = {
    "tcg": "Timings come from QEMU TCG (KVM unusable here): compare kernels with each other "
           "within one run of this command, never with real hardware.",
    "kvm": "Runs under KVM: timings carry virtualisation overhead; compare kernels within one "
           "run of this command.",
}
CAVEAT = (
    "Runs alternate A/B/A/B; spread is min-max. "
    "The rcu_pending variant has no kvfree_rcu shrinker (patch 9/9 drops krc's): shrinker "
    "counts exist only on the stock kernel. Callbacks count every call_rcu/call_srcu in the "
    "guest during the run; backend metadata is krc's bulk pages or rcu_pending's radix nodes "
    "(not its per-CPU darray of sequence numbers), from allocation to free."
)


def _get(r: dict, *path: str, scale: float = 1.0) -> float | None:
    cur: Any = r
    for key in path:
        if not isinstance(cur, dict) or cur.get(key) is None:
            return None
        cur = cur[key]
    return None if isinstance(cur, bool) else float(cur) * scale


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def tidy(runs: list[dict[str, Any]]) -> Any:
    """One row per (kernel, variant, repeat, metric) of the successful runs."""
    import pandas as pd  # heavy: imported on first use, not at start-up

    rows = []
    for run in runs:
        if not run["ok"] or not run["result"]:
            continue
        for metric, (_, _, get) in METRICS.items():
            value = get(run["result"])
            if value is not None:
                rows.append({"kernel": run["kernel"], "variant": run["variant"],
                             "repeat": run["repeat"], "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=["kernel", "variant", "repeat", "metric", "value"])


def summary(df: Any) -> Any:
    """median, min, max and n per (variant, metric, kernel)."""
    if df.empty:
        return df
    g = df.groupby(["variant", "metric", "kernel"], sort=False)["value"]
    return g.agg(["median", "min", "max", "count"]).reset_index()


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def caveats(accels: set[str]) -> str:
    """The timing caveat of the accelerators the runs used, then the rest."""
    timing = " ".join(TIMING[a] for a in sorted(accels) if a in TIMING) or TIMING["tcg"]
    return f"{timing} {CAVEAT}"


def markdown(summ: Any, kernels: list[str], backends: dict[str, str],
             accels: set[str] | None = None) -> str:
    """One table: a row per (variant, metric), a column per kernel: median [min-max] (n)."""
    notes = caveats(accels or set())
    head = " | ".join(f"{k} ({backends.get(k, '?')})" for k in kernels)
    lines = [f"| variant | metric | unit | {head} |", "|---|---|---|" + "---|" * len(kernels)]
    if summ.empty:
        return "\n".join([*lines, "", "(no successful runs)", "", notes]) + "\n"
    for (variant, metric), part in summ.groupby(["variant", "metric"], sort=False):
        label, unit, _ = METRICS[metric]
        cells = []
        for k in kernels:
            row = part[part["kernel"] == k]
            if row.empty:
                cells.append("n/a")
                continue
            r = row.iloc[0]
            cells.append(f"{_fmt(r['median'])} [{_fmt(r['min'])}–{_fmt(r['max'])}] ({r['count']})")
        lines.append(f"| {variant} | {label} | {unit} | {' | '.join(cells)} |")
    return "\n".join([*lines, "", notes]) + "\n"


def plots(df: Any, outdir: Path, kernels: list[str]) -> list[Path]:
    """Per variant, one PNG: each key metric's repeats per kernel (dots) and medians (bars)."""
    import matplotlib  # heavy: imported on first use, not at start-up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["rcuscale_ms", "latency_p50_ms", "pending_peak_kb", "metadata_held_kb",
            "mem_available_drop_mb", "grace_periods", "backend_callbacks", "batches"]
    out = []
    for variant, part in df.groupby("variant", sort=False):
        present = [m for m in keys if (part["metric"] == m).any()]
        if not present:
            continue
        fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], present, strict=True):
            label, unit, _ = METRICS[metric]
            vals = [part[(part["metric"] == metric) & (part["kernel"] == k)]["value"].tolist()
                    for k in kernels]
            ax.bar(range(len(kernels)), [sorted(v)[len(v) // 2] if v else 0 for v in vals],
                   color="#cfd8e3")
            for i, v in enumerate(vals):
                ax.scatter([i] * len(v), v, color="#1f4e79", s=14, zorder=3)
            ax.set_xticks(range(len(kernels)), [k.split(":")[-1] for k in kernels], fontsize=7)
            ax.set_title(f"{label}" + (f" ({unit})" if unit else ""), fontsize=7)
        fig.suptitle(f"{variant}: A/B repeats (dots) and medians (bars)", fontsize=8)
        fig.tight_layout()
        path = outdir / f"compare-{variant}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out
