"""The `bench` command: every user error is one line on stderr with exit status 2 and no
traceback; an unfinished run exits 1 with one summary line; list, validate and table outputs."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from bench.cli import COMMANDS, main
from bench.data import DataError
from bench.records import record_path
from bench.runner import RunOptions, cell_key
from bench.spec import SPEC_DIR, load_spec, settings_for
from bench.tasks import get_task

from .conftest import IWAE, VAE, write_spec


@pytest.fixture
def bench(tmp_path, capsys, monkeypatch):
    """Run `bench --specs <tmp>/specs --results <tmp>/results --tables <tmp>/tables ARGS`; a `run`
    also gets --checkpoints <tmp>/checkpoints. Returns (exit status, stdout, stderr)."""
    monkeypatch.delenv("DGM_BENCH_DATA", raising=False)

    def call(*args: str, specs=tmp_path / "specs"):
        argv = ["--specs", str(specs), "--results", str(tmp_path / "results"),
                "--tables", str(tmp_path / "tables"), *args]  # fmt: skip
        if args and args[0] == "run":
            argv += ["--checkpoints", str(tmp_path / "checkpoints")]
        status = main(argv)
        out, err = capsys.readouterr()
        return status, out, err

    write_spec(tmp_path / "specs")
    return call


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def test_unknown_table(bench):
    status, out, err = bench("run", "nope")
    assert status == 2 and out == ""
    assert one_error_line(err) == (
        "error: unknown table 'nope'; known tables: tiny (see `bench list`)"
    )


def test_unknown_tier_of_a_table(bench):
    status, _, err = bench("run", "tiny", "--tier", "full")
    assert status == 2
    assert one_error_line(err) == "error: table 'tiny' has no tier 'full'; it has: smoke, small"


def test_cells_matching_nothing(bench):
    status, _, err = bench("run", "tiny", "--cells", "omniglot-*,cifar*")
    assert status == 2
    assert "--cells 'omniglot-*,cifar*' matches no cell of tiny" in one_error_line(err)


def test_malformed_spec(bench, tmp_path):
    path = write_spec(tmp_path / "specs", name="bad")
    path.write_text(path.read_text().replace("k = [1]", "k = 1"))
    status, _, err = bench("run", "bad")
    assert status == 2
    assert one_error_line(err) == f"error: {path}: grid.k: expected a non-empty list of values"


def test_bad_setting(bench, tmp_path):
    path = write_spec(tmp_path / "specs", name="bad", batch_size="16")
    status, _, err = bench("run", "bad")
    assert status == 2
    assert f"{path}: tiers.smoke.batch_size: expected int" in one_error_line(err)


def test_settings_that_contradict_each_other(bench, tmp_path):
    path = write_spec(tmp_path / "specs", name="bad", stages=2, epochs_per_stage=[2])
    status, _, err = bench("run", "bad")
    assert status == 2
    assert f"{path}: tiers.smoke" in one_error_line(err)
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_cuda_without_a_gpu(bench):
    status, _, err = bench("run", "tiny", "--device", "cuda")
    assert status == 2
    assert one_error_line(err) == (
        "error: --device cuda asked for, but PyTorch sees no CUDA GPU here; use --device cpu"
    )


def test_missing_data_set_skips_cells_and_exits_1(bench, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    status, out, err = bench("run", "tiny", "--tier", "small", "--data-dir", str(empty))
    assert status == 1
    assert err.splitlines() == [f"2 of 2 cells did not finish: {IWAE}, {VAE}"]
    assert f"[1/2] {VAE}: skipped: MNIST not found" in out
    assert "not run (data absent)" in (tmp_path / "tables" / "tiny-small.md").read_text()


def test_a_corrupt_checkpoint_fails_its_cell_and_exits_1(bench, tmp_path):
    spec = load_spec(tmp_path / "specs" / "tiny.toml")
    settings = settings_for(get_task(spec.task).Settings, spec, "smoke")
    key, _ = cell_key(spec, spec.select("smoke", VAE)[0], settings, RunOptions())
    checkpoint = tmp_path / "checkpoints" / "tiny" / "smoke" / f"{VAE}.{key}.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"garbage")
    status, out, err = bench("run", "tiny", "--cells", VAE)
    assert status == 1
    assert err.splitlines() == [f"1 of 1 cells did not finish: {VAE}"]
    assert f"[1/1] {VAE}: failed: {checkpoint}: cannot resume" in out
    assert "Traceback" not in out + err


def test_run_then_list_then_table(bench, tmp_path):
    status, out, err = bench("run", "tiny")
    assert (status, err) == (0, "")
    assert f"[1/2] {VAE}: ok in" in out and f"[2/2] {IWAE}: ok in" in out

    status, out, err = bench("list")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "tiny: tiny IWAE table (arXiv 1509.00519, Table 1)"
    assert lines[1].startswith("  smoke  2/2 cells with results at ")
    assert lines[2] == "  small  0/2 cells with results"

    # A corrupt record: a warning naming it, and the table is still written.
    corrupt = record_path(tmp_path / "results", "tiny", "smoke", IWAE)
    corrupt.write_text('{"table": "tiny", ')
    status, out, err = bench("table", "tiny")
    assert status == 0
    (warning,) = err.splitlines()
    assert warning.startswith(f"warning: {corrupt}: unreadable record")
    table = tmp_path / "tables" / "tiny-smoke.md"
    assert out.strip() == str(table)
    text = table.read_text()
    assert f"{corrupt}: unreadable record" in text
    assert "| iwae NLL (nats) " in text and "not run; published 86.76" in text  # compact

    status, out, err = bench("table", "tiny", "--wide")
    assert status == 0
    assert "iwae NLL (nats) measured" in table.read_text()


def test_list_marks_an_invalid_spec(bench, tmp_path):
    path = write_spec(tmp_path / "specs", name="bad")
    path.write_text(path.read_text().replace('id = "bad"', 'id = "other"'))
    status, out, _ = bench("list")
    assert status == 0
    assert f"bad: INVALID: {path}: id: 'other' must equal the file name 'bad'" in out.splitlines()
    assert "tiny: tiny IWAE table (arXiv 1509.00519, Table 1)" in out.splitlines()


def test_validate(bench, tmp_path):
    status, out, err = bench("validate")
    assert (status, out, err) == (0, f"ok: {tmp_path / 'specs' / 'tiny.toml'}\n", "")

    bad = write_spec(tmp_path / "specs", name="bad", colour="blue")
    status, out, err = bench("validate")
    assert status == 2
    assert out == f"ok: {tmp_path / 'specs' / 'tiny.toml'}\n"
    line = one_error_line(err)
    assert line.startswith(f"error: {bad}: tiers.smoke.colour: unknown setting; known: data, prep,")
    assert "nll_k, nll_chunk" in line


def test_validate_the_shipped_specs(bench):
    status, out, err = bench("validate", specs=SPEC_DIR)
    assert (status, err) == (0, "")
    assert sorted(out.splitlines()) == sorted(f"ok: {p}" for p in SPEC_DIR.glob("*.toml"))


def test_table_without_records_is_an_error_and_keeps_the_table(bench, tmp_path):
    """A misspelt --results must not overwrite the committed table with an all-"not run" one."""
    table = tmp_path / "tables" / "tiny-small.md"
    table.parent.mkdir()
    table.write_text("committed\n")
    status, out, err = bench("table", "tiny", "--tier", "small")
    assert (status, out) == (2, "")
    assert one_error_line(err) == (
        f"error: no records under {tmp_path / 'results' / 'tiny' / 'small'}; check --results or"
        " run `bench run tiny --tier small`"
    )
    assert table.read_text() == "committed\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "tiny", "--checkpoint-every", "0"],
         "bench run: argument --checkpoint-every: expected an integer >= 1, got '0'"),
        (["run", "tiny", "--seed", "-1"],
         "bench run: argument --seed: expected an integer from 0 to 4294967295, got '-1'"),
        (["run", "tiny", "--seed", str(2**64)],
         f"bench run: argument --seed: expected an integer from 0 to 4294967295, got '{2**64}'"),
        (["invert", "-n", "0"], "bench invert: argument -n: expected an integer >= 1, got '0'"),
        (["invert", "-n", "-1"], "bench invert: argument -n: expected an integer >= 1, got '-1'"),
        (["run"], "bench run: the following arguments are required: table"),
    ],
    ids=["checkpoint-every 0", "seed -1", "seed 2**64", "n 0", "n -1", "no table"],
)  # fmt: skip
def test_bad_arguments_are_one_line(bench, args, message):
    status, out, err = bench(*args)
    assert (status, out) == (2, "")
    assert one_error_line(err) == f"error: {message}"


@pytest.mark.parametrize("command", ["validate", "list"])
def test_a_specs_folder_without_specs_is_an_error(bench, tmp_path, command):
    status, out, err = bench(command, specs=tmp_path / "nonexistent")
    assert (status, out) == (2, "")
    assert one_error_line(err) == (
        f"error: --specs {tmp_path / 'nonexistent'}: no such folder: {tmp_path / 'nonexistent'};"
        " pass the folder of specs"
    )
    status, _, err = bench(command, specs=tmp_path)
    assert status == 2 and "no spec files (*.toml) in" in one_error_line(err)


def test_global_options_also_work_after_the_subcommand(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path / "specs")
    status = main(["validate", "--specs", "specs"])
    assert (status, capsys.readouterr().out) == (0, "ok: specs/tiny.toml\n")
    status = main(["--specs", "specs", "table", "tiny", "--results", "elsewhere"])
    assert status == 2 and "no records under elsewhere/tiny/smoke" in capsys.readouterr().err


def test_a_failing_run_that_kept_an_ok_record_exits_1(bench, tmp_path, monkeypatch):
    assert bench("run", "tiny", "--cells", VAE)[0] == 0

    def no_data(*args):
        raise DataError("MNIST not found: expected /x")

    monkeypatch.setattr(get_task(load_spec(tmp_path / "specs" / "tiny.toml").task), "run", no_data)
    status, out, err = bench("run", "tiny", "--cells", VAE, "--seed", "1")
    assert status == 1
    assert err.splitlines() == [f"1 of 1 cells did not finish: {VAE}"]
    assert f"[1/1] {VAE}: skipped: MNIST not found: expected /x; kept the ok record" in out


def test_results_or_tables_that_cannot_be_written_are_one_line(bench, tmp_path):
    (tmp_path / "tables").write_text("")
    status, out, err = bench("run", "tiny", "--cells", VAE)
    assert status == 2
    assert one_error_line(err).startswith(f"error: {tmp_path / 'tables'}: cannot write there")


def test_sigterm_gets_the_resume_hint_and_exit_143(bench, monkeypatch):
    monkeypatch.setitem(COMMANDS, "list", lambda args: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    status, _, err = bench("list")
    assert status == 143
    assert err == "interrupted; rerun the same command to resume from the last checkpoint\n"
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("case", ["no folder", "not an image", "no weights", "wrong weights"])
def test_invert_input_errors_are_one_line(bench, tmp_path, case):
    images, weights = tmp_path / "images", tmp_path / "w.pt"
    images.mkdir()
    (images / "a.jpg").write_text("not a JPEG")
    torch.save({"a": torch.zeros(1)}, weights)
    args = {
        "no folder": ["--images", str(tmp_path / "nope")],
        "not an image": ["--images", str(images)],
        "no weights": ["--weights", str(tmp_path / "missing.pt")],
        "wrong weights": ["--weights", str(weights)],
    }[case]
    status, out, err = bench("invert", "--model", "irevnet_cifar", "--dataset", "cifar10", *args,
                             "--out", str(tmp_path / "x.png"))  # fmt: skip
    assert (status, out) == (2, "")
    line = one_error_line(err)
    assert {
        "no folder": f"--images {tmp_path / 'nope'}: no such folder",
        "not an image": f"{images / 'a.jpg'}: not a readable image",
        "no weights": f"--weights {tmp_path / 'missing.pt'}: no such file",
        "wrong weights": f"--weights {weights}: not a state_dict of irevnet_cifar",
    }[case] in line
