"""Property: no input makes the recording reader or a surface fed by it raise anything but the
one-line UserError, and an error leaves no output file (nor a partial one) behind.

Inputs are valid recordings damaged the ways files get damaged or forged: a JSON value swapped
for another of the same type (huge, negative, control characters, spreadsheet formulas, rich
markup, TeX) or of any type, keys dropped, NaN and infinities, lines cut, duplicated, blanked
or replaced by bytes, the header broken. CI runs them derandomized (the same cases each run);
locally each run draws new ones (RCUPENDING_HYPOTHESIS_SCALE=10: ten times as many).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from rcupending_tools.errors import UserError
from rcupending_tools.pipeline import recording
from rcupending_tools.surfaces import dashboard, prom, text
from rcupending_tools.surfaces import report as report_surface
from rcupending_tools.surfaces.export import export_recording
from tests.unit.surfaces_fixtures import full_snapshots

HEADER = recording.header(full_snapshots(1)[0]["provenance"], created=1_700_000_000)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
CI = bool(os.environ.get("CI"))
SCALE = float(os.environ.get("RCUPENDING_HYPOTHESIS_SCALE", "1"))  # more cases: a deeper run
# one scratch directory for all cases (tmpfs where there is one: fsync costs nothing there)
SCRATCH = Path(tempfile.mkdtemp(prefix="rcupending-hypothesis-",
                                dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
atexit.register(shutil.rmtree, SCRATCH, True)
READ = SCRATCH / "read"  # only the case's recording and, while it is written, its export
READ.mkdir()
COMMON = dict(deadline=None, derandomize=CI, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])

ALPHABET = "ab-=+@$[]/\\ \t\n\r\x00\x07\x1b\x7f\x9b\u202e\u2028é€😀"
nasty_text = st.one_of(
    st.text(ALPHABET, max_size=10),
    st.sampled_from(["=HYPERLINK(\"x\")", "-bash", "+1", "@A1", "\x1b]2;T\x07", "\x1b[2J",
                     "[/oops]", "[bold]x", "$\\frac{", "a$b$", "\u202e", "", " ", "+Inf", "nan",
                     "\ud800"]),
)
big_ints = st.one_of(st.integers(-3, 3), st.integers(-(2**70), 2**70),
                     st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63), 10**19, 4194305]))
floats = st.one_of(st.floats(), st.sampled_from([1e20, -1.0, 0.0, 1e308, 5e-324, 2.5e11]))
leaves = st.one_of(st.none(), st.booleans(), big_ints, floats, nasty_text)
values = st.recursive(leaves, lambda c: st.lists(c, max_size=2)
                      | st.dictionaries(nasty_text, c, max_size=2), max_leaves=4)


def like(v: Any) -> st.SearchStrategy:
    """Another value of `v`'s JSON type."""
    if isinstance(v, bool):
        return st.booleans()
    if isinstance(v, int):
        return big_ints
    if isinstance(v, float):
        return floats
    if isinstance(v, str):
        return nasty_text
    if isinstance(v, list):
        return st.lists(values, max_size=3)
    if isinstance(v, dict):
        return st.dictionaries(nasty_text, values, max_size=3)
    return values


BASE_JSON = [json.dumps(s) for s in full_snapshots(2, cpus=1)]


gentle = {int: st.one_of(st.integers(0, 5_000_000), st.integers(0, 2**40),
                        st.sampled_from([0, 1, 2**63, 2**64 - 1])),
          float: st.floats(0, 1e9), str: nasty_text, bool: st.booleans()}
ENUMS = {"source": st.sampled_from(["live", "lab-vm", "replay", "synthetic"]),
         "status": st.sampled_from(["attached", "stand-in", "blocked", "absent"]),
         "schema": st.just("rcupending-snapshot"), "version": st.just(1)}


@st.composite
def mutate(draw: st.DrawFn, snap: Any, leaves_only: bool) -> None:
    """Change one node of `snap` in place: walk down from the root, at each level into a
    random child, and stop at a random depth (`leaves_only`: at a leaf, keeping its type, with
    values a collector could write, so that the reader mostly accepts the result)."""
    node = snap
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = keys[draw(st.integers(0, len(keys) - 1))]
        child = node[key]
        if isinstance(child, dict | list) and child and (leaves_only or draw(st.integers(0, 2))):
            node = child
            continue
        if leaves_only:
            if key in ENUMS:
                node[key] = draw(ENUMS[key])
            elif type(child) in gentle:
                node[key] = draw(gentle[type(child)])
            return
        how = draw(st.sampled_from(["same", "same", "any", "drop"]))
        if how == "drop":
            del node[key]
        else:
            node[key] = draw(like(child) if how == "same" else values)
        return


