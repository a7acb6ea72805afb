"""The `bench` command: every user error is one line on stderr with exit status 2 and no
traceback; an unfinished run exits 1 with one summary line; list, validate and table outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cell import RunOptions, cell_key
from bench.cli import COMMANDS, main
from bench.data import DataError
from bench.records import record_path
from bench.spec import SPEC_DIR, load_spec, settings_for
from bench.tasks import get_task

from .conftest import IWAE, VAE, write_spec


@pytest.fixture
def bench(tmp_path, capsys, monkeypatch):
    """Run `bench --specs <tmp>/specs --results <tmp>/results --tables <tmp>/tables ARGS`; a `run`
    also gets --checkpoints <tmp>/checkpoints. Returns (exit status, stdout, stderr)."""
    monkeypatch.delenv("DGM_BENCH_DATA", raising=False)

    def call(*args: str, specs=tmp_path / "specs"):
        argv = [
            "--specs",
            str(specs),
            "--results",
            str(tmp_path / "results"),
            "--tables",
            str(tmp_path / "tables"),
            *args,
        ]
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


@pytest.mark.parametrize("models", [[], ["--models"]])
def test_validate_the_shipped_specs(bench, models):
    status, out, err = bench("validate", *models, specs=SPEC_DIR)
    assert (status, err) == (0, "")
    assert sorted(out.splitlines()) == sorted(f"ok: {p}" for p in SPEC_DIR.glob("*.toml"))


def test_validate_without_torch_still_refuses_model_arguments_and_models_checks_contracts(
    bench, tmp_path, monkeypatch
):
    """Structure alone (no torch) finds an argument the constructor does not take or of the
    wrong kind; --models builds each model and finds one that breaks its contract."""
    text = (SPEC_DIR / "pixelcnn-mnist.toml").read_text()
    specs = tmp_path / "specs"
    wrong_kind = text.replace("hidden = 4, n_blocks = 1", "hidden = 4.5, n_blocks = 1")
    (specs / "pixelcnn-mnist.toml").write_text(wrong_kind)
    status, _, err = bench("validate")
    assert status == 2 and "model 'pixelcnn': hidden takes int, got 4.5" in one_error_line(err)
    (specs / "pixelcnn-mnist.toml").write_text(text.replace("n_blocks = 1", "n_blocks = 1, k = 2"))
    status, _, err = bench("validate")
    assert status == 2 and "model 'pixelcnn' takes no argument 'k'; it takes:" in err

    (tmp_path / "broken_flow.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Flow(nn.Module):\n"
        "    input_kind = 'binary'\n    capabilities = frozenset({'bound'})\n\n"
        "    def __init__(self, shape):\n        super().__init__()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    grid = 'grid = { model = ["pixelcnn", "gated_pixelcnn"], dataset = ["binarized_mnist"] }'
    (specs / "pixelcnn-mnist.toml").write_text(
        'models = { flow = "broken_flow:Flow" }\n'
        + text.replace(grid, grid.replace('"gated_pixelcnn"]', '"gated_pixelcnn", "flow"]'), 1)
    )
    assert bench("validate")[0] == 0  # the structure is sound
    status, _, err = bench("validate", "--models")
    assert status == 2
    assert "model 'flow' does not meet the density model contract" in one_error_line(err)
    assert "no `nll`; declares 'bound' but has no `nll`" in err


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
        (
            ["run", "tiny", "--checkpoint-every", "0"],
            "bench run: argument --checkpoint-every: expected an integer >= 1, got '0'",
        ),
        (
            ["run", "tiny", "--seed", "-1"],
            "bench run: argument --seed: expected an integer from 0 to 4294967295, got '-1'",
        ),
        (
            ["run", "tiny", "--seed", str(2**64)],
            f"bench run: argument --seed: expected an integer from 0 to 4294967295, got '{2**64}'",
        ),
        (["invert", "-n", "0"], "bench invert: argument -n: expected an integer >= 1, got '0'"),
        (["invert", "-n", "-1"], "bench invert: argument -n: expected an integer >= 1, got '-1'"),
        (["run"], "bench run: the following arguments are required: table"),
        (
            ["run", "tiny", "--threads-per-cell", str(10**20)],
            "bench run: argument --threads-per-cell: expected an integer from 1 to 4096, got"
            " '100000000000000000000'",
        ),
        (
            ["run", "tiny", "--gpus-per-cell", "-1"],
            "bench run: argument --gpus-per-cell: expected an integer from 0 to 64, got '-1'",
        ),
    ],
    ids=[
        "checkpoint-every 0",
        "seed -1",
        "seed 2**64",
        "n 0",
        "n -1",
        "no table",
        "threads-per-cell 10**20",
        "gpus-per-cell -1",
    ],
)
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


@pytest.mark.parametrize(
    "args, hint",
    [
        (["run", "tiny"], "; rerun the same command to resume from the last checkpoint"),
        (
            ["check", "tiny", "--work", "w"],
            "; rerun the same command to resume from the last checkpoint",
        ),
        (
            ["check", "tiny"],
            "; nothing was compared and the scratch run was removed, so a rerun"
            " starts over (--work DIR keeps a check's run to resume)",
        ),
        (["list"], ""),
    ],
    ids=["run", "check --work", "check", "list"],
)
def test_sigterm_says_what_a_rerun_does_and_exits_143(bench, monkeypatch, args, hint):
    monkeypatch.setitem(COMMANDS, args[0], lambda args: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    status, _, err = bench(*args)
    assert status == 143
    assert err == f"interrupted{hint}\n"
    assert signal.getsignal(signal.SIGTERM) == before


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "case", ["no folder", "not an image", "no weights", "wrong weights", "pickle", "not png"]
)
def test_invert_input_errors_are_one_line(bench, tmp_path, case):
    images, weights, pickled = tmp_path / "images", tmp_path / "w.pt", tmp_path / "p.pt"
    images.mkdir()
    (images / "a.jpg").write_text("not a JPEG")
    torch.save({"a": torch.zeros(1)}, weights)
    torch.save({"a": Payload()}, pickled)  # unpickling it would call print
    args = {
        "no folder": ["--images", str(tmp_path / "nope")],
        "not an image": ["--images", str(images)],
        "no weights": ["--weights", str(tmp_path / "missing.pt")],
        "wrong weights": ["--weights", str(weights)],
        "pickle": ["--weights", str(pickled)],
        "not png": ["--out", str(tmp_path / "x.txt")],
    }[case]
    status, out, err = bench(
        "invert",
        "--model",
        "irevnet_cifar",
        "--dataset",
        "cifar10",
        "--out",
        str(tmp_path / "x.png"),
        *args,
    )
    assert (status, out) == (2, "")
    line = one_error_line(err)
    assert {
        "no folder": f"--images {tmp_path / 'nope'}: no such folder",
        "not an image": f"{images / 'a.jpg'}: not a readable image",
        "no weights": f"--weights {tmp_path / 'missing.pt'}: no such file",
        "wrong weights": f"--weights {weights}: not a state_dict of irevnet_cifar",
        "pickle": f"--weights {pickled}: not a state_dict of irevnet_cifar (UnpicklingError: holds"
        " Python objects: refused the global print it asks for)",
        "not png": f"--out {tmp_path / 'x.txt'}: the figure is a PNG; give a path ending in .png",
    }[case] in line
    assert "weights_only=False" not in line and not list(tmp_path.glob("x.*"))


# --- Issue 21: a hostile user's probes ----------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "tiny", "--fre"], "bench: unrecognized arguments: --fre"),
        (["list", "--res", "x"], "bench: unrecognized arguments: --res x"),
        (["run", "tiny", "--cells", ""], "--cells '': no glob given"),
        (["run", "tiny", "--cells", " , "], "--cells ' , ': no glob given"),
        (["check", "tiny", "--cells", ""], "--cells '': no glob given"),
    ],
    ids=["--fre", "--res", "run --cells ''", "run --cells ' , '", "check --cells ''"],
)
def test_no_abbreviations_and_no_empty_cells(bench, args, message):
    status, out, err = bench(*args)
    assert (status, out) == (2, "")
    assert one_error_line(err).startswith(f"error: {message}")


def test_list_counts_only_cells_of_the_grid_and_says_where_it_looked(bench, tmp_path):
    assert bench("run", "tiny", "--cells", VAE)[0] == 0
    stray = record_path(tmp_path / "results", "tiny", "smoke", "mnist-layers1-k5-vae")
    source = record_path(tmp_path / "results", "tiny", "smoke", VAE)
    stray.write_text(source.read_text().replace(f'"cell": "{VAE}"', f'"cell": "{stray.stem}"'))
    status, out, _ = bench("list")
    assert status == 0
    lines = out.splitlines()
    assert lines[1].startswith("  smoke  1/2 cells with results at ")
    assert lines[1].endswith("(1 records of cells outside the grid, not counted)")
    assert lines[-1] == (
        f"records read from {(tmp_path / 'results').resolve()}; --results DIR reads another folder"
    )
    status, out, _ = bench("list", "--results", str(tmp_path / "nowhere"))
    assert out.splitlines()[-1] == (
        f"records read from {tmp_path / 'nowhere'} (no such folder); --results DIR reads another"
        " folder"
    )


@pytest.mark.parametrize(
    "argv, tables",
    [
        ([], "tables"),
        (["--results", "results"], "tables"),
        (["--results", "scratch"], "scratch/tables"),
        (["--results", "scratch", "--tables", "t"], "t"),
        (["list", "--results", "/x/r"], "/x/r/tables"),
    ],
)
def test_tables_go_beside_the_records_of_another_results_folder(
    tmp_path, monkeypatch, argv, tables
):
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setitem(COMMANDS, "list", lambda args: seen.append(args.tables) or 0)
    assert main([*argv, "list"] if "list" not in argv else argv) == 0
    assert seen == [Path(tables)]


def test_a_scratch_run_never_rewrites_the_committed_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path / "specs")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny-smoke.md").write_text("committed\n")
    argv = [
        "--specs",
        "specs",
        "--results",
        "scratch",
        "run",
        "tiny",
        "--cells",
        VAE,
        "--checkpoints",
        "ck",
    ]
    assert main(argv) == 0
    assert (tmp_path / "tables" / "tiny-smoke.md").read_text() == "committed\n"
    table = (tmp_path / "scratch" / "tables" / "tiny-smoke.md").read_text()
    assert "Measured: records under `scratch/tiny/smoke/`" in table
    capsys.readouterr()


def test_a_record_with_a_bad_metric_is_a_warning_not_a_crash_or_a_measurement(bench, tmp_path):
    assert bench("run", "tiny")[0] == 0
    path = record_path(tmp_path / "results", "tiny", "smoke", VAE)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "metrics": {**data["metrics"], "active_units": "x"}}))
    status, _, err = bench("table", "tiny")
    assert status == 0
    assert err.startswith(f"warning: {path}: invalid record (metric 'active_units'")
    text = (tmp_path / "tables" / "tiny-smoke.md").read_text()
    assert "vae NLL (nats)" in text and "not run; published 86.76" in text
    assert bench("run", "tiny", "--cells", IWAE)[0] == 0  # a later run renders without crashing


def test_invert_refuses_a_model_that_is_not_invertible_before_building_it(bench, tmp_path):
    status, out, err = bench("invert", "--model", "vae")
    assert (status, out) == (2, "")
    assert one_error_line(err).startswith(
        "error: model 'vae' has no inverse(); pick an invertible model: irevnet_a, irevnet_b"
    )
    assert not (tmp_path / "tables").exists()  # refused before anything was written


def test_plot_and_invert_into_a_folder_that_cannot_be_written_are_one_line(bench, tmp_path):
    assert bench("run", "tiny", "--cells", VAE)[0] == 0
    (tmp_path / "tables").rename(tmp_path / "was")
    (tmp_path / "tables").write_text("a file, not a folder")
    status, out, err = bench("plot", "tiny")
    assert (status, out) == (2, "")
    assert one_error_line(err).startswith(
        f"error: {tmp_path / 'tables'}: cannot write there (a file is in the way)"
    )
    out_png = tmp_path / "tables" / "x.png"
    status, out, err = bench(
        "invert", "--model", "irevnet_cifar", "--dataset", "cifar10", "--out", str(out_png)
    )
    assert (status, out) == (2, "")
    assert one_error_line(err).startswith(f"error: {tmp_path / 'tables'}: cannot write there")


def test_a_model_added_twice_is_one_line_not_the_last_one_silently(bench):
    status, out, err = bench("table", "tiny", "--add-model", "x=a.b:C", "--add-model", "x=a.b:D")
    assert (status, out) == (2, "")
    assert one_error_line(err) == "error: --add-model x: given twice; give each added model once"


def test_summary_into_a_folder_that_cannot_be_written_is_one_line(bench, tmp_path):
    (tmp_path / "tables").write_text("a file, not a folder")
    status, out, err = bench("summary")
    assert (status, out) == (2, "")
    assert one_error_line(err).startswith(
        f"error: {tmp_path / 'tables'}: cannot write there (a file is in the way)"
    )


def test_plot_that_fails_to_save_is_one_line(bench, tmp_path, monkeypatch):
    from bench import plot

    assert bench("run", "tiny", "--cells", VAE)[0] == 0

    def read_only(fig, path, dpi=120):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(plot, "save_figure", read_only)
    status, out, err = bench("plot", "tiny")
    assert (status, out) == (2, "")
    assert one_error_line(err) == (
        f"error: {tmp_path / 'tables'}: cannot write a figure (Permission denied); fix its"
        " permissions or pass --tables DIR"
    )


def test_a_spec_that_is_not_utf8_is_one_line_and_the_others_still_load(bench, tmp_path):
    bad = write_spec(tmp_path / "specs", name="bad")
    bad.write_bytes(bad.read_bytes().replace(b"a test spec", b"a t\xe9st spec"))
    status, out, err = bench("validate")
    assert status == 2 and out == f"ok: {tmp_path / 'specs' / 'tiny.toml'}\n"
    assert one_error_line(err).startswith(f"error: {bad}: not UTF-8 text (byte ")
    status, out, _ = bench("list")
    assert status == 0 and f"bad: INVALID: {bad}: not UTF-8 text" in out
    assert "tiny: tiny IWAE table" in out
    status, _, err = bench("run", "bad")
    assert status == 2 and f"{bad}: not UTF-8 text" in one_error_line(err)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list"],
        ["check", "--help"],
        ["run", "--help"],
        ["status", "iwae-table"],
        ["table", "iwae-table", "--tier", "small", "--tables", "{tmp}"],
        ["validate"],
    ],
)
def test_light_commands_import_no_torch(args, tmp_path):
    """Help, listing, rendering and status answer without torch (seconds of imports here)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = (
        "import sys\nfrom bench.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
