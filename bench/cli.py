"""The `bench` command: list, validate, run, table, plot.

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
from .records import RESULTS_DIR, read_records
from .render import TABLES_DIR, write_table
from .runner import RunOptions, UsageError, run_table
from .spec import SPEC_DIR, TIERS, SpecError, get_spec, load_spec, registry, settings_for
from .tasks import get_task
from .train import CheckpointError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="records folder (results/)")
    p.add_argument("--tables", type=Path, default=TABLES_DIR, help="rendered tables (tables/)")
    p.add_argument("--specs", type=Path, default=SPEC_DIR, help="spec folder (bench/specs/)")
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
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--fresh", action="store_true", help="ignore records and checkpoints; start over"
    )
    run.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS")
    run.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    run.add_argument("--save-weights", action="store_true",
                     help="keep each trained model's state_dict beside its checkpoint")  # fmt: skip

    table = sub.add_parser("table", help="re-render a table from its records (no training)")
    table.add_argument("table")
    table.add_argument("--tier", choices=TIERS, default="smoke")
    inv = sub.add_parser("invert", help="x -> forward -> inverse -> x: a PNG grid and the error")
    inv.add_argument("--model", default="irevnet_b", help="an invertible model (default irevnet_b)")
    inv.add_argument("--dataset", default="imagenet", choices=["imagenet", "cifar10"])
    inv.add_argument("--images", type=Path, help="folder of images (default: the committed sample)")
    inv.add_argument("--weights", type=Path, help="a state_dict file (default: random weights)")
    inv.add_argument("-n", type=int, default=4, help="how many images")
    inv.add_argument("--out", type=Path, help="PNG path (default tables/invert-MODEL.png)")

    plot = sub.add_parser("plot", help="draw measured vs published and training curves (PNG)")
    plot.add_argument("table")
    plot.add_argument("--tier", choices=TIERS, default="smoke")
    return p


def cmd_list(args) -> int:
    for table_id, path in registry(args.specs).items():
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
    for path in registry(args.specs).values():
        try:
            spec = load_spec(path)
            task = get_task(spec.task)
            for tier in spec.tiers:
                settings_for(task.Settings, spec, tier)
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
    run_table(spec, opts)
    records, _ = read_records(args.results, spec.id, args.tier)
    wanted = {c.id for c in spec.select(args.tier, args.cells)}
    missing = sorted(c for c in wanted if c not in records or records[c].status != "ok")
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
    print(write_table(spec, args.tier, records, warnings, args.tables))
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_curves, plot_metrics, plot_published_vs_measured

    spec = get_spec(args.table, args.specs)
    records, _ = read_records(args.results, spec.id, args.tier)
    stem = args.tables / f"{spec.id}-{args.tier}"
    drawn = [
        plot_published_vs_measured(spec, records, stem.with_name(stem.name + "-vs-paper.png")),
        plot_curves(spec, records, stem.with_name(stem.name + "-curves.png")),
        plot_metrics(spec, records, stem.with_name(stem.name + ".png")),
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


COMMANDS = {
    "list": cmd_list,
    "validate": cmd_validate,
    "run": cmd_run,
    "table": cmd_table,
    "plot": cmd_plot,
    "invert": cmd_invert,
}


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program: `bench list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (SpecError, UsageError, datasets.DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
