"""`rcupending report`: PNG plots of a recording and one HTML page showing them with provenance.

Everything is derived from the snapshots through the tidy table of views/metrics.py (the CSV
export's rows); a plot whose metric the recording does not carry is not drawn, and the page says
which and why.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import outputs, sanitize
from ..errors import UserError
from ..pipeline import derive
from ..pipeline.recording import Reader, Recording
from . import samples as metrics

FILES = ("index.html", "pending.png", "enqueued.png", "fallback.png", "processes.png",
         "nolock.png", "distributions.png")
MAX_POINTS = 2000  # snapshots kept for the plots: a longer recording is thinned evenly

MISSING = {
    "pending": "pending bytes over time: this recording's snapshots have no kvfree_rcu.pending "
    "(older collector, or kvfree_call_rcu not attached)",
    "fallback": "fallback rates: this recording's snapshots have no kvfree_rcu.freed by path",
    "latency": "latency distribution: this recording's snapshots carry no histograms",
}


@dataclass
class Report:
    directory: Path
    images: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    index: Path | None = None


def _title(rec: Recording) -> str:
    prov = rec.provenance
    lab = (prov.get("lab") or {}).get("spec")
    return f"kernel {prov.get('kernel_release', '?')}" + (f" (lab {lab})" if lab else "")


def _series(df: Any, metric: str, label: str | None = None) -> Any:
    """elapsed_s-indexed values of `metric` (one column per `label` value if given), as
    floats: a u64 counter over 2**63 makes the column Python ints, which no axis takes."""
    sub = df[df["metric"] == metric]
    if sub.empty:
        return None
    sub = sub.assign(value=sub["value"].astype(float))
    if label is None:
        return sub.set_index("elapsed_s")["value"]
    return sub.pivot_table(index="elapsed_s", columns=label, values="value", aggfunc="sum")


def load(reader: Reader, limit: int = MAX_POINTS) -> Recording:
    """The recording with at most about `limit` snapshots, every k-th one (k doubling as it
    grows) and always the last: plots need no more, and memory stays flat."""
    kept: list = []
    n = 0
    stride = 1
    last = None
    for i, s in enumerate(reader):
        n, last = i + 1, s
        if i % stride == 0:
            kept.append(s)
            if len(kept) >= 2 * limit:
                kept, stride = kept[::2], stride * 2
    if kept[-1] is not last:
        kept.append(last)
    return Recording(reader.path, reader.header, kept, reader.truncated, reader.notes, n)


def build(rec: Recording, outdir: str | Path, *, force: bool = False) -> Report:
    """The report in `outdir` (made in a temporary directory first: an error leaves `outdir`
    as it was; an existing report there is replaced only with `force`)."""
    out = Path(outdir)
    with outputs.atomic_dir(out, FILES, force=force) as tmp:
        try:
            rep = _build(rec, tmp)
        except OSError as e:
            raise UserError(f"cannot write the report into {out}: {outputs.why(e)}") from None
    rep.directory = out
    rep.index = out / "index.html"
    return rep


def _clean(rec: Recording) -> Recording:
    """`rec` with every string escaped (sanitize.py): plot labels and the page show them."""
    return Recording(sanitize.text(rec.path), sanitize.deep(rec.header),
                     [sanitize.deep(s) for s in rec.snapshots], rec.truncated,
                     [sanitize.text(n) for n in rec.notes], rec.count)


def _build(rec: Recording, out: Path) -> Report:
    rec = _clean(rec)
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # no findfont floods
    matplotlib.rcParams["text.parse_math"] = False  # a comm with $...$ is text, not TeX
    import matplotlib.pyplot as plt

    rep = Report(out)
    df = metrics.dataframe(rec.snapshots)
    title = _title(rec)

    def save(fig: Any, name: str) -> None:
        try:
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
        except (ValueError, OverflowError) as e:
            # values no axis can hold (a damaged recording: a rate over a 1e-308 s interval
            # near the float limit): the figure says so instead of the report failing
            fig.clf()
            fig.text(0.5, 0.5, f"not plotted: values beyond the axis range ({e})"[:120],
                     ha="center", va="center")
            fig.savefig(out / name, dpi=100)
        plt.close(fig)
        rep.images.append(name)

    # 1. pending (stranded) bytes over time, total and per enqueuing CPU
    pend = _series(df, "kvfree_rcu_pending_bytes")
    if pend is not None:
        fig, ax = plt.subplots(figsize=(9, 4))
        per_cpu = _series(df, "kvfree_rcu_pending_bytes_by_cpu", "cpu")
        if per_cpu is not None:
            ax.stackplot(
                per_cpu.index,
                per_cpu.T.values,
                labels=[f"CPU {c}" for c in per_cpu.columns],
                alpha=0.6,
            )
        ax.plot(pend, color="black", label="pending bytes (all CPUs)")
        ax.set_ylabel("bytes waiting behind RCU")
        ax.set_xlabel("seconds since attach")
        ax.set_title(f"kvfree_rcu pending bytes · {title}")
        ax.legend(loc="upper left", fontsize="small", ncol=4)
        save(fig, "pending.png")
    else:
        rep.notes.append(MISSING["pending"])

    # 2. enqueued (and freed) objects over time and the enqueue rate per CPU
    fams = [
        (
            "kvfree_rcu",
            "kvfree_rcu_enqueued_objects_total",
            "kvfree_rcu_enqueued_objects_by_cpu_total",
        ),
        (
            "rcu_pending",
            "rcu_pending_enqueued_objects_total",
            "rcu_pending_enqueued_objects_by_cpu_total",
        ),
    ]
    present = [(n, tot, cpu) for n, tot, cpu in fams if _series(df, tot) is not None]
    if present:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
        for name, tot, _cpu in present:
            ax1.plot(_series(df, tot), label=f"{name} enqueued")
        freed = _series(df, "kvfree_rcu_freed_objects_total")
        if freed is not None:
            ax1.plot(freed, linestyle="--", label="kvfree_rcu freed")
        ax1.set_ylabel("objects (cumulative)")
        ax1.set_title(f"Objects queued behind RCU · {title}")
        ax1.legend(loc="upper left", fontsize="small")
        name, _tot, cpu = present[0]
        per_cpu = _series(df, cpu, "cpu")
        if per_cpu is not None and len(per_cpu) > 1:
            rates = derive.rates(per_cpu)
            ax2.stackplot(rates.index, rates.T.values, labels=[f"CPU {c}" for c in rates.columns])
            ax2.legend(loc="upper left", fontsize="small", ncol=4)
        ax2.set_ylabel(f"{name} enqueues / s")
        ax2.set_xlabel("seconds since attach")
        save(fig, "enqueued.png")
    else:
        rep.notes.append(
            "no enqueue plot: neither kvfree_call_rcu nor rcu_pending_enqueue was "
            "attached in this recording"
        )

    # 3. fallback rates: frees per path per second, and the fallback share of all frees
    by_path = _series(df, "kvfree_rcu_freed_objects_by_path_total", "path")
    if by_path is not None and len(by_path) > 1:
        rates = derive.rates(by_path)
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        for path in rates.columns:
            if by_path[path].iloc[-1]:
                ax1.plot(rates[path], label=path)
        ax1.set_ylabel("frees / s")
        ax1.set_yscale("symlog")
        ax1.set_title(f"kvfree_rcu frees by path · {title}")
        ax1.legend(loc="upper left", fontsize="small")
        total = rates.sum(axis=1)
        for path in ("list", "inline"):
            if path in rates.columns:
                ax2.plot((rates[path] / total.where(total > 0)) * 100, label=f"{path} fallback")
        ax2.set_ylabel("% of frees")
        ax2.set_xlabel("seconds since attach")
        ax2.legend(loc="upper left", fontsize="small")
        save(fig, "fallback.png")
    else:
        rep.notes.append(MISSING["fallback"])

    # 4. top processes at the end of the recording
    last = rec.last
    fam = (
        "kvfree_rcu"
        if last.get("kvfree_rcu")
        else "rcu_pending"
        if last.get("rcu_pending")
        else None
    )
    procs = last[fam]["by_process"] if fam else []
    if procs:
        shown = procs[:12][::-1]
        fig, ax = plt.subplots(figsize=(9, 0.4 * len(shown) + 1.5))
        ax.barh([f"{p['comm']} [{p['tgid']}]" for p in shown], [float(p["objects"]) for p in shown])
        ax.set_xlabel(f"{fam} objects enqueued (whole recording)")
        ax.set_title(f"Top processes · {title}")
        save(fig, "processes.png")

    # 5. nolock allocator attempts and failures (rates)
    att = _series(df, "nolock_attempts_total")
    if att is not None and len(att) > 1:
        fail = _series(df, "nolock_failures_total")
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(derive.rates(att), label="attempts / s")
        ax.plot(derive.rates(fail), label="failures / s")
        standin = any(
            p["name"] == "alloc_pages_nolock" and p["status"] == "stand-in" for p in last["probes"]
        )
        ax.set_title(
            "nolock page allocator" + (" (stand-in tracepoint)" if standin else "") + f" · {title}"
        )
        ax.set_xlabel("seconds since attach")
        ax.set_ylabel("calls / s")
        ax.legend(fontsize="small")
        save(fig, "nolock.png")

    # 6. latency (and any other) distributions: the last snapshot's histograms (totals only)
    hists = {
        k: v
        for k, v in (last.get("histograms") or {}).items()
        if metrics.histogram_family(k, v.get("unit", ""))[1] == {}
    }
    if hists:
        fig, axes = plt.subplots(len(hists), 1, figsize=(9, 3.2 * len(hists)), squeeze=False)
        for ax, (hname, h) in zip(axes[:, 0], sorted(hists.items()), strict=True):
            b = sorted(h.get("buckets", []), key=lambda x: x[1])
            unit = h.get("unit", "")
            fmt = _fmt_ns if unit == "ns" else (lambda v: f"{v:,}")
            ax.bar(range(len(b)), [float(x[2]) for x in b])
            ax.set_xticks(
                range(len(b)), [f"≤{fmt(x[1])}" for x in b], rotation=45, fontsize="small"
            )
            ps = ", ".join(
                f"p{p} ≤{fmt(v)}"
                for p in derive.PERCENTILES
                if (v := derive.percentile(h.get("buckets", []), p)) is not None
            )
            ax.set_ylabel("objects")
            ax.set_title(f"{hname} ({unit}) · {ps}", fontsize="medium")
        fig.suptitle(f"Distributions at the end of the recording · {title}")
        save(fig, "distributions.png")
    else:
        rep.notes.append(MISSING["latency"])
    rep.index = out / "index.html"
    rep.index.write_text(_html(rec, rep), encoding="utf-8")
    return rep


def _fmt_ns(v: float) -> str:
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}ns"


def _table(rows: list[tuple[str, Any]]) -> str:
    return (
        "<table>"
        + "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        + "</table>"
    )


def _html(rec: Recording, rep: Report) -> str:
    rec = _clean(rec)
    prov = rec.provenance
    first, last = rec.snapshots[0], rec.last
    lab = prov.get("lab") or {}
    about = [
        ("recording", rec.path),
        ("created", rec.header.get("created", "")),
        ("kernel", prov.get("kernel_release", "")),
        (
            "source",
            last["source"] + (f" (lab {lab.get('spec')}: {lab.get('source', '')})" if lab else ""),
        ),
        ("host", prov.get("hostname", "")),
        ("command", prov.get("command", "")),
        ("tool version", prov.get("tool_version", "")),
        (
            "snapshots",
            f"{rec.count or len(rec.snapshots)} (seq {first['seq']}..{last['seq']}, "
            f"{last['elapsed_s'] - first['elapsed_s']:.1f} s)"
            + (", last record truncated" if rec.truncated else "")
            + (f"; plots from {len(rec.snapshots)} of them, evenly spaced"
               if rec.count and rec.count > len(rec.snapshots) else ""),
        ),
    ]
    totals = [
        (
            s.name + (" " + ",".join(f"{k}={v}" for k, v in s.labels.items()) if s.labels else ""),
            f"{s.value:,}" if isinstance(s.value, int) else s.value,
        )
        for s in metrics.samples(last, info=False)
        if s.family not in ("snapshot_time_seconds",)
        and "by_cpu" not in s.family
        and "process" not in s.family
    ]
    probes = "".join(
        f"<tr><td>{html.escape(p['name'])}</td><td>{html.escape(p['status'])}</td>"
        f"<td>{html.escape(p.get('mechanism') or '')}</td><td>{html.escape(p['detail'])}</td></tr>"
        for p in last["probes"]
    )
    imgs = "".join(
        f'<figure><img src="{html.escape(i)}" alt="{html.escape(i)}"></figure>' for i in rep.images
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>rcupending report · {html.escape(_title(rec))}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto}}
table{{border-collapse:collapse;margin-bottom:1em}}th,td{{border:1px solid #ccc;padding:2px 6px;
text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>rcupending report · {html.escape(_title(rec))}</h1>
<h2>Provenance</h2>{_table(about)}
<h2>Totals at the last snapshot</h2>{_table(totals)}
<h2>Probes</h2><table><tr><th>probe</th><th>status</th><th>mechanism</th><th>detail</th></tr>
{probes}</table>
<h2>Plots</h2>{imgs}
<h2>Not plotted</h2><ul>{notes or "<li>nothing: every plot was drawn</li>"}</ul>
</body></html>
"""
