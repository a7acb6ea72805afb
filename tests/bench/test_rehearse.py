"""bench run --rehearse: the cut settings, and a rehearsal record that can never become a result,
a rendered measurement or a bench check reference."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
import torch

from bench.cell import _finished
from bench.cli import main
from bench.records import Record, read_records, record_path, write_record
from bench.rehearse import (
    Rehearsal,
    _limited,
    _out_of_memory,
    _skipped,
    available_bytes,
    render_report,
)
from bench.runner import run_table
from bench.tasks.settings import ClassifySettings, LikelihoodSettings, rehearsal

from .conftest import VAE, options, write_spec


def test_rehearsal_settings_keep_the_model_and_cross_every_stage():
    s = LikelihoodSettings(stages=8, batch_size=20, nll_k=5000, model_kwargs={"m": {"h": 3}})
    r = rehearsal(s)
    assert r.epochs_per_stage == [1] * 8 and r.max_steps_per_epoch == 2
    assert (r.batch_size, r.nll_k, r.model_kwargs, r.stages) == (20, 5000, {"m": {"h": 3}}, 8)
    assert rehearsal(LikelihoodSettings(epochs_per_stage=[100])).epochs_per_stage == [2]
    c = rehearsal(ClassifySettings(epochs=160, lr_milestones=[80, 120], batch_size=100))
    assert (c.epochs, c.lr_milestones, c.batch_size) == (3, [1, 2], 100)
    assert rehearsal(s, sample=True).data == "sample"
    timed = rehearsal(LikelihoodSettings(samples=16, time_naive_sampler=True))
    assert (timed.samples, timed.time_naive_sampler) == (1, False)  # the run's sampler, once


@pytest.fixture
def rehearsed(tmp_path, tiny):
    """One cell rehearsed in-process into tmp_path/results."""
    opts = options(tmp_path, cells=VAE, rehearse=True)
    (record,) = run_table(tiny, opts, log=lambda *_: None)
    return opts, record


def test_a_rehearsal_record_is_marked_and_never_reused_or_read_as_a_result(rehearsed, tiny):
    opts, record = rehearsed
    assert record.status == "ok" and record.rehearsal
    records, warnings = read_records(opts.results, tiny.id, "smoke")
    assert VAE not in records and "rehearsal record" in warnings[0]
    path = record_path(opts.results, tiny.id, "smoke", VAE)
    # Even with the key and campaign of a real run, a rehearsal is not a finished cell.
    assert not _finished(path, record.settings["_key"], record.settings["_campaign"])
    (real,) = run_table(tiny, replace(opts, rehearse=False), log=lambda *_: None)
    assert not real.rehearsal and real.settings["_key"] != record.settings["_key"]


def test_bench_check_takes_no_rehearsal_as_a_reference(rehearsed, tiny, spec_dir, tmp_path, capsys):
    opts, record = rehearsed
    check = spec_dir / "tiny.toml"
    check.write_text(
        check.read_text() + '\n[check.smoke]\nnll = { rel = 1e-3, reason = "t" }\n'
        'active_units = { abs = 1, reason = "t" }\n'
    )
    code = main(
        [
            "--specs",
            str(spec_dir),
            "check",
            "tiny",
            "--cells",
            VAE,
            "--results",
            str(opts.results),
            "--work",
            str(tmp_path / "work"),
        ]
    )
    out = capsys.readouterr()
    assert code == 1 and "rehearsal record" in out.err + out.out


@pytest.mark.slow
def test_a_rehearsal_stops_resumes_in_a_fresh_process_and_reports(tmp_path, spec_dir):
    write_spec(spec_dir)
    scratch = tmp_path / "scratch"
    code = main(
        [
            "--specs",
            str(spec_dir),
            "run",
            "tiny",
            "--cells",
            VAE,
            "--rehearse",
            "--results",
            str(scratch),
            "--tables",
            str(tmp_path / "tables"),
        ]
    )
    assert code == 0
    report = json.loads((scratch / "rehearsals" / "tiny" / "smoke.json").read_text())
    (cell,) = report["cells"]
    assert cell["passed"] and cell["segments"] == 2 and cell["checkpoint_mib"] > 0
    assert "1 of 1 cells passed" in (tmp_path / "tables" / "rehearsal-tiny-smoke.md").read_text()


def test_stop_after_epochs_stops_with_status_3_and_the_same_command_resumes(tmp_path, spec_dir):
    write_spec(spec_dir)
    args = [
        "--specs",
        str(spec_dir),
        "run",
        "tiny",
        "--cells",
        VAE,
        "--results",
        str(tmp_path / "r"),
        "--checkpoints",
        str(tmp_path / "c"),
        "--tables",
        str(tmp_path / "t"),
    ]
    assert main([*args, "--stop-after-epochs", "1"]) == 3
    assert not record_path(tmp_path / "r", "tiny", "smoke", VAE).exists()
    assert main(args) == 0
    records, _ = read_records(tmp_path / "r", "tiny", "smoke")
    assert records[VAE].resumed and records[VAE].segments == 2


def test_a_rehearsal_written_into_results_is_left_out_of_the_table(tmp_path, rehearsed, tiny):
    opts, record = rehearsed
    write_record(opts.results, replace(record, rehearsal=True))
    records, _ = read_records(opts.results, tiny.id, "smoke")
    assert records == {}


def test_a_step_that_does_not_fit_fails_with_its_allocation_not_the_oom_killer():
    limit = 512 * 2**20
    grab = "bytearray(2**31)"  # 2 GiB: over the limit, far under the machine
    child = [sys.executable, "-c", grab]
    done = subprocess.run(child, capture_output=True, text=True, preexec_fn=_limited(limit))
    assert done.returncode == 1 and "MemoryError" in done.stderr
    reason = (
        "RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't"
        " allocate memory: you tried to allocate 12884901888 bytes. Error code 12"
    )
    assert _out_of_memory(reason, 20 * 2**30) == (
        "does not fit: over the 20.0 GiB of memory available here (one allocation of 12.0 GiB)"
    )
    assert _out_of_memory("ValueError: nan", 20 * 2**30) == ""
    assert _out_of_memory(reason, None) == ""  # no limit: a plain failure
    assert available_bytes() > 0


def _report(cells: list[dict]) -> dict:
    """A rehearsal report of `cells` (dicts of Rehearsal) as write_report makes one."""
    made = {"command": "bench run t --rehearse", "device": "cpu", "created": "2026-12-07"}
    code = {"commit": "abcdef12", "dirty": False, "versions": {"torch": "2.14.1"}}
    return {"table": "t", "tier": "full", **made, **code, "cells": cells}


def test_a_cell_whose_data_is_absent_and_has_no_sample_is_not_run_not_failed(tmp_path):
    reason = "CIFAR100 not found: expected /data/cifar100; place the python batches there"
    write_record(tmp_path, Record("t", "full", "c100", {}, "skipped", reason=reason))
    write_record(tmp_path, Record("t", "full", "c10", {}, "failed", reason="boom"))
    assert _skipped(tmp_path, "t", "full", "c100") == f"not run: {reason} (and no committed sample)"
    assert _skipped(tmp_path, "t", "full", "c10") == "" == _skipped(tmp_path, "t", "full", "none")
    not_run = Rehearsal("c100", False, _skipped(tmp_path, "t", "full", "c100"), ran=False)
    cells = [asdict(Rehearsal("c10", True)), asdict(not_run)]
    report = _report(cells)
    text = render_report(report)
    assert "1 of 2 cells passed, 1 not run (data absent here):" in text
    assert "| not run: CIFAR100 not found" in text and "FAILED" not in text


def test_a_folder_data_set_that_is_absent_counts_as_absent(tmp_path):
    """ImageNet and CIFAR-100 are folders: their fingerprint is empty, not an error, when they
    are not there, and the rehearsal must then fall back to the committed sample."""
    from bench.runner import _data_absent
    from bench.spec import Cell

    real = ClassifySettings(data="real")
    for name in ("imagenet", "cifar100", "mnist"):
        cells = [Cell((("model", "resnet32"), ("dataset", name)))]
        assert _data_absent(cells, real, tmp_path), name
    assert not _data_absent(cells, ClassifySettings(data="sample"), tmp_path)


def test_a_rehearsals_sampler_is_stopped_at_its_bound_and_the_record_says_so():
    import time

    from bench.tasks.common import Context
    from bench.tasks.likelihood import draw_samples

    class Slow:
        def sample(self, n, generator=None):
            while True:  # a paper-sized sampler on a CPU: hours for one image
                time.sleep(0.01)

    ctx = Context(None, torch.device("cpu"), 0, "full", None, sample_budget_s=0.2)
    t0 = time.perf_counter()
    out = draw_samples(Slow(), LikelihoodSettings(samples=1), ctx, (1, 2, 2), "binary")
    assert out == {"sample_s": None, "sample_bounded_s": 0.2}
    assert time.perf_counter() - t0 < 5
    done = Rehearsal("c", True, sample_bounded_s=0.2)
    report = _report([asdict(done)])
    assert "| passed (sampler stopped at its 0 s bound)" in render_report(report)


def test_each_worker_reports_its_own_peak_resident_set():
    """The driver's RUSAGE_CHILDREN is the largest child so far: a small cell after a large one
    would show the large one's peak. Each worker says its own at exit."""
    from bench.rehearse import _run

    code, tail, peak = _run(["list"], log=lambda *_: None)
    assert code == 0 and "rehearsal-peak-rss" not in tail
    assert 10 < peak < 4096  # MiB: a Python process that imported the suite, no training
    old = _report([asdict(Rehearsal("c", True))])
    assert "peak RSS MiB (running max)" in render_report(old)  # reports made before
    assert "(running max)" not in render_report({**old, "peak_rss": "per cell"})


def test_a_sample_smaller_than_a_batch_is_said_on_the_line():
    small = Rehearsal("imagenet", True, on_sample=True, batch=256, images=8)
    enough = Rehearsal("mnist", True, on_sample=True, batch=20, images=128)
    cells = [asdict(small), asdict(enough)]
    text = render_report(_report(cells))
    assert "(sample: batches of 8, not 256)" in text
    assert text.count("(sample)") == 2  # the mnist line and the note that explains it
