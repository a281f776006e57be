"""`bench overhead`'s arithmetic and its pause/resume of bcc attachments (no BPF needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rcupending_tools.bench import overhead as bench
from rcupending_tools.kernel import KernelInfo


class FakeBpf:
    def __init__(self, kprobes: bool = False) -> None:
        self.kfunc_entry_fds = {b"kfunc__kvfree_call_rcu": 3}
        self.kfunc_exit_fds = {b"kretfunc__kvfree_call_rcu": 4}
        self.tracepoint_fds = {b"kmem:kfree": 5}
        self.kprobe_fds = {b"p_kvfree_rcu_bulk": {b"kprobe_ctx_bulk": 6,
                                                   b"kprobe_ctx_bulk_hi": 7}} if kprobes else {}
        self.calls: list[tuple] = []

    def detach_kfunc(self, k):  # noqa: ANN001, ANN201
        self.calls.append(("detach_kfunc", k))
        del self.kfunc_entry_fds[k]

    def detach_kretfunc(self, k):  # noqa: ANN001, ANN201
        self.calls.append(("detach_kretfunc", k))
        del self.kfunc_exit_fds[k]

    def detach_tracepoint(self, k):  # noqa: ANN001, ANN201
        self.calls.append(("detach_tracepoint", k))
        del self.tracepoint_fds[k]

    def attach_kfunc(self, fn_name):  # noqa: ANN001, ANN201
        self.kfunc_entry_fds[fn_name] = 13

    def attach_kretfunc(self, fn_name):  # noqa: ANN001, ANN201
        self.kfunc_exit_fds[fn_name] = 14

    def detach_kprobe_event_by_fn(self, ev, fn):  # noqa: ANN001, ANN201
        del self.kprobe_fds[ev][fn]
        if not self.kprobe_fds[ev]:
            del self.kprobe_fds[ev]

    def attach_kprobe(self, event, fn_name):  # noqa: ANN001, ANN201
        self.calls.append(("attach_kprobe", event, fn_name))
        self.kprobe_fds.setdefault(b"p_" + event, {})[fn_name] = 16

    def attach_tracepoint(self, tp, fn_name):  # noqa: ANN001, ANN201
        self.calls.append(("attach_tracepoint", tp, fn_name))
        self.tracepoint_fds[tp] = 15


def kernel_with(tmp_path: Path, *names: str) -> KernelInfo:
    path = tmp_path / "kallsyms"
    path.write_text("".join(f"ffffffff8100{i:04x} t {n}\n" for i, n in enumerate(names)))
    return KernelInfo(kallsyms_path=path)


def test_switch_pauses_and_resumes_everything(tmp_path):
    b = FakeBpf()
    sw = bench.Switch(b, kernel_with(tmp_path, "kvfree_call_rcu"))
    sw.pause()
    assert not b.kfunc_entry_fds and not b.kfunc_exit_fds and not b.tracepoint_fds
    sw.resume()
    assert set(b.kfunc_entry_fds) == {b"kfunc__kvfree_call_rcu"}
    assert set(b.kfunc_exit_fds) == {b"kretfunc__kvfree_call_rcu"}
    assert ("attach_tracepoint", b"kmem:kfree", b"tracepoint__kmem__kfree") in b.calls
    sw.pause()  # and again, as every repeat does
    assert not b.kfunc_entry_fds


def test_switch_pauses_and_resumes_kprobes(tmp_path):
    """Two programs on one kprobe event (the bulk page's two halves) both come back."""
    b = FakeBpf(kprobes=True)
    sw = bench.Switch(b, kernel_with(tmp_path, "kvfree_rcu_bulk"))
    sw.pause()
    assert not b.kprobe_fds
    sw.resume()
    assert b.kprobe_fds == {b"p_kvfree_rcu_bulk": {b"kprobe_ctx_bulk": 16,
                                                   b"kprobe_ctx_bulk_hi": 16}}


def test_a_kprobe_event_names_its_symbol_or_clone(tmp_path):
    """bcc's event name mangles '.' and '+'; a compiler clone is found back in kallsyms."""
    k = kernel_with(tmp_path, "kvfree", "kvfree_rcu_bulk.isra.0", "kfree_rcu_work")
    assert bench.kprobe_symbol(b"p_kvfree", k) == b"kvfree"
    assert bench.kprobe_symbol(b"p_kvfree_rcu_bulk_isra_0", k) == b"kvfree_rcu_bulk.isra.0"
    assert bench.kprobe_symbol(b"r_kfree_rcu_work", k) == b"kfree_rcu_work"
    assert bench.kprobe_symbol(b"p_gone", k) == b"gone"


def test_stats_delta_per_call():
    before = {"kfunc__kvfree_call_rcu": {"run_cnt": 100, "run_time_ns": 10_000}}
    after = [
        {"name": "kfunc__kvfree_call_rcu", "run_cnt": 1100, "run_time_ns": 210_000},
        {"name": "tracepoint__kmem__kfree", "run_cnt": 2000, "run_time_ns": 100_000},
        {"name": "kfunc__synchronize_rcu", "run_cnt": 0, "run_time_ns": 0},
    ]
    d = bench._stats_delta(before, after, 5000.0)
    assert d["kvfree_call_rcu_runs"] == 1000
    assert d["entry_ns_per_run"] == 200.0
    assert d["bpf_ns_per_call"] == 300.0  # (200k + 100k) ns over 1000 calls
    assert d["programs"][2]["avg_ns"] is None
    none = bench._stats_delta({}, [], 1.0)
    assert none["entry_ns_per_run"] is None and none["bpf_ns_per_call"] is None


def test_result_medians_ratios_and_text():
    class K:
        release = "6.12.1"

    rates = {"unprobed": [400.0, 500.0, 600.0], "empty": [450.0, 400.0, 500.0],
             "full": [100.0, 250.0, 200.0]}
    stats = {"empty": {"calls_per_s": 390.0, "kvfree_call_rcu_runs": 9,
                       "entry_ns_per_run": 150.0, "bpf_ns_per_call": 150.0, "programs": []}}
    python = [{"workers": 1, "calls_per_s": 100.0}, {"workers": 2, "calls_per_s": 200.0}]
    r = bench._result(K(), 2, 3, 1.5, rates, stats, python)
    assert r["phases"]["unprobed"] == {"calls_per_s": [400.0, 500.0, 600.0], "min": 400.0,
                                       "median": 500.0, "max": 600.0}
    assert r["ratio_to_unprobed"] == {"unprobed": 1.0, "empty": 0.9, "full": 0.4}
    # 2 threads, one per CPU: a call takes 2/rate s; full adds 2/200 - 2/500 s per call
    assert r["added_ns_per_call"]["full"] == pytest.approx(2 * (1 / 200 - 1 / 500) * 1e9)
    assert r["native_over_python"] == {"1": 5.0, "2": 2.5}
    out = bench.text(r)
    assert "full" in out and "0.400" in out and "entry 150.0 ns/run" in out
    assert "1 worker(s): 100 calls/s; native unprobed median is 5.0x" in out
    r["collector"] = {"cpu_ms_per_snapshot": 21.5, "cpu_percent_of_one_cpu": 2.15,
                      "interval_s": 1.0, "cpu_ms_back_to_back": 8.25,
                      "syscalls_per_snapshot": {"median": 33.0}}
    assert ("collector: 21.5 ms CPU per snapshot (2.15% of one CPU at 1 s; 8.25 ms back to "
            "back), 33 system calls") in bench.text(r)
    r["paired"] = {"runs": [{"entry_over_empty": 3.0}, {"entry_over_empty": None}],
                   "entry_over_empty": 3.0, "all_over_empty": 4.5}
    assert ("both attached together (2 runs: 3x -): entry / empty 3.0x, all programs / empty "
            "4.5x (both trampoline positions averaged)") in bench.text(r)


def test_collector_cost_splits_each_snapshot_as_session_read_makes_it(monkeypatch):
    """The maps read (source.read) then the snapshot made (collector.update), each reading
    once per snapshot; the read's CPU time is a part of the snapshot's. A second snapshot
    right after each is timed apart."""
    class Counter:
        n = 0

        def __enter__(self) -> Counter:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def count(self) -> int:
            self.n += 1
            return self.n

    made: list[object] = []
    session = SimpleNamespace(source=SimpleNamespace(read=lambda: sum(range(10**5))),
                              collector=SimpleNamespace(update=made.append))
    monkeypatch.setattr(bench, "_phase_run", lambda seconds, threads: 0.0)
    monkeypatch.setattr(bench, "SyscallCounter", Counter)
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    out = bench._collector_cost(session, [], 1, reads=3)
    assert made == [sum(range(10**5))] * 6  # each snapshot, and one right after it
    assert 0 <= out["cpu_ms_reading_maps"] <= out["cpu_ms_per_snapshot"]
    assert out["cpu_ms_back_to_back"] >= 0
    assert out["syscalls_per_snapshot"]["values"] == [0, 0, 0]


def test_collector_cost_profile_names_the_readers_functions(monkeypatch, capsys):
    """--profile-reads N: the reads' costliest functions, by name, on standard error."""
    class Counter:
        def __enter__(self) -> Counter:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def count(self) -> int:
            return 0

    def slow_read_of_the_maps() -> int:
        return sum(range(10**5))

    session = SimpleNamespace(source=SimpleNamespace(read=slow_read_of_the_maps),
                              collector=SimpleNamespace(update=lambda raw: None))
    monkeypatch.setattr(bench, "_phase_run", lambda seconds, threads: 0.0)
    monkeypatch.setattr(bench, "SyscallCounter", Counter)
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    bench._collector_cost(session, [], 1, reads=2, profile=5)
    err = capsys.readouterr().err
    assert "slow_read_of_the_maps" in err and "cumulative" in err


def test_paired_ratios_and_their_medians():
    """Each paired run's ratios come from its two sides; the median skips runs without one."""
    def side(entry, total, runs=1000):
        return {"calls_per_s": 5.0, "kvfree_call_rcu_runs": runs,
                "entry_ns_per_run": entry, "bpf_ns_per_call": total}
    runs = [bench._pair(side(150.0, 150.0), side(450.0, 600.0), "empty"),
            bench._pair(side(100.0, 100.0), side(400.0, 550.0), "full"),
            bench._pair(side(None, None, 0), side(500.0, 700.0), "empty"),
            bench._pair(side(200.0, 200.0), side(500.0, 650.0), "full")]
    assert [r["entry_over_empty"] for r in runs] == [3.0, 4.0, None, 2.5]
    assert runs[0]["all_over_empty"] == 4.0 and runs[2]["all_over_empty"] is None
    s = bench._paired_summary(runs)
    # empty first: entry 450 over empty 150 (run 3 has no empty side); full first: the means
    # 450 and 150 (of 400, 500 and 100, 200): (450 + 450) / (150 + 150)
    assert s["entry_over_empty"] == 3.0
    assert s["all_over_empty"] == round((600 + 600) / 300, 3)
    assert s["orders"] == ["empty", "full"]
    # one order alone is its own ratio; none with both sides: None
    assert bench._paired_summary(runs[:1])["entry_over_empty"] == 3.0
    assert bench._paired_summary([runs[2]])["entry_over_empty"] is None
    assert bench._fmt_ratios(runs, "entry_over_empty") == "3x 4x - 2.5x"
