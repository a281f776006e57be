"""Guest experiment (not a test): the collector's kvfree_call_rcu entry program alone, BPF stats
on, 2 floods of 3 s, for source variants made by text substitution (README OVERHEAD, run P).
The variants are measurements only: `no_gp_read` sizes objects from a memo it never
invalidates, which the tool must not do.

    rcupending lab --kernel debian:6.12 -- .venv/bin/python scripts/guest/entry_variants.py
"""

import os
import sys

sys.path.insert(0, os.getcwd())

from rcupending_tools import config  # noqa: E402
from rcupending_tools.pipeline import selfcost  # noqa: E402
from rcupending_tools.pipeline.session import open_live  # noqa: E402
from rcupending_tools.probes import bpfload  # noqa: E402
from rcupending_tools.stress import native  # noqa: E402

FOLLOW = "bool follow = ptr && (window || watched || in_sample(ptr, mask));"
NEVER = "bool follow = ptr && (window || watched || (in_sample(ptr, mask) & 0));"
GP = "\t\tgp = gp_seq_now();"  # object_size_memo's read (the memo's grace-period check)
VARIANTS: dict[str, list[tuple[str, str]]] = {
    "as_is": [],
    "never_sampled": [(FOLLOW, NEVER)],
    "no_gp_read": [(GP, "\t\tgp = 1;")],
    "never_sampled_no_gp_read": [(FOLLOW, NEVER), (GP, "\t\tgp = 1;")],
    "as_is_again": [],
}


def main() -> None:
    config.default_settle(0)
    original = bpfload.program_text
    for name, subs in VARIANTS.items():
        def text(bpf_file: str, subs: list[tuple[str, str]] = subs) -> str:
            t = original(bpf_file)
            if bpf_file == "kvfree_rcu.bpf.c":
                for old, new in subs:
                    assert t.count(old) == 1, old
                    t = t.replace(old, new)
            return t
        bpfload.program_text = text
        session = open_live()
        fn = session.source.loaded["kvfree_call_rcu"].bpf.funcs[b"kfunc__kvfree_call_rcu"]
        progs = [selfcost.Program("kvfree_call_rcu", "kfunc__kvfree_call_rcu", fn.fd)]
        fd = selfcost.enable_stats()
        ns = []
        try:
            for _ in range(2):
                b0 = selfcost.program_stats(progs, stats_on=True)[0]
                native.run(3, threads=2)
                b1 = selfcost.program_stats(progs, stats_on=True)[0]
                runs = max(1, b1["run_cnt"] - b0["run_cnt"])
                ns.append((b1["run_time_ns"] - b0["run_time_ns"]) / runs)
        finally:
            selfcost.disable_stats(fd)
            session.close()
        print(f"{name}: " + " ".join(f"{x:.0f}" for x in ns) + " ns/run", flush=True)


if __name__ == "__main__":
    main()
