"""The full tier's "reproduced" verdict: a spec's `[reproduce]` tolerances are validated with
one-line errors, a full-tier cell within its band reads reproduced and one beyond it not
reproduced, CPU tiers and cells without a record or a tolerance get no verdict, the table states
each band with its source, and the scoreboard counts the verdicts."""

from __future__ import annotations

import pytest

from bench.records import Record, write_record
from bench.render import render, reproduced
from bench.spec import SpecError, Tolerance, get_spec, load_spec, registry
from bench.summary import render_summary

from .conftest import IWAE, VAE, write_spec
from .test_render import markdown_rows

FULL = "\n[tiers.full]\nstages = 1\nepochs_per_stage = [1]\nbatch_size = 16\nnll_k = 4\n"
BAND = 'nll = { abs = 0.5, source = "repo/x README, Table 1", reason = "how close it came" }\n'
COLUMN = {VAE: "vae NLL (nats)", IWAE: "iwae NLL (nats)"}


def tiny_spec(folder, reproduce: str = BAND, full: str = FULL):
    """The shrunk IWAE spec (published NLL 86.76 for both cells) with a full tier and `reproduce`
    as its [reproduce] section."""
    path = write_spec(folder)
    section = f"\n[reproduce]\n{reproduce}" if reproduce else ""
    path.write_text(path.read_text() + full + section)
    return path


def record(cell: str, tier: str = "full", status: str = "ok", **metrics) -> Record:
    return Record(
        table="tiny",
        tier=tier,
        cell=cell,
        params={},
        status=status,
        metrics=metrics,
        command="bench run tiny",
        commit="0123456789abcdef",
        device="cpu: test",
        seed=0,
        started="2026-12-05T10:00:00+00:00",
    )


def row(text: str) -> dict[str, str]:
    (only,) = markdown_rows(text)  # one row: mnist, 1 layer, k = 1
    return only


def test_within_the_band_is_reproduced_and_beyond_it_is_not(tmp_path):
    spec = load_spec(tiny_spec(tmp_path))
    records = {VAE: record(VAE, nll=87.1), IWAE: record(IWAE, nll=87.4)}  # Δ +0.34 and +0.64
    cells = {c.id: c for c in spec.cells("full")}
    nll = next(m for m in spec.metrics if m.name == "nll")
    assert reproduced(spec, "full", records, cells[VAE], nll)[0] is True
    assert reproduced(spec, "full", records, cells[IWAE], nll)[0] is False
    cell = row(render(spec, "full", records, []))
    assert cell[COLUMN[VAE]] == "87.10 (86.76, +0.34, reproduced)"
    assert cell[COLUMN[IWAE]] == "87.40 (86.76, +0.64, not reproduced: Δ beyond ± 0.5)"
    wide = row(render(spec, "full", records, [], wide=True))
    assert (wide["vae NLL (nats) verdict"], wide["iwae NLL (nats) verdict"]) == (
        "reproduced",
        "not reproduced: Δ beyond ± 0.5",
    )


def test_the_band_holds_at_its_edge_despite_float_noise():
    # 26.70 - 25.40 is 1.2999999999999972 in floats, 25.40 + 1.3 is 26.7 exactly: both at the edge.
    edge = Tolerance("error", source="s", reason="r", abs_tol=1.3)
    assert edge.holds(25.40, 26.70) and edge.holds(25.40, 24.10)
    assert not edge.holds(25.40, 26.71) and not edge.holds(25.40, 24.09)
    relative = Tolerance("loglik", source="s", reason="r", rel=0.01)
    assert relative.holds(-200.0, -201.9) and not relative.holds(-200.0, -202.1)
    assert (edge.text, relative.text) == ("± 1.3", "± 1%")
    both = Tolerance("x", source="s", reason="r", abs_tol=0.5, rel=0.01)
    assert both.band(100.0) == pytest.approx(1.5) and both.text == "± (0.5 + 1%)"


def test_a_cpu_tier_keeps_its_delta_and_gets_no_verdict(tmp_path):
    with_band = load_spec(tiny_spec(tmp_path / "a"))
    without = load_spec(tiny_spec(tmp_path / "b", reproduce=""))
    records = {c: record(c, tier="smoke", nll=90.0) for c in (VAE, IWAE)}
    nll = next(m for m in with_band.metrics if m.name == "nll")
    for cell in with_band.cells("smoke"):
        assert reproduced(with_band, "smoke", records, cell, nll) is None
    for wide in (False, True):
        text = render(with_band, "smoke", records, [], wide=wide)
        assert "reproduced" not in text
        assert text == render(without, "smoke", records, [], wide=wide)  # byte for byte
    assert row(render(with_band, "smoke", records, []))[COLUMN[VAE]] == "90.00 (86.76, +3.24)"


def test_a_cell_without_a_record_says_not_run_and_a_metric_without_a_band_has_no_verdict(
    tmp_path,
):
    spec = load_spec(tiny_spec(tmp_path))
    records = {VAE: record(VAE, nll=86.8, active_units=[40])}  # IWAE not run; units far off
    cell = row(render(spec, "full", records, []))
    assert cell[COLUMN[IWAE]] == "not run; published 86.76"
    assert cell["vae active units"] == "40 (19, +21)"  # no [reproduce] band for active units
    wide = row(render(spec, "full", records, [], wide=True))
    assert wide["iwae NLL (nats) verdict"] == "—"
    assert not any(name.startswith("vae active units verdict") for name in wide)
    failed = {VAE: record(VAE, status="failed")}
    assert row(render(spec, "full", failed, []))[COLUMN[VAE]] == "failed; published 86.76"


