"""Runs INSIDE a lab VM (via `rcupending lab`): --self-cost against the tool's own counts, loss
on purpose with a tiny tracking map, and what a `kill -9` leaves behind. Prints one line
`RCUPENDING-RESULT <json>` for tests/vm/test_overhead_vm.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package first

from rcupending_tools.pipeline import selfcost  # noqa: E402
from rcupending_tools.probes import leftovers
from rcupending_tools.stress import native  # noqa: E402
from tests.socket_filter import load_socket_filter  # noqa: E402

CLI = [sys.executable, "-m", "rcupending_tools.cli"]
KPROBE_EVENTS = Path("/sys/kernel/tracing/kprobe_events")
STALE = "p_vfree_bcc_4000000"  # bcc's name for a kprobe of pid 4000000 (above pid_max)
KILLED = {
    "collect": ["collect", "--duration", "120", "--interval", "0.5", "--json", "--self-cost"],
    "stress_python": ["stress", "kvfree", "--duration", "120", "--workers", "2", "--measure",
                      "--self-cost", "--interval", "0.5", "--json"],
    "top_no_lab": ["top", "0.5", "--no-lab", "--self-cost"],
}


def log(message: str) -> None:
    print(f"guest: {message}", flush=True)


def cli(args: list[str], env: dict[str, str] | None = None) -> dict:
    log(f"rcupending {' '.join(args)}")
    start = time.monotonic()
    proc = subprocess.run(CLI + args, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    log(f"  rc {proc.returncode} in {time.monotonic() - start:.1f}s")
    lines = []
    for ln in proc.stdout.splitlines():
        try:
            lines.append(json.loads(ln))
        except json.JSONDecodeError:
            continue
    return {"rc": proc.returncode, "lines": lines, "stderr": proc.stderr[-2000:]}


def bpftool_ids(kind: str) -> list[int]:
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True)
    return sorted(int(x["id"]) for x in json.loads(out.stdout or "[]"))


def state() -> dict:
    """What a run could leave behind."""
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").rglob("*") if p.is_dir())
    return {
        "progs": bpftool_ids("prog"),
        "links": bpftool_ids("link"),
        "bcc_kprobes": [ln for ln in KPROBE_EVENTS.read_text().splitlines() if "_bcc_" in ln],
        "sysctl_stats": Path(selfcost.STATS_SYSCTL).read_text().strip(),
        "cgroups": cgroups,
        "cpus_online": Path("/sys/devices/system/cpu/online").read_text().strip(),
        "cpus_possible": Path("/sys/devices/system/cpu/possible").read_text().strip(),
    }




class StatsProbe:
    """A 2-instruction socket filter on a loopback UDP socket: its run count moves only while
    some process holds BPF stats on, so it tells whether a killed run's stats fd is gone.
    Raw bpf() syscalls: nothing to compile in the VM."""

    def __init__(self) -> None:
        self.fd = load_socket_filter()
        assert self.fd >= 0, "BPF_PROG_LOAD of a socket filter failed"
        self.prog = [selfcost.Program("probe", "socket_filter", self.fd)]

    def runs(self, packets: int = 50) -> int:
        before = selfcost.run_counts(self.prog)["socket_filter"]
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rx.setsockopt(socket.SOL_SOCKET, 50, struct.pack("i", self.fd))  # SO_ATTACH_BPF
            rx.bind(("127.0.0.1", 0))
            for _ in range(packets):
                tx.sendto(b"x", rx.getsockname())
        finally:
            tx.close()
            rx.close()
        return selfcost.run_counts(self.prog)["socket_filter"] - before

    def close(self) -> None:
        os.close(self.fd)


def bpf_fds(pid: int) -> dict[str, int]:
    """anon_inode fds of a process by kind (bpf-prog, bpf-link, bpf-stats, bpf-map)."""
    out: dict[str, int] = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("anon_inode:bpf"):
            kind = target.split(":", 1)[1]
            out[kind] = out.get(kind, 0) + 1
    return out


def kill9(name: str, args: list[str], baseline: dict) -> dict:
    log(f"kill -9 test: rcupending {' '.join(args)}")
    proc = subprocess.Popen(CLI + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    held: dict[str, int] = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        held = bpf_fds(proc.pid)
        if held.get("bpf-prog", 0) >= 3 and held.get("bpf-stats"):
            break
        time.sleep(0.5)
    time.sleep(1.5)  # running: reading maps, workers flooding
    attached = held.get("bpf-prog", 0) >= 3 and bool(held.get("bpf-stats"))
    running = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read()
    settle = time.monotonic()
    while time.monotonic() - settle < 20:  # fds close as the process and its workers exit
        after = state()
        if after["progs"] == baseline["progs"] and after["links"] == baseline["links"]:
            break
        time.sleep(0.5)
    log(f"  attached {attached}, running {running}, settled in "
        f"{time.monotonic() - settle:.1f}s")
    return {"attached": attached, "held": held, "running_at_kill": running, "after": after,
            "stderr": stderr[-1500:], "settle_s": round(time.monotonic() - settle, 1)}


def main() -> None:
    result: dict = {"release": os.uname().release}
    native.binary()
    # One start (each costs a bcc compile): a tiny tracking map under the native flood, with
    # --self-cost; its final snapshot also carries the entry program's run count.
    result["flood"] = cli(["stress", "kvfree", "--driver", "native", "--duration", "5",
                           "--measure", "--self-cost", "--interval", "0.5", "--json"],
                          env={"RCUPENDING_TRACK_MAX": "64"})
    result["sysctl_after_flood"] = Path(selfcost.STATS_SYSCTL).read_text().strip()

    probe = StatsProbe()
    try:
        result["stats_probe_off_before"] = probe.runs()
        fd = selfcost.enable_stats()
        result["stats_probe_on"] = probe.runs()  # the control: it does count
        selfcost.disable_stats(fd)
        baseline = state()
        result["baseline"] = baseline
        # what a killed bcc run leaves behind on a kernel without the kprobe PMU
        leftovers.append(KPROBE_EVENTS, f"p:kprobes/{STALE} vfree\n")
        result["stale_planted"] = STALE in KPROBE_EVENTS.read_text()
        killed = {}
        for name, args in KILLED.items():
            killed[name] = kill9(name, args, baseline)
            killed[name]["stats_probe_runs"] = probe.runs()
        result["killed"] = killed
        result["stale_left"] = STALE in KPROBE_EVENTS.read_text()
    finally:
        probe.close()
    print("RCUPENDING-RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
