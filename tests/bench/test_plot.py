"""Figures are drawn from records alone, and nothing is drawn without them."""

from __future__ import annotations

from bench.plot import plot_curves, plot_metrics, plot_published_vs_measured
from bench.records import Record
from bench.spec import get_spec

PNG = b"\x89PNG"


def record(spec, cell, metrics, history=()) -> Record:
    return Record(table=spec.id, tier="small", cell=cell.id, params=cell.as_dict(), status="ok",
                  metrics=metrics, history=list(history), device="cpu: test")  # fmt: skip


def test_measured_vs_published_and_curves(tmp_path):
    spec = get_spec("iwae-table")
    cells = spec.cells("full")[:3]
    history = [{"epoch": 1, "loss": 120.0}, {"epoch": 2, "loss": 110.0}]
    records = {c.id: record(spec, c, {"nll": 100.0 + i, "active_units": [20]}, history)
               for i, c in enumerate(cells)}  # fmt: skip
    for draw, name in ((plot_published_vs_measured, "a.png"), (plot_curves, "b.png")):
        path = draw(spec, records, tmp_path / name)
        assert path.read_bytes().startswith(PNG)
    assert plot_published_vs_measured(spec, {}, tmp_path / "none.png") is None
    assert plot_curves(spec, {}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_metrics_against_depth(tmp_path):
    spec = get_spec("revnet-memory")
    records = {c.id: record(spec, c, {"depth": 6 * c.as_dict()["units"] + 2, "saved_mib": 1.0,
                                      "step_s": 0.1})
               for c in spec.cells("small")}  # fmt: skip
    assert plot_metrics(spec, records, tmp_path / "m.png").read_bytes().startswith(PNG)
    assert plot_metrics(spec, {}, tmp_path / "none.png") is None
    assert plot_metrics(get_spec("iwae-table"), records, tmp_path / "none.png") is None
