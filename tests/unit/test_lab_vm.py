"""Unit tests of the VM runner's pure parts: splat scanning, guest script, vng argv."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rcupending_tools.errors import UserError
from rcupending_tools.lab import accel, vm
from rcupending_tools.lab.kernels import LabKernel
from rcupending_tools.lab.vm import guest_script, scan_splats, vng_command

# Lines from a real debian:7.3 boot under virtme-ng + QEMU TCG (negative control).
BOOT_LOG = """\
[    0.000000] Linux version 7.3.4+deb13-amd64 (debian-kernel@example.org) #1 SMP
[    0.172704] rcu: Preemptible hierarchical RCU implementation.
[    0.172854] rcu: \tRCU restricting CPUs from NR_CPUS=8192 to nr_cpu_ids=2.
[    0.173025] \tTrampoline variant of Tasks RCU enabled.
[    0.173275] rcu: RCU calculated value of scheduler-enlistment delay is 25 jiffies.
[    0.174357] RCU Tasks: Setting shift to 1 and lim to 1 rcu_task_cb_adjust=1 rcu_task_cpu_ids=2.
[    0.218128] rcu: srcu_init: Setting srcu_struct sizes based on contention.
[    0.276291] mitigations: Enabled attack vectors: user_kernel, user_user, SMT mitigations: auto
[    0.277032] Spectre V2 : Mitigation: Retpolines
[    0.284519] x86/fpu: Supporting XSAVE feature 0x200: 'Protection Keys User registers'
[    0.588678] rcu: Hierarchical SRCU implementation.
[    0.99] PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug
[    1.714307] RAS: Correctable Errors collector initialized.
[    2.403399] 9pnet: Installing 9P2000 support
[    7.060896] ata6: SATA link down (SStatus 0 SControl 300)
[    7.988990] powernow_k8: Power state transitions not supported
[    8.652837] virtme-ng-init: udev is done
[    8.669789] virtme-ng-init: starting script
[   10.034015] clocksource: Watchdog remote CPU 1 read timed out
[   11.100000] hrtimer: interrupt took 1034567 ns
[   12.000000] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on
"""

SPLATS = [
    "[   42.1] WARNING: CPU: 1 PID: 77 at mm/slub.c:1234 kfree+0x2a/0x40",
    "[   43.0] ------------[ cut here ]------------",
    "[   44.2] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "[   44.3] Oops: 0000 [#1] PREEMPT SMP NOPTI",
    "[   45.0] kernel BUG at lib/list_debug.c:53!",
    "[   46.0] Oops: general protection fault, probably for non-canonical address 0xdead: 0000",
    "[   47.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    "[   47.5] rcu: INFO: rcu_sched self-detected stall on CPU",
    "[   47.6] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... }",
    "[   48.0] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [stress:123]",
    "[   49.0] INFO: task kworker/u4:2:51 blocked for more than 120 seconds.",
    "[   50.0] BUG: KASAN: slab-use-after-free in rcu_do_batch+0x1/0x2",
    "[   51.0] [  T123] WARNING: possible circular locking dependency detected",
    "<4>[   52.0] WARNING: suspicious RCU usage",
    "[   53.0] Kernel panic - not syncing: Fatal exception",
    "[   54.0] rcu: rcu_preempt kthread starved for 10002 jiffies!",
]


@pytest.fixture(autouse=True)
def _signal_handlers():
    """run_in_vm sets SIGTERM/SIGHUP handlers in the main thread: not for the other tests."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_ordinary_boot_has_no_splats():
    assert scan_splats(BOOT_LOG) == []
    assert scan_splats("") == []


def test_each_splat_found():
    for line in SPLATS:
        if "cut here" in line:
            assert scan_splats(line) == []
        else:
            assert scan_splats(line) == [line.strip()], line


def test_splats_in_context_keep_order():
    text = BOOT_LOG + "\n".join(SPLATS) + "\n" + BOOT_LOG
    found = scan_splats(text)
    assert found == [s for s in SPLATS if "cut here" not in s]


