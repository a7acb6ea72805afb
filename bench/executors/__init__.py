"""Where a run's cells execute: one small interface and one registry.

An executor takes the run's `cell.CellJob`s and returns their `cell.Outcome`s, calling
`cell.execute(job)` wherever a cell runs (in this process, a worker process or a Slurm task),
so a cell's numbers do not depend on where it ran. Each is a leaf module with
`run(jobs, opts, log) -> list[Outcome]`, named here with what the command line and the runner
need to know of it: its `--executor` name and help, whether its jobs outlive the command, and
which submitit cluster it submits to (its Slurm options then apply). Adding an executor is one
module and one line of EXECUTORS; nothing here imports torch, so `bench --help` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

SIGNAL_LEAD_S = 90  # submitit asks Slurm for USR2 this long before a task's time limit


@dataclass(frozen=True)
class Executor:
    name: str  # its --executor choice
    help: str
    module: str  # the leaf module whose run(jobs, opts, log) runs the cells
    workers: bool = False  # cells always run in other processes: fixed threads, no progress bar
    detached: bool = False  # its jobs go on when the command stops waiting (Ctrl-C)
    cluster: str | None = None  # submitit's cluster ("slurm", "local"): --slurm-* options apply
    accounted: bool = False  # task states come from Slurm's accounting (sacct)
    min_time_min: int = 0  # the least --time-min with which a cell can ever finish

    def run(self, jobs: list, opts: Any, log=print) -> list:
        """The cells' outcomes (cell.CellJob in, cell.Outcome out; not imported here: cell
        imports this registry)."""
        return importlib.import_module(self.module).run(jobs, opts, log)


EXECUTORS = {
    e.name: e
    for e in (
        Executor(
            "local",
            "this machine: one cell after another, or --jobs N worker processes",
            "bench.executors.local",
        ),
        Executor(
            "slurm",
            "one Slurm array task per cell (submitit)",
            "bench.executors.slurm",
            workers=True,
            detached=True,
            cluster="slurm",
            accounted=True,
            min_time_min=3,  # the USR2 comes SIGNAL_LEAD_S before the limit: 2 min never end
        ),
        Executor(
            "submitit-local",
            "submitit's local processes: the Slurm path tried without a cluster",
            "bench.executors.slurm",
            workers=True,
            detached=True,
            cluster="local",
        ),
    )
}


def get_executor(name: str) -> Executor:
    if name not in EXECUTORS:
        raise UsageError(f"--executor {name}: expected one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]
