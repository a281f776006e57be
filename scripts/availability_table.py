"""README table, kernel by metric, from VM runs: available, or unavailable with the reason.

Input: the JSON results the VM tier saves (tests/vm/test_kvfree_vm.py writes one file per
kernel into $RCUPENDING_VM_RESULTS, default build/vm-results/), each holding that kernel's
`rcupending check --json` and its stress runs. Output: a markdown table, spliced into README.md
between the availability markers with --write.

    .venv/bin/python scripts/availability_table.py [--write] [results-dir]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- availability:start -->", "<!-- availability:end -->"

# (row label, probe, metric key in the probe's `unavailable`, or None for the probe itself)
ROWS = [
    ("kvfree_rcu enqueues (objects, CPU, process)", "kvfree_call_rcu", None),
    ("bytes (slab slot / vmalloc)", "kvfree_call_rcu", "bytes"),
    ("frees, pending, latency per object", "kvfree_call_rcu", "frees"),
    ("latency in grace periods", "kvfree_call_rcu", "latency_gps"),
    ("sheaf route (rcu_free_sheaf)", "kvfree_call_rcu", "sheaf"),
    ("phases: batch / GP / reclaim", "kvfree_call_rcu", "phases"),
    ("RCU grace-period durations", "kvfree_call_rcu", "gp_duration"),
    ("kvfree_rcu_barrier calls, durations", "kvfree_call_rcu", "barrier"),
    ("krc shrinker scans", "kvfree_call_rcu", "shrinker"),
    ("krc page-cache refills", "kvfree_call_rcu", "page_refill"),
    ("kfree_rcu_nolock calls (7.x)", "kvfree_call_rcu", "kfree_rcu_nolock"),
    ("rcu_pending_enqueue", "rcu_pending_enqueue", None),
    ("try_alloc_pages / alloc_pages_nolock", "alloc_pages_nolock", None),
]


def _cell(probe: dict | None, metric: str | None) -> str:
    if probe is None:
        return "no result"
    if metric is None:
        if probe["status"] == "attached":
            return f"yes ({probe['mechanism']})"
        return f"{probe['status']}: {probe['detail']}"
    if probe["status"] != "attached":
        return f"({probe['status']})"
    why = (probe.get("unavailable") or {}).get(metric)
    return "yes" if why is None else f"no: {why}"


def _kernel_key(spec: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", spec)) or (0,)


def table(results: list[dict]) -> str:
    results = sorted(results, key=lambda r: _kernel_key(r["spec"]))
    head = "| metric | " + " | ".join(f"{r['spec']} ({r['release']})" for r in results) + " |"
    lines = [head, "|" + " --- |" * (len(results) + 1)]
    for label, probe_name, metric in ROWS:
        cells = []
        for r in results:
            probes = {p["name"]: p for p in ((r.get("check") or {}).get("out") or {}).get(
                "probes", [])}
            cells.append(_cell(probes.get(probe_name), metric).replace("|", "/"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    write = "--write" in argv
    args = [a for a in argv if a != "--write"]
    src = Path(args[0]) if args else ROOT / "build" / "vm-results"
    files = sorted(src.glob("*.json"))
    if not files:
        print(f"no VM results in {src} (run the VM tier first)", file=sys.stderr)
        return 1
    try:
        results = [json.loads(f.read_text()) for f in files]
    except (OSError, json.JSONDecodeError) as e:
        print(f"unreadable VM result: {e}", file=sys.stderr)
        return 1
    md = table(results)
    if not write:
        print(md)
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md lacks the {START} / {END} markers", file=sys.stderr)
        return 1
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{md}\n{END}{after}")
    print(f"README.md: table of {len(results)} kernels written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