def K(headers: Path | None = Path("/h")) -> LabKernel:  # noqa: N802
    return LabKernel("debian:6.12", "6.12.107+deb13-amd64", Path("/k/vmlinuz"), headers, "test")


def test_guest_script(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = guest_script(K(), ["python3", "-c", "print('a b')"], tmp_path / "x", {"FOO": "1 2"})
    lines = s.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert f"export PATH={Path(sys.executable).parent}:$PATH" in lines
    assert "export BCC_KERNEL_SOURCE=/h" in lines and "export FOO='1 2'" in lines
    assert "mnt tracefs /sys/kernel/tracing" in lines and "mnt debugfs /sys/kernel/debug" in lines
    assert f"cd {tmp_path} || exit 125" in lines
    assert "python3 -c 'print('\"'\"'a b'\"'\"')' 2>&1" in lines
    assert lines[-2].endswith(f"{tmp_path}/x/rc") and lines[-1] == "exit $rc"
    assert "BCC_KERNEL_SOURCE" not in guest_script(K(None), ["true"], tmp_path, {})
    with pytest.raises(UserError):
        guest_script(K(), ["true"], tmp_path, {"BAD-NAME": "x"})


def test_guest_script_runs_in_sh(tmp_path, monkeypatch):
    """The wrapper records rc and dmesg; run it on the host with fakes for mount/dmesg."""
    monkeypatch.chdir(tmp_path)
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, body in (("dmesg", "echo '[ 1.0] WARNING: CPU: 0 PID: 1 at x'"), ("mount", ":")):
        (fakes / name).write_text(f"#!/bin/sh\n{body}\n")
        (fakes / name).chmod(0o755)
    (tmp_path / "guest.sh").write_text(
        guest_script(K(None), ["sh", "-c", "echo out; echo err >&2; exit 7"], tmp_path, {})
    )
    r = subprocess.run(
        ["sh", str(tmp_path / "guest.sh")],
        capture_output=True,
        text=True,
        env={"PATH": f"{fakes}:/usr/bin:/bin"},
    )
    assert (r.returncode, r.stdout) == (7, "out\nerr\n")
    assert (tmp_path / "rc").read_text() == "7\n"
    assert scan_splats((tmp_path / "dmesg").read_text()) == ["[ 1.0] WARNING: CPU: 0 PID: 1 at x"]


def test_vng_command():
    argv = vng_command(
        "/v/vng", K(), Path("/x"), append=["rcupdate.rcu_cpu_stall_timeout=60"], memory="1G", cpus=1
    )
    assert argv[:5] == ["/v/vng", "-v", "-r", "/k/vmlinuz", "--disable-kvm"]
    assert argv[argv.index("--memory") + 1] == "1G" and argv[argv.index("--cpus") + 1] == "1"
    assert argv[argv.index("--append") + 1] == "rcupdate.rcu_cpu_stall_timeout=60"
    assert argv[-4:] == ["--rwdir", "/x", "--", "sh /x/guest.sh"]
    kvm = vng_command("/v/vng", K(), Path("/x"), append=[], memory="1G", cpus=1, accel="kvm")
    assert "--disable-kvm" not in kvm and kvm[:4] == ["/v/vng", "-v", "-r", "/k/vmlinuz"]


def test_accel_is_probed_once_per_host_boot_and_can_be_forced(tmp_path, monkeypatch):
    monkeypatch.delenv(accel.ENV, raising=False)
    monkeypatch.setattr(accel, "_memo", {})
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: True)
    probes = []

    def prober(ok: bool):
        return lambda: probes.append(ok) or ok

    assert accel.select(tmp_path, prober(False)) == "tcg"  # /dev/kvm opens, QEMU fails
    assert accel.select(tmp_path, prober(True)) == "tcg" and probes == [False]  # memo
    monkeypatch.setattr(accel, "_memo", {})
    assert accel.select(tmp_path, prober(True)) == "tcg" and probes == [False]  # cached file
    (tmp_path / "accel.json").write_text("{corrupt")
    assert accel.select(tmp_path, prober(True)) == "tcg"  # memo still holds this boot's
    monkeypatch.setattr(accel, "_memo", {})
    assert accel.select(tmp_path, prober(True)) == "kvm" and probes == [False, True]
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: False)
    monkeypatch.setattr(accel, "_memo", {})
    (tmp_path / "accel.json").unlink()
    assert accel.select(tmp_path, prober(True)) == "tcg"  # no device: no probe
    assert probes == [False, True]
    monkeypatch.setenv(accel.ENV, "kvm")
    assert accel.select(tmp_path, prober(False)) == "kvm"
    monkeypatch.setenv(accel.ENV, "fast")
    with pytest.raises(UserError, match="RCUPENDING_VM_ACCEL"):
        accel.select(tmp_path, prober(False))


