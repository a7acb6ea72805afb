"""Tasks: how a kind of table trains and evaluates one cell, and what it declares.

A task is a module with a `Settings` dataclass (the keys a spec's tier may set, checked in its
`__post_init__`), `preflight(cell, settings)` (raises ValueError on a cell it cannot run, before
any training) and `run(cell, settings, ctx) -> CellResult`. A task that trains splits `run` in
two: `train(cell, settings, ctx) -> Trained`, then `score(cell, settings, ctx, trained)`, the
one evaluation path, which `bench eval` also calls on `setup(cell, settings, ctx)` (the data and
the model as training starts) given a checkpoint's weights. `TASKS` is the registry a spec's
`task = "..."` names, with what each task declares: the contract its models meet
(bench/contracts.py), the metrics it reports (so a spec's misspelt metric fails `bench validate`,
and claims find a metric's standard error and per-image values by declaration, not by name) and
the project files its numbers read besides the modules it imports (hashed into reuse keys). It
imports no task, so reading a spec needs neither torch nor the models.
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass, field
from types import ModuleType


@dataclass(frozen=True)
class Measure:
    """A metric a task reports."""

    unit: str = ""
    better: str = ""  # "lower", "higher" or "": no preferred direction
    stderr: str | None = None  # the metric holding its standard error, where one exists
    per_item: str | None = None  # the metric holding its value per test image (paired claims)


@dataclass(frozen=True)
class Task:
    module: str
    settings: str  # its Settings class in bench.tasks.settings (no torch there)
    contract: str  # a key of bench.contracts.CONTRACTS
    fields: tuple[str, ...]  # the cell fields the task reads itself; a spec's `model_arguments`
    # name the other grid axes, which go to the model's constructor
    metrics: dict[str, Measure]  # a name may be a glob, e.g. "kl*" for one term per level
    # Project files and folders a cell's numbers depend on that the task's module does not import
    # by name (data loaders resolved at run time), hashed into the reuse key with its imports.
    inputs: tuple[str, ...] = field(default=())

    def settings_class(self) -> type:
        from . import settings

        return getattr(settings, self.settings)

    def measure(self, metric: str) -> Measure | None:
        if metric in self.metrics:
            return self.metrics[metric]
        return next((m for n, m in self.metrics.items() if fnmatch.fnmatchcase(metric, n)), None)


_MEMORY = {
    "params": Measure("M"),
    "saved_mib": Measure("MiB", "lower"),
    "peak_mib": Measure("MiB", "lower"),
    "step_s": Measure("s", "lower"),
}
TASKS: dict[str, Task] = {
    "likelihood": Task(
        "bench.tasks.likelihood",
        "LikelihoodSettings",
        "density",
        ("dataset", "model"),
        {
            "nll": Measure("nats", "lower", stderr="nll_stderr", per_item="nll_per_image"),
            "nll_stderr": Measure("nats"),
            "nll_per_image": Measure("nats"),
            "nll_k": Measure(),
            "bits_per_dim": Measure("bits/dim", "lower", stderr="bpd_stderr"),
            "bpd_stderr": Measure("bits/dim"),
            "loglik_continuous": Measure("nats", "higher"),
            "active_units": Measure("units", "higher"),
            "rec": Measure("nats", "lower"),
            "kl*": Measure("nats"),
            "params": Measure(),  # a count, not millions: the likelihood papers print it whole
            "saved_mib": Measure("MiB", "lower"),
            "peak_mib": Measure("MiB", "lower"),
            "images_per_s": Measure("images/s", "higher"),
            "sample_s": Measure("s", "lower"),
            "sample_s_naive": Measure("s", "lower"),
        },
        inputs=("bench/data",),
    ),
    "classify": Task(
        "bench.tasks.classify",
        "ClassifySettings",
        "classifier",
        ("dataset", "model"),
        {"error": Measure("%", "lower"), "recon_error": Measure("", "lower"), **_MEMORY},
        inputs=("bench/data",),
    ),
    "memory": Task(
        "bench.tasks.memory",
        "MemorySettings",
        "classifier",
        ("model",),
        {
            **_MEMORY,
            "depth": Measure(),
            "floor_mib": Measure("MiB", "lower"),
            "above_floor": Measure("x", "lower"),
            "grad_error": Measure("", "lower"),
            "grad_error_f64": Measure("", "lower"),
            "plain_grad_error_f64": Measure("", "lower"),
            "drift": Measure("", "lower"),
            "forward_share": Measure(),
            "step_rel": Measure("x", "lower"),
        },
    ),
}


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name].module)
