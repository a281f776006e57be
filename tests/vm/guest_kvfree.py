"""Runs INSIDE a lab VM (via `rcupending lab`): the kvfree stress measured by rcupending, with
an independent kmem:kmalloc count in the same VM, and negative controls. Prints one line
`RCUPENDING-RESULT <json>` for the host-side tests to assert on. Arguments: scenario names
to run (default: all)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package first

from rcupending_tools.kernel import KernelInfo  # noqa: E402
from rcupending_tools.probes import bpfload  # noqa: E402

CLI = [sys.executable, "-m", "rcupending_tools.cli"]
SCENARIOS = {
    "main": ["--count", "20000", "--optlen", "4", "--workers", "2", "--drain", "40"],
    "optlen40": ["--count", "20000", "--optlen", "40", "--workers", "2", "--drain", "40"],
    "first_sets_only": ["--count", "0", "--sockets", "64"],
    "invalid_optlen": ["--count", "1000", "--optlen", "44"],
    "trickle": ["--count", "12", "--rate", "2", "--sockets", "1", "--drain", "40"],
    "headless": ["--headless", "--count", "2000", "--drain", "40"],
    # a flood during which CPU 1 goes offline and comes back (snapshots pace the guest)
    "cpu_offline": ["--count", "30000", "--rate", "5000", "--workers", "2", "--drain", "40",
                    "--interval", "1"],
    # the main flood, following 1 in 8 objects (--sample 8, a global option)
    "sampled": ["--count", "20000", "--optlen", "4", "--workers", "2", "--drain", "40"],
    # the main flood with every object followed (--sample 1: per-object state for all)
    "exact": ["--count", "20000", "--optlen", "4", "--workers", "2", "--drain", "40"],
}
GLOBAL = {"sampled": ["--sample", "8"], "exact": ["--sample", "1"]}
CPU = Path("/sys/devices/system/cpu/cpu1/online")


def run(args: list[str]) -> tuple[int, object, str]:
    print(f"guest: rcupending {' '.join(args)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(CLI + args, capture_output=True, text=True, timeout=900)
    print(f"guest:   rc {proc.returncode} in {time.monotonic() - start:.1f}s", flush=True)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        out = None
    return proc.returncode, out, proc.stderr[-2000:]


def run_with_cpu_offline(args: list[str], entry: dict) -> tuple[int, object, str]:
    """Run the stress, offline CPU 1 once its workers have enqueued, online it 2 snapshots
    later; `entry["hotplug"]` records what happened when."""
    print(f"guest: rcupending {' '.join(args)} (CPU 1 offline mid-stress)", flush=True)
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events, last, offline_at = [], None, None
    assert proc.stdout is not None
    for n, line in enumerate(proc.stdout):
        last = line
        try:
            snap = json.loads(line)
        except json.JSONDecodeError:
            continue
        enq = ((snap.get("kvfree_rcu") or {}).get("by_stress") or {}).get("enqueued", 0)
        if offline_at is None and enq > 0 and CPU.read_text().strip() == "1":
            CPU.write_text("0")
            offline_at = n
            events.append({"offline_after_enqueued": enq})
        elif offline_at is not None and n == offline_at + 2 and CPU.read_text().strip() == "0":
            CPU.write_text("1")
            events.append({"online_after_enqueued": enq})
    rc = proc.wait(timeout=900)
    if CPU.read_text().strip() == "0":
        CPU.write_text("1")
        events.append({"online_after_exit": True})
    entry["hotplug"] = events
    try:
        out = json.loads(last) if last else None
    except json.JSONDecodeError:
        out = None
    return rc, out, (proc.stderr.read() if proc.stderr else "")[-2000:]


def main() -> None:
    result: dict = {"release": KernelInfo().release}
    rc, out, err = run(["check", "--json"])
    result["check"] = {"rc": rc, "out": out, "stderr": err}
    for p in (out or {}).get("probes", []):  # early word in the console log
        print(f"guest:   {p['name']}: {p['status']} {p['mechanism']} {p['tried']}", flush=True)
    kernel = KernelInfo()
    if kernel.version < (6, 15):  # no nolock allocator: `stress nolock` refuses in one line
        rc, _, err = run(["stress", "nolock", "stream", "--measure", "--json"])
        result["nolock_refused"] = {"rc": rc, "stderr": err}
    counter = bpfload.load(str(Path(__file__).resolve().with_name("kmalloc_count.bpf.c")), {},
                           "tracepoint")
    try:
        table = counter.bpf["kmalloc_sites"]
        kfrees = counter.bpf["kfree_sites"]
        scenarios = SCENARIOS if len(sys.argv) < 2 else {a: SCENARIOS[a] for a in sys.argv[1:]}
        for name, args in scenarios.items():
            # Differences of two reads: clear() never ends while every kmalloc adds keys.
            before_kmalloc = {(k.tgid, k.call_site): v.count for k, v in table.items()}
            before_kfree = {k.value: v.value for k, v in kfrees.items()}
            entry: dict = {}
            cmd = [*GLOBAL.get(name, []), "stress", "kvfree", *args, "--measure", "--json"]
            rc, out, err = run_with_cpu_offline(cmd, entry) if name == "cpu_offline" else run(cmd)
            entry.update(rc=rc, out=out, stderr=err)
            if isinstance(out, dict):
                pids = set(out["expected"]["pids"])
                sites: dict[str, dict] = {}
                for k, v in table.items():
                    if k.tgid not in pids or (k.tgid, k.call_site) in before_kmalloc:
                        continue  # the workers are new processes: all their keys are new
                    sym = kernel.ksym_at(k.call_site) or hex(k.call_site)
                    s = sites.setdefault(sym, {"count": 0, "bytes_req": 0, "bytes_alloc": 0})
                    s["count"] += v.count
                    s["bytes_req"] += v.bytes_req
                    s["bytes_alloc"] += v.bytes_alloc
                entry["kmalloc_by_site"] = sites
                entry["kmalloc_ip_options"] = sum(
                    s["count"] for sym, s in sites.items() if sym.startswith("ip_options_get")
                )
                entry["kmalloc_rename"] = {  # the new name kstrdup'd at each rename
                    k: sum(s[k] for sym, s in sites.items() if sym.startswith("kernfs_rename_ns"))
                    for k in ("count", "bytes_alloc")
                }
                entry["kfree_kvfree_rcu_list"] = sum(
                    int(v.value) - before_kfree.get(k.value, 0)
                    for k, v in kfrees.items()
                    if (kernel.ksym_at(k.value) or "").startswith("kvfree_rcu_list")
                )
            result[name] = entry
    finally:
        counter.close()
    print("RCUPENDING-RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
