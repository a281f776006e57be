"""Guest experiment (not a test): ns per run of tiny fentry programs on kvfree_call_rcu, all
attached together during the native flood, BPF stats on; what one helper call or map access
costs under the machine at hand (README OVERHEAD, run P). A guard program attached last runs
first in the trampoline and takes the first position's extra cost.

    rcupending lab --kernel debian:6.12 -- .venv/bin/python scripts/guest/helper_cost.py
"""

import os
import sys

sys.path.insert(0, os.getcwd())

from bcc import BPF  # noqa: E402

from rcupending_tools.pipeline import selfcost  # noqa: E402
from rcupending_tools.stress import native  # noqa: E402

JIFFIES = next(int(line.split()[0], 16) for line in open("/proc/kallsyms")
               if line.split()[2] == "jiffies_64")
ENTRY = "KFUNC_PROBE(kvfree_call_rcu, void *head, void *ptr)"
VARIANTS = {
    "empty": f"{ENTRY} {{ return 0; }}",
    "probe_read": f"{ENTRY} {{ u64 v = 0; bpf_probe_read_kernel(&v, 8, (void *){JIFFIES}ULL);"
                  " return 0; }",
    "ktime": f"{ENTRY} {{ bpf_ktime_get_ns(); return 0; }}",
    "percpu_lookup_8_adds": "struct c { u64 v[64]; }; BPF_PERCPU_ARRAY(cc, struct c, 1);\n"
                            f"{ENTRY} {{ u32 z = 0; struct c *c = cc.lookup(&z); if (!c) return 0;"
                            " c->v[0]++; c->v[3]++; c->v[5] += 64; c->v[9]++; c->v[10] += 64;"
                            " c->v[20]++; c->v[63]++; c->v[1]++; return 0; }",
    "two_array_lookups": "BPF_ARRAY(a1, u64, 1); BPF_ARRAY(a2, u64, 8);\n"
                         f"{ENTRY} {{ u32 z = 0; u64 *x = a1.lookup(&z); u64 *y = a2.lookup(&z);"
                         " if (x && y) *y += *x; return 0; }",
}


def main() -> None:
    mods = {name: BPF(text=text) for name, text in VARIANTS.items()}
    mods["guard"] = BPF(text=VARIANTS["empty"])
    progs = [selfcost.Program(name, fn.decode(), f.fd)
             for name, b in mods.items() for fn, f in b.funcs.items()]
    fd = selfcost.enable_stats()
    try:
        for r in range(4):
            before = {p["probe"]: p for p in selfcost.program_stats(progs, stats_on=True)}
            rate = native.run(3, threads=2)["calls_per_s"]
            cells = []
            for p in selfcost.program_stats(progs, stats_on=True):
                b = before[p["probe"]]
                runs = max(1, p["run_cnt"] - b["run_cnt"])
                cells.append(f"{p['probe']}={(p['run_time_ns'] - b['run_time_ns']) / runs:.0f}")
            print(f"run {r}: {rate:,.0f} calls/s; ns/run " + " ".join(cells), flush=True)
    finally:
        selfcost.disable_stats(fd)


if __name__ == "__main__":
    main()
