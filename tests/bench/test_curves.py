"""bench.curves: `bench run --tensorboard` writes each cell's curves as TensorBoard events, from
every executor, and changes no record or reuse key."""

from __future__ import annotations

import sys

import pytest

from bench.curves import folder
from bench.runner import UsageError, run_table

from .conftest import IWAE, VAE, model_metrics, options

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def quiet(line):
    pass


def _scalars(path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(path))
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def test_the_curves_are_the_history_and_the_records_are_those_of_a_run_without_them(tmp_path, tiny):
    watched = run_table(tiny, options(tmp_path / "a", tensorboard=True), log=quiet)
    plain = run_table(tiny, options(tmp_path / "b"), log=quiet)
    for a, b in zip(watched, plain, strict=True):
        assert model_metrics(a.metrics) == model_metrics(b.metrics)
        assert a.settings["_key"] == b.settings["_key"]
        assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    (vae,) = [r for r in watched if r.cell == VAE]
    curves = _scalars(folder(tmp_path / "a" / "results", "tiny", "smoke", VAE))
    assert [step for step, _ in curves["loss"]] == [1, 2]
    assert [v for _, v in curves["loss"]] == pytest.approx([h["loss"] for h in vae.history])
    assert [v for _, v in curves["lr"]] == pytest.approx([h["lr"] for h in vae.history])
    assert {"seconds", "seconds_per_step"} <= set(curves)
    assert not (tmp_path / "b" / "results" / "tensorboard").exists()


def test_worker_processes_write_their_cells_curves(tmp_path, tiny):
    run_table(tiny, options(tmp_path, jobs=2, threads_per_cell=1, tensorboard=True), log=quiet)
    for cell in (VAE, IWAE):
        assert _scalars(folder(tmp_path / "results", "tiny", "smoke", cell))["loss"]


def test_without_the_package_tensorboard_is_refused_before_any_cell_trains(
    tmp_path, tiny, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UsageError, match=r"^--tensorboard needs the tensorboard package: pip"):
        run_table(tiny, options(tmp_path, tensorboard=True), log=quiet)
    assert not (tmp_path / "results" / "tiny").exists()
