"""The `bench` command: list, validate, run, eval, status, table, plot, invert, check, perf,
summary, plan.

Every user error ends in one line on stderr and exit status 2; a run whose cells did not all
finish ends with status 1 after rendering what it has.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from . import records
from .errors import CheckpointError, DataError, Stopped, UsageError
from .executors import EXECUTORS
from .lease import check_environment
from .records import RESULTS_DIR, TABLES_DIR, read_records, writable_folder
from .spec import (
    SEED_LIMIT,
    SPEC_DIR,
    TIERS,
    SpecError,
    check_cells,
    get_spec,
    load_spec,
    register_plugins,
    registry,
    settings_for,
)

# torch is imported by the commands that train or build models (run, validate, check, plot,
# invert, perf), never at the top: `bench --help`, `list`, `table` and `status` stay light.


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (exit status 2 through main), like every other, and
    no abbreviations: `--fre` is an error, not `--fresh`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _at_least_1(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


MOST_THREADS = 4096  # torch takes a C int; no node has more cores than this


def _cores(text: str) -> int:
    """A count of threads or CPUs: 1 to MOST_THREADS."""
    value = _at_least_1(text)
    if value > MOST_THREADS:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {MOST_THREADS}, got {text[:30]!r}"
        )
    return value


def _gpus(text: str) -> int:
    value = int(text) if text.isdigit() else None
    if value is None or value > 64:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 64, got {text[:30]!r}")
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
    tables = "rendered tables and figures (default tables/, or RESULTS/tables with --results)"
    for flag, default, what in [
        ("--results", RESULTS_DIR, "records folder (results/)"),
        ("--tables", None, tables),
        ("--specs", SPEC_DIR, "spec folder (bench/specs/)"),
    ]:
        p.add_argument(
            flag, type=Path, default=default if defaults else argparse.SUPPRESS, help=what
        )


def _tables_folder(args) -> Path:
    """--tables, else tables/ beside the default results/, else RESULTS/tables: records of
    another results folder (a scratch run) never re-render the committed tables."""
    if args.tables is not None:
        return args.tables
    default = args.results.resolve() == RESULTS_DIR.resolve()
    return TABLES_DIR if default else args.results / "tables"


def _cells(args) -> str | None:
    """--cells as given; an empty one (`--cells ''`) is an error, not every cell."""
    if args.cells is not None and not [g for g in args.cells.split(",") if g.strip()]:
        raise UsageError(
            f"--cells {args.cells!r}: no glob given; pass glob(s) over cell ids"
            " (e.g. 'mnist-*'), or leave --cells out for every cell"
        )
    return args.cells


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description=__doc__.splitlines()[0])
    _global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="tables, their tiers and how many cells have records")
    validate = sub.add_parser("validate", help="check every spec file (no torch)")
    validate.add_argument(
        "--models",
        action="store_true",
        help="also build each cell's model on the meta device and check it"
        " against its task's contract (imports torch; seconds)",
    )

    run = sub.add_parser("run", help="train and evaluate the cells of a table, then render it")
    run.add_argument("table")
    run.add_argument("--tier", choices=TIERS, default="smoke")
    run.add_argument("--cells", help="glob(s) over cell ids, comma-separated (e.g. 'mnist-*-k50')")
    _data_dir_option(run)
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
    run.add_argument(
        "--tensorboard",
        action="store_true",
        help="each cell's curves as TensorBoard events under RESULTS/tensorboard/ (watch:"
        " tensorboard --logdir RESULTS/tensorboard); changes no record",
    )
    run.add_argument(
        "--save-weights",
        action="store_true",
        help="keep each trained model's state_dict beside its checkpoint",
    )
    run.add_argument(
        "--rehearse",
        action="store_true",
        help="each cell at the tier's exact configuration for a few steps: checkpoint, stop,"
        " resume in a fresh process, score a few images; records in a scratch folder"
        " (rehearsals/), report in tables/rehearsal-TABLE-TIER.md",
    )
    run.add_argument("--rehearse-worker", action="store_true", help=argparse.SUPPRESS)
    run.add_argument(
        "--stop-after-epochs",
        type=_at_least_1,
        metavar="N",
        help="stop as if killed once epoch N's checkpoint is written (exit status 3); the same"
        " command without it resumes",
    )
    _add_model_option(run)
    par = run.add_argument_group("parallel cells (README: 'Running on a cluster')")
    par.add_argument(
        "--jobs",
        type=_at_least_1,
        default=1,
        metavar="N",
        help="cells at once on this machine, each in its own process",
    )
    par.add_argument(
        "--threads-per-cell",
        type=_cores,
        metavar="T",
        help="torch threads of each cell (default: cores / jobs)",
    )
    par.add_argument(
        "--executor",
        choices=list(EXECUTORS),
        default="local",
        help="; ".join(f"{e.name}: {e.help}" for e in EXECUTORS.values()),
    )
    par.add_argument(
        "--slurm-config",
        type=Path,
        metavar="TOML",
        help="Slurm defaults (default $DGM_BENCH_SLURM_CONFIG or ~/.config/dgm-bench/slurm.toml)",
    )
    par.add_argument("--partition", help="Slurm partition")
    par.add_argument("--time-min", type=_at_least_1, help="Slurm time limit per cell, minutes")
    par.add_argument("--gpus-per-cell", type=_gpus, help="GPUs per cell (one task each, DDP)")
    par.add_argument("--cpus-per-cell", type=_cores, help="CPUs per cell")
    par.add_argument("--mem-gb", type=float, help="memory per cell, GB")
    par.add_argument(
        "--array-parallelism", type=_at_least_1, help="Slurm tasks of this run at once"
    )
    par.add_argument("--slurm-folder", type=Path, help="submitit's logs and job files")

    ev = sub.add_parser(
        "eval",
        help="score a trained model's weights under a table's evaluation"
        " (no training), then render the table",
    )
    ev.add_argument("table")
    ev.add_argument("--tier", choices=TIERS, default="smoke")
    ev.add_argument("--cell", required=True, help="the cell whose model and evaluation to use")
    ev.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="PATH",
        help="a `bench run --save-weights` file or a training checkpoint",
    )
    _data_dir_option(ev)
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ev.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="the run's seed: test-set preparation and sampling follow it",
    )
    ev.add_argument(
        "--force",
        action="store_true",
        help="replace the cell's ok trained record with the evaluated one",
    )
    _add_model_option(ev)

    status = sub.add_parser(
        "status", help="every cell of a table: pending, running (who, how far), ok or failed"
    )
    status.add_argument("table")
    status.add_argument("--tier", choices=TIERS, default="smoke")

    table = sub.add_parser("table", help="re-render a table from its records (no training)")
    table.add_argument("table")
    table.add_argument("--tier", choices=TIERS, default="smoke")
    table.add_argument(
        "--wide", action="store_true", help="published, measured and Δ in columns of their own"
    )
    _add_model_option(table)
    inv = sub.add_parser("invert", help="x -> forward -> inverse -> x: a PNG grid and the error")
    inv.add_argument("--model", default="irevnet_b", help="an invertible model (default irevnet_b)")
    inv.add_argument("--dataset", default="imagenet", choices=["imagenet", "cifar10"])
    inv.add_argument("--images", type=Path, help="folder of images (default: the committed sample)")
    inv.add_argument("--weights", type=Path, help="a state_dict file (default: random weights)")
    inv.add_argument("-n", type=_at_least_1, default=4, help="how many images (>= 1)")
    inv.add_argument("--out", type=Path, help="PNG path (default tables/invert-MODEL.png)")

    plot = sub.add_parser(
        "plot",
        help="draw the claim figure ([plot]), measured vs published,"
        " training curves and sample grids (PNG)",
    )
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
    _data_dir_option(check)
    check.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")

    perf = sub.add_parser(
        "perf", help="time our hot paths against their peers (pythae, MemCNN, revlib, zuko)"
    )
    perf.add_argument("--quick", action="store_true", help="one short round (CI's smoke run)")
    perf.add_argument("--only", metavar="NAME", help="one benchmark (a wrong name lists them)")
    perf.add_argument(
        "--render-only",
        action="store_true",
        help="time nothing: re-render the table and figure from the records"
        " (e.g. records copied from a clean worktree)",
    )

    sub.add_parser("summary", help="the scoreboard tables/README.md, from records (no training)")

    pl = sub.add_parser(
        "plan",
        help="what a tier's cells cost: schedule, FLOPs, seconds per step"
        " and per evaluation unit, memory, predicted wall time (calibrated here)",
    )
    pl.add_argument("table", nargs="*", help="a table (or --all); with --against-records, which")
    pl.add_argument("--all", action="store_true", help="every table that has the tier")
    pl.add_argument("--tier", choices=TIERS, default="full")
    pl.add_argument("--cells", help="glob(s) over cell ids, comma-separated")
    pl.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    pl.add_argument(
        "--threads",
        type=_at_least_1,
        metavar="T",
        help="torch threads while calibrating (a run's --threads-per-cell)",
    )
    pl.add_argument(
        "--assume-tflops",
        type=float,
        metavar="X",
        help="price compute from FLOPs at X TFLOP/s (a device not here), labelled as assumed",
    )
    pl.add_argument(
        "--shares",
        action="store_true",
        help="where the tier's time goes, per table, from the committed plans"
        " (tables/plan-shares-TIER.md); calibrates nothing",
    )
    pl.add_argument(
        "--render-only",
        action="store_true",
        help="with --against-records: re-render tables/plan-accuracy.md from the committed"
        " comparisons, calibrate nothing",
    )
    pl.add_argument(
        "--reprice",
        action="store_true",
        help="with --assume-tflops: reprice the committed CPU plan from its FLOPs, calibrate"
        " nothing",
    )
    pl.add_argument(
        "--against-records",
        action="store_true",
        help="plan each small and medium tier that has records (--tier small or medium: only"
        " that one), at their threads and data sizes, and compare with their wall and CPU"
        " times (tables/plan-accuracy.md)",
    )
    _data_dir_option(pl)

    for command in sub.choices.values():
        _global_options(command, defaults=False)
    return p


def _data_dir_option(command) -> None:
    command.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("DGM_BENCH_DATA"),
        help="where data sets live (default $DGM_BENCH_DATA); unused by the smoke tier",
    )


def _add_model_option(command) -> None:
    command.add_argument(
        "--add-model",
        action="append",
        default=[],
        metavar="NAME[=MODULE:CONSTRUCTOR]",
        help="also run/show a model from outside this repository as a row of its own, e.g."
        " mine=mypkg.flows:MyFlow, or NAME of an installed `dgm_bench.models` entry point"
        " (README: 'Your own model in a table')",
    )


def _table_spec(args):
    """The table of `args.table`, with the models of --add-model as extra rows."""
    import models

    spec = get_spec(args.table, args.specs)
    added = {}
    for item in getattr(args, "add_model", []):
        name, _, target = item.partition("=")
        if name in added:
            raise UsageError(f"--add-model {name}: given twice; give each added model once")
        if not target:
            target = models.plugins().get(name)
            if target is None:
                raise UsageError(
                    f"--add-model {name}: no installed `{models.PLUGIN_GROUP}` entry point of"
                    " that name; give NAME=package.module:Constructor"
                )
        added[name] = target
    return spec.with_models(added) if added else spec


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
            cells = {c.id for c in spec.cells(tier)}
            ok = [r for r in records.values() if r.status == "ok" and r.cell in cells]
            commits = sorted({r.commit[:8] for r in ok})
            at = f" at {', '.join(commits)}" if commits else ""
            stray = len(set(records) - cells)
            extra = f" ({stray} records of cells outside the grid, not counted)" if stray else ""
            print(f"  {tier:<6} {len(ok)}/{len(cells)} cells with results{at}{extra}")
    where = args.results.resolve()
    state = "" if where.is_dir() else " (no such folder)"
    print(f"records read from {where}{state}; --results DIR reads another folder")
    return 0


def cmd_validate(args) -> int:
    """Every spec's structure, settings and cells without torch; with --models, also each cell's
    model built on the meta device and checked against its task's contract."""
    from functools import partial

    from .tasks import TASKS, get_task
    from .tasks.settings import check_cell

    bad = 0
    for path in _specs(args).values():
        try:
            spec = load_spec(path)
            register_plugins(spec)
            task = TASKS[spec.task]
            preflight = (
                get_task(spec.task).preflight if args.models else partial(check_cell, spec.task)
            )
            for tier in spec.tiers:
                settings = settings_for(task.settings_class(), spec, tier)
                check_cells(spec, tier, preflight, settings, spec.cells(tier))
            print(f"ok: {path}")
        except (SpecError, KeyError) as e:
            print(f"error: {str(e).strip(chr(39))}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def cmd_run(args) -> int:
    from .runner import RunOptions, run_table

    spec = _table_spec(args)
    if args.rehearse and not args.rehearse_worker:
        return _rehearse(spec, args)
    if args.tier == "full" and "full" in spec.tiers and not args.rehearse_worker:
        from .plan import read_plan, totals_line

        tag = "cuda" if args.device.startswith("cuda") else "cpu"
        print(totals_line(read_plan(args.results, spec.id, "full", tag)), file=sys.stderr)
    slurm = None
    if EXECUTORS[args.executor].cluster is not None:
        from .executors.slurm import slurm_options

        slurm = slurm_options(
            args.slurm_config,
            partition=args.partition,
            time_min=args.time_min,
            gpus_per_cell=args.gpus_per_cell,
            cpus_per_cell=args.cpus_per_cell,
            mem_gb=args.mem_gb,
            array_parallelism=args.array_parallelism,
            folder=args.slurm_folder,
        )
        slurm = _sized_from_plan(spec, args, slurm)
    elif args.slurm_config or args.partition or args.gpus_per_cell:
        raise UsageError("--slurm-config, --partition, --gpus-per-cell: need --executor slurm")
    opts = RunOptions(
        tier=args.tier,
        cells=_cells(args),
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
        fresh=args.fresh,
        download=args.download,
        save_weights=args.save_weights,
        checkpoint_every=args.checkpoint_every,
        results=args.results,
        tables=args.tables,
        checkpoints=args.checkpoints,
        jobs=args.jobs,
        threads_per_cell=args.threads_per_cell,
        executor=args.executor,
        command=args.command_line,
        rehearse=args.rehearse or args.rehearse_worker,
        stop_after=args.stop_after_epochs,
        tensorboard=args.tensorboard,
        **({"slurm": slurm} if slurm else {}),
    )
    ran = run_table(spec, opts)
    records, _ = read_records(args.results, spec.id, args.tier)
    wanted = {c.id for c in spec.select(args.tier, args.cells)}
    # A cell that failed in this run is unfinished even where an older ok record was kept.
    failed = {r.cell for r in ran if r.status != "ok"}
    missing = sorted(
        c for c in wanted if c in failed or c not in records or records[c].status != "ok"
    )
    if missing:
        print(
            f"{len(missing)} of {len(wanted)} cells did not finish: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _sized_from_plan(spec, args, slurm):
    """--time-min and --mem-gb, where not given, from the tier's committed plan; and a warning
    for cells whose work between checkpoints does not fit the time limit."""
    from dataclasses import replace

    from .plan import checkpoint_warnings, read_plan, slurm_resources

    tag = "cuda" if args.device.startswith("cuda") else "cpu"
    cells = [c.id for c in spec.select(args.tier, args.cells)] if args.tier in spec.tiers else []
    record = read_plan(args.results, spec.id, args.tier, tag)
    lines, changes = [], {}
    if args.time_min is None or args.mem_gb is None:
        sized = slurm_resources(record, cells, slurm.max_time_min)
        lines += sized.lines
        if args.time_min is None and sized.time_min is not None:
            changes["time_min"] = sized.time_min
        if args.mem_gb is None and sized.mem_gb is not None:
            changes["mem_gb"] = sized.mem_gb
    slurm = replace(slurm, **changes)
    lines += checkpoint_warnings(record, cells, slurm.time_min, args.checkpoint_every)
    for line in lines:
        print(f"slurm: {line}", file=sys.stderr)
    return slurm


def _rehearse(spec, args) -> int:
    """Each selected cell rehearsed in fresh processes (bench/rehearse.py); exit 1 if any
    failed."""
    from .rehearse import SCRATCH, available_bytes, rehearse_table, write_report
    from .runner import resolve_device
    from .tasks import TASKS

    if EXECUTORS[args.executor].workers or args.jobs > 1 or args.stop_after_epochs:
        raise UsageError(
            "--rehearse runs cells one at a time here; drop --executor, --jobs and"
            " --stop-after-epochs"
        )
    if args.tier not in spec.tiers:
        raise UsageError(
            f"table '{spec.id}' has no tier '{args.tier}'; it has: {', '.join(spec.tiers)}"
        )
    device = resolve_device(args.device)
    cells = [c.id for c in spec.select(args.tier, _cells(args))]
    if not cells:
        raise UsageError(f"--cells '{args.cells}' matches no cell of {spec.id}")
    scratch = SCRATCH if args.results.resolve() == RESULTS_DIR.resolve() else args.results
    common = ["--device", args.device, "--seed", str(args.seed), "--specs", str(args.specs)]
    if args.data_dir is not None:
        common += ["--data-dir", str(args.data_dir)]
    if args.threads_per_cell is not None:
        common += ["--threads-per-cell", str(args.threads_per_cell)]
    for item in args.add_model:
        common += ["--add-model", item]
    trains = spec.task != "memory" and getattr(
        settings_for(TASKS[spec.task].settings_class(), spec, args.tier), "train", True
    )
    limit = available_bytes() if device.type == "cpu" else None  # a GPU's host side: no cap
    done = rehearse_table(spec, args.tier, cells, common, scratch, trains, limit=limit)
    tables = TABLES_DIR if args.tables == scratch / "tables" else args.tables
    reports = RESULTS_DIR if scratch == SCRATCH else scratch
    print(write_report(spec, args.tier, done, args.command_line, device, reports, tables, limit))
    return 0 if all(r.passed or not r.ran for r in done) else 1  # absent data: said, not failed


def cmd_eval(args) -> int:
    from .evaluate import EvalOptions, evaluate_cell

    spec = _table_spec(args)
    opts = EvalOptions(
        tier=args.tier,
        cell=args.cell,
        checkpoint=args.checkpoint,
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
        force=args.force,
        results=args.results,
        tables=args.tables,
        command=args.command_line,
    )
    evaluate_cell(spec, opts)
    return 0


def cmd_status(args) -> int:
    from .status import cell_states, render_status

    spec = get_spec(args.table, args.specs)
    if args.tier not in spec.tiers:
        raise UsageError(
            f"table '{spec.id}' has no tier '{args.tier}'; it has: {', '.join(spec.tiers)}"
        )
    print(render_status(spec, args.tier, cell_states(spec, args.tier, args.results)))
    return 0


def cmd_table(args) -> int:
    from .render import write_table

    spec = _table_spec(args)
    records, warnings = read_records(args.results, spec.id, args.tier)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not records and not warnings:  # e.g. a misspelt --results: keep the committed table
        print(
            f"error: no records under {args.results / spec.id / args.tier}; check --results"
            f" or run `bench run {spec.id} --tier {args.tier}`",
            file=sys.stderr,
        )
        return 2
    try:
        print(
            write_table(
                spec, args.tier, records, warnings, args.tables, args.wide, results=args.results
            )
        )
    except OSError as e:
        raise UsageError(
            f"{args.tables}: cannot write the table ({e.strerror or e});"
            " fix its permissions or pass --tables DIR"
        ) from None
    return 0


def cmd_plot(args) -> int:
    from .plot import (
        plot_curves,
        plot_gap_vs_budget,
        plot_metrics,
        plot_published_vs_measured,
        plot_samples,
    )

    spec = get_spec(args.table, args.specs)
    records, _ = read_records(args.results, spec.id, args.tier)
    if records:
        writable_folder(args.tables, "--tables")
    stem = args.tables / f"{spec.id}-{args.tier}"
    try:
        drawn = [
            plot_published_vs_measured(spec, records, stem.with_name(stem.name + "-vs-paper.png")),
            plot_curves(spec, records, stem.with_name(stem.name + "-curves.png")),
            plot_metrics(spec, records, stem.with_name(stem.name + ".png")),
            plot_samples(spec, records, stem.with_name(stem.name + "-samples.png")),
        ]
        if records:  # every tier's records: the same figure from any tier's command
            gap = args.tables / f"{spec.id}-gap-vs-budget.png"
            drawn.append(plot_gap_vs_budget(spec, args.results, gap))
    except OSError as e:
        raise UsageError(
            f"{args.tables}: cannot write a figure ({e.strerror or e}); fix its"
            " permissions or pass --tables DIR"
        ) from None
    drawn = [str(p) for p in drawn if p]
    if not drawn:
        print(
            f"error: no records to plot under {args.results / spec.id / args.tier}", file=sys.stderr
        )
        return 2
    print("\n".join(drawn))
    return 0


def cmd_invert(args) -> int:
    from .invert import check_invertible, invert

    check_invertible(args.model)
    if args.out is not None and args.out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out}: the figure is a PNG; give a path ending in .png")
    out = args.out or args.tables / f"invert-{args.model}.png"
    option = "--out PATH" if args.out else "--tables DIR"
    writable_folder(out.parent, option.split()[0])
    try:
        path, error = invert(args.model, args.dataset, out, args.images, args.weights, args.n)
    except OSError as e:
        raise UsageError(
            f"{out}: cannot write the figure ({e.strerror or e}); pass {option}"
        ) from None
    print(f"{path}: max |x - inverse(forward(x))| = {error:.2e}")
    return 0


def cmd_check(args) -> int:
    """Exit 1 when a metric moved beyond its tolerance (or a cell failed to run), else 0."""
    from .check import check_table, remove, render_report, scratch_options, temporary_work

    if args.cells is not None and args.subset:
        raise UsageError("--cells and --subset: give one (--subset is the spec's choice of cells)")
    _cells(args)
    failed = []
    if args.table:
        specs = [get_spec(t, args.specs) for t in args.table]
        for spec in specs:
            if args.tier not in spec.checks:
                raise UsageError(
                    f"table '{spec.id}' has no [check.{args.tier}] tolerances in {spec.path};"
                    " add them (README, 'Regression checks')"
                )
            if args.subset and not spec.checks[args.tier].subset:
                raise UsageError(
                    f"table '{spec.id}' has no subset in [check.{args.tier}] of"
                    f" {spec.path}; drop --subset or add one"
                )
    else:
        specs = []
        for table_id, path in _specs(args).items():
            try:
                specs.append(load_spec(path))
            except SpecError as e:  # the other tables are still checked; this one fails
                print(f"error: {e}", file=sys.stderr)
                failed.append(table_id)
        for spec in specs:
            if args.tier not in spec.checks:
                print(f"{spec.id}: no [check.{args.tier}] tolerances in its spec; not checked")
            elif args.subset and not spec.checks[args.tier].subset:
                print(f"{spec.id}: no subset in [check.{args.tier}]; not checked")
        specs = [s for s in specs if args.tier in s.checks]
        specs = [s for s in specs if s.checks[args.tier].subset or not args.subset]
        if not specs:
            what = "a subset in [check.{0}]" if args.subset else "[check.{0}] tolerances"
            raise UsageError(
                f"no table in {args.specs} has {what.format(args.tier)}: nothing to"
                " check (README, 'Regression checks')"
            )
    work = args.work or temporary_work()
    try:
        for spec in specs:
            cells = spec.checks[args.tier].subset if args.subset else args.cells
            opts = scratch_options(
                work, data_dir=args.data_dir, device=args.device, command=args.command_line
            )
            report = check_table(
                spec,
                args.tier,
                cells,
                opts,
                args.results,
                update=args.tables if args.update else None,
                log=lambda *a: print(*a, file=sys.stderr),
            )
            print(render_report(report, args.results / spec.id / args.tier))
            runs_failed = any(r.metric == "(run)" for r in report.failed)
            if report.failed and (runs_failed or not args.update):
                failed.append(spec.id)
    finally:
        if args.work is None:
            remove(work)
    if failed:
        print(f"bench check: FAIL in {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_perf(args) -> int:
    """Write results/perf/<benchmark>.json, then tables/perf.md and tables/perf.png (with
    --quick: perf-quick, which git ignores)."""
    from .perf import BENCHMARKS, run_perf
    from .perf.render import plot_perf, write_perf_table
    from .records import perf_folder, read_perf_records

    if args.only is not None and args.only not in BENCHMARKS:
        raise UsageError(f"--only {args.only}: not a benchmark; one of {', '.join(BENCHMARKS)}")
    if args.render_only and args.only is not None:
        raise UsageError("--render-only renders every record; drop --only")
    if not args.render_only:
        for path in run_perf(
            args.results, quick=args.quick, only=args.only, command=args.command_line
        ):
            print(path)
    name = perf_folder(args.quick)  # --quick: results/perf-quick/, tables/perf-quick.md
    records, warnings = read_perf_records(args.results, quick=args.quick)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not records:
        raise UsageError(
            f"{args.results / name}: no `bench perf` records to render; run `bench perf` first"
        )
    print(write_perf_table(records, args.tables, name))
    print(plot_perf(records, args.tables / f"{name}.png"))
    return 0


def cmd_plan(args) -> int:
    from .plan import (
        PlanOptions,
        plan_accuracy,
        plan_table,
        write_accuracy,
        write_plan,
        write_shares,
    )

    if args.assume_tflops is not None and not args.assume_tflops > 0:
        raise UsageError(f"--assume-tflops {args.assume_tflops}: expected a rate > 0 (TFLOP/s)")
    if args.shares:
        print(write_shares(args.results, args.tables, args.tier))
        return 0
    if args.render_only:
        if not args.against_records:
            raise UsageError("--render-only goes with --against-records")
        print(write_accuracy(args.results, args.tables))
        return 0
    if args.against_records:
        if args.all or args.cells:
            raise UsageError(
                "--against-records plans every tier with records; drop --all and"
                " --cells (name tables to plan only those)"
            )
        paths = _specs(args)
        specs = [get_spec(t, args.specs) for t in args.table] or [
            load_spec(p) for p in paths.values()
        ]
        print(
            plan_accuracy(
                specs,
                args.results,
                args.tables,
                args.data_dir,
                args.command_line,
                log=lambda line: print(line, file=sys.stderr),
                tiers=(args.tier,) if args.tier in ("small", "medium") else ("small", "medium"),
            )
        )
        return 0
    if len(args.table) > 1:
        raise UsageError("bench plan: give one table or --all")
    if bool(args.table) == args.all:
        raise UsageError("bench plan: give one table or --all")
    if args.all:
        specs = [load_spec(path) for path in _specs(args).values()]
        specs = [s for s in specs if args.tier in s.tiers]
    else:
        specs = [get_spec(args.table[0], args.specs)]
        if args.tier not in specs[0].tiers:
            raise UsageError(
                f"table '{specs[0].id}' has no tier '{args.tier}'; it has:"
                f" {', '.join(specs[0].tiers)}"
            )
    if args.reprice:
        return _reprice(specs, args)
    opts = PlanOptions(
        tier=args.tier,
        cells=_cells(args),
        device=args.device,
        threads=args.threads,
        assume_tflops=args.assume_tflops,
        data_dir=args.data_dir,
    )
    writable_folder(args.tables, "--tables")
    for spec in specs:
        record = plan_table(spec, opts, log=lambda line: print(line, file=sys.stderr))
        record["command"] = args.command_line
        for path in write_plan(record, args.results, args.tables):
            print(path)
    return 0


def _reprice(specs, args) -> int:
    from .plan import read_plan, reprice, write_plan

    if args.assume_tflops is None:
        raise UsageError("--reprice needs --assume-tflops X (the rate to price the FLOPs at)")
    writable_folder(args.tables, "--tables")
    for spec in specs:
        record = read_plan(args.results, spec.id, args.tier)
        if record is None:
            missing = (
                f"{args.results}/plans/{spec.id}/{args.tier}.cpu.json: no committed plan to"
                f" reprice; run `bench plan {spec.id} --tier {args.tier}` first"
            )
            if not args.all:
                raise UsageError(missing)
            print(f"skipped: {missing}", file=sys.stderr)
            continue
        repriced = reprice(record, args.assume_tflops, args.command_line)
        for path in write_plan(repriced, args.results, args.tables):
            print(path)
    return 0


def cmd_summary(args) -> int:
    from .summary import write_summary

    writable_folder(args.tables, "--tables")
    try:
        print(write_summary(args.results, args.specs, args.tables))
    except OSError as e:
        raise UsageError(
            f"{args.tables}: cannot write the scoreboard ({e.strerror or e}); fix"
            " its permissions or pass --tables DIR"
        ) from None
    return 0


COMMANDS = {
    "list": cmd_list,
    "validate": cmd_validate,
    "run": cmd_run,
    "eval": cmd_eval,
    "status": cmd_status,
    "table": cmd_table,
    "plot": cmd_plot,
    "invert": cmd_invert,
    "check": cmd_check,
    "perf": cmd_perf,
    "summary": cmd_summary,
    "plan": cmd_plan,
}


class Terminated(BaseException):
    """SIGTERM (a scheduler or `kill` ending the run): unwinds like Ctrl-C, releasing locks."""


def _terminate(signum, frame):
    raise Terminated


def _interrupted(args) -> str:
    """What an interrupted command can honestly promise about a rerun."""
    command = getattr(args, "command", None)
    if command == "run" and EXECUTORS[args.executor].detached:
        return (
            "interrupted: stopped waiting; the jobs keep running (`bench status` shows them,"
            " a later `bench run` collects their records)"
        )
    if command == "run" or (command == "check" and args.work is not None):
        return "interrupted; rerun the same command to resume from the last checkpoint"
    if command == "check":
        return (
            "interrupted; nothing was compared and the scratch run was removed, so a rerun"
            " starts over (--work DIR keeps a check's run to resume)"
        )
    return "interrupted"


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program: `bench list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    previous = signal.signal(signal.SIGTERM, _terminate)
    args = None
    try:
        args = _parser().parse_args(argv)
        args.command_line = records.command_line(argv)  # what records say ran them
        args.tables = _tables_folder(args)
        if args.command in ("run", "eval", "status", "check"):  # the commands that hold leases
            check_environment()
        return COMMANDS[args.command](args)
    except (SpecError, UsageError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:
        print(str(e), file=sys.stderr)
        return 3
    except (KeyboardInterrupt, Terminated) as e:
        print(_interrupted(args), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
