"""The tool's own cost (`self_cost`): sampled from this process's /proc files, carried by the
RawSample, copied by the collector, valid by the schema, exported and shown."""

from __future__ import annotations

import json
import os
import time

import pytest

from rcupending_tools.pipeline import selfcost
from rcupending_tools.pipeline.collector import Collector, RawSample, provenance
from rcupending_tools.pipeline.live import LiveSource
from rcupending_tools.pipeline.schema import validation_errors
from rcupending_tools.surfaces import samples as metrics
from tests.socket_filter import load_socket_filter
from tests.unit.surfaces_fixtures import full_snapshots
from tests.unit.test_surfaces_top import frame

PROG_FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t17
ino:\t1038
prog_type:\t26
prog_jited:\t1
prog_tag:\t59f4a931744dcdc6
memlock:\t4096
prog_id:\t311
run_time_ns:\t{ns}
run_cnt:\t{cnt}
recursion_misses:\t0
verified_insns:\t2
"""
MAP_FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t17
ino:\t1038
map_type:\t6
key_size:\t4
value_size:\t8
max_entries:\t1
map_flags:\t0x0
map_extra:\t0x0
memlock:\t4096
map_id:\t12
frozen:\t0
"""
LINK_FDINFO = """pos:\t0
flags:\t02000000
mnt_id:\t17
ino:\t1038
link_type:\ttracing
link_id:\t5
prog_tag:\t59f4a931744dcdc6
prog_id:\t311
attach_type:\t24
"""
OLD_PROG_FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t13
prog_type:\t26
prog_jited:\t1
prog_tag:\t59f4a931744dcdc6
memlock:\t4096
"""


def test_sample_values_are_sane():
    selfcost.mark_attach()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.05:  # burn some CPU after the baseline
        pass
    sc = selfcost.sample()
    assert set(sc) == {"cpu_seconds", "rss_bytes", "bpf_run_ns", "bpf_run_count"}
    assert 0.0 <= sc["cpu_seconds"] < 60  # since the baseline, not since process start
    assert sc["cpu_seconds"] >= 0.01
    assert sc["rss_bytes"] > 1 << 20  # a Python interpreter holds more than 1 MiB
    assert (sc["bpf_run_ns"] is None) == (sc["bpf_run_count"] is None)
    later = selfcost.sample()
    assert later["cpu_seconds"] >= sc["cpu_seconds"]


def test_rss_is_statm_resident_pages():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    rss = selfcost.rss_bytes()
    page = os.sysconf("SC_PAGE_SIZE")
    assert abs(rss - pages * page) < 64 * page  # the interpreter may touch a few pages between


def test_fdinfo_parsing():
    info = selfcost.parse_fdinfo(PROG_FDINFO.format(ns=1234, cnt=7))
    assert info["prog_type"] == "26"
    assert info["prog_tag"] == "59f4a931744dcdc6"
    assert (info["run_time_ns"], info["run_cnt"]) == ("1234", "7")
    assert "map_type" in selfcost.parse_fdinfo(MAP_FDINFO)


def test_bpf_stats_sum_only_programs():
    texts = [
        PROG_FDINFO.format(ns=1000, cnt=10),
        PROG_FDINFO.format(ns=500, cnt=3),
        MAP_FDINFO,
        LINK_FDINFO,  # a link names its program but is not one: no double count
        "pos:\t0\nflags:\t02\nmnt_id:\t1\nino:\t9\n",  # a plain file
    ]
    assert selfcost.bpf_prog_stats(texts, stats_enabled=False) == (1500, 13)
    assert selfcost.bpf_prog_stats(texts, stats_enabled=True) == (1500, 13)


def test_bpf_stats_null_when_off_or_not_reported():
    zero = [PROG_FDINFO.format(ns=0, cnt=0), MAP_FDINFO]
    # stats off (sysctl 0) and no count moved: the kernel did not count, so no number
    assert selfcost.bpf_prog_stats(zero, stats_enabled=False) == (None, None)
    # stats on: zero is a measured zero
    assert selfcost.bpf_prog_stats(zero, stats_enabled=True) == (0, 0)
    # no BPF program fd, or a kernel whose fdinfo lacks the fields (< 5.1)
    assert selfcost.bpf_prog_stats([MAP_FDINFO], stats_enabled=True) == (None, None)
    assert selfcost.bpf_prog_stats([OLD_PROG_FDINFO], stats_enabled=True) == (None, None)
    assert selfcost.bpf_prog_stats([], stats_enabled=True) == (None, None)




def test_a_real_program_fd_is_found_and_stats_are_not_enabled():
    if os.uname().machine != "x86_64":
        pytest.skip("the raw bpf() syscall number is x86-64's")
    with open(selfcost.STATS_SYSCTL) as f:
        sysctl_on = f.read().strip() == "1"
    fd = load_socket_filter()
    if fd < 0:
        pytest.skip("this kernel refuses BPF_PROG_LOAD here")
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            info = selfcost.parse_fdinfo(f.read())
        assert info["prog_type"] == "1"  # BPF_PROG_TYPE_SOCKET_FILTER
        sc = selfcost.sample()
        if sysctl_on:
            assert isinstance(sc["bpf_run_ns"], int) and isinstance(sc["bpf_run_count"], int)
        elif info.get("run_cnt") == "0":  # never ran: with stats off, no number
            assert sc["bpf_run_ns"] is None and sc["bpf_run_count"] is None
        with open(selfcost.STATS_SYSCTL) as f:  # sampling enabled nothing
            assert (f.read().strip() == "1") == sysctl_on
    finally:
        os.close(fd)


def test_live_source_read_carries_self_cost():
    src = LiveSource(probes=()).attach()  # no probes: nothing loaded, no root needed
    try:
        raw = src.read()
    finally:
        src.close()
    assert raw.self_cost is not None
    assert raw.self_cost["cpu_seconds"] >= 0 and raw.self_cost["rss_bytes"] > 0


SC = {"cpu_seconds": 1.25, "rss_bytes": 50 << 20, "bpf_run_ns": 3_000_000, "bpf_run_count": 900}


def test_collector_copies_self_cost_and_snapshot_validates():
    col = Collector(provenance("6.12.1", "rcupending test"), [], source="synthetic")
    s0 = col.update(RawSample(time=10.0))  # synthetic data without it
    s1 = col.update(RawSample(time=11.0, self_cost=dict(SC)))
    nulls = dict(SC, bpf_run_ns=None, bpf_run_count=None)
    s2 = col.update(RawSample(time=12.0, self_cost=nulls))
    assert s0["self_cost"] is None
    assert s1["self_cost"] == SC
    assert s2["self_cost"] == nulls
    for s in (s0, s1, s2):
        assert validation_errors(s) == []
    # a live reading validates too
    s3 = col.update(RawSample(time=13.0, self_cost=selfcost.sample()))
    assert validation_errors(s3) == []
    # the schema checks the object's contents; snapshots of older collectors lack the key
    bad = dict(s1, self_cost=dict(SC, cpu_seconds=-1))
    assert any("self_cost" in e for e in validation_errors(bad))
    missing = {k: v for k, v in s1.items() if k != "self_cost"}
    assert validation_errors(missing) == []
    assert any("self_cost" in e for e in validation_errors(dict(s1, self_cost={"rss_bytes": 1})))


def test_raw_sample_json_round_trip():
    r = RawSample(time=5.0, self_cost=dict(SC))
    back = RawSample.from_json(json.loads(json.dumps(r.to_json())))
    assert back.self_cost == SC
    old = r.to_json()
    del old["self_cost"]  # written before the field existed
    assert RawSample.from_json(old).self_cost is None


def test_metric_samples():
    s = full_snapshots(2)[-1]
    s["self_cost"] = dict(SC)
    got = {x.name: x.value for x in metrics.samples(s) if x.family.startswith("self_")}
    assert got == {
        "self_cpu_seconds_total": 1.25,
        "self_rss_bytes": 50 << 20,
        "self_bpf_run_seconds_total": pytest.approx(0.003),
        "self_bpf_run_events_total": 900,
    }
    s["self_cost"] = dict(SC, bpf_run_ns=None, bpf_run_count=None)
    got = {x.name for x in metrics.samples(s) if x.family.startswith("self_")}
    assert got == {"self_cpu_seconds_total", "self_rss_bytes"}
    s["self_cost"] = None
    assert not [x for x in metrics.samples(s) if x.family.startswith("self_")]
    rows = metrics.tidy_rows([dict(s, self_cost=dict(SC))])
    assert {r["metric"]: r["value"] for r in rows}["self_rss_bytes"] == 50 << 20


def _with_cost(n: int, cost) -> list[dict]:  # noqa: ANN001
    snaps = full_snapshots(n, cpus=8)
    for i, s in enumerate(snaps):
        s["self_cost"] = cost(i)
    return snaps


def test_dashboard_line_fits_80x24():
    snaps = _with_cost(
        4,
        lambda i: {
            "cpu_seconds": 0.05 * i,
            "rss_bytes": 117 << 20,
            "bpf_run_ns": 2_000_000 * i,
            "bpf_run_count": 1000 * i,
        },
    )
    lines = frame(snaps, 80, 24, total=4)
    assert len(lines) <= 24 and max(len(ln) for ln in lines) <= 80
    screen = "\n".join(lines)
    # 0.05 s of CPU per 1 s snapshot: 5.0% of one CPU; 2 ms of BPF per second: 0.20%
    assert "tool cost   CPU 5.0% (0.15s) · rss 117.0 MiB · BPF 0.20% (6ms, 3,000 runs)" in screen
    assert "stress worker" in screen  # the process table still has room


def test_dashboard_shows_na():
    nulls = _with_cost(
        2,
        lambda i: {
            "cpu_seconds": 0.1,
            "rss_bytes": 1 << 20,
            "bpf_run_ns": None,
            "bpf_run_count": None,
        },
    )
    assert "· rss 1.0 MiB · BPF n/a" in "\n".join(frame(nulls, 80, 24))
    none = _with_cost(2, lambda i: None)
    assert "tool cost   n/a" in "\n".join(frame(none, 80, 24))
    older = full_snapshots(2)  # an older collector's snapshots: the line is left out
    assert "tool cost" not in "\n".join(frame(older, 80, 24))
