"""The `rcupending` command line (typer). Every command fails with one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

try:  # typer >= 0.2x vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from .. import __version__
from ..errors import UserError
from . import bench, surfaces
from . import nolock as nolock_command
from .common import command_line as _command_line
from .common import emit_json as _emit_json
from .common import terminate_as_interrupt as _terminate_as_interrupt

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Measure memory queued behind RCU grace periods (kvfree_rcu, rcu_pending, "
    "alloc_pages_nolock) with eBPF.",
)
stress_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Drive a kernel path with a bounded load that knows its own truth.",
)
app.add_typer(stress_app, name="stress")
app.add_typer(bench.app, name="bench")
nolock_command.register(stress_app)


@app.callback()
def _options(
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            metavar="N",
            help="follow 1 in N kvfree_rcu/rcu_pending objects per address (N a power of two): "
            "latency and frees from the sample, enqueue counts stay exact; the others count as "
            "untracked (also RCUPENDING_SAMPLE)",
        ),
    ] = None,
) -> None:
    """Measure memory queued behind RCU grace periods with eBPF."""
    if sample is not None:
        from ..probes.layouts import SAMPLE_ENV, sample_one_in

        os.environ[SAMPLE_ENV] = str(sample)
        try:
            sample_one_in()
        except UserError as e:
            raise typer.BadParameter(str(e).split(": ", 1)[1], param_hint="--sample") from None


@app.command()
def version() -> None:
    """Print the tool version."""
    print(__version__)


@app.command()
def check(json_out: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """Load and attach each probe for real, detach it, and say what works on this kernel.

    Exit 0 iff no probe is `blocked`."""
    from ..kernel import KernelInfo
    from ..probes import bpfload, planner

    bpfload.require_root()
    kernel = KernelInfo()
    statuses = planner.check_all(kernel)
    blocked = [s for s in statuses if s.status is planner.Status.BLOCKED]
    if json_out:
        _emit_json(
            {
                "kernel_release": kernel.release,
                "ok": not blocked,
                "probes": [s.to_dict() for s in statuses],
            }
        )
    else:
        print(f"kernel {kernel.release}")
        for s in statuses:
            what = (
                s.mechanism
                if s.status in (planner.Status.ATTACHED, planner.Status.STAND_IN)
                else ""
            )
            print(f"  {s.name:<22} {s.status:<9} {what:<12} {s.detail}")
    raise typer.Exit(1 if blocked else 0)


SELF_COST_HELP = "enable BPF run-time stats while running; per-program cost in self_cost"


def _live_collector(source_kind: str | None = None, self_cost: bool = False):  # noqa: ANN202
    """Attach everything and wrap it in a Collector (caller closes the source); `self_cost`
    holds a BPF_ENABLE_STATS fd while attached."""
    import os

    from ..pipeline.collector import Collector, provenance
    from ..pipeline.live import LiveSource
    from ..probes import bpfload

    bpfload.require_root()
    src = LiveSource(self_cost=self_cost).attach()
    kind = source_kind or ("lab-vm" if os.environ.get("RCUPENDING_LAB_SPEC") else "live")
    return src, Collector(provenance(command=_command_line()), src.probe_dicts(), source=kind)


@app.command()
def collect(
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to collect")] = 10.0,
    interval: Annotated[
        float | None, typer.Option(min=0.05, help="emit a snapshot every S s")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="snapshots as JSON lines")] = False,
    csv: Annotated[str | None, typer.Option(help="also append tidy CSV rows to FILE")] = None,
    self_cost: Annotated[bool, typer.Option("--self-cost", help=SELF_COST_HELP)] = False,
) -> None:
    """Attach all probes, collect for DURATION seconds of any workload, print snapshots."""
    from ..surfaces.export import CsvAppender
    from ..surfaces.text import summary

    _terminate_as_interrupt()
    src, col = _live_collector(self_cost=self_cost)
    to_csv = CsvAppender(csv) if csv else None
    try:
        _require_something_attached(src)
        start = time.monotonic()
        col.update(src.read())  # seq 0: the baseline at attach
        snap = None
        while True:
            left = duration - (time.monotonic() - start)
            step = min(interval, left) if interval else left
            if step > 0:
                time.sleep(step)
            snap = col.update(src.read())
            if to_csv is not None:
                to_csv(snap)
            if interval or left <= step:
                if json_out:
                    _emit_json(snap)
                elif interval:
                    print(summary(snap))
            if time.monotonic() - start >= duration:
                break
        if not json_out and not interval:
            print(summary(snap))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        src.close()
        if to_csv is not None:
            to_csv.close()


def _require_something_attached(src) -> None:  # noqa: ANN001
    if not src.loaded:
        reasons = "; ".join(f"{s.name}: {s.status} ({s.detail})" for s in src.statuses)
        raise UserError(f"no probe could attach on this kernel: {reasons}")


@stress_app.command("kvfree")
def stress_kvfree(
    count: Annotated[int | None, typer.Option(min=0, help="kfree_rcu() enqueues to make")] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="run for S seconds instead")
    ] = None,
    optlen: Annotated[
        int, typer.Option(min=1, max=255, help="IP options length (4..40; >40 fails: control)")
    ] = 4,
    workers: Annotated[
        int | None, typer.Option(min=1, max=256, help="1 (python), one per CPU (native)")
    ] = None,
    sockets: Annotated[int, typer.Option(min=1, max=4096)] = 8,
    rate: Annotated[
        float | None,
        typer.Option(min=0.01, help="a trickle: at most R enqueues per second (with --count)"),
    ] = None,
    headless: Annotated[
        bool,
        typer.Option(
            help="headless kvfree_rcu instead (root, 6.15+): renames of a cgroup v1 "
            "directory, each freeing the old name with kfree_rcu_mightsleep()",
        ),
    ] = False,
    name_len: Annotated[
        int, typer.Option(min=1, max=200, help="--headless: directory name length")
    ] = 24,
    measure: Annotated[bool, typer.Option(help="attach the collector around the stress")] = False,
    interval: Annotated[
        float | None, typer.Option(min=0.05, help="with --measure: a snapshot every S s")
    ] = None,
    drain: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="with --measure: wait up to S s for the stress's objects "
            "to be freed (kvfree_rcu batches for ~5 s), then check conservation",
        ),
    ] = 0.0,
    flush_sheaves: Annotated[
        bool,
        typer.Option(
            help="with --drain: if stress objects still wait in rcu_free sheaves (6.18+) after "
            "half the drain, flush them (write 1 to /sys/kernel/slab/kmalloc*/shrink)",
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    self_cost: Annotated[
        bool, typer.Option("--self-cost", help="with --measure: " + SELF_COST_HELP)
    ] = False,
    driver: Annotated[
        str, typer.Option(help="python (forked workers) or native (C threads, one per CPU)")
    ] = "python",
) -> None:
    """setsockopt(IP_OPTIONS) on UDP sockets: one kfree_rcu() per set after a socket's first
    (a flood, or a trickle with --rate); --headless: kfree_rcu_mightsleep() by cgroup renames.

    With --measure, exit 1 when the stress workers' measured enqueues differ from the truth."""
    from ..kernel import KernelInfo
    from ..stress import headless as headless_stress
    from ..stress import kvfree
    from ..surfaces.text import summary

    if count is None and duration is None:
        count = 20000
    if count is not None and duration is not None:
        raise UserError("give --count or --duration, not both")
    if workers is None:
        workers = (os.cpu_count() or 1) if driver == "native" else 1
    if sockets < workers:
        raise UserError("--sockets must be at least --workers")
    if self_cost and not measure:
        raise UserError("--self-cost needs --measure (it reports the probes' cost)")
    if driver not in ("python", "native"):
        raise UserError(f"--driver {driver!r}: choose python or native")
    if rate is not None and count is None:
        raise UserError("--rate needs --count (a trickle of that many enqueues)")
    if headless and count is None:
        raise UserError("--headless needs --count")
    if driver == "native":
        if rate is not None or headless:
            raise UserError("--driver native floods: no --rate or --headless")
        from ..stress import native

        native.binary()  # build it now (once), not inside the measured window
    _terminate_as_interrupt()
    kernel_version = KernelInfo().version  # the headless truth depends on it
    src = col = run = None
    if measure:
        src, col = _live_collector(self_cost=self_cost)
    try:
        if src is not None:
            _require_something_attached(src)
            col.update(src.read())
        if headless:
            try:
                run = headless_stress.start(count or 0, name_len, rate, kernel_version)
            except PermissionError as e:
                raise UserError(str(e)) from None
        elif driver == "native":
            run = native.start(count, optlen, workers, sockets, duration)
        else:
            run = kvfree.start(count, optlen, workers, sockets, duration, rate)
        if col is not None:
            col.stress_tgids = run.pids
        while interval and col is not None and run.running(timeout=interval):
            snap = col.update(src.read())
            _emit_json(snap) if json_out else print(summary(snap))
        try:
            expected = run.wait()
        except RuntimeError as e:
            raise UserError(str(e)) from None
        if headless and kernel_version < headless_stress.HEADLESS_SINCE:
            expected["note"] = "before 6.15 kernfs frees renamed names with kfree_const()"
        result: dict = {"expected": expected}
        if src is not None:
            enq_snap = col.update(src.read())  # the stress is done; its frees may not be
            flushed: dict = {}
            snap = _drain(src, col, drain, flush_sheaves, flushed) if drain else enq_snap
            if flushed:
                result["sheaf_flush"] = flushed
            kv = snap["kvfree_rcu"]
            if kv is not None:
                kv["by_stress"]["enqueued_at_stress_end"] = enq_snap["kvfree_rcu"]["by_stress"][
                    "enqueued"
                ]
            measured = {"kvfree_rcu": kv}
            result.update(measured=measured, snapshot=snap)
            # headless: the renames' kfree_rcu_mightsleep() objects (a worker may also free
            # a few kernel objects of its own with kfree_rcu(), e.g. 7.3 at cgroup set-up)
            share = "enqueued_headless" if headless else "enqueued"
            result["match"] = kv is not None and (
                kv["by_stress"][share] == expected["kvfree_rcu"]["enqueued"]
            )
            # an enqueue the kernel did not let the probe see is a counted recursion miss
            # (a preemptible kernel may preempt one worker inside the fentry program and run
            # another's call on that CPU): short by no more than those, nothing went unsaid
            gap = expected["kvfree_rcu"]["enqueued"] - kv["by_stress"][share] if kv else None
            missed = ((kv or {}).get("misses") or {}).get("enqueue", 0)
            result["accounted"] = bool(result["match"] or (gap and 0 < gap <= missed))
            if not result["match"] and result["accounted"]:
                result["short_by_recursion_misses"] = gap
            if kv is None:
                result["why_unmeasured"] = next(
                    (
                        f"{s['status']}: {s['detail']}"
                        for s in snap["probes"]
                        if s["name"] == "kvfree_call_rcu"
                    ),
                    "",
                )
        if json_out:
            _emit_json(result)
        else:
            _print_stress(result)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if run is not None:
            run.finish()  # workers close their sockets only after the final read
        if src is not None:
            src.close()
    if measure and not result.get("accounted"):
        raise typer.Exit(1)


