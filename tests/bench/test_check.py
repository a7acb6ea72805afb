"""`bench check`: metrics against committed references within the spec's tolerances. A broken
model fails on the metric it moved, per table; an unchanged tree passes on a second run and at
another thread count; `--update` makes the new records the references and says what moved."""

from __future__ import annotations

import json

import pytest
import torch

import models.factorised
import models.hvae
import models.irevnet
import models.iwae
import models.nice
import models.pixelcnn
import models.revnet
from bench import probe as probing
from bench.check import compare, judge, render_report
from bench.cli import main
from bench.records import Record
from bench.spec import Rule, get_spec, load_spec
from bench.tasks import classify
from bench.tasks import memory as memory_task

from .conftest import write_spec

CHECK = """
[check.smoke]
nll = { rel = 1e-3, reason = "float noise" }
active_units = { abs = 1, reason = "threshold flips" }
"""


def record(cell="c", status="ok", seed=0, **metrics) -> Record:
    return Record(
        table="t",
        tier="smoke",
        cell=cell,
        params={},
        status=status,
        metrics=metrics,
        settings={"lr": 0.1},
        seed=seed,
        commit="abc",
    )


def test_bands_bounds_and_exact_counts():
    band = Rule("r", rel=1e-2, abs_tol=0.5)
    assert judge(band, 100.0, 101.4)[0] and not judge(band, 100.0, 101.6)[0]
    assert judge(Rule("r", exact=True), 3, 3)[0] and not judge(Rule("r", exact=True), 3, 4)[0]
    bound = Rule("r", at_most=1e-4)
    assert judge(bound, 1.0, 5e-5)[0]  # a property holds whatever the reference was
    assert judge(bound, None, 5e-5)[0] and not judge(bound, 5e-5, 2e-4)[0]
    units = Rule("r", abs_tol=1)
    assert judge(units, [20, 5], [21, 4])[0] and not judge(units, [20, 5], [20, 7])[0]
    assert not judge(units, [20, 5], [20])[0]  # a layer more or less
    assert not judge(band, 100.0, float("nan"))[0] and not judge(band, None, 1.0)[0]


def test_failing_rows_first_and_a_missing_reference_is_no_regression(spec_dir):
    spec_dir.mkdir(parents=True)
    path = write_spec(spec_dir)
    path.write_text(path.read_text() + CHECK)
    spec = load_spec(path)
    refs = {
        "a": record("a", nll=100.0, active_units=[5]),
        "b": record("b", nll=100.0, active_units=[5]),
    }
    fresh = {
        "a": record("a", nll=100.01, active_units=[5]),
        "b": record("b", nll=105.0, active_units=[5]),
        "c": record("c", nll=1.0, active_units=[5]),
    }
    report = compare(spec, "smoke", ["a", "b", "c"], refs, fresh)
    assert [(r.cell, r.metric) for r in report.failed] == [("b", "nll")]
    assert report.rows[0].cell == "b"
    assert any(r.cell == "c" and r.verdict == "no reference" for r in report.rows)

    moved = {"a": record("a", seed=1, nll=100.0, active_units=[5])}
    report = compare(spec, "smoke", ["a"], refs, moved)
    assert report.failed[0].metric == "(settings)" and "seed: 0 -> 1" in report.failed[0].why


@pytest.fixture
def bench(tmp_path, capsys, monkeypatch):
    """`bench ARGS` with references (--results) and tables under tmp_path; returns (status,
    stdout, stderr)."""
    monkeypatch.delenv("DGM_BENCH_DATA", raising=False)

    def call(*args: str):
        argv = ["--results", str(tmp_path / "refs"), "--tables", str(tmp_path / "tables"), *args]
        if args[0] == "run":
            argv += ["--checkpoints", str(tmp_path / "checkpoints")]
        status = main(argv)
        out, err = capsys.readouterr()
        return status, out, err

    return call


def failing_metrics(out: str) -> set[str]:
    return {line.split()[1] for line in out.splitlines() if " FAIL" in line}


def scale_decoder(monkeypatch):
    forward = models.iwae.BernoulliMLP.forward
    monkeypatch.setattr(models.iwae.BernoulliMLP, "forward", lambda self, z: 1.5 * forward(self, z))


def probe_in_this_process(monkeypatch):
    """The memory probe measures a model in a fresh process, which a patched model does not
    reach: measure it here instead (the same count of saved bytes)."""

    def probe(w, steps, reference=None):
        report = probing.measure(w)
        report.update(probing.step_times(w, steps, reference))
        return {**report, "batch": w.batch}

    for task in (classify, memory_task):
        monkeypatch.setattr(task, "probe", probe)


