"""The `bench` command: list, validate, run, table, plot, invert, check, perf, summary.

Every user error ends in one line on stderr and exit status 2; a run whose cells did not all
finish ends with status 1 after rendering what it has.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from . import data as datasets
from . import records
from .records import RESULTS_DIR, read_records
from .render import TABLES_DIR, write_table
from .runner import SEED_LIMIT, RunOptions, UsageError, run_table
from .spec import (
    SPEC_DIR,
    TIERS,
    SpecError,
    check_cells,
    get_spec,
    load_spec,
    registry,
    settings_for,
)
from .tasks import get_task
from .train import CheckpointError


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (exit status 2 through main), like every other."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _at_least_1(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 0 to {SEED_LIMIT - 1}, got {text!r}"
        )
    return value


def _global_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """--results, --tables, --specs: before the subcommand, or after it (without defaults there,
    so that a subcommand does not reset one given before it)."""
    for flag, default, what in [("--results", RESULTS_DIR, "records folder (results/)"),
                                ("--tables", TABLES_DIR, "rendered tables (tables/)"),
                                ("--specs", SPEC_DIR, "spec folder (bench/specs/)")]:  # fmt: skip
        p.add_argument(flag, type=Path, default=default if defaults else argparse.SUPPRESS,
                       help=what)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description=__doc__.splitlines()[0])
    _global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="tables, their tiers and how many cells have records")
    sub.add_parser("validate", help="check every spec file")

    run = sub.add_parser("run", help="train and evaluate the cells of a table, then render it")
    run.add_argument("table")
    run.add_argument("--tier", choices=TIERS, default="smoke")
    run.add_argument("--cells", help="glob(s) over cell ids, comma-separated (e.g. 'mnist-*-k50')")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("DGM_BENCH_DATA"),
        help="where data sets live (default $DGM_BENCH_DATA); unused by the smoke tier",
    )
    run.add_argument(
        "--download", action="store_true", help="let torchvision download missing data"
    )
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    run.add_argument("--seed", type=_seed, default=0, help=f"0 to {SEED_LIMIT - 1}")
    run.add_argument(
        "--fresh", action="store_true", help="ignore records and checkpoints; start over"
    )
    run.add_argument("--checkpoint-every", type=_at_least_1, default=1, metavar="EPOCHS")
    run.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    run.add_argument("--save-weights", action="store_true",
                     help="keep each trained model's state_dict beside its checkpoint")  # fmt: skip

    table = sub.add_parser("table", help="re-render a table from its records (no training)")
    table.add_argument("table")
    table.add_argument("--tier", choices=TIERS, default="smoke")
    table.add_argument("--wide", action="store_true",
                       help="published, measured and Δ in columns of their own")  # fmt: skip
    inv = sub.add_parser("invert", help="x -> forward -> inverse -> x: a PNG grid and the error")
    inv.add_argument("--model", default="irevnet_b", help="an invertible model (default irevnet_b)")
    inv.add_argument("--dataset", default="imagenet", choices=["imagenet", "cifar10"])
    inv.add_argument("--images", type=Path, help="folder of images (default: the committed sample)")
    inv.add_argument("--weights", type=Path, help="a state_dict file (default: random weights)")
    inv.add_argument("-n", type=_at_least_1, default=4, help="how many images (>= 1)")
    inv.add_argument("--out", type=Path, help="PNG path (default tables/invert-MODEL.png)")

    plot = sub.add_parser("plot", help="draw the claim figure ([plot]), measured vs published,"
                          " training curves and sample grids (PNG)")  # fmt: skip
    plot.add_argument("table")
    plot.add_argument("--tier", choices=TIERS, default="smoke")

    check = sub.add_parser(
        "check", help="rerun cells and compare each metric with its committed reference record"
    )
    check.add_argument(
        "table", nargs="*", help="tables (default: every table with [check.TIER] tolerances)"
    )
    check.add_argument("--tier", choices=TIERS, default="smoke")
    check.add_argument("--cells", help="glob(s) over cell ids, comma-separated")
    check.add_argument(
        "--subset", action="store_true", help="only the spec's [check.TIER] subset (what CI runs)"
    )
    check.add_argument(
        "--update", action="store_true", help="after a deliberate change: new references"
    )
    check.add_argument(
        "--work",
        type=Path,
        help="scratch folder, kept so that a rerun of the same code reuses its records"
        " (default: a temporary one)",
    )
    check.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("DGM_BENCH_DATA"),
        help="where data sets live (default $DGM_BENCH_DATA)",
    )
    check.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")

    perf = sub.add_parser(
        "perf", help="time our hot paths against their peers (pythae, MemCNN) in one process"
    )
    perf.add_argument("--quick", action="store_true", help="one short round (CI's smoke run)")
    perf.add_argument("--only", help="one benchmark: iwae-train, iwae-nll, reversible, revnet,"
                      " pixelcnn")  # fmt: skip

    sub.add_parser("summary", help="the scoreboard tables/README.md, from records (no training)")

    for command in sub.choices.values():
        _global_options(command, defaults=False)
    return p


def _specs(args) -> dict[str, Path]:
    """The spec files of --specs; none there is an error, not an empty listing."""
    specs = registry(args.specs) if args.specs.is_dir() else {}
    if not specs:
        what = "no spec files (*.toml) in" if args.specs.is_dir() else "no such folder:"
        raise UsageError(f"--specs {args.specs}: {what} {args.specs}; pass the folder of specs")
    return specs


def cmd_list(args) -> int:
    for table_id, path in _specs(args).items():
        try:
            spec = load_spec(path)
        except SpecError as e:
            print(f"{table_id}: INVALID: {e}")
            continue
        print(f"{table_id}: {spec.title} (arXiv {spec.paper['arxiv']}, {spec.paper['table']})")
        for tier in spec.tiers:
            records, _ = read_records(args.results, table_id, tier)
            ok = [r for r in records.values() if r.status == "ok"]
            commits = sorted({r.commit[:8] for r in ok})
            at = f" at {', '.join(commits)}" if commits else ""
            print(f"  {tier:<6} {len(ok)}/{len(spec.cells(tier))} cells with results{at}")
    return 0


def cmd_validate(args) -> int:
    bad = 0
    for path in _specs(args).values():
        try:
            spec = load_spec(path)
            task = get_task(spec.task)
            for tier in spec.tiers:
                settings = settings_for(task.Settings, spec, tier)
                check_cells(spec, tier, task, settings, spec.cells(tier))
            print(f"ok: {path}")
        except (SpecError, KeyError) as e:
            print(f"error: {str(e).strip(chr(39))}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def cmd_run(args) -> int:
    spec = get_spec(args.table, args.specs)
    opts = RunOptions(
        tier=args.tier, cells=args.cells, data_dir=args.data_dir, device=args.device,
        seed=args.seed, fresh=args.fresh, download=args.download,
        save_weights=args.save_weights, checkpoint_every=args.checkpoint_every,
        results=args.results, tables=args.tables, checkpoints=args.checkpoints,
    )  # fmt: skip
    ran = run_table(spec, opts)
    records, _ = read_records(args.results, spec.id, args.tier)
    wanted = {c.id for c in spec.select(args.tier, args.cells)}
    # A cell that failed in this run is unfinished even where an older ok record was kept.
    failed = {r.cell for r in ran if r.status != "ok"}
    missing = sorted(
        c for c in wanted if c in failed or c not in records or records[c].status != "ok"
    )
    if missing:
        print(f"{len(missing)} of {len(wanted)} cells did not finish: {', '.join(missing)}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def cmd_table(args) -> int:
    spec = get_spec(args.table, args.specs)
    records, warnings = read_records(args.results, spec.id, args.tier)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not records and not warnings:  # e.g. a misspelt --results: keep the committed table
        print(f"error: no records under {args.results / spec.id / args.tier}; check --results"
              f" or run `bench run {spec.id} --tier {args.tier}`", file=sys.stderr)  # fmt: skip
        return 2
    try:
        print(write_table(spec, args.tier, records, warnings, args.tables, args.wide))
    except OSError as e:
        raise UsageError(f"{args.tables}: cannot write the table ({e.strerror or e});"
                         " fix its permissions or pass --tables DIR") from None  # fmt: skip
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_curves, plot_metrics, plot_published_vs_measured, plot_samples

    spec = get_spec(args.table, args.specs)
    records, _ = read_records(args.results, spec.id, args.tier)
    stem = args.tables / f"{spec.id}-{args.tier}"
    drawn = [
        plot_published_vs_measured(spec, records, stem.with_name(stem.name + "-vs-paper.png")),
        plot_curves(spec, records, stem.with_name(stem.name + "-curves.png")),
        plot_metrics(spec, records, stem.with_name(stem.name + ".png")),
        plot_samples(spec, records, stem.with_name(stem.name + "-samples.png")),
    ]
    drawn = [str(p) for p in drawn if p]
    if not drawn:
        print(
            f"error: no records to plot under {args.results / spec.id / args.tier}", file=sys.stderr
        )
        return 2
    print("\n".join(drawn))
    return 0


def cmd_invert(args) -> int:
    from .invert import invert

    out = args.out or args.tables / f"invert-{args.model}.png"
    path, error = invert(args.model, args.dataset, out, args.images, args.weights, args.n)
    print(f"{path}: max |x - inverse(forward(x))| = {error:.2e}")
    return 0


def cmd_check(args) -> int:
    """Exit 1 when a metric moved beyond its tolerance (or a cell failed to run), else 0."""
    from .check import check_table, remove, render_report, scratch_options, temporary_work

    if args.cells and args.subset:
        raise UsageError("--cells and --subset: give one (--subset is the spec's choice of cells)")
    if args.table:
        specs = [get_spec(t, args.specs) for t in args.table]
        for spec in specs:
            if args.tier not in spec.checks:
                raise UsageError(
                    f"table '{spec.id}' has no [check.{args.tier}] tolerances in {spec.path};"
                    " add them (README, 'Regression checks')"
                )
    else:
        specs = [load_spec(p) for p in _specs(args).values()]
        for spec in specs:
            if args.tier not in spec.checks:
                print(f"{spec.id}: no [check.{args.tier}] tolerances in its spec; not checked")
        specs = [s for s in specs if args.tier in s.checks]
    work = args.work or temporary_work()
    failed = []
    try:
        for spec in specs:
            cells = spec.checks[args.tier].subset if args.subset else args.cells
            if args.subset and not cells:
                print(f"{spec.id}: no subset in [check.{args.tier}]; not checked")
                continue
            opts = scratch_options(work, data_dir=args.data_dir, device=args.device)
            report = check_table(spec, args.tier, cells, opts, args.results,
                                 update=args.tables if args.update else None,
                                 log=lambda *a: print(*a, file=sys.stderr))  # fmt: skip
            print(render_report(report, args.results / spec.id / args.tier))
            runs_failed = any(r.metric == "(run)" for r in report.failed)
            if report.failed and (runs_failed or not args.update):
                failed.append(spec.id)
    finally:
        if args.work is None:
            remove(work)
    if failed:
        print(f"bench check: regressions in {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_perf(args) -> int:
    """Write results/perf/<benchmark>.json, then tables/perf.md and tables/perf.png (with
    --quick: perf-quick, which git ignores)."""
    from .perf import BENCHMARKS, folder, read_perf_records, run_perf
    from .perf.render import plot_perf, write_perf_table

    if args.only is not None and args.only not in BENCHMARKS:
        raise UsageError(f"--only {args.only}: not a benchmark; one of {', '.join(BENCHMARKS)}")
    for path in run_perf(args.results, quick=args.quick, only=args.only):
        print(path)
    name = folder(args.quick)  # --quick: results/perf-quick/, tables/perf-quick.md
    records = read_perf_records(args.results, quick=args.quick)
    print(write_perf_table(records, args.tables, name))
    print(plot_perf(records, args.tables / f"{name}.png"))
    return 0


def cmd_summary(args) -> int:
    from .summary import write_summary

    print(write_summary(args.results, args.specs, args.tables))
    return 0


COMMANDS = {
    "list": cmd_list,
    "validate": cmd_validate,
    "run": cmd_run,
    "table": cmd_table,
    "plot": cmd_plot,
    "invert": cmd_invert,
    "check": cmd_check,
    "perf": cmd_perf,
    "summary": cmd_summary,
}


class Terminated(BaseException):
    """SIGTERM (a scheduler or `kill` ending the run): unwinds like Ctrl-C, releasing locks."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program: `bench list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    previous = signal.signal(signal.SIGTERM, _terminate)
    records.COMMAND = None if argv is None else ["bench", *argv]
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (SpecError, UsageError, datasets.DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        print("interrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)  # fmt: skip
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        records.COMMAND = None


if __name__ == "__main__":
    sys.exit(main())
