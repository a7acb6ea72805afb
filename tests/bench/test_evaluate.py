"""bench.evaluate (`bench eval`): a checkpoint scored without training gives the trained record's
metrics exactly; a wrong checkpoint, cell or target record is one line that writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import models
from bench import probe as probing
from bench.cli import main
from bench.records import read_record, record_path
from bench.render import EVALUATED
from bench.spec import SPEC_DIR
from bench.tasks import classify
from bench.train import Checkpoint

from .conftest import VAE, write_spec

TIMING = {"images_per_s", "sample_s", "sample_s_naive", "step_s"}
MACHINE = {"peak_mib"}  # the resident set one step adds: the allocator's, not the model's


@pytest.fixture
def bench(tmp_path, capsys, monkeypatch):
    """`bench ARGS` on the specs in <tmp>/specs; (exit status, stdout, stderr)."""
    monkeypatch.delenv("DGM_BENCH_DATA", raising=False)

    def call(*args: str):
        status = main(["--specs", str(tmp_path / "specs"), *args])
        out, err = capsys.readouterr()
        return status, out, err

    return call


def trained(bench, tmp_path, table: str, cell: str) -> tuple:
    """Train `cell` with --save-weights into <tmp>/run; its record and weights file."""
    run = tmp_path / "run"
    status, out, err = bench(
        "run",
        table,
        "--cells",
        cell,
        "--save-weights",
        "--results",
        str(run / "results"),
        "--checkpoints",
        str(run / "ckpt"),
    )
    assert status == 0, err
    weights = run / "ckpt" / table / "smoke" / f"{cell}.weights.pt"
    return read_record(record_path(run / "results", table, "smoke", cell)), weights


def evaluated(bench, tmp_path, table: str, cell: str, checkpoint, *more: str):
    return bench(
        "eval",
        table,
        "--cell",
        cell,
        "--checkpoint",
        str(checkpoint),
        "--results",
        str(tmp_path / "eval"),
        *more,
    )


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def same_but_timing(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a.keys() - TIMING - MACHINE:
        assert a[name] == b[name], name  # bit for bit: same seed, same code, same weights


def test_a_likelihood_cell_evaluated_from_its_weights_repeats_its_trained_metrics(bench, tmp_path):
    write_spec(tmp_path / "specs")
    ran, weights = trained(bench, tmp_path, "tiny", VAE)
    status, out, err = evaluated(bench, tmp_path, "tiny", VAE, weights)
    assert status == 0, err
    record = read_record(record_path(tmp_path / "eval", "tiny", "smoke", VAE))
    same_but_timing(record.metrics, ran.metrics)
    assert record.metrics["images_per_s"] is None  # nothing was trained: no throughput
    assert record.memory["saved_bytes"] == ran.memory["saved_bytes"]
    assert record.history == [] and ran.history
    assert (record.status, record.seed, record.data, record.params) == (
        "ok",
        ran.seed,
        ran.data,
        ran.params,
    )
    assert {k: v for k, v in record.settings.items() if k != "_campaign"} == {
        k: v for k, v in ran.settings.items() if k != "_campaign"
    }
    assert record.commit == ran.commit and record.command.startswith("bench --specs")
    sha = record.evaluated_from["sha256"]
    assert record.evaluated_from == {"path": str(weights), "kind": "weights", "sha256": sha}
    assert len(sha) == 64 and f"(sha256 {sha[:12]})" in out
    table = (tmp_path / "eval" / "tables" / "tiny-smoke.md").read_text()
    assert f"{record.metrics['nll']:.2f} {EVALUATED}" in table
    assert f"- `{VAE}`: evaluated from checkpoint {sha[:12]} (weights, `{weights}`)" in table


def test_a_training_checkpoint_gives_its_model_state(bench, tmp_path):
    write_spec(tmp_path / "specs")
    _, weights = trained(bench, tmp_path, "tiny", VAE)
    checkpoint = tmp_path / "cell.pt"
    model = models.build("vae", shape=(1, 28, 28), layers=1, k=1)  # the cell's model
    model.load_state_dict(torch.load(weights, weights_only=True))
    Checkpoint(checkpoint).save(2, model, torch.optim.Adam(model.parameters()), history=[])
    assert evaluated(bench, tmp_path, "tiny", VAE, weights)[0] == 0
    from_weights = read_record(record_path(tmp_path / "eval", "tiny", "smoke", VAE))
    status, _, err = evaluated(bench, tmp_path, "tiny", VAE, checkpoint)  # replaces an evaluated
    assert status == 0, err
    record = read_record(record_path(tmp_path / "eval", "tiny", "smoke", VAE))
    assert record.evaluated_from["kind"] == "training checkpoint, epoch 2"
    same_but_timing(record.metrics, from_weights.metrics)


def probe_in_this_process(monkeypatch):
    """The memory probe's fresh process costs seconds of imports; the same count here."""

    def probe(w, steps, reference=None):
        return {**probing.measure(w), **probing.step_times(w, steps, reference), "batch": 4}

    monkeypatch.setattr(classify, "probe", probe)