def test_the_full_table_states_each_band_and_its_source(tmp_path):
    spec = load_spec(tiny_spec(tmp_path))
    text = render(spec, "full", {VAE: record(VAE, nll=87.0)}, [])
    footer = text.split("## When a published number counts as reproduced (tier `full`)")[1]
    assert "- NLL (nats): ± 0.5. how close it came Source: repo/x README, Table 1." in footer
    assert "the tolerances and their sources are listed below" in text


def test_seeds_are_pooled_into_their_mean_before_the_verdict(tmp_path):
    seeds = 'grid = { dataset = ["mnist"], layers = [1], k = [1], model = ["vae"], seed = [0, 1] }'
    spec = load_spec(tiny_spec(tmp_path, full=f"{FULL}{seeds}\n"))
    runs = [(f"{VAE}-seed0", 86.0), (f"{VAE}-seed1", 88.0)]
    records = {cell: record(cell, nll=v) for cell, v in runs}
    # Each seed alone is 0.76 and 1.24 away; their mean, 87.0, is 0.24 away.
    assert "87.00 ± 1.41 (sd, 2 seeds) (86.76, +0.24, reproduced)" in render(
        spec, "full", records, []
    )


@pytest.mark.parametrize(
    "reproduce, field, problem",
    [
        ('bogus = { abs = 1, source = "s", reason = "r" }\n', "reproduce.bogus", "not a metric"),
        ('nll = { abs = 1, reason = "r" }\n', "reproduce.nll.source", "missing"),
        ('nll = { abs = 1, source = " ", reason = "r" }\n', "reproduce.nll.source", "missing"),
        ('nll = { abs = 1, source = "s" }\n', "reproduce.nll.reason", "missing"),
        ('nll = { abs = 0, source = "s", reason = "r" }\n', "reproduce.nll.abs", "> 0"),
        ('nll = { rel = -0.1, source = "s", reason = "r" }\n', "reproduce.nll.rel", "> 0"),
        ('nll = { abs = true, source = "s", reason = "r" }\n', "reproduce.nll.abs", "> 0"),
        ('nll = { source = "s", reason = "r" }\n', "reproduce.nll", "no tolerance given"),
        ('nll = { tol = 1, source = "s", reason = "r" }\n', "reproduce.nll.tol", "unknown field"),
        ("nll = 0.5\n", "reproduce.nll", "expected { abs and/or rel"),
        ("nll = []\n", "reproduce.nll", "an empty list"),
        (
            'nll = [{ abs = 1, source = "s", reason = "r", where = { model = "gan" } }]\n',
            "reproduce.nll[0].where.model",
            "not in grid.model",
        ),
        (
            'params = { abs = 1, source = "s", reason = "r" }\n',
            "reproduce.params",
            "no published entry gives params",
        ),
    ],
)
def test_a_malformed_reproduce_section_is_one_line_naming_its_field(
    tmp_path, reproduce, field, problem
):
    path = tiny_spec(tmp_path, reproduce=reproduce)
    path.write_text(
        path.read_text().replace(
            "[grid]", '[metrics.params]\nlabel = "params"\nunit = "M"\n\n[grid]'
        )
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: {field}: "), message
    assert problem in message


def test_reproduce_needs_a_full_tier(tmp_path):
    with pytest.raises(SpecError, match=r"reproduce: the verdict is for tier `full`"):
        load_spec(tiny_spec(tmp_path, full=""))


def test_a_band_per_data_set_applies_to_its_cells_only():
    spec = get_spec("revnet-cifar")
    cells = {c.id: c for c in spec.cells("full")}
    assert spec.tolerance_for(cells["resnet32-cifar10"], "error").abs_tol == 0.75
    assert spec.tolerance_for(cells["resnet32-cifar100"], "error").abs_tol == 1.3
    assert spec.tolerance_for(cells["resnet32-cifar10"], "saved_mib") is None


def test_every_shipped_band_cites_a_source_and_covers_a_full_tier():
    judged = [spec for spec in map(get_spec, registry()) if spec.reproduce]
    assert {s.id for s in judged} >= {"iwae-table", "revnet-cifar", "pixelcnn-cifar10"}
    for spec in judged:
        assert "full" in spec.tiers
        for t in spec.reproduce:
            assert len(t.source) > 40 and len(t.reason) > 20, (spec.id, t.metric)


def test_the_scoreboard_counts_the_full_tiers_verdicts(tmp_path):
    specs, results, tables = tmp_path / "specs", tmp_path / "results", tmp_path / "tables"
    tiny_spec(specs)
    write_record(results, record(VAE, nll=86.9))  # Δ +0.14: reproduced
    write_record(results, record(VAE, tier="smoke", nll=86.9))  # a CPU tier: never counted
    rows = {r["tier"]: r for r in markdown_rows(render_summary(results, specs, tables))}
    column = "full tier: reproduced / not reproduced"
    assert rows["full"][column] == "1 / 0 (1 not run)"
    assert rows["smoke"][column] == rows["small"][column] == "—"
    write_record(results, record(IWAE, nll=88.0))  # Δ +1.24: not reproduced
    rows = {r["tier"]: r for r in markdown_rows(render_summary(results, specs, tables))}
    assert rows["full"][column] == "1 / 1"
    (results / "tiny" / "full" / f"{VAE}.json").unlink()
    (results / "tiny" / "full" / f"{IWAE}.json").unlink()
    rows = {r["tier"]: r for r in markdown_rows(render_summary(results, specs, tables))}
    assert rows["full"][column] == "not run (2)"
