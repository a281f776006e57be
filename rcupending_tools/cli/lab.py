"""`rcupending lab`, `fetch`, `lab-build` and `compare`: real kernels in lab VMs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .. import outputs
from ..compare import report, runner
from ..errors import UserError
from ..lab import build, kernels, modules, vm
from .common import log, terminate_as_interrupt


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
    terminate_as_interrupt()  # a killed `lab` stops its VM (own process group) before exiting
    k = kernels.resolve(kernel, progress=log)
    res = vm.run_in_vm(k, list(cmd), append=list(append or []), memory=memory, cpus=cpus,
                       rwdirs=[Path(d) for d in rwdir or []])
    if res.splats:
        print(
            f"rcupending: error: guest kernel splats after the command: {res.splats[0]}"
            + (f" (+{len(res.splats) - 1} more)" if len(res.splats) > 1 else ""),
            file=sys.stderr,
        )
        raise typer.Exit(res.rc or 3)
    raise typer.Exit(res.rc)


def compare(
    kernels_: Annotated[
        str, typer.Option("--kernels", help="comma-separated kernel SPECs (lab:NAME, debian:X.Y)")
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
    force: Annotated[bool, typer.Option(help="replace an earlier comparison in OUT")] = False,
) -> None:
    """The same scenario on two kernels, alternating A/B/A/B: one table, plots, CSVs.

    Each run boots the kernel, runs the kernel's rcuscale kfree test with no BPF attached, then
    attaches the probes and measures a kvfree_rcu flood. Exit 1 if any run failed."""
    terminate_as_interrupt()  # a killed comparison stops the VM it runs
    kernel_list = runner.parse_list(kernels_, "kernels")
    variant_list = runner.parse_list(variants, "variants", tuple(runner.VARIANTS))
    runner.parse_list(stress, "stress", runner.STRESSES)
    outdir = Path(out)
    names = report.files(variant_list)
    outputs.check_dir(outdir, names, force=force)  # before hours of VM runs, not after
    specs = runner.plan(kernel_list, variant_list, repeats)
    guest_args = ["--count", str(count), "--rcuscale-loops", str(rcuscale_loops)]
    start = time.monotonic()
    runs = [r.to_json() for r in runner.run_all(specs, guest_args, log)]
    with outputs.atomic_dir(outdir, names, force=force) as tmp:
        md, pngs = report.write(runs, kernel_list, tmp)
    print(md)
    failed = [r for r in runs if not r["ok"]]
    print(f"{len(runs) - len(failed)}/{len(runs)} runs ok in {time.monotonic() - start:.0f} s; "
          f"wrote {outdir}/table.md, compare.csv, summary.csv, runs.json"
          + (f", {len(pngs)} plot(s)" if pngs else ""))
    for r in failed:
        log(f"failed: {r['kernel']} {r['variant']} #{r['repeat'] + 1}: {r['error']}")
    if failed:
        raise typer.Exit(1)


def fetch(
    specs: Annotated[
        list[str] | None, typer.Argument(help="kernel SPECs to download+cache")
    ] = None,
    headers: Annotated[bool, typer.Option(help="the headers tree bcc compiles with")] = False,
) -> None:
    """Download and cache lab kernels (and bcc's headers tree) ahead of time."""
    if headers:
        print(kernels.debian_headers(log))
    for spec in specs or []:
        k = kernels.resolve(spec, log)
        print(f"{k.spec}\t{k.release}\t{k.image}")


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
    module_for: Annotated[
        list[str] | None,
        typer.Option("--module-for", help="also build the lab module for this Debian kernel "
                     "(debian:X.Y, repeatable; against its linux-headers package)"),
    ] = None,
) -> None:
    """Build the lab kernels of a recipe (Debian source + config fragment + patches, one tree,
    variants flipped incrementally) and its module into the lab cache, as lab:NAME-VARIANT.

    Skips variants already built from the same recipe hash. A fresh full build of
    kernel/lab-6.12 takes ~15 min on 2 cores (-j3); each further variant a few minutes."""
    names = None if not variant or "all" in variant else list(variant)
    for r in build.build(recipe, names, jobs=jobs, force=force, progress=log):
        took = "cached" if r.cached else f"built in {r.seconds:.0f} s"
        took += " (module only)" if r.module_only else ""
        print(f"lab:{r.label}\t{r.release}\t{r.dest}\t{took}")
    failed = []
    for spec in module_for or []:
        try:
            m = modules.module_for(spec, progress=log)
        except UserError as e:
            failed.append(spec)
            print(f"{spec}\tno module\t{e}")
            continue
        print(f"{spec}\t{m.release}\t{m.ko}\t" + "; ".join(m.notes))
    if failed:
        raise UserError(f"no lab module for {', '.join(failed)} (reasons above)")


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_interspersed_args": False})(lab)
    app.command()(compare)
    app.command()(fetch)
    app.command("lab-build")(lab_build)
