"""`top`, `record`, `export`, `report`, `serve`: the surfaces, fed by a live session, a lab VM
or a recording (pipeline/feeds.py); they read snapshots only."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from .. import outputs
from ..errors import UserError
from ..pipeline import feeds, recording
from ..pipeline.session import open_live
from ..surfaces import dashboard, prom
from ..surfaces import grafana as grafana_surface
from ..surfaces import report as report_surface
from ..surfaces.export import CsvAppender, export_recording
from .common import (
    MAX_DURATION,
    MAX_INTERVAL,
    SELF_COST_HELP,
    finite,
    log,
    terminate_as_interrupt,
)

FORCE_HELP = "overwrite an existing FILE"


def top(
    interval: Annotated[
        float, typer.Argument(min=0.1, max=MAX_INTERVAL, callback=finite,
                              help="seconds between refreshes")
    ] = 1.0,
    count: Annotated[int | None, typer.Argument(min=1, help="stop after COUNT refreshes")] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="show a recording (`rcupending record`) instead; needs no root"),
    ] = None,
    speed: Annotated[
        float, typer.Option(min=0.0, max=1e6, callback=finite,
                            help="replay pace: 1 = as recorded, 10 = 10x, 0 = at once")
    ] = 1.0,
    csv: Annotated[
        str | None, typer.Option("--csv", help="also write each shown snapshot as tidy CSV rows")
    ] = None,
    force: Annotated[bool, typer.Option(help="--csv: " + FORCE_HELP)] = False,
    no_lab: Annotated[
        bool,
        typer.Option(
            "--no-lab", help="if this kernel refuses kvfree_call_rcu, show what does attach here"
        ),
    ] = False,
    kernel: Annotated[
        str, typer.Option("--lab-kernel", help="lab kernel when the host refuses the probes")
    ] = "debian:6.12",
    lab_seconds: Annotated[
        float, typer.Option(min=1.0, max=MAX_DURATION, callback=finite,
                            help="length of the lab stress run")
    ] = 60.0,
    self_cost: Annotated[
        bool, typer.Option("--self-cost", help="enable BPF run-time stats while running (live)")
    ] = False,
) -> None:
    """Dashboard: this host's kernel when it allows the probes, else a lab VM running a stress
    scenario on a real kernel (said plainly on screen), or a recording with --replay.

    Keys: q quits, p pauses; replay: left/right step, g/G first/last snapshot; Ctrl-C
    detaches every BPF program."""
    if csv is not None:
        outputs.check(csv, force=force, inputs=[replay] if replay is not None else [])
    terminate_as_interrupt()
    sink = None
    chosen = None
    ok = False
    try:
        if replay is not None:
            reader = recording.open_recording(replay, warn=None)
            name = Path(reader.path).name
            banner = f" REPLAY · {name} · recorded {reader.header.get('created', '?')} "
            feed = feeds.ReplayFeed(reader, speed)
            chosen = feeds.Chosen(feed, banner, hold=True, close=feed.close)
        else:
            chosen = feeds.for_top(interval, kernel, lab_seconds, no_lab=no_lab,
                                   self_cost=self_cost, log=log)
        if csv is not None:  # the input is valid (or attached): only now the output
            sink = CsvAppender(csv)
        dashboard.show(chosen.feed, chosen.banner, count, total=chosen.total, hold=chosen.hold,
                       on_snapshot=sink, note=chosen.note)
        ok = True
    except KeyboardInterrupt:
        ok = True
        raise typer.Exit(130) from None
    finally:
        if chosen is not None:
            chosen.close()  # detaches every program (also on q, Ctrl-C, SIGTERM)
        if sink is not None:
            sink.close() if ok else sink.discard()


def record(
    output: Annotated[
        str, typer.Option("--output", "-o", help="recording file to create ('-': stdout)")
    ],
    duration: Annotated[
        float | None, typer.Option(min=0.0, max=MAX_DURATION, callback=finite,
                                   help="seconds to record (default: until Ctrl-C)")
    ] = None,
    interval: Annotated[
        float, typer.Option(min=0.05, max=MAX_INTERVAL, callback=finite,
                            help="a snapshot every S s")
    ] = 1.0,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
    self_cost: Annotated[bool, typer.Option("--self-cost", help=SELF_COST_HELP)] = False,
) -> None:
    """Attach every probe and append one snapshot per INTERVAL to FILE (JSON lines after a
    header line, flushed per line: a kill -9 loses at most the last, partial, line).

    Ctrl-C or SIGTERM ends the recording cleanly (exit 0)."""
    if output != "-":
        outputs.check(output, force=force)
    terminate_as_interrupt()
    session = open_live(self_cost=self_cost, require=True)
    writer = None
    try:
        writer = recording.RecordingWriter(output, session.provenance, force=force)
        start = time.monotonic()
        writer.write(session.read())  # seq 0: the baseline at attach
        while duration is None or (left := duration - (time.monotonic() - start)) > 0:
            time.sleep(interval if duration is None else min(interval, left))
            writer.write(session.read())
    except KeyboardInterrupt:
        pass  # the file is complete up to the last snapshot
    finally:
        session.close()
        if writer is not None:
            writer.close()
    if writer is not None:
        where = "stdout" if output == "-" else output
        log(f"recorded {writer.count} snapshots to {where} "
            f"(kernel {session.provenance['kernel_release']})")


def export(
    recording_file: Annotated[Path, typer.Argument(metavar="REC", help="a recording")],
    csv: Annotated[str | None, typer.Option("--csv", help="tidy CSV rows ('-': stdout)")] = None,
    jsonl: Annotated[
        str | None, typer.Option("--jsonl", help="one snapshot per line ('-': stdout)")
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing output FILE")] = False,
) -> None:
    """Export a recording as tidy CSV (timestamp, seq, metric, labels..., value; see README)
    and/or JSON lines of its snapshots. Outputs appear only when the whole recording was read
    (an error leaves none, and any old file as it was)."""
    rows, n = export_recording(recording_file, csv, jsonl, force=force)
    if csv:
        log(f"{'stdout' if csv == '-' else csv}: {rows} rows from {n} snapshots")
    if jsonl:
        log(f"{'stdout' if jsonl == '-' else jsonl}: {n} snapshots")


def report(
    recording_file: Annotated[Path, typer.Argument(metavar="REC", help="a recording")],
    outdir: Annotated[str, typer.Option("--output", "-o", help="directory to write")],
    force: Annotated[bool, typer.Option(help="replace a report already in DIR")] = False,
) -> None:
    """PNG plots of a recording and an index.html that shows them with its provenance. DIR
    gets them only when all are made (an error changes nothing there)."""
    if not outdir.strip():
        raise UserError("-o '': give a directory for the report")
    outputs.check(outdir, inputs=[recording_file], directory=True)
    with recording.open_recording(recording_file) as reader:
        rec = report_surface.load(reader)
    result = report_surface.build(rec, outdir, force=force)
    print(result.index)
    for img in result.images:
        print(Path(outdir) / img)


def serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one)")] = 9477,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    replay: Annotated[
        Path | None, typer.Option(help="serve a recording at its recorded pace (no root)")
    ] = None,
    speed: Annotated[
        float, typer.Option(min=0.0, max=1e6, callback=finite, help="replay pace (0: all at once)")
    ] = 1.0,
    interval: Annotated[
        float, typer.Option(min=0.1, max=MAX_INTERVAL, callback=finite,
                            help="live: seconds between reads")
    ] = 5.0,
) -> None:
    """Prometheus /metrics of the latest snapshot: live (root) or a recording (--replay).

    Metric families: rcupending_* (see README; `rcupending grafana` writes the dashboard). Other
    paths answer 404; if the feed fails, /metrics answers 503 and the command exits 1."""
    terminate_as_interrupt()
    exporter = prom.SnapshotExporter()
    stop = threading.Event()
    session = None
    reader = None
    worker: threading.Thread | None = None
    if replay is not None:
        reader = recording.open_recording(replay)

        def feed() -> None:
            last = None
            for delay, snap in recording.paced(reader, speed):
                if stop.wait(delay):
                    return
                exporter.update(snap)
                last = snap
            log(f"replay of {replay} finished; serving its last snapshot "
                f"(seq {last['seq'] if last else '?'})")

    else:
        session = open_live(require=True)

        def feed() -> None:
            while True:
                exporter.update(session.read())
                if stop.wait(interval):
                    return

    def guarded() -> None:
        try:
            feed()
        except Exception as e:  # noqa: BLE001 - any failure: 503 and exit 1, never stale 200s
            exporter.fail(str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}")

    server = None
    try:
        server = prom.start_server(exporter, host, port)
        worker = threading.Thread(target=guarded, daemon=True)
        worker.start()
        log(f"serving {prom.url(server)} ({f'replay of {replay}' if replay else 'live'})")
        if warning := prom.exposure_warning(host):
            log(f"rcupending: warning: {warning}")
        exporter.failed.wait()
        raise UserError(f"the feed failed: {exporter.failure}; /metrics answered 503 since",
                        code=1)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=interval + 10)  # no map read may race the detach below
        if session is not None:
            session.close()
        if server is not None:
            server.shutdown_quietly()
        if reader is not None:
            reader.close()


def grafana(
    output: Annotated[
        str, typer.Option("--output", "-o", help="file to write ('-': stdout)")
    ] = "-",
    force: Annotated[bool, typer.Option(help="overwrite an existing FILE")] = False,
) -> None:
    """The Grafana dashboard of `serve`'s metrics (JSON to import): one row per metric family,
    one panel per metric, derived from the families themselves."""
    text = json.dumps(grafana_surface.dashboard(), indent=2) + "\n"
    if output == "-":
        sys.stdout.write(text)
        return
    try:
        with open(output, "w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise UserError(f"{output} exists (pass --force to overwrite it)") from None
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    log(f"wrote {output}")


def register(app: typer.Typer) -> None:
    for command in (top, record, export, report, serve, grafana):
        app.command()(command)