def _drain(src, col, seconds: float, flush: bool = False, flushed: dict | None = None):  # noqa: ANN001, ANN202
    """Read until the stress workers' objects are all freed or `seconds` pass; the last read
    also counts the tracking map, so the conservation invariant is checked. `flush`: after
    half the time, if sheaf-route objects still wait, flush the rcu_free sheaves once (they
    are freed only when a sheaf fills, or on a flush) and say so in `flushed`."""
    from ..stress import sheaves

    start = time.monotonic()
    deadline = start + seconds
    while True:
        snap = col.update(src.read())
        kv = snap["kvfree_rcu"]
        if kv is None or kv["by_stress"]["pending"] <= 0 or time.monotonic() >= deadline:
            break
        if (flush and flushed is not None and not flushed
                and time.monotonic() >= start + seconds / 2
                and kv["enqueued"]["by_route"]["sheaf"]["objects"] > 0):
            flushed.update(sheaves.flush_kmalloc_sheaves())
            flushed["at_s"] = round(time.monotonic() - start, 2)
        time.sleep(0.5)
    return col.update(src.read(count_map=True))


def _print_stress(result: dict) -> None:
    from ..surfaces.text import program_lines

    exp = result["expected"]
    print(
        f"stress kvfree: {exp['calls']} setsockopt calls on {exp['sockets']} sockets "
        f"({exp['failed']} failed {exp['errors'] or ''}), workers {exp['pids']}"
    )
    if exp["sockets_with_options"]:
        print(
            f"  note: closing the sockets afterwards frees {exp['sockets_with_options']} more "
            "option blocks (through kfree_rcu on some kernels), after the measured window"
        )
    print(f"  expected   kvfree_rcu enqueued by stress: {exp['kvfree_rcu']['enqueued']}")
    if "note" in exp:
        print(f"  note: {exp['note']}")
    if fl := result.get("sheaf_flush"):
        print(f"  flushed rcu_free sheaves of {fl['caches']} kmalloc caches at +{fl['at_s']} s")
    if "measured" in result:
        kv = result["measured"]["kvfree_rcu"]
        if kv is None:
            print(f"  measured   unavailable: {result.get('why_unmeasured')}")
        else:
            print(
                f"  measured   kvfree_rcu enqueued by stress: {kv['by_stress']['enqueued']}"
                f"   (all processes: {kv['enqueued']['objects']})"
            )
            bs, lat, cons = kv["by_stress"], kv["latency"], kv["conservation"]
            print(
                f"             bytes {bs['enqueued_bytes']}, freed {bs['freed']} "
                f"({bs['freed_bytes']} bytes), pending {bs['pending']}"
            )
            print(
                f"             latency p50 <= {lat['ns']['p50']} ns, p99 <= {lat['ns']['p99']} ns"
                f" over {lat['count']} frees; fallbacks list {kv['fallback']['list']}, "
                f"inline {kv['fallback']['inline']}"
            )
            print(f"             conservation: {cons}")
            for line in program_lines(result["snapshot"].get("self_cost")):
                print(line)
            print(f"  {'MATCH' if result['match'] else 'MISMATCH'}")