CLASSIFY = """\
id = "tinycls"
title = "tiny classification table"
task = "classify"
paper = { arxiv = "1707.04585", table = "Table 2" }
published = [{ dataset = "cifar10", model = "resnet32", error = 7.14 }]

[metrics.error]
label = "error"
unit = "%"
format = ".2f"
better = "lower"

[grid]
model = ["resnet32"]
dataset = ["cifar10"]

[layout]
rows = ["dataset"]
columns = ["model"]

[tiers.smoke]
data = "sample"
epochs = 1
batch_size = 8
n_train = 16
max_steps_per_epoch = 2
n_test = 16
memory_batch = 2
timing_steps = 1
"""


def test_a_classification_cell_evaluated_from_its_weights_repeats_its_error(
    bench, tmp_path, monkeypatch
):
    probe_in_this_process(monkeypatch)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tinycls.toml").write_text(CLASSIFY)
    cell = "resnet32-cifar10"
    ran, weights = trained(bench, tmp_path, "tinycls", cell)
    status, _, err = evaluated(bench, tmp_path, "tinycls", cell, weights)
    assert status == 0, err
    record = read_record(record_path(tmp_path / "eval", "tinycls", "smoke", cell))
    same_but_timing(record.metrics, ran.metrics)
    assert "error" in record.metrics and record.history == []


def test_another_cells_weights_are_one_line_naming_the_key_and_write_nothing(bench, tmp_path):
    specs = tmp_path / "specs"
    write_spec(specs)
    path = specs / "tiny.toml"
    path.write_text(path.read_text().replace("layers = [1]", "layers = [1, 2]", 1))
    assert "layers = [1, 2]" in path.read_text()
    _, weights = trained(bench, tmp_path, "tiny", VAE)
    two = "mnist-layers2-k1-vae"
    status, out, err = evaluated(bench, tmp_path, "tiny", two, weights)
    assert (status, out) == (2, "")
    assert one_error_line(err) == (  # the first layer whose shape differs: 100 latents, not 50
        f"error: --checkpoint {weights}: not weights of cell {two}'s model 'vae': 'q_z1.mu.weight'"
        " has shape [50, 200] in the file, [100, 200] in the model (and 20 more)"
    )
    assert not list((tmp_path / "eval").rglob("*.json"))
    assert not list((tmp_path / "eval").rglob("*.md")) and not list(tmp_path.rglob("*.lease"))


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case", ["pickle", "not a state_dict", "missing", "cell", "tier", "data"])
def test_bad_requests_are_one_line_and_write_nothing(bench, tmp_path, capsys, case):
    write_spec(tmp_path / "specs")
    checkpoint = tmp_path / "c.pt"
    if case == "pickle":
        torch.save({"weight": Payload()}, checkpoint)  # unpickling it would call print
    elif case == "data":
        torch.save({"weight": torch.zeros(2)}, checkpoint)
    else:
        torch.save([torch.zeros(2)], checkpoint)
    args = {
        "missing": ["--checkpoint", str(tmp_path / "nope.pt")],
        "cell": ["--cell", "nope"],
        "tier": ["--tier", "medium"],
        "data": ["--tier", "small"],
    }.get(case, [])
    status, out, err = evaluated(bench, tmp_path, "tiny", VAE, checkpoint, *args)
    assert (status, out) == (2, "")
    line = one_error_line(err)
    assert {
        "pickle": f"--checkpoint {checkpoint}: cannot load (UnpicklingError: holds Python objects:"
        " refused the global",
        "not a state_dict": f"--checkpoint {checkpoint}: holds a list, not a state_dict",
        "missing": f"--checkpoint {tmp_path / 'nope.pt'}: no such file",
        "cell": f"--cell nope: not a cell of tiny --tier smoke; its cells: {VAE}, ",
        "tier": "table 'tiny' has no tier 'medium'; it has: smoke, small",
        "data": "no data directory given for mnist: pass --data-dir DIR",
    }[case] in line
    assert case != "pickle" or "print it asks for" in line
    assert "pwned" not in capsys.readouterr().out
    assert not [p for p in tmp_path.joinpath("eval").rglob("*") if p.is_file()]