def no_memory_saving(monkeypatch):
    """Every reversible run takes plain autograd's path, storing all its activations."""

    def plain(self, x):
        x1, x2 = models.revnet.halves(x)
        for block in self.blocks:
            x1, x2 = block.couple(x1, x2)
        return torch.cat([x1, x2], dim=1)

    monkeypatch.setattr(models.revnet.ReversibleSequence, "forward", plain)


def off_by_1e_2_inverse(monkeypatch):
    inverse = models.irevnet.IRevBlock.inverse
    off = lambda self, pair: tuple(t + 1e-2 for t in inverse(self, pair))  # noqa: E731
    monkeypatch.setattr(models.irevnet.IRevBlock, "inverse", off)


def scaling_without_its_log_det(monkeypatch):
    encode = models.nice.NICE.encode

    def wrong(self, x):
        h, log_det = encode(self, x)
        return 2 * h, log_det

    monkeypatch.setattr(models.nice.NICE, "encode", wrong)


def sharper_logits(monkeypatch):
    logits = models.pixelcnn.PixelCNN.logits
    monkeypatch.setattr(
        models.pixelcnn.PixelCNN, "logits", lambda self, x, y=None: 3 * logits(self, x, y)
    )


def no_kl_in_the_loss(monkeypatch):
    monkeypatch.setattr(
        models.hvae.HierarchicalVAE, "forward", lambda self, x: self.elbo_terms(x)["rec"]
    )


def no_fit_to_the_data(monkeypatch):
    monkeypatch.setattr(models.factorised.Factorised, "init_from_data", lambda self, x: None)


BREAKS = [  # table, cell, how the model is broken, the metrics that must fail
    ("iwae-table", "mnist-layers1-k1-vae", scale_decoder, {"nll"}),
    ("revnet-cifar", "revnet38-cifar10", no_memory_saving, {"saved_mib"}),
    ("revnet-memory", "revnet_cifar-basic-units1", no_memory_saving, {"saved_mib", "above_floor"}),
    ("irevnet-imagenet", "irevnet_b-imagenet", off_by_1e_2_inverse, {"recon_error"}),
    ("nice", "nice-mnist-zero-s_lr1", scaling_without_its_log_det, {"nll"}),
    ("pixelcnn-mnist", "pixelcnn-binarized_mnist", sharper_logits, {"nll"}),
    ("pixelcnn-cifar10", "pixelcnn-cifar10_lossless", sharper_logits, {"bits_per_dim"}),
    ("pixelvae-mnist", "hvae-binarized_mnist", no_kl_in_the_loss, {"kl1"}),
    ("factorised", "factorised-cifar10_lossless-data", no_fit_to_the_data, {"nll", "bits_per_dim"}),
]


@pytest.mark.slow
@pytest.mark.parametrize("table, cell, brk, metrics", BREAKS, ids=[b[0] for b in BREAKS])
def test_a_broken_model_fails_on_the_metric_it_moved(bench, monkeypatch, table, cell, brk, metrics):
    if "smoke" not in get_spec(table).checks:
        pytest.skip(f"{table} has no [check.smoke] yet")
    probe_in_this_process(monkeypatch)
    assert bench("run", table, "--cells", cell)[0] == 0  # the reference, from the unbroken model
    brk(monkeypatch)
    status, out, err = bench("check", table, "--cells", cell)
    assert status == 1, out + err
    assert metrics <= failing_metrics(out), out
    first = out.splitlines()[3]  # the title, the header, its rule, then the failing rows
    assert first.split()[0] == cell and " FAIL" in first


SAME = [("iwae-table", "mnist-layers2-k5-iwae"), ("revnet-memory", "revnet_cifar-basic-units1")]


@pytest.mark.slow
@pytest.mark.parametrize("table, cell", SAME)
def test_an_unchanged_tree_passes_again_and_at_another_thread_count(bench, tmp_path, table, cell):
    assert bench("run", table, "--cells", cell)[0] == 0  # one thread (conftest)
    work = str(tmp_path / "work")
    torch.set_num_threads(2)
    status, out, err = bench("check", table, "--cells", cell, "--work", work)
    assert status == 0, out + err
    assert " FAIL" not in out and "metrics within tolerance" in out
    status, out, err = bench("check", table, "--cells", cell, "--work", work)
    assert status == 0 and "done already" in err  # the second run reuses its fresh record


@pytest.mark.slow
def test_update_rewrites_the_references_and_says_what_moved(bench, tmp_path, monkeypatch):
    cell = "mnist-layers1-k1-vae"
    assert bench("run", "iwae-table", "--cells", cell)[0] == 0
    scale_decoder(monkeypatch)
    status, out, err = bench("check", "iwae-table", "--cells", cell, "--update")
    assert status == 0, out + err
    assert "updated 1 references" in err and f"{cell} nll:" in err
    ref = json.loads((tmp_path / "refs" / "iwae-table" / "smoke" / f"{cell}.json").read_text())
    assert "check" in ref["command"] and ref["commit"]
    assert (tmp_path / "tables" / "iwae-table-smoke.md").exists()
    assert bench("check", "iwae-table", "--cells", cell)[0] == 0  # the broken model is the norm


