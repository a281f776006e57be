"""The A/B report of `rcupending compare`: runs.json, tidy and summary CSVs, table.md (with the
rcuscale lines and any VM run again), plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import table


def files(variants: list[str]) -> list[str]:
    """Every file `write` may make for these variants."""
    return ["runs.json", "compare.csv", "summary.csv", "table.md",
            *(f"compare-{v}.png" for v in variants)]


def write(runs: list[dict[str, Any]], kernels: list[str], outdir: Path) -> tuple[str, list]:
    """Write every output of `runs` into `outdir`; (the markdown table, the plots written)."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    df = table.tidy(runs)
    df.to_csv(outdir / "compare.csv", index=False)
    summ = table.summary(df)
    summ.to_csv(outdir / "summary.csv", index=False)
    backends = {r["kernel"]: (r["result"] or {}).get("flood", {}).get("backend") for r in runs
                if r["ok"]}
    md = table.markdown(summ, kernels, backends, {r["accel"] for r in runs})
    rcuscale = [f"{r['kernel']} {r['variant']} #{r['repeat'] + 1}: "
                + ((r["result"] or {}).get("rcuscale") or {}).get("line", "(not run)")
                for r in runs if r["ok"]]
    md += "\nrcuscale summary lines:\n\n" + "\n".join(f"- {ln}" for ln in rcuscale) + "\n"
    retried = [f"{r['kernel']} {r['variant']} #{r['repeat'] + 1}: {f}"
               for r in runs for f in r["boot_failures"]]
    if retried:
        md += ("\nVMs that died before the run started or of a TCG int3 Oops, each run "
               "again once:\n\n"
               + "\n".join(f"- {ln}" for ln in retried) + "\n")
    (outdir / "table.md").write_text(md)
    pngs = table.plots(df, outdir, kernels) if not df.empty else []
    return md, pngs
