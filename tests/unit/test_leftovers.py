"""Stale bcc kprobe events (left by a kill -9 on kernels without the kprobe PMU) and the
RCUPENDING_TRACK_MAX cap."""

from __future__ import annotations

import pytest

from rcupending_tools import config
from rcupending_tools.errors import UserError
from rcupending_tools.kernel import KernelInfo
from rcupending_tools.probes import layouts as layout
from rcupending_tools.probes import leftovers

EVENTS = """p:kprobes/p_kvfree_rcu_bulk_bcc_4242 kvfree_rcu_bulk
r:kprobes/r_kvfree_call_rcu_bcc_4242 kvfree_call_rcu
p:kprobes/p_vfree_bcc_77 vfree
p:kprobes/mine vfree
p:perf/p_other_thing something
"""


def test_stale_events_are_those_of_dead_bcc_processes():
    assert leftovers.stale_bcc_events(EVENTS, alive={77}) == [
        "kprobes/p_kvfree_rcu_bulk_bcc_4242",
        "kprobes/r_kvfree_call_rcu_bcc_4242",
    ]
    assert leftovers.stale_bcc_events(EVENTS, alive={77, 4242}) == []
    assert leftovers.stale_bcc_events("", alive=set()) == []


def test_clean_writes_removals(tmp_path, monkeypatch):
    f = tmp_path / "kprobe_events"
    f.write_text(EVENTS)
    monkeypatch.setattr(leftovers.os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        leftovers, "stale_bcc_events", lambda text: ["kprobes/p_vfree_bcc_77"]
    )
    assert leftovers.clean_stale_kprobes(f) == ["kprobes/p_vfree_bcc_77"]
    assert f.read_text().endswith("-:kprobes/p_vfree_bcc_77\n")  # tracefs' removal syntax


def test_track_max_env(tmp_path, monkeypatch):
    monkeypatch.delenv(config.TRACK_MAX_ENV, raising=False)
    assert config.track_max() is None
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffff81000000 T kvfree_call_rcu\n")
    (tmp_path / "btf").mkdir()
    k = KernelInfo(release="6.12.1", kallsyms_path=ks, btf_dir=tmp_path / "btf")
    assert "TRACK_MAX" not in layout.kvfree_layout(k, ["head", "ptr"], "fentry").defines
    monkeypatch.setenv(config.TRACK_MAX_ENV, "64")
    assert layout.kvfree_layout(k, ["head", "ptr"], "fentry").defines["TRACK_MAX"] == 64
    for bad in ("0", "lots", "-5", str((1 << 24) + 1)):
        monkeypatch.setenv(config.TRACK_MAX_ENV, bad)
        with pytest.raises(UserError, match="RCUPENDING_TRACK_MAX"):
            config.track_max()


def test_module_in_modules_dep():
    from rcupending_tools.kernel import module_in_dep

    dep = ("kernel/fs/bcachefs/bcachefs.ko.xz: kernel/lib/xxhash.ko.xz\n"
           "kernel/drivers/net/veth.ko: \n"
           "kernel/drivers/hid/hid-generic.ko.zst:\n")
    assert module_in_dep(dep, "bcachefs") and module_in_dep(dep, "veth")
    assert module_in_dep(dep, "hid_generic")  # modprobe treats - and _ alike
    assert not module_in_dep(dep, "xxhash") and not module_in_dep(dep, "bcache")
    assert not module_in_dep("", "bcachefs")
