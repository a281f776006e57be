"""Runs inside a lab VM for tests/integration/test_fleet_vm.py, the guest seeing the Debian 13
tree (scripts/debian-tree.sh) as its root: its Python, bcc and Prometheus (the argument: the
directory where scripts/setup-integration.sh unpacked the tree's prometheus).

`rcupending serve` runs live on the guest's kernel as dist/rcupending-serve.service starts it:
its ExecStart, as uid 0 with only the unit's CapabilityBoundingSet (setpriv, the same rule
systemd applies to a root service), NoNewPrivileges and MemoryDenyWriteExecute (the kernel's
PR_SET_MDWE). A Prometheus on the guest's loopback scrapes it while a kvfree stress runs; then
every dashboard expression is evaluated through its HTTP API. Prints one line
`RCUPENDING-RESULT {json}` for the host to judge."""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.promql import (  # noqa: E402
    Prometheus,
    dashboard_exprs,
    evaluate,
)

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "dist" / "rcupending-serve.service"
INSTALLED = "/opt/rcupending-tools"  # where the unit expects the checkout
STRESS = 5000
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def unit_service(path: Path = UNIT) -> dict[str, str]:
    """The [Service] section's settings (last one wins, as in systemd; no continuations)."""
    out: dict[str, str] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def exec_mdwe(argv: list[str]) -> None:
    """Refuse writable-then-executable memory for this process and what it execs, then exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
    os.execv(argv[0], argv)


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


def listeners(port: int) -> list[str]:
    """Local addresses of TCP sockets listening on `port` (/proc/net/tcp, tcp6)."""
    out = []
    for name in ("tcp", "tcp6"):
        table = Path(f"/proc/net/{name}")
        if not table.exists():  # a kernel without IPv6
            continue
        for ln in table.read_text().splitlines()[1:]:
            local, state = ln.split()[1], ln.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # TCP_LISTEN
                raw = bytes.fromhex(addr)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                out.append(str(ipaddress.ip_address(words)))
    return out


def main() -> None:
    if sys.argv[1:3] == ["exec-mdwe", "--"]:
        exec_mdwe(sys.argv[3:])
    begin = time.monotonic()  # the VM booted
    prom_bin = Path(sys.argv[1])
    unit = unit_service()
    caps = unit["CapabilityBoundingSet"].split()
    exec_start = unit["ExecStart"].replace(INSTALLED, str(REPO)).split()
    m = re.search(r"--port\s+(\d+)", unit["ExecStart"])
    target = f"127.0.0.1:{m.group(1) if m else 9477}"
    # the dashboard's BPF panels need run-time stats: the operator's sysctl, not the tool's
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1\n")
    argv = ["setpriv", "--bounding-set=" + ",".join(
        ["-all"] + ["+" + c.removeprefix("CAP_").lower() for c in caps]), "--inh-caps=-all"]
    if unit.get("NoNewPrivileges") == "yes":
        argv.append("--no-new-privs")
    if unit.get("MemoryDenyWriteExecute") == "yes":
        argv += [sys.executable, __file__, "exec-mdwe", "--"]
    argv += exec_start
    result: dict = {"unit": {"caps": caps, "exec": exec_start}, "argv": argv,
                    "debian_version": Path("/etc/debian_version").read_text().strip()}
    t0 = time.monotonic()
    # per-process counts are exact only when every object is followed (by default 1 in 64
    # after the settling window, the rows then being estimates): the exact check needs --sample 1
    env = dict(os.environ, RCUPENDING_SAMPLE="1")
    serve = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        line = serve.stderr.readline()  # the BPF load comes first: a minute under TCG
        result["serve_started"] = line.strip()
        result["serve_attach_s"] = round(time.monotonic() - t0, 1)
        if "serving http://" in line:
            try:
                scrape(serve.pid, prom_bin, target, result)
            except Exception as e:  # reported to the host with what was gathered so far
                result["error"] = f"{type(e).__name__}: {e}"
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        result["serve_rc"] = serve.returncode
        result["serve_stderr"] = serve.stderr.read()[-3000:]
    result["guest_s"] = round(time.monotonic() - begin, 1)
    print("RCUPENDING-RESULT " + json.dumps(result), flush=True)


def scrape(pid: int, prom_bin: Path, target: str, result: dict) -> None:
    """What a Prometheus on loopback stores from serve (pid) while the stress runs."""
    result["status"] = {k: v for k, v in status(pid).items()
                        if k.startswith("Cap") or k == "NoNewPrivs"}
    result["status"]["comm"] = Path(f"/proc/{pid}/comm").read_text().strip()
    result["listeners"] = listeners(int(target.rsplit(":", 1)[1]))
    # scrapes every 3 s: serve renders /metrics in Python under TCG, beside the BPF load, and
    # a scrape over its timeout marks every series stale
    with Prometheus(prom_bin, [target], scrape_s=3) as prom:
        start = time.time()
        result["prometheus_version"] = prom.api("status/buildinfo")["data"]["version"]
        prom.wait_for("rcupending_snapshot_seq", timeout=120)
        stress = subprocess.run(
            [sys.executable, "-m", "rcupending_tools.cli", "stress", "kvfree", "--count",
             str(STRESS), "--workers", "1", "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        result["stress"] = {"rc": stress.returncode, "stderr": stress.stderr[-2000:],
                            "s": round(time.time() - start, 1)}
        if stress.returncode == 0:
            result["stress"]["truth"] = json.loads(stress.stdout)["expected"]
        # two more snapshots (the unit keeps serve's default 5 s interval), then scrapes
        seq = prom.value("rcupending_snapshot_seq") or 0
        prom.wait_for(f"rcupending_snapshot_seq >= {seq + 2}", timeout=60)
        time.sleep(3)
        end = time.time()
        result["window"] = [start, end]
        t = time.monotonic()
        result["rows"] = evaluate(
            prom, dashboard_exprs(), prom.variables(), start, end)
        result["evaluate_s"] = round(time.monotonic() - t, 1)
        # at the end of the window, over all of it: what was last scraped, however the last
        # scrape went (its share of successful scrapes is kept too)
        span = f"[{int(end - start) + 2}s]"
        queries = {
            "probe_info": f"last_over_time(rcupending_probe_info{span})",
            "source_info": f"last_over_time(rcupending_source_info{span})",
            "process_enqueued":
                f"max_over_time(rcupending_kvfree_rcu_process_enqueued_objects_total{span})",
            "self_bpf_run_events": f"max_over_time(rcupending_self_bpf_run_events_total{span})",
            "up": f"avg_over_time(up{span})",
        }
        result["instant"] = {k: prom.query(q, end)["data"]["result"]
                             for k, q in queries.items()}


if __name__ == "__main__":
    main()