def test_user_mistakes_are_one_line(bench, tmp_path):
    status, _, err = bench("check", "iwae-table", "--cells", "x", "--subset")
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    specs = tmp_path / "specs"
    write_spec(specs)
    status, _, err = bench("check", "tiny", "--specs", str(specs))
    assert status == 2 and "has no [check.smoke] tolerances" in err and err.count("\n") == 1


def test_nan_on_either_side_fails():
    band = Rule("r", rel=1e-3)
    assert not judge(band, float("nan"), 209.359)[0]
    assert judge(band, float("nan"), 209.359)[2] == "reference is nan"
    assert not judge(Rule("r", at_most=1.0), float("nan"), 0.5)[0]
    assert not judge(Rule("r", abs_tol=1), [20, float("inf")], [20, 5])[0]


def checked_spec(spec_dir):
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = write_spec(spec_dir)
    path.write_text(path.read_text() + CHECK)
    return load_spec(path)


def skipped(cell, detail):
    now = record(cell, status="skipped")
    now.detail, now.reason = detail, f"{detail}: /data/x"
    return now


def test_corrupt_data_fails_and_absent_data_does_not(spec_dir):
    spec = checked_spec(spec_dir)
    refs = {"a": record("a", nll=1.0, active_units=[5])}
    report = compare(spec, "smoke", ["a"], refs, {"a": skipped("a", "data corrupt")})
    assert [(r.metric, r.why) for r in report.failed] == [("(run)", "data corrupt: /data/x")]
    report = compare(spec, "smoke", ["a"], refs, {"a": skipped("a", "data absent")})
    assert report.failed == [] and report.rows[0].verdict == "not run"
    assert render_report(report, spec_dir).endswith(
        "nothing compared: every cell's data is absent here (not a failure); 1 cells not compared"
        " (no reference, or not run)"
    )


def test_a_check_that_compared_nothing_fails(spec_dir):
    spec = checked_spec(spec_dir)
    fresh = {"a": record("a", nll=1.0, active_units=[5]), "b": skipped("b", "data absent")}
    report = compare(spec, "smoke", ["a", "b"], {}, fresh)  # no references at all
    (row,) = report.failed
    assert row.metric == "(none)" and row.why.startswith("nothing compared")
    assert render_report(report, spec_dir).endswith(
        "FAIL: nothing compared: no cell has both a reference and a new measurement; 2 cells not"
        " compared (no reference, or not run)"
    )


def test_an_unreadable_reference_fails_rather_than_counting_as_none(spec_dir):
    spec = checked_spec(spec_dir)
    fresh = {"a": record("a", nll=1.0, active_units=[5]), "b": record("b", nll=1.0)}
    refs = {"b": record("b", nll=1.0)}
    report = compare(spec, "smoke", ["a", "b"], refs, fresh, {"a": "corrupt reference: x.json"})
    assert [(r.cell, r.metric, r.why) for r in report.failed] == [
        ("a", "(reference)", "corrupt reference: x.json")
    ]


def test_a_truncated_reference_or_empty_results_fail_the_check(bench, tmp_path):
    specs = tmp_path / "specs"
    checked_spec(specs)
    vae = "mnist-layers1-k1-vae"
    work = str(tmp_path / "work")
    status, out, err = bench("check", "tiny", "--specs", str(specs), "--cells", vae, "--work", work)
    assert status == 1 and "nothing compared" in out and "bench check: FAIL in tiny" in err
    assert bench("run", "tiny", "--specs", str(specs), "--cells", vae)[0] == 0
    reference = tmp_path / "refs" / "tiny" / "smoke" / f"{vae}.json"
    reference.write_text(reference.read_text()[:100])
    status, out, err = bench("check", "tiny", "--specs", str(specs), "--cells", vae, "--work", work)
    assert status == 1
    assert f"FAIL: corrupt reference: {reference}: unreadable record" in out


def test_subset_and_tolerances_that_no_table_has_are_errors(bench, tmp_path):
    specs = tmp_path / "specs"
    checked_spec(specs)
    status, _, err = bench("check", "tiny", "--subset", "--specs", str(specs))
    assert status == 2 and err.count("\n") == 1
    assert "table 'tiny' has no subset in [check.smoke]" in err
    status, out, err = bench("check", "--subset", "--specs", str(specs))
    assert status == 2 and err.count("\n") == 1
    assert f"error: no table in {specs} has a subset in [check.smoke]: nothing to check" in err
    status, _, err = bench("check", "--tier", "small", "--specs", str(specs))
    assert status == 2 and "has [check.small] tolerances: nothing to check" in err
