"""Runs INSIDE a lab VM booted on a lab kernel (kernel/lab-6.12: rcu_pending in the core
kernel; stock or with kvfree_rcu() behind rcu_pending). One attach of every probe, then:

- kvfree: N setsockopt(IP_OPTIONS) on one UDP socket (each call after the first hands the
  previous 64 B option to kfree_rcu), drained; the tool's by_stress counts and backend.
- module: the lab module's own counters (enqueued/dequeued/processed per flavor) against the
  tool's rcu_pending counters over the same window.
- hold: an RCU (SRCU) reader held HOLD_MS by the module while objects are enqueued: their
  enqueue -> process latency buckets.
- forced fallback, independently counted by kmem:kfree per call site (tests/vm/
  kmalloc_count.bpf.c): on rcu_pending, failslab fails this task's atomic slab allocations
  (radix nodes, the darray) during a flood, so objects go to rcu_pending's lists (freed by
  kvfree() in __process_finished_items); on stock, with every batch done
  (kvfree_rcu_barrier) and krc's page cache drained (drop_caches runs its shrinker),
  fail_page_alloc fails every page allocation with fill_page_cache_func on the stack (the
  refill worker), so krc has no bulk page and objects take channel 3 (kvfree_rcu_list).

Prints one line `RCUPENDING-RESULT <json>`. Argument: the module (.ko) to insmod."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package first

from rcupending_tools.kernel import KernelInfo  # noqa: E402
from rcupending_tools.pipeline.session import open_live  # noqa: E402
from rcupending_tools.probes import bpfload  # noqa: E402

N_KVFREE = 20000
N_FORCED = 5000
FAILSLAB = Path("/sys/kernel/debug/failslab")
FAIL_PAGE_ALLOC = Path("/sys/kernel/debug/fail_page_alloc")
PAGE_FAIL_TIMES = 1_000_000  # counts down at each injected failure
LIST_FREE_SITES = ("kvfree_rcu_list", "__process_finished_items")
N_RCU, N_SRCU, N_DEQ = 5000, 3000, 1000
HOLD_MS, N_HOLD = 3000, 200  # enqueued as soon as the reader is inside: >= 2.5 s each
DEBUGFS = Path("/sys/kernel/debug")
LAB = DEBUGFS / "rcupending_lab"
IP_OPTIONS = 4


def log(msg: str) -> None:
    print(f"guest: {msg}", flush=True)


def knob(name: str, value: int | str = 1) -> None:
    (LAB / name).write_text(f"{value}\n")


def counters() -> dict[str, int]:
    out = {}
    for line in (LAB / "counters").read_text().splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out


def _flood_child(conn, n: int) -> None:  # noqa: ANN001
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    opt = bytes([1, 1, 1, 0])
    conn.recv()  # go
    for _ in range(n + 1):
        s.setsockopt(socket.IPPROTO_IP, IP_OPTIONS, opt)
    conn.send("done")
    conn.recv()  # close: after the final read
    s.close()


def kvfree_flood(n: int, session, make_it_fail: bool = False):  # noqa: ANN001, ANN201
    """n + 1 sets of a 4-byte option (NOPs + end) on one UDP socket, in a forked child (the
    collector's stress tgid; forked, not exec'd: an exec frees a kernel object of its own
    through kfree_rcu): n objects handed to kfree_rcu. The socket stays open until release()."""
    ctx = mp.get_context("fork")
    parent, child_end = ctx.Pipe()
    child = ctx.Process(target=_flood_child, args=(child_end, n), daemon=True)
    child.start()
    session.follow({child.pid})
    if make_it_fail:
        Path(f"/proc/{child.pid}/make-it-fail").write_text("1")
    parent.send("go")
    assert parent.recv() == "done"
    return child, parent


def release(flood) -> None:  # noqa: ANN001
    child, conn = flood
    conn.send("close")
    child.join(timeout=60)


def caller_counter(kernel: KernelInfo, caller: str):  # noqa: ANN001, ANN201
    """kvfree() calls made by `caller` (tests/vm/kvfree_caller_count.bpf.c)."""
    addrs, names = kernel._text_symbols
    i = names.index(kernel.clone_name(caller))
    defines = {"CALLER_START": hex(addrs[i]), "CALLER_END": hex(addrs[i + 1])}
    return bpfload.load(str(Path(__file__).resolve().with_name("kvfree_caller_count.bpf.c")),
                        defines, "kprobe")


def caller_count(loaded) -> int:  # noqa: ANN001
    return sum(int(v.value) for v in loaded.bpf["kvfree_from_caller"].values())


def wait_until(read, done, seconds: float):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(0.5)


def hist(snap: dict, name: str) -> dict[tuple[int, int], int]:
    h = snap["histograms"].get(name) or {"buckets": []}
    return {(lo, hi): n for lo, hi, n in h["buckets"]}


def hist_diff(before: dict, after: dict, name: str) -> list[list[int]]:
    a, b = hist(before, name), hist(after, name)
    return sorted([lo, hi, n - a.get((lo, hi), 0)] for (lo, hi), n in b.items()
                  if n - a.get((lo, hi), 0))


def kfree_sites(counter, kernel: KernelInfo) -> dict[str, int]:  # noqa: ANN001
    """kmem:kfree counts at the list-path call sites (kvfree() tail-calls kfree())."""
    out = dict.fromkeys(LIST_FREE_SITES, 0)
    for k, v in counter.bpf["kfree_sites"].items():
        sym = kernel.ksym_at(k.value) or ""
        for site in LIST_FREE_SITES:
            if sym == site or sym.startswith(site + "."):
                out[site] += int(v.value)
    return out


def failslab(on: bool) -> None:
    """Fail every atomic (non-sleeping) slab allocation of tasks marked make-it-fail."""
    settings = {"task-filter": "Y", "ignore-gfp-wait": "Y", "verbose": "0", "interval": "1",
                "times": "-1", "probability": "100" if on else "0"}
    for name, value in settings.items():
        (FAILSLAB / name).write_text(value)


def fail_page_alloc(within: tuple[int, int] | None) -> None:
    """Fail every page allocation, in any task, whose stack holds an address in `within`
    ([start, end) of a function); None: stop."""
    if within is None:
        (FAIL_PAGE_ALLOC / "probability").write_text("0")
        return
    settings = {"task-filter": "N", "ignore-gfp-wait": "N", "ignore-gfp-highmem": "N",
                "min-order": "0", "verbose": "0", "interval": "1", "space": "0",
                "times": str(PAGE_FAIL_TIMES), "stacktrace-depth": "32",
                "require-start": str(within[0]), "require-end": str(within[1]),
                "probability": "100"}
    for name, value in settings.items():
        (FAIL_PAGE_ALLOC / name).write_text(value)


def injected_page_failures() -> int:
    return PAGE_FAIL_TIMES - int((FAIL_PAGE_ALLOC / "times").read_text())


def forced_krc(snap, session, counter, kernel: KernelInfo, sites1: dict) -> dict:  # noqa: ANN001
    """Stock: krc without bulk pages, by fault injection on its page-cache refill. After a
    shrink krc backs its refill off for rcu_delay_page_cache_fill_msec (5 s), so the flood
    comes in two halves: the second starts once the refill has run (and failed)."""
    from rcupending_tools.probes.layouts import symbol_range

    refill = symbol_range(kernel, "fill_page_cache_func")
    fail_page_alloc(refill)  # first: no refill between the drain and the flood
    try:
        knob("kvfree_rcu_barrier")  # every batch done: its bulk pages are back in the cache
        Path("/proc/sys/vm/drop_caches").write_text("2\n")  # krc's shrinker drains the cache
        before = snap(True)
        sites_b = kfree_sites(counter, kernel)
        first = kvfree_flood(N_FORCED // 2, session)
        failed_between = wait_until(injected_page_failures, lambda n: n > 0, 20)
        second = kvfree_flood(N_FORCED - N_FORCED // 2, session)
        session.follow({first[0].pid, second[0].pid})
        wait_until(snap, lambda s: s["kvfree_rcu"]["by_stress"]["pending"] <= 0, 60)
    finally:
        fail_page_alloc(None)
    injected = injected_page_failures()
    after = snap(True)
    sites2 = kfree_sites(counter, kernel)
    release(first)
    release(second)
    return {"truth": N_FORCED, "before": before["kvfree_rcu"], "after": after["kvfree_rcu"],
            "kfree_list_sites": {k: sites2[k] - sites_b[k] for k in sites_b},
            "page_alloc_failures": injected, "failures_between_halves": failed_between,
            "refill_range": list(refill or ())}


def main() -> None:
    module = sys.argv[1]
    result: dict = {"release": os.uname().release}
    if not (DEBUGFS / "tracing").exists() and not any(DEBUGFS.iterdir()):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], check=False)
    ins = subprocess.run(["insmod", module], capture_output=True, text=True)
    result["insmod"] = {"rc": ins.returncode, "stderr": ins.stderr[-500:]}
    log(f"insmod {module}: rc {ins.returncode} {ins.stderr.strip()}")
    kernel = KernelInfo()
    counter = bpfload.load(str(Path(__file__).resolve().with_name("kmalloc_count.bpf.c")), {},
                           "tracepoint")
    t0 = time.monotonic()
    session = open_live(command="guest_pending")
    session.follow({0})
    log(f"attached in {time.monotonic() - t0:.1f}s")
    try:
        result["probes"] = session.source.probe_dicts()
        for p in result["probes"]:
            log(f"{p['name']}: {p['status']} {p['mechanism']} {p.get('facts')} {p['tried']}")
        snap = lambda count=False: session.read(count_map=count)  # noqa: E731
        base = snap(True)
        result["baseline"] = {"kvfree_rcu": base["kvfree_rcu"], "rcu_pending": base["rcu_pending"]}

        # kvfree_rcu flood, drained
        sites0 = kfree_sites(counter, kernel)
        t0 = time.monotonic()
        child = kvfree_flood(N_KVFREE, session)
        log(f"kvfree flood of {N_KVFREE} in {time.monotonic() - t0:.1f}s")
        after = wait_until(snap, lambda s: s["kvfree_rcu"]["by_stress"]["pending"] <= 0, 60)
        after = snap(True)
        sites1 = kfree_sites(counter, kernel)
        result["kvfree"] = {"truth": N_KVFREE, "snapshot": after["kvfree_rcu"],
                            "kfree_list_sites": {k: sites1[k] - sites0[k] for k in sites0},
                            "baseline": base["kvfree_rcu"]}
        release(child)
        backend = next(p for p in result["probes"] if p["name"] == "kvfree_call_rcu")[
            "facts"].get("backend")
        if backend == "rcu_pending" and FAILSLAB.is_dir():
            kvfree_calls = caller_counter(kernel, "__process_finished_items")
            before = snap(True)
            calls0 = caller_count(kvfree_calls)
            failslab(True)
            try:
                child = kvfree_flood(N_FORCED, session, make_it_fail=True)
            finally:
                failslab(False)
            after = wait_until(snap, lambda s: s["kvfree_rcu"]["by_stress"]["pending"] <= 0, 60)
            after = snap(True)
            sites2 = kfree_sites(counter, kernel)
            result["forced"] = {"truth": N_FORCED, "before": before["kvfree_rcu"],
                                "after": after["kvfree_rcu"],
                                "pending_before": before["rcu_pending"],
                                "pending_after": after["rcu_pending"],
                                "kfree_list_sites": {k: sites2[k] - sites1[k] for k in sites1},
                                "kvfree_from_process_finished": caller_count(kvfree_calls)
                                - calls0}
            kvfree_calls.close()
            release(child)
            log(f"forced: kfree at list sites {result['forced']['kfree_list_sites']}, kvfree from "
                f"__process_finished_items {result['forced']['kvfree_from_process_finished']}")
        elif (backend == "krc" and ins.returncode == 0
              and (FAIL_PAGE_ALLOC / "require-start").exists()):
            result["forced"] = forced_krc(snap, session, counter, kernel, sites1)
            log(f"forced: {result['forced']['page_alloc_failures']} page allocations failed, "
                f"kfree at list sites {result['forced']['kfree_list_sites']}")

        if ins.returncode == 0:
            knob("reset")
            before = snap(True)
            knob("enqueue_rcu", N_RCU)
            knob("enqueue_srcu", N_SRCU)
            # dequeue while an RCU reader is held (so the objects are still waiting): this
            # CPU's objects, as many as are still there; the module counts what it got back
            holder = threading.Thread(target=knob, args=("hold_rcu_ms", 2000))
            holder.start()
            wait_until(counters, lambda c: c["rcu_holding"] == 1, 10)
            knob("enqueue_rcu", N_DEQ)
            knob("dequeue_rcu", N_DEQ)
            holder.join()
            mod = wait_until(counters, lambda c: c["rcu_outstanding"] == 0
                             and c["srcu_outstanding"] == 0, 60)
            after = wait_until(lambda: snap(True), lambda s: all(
                f["pending"]["objects"] <= before["rcu_pending"]["flavors"][k]["pending"]["objects"]
                for k, f in s["rcu_pending"]["flavors"].items()), 30)
            result["module"] = {"counters": mod, "before": before["rcu_pending"],
                                "after": after["rcu_pending"]}
            log(f"module counters {mod}")

            for flavor in ("rcu", "srcu"):
                before = snap()
                holder = threading.Thread(target=knob, args=(f"hold_{flavor}_ms", HOLD_MS))
                holder.start()
                # the module says when its reader is inside the critical section
                inside = wait_until(counters, lambda c, f=flavor: c[f"{f}_holding"] == 1, 10)
                t_enq = time.monotonic()
                knob(f"enqueue_{flavor}", N_HOLD)
                enq_s = time.monotonic() - t_enq
                holder.join()
                wait_until(counters, lambda c, f=flavor: c[f"{f}_outstanding"] == 0, 60)
                after = snap(True)
                result[f"hold_{flavor}"] = {
                    "hold_ms": HOLD_MS, "enqueued": N_HOLD, "enqueue_s": round(enq_s, 3),
                    "reader_was_inside": inside[f"{flavor}_holding"] == 1,
                    "latency_ns": hist_diff(before, after, f"rcu_pending.latency_ns.{flavor}"),
                    "counters": counters(),
                }
                log(f"hold {flavor}: {result[f'hold_{flavor}']['latency_ns']}")
        result["final"] = snap(True)["rcu_pending"]
    finally:
        session.close()
        counter.close()
    rm = subprocess.run(["rmmod", "rcupending_lab"], capture_output=True, text=True)
    result["rmmod"] = rm.returncode
    print("RCUPENDING-RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
