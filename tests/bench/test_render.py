"""bench.render: published numbers always shown, measured columns only from records ("not run"
otherwise), deltas for numbers and for active units "a+b", failed and skipped cells say so."""

from __future__ import annotations

import itertools
import re
import tomllib

import pytest

from bench.records import Record
from bench.render import (
    compact_text,
    fmt_delta,
    fmt_value,
    measured_text,
    parse_units,
    pooled_text,
    render,
    write_table,
)
from bench.spec import Metric, get_spec

NLL = Metric("nll", "NLL", unit="nats", format=".2f", better="lower")
UNITS = Metric("active_units", "active units", kind="units")


@pytest.fixture(scope="module")
def iwae():
    return get_spec("iwae-table")


def markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `text`, as {header: cell text}."""
    lines = list(
        itertools.takewhile(
            lambda line: line.startswith("|"),
            itertools.dropwhile(lambda line: not line.startswith("|"), text.splitlines()),
        )
    )
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = split[0], split[2:]
    return [dict(zip(header, row)) for row in body]


def find_row(rows, dataset, layers, k):
    (row,) = [
        r for r in rows if (r["dataset"], r["layers"], r["k"]) == (dataset, str(layers), str(k))
    ]
    return row


def ok_record(cell: str, **metrics) -> Record:
    return Record(
        table="iwae-table",
        tier="smoke",
        cell=cell,
        params={},
        status="ok",
        metrics=metrics,
        command="bench run iwae-table",
        commit="0123456789abcdef",
        device="cpu: test",
        seed=0,
    )


def test_every_published_number_is_rendered_without_records(iwae):
    text = render(iwae, "smoke", {}, [], wide=True)
    rows = markdown_rows(text)
    assert len(rows) == 12  # dataset x layers x k
    published = tomllib.loads(iwae.path.read_text())["published"]
    assert len(published) == 24
    for entry in published:
        row = find_row(rows, entry["dataset"], entry["layers"], entry["k"])
        model = entry["model"]
        assert row[f"{model} NLL (nats) published"] == f"{entry['nll']:.2f}", entry
        assert row[f"{model} active units published"] == entry["active_units"], entry
    assert "82.90" in text and "44+7" in text
    assert "No cell of this tier has been run yet" in text


def test_without_records_every_measured_column_says_not_run(iwae):
    rows = markdown_rows(render(iwae, "smoke", {}, [], wide=True))
    for row in rows:
        for name, value in row.items():
            if name.endswith("measured"):
                assert value == "not run"
                assert not re.search(r"\d", value)
            if name.endswith("Δ"):
                assert value == "—"


def test_a_record_fills_only_its_own_cell(iwae):
    records = {
        "mnist-layers2-k50-iwae": ok_record(
            "mnist-layers2-k50-iwae", nll=85.0, active_units=[30, 6]
        )
    }
    text = render(iwae, "smoke", records, [], wide=True)
    rows = markdown_rows(text)
    row = find_row(rows, "mnist", 2, 50)
    assert row["iwae NLL (nats) measured"] == "85.00"
    assert row["iwae NLL (nats) Δ"] == "+2.10 (worse)"  # 85.00 - 82.90; lower is better
    assert row["iwae active units measured"] == "30+6"
    assert row["iwae active units Δ"] == "+4/-1"  # 30+6 vs 26+7
    assert row["vae NLL (nats) measured"] == "not run"
    measured = [v for r in rows for n, v in r.items() if n.endswith("measured")]
    assert measured.count("not run") == len(measured) - 2
    assert "No cell of this tier has been run yet" not in text
    assert "- command: bench run iwae-table" in text
    assert "- commit: 0123456789ab" in text


def test_deltas_of_numbers():
    assert fmt_delta(NLL, 86.76, 90.0) == "+3.24 (worse)"  # NLL: lower is better
    assert fmt_delta(NLL, 86.76, 80.0) == "-6.76 (better)"
    assert fmt_delta(NLL, 86.76, 86.76) == "+0.00"
    assert fmt_delta(NLL, 86.76, 86.761) == "+0.00"  # no direction for what rounds to zero
    assert fmt_delta(NLL, None, 80.0) == "—"
    assert fmt_delta(NLL, 86.76, None) == "—"
    assert fmt_delta(Metric("p", "p", format=".3f"), 0.46, 0.4701) == "+0.010"


def test_deltas_of_active_units():
    assert fmt_delta(UNITS, "16+5", [20, 3]) == "+4/-2"
    assert fmt_delta(UNITS, "19", [19]) == "+0"
    assert fmt_delta(UNITS, "25", [50]) == "+25"
    assert fmt_delta(UNITS, "16+5", "17+5") == "+1/+0"
    assert fmt_delta(UNITS, "16+5", [20]) == "—"  # one layer against two: no delta


def test_values_are_formatted_by_their_metric():
    assert parse_units("26+7") == [26, 7]
    assert parse_units([50]) == [50]
    assert parse_units(19) == [19]
    assert fmt_value(UNITS, [26, 7]) == "26+7"
    assert fmt_value(NLL, 82.9) == "82.90"
    assert fmt_value(NLL, None) == "—"


def test_failed_and_skipped_records(iwae):
    reason = "loss became NaN/inf at epoch 1, step 2 (last finite loss 543.2)"
    records = {
        "mnist-layers1-k1-vae": Record(
            table="iwae-table",
            tier="smoke",
            cell="mnist-layers1-k1-vae",
            params={},
            status="failed",
            reason=reason,
            metrics={"nll": 1.0},
        ),
        "omniglot-layers1-k1-vae": Record(
            table="iwae-table",
            tier="smoke",
            cell="omniglot-layers1-k1-vae",
            params={},
            status="skipped",
            reason="Omniglot not found in /x",
        ),
    }
    text = render(iwae, "smoke", records, ["/r/bad.json: unreadable record"], wide=True)
    rows = markdown_rows(text)
    failed = find_row(rows, "mnist", 1, 1)
    assert failed["vae NLL (nats) measured"] == "failed"  # never the number the record holds
    assert failed["vae NLL (nats) Δ"] == "—"
    assert failed["vae active units measured"] == "failed"
    skipped = find_row(rows, "omniglot", 1, 1)
    assert skipped["vae NLL (nats) measured"] == "not run (data absent)"
    assert f"- `mnist-layers1-k1-vae`: failed: {reason}" in text
    assert "- `omniglot-layers1-k1-vae`: skipped: Omniglot not found in /x" in text
    assert "- /r/bad.json: unreadable record" in text
    assert "- data: none (failed) (1 cells); none (skipped) (1 cells)" in text


def test_write_table_names_the_file_by_table_and_tier(iwae, tmp_path):
    path = write_table(iwae, "small", {}, [], tmp_path / "tables")
    assert path == tmp_path / "tables" / "iwae-table-small.md"
    assert path.read_text().startswith("# VAE vs IWAE: test NLL and active units — tier `small`")


def test_a_tier_grid_adds_its_cells_to_the_papers(tmp_path):
    spec = get_spec("revnet-cifar")
    rows = markdown_rows(render(spec, "smoke", {}, [], wide=True))
    assert [r["model"] for r in rows] == [c.as_dict()["model"] for c in spec.cells("smoke")]
    row = rows[0]
    assert row["cifar10 error (%) published"] == "7.14"
    assert row["cifar100 error (%) published"] == "29.95"
    assert row["cifar10 params (M) published"] == "0.460"
    assert row["cifar100 params (M) published"] == "—"  # the paper gives none
    # Every column that is not a grid field, a published number or a delta is measured.
    for row in rows:
        for name, value in row.items():
            if name != "model" and not name.endswith(("published", "Δ")):
                assert value == "not run", name


def test_a_skipped_record_says_whether_its_data_was_absent_or_corrupt():
    nll = Metric(name="nll", label="NLL", format=".2f")
    skipped = Record(table="t", tier="small", cell="c", params={}, status="skipped")
    assert measured_text(nll, skipped) == "not run (data absent)"  # records made before `detail`
    skipped.detail = "data corrupt"
    assert measured_text(nll, skipped) == "not run (data corrupt)"


def test_the_compact_layout_puts_measured_published_and_delta_in_one_cell(iwae):
    records = {
        "mnist-layers2-k50-iwae": ok_record(
            "mnist-layers2-k50-iwae", nll=85.0, active_units=[30, 6]
        )
    }
    text = render(iwae, "smoke", records, [])
    rows = markdown_rows(text)
    header = list(rows[0])
    # Twins side by side: VAE then IWAE for each metric.
    assert header == [
        "dataset",
        "layers",
        "k",
        "vae NLL (nats)",
        "iwae NLL (nats)",
        "vae active units",
        "iwae active units",
    ]
    row = find_row(rows, "mnist", 2, 50)
    assert row["iwae NLL (nats)"] == "85.00 (82.90, +2.10)"
    assert row["iwae active units"] == "30+6 (26+7, +4/-1)"
    assert row["vae NLL (nats)"] == "not run; published 84.78"
    assert "measured (published, Δ)" in text and "lower is better for NLL (nats)" in text
    assert "--wide" in text


def test_compact_cells():
    assert compact_text(NLL, 86.76, 90.0, "90.00") == "90.00 (86.76, +3.24)"
    assert compact_text(NLL, None, 90.0, "90.00") == "90.00"  # the paper gives no number
    assert compact_text(NLL, 86.76, None, "failed") == "failed; published 86.76"
    text = "not run (data absent)"
    assert compact_text(NLL, 86.76, None, text) == "not run (data absent); published 86.76"
    assert compact_text(UNITS, "16+5", [20, 3], "20+3") == "20+3 (16+5, +4/-2)"


def test_both_layouts_hold_every_published_number(iwae):
    for wide in (False, True):
        text = render(iwae, "smoke", {}, [], wide=wide)
        for _, values in iwae.published:
            assert f"{values['nll']:.2f}" in text and values["active_units"] in text


def test_seed_replicates_pool_into_one_cell():
    metric = Metric("error", "error", unit="%", format=".2f")
    seeds = [
        Record(
            table="t",
            tier="medium",
            cell=f"m-seed{s}",
            params={"model": "m", "seed": s},
            status="ok",
            metrics={"error": e, "params": 0.46, "active_units": u},
        )
        for s, (e, u) in enumerate([(30.0, [5, 2]), (32.0, [5, 3])])
    ]
    assert pooled_text(metric, seeds) == (31.0, "31.00 ± 1.41 (sd, 2 seeds)")
    count = Metric("params", "params", unit="M", format=".3f")
    assert pooled_text(count, seeds) == (0.46, "0.460")  # the same in every seed: no spread
    assert pooled_text(UNITS, seeds) == (None, "5+2 / 5+3 (2 seeds)")
    assert pooled_text(UNITS, seeds[:1] * 2) == ([5, 2], "5+2")


def test_a_repeated_cell_pools_its_ok_seeds_and_says_how_many():
    spec = get_spec("revnet-cifar")
    seeds = {
        f"resnet32-cifar10-seed{s}": Record(
            table="revnet-cifar",
            tier="medium",
            cell=f"resnet32-cifar10-seed{s}",
            params={"model": "resnet32", "dataset": "cifar10", "seed": s},
            status=status,
            metrics={"error": 31.0, "params": 0.46} if status == "ok" else {},
        )
        for s, status in ((0, "ok"), (1, "failed"))
    }
    text = render(spec, "medium", seeds, [])
    row = next(r for r in markdown_rows(text) if r["model"] == "resnet32")
    n = len(spec.tiers["medium"].grid["seed"])
    assert row["cifar10 error (%)"].startswith(f"31.00 (1 of {n} seeds) (7.14,")
    seeds["resnet32-cifar10-seed0"].status = "failed"
    row = next(
        r for r in markdown_rows(render(spec, "medium", seeds, [])) if r["model"] == "resnet32"
    )
    assert row["cifar10 error (%)"].startswith("failed")


def test_a_derived_published_value_is_marked_and_its_formula_printed():
    """NICE's MNIST bits/dim is not printed in the paper: its cell reads "4.356 derived", and a
    section gives the formula with the published number it comes from; the small tier's
    departures are listed under their own heading, the full tier's under its own."""
    nice = get_spec("nice")
    mnist = "nice-mnist-data-s_lr10"
    metrics = {"bits_per_dim": 5.25, "loglik_continuous": 1530.0}
    record = Record(table="nice", tier="small", cell=mnist, params={}, status="ok", metrics=metrics)
    text = render(nice, "small", {mnist: record}, [])
    (row,) = [
        r
        for r in markdown_rows(text)
        if (r["dataset"], r["init"]) == ("mnist", "data") and r["s_lr"] == "10"
    ]
    assert row["bits/dim (8-bit)"] == "5.250 (4.356 derived, +0.894)"
    assert row["log-likelihood (nats, rescaled)"] == "1530.00 (1980.50, -450.50)"
    derivation = (
        "- bits/dim (8-bit), model = nice, dataset = mnist: 4.356 derived = 8 - loglik"
        " / (D ln 2) with loglik_continuous = 1980.50 (published) and D = 784"
    )
    assert derivation in text
    small = text.split("## How tier `small` departs from the paper")[1]
    assert "init = data rows" in small and "s_lr = 10 rows" in small
    wide = render(nice, "full", {}, [], wide=True)
    assert "4.356 (derived)" in wide and "## How tier `full` departs from the paper" in wide
    assert "derived" not in compact_text(NLL, 86.76, 90.0, "90.00")
