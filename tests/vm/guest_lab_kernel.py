"""Runs INSIDE a lab VM on a kernel/lab-6.12 kernel (via `rcupending lab`): smoke facts of the
patched kernel lab. Argument: the lab module (.ko) built for this kernel. Prints one line
`RCUPENDING-RESULT <json>` for tests/vm/test_lab_kernel_vm.py to assert on."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

DBG = Path("/sys/kernel/debug/rcupending_lab")
FUNCS = [
    "kvfree_call_rcu",
    "kvfree_call_rcu_pending",
    "rcu_pending_enqueue",
    "rcu_pending_enqueue_list",
    "__process_finished_items",
    "rcu_pending_dequeue",
    "kvfree_rcu_barrier",
    "kvfree_rcu_pending_barrier",
    "kfree_rcu_work",
    "kfree_rcu_monitor",
]
# fentry counters: calls, and for kvfree_call_rcu the headless ones
BPF_TEXT = r"""
BPF_ARRAY(calls, u64, 16);
static inline void bump(int i) { u64 *v = calls.lookup(&i); if (v) __sync_fetch_and_add(v, 1); }
"""
N_SETS = 20000


def log(msg: str) -> None:
    print(f"guest: {msg}", flush=True)


def config() -> dict[str, str]:
    out = {}
    with gzip.open("/proc/config.gz", "rt") as f:
        for line in f:
            m = re.match(r"(CONFIG_\w+)=(.*)", line.strip())
            if m:
                out[m.group(1)] = m.group(2)
    return out


def kallsyms() -> set[str]:
    names = set()
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                names.add(parts[2])
    return names


def btf_funcs() -> dict[str, str]:
    """FUNC name -> its bpftool line, for FUNCS (bpftool from the host's file system)."""
    exe = next((p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.path.exists(p)), "bpftool")
    r = subprocess.run([exe, "btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
                       capture_output=True, text=True)  # fmt: skip
    out = {}
    for line in r.stdout.splitlines():
        m = re.search(r"\] FUNC '([^']+)'", line)
        if m and m.group(1) in FUNCS:
            out[m.group(1)] = line.strip()
    return out


def attach(present: set[str]):
    from bcc import BPF

    text = BPF_TEXT
    probed = [f for f in FUNCS if f in present and f not in ("kvfree_rcu_pending_barrier",)]
    for i, fn in enumerate(probed):
        text += f"KFUNC_PROBE({fn}) {{ bump({i}); return 0; }}\n"
    t0 = time.monotonic()
    b = BPF(text=text)
    log(f"bcc: fentry on {len(probed)} functions compiled+attached in {time.monotonic() - t0:.1f}s")
    return b, probed


def read_counts(b, probed: list[str]) -> dict[str, int]:
    calls = b["calls"]
    return {fn: int(calls[calls.Key(i)].value) for i, fn in enumerate(probed)}


def slab_active(cache: str) -> int | None:
    try:
        for line in Path("/proc/slabinfo").read_text().splitlines():
            if line.startswith(cache + " "):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def ip_options_stress(n: int) -> None:
    """n setsockopt(IP_OPTIONS) on one UDP socket: each after the first kfree_rcu()s the old
    ip_options_rcu (a small kmalloc object)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    opt = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    for _ in range(n):
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, opt)
    s.close()


def knob(name: str, value: str) -> None:
    (DBG / name).write_text(value + "\n")


def counters() -> dict[str, int]:
    out = {}
    for line in (DBG / "counters").read_text().splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out


def wait_processed(flavor: str, timeout: float = 60) -> dict[str, int]:
    end = time.monotonic() + timeout
    while True:
        c = counters()
        if c[f"{flavor}_outstanding"] == 0 or time.monotonic() > end:
            return c
        time.sleep(0.2)


def _reader_in(pid: int, flavor: str) -> bool:
    """Is the knob writer inside its read-side critical section? SRCU: asleep in write(2);
    RCU: busy in the kernel (mdelay loop) for 0.3 s of system time already."""
    try:
        if flavor == "srcu":
            return Path(f"/proc/{pid}/syscall").read_text().startswith("1 ")
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[12]) >= 30  # stime, in USER_HZ ticks
    except (OSError, ValueError, IndexError):
        return False


def held_dequeue(flavor: str, n_enq: int, n_deq: int, hold_ms: int) -> dict:
    """Enqueue and dequeue on CPU 0 while a reader of the flavor is held (on CPU 1 for RCU),
    so no grace period ends in between: the dequeue must get exactly n_deq objects."""
    knob("reset", "1")
    pin = ["taskset", "-c", "1"] if flavor == "rcu" else []  # taskset execs sh: same pid
    holder = subprocess.Popen([*pin, "sh", "-c", f"echo {hold_ms} > {DBG}/hold_{flavor}_ms"])
    t_wait = time.monotonic()
    while not _reader_in(holder.pid, flavor) and time.monotonic() - t_wait < hold_ms / 2000:
        time.sleep(0.02)
    waited = time.monotonic() - t_wait
    os.sched_setaffinity(0, {0})
    t0 = time.monotonic()
    knob(f"enqueue_{flavor}", str(n_enq))
    knob(f"dequeue_{flavor}", str(n_deq))
    inside = time.monotonic() - t0
    mid = counters()
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    holder.wait()
    done = wait_processed(flavor)
    return {"mid": mid, "done": done, "enq_deq_seconds": round(inside, 2), "hold_ms": hold_ms,
            "waited_for_reader_s": round(waited, 2), "rc": holder.returncode}  # fmt: skip


def module_checks(ko: str) -> dict:
    r = subprocess.run(["insmod", ko], capture_output=True, text=True)
    if r.returncode != 0:
        return {"insmod": r.stderr.strip()}
    out: dict = {"insmod": "ok"}
    out["rcu_held"] = held_dequeue("rcu", 1000, 100, 5000)
    out["srcu_held"] = held_dequeue("srcu", 1000, 100, 5000)
    # plain flows: slab and vmalloc objects, both flavors, processed by the module's callback
    knob("reset", "1")
    knob("size", "64")
    knob("enqueue_rcu", "5000")
    knob("enqueue_srcu", "5000")
    wait_processed("rcu")
    out["slab64"] = wait_processed("srcu")
    knob("reset", "1")
    knob("vmalloc", "1")
    knob("size", "8192")
    knob("enqueue_rcu", "200")
    knob("enqueue_srcu", "200")
    wait_processed("rcu")
    out["vmalloc8k"] = wait_processed("srcu")
    knob("vmalloc", "0")
    knob("size", "64")
    knob("reset", "1")
    t0 = time.monotonic()
    knob("kvfree_mightsleep", "1000")
    knob("kfree_rcu", "1000")
    knob("kvfree_rcu_barrier", "1")
    out["kvfree"] = counters() | {"seconds": round(time.monotonic() - t0, 2)}
    r = subprocess.run(["rmmod", "rcupending_lab"], capture_output=True, text=True)
    out["rmmod"] = r.returncode == 0 or r.stderr.strip()
    return out


def failslab_stress(b, probed: list[str]) -> dict:
    """The same stress with failslab failing half of this task's non-sleeping slab
    allocations (rcu_pending's radix nodes and darray: GFP_ATOMIC), so rcu_pending must
    take its list fallback (rcu_pending_enqueue_list); krc's pages are not slab."""
    f = Path("/sys/kernel/debug/failslab")
    if not f.is_dir():
        return {"error": "no failslab in debugfs"}
    for k, v in (("probability", "50"), ("interval", "1"), ("times", "-1"), ("verbose", "0"),
                 ("task-filter", "Y"), ("ignore-gfp-wait", "Y")):  # fmt: skip
        (f / k).write_text(v + "\n")
    before = read_counts(b, probed)
    Path("/proc/self/make-it-fail").write_text("1\n")
    try:
        ip_options_stress(N_SETS)
    finally:
        Path("/proc/self/make-it-fail").write_text("0\n")
    after = read_counts(b, probed)
    return {k: after[k] - before[k] for k in probed}


def main() -> int:
    ko = sys.argv[1]
    res: dict = {"release": os.uname().release}
    cfg = config()
    res["KVFREE_RCU_PENDING"] = cfg.get("CONFIG_KVFREE_RCU_PENDING", "n")
    syms = kallsyms()
    res["kallsyms"] = {f: f in syms for f in FUNCS}
    res["btf"] = btf_funcs()
    b, probed = attach(syms)
    before = read_counts(b, probed)
    slab0 = slab_active("kmalloc-64")
    t0 = time.monotonic()
    ip_options_stress(N_SETS)
    res["stress_seconds"] = round(time.monotonic() - t0, 2)
    slab1 = slab_active("kmalloc-64")
    knob_ok = False
    # kvfree_rcu_barrier through the lab module when it loads (else just wait)
    if subprocess.run(["insmod", ko], capture_output=True).returncode == 0:
        knob("kvfree_rcu_barrier", "1")
        subprocess.run(["rmmod", "rcupending_lab"], capture_output=True)
        knob_ok = True
    else:
        time.sleep(10)
    slab2 = slab_active("kmalloc-64")
    after = read_counts(b, probed)
    res["stress_counts"] = {k: after[k] - before[k] for k in probed}
    res["slab_kmalloc64"] = {"before": slab0, "after_stress": slab1, "after_barrier": slab2,
                             "barrier_via_module": knob_ok}  # fmt: skip
    res["failslab_counts"] = failslab_stress(b, probed)
    b.cleanup()
    res["module"] = module_checks(ko)
    print("RCUPENDING-RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