def test_an_ok_trained_record_is_replaced_only_with_force(bench, tmp_path):
    write_spec(tmp_path / "specs")
    ran, weights = trained(bench, tmp_path, "tiny", VAE)
    results = tmp_path / "run" / "results"
    path = record_path(results, "tiny", "smoke", VAE)
    before = path.read_bytes()
    args = ("eval", "tiny", "--cell", VAE, "--checkpoint", str(weights), "--results", str(results))
    status, out, err = bench(*args)
    assert (status, out) == (2, "") and path.read_bytes() == before
    assert one_error_line(err) == (
        f"error: {path}: holds the ok trained record of cell {VAE} (commit {ran.commit[:12]},"
        f" started {ran.started}); --force replaces it with the evaluated one, or pass"
        " --results DIR"
    )
    assert bench(*args, "--force")[0] == 0
    assert json.loads(path.read_text())["evaluated_from"]["path"] == str(weights)


def test_a_run_retrains_a_cell_whose_record_was_evaluated(bench, tmp_path):
    write_spec(tmp_path / "specs")
    ran, weights = trained(bench, tmp_path, "tiny", VAE)
    results, ckpt = tmp_path / "run" / "results", tmp_path / "run" / "ckpt"
    assert (
        bench(
            "eval",
            "tiny",
            "--cell",
            VAE,
            "--checkpoint",
            str(weights),
            "--results",
            str(results),
            "--force",
        )[0]
        == 0
    )
    status, _, err = bench(
        "run", "tiny", "--cells", VAE, "--results", str(results), "--checkpoints", str(ckpt)
    )
    assert status == 0 and "done already" not in err
    record = read_record(record_path(results, "tiny", "smoke", VAE))
    assert record.evaluated_from == {} and record.history


def test_a_table_of_untrained_models_has_nothing_to_evaluate(bench, tmp_path):
    (tmp_path / "specs").mkdir()
    shutil.copy(SPEC_DIR / "revnet-memory.toml", tmp_path / "specs")
    weights = tmp_path / "w.pt"
    torch.save({"weight": torch.zeros(2)}, weights)
    status, out, err = evaluated(bench, tmp_path, "revnet-memory", "x", weights)
    assert (status, out) == (2, "")
    assert one_error_line(err) == (
        "error: table 'revnet-memory' (task 'memory') measures untrained models: there are no"
        " weights to evaluate; use `bench run`"
    )


def test_weights_that_score_nan_are_one_line_and_write_nothing(bench, tmp_path):
    write_spec(tmp_path / "specs")
    _, weights = trained(bench, tmp_path, "tiny", VAE)
    state = torch.load(weights, weights_only=True)
    nan = tmp_path / "nan.pt"
    torch.save({k: torch.full_like(v, float("nan")) for k, v in state.items()}, nan)
    status, out, err = evaluated(bench, tmp_path, "tiny", VAE, nan)
    assert (status, out) == (2, "")
    assert one_error_line(err).startswith(
        f"error: cell {VAE}: cannot score --checkpoint {nan} (NonFiniteMetric at bench/tasks/"
    )
    assert "test NLL is nan for " in err and err.endswith("); nothing written\n")
    assert not list((tmp_path / "eval").rglob("*.json")) and not list(tmp_path.rglob("*.lease"))
