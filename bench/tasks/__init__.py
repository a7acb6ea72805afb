"""Tasks: how a kind of table trains and evaluates one cell.

A task is a module with a `Settings` dataclass (the keys a spec's tier may set, checked in its
`__post_init__`), `preflight(cell, settings)` (raises ValueError on a cell it cannot run, before
any training) and `run(cell, settings, ctx) -> CellResult`. A task that trains splits `run` in
two: `train(cell, settings, ctx) -> Trained`, then `score(cell, settings, ctx, trained)`, the
one evaluation path, which `bench eval` also calls on `setup(cell, settings, ctx)` (the data and
the model as training starts) given a checkpoint's weights. `TASKS` is the registry a spec's
`task = "..."` names; it imports nothing, so reading a spec needs neither torch nor the models.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, str] = {
    "likelihood": "bench.tasks.likelihood",
    "classify": "bench.tasks.classify",
    "memory": "bench.tasks.memory",
}


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name])