@app.command(context_settings={"allow_interspersed_args": False})
def lab(
    cmd: Annotated[list[str], typer.Argument(help="command to run in the VM (after --)")],
    kernel: Annotated[
        str, typer.Option("--kernel", "-k", help="debian:X.Y, lab:NAME or a bzImage path")
    ] = "debian:6.12",
    append: Annotated[
        list[str] | None, typer.Option(help="kernel boot argument (repeatable)")
    ] = None,
    memory: Annotated[str, typer.Option(help="guest memory, e.g. 2G")] = "2G",
    cpus: Annotated[int, typer.Option(min=1, max=64)] = 2,
    rwdir: Annotated[
        list[str] | None,
        typer.Option(help="host dir the guest may write (repeatable; the rest is copy-on-write)"),
    ] = None,
) -> None:
    """Run CMD in a virtme-ng VM on a real kernel (KVM where it works, else QEMU TCG); exit
    with CMD's exit code.

    The run fails if the guest's dmesg shows WARN/BUG/RCU-stall splats."""
    from ..lab import kernels, vm

    k = kernels.resolve(kernel, progress=lambda m: print(m, file=sys.stderr))
    res = vm.run_in_vm(
        k,
        list(cmd),
        append=list(append or []),
        memory=memory,
        cpus=cpus,
        env={"RCUPENDING_LAB_SPEC": k.spec, "RCUPENDING_LAB_SOURCE": k.source},
        rwdirs=[Path(d) for d in rwdir or []],
    )
    if res.splats:
        print(
            f"rcupending: error: guest kernel splats after the command: {res.splats[0]}"
            + (f" (+{len(res.splats) - 1} more)" if len(res.splats) > 1 else ""),
            file=sys.stderr,
        )
        raise typer.Exit(res.rc or 3)
    raise typer.Exit(res.rc)