@st.composite
def damaged_recording(draw: st.DrawFn) -> bytes:
    snaps = [json.loads(t) for t in BASE_JSON[: draw(st.integers(1, 2))]]
    header = json.loads(json.dumps(HEADER))
    for _ in range(draw(st.integers(0, 3))):
        draw(mutate(snaps[draw(st.integers(0, len(snaps) - 1))], False))
    if draw(st.integers(0, 9)) == 0:  # the header
        key = draw(st.sampled_from(["version", "format", "provenance", "created"]))
        header[key] = draw(values)
    lines = [json.dumps(header)] + [json.dumps(s) for s in snaps]  # NaN, Infinity as is
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    cut = draw(st.sampled_from(["none", "none", "truncate", "insert", "line", "blank", "bom"]))
    if cut == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif cut == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
    elif cut in ("line", "blank"):
        parts = data.split(b"\n")
        k = draw(st.integers(0, len(parts) - 1))
        parts[k] = b"" if cut == "blank" else draw(st.binary(max_size=40))
        data = b"\n".join(parts)
    elif cut == "bom":
        data = b"\xef\xbb\xbf" + data
    return data


def no_controls(s: str, where: str) -> None:
    assert not CONTROL.search(s.replace("\n", "")), f"control character in {where}: {s!r}"


def read_or_refuse(tmp: Path, data: bytes, *, keep: bool = False) -> list | None:
    """Export `data` as a recording to JSON lines: on a UserError no output may be left (nor a
    partial one); else the output holds every snapshot read. `keep`: the snapshots, read
    again (the surfaces test), else None."""
    src = tmp / "rec.jsonl"
    src.write_bytes(data)
    out = tmp / "out.jsonl"
    try:
        _, n = export_recording(src, None, str(out), progress=False, warn=None)
    except UserError:
        assert [p.name for p in tmp.iterdir()] == ["rec.jsonl"], list(tmp.iterdir())
        return None
    assert out.read_bytes().count(b"\n") == n >= 1
    out.unlink()
    return recording.read(src, warn=None).snapshots if keep else None


@settings(max_examples=int(10_000 * SCALE), **COMMON)
@given(damaged_recording())
def test_the_reader_refuses_with_one_line_or_reads(data):
    """10,000 damaged files: read, or refused with a UserError and no output left."""
    read_or_refuse(READ, data)


def show_everything(snaps: list, tmp: Path) -> None:
    """Every surface fed by a recording, with assertions on what they show."""
    state = dashboard.DashboardState(" REPLAY · fuzz ", len(snaps))
    for s in snaps:
        state.push(s)
        no_controls(text.summary(s), "text summary")
    for w, h in ((80, 24), (132, 50)):
        buf = io.StringIO()
        console = Console(file=buf, width=w, height=h, force_terminal=False, color_system=None)
        console.print(dashboard.render(state, w, h))
        no_controls(buf.getvalue(), "the dashboard")
    exposition = prom.exposition(snaps[-1])
    no_controls(exposition, "the Prometheus exposition")
    from prometheus_client.parser import text_string_to_metric_families

    list(text_string_to_metric_families(exposition))
    rec = recording.Recording(str(tmp / "rec.jsonl"), HEADER, snaps)
    page = report_surface._html(rec, report_surface.Report(tmp))
    no_controls(page, "the report page")
    csv_out = tmp / "out.csv"
    export_recording(tmp / "rec.jsonl", str(csv_out), None, progress=False, warn=None)
    no_controls(csv_out.read_text(), "the CSV")
    csv_out.unlink()


@st.composite
def readable_recording(draw: st.DrawFn) -> bytes:
    """Damaged recordings the reader mostly accepts: values swapped for others of their type."""
    snaps = [json.loads(t) for t in BASE_JSON[: draw(st.integers(1, 2))]]
    for _ in range(draw(st.integers(1, 4))):
        draw(mutate(snaps[draw(st.integers(0, len(snaps) - 1))], True))
    lines = [json.dumps(HEADER)] + [json.dumps(s) for s in snaps]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@settings(max_examples=int(600 * SCALE), **COMMON)
@given(readable_recording())
def test_every_surface_shows_what_the_reader_accepts(data):
    """Whatever the reader accepts, every surface shows without an exception and without a
    raw control character (dashboard, text, Prometheus, report page, CSV)."""
    snaps = read_or_refuse(READ, data, keep=True)
    if snaps is not None:
        show_everything(snaps, READ)


@settings(max_examples=int(8 * SCALE), **COMMON)
@given(readable_recording())
def test_the_report_plots_what_the_reader_accepts(data):
    """The full report (matplotlib) on accepted damaged recordings: a handful, it is slow."""
    snaps = read_or_refuse(READ, data, keep=True)
    if snaps is None:
        return
    rec = recording.Recording(str(READ / "rec.jsonl"), HEADER, snaps)
    rep = report_surface.build(rec, SCRATCH / "rep", force=True)
    assert (SCRATCH / "rep" / "index.html").exists() and rep.index is not None