def test_missing_qemu_is_user_error(monkeypatch):
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="qemu-system-x86"):
        vm.run_in_vm(K(), ["true"])


def test_a_boot_that_dies_before_the_command_is_retried_and_reported(tmp_path, monkeypatch):
    image = tmp_path / "vmlinuz"
    image.write_text("")
    k = LabKernel("lab:x", "6.12-x", image, None, "test")
    monkeypatch.setattr(vm, "_tool", lambda name, install: name)
    oops = vm.VmResult(-1, "", "", ["Oops: int3: 0000 [#1]"], False, 9.0, "console",
                       started=False, why="vng exit 255")
    good = vm.VmResult(0, "out", "", [], True, 80.0)
    boots = [oops, good]
    monkeypatch.setattr(vm, "_boot_and_run", lambda *a, **kw: boots.pop(0))
    res = vm.run_in_vm(k, ["true"], stream=None)
    assert res.boot_ok and res.boot_failures == ["Oops: int3: 0000 [#1]"]
    # twice in a row: a third boot
    boots[:] = [oops, oops, good]
    res = vm.run_in_vm(k, ["true"], stream=None)
    assert res.boot_ok and res.boot_failures == [oops.splats[0]] * 2 and not boots
    # three times in a row: the third failure stands (one line, the console tail)
    boots[:] = [oops, oops, oops]
    monkeypatch.setenv("RCUPENDING_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="did not complete the command") as err:
        vm.run_in_vm(k, ["true"], stream=None)
    # ... and the whole console is kept, in a file the message names
    kept = re.search(r"whole console in (\S+);", str(err.value))
    assert kept and Path(kept[1]).read_text().startswith("console\n")
    # only the newest few are kept
    for i in range(vm.KEPT_CONSOLES + 3):
        os.utime(vm.keep_console(f"lab:{i}", oops), (i, i))
    assert len(list(Path(kept[1]).parent.glob("*.log"))) == vm.KEPT_CONSOLES
    # a command that started and then lost its VM is not retried
    crashed = vm.VmResult(-1, "", "", [], False, 30.0, "", started=True, why="vng exit 1")
    boots[:] = [crashed, good]
    res = vm.run_in_vm(k, ["true"], stream=None, check=False)
    assert not res.boot_ok and res.boot_failures == [] and boots == [good]
    # ... unless it died of TCG's int3 race with live patching (a BPF attach's fentry nop)
    int3 = vm.VmResult(-1, "", "", ["[ 50.7] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"], False,
                       50.0, "", started=True, why="vng exit 255")
    boots[:] = [int3, good]
    res = vm.run_in_vm(k, ["true"], stream=None)
    assert res.boot_ok and res.boot_failures == [int3.splats[0]]


def stand_in_vng(tmp_path: Path) -> tuple[Path, Path]:
    """A vng whose 'QEMU' child ignores SIGTERM and SIGHUP, so only the process group's
    SIGKILL stops it (vng itself dies of SIGTERM first); the QEMU writes its pid once up."""
    qemu_pid = tmp_path / "qemu.pid"
    vng = tmp_path / "vng"
    vng.write_text("#!/bin/sh\n"
                   f"sh -c 'trap \"\" TERM HUP; echo $$ > {qemu_pid}.tmp; "
                   f"mv {qemu_pid}.tmp {qemu_pid}; exec sleep 300' &\n"
                   "wait\n")
    vng.chmod(0o755)
    image = tmp_path / "vmlinuz"
    image.write_text("")
    return vng, image


def _alive(pid: int) -> tuple[str, int] | None:
    """(state, process group) of `pid`; None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else (fields[0], int(fields[2]))


def _group(pgid: int) -> list[int]:
    """Live members of process group `pgid`."""
    pids = (int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())
    return [p for p in pids if (st := _alive(p)) is not None and st[1] == pgid]


def _started_vm(tmp_path: Path, proc: subprocess.Popen) -> int:
    """The stand-in VM's process group, once its QEMU is up."""
    qemu_pid = tmp_path / "qemu.pid"
    deadline = time.monotonic() + 20
    while not qemu_pid.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    st = _alive(int(qemu_pid.read_text()))
    assert st is not None
    return st[1]


def _assert_group_gone(pgid: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    if left:
        os.killpg(pgid, signal.SIGKILL)
        raise AssertionError(f"the VM's process group ({left}) outlived {what}")


ROOT = Path(__file__).parent.parent.parent  # the child imports this tree's package


@contextmanager
def _child(code: str, *args: str) -> Iterator[subprocess.Popen]:
    """A Python child running `code` (from this tree); killed if the test leaves it running."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

KILLED_LAB = """
import signal, sys
from pathlib import Path
# Ctrl-C as under a terminal, even if pytest runs as a shell's background job (which starts
# with SIGINT ignored, and Python then installs no KeyboardInterrupt for it)
signal.signal(signal.SIGINT, signal.default_int_handler)
from rcupending_tools.cli.common import terminate_as_interrupt
from rcupending_tools.lab import accel, vm
from rcupending_tools.lab.kernels import LabKernel
terminate_as_interrupt()
accel.select = lambda *a, **kw: "tcg"
k = LabKernel("lab:x", "6.12-x", Path(sys.argv[2]), None, "test")
try:
    vm._boot_and_run(k, ["true"], sys.argv[1], append=[], memory="1G", cpus=1, env={},
                     stream=None, timeout=600, rwdirs=[])
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_killed_lab_run_takes_its_vm(tmp_path, sig):
    """SIGTERM to a `lab` run (a CI timeout, a closed terminal) or Ctrl-C stops vng and its
    QEMU, which run in their own process group: a killed oracle run once left its VM booting."""
    vng, image = stand_in_vng(tmp_path)
    with _child(KILLED_LAB, str(vng), str(image)) as proc:
        pgid = _started_vm(tmp_path, proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 130, proc.stderr.read()
        _assert_group_gone(pgid, "the killed lab run")


# fork+exec done, Popen not returned yet: a signal there used to lose the started vng
SLOW_POPEN = """
import _posixsubprocess, time
fork_exec = _posixsubprocess.fork_exec
def slow(*args):
    pid = fork_exec(*args)
    time.sleep(2)
    return pid
_posixsubprocess.fork_exec = slow
"""


def test_a_lab_run_killed_while_vng_starts_takes_its_vm(tmp_path):
    """vng starts from a thread of its own, which no signal interrupts, and is registered
    there: a SIGTERM in the middle of Popen leaves the exit a VM to stop."""
    vng, image = stand_in_vng(tmp_path)
    with _child(SLOW_POPEN + KILLED_LAB, str(vng), str(image)) as proc:
        pgid = _started_vm(tmp_path, proc)
        proc.terminate()
        assert proc.wait(timeout=30) == 130, proc.stderr.read()
        _assert_group_gone(pgid, "the lab run killed while vng started")


THREADED_LAB = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as under a terminal, even if pytest runs under nohup
from rcupending_tools.lab import accel, kernels, vm
from rcupending_tools.lab.kernels import LabKernel
from rcupending_tools.pipeline import feeds
vng, image, qemu_pid, end = sys.argv[1:]
accel.select = lambda *a, **kw: "tcg"
vm._tool = lambda name, install: vng if name == "vng" else name
kernels.resolve = lambda spec, progress: LabKernel(spec, "6.12-x", Path(image), None, "test")
feed = feeds.lab_feed("lab:x", 1.0, 60.0)  # as `top` runs it: the VM in a daemon thread
try:
    while not Path(qemu_pid).exists():
        next(feed)
    if end == "signal":
        time.sleep(60)  # until the test's SIGTERM or SIGHUP
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("end", ["exit", signal.SIGTERM, signal.SIGHUP],
                         ids=["exit", "SIGTERM", "SIGHUP"])
def test_a_vm_started_in_a_thread_goes_with_its_process(tmp_path, end):
    """`top`'s lab feed runs its VM in a daemon thread, which never unwinds at interpreter
    exit: the VM registry stops the VM when the process exits, or is killed (a closed
    terminal), without the command's own signal handling (none is set in this child)."""
    vng, image = stand_in_vng(tmp_path)
    how = "exit" if end == "exit" else "signal"
    with _child(THREADED_LAB, str(vng), str(image), str(tmp_path / "qemu.pid"), how) as proc:
        pgid = _started_vm(tmp_path, proc)
        if end != "exit":
            proc.send_signal(end)
        rc = _wait_or_stacks(proc, 60)
        _assert_group_gone(pgid, f"its process ({how}, rc {rc})")
        assert rc == (0 if end == "exit" else 130), proc.stderr.read()


def _wait_or_stacks(proc: subprocess.Popen, timeout: float) -> int:
    """The child's exit code; if it hangs, its threads' stacks (SIGABRT: faulthandler)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"the child did not exit in {timeout:g} s:\n"
                             f"{err.decode(errors='replace')[-4000:]}") from None


def _zombie(proc: subprocess.Popen) -> None:
    """Wait until `proc` has exited, without reaping it."""
    deadline = time.monotonic() + 10
    while _alive(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_vm_that_ended_is_not_signalled(tmp_path, monkeypatch):
    """Once vng is reaped its pid (and process group id) may be another's: neither stopping a
    VM nor the exit's stop of the registry signals one that ended by itself."""
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(vm.os, "killpg", lambda pgid, sig: signalled.append((pgid, sig)))
    monkeypatch.setattr(accel, "select", lambda *a, **kw: "tcg")
    with subprocess.Popen(["true"], start_new_session=True) as proc:
        _zombie(proc)  # ended, not yet waited for: the stop of a VM that ends as it comes
        vm._stop(proc)
    assert signalled == [] and proc.returncode == 0
    vng = tmp_path / "vng"
    vng.write_text("#!/bin/sh\nexit 0\n")
    vng.chmod(0o755)
    image = tmp_path / "vmlinuz"
    image.write_text("")
    k = LabKernel("lab:x", "6.12-x", image, None, "test")
    res = vm._boot_and_run(k, ["true"], str(vng), append=[], memory="1G", cpus=1, env={},
                           stream=None, timeout=60, rwdirs=[])
    assert (res.boot_ok, res.why) == (False, "vng exit 0")
    vm.stop_all()  # as at exit, after that run
    with vm._vm_process(["true"], dict(os.environ)) as proc:
        _zombie(proc)
        vm.stop_all()  # as at exit, with the ended VM still registered
        proc.stdout.close()
        proc.stderr.close()
    assert signalled == [] and proc.returncode == 0


def test_vm_start_leaves_a_set_signal_handler():
    """Starting a VM turns a default SIGTERM/SIGHUP into an unwinding KeyboardInterrupt (the
    command's style), but keeps a handler already set: nohup's ignored SIGHUP stays ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    vm.stop_on_exit()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    with pytest.raises(KeyboardInterrupt):
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