@app.command()
def compare(
    kernels: Annotated[
        str, typer.Option(help="comma-separated kernel SPECs (lab:NAME, debian:X.Y)")
    ] = "lab:6.12-stock,lab:6.12-rcupending",
    stress: Annotated[str, typer.Option(help="scenario: kvfree (IP_OPTIONS flood)")] = "kvfree",
    repeats: Annotated[int, typer.Option(min=1, max=50, help="runs per kernel and variant")] = 3,
    variants: Annotated[
        str, typer.Option(help="comma-separated: base, lazy (rcu_nocbs=all), expedited")
    ] = "base",
    count: Annotated[int, typer.Option(min=1, help="objects per flood")] = 20000,
    rcuscale_loops: Annotated[
        int, typer.Option(min=0, help="rcuscale kfree test loops per run (0: skip)")
    ] = 10,
    out: Annotated[str, typer.Option(help="directory for the table, CSVs, plots")] = (
        "build/compare"
    ),
) -> None:
    """The same scenario on two kernels, alternating A/B/A/B: one table, plots, CSVs.

    Each run boots the kernel, runs the kernel's rcuscale kfree test with no BPF attached, then
    attaches the probes and measures a kvfree_rcu flood. Exit 1 if any run failed."""
    from ..compare import runner, table

    kernel_list = runner.parse_list(kernels, "kernels")
    variant_list = runner.parse_list(variants, "variants", tuple(runner.VARIANTS))
    runner.parse_list(stress, "stress", runner.STRESSES)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    specs = runner.plan(kernel_list, variant_list, repeats)
    guest_args = ["--count", str(count), "--rcuscale-loops", str(rcuscale_loops)]
    start = time.monotonic()
    results = runner.run_all(specs, guest_args, lambda m: print(m, file=sys.stderr, flush=True))
    runs = [r.to_json() for r in results]
    (outdir / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    df = table.tidy(runs)
    df.to_csv(outdir / "compare.csv", index=False)
    summ = table.summary(df)
    summ.to_csv(outdir / "summary.csv", index=False)
    backends = {r["kernel"]: (r["result"] or {}).get("flood", {}).get("backend") for r in runs
                if r["ok"]}
    md = table.markdown(summ, kernel_list, backends, {r["accel"] for r in runs})
    rcuscale = [f"{r['kernel']} {r['variant']} #{r['repeat'] + 1}: "
                + ((r["result"] or {}).get("rcuscale") or {}).get("line", "(not run)")
                for r in runs if r["ok"]]
    md += "\nrcuscale summary lines:\n\n" + "\n".join(f"- {ln}" for ln in rcuscale) + "\n"
    retried = [f"{r['kernel']} {r['variant']} #{r['repeat'] + 1}: {f}"
               for r in runs for f in r["boot_failures"]]
    if retried:
        md += ("\nVMs that died before the run started or of a TCG int3 Oops, each run "
               "again once:\n\n"
               + "\n".join(f"- {ln}" for ln in retried) + "\n")
    (outdir / "table.md").write_text(md)
    pngs = table.plots(df, outdir, kernel_list) if not df.empty else []
    print(md)
    failed = [r for r in runs if not r["ok"]]
    print(f"{len(runs) - len(failed)}/{len(runs)} runs ok in {time.monotonic() - start:.0f} s; "
          f"wrote {outdir}/table.md, compare.csv, summary.csv, runs.json"
          + (f", {len(pngs)} plot(s)" if pngs else ""))
    for r in failed:
        print(f"failed: {r['kernel']} {r['variant']} #{r['repeat'] + 1}: {r['error']}",
              file=sys.stderr)
    if failed:
        raise typer.Exit(1)


@app.command()
def fetch(
    specs: Annotated[
        list[str] | None, typer.Argument(help="kernel SPECs to download+cache")
    ] = None,
    headers: Annotated[bool, typer.Option(help="the headers tree bcc compiles with")] = False,
) -> None:
    """Download and cache lab kernels (and bcc's headers tree) ahead of time."""
    from ..lab import kernels

    def progress(message: str) -> None:
        print(message, file=sys.stderr)

    if headers:
        print(kernels.debian_headers(progress))
    for spec in specs or []:
        k = kernels.resolve(spec, progress)
        print(f"{k.spec}\t{k.release}\t{k.image}")


@app.command("lab-build")
def lab_build(
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="variant to build (repeatable; default/all: every one)"),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=256, help="make -j")] = 3,
    recipe: Annotated[
        Path | None, typer.Option(help="recipe dir or recipe.toml (default kernel/lab-6.12)")
    ] = None,
    force: Annotated[bool, typer.Option(help="rebuild even when the recipe is unchanged")] = False,
) -> None:
    """Build the lab kernels of a recipe (Debian source + config fragment + patches, one tree,
    variants flipped incrementally) and its module into the lab cache, as lab:NAME-VARIANT.

    Skips variants already built from the same recipe hash. A fresh full build of
    kernel/lab-6.12 takes ~15 min on 2 cores (-j3); each further variant a few minutes."""
    from ..lab import build

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    names = None if not variant or "all" in variant else list(variant)
    for r in build.build(recipe, names, jobs=jobs, force=force, progress=progress):
        took = "cached" if r.cached else f"built in {r.seconds:.0f} s"
        print(f"lab:{r.label}\t{r.release}\t{r.dest}\t{took}")


surfaces.register(app)


def main() -> None:
    """Entry point: one-line errors for bad input, usage and environment."""
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=sys.argv[1:], prog_name="rcupending", standalone_mode=False)
    except UserError as e:
        print(f"rcupending: error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except click_exc.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else "", file=sys.stderr)
        sys.exit(2)
    except click_exc.UsageError as e:
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        print(f"rcupending: error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
