"""bench.train and resuming: an interrupted run continues bit for bit (in one process, across
processes, and after SIGKILL), NaN losses stop with a clear reason, bad checkpoints are named."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import random
import re
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from bench import train
from bench.cell import cell_key
from bench.records import read_record, record_path
from bench.runner import run_table
from bench.spec import load_spec, settings_for
from bench.tasks import get_task
from bench.train import Checkpoint, CheckpointError, Fit, NonFiniteLoss, epoch_batches, fit

from .conftest import IWAE, VAE, bench_process, model_metrics, options, write_spec

EPOCHS = 4


def make_job(epochs: int, init_seed: int = 0) -> Fit:
    """A small regression net whose loss draws from the torch, NumPy and Python generators, as
    augmentation and sampling do, so that resuming must restore all three exactly."""
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(123)
    x, y = torch.randn(40, 6, generator=data), torch.randn(40, 1, generator=data)

    def loss(net, batch):
        xb, yb = batch
        noise = 0.1 * torch.randn_like(xb) * float(np.random.randn()) * random.gauss(0, 1)
        return (net(xb + noise) - yb).pow(2).mean()

    return Fit(
        model,
        optimizer,
        loss,
        TensorDataset(x, y),
        batch_size=8,
        epochs=epochs,
        lr_at=lambda epoch: 1e-2 * 0.5**epoch,
        seed=7,
    )


def reseed_everything(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def without_times(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_resume_is_bit_for_bit(tmp_path):
    reseed_everything(0)
    job = make_job(EPOCHS)
    history = fit(job, Checkpoint(tmp_path / "a.pt"))
    uninterrupted = {k: v.clone() for k, v in job.model.state_dict().items()}

    reseed_everything(0)
    ckpt = Checkpoint(tmp_path / "b.pt")
    fit(make_job(EPOCHS // 2), ckpt)
    # A new process: other generator states (each drawn from a few times), other initial weights.
    reseed_everything(99)
    np.random.rand(5)
    random.random()
    resumed = make_job(EPOCHS, init_seed=1)
    resumed_history = fit(resumed, ckpt)

    assert len(resumed_history) == EPOCHS
    assert without_times(resumed_history) == without_times(history)
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, uninterrupted[name]), name
    # The generators continue where they would have.
    reseed_everything(0)
    fit(make_job(EPOCHS), Checkpoint(None))
    expected = torch.rand(3), np.random.rand(), random.random()
    reseed_everything(0)
    fit(make_job(EPOCHS // 2), Checkpoint(tmp_path / "c.pt"))
    reseed_everything(5)
    fit(make_job(EPOCHS), Checkpoint(tmp_path / "c.pt"))
    assert torch.equal(torch.rand(3), expected[0])
    assert (np.random.rand(), random.random()) == expected[1:]


def test_a_finished_checkpoint_skips_training(tmp_path):
    ckpt = Checkpoint(tmp_path / "done.pt")
    job = make_job(2)
    history = fit(job, ckpt)
    trained = {k: v.clone() for k, v in job.model.state_dict().items()}
    again = make_job(2, init_seed=3)
    assert fit(again, ckpt) == history
    assert all(torch.equal(v, trained[k]) for k, v in again.model.state_dict().items())


def test_checkpoints_load_with_weights_only(tmp_path):
    ckpt = Checkpoint(tmp_path / "ck.pt", every=1)
    fit(make_job(2), ckpt)
    state = torch.load(ckpt.path, weights_only=True)
    assert state["epoch"] == 2
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert set(state) >= {"model", "optimizer", "rng_torch", "rng_numpy", "rng_python"}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_checkpoint_every_n_epochs(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(Checkpoint, "save", lambda self, epoch, *a: saved.append(epoch))
    fit(make_job(5), Checkpoint(tmp_path / "x.pt", every=2))
    assert saved == [2, 4, 5]  # and always after the last epoch


def test_a_nan_loss_stops_with_epoch_step_and_last_finite_loss():
    job = make_job(3)
    finite = job.loss
    calls = []

    def loss(net, batch):
        calls.append(1)
        value = finite(net, batch)
        return value * math.nan if len(calls) == 5 + 2 else value  # 5 steps per epoch

    job.loss = loss
    with pytest.raises(NonFiniteLoss) as info:
        fit(job, Checkpoint(None))
    e = info.value
    assert (e.epoch, e.step) == (1, 1)
    assert isinstance(e.last_finite, float) and math.isfinite(e.last_finite)
    message = str(e)
    assert "epoch 2, step 2" in message and str(e.last_finite) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint", b"PK\x03\x04 truncated zip"],
    ids=["empty", "garbage", "truncated"],
)
def test_a_corrupt_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "cell.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        fit(make_job(2), Checkpoint(path))
    assert str(path) in str(info.value)
    assert "--fresh" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_checkpoint_of_python_objects_is_named_without_torchs_unsafe_advice(tmp_path):
    path = tmp_path / "cell.pt"
    torch.save({"epoch": 1, "model": nn.Linear(1, 1)}, path)
    with pytest.raises(CheckpointError) as info:
        fit(make_job(2), Checkpoint(path))
    message = str(info.value)
    assert message.startswith(f"{path}: cannot resume (UnpicklingError: holds Python objects")
    assert "weights_only" not in message and "\n" not in message and "\x1b" not in message


def test_the_checkpoint_carries_the_wall_and_cpu_time_of_every_segment(tmp_path):
    first = Checkpoint(tmp_path / "c.pt")
    fit(make_job(1), first)
    state = torch.load(first.path, weights_only=True)
    spent, cpu = state["segments"][first.token], state["cpu_segments"][first.token]
    assert 0 < spent <= first.wall_s() and 0 < cpu <= first.cpu_s()
    second = Checkpoint(tmp_path / "c.pt")
    fit(make_job(2), second)
    fit(make_job(2), second)  # loading again in the same process counts it once
    assert second.earlier == {first.token: spent} and second.cpu_earlier == {first.token: cpu}
    assert (second.segments, second.resumed_at) == (2, 2)
    assert second.wall_s() > spent and second.cpu_s() > cpu


def test_a_checkpoint_of_another_model_is_named(tmp_path):
    path = tmp_path / "cell.pt"
    fit(make_job(1), Checkpoint(path))
    other = make_job(2)
    other.model = nn.Linear(6, 1)
    with pytest.raises(CheckpointError, match=str(path)):
        fit(other, Checkpoint(path))


@pytest.mark.parametrize("epoch", [10**9, -1, "2"])
def test_a_checkpoint_whose_epoch_the_schedule_lacks_is_named(tmp_path, epoch):
    """Resuming at an epoch past the schedule would record a partly trained model as done."""
    path = tmp_path / "cell.pt"
    fit(make_job(1), Checkpoint(path))
    state = torch.load(path, weights_only=True)
    torch.save({**state, "epoch": epoch}, path)
    with pytest.raises(
        CheckpointError,
        match=f"^{path}: cannot resume \\(it says {epoch!r} epochs"
        " done, with 1 in its history, of this cell's 2\\); delete it",
    ):
        fit(make_job(2), Checkpoint(path))


def test_epoch_batches_are_a_function_of_seed_and_epoch():
    data = TensorDataset(torch.arange(10))

    def order(seed, epoch):
        return torch.cat([b[0] for b in epoch_batches(data, 4, seed, epoch)]).tolist()

    assert sorted(order(0, 0)) == list(range(10))
    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4)
    assert order(0, 3) != order(1, 3)
    assert [len(b[0]) for b in epoch_batches(data, 4, 0, 0)] == [4, 4, 2]
    in_order = [b[0] for b in epoch_batches(data, 4, 0, 0, shuffle=False)]
    assert torch.cat(in_order).tolist() == list(range(10))


# --- through the runner -------------------------------------------------------------------------


def metrics_and_losses(record):
    return model_metrics(record.metrics), without_times(record.history)


@pytest.mark.parametrize("layers", [1, 2])
def test_run_table_resumes_an_interrupted_cell_exactly(tmp_path, monkeypatch, layers):
    """Two layers: the top layer's active units, logged after every epoch, draw samples; the
    resumed run logs the same units and trains on the same draws."""
    grid = {"dataset": ["mnist"], "layers": [layers], "k": [1], "model": ["vae"]}
    spec = load_spec(write_spec(tmp_path / "specs", epochs_per_stage=[3], grid=grid))
    cell = f"mnist-layers{layers}-k1-vae"
    (whole,) = run_table(spec, options(tmp_path / "a", cells=cell), log=lambda line: None)

    save = Checkpoint.save

    def save_then_stop(self, epoch, *args):
        save(self, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    opts = options(tmp_path / "b", cells=cell)
    with pytest.raises(KeyboardInterrupt):
        run_table(spec, opts, log=lambda line: None)
    monkeypatch.setattr(Checkpoint, "save", save)
    ckpt = next((tmp_path / "b" / "checkpoints").rglob("*.pt"))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    torch.manual_seed(1234)  # whatever the generators hold now must not matter
    (resumed,) = run_table(spec, opts, log=lambda line: None)

    assert resumed.status == whole.status == "ok"
    assert metrics_and_losses(resumed) == metrics_and_losses(whole)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert all(len(h["active_units"]) == layers for h in resumed.history)
    assert not ckpt.exists()  # a finished cell's checkpoint is removed
    assert (whole.resumed, whole.segments, resumed.resumed, resumed.segments) == (False, 1, True, 2)


def test_a_nan_cell_gets_a_failed_record_and_the_run_moves_on(tmp_path, monkeypatch):
    from models.iwae import IWAE as Model

    forward = Model.forward

    calls = []

    def nan_for_the_vae(self, x):
        # Call 1 is the memory probe, 2 and 3 are training steps 0 and 1: step 1 goes NaN.
        calls.append(self.objective)
        value = forward(self, x)
        return value * math.nan if calls == ["vae"] * 3 else value

    monkeypatch.setattr(Model, "forward", nan_for_the_vae)
    spec = load_spec(write_spec(tmp_path / "specs"))
    opts = options(tmp_path)
    lines = []
    records = run_table(spec, opts, log=lines.append)
    assert [(r.cell, r.status) for r in records] == [(VAE, "failed"), (IWAE, "ok")]
    failed = read_record(record_path(opts.results, "tiny", "smoke", VAE))
    assert failed.status == "failed"
    assert re.match(
        r"loss became NaN/inf at epoch 1, step 2 \(last finite loss \d+\.\d+\)", failed.reason
    )
    assert failed.metrics == {}
    assert any(line.startswith(f"[1/2] {VAE}: failed: loss became NaN") for line in lines)
    table = (opts.tables / "tiny-smoke.md").read_text()
    assert "| failed" in table  # the cell of the table, whatever the layout
    assert f"- `{VAE}`: failed: loss became NaN/inf" in table


def test_a_corrupt_checkpoint_fails_its_cell_with_the_file_named(tmp_path):
    spec = load_spec(write_spec(tmp_path / "specs"))
    opts = options(tmp_path, cells=VAE)
    cell = spec.select("smoke", VAE)[0]
    settings = settings_for(get_task(spec.task).Settings, spec, "smoke")
    key, _ = cell_key(spec, cell, settings, opts)
    path = opts.checkpoints / "tiny" / "smoke" / f"{VAE}.{key}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 100)
    (record,) = run_table(spec, opts, log=lambda line: None)
    assert record.status == "failed"
    assert str(path) in record.reason and "--fresh" in record.reason
    # --fresh starts over.
    (record,) = run_table(spec, options(tmp_path, cells=VAE, fresh=True), log=lambda line: None)
    assert record.status == "ok"


@pytest.mark.slow
def test_sigkill_mid_cell_then_rerun_gives_the_uninterrupted_numbers(tmp_path):
    """`bench run` killed with SIGKILL after a checkpoint resumes in a new process, and the record
    equals that of a run that was never interrupted."""
    write_spec(
        tmp_path / "specs", epochs_per_stage=[8], n_train=320, batch_size=32, max_steps_per_epoch=10
    )

    def command(root):
        return [
            "--specs",
            "specs",
            "--results",
            f"{root}/results",
            "--tables",
            f"{root}/tables",
            "run",
            "tiny",
            "--cells",
            VAE,
            "--checkpoints",
            f"{root}/checkpoints",
        ]

    whole = bench_process(command("whole"), tmp_path)
    killed = bench_process(command("killed"), tmp_path)
    folder = tmp_path / "killed" / "checkpoints" / "tiny" / "smoke"
    deadline = time.monotonic() + 120
    while not list(folder.glob("*.pt")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (ckpt,) = folder.glob("*.pt")
    done = torch.load(ckpt, weights_only=True)
    assert 1 <= done["epoch"] < 8
    record_file = tmp_path / "killed" / "results" / "tiny" / "smoke" / f"{VAE}.json"
    assert not record_file.exists()

    rerun = bench_process(command("killed"), tmp_path)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    out_whole, err_whole = whole.communicate(timeout=120)
    assert whole.returncode == 0, err_whole

    resumed = json.loads(record_file.read_text())
    reference = json.loads((tmp_path / "whole/results/tiny/smoke" / f"{VAE}.json").read_text())
    assert resumed["status"] == reference["status"] == "ok"
    assert model_metrics(resumed["metrics"]) == model_metrics(reference["metrics"])
    assert without_times(resumed["history"]) == without_times(reference["history"])
    # The epochs before the kill come from the checkpoint, not from training them again.
    assert resumed["history"][: done["epoch"]] == done["history"]
    assert not ckpt.exists()


def test_world_outside_torchrun():
    assert train.world() == (0, 1)


def test_a_checkpoint_that_would_run_code_is_refused_naming_the_global(tmp_path):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    path = tmp_path / "cell.pt"
    torch.save({"epoch": 1}, path)
    with zipfile.ZipFile(path) as source:
        members = {n: source.read(n) for n in source.namelist()}
    with zipfile.ZipFile(path, "w") as target:
        for name, data in members.items():
            evil = pickle.dumps({"epoch": Payload()}, protocol=2)
            target.writestr(name, evil if name.endswith("data.pkl") else data)
    with pytest.raises(CheckpointError) as info:
        fit(make_job(2), Checkpoint(path))
    message = str(info.value)
    assert f"{path}: cannot resume (UnpicklingError: holds Python objects: refused the global" in (
        message
    )
    assert re.search(r"(posix|os)\.system", message)
    assert "weights_only" not in message and "\n" not in message
    assert not (tmp_path / "ran").exists()


def partial_then_fail(error: Exception):
    """A torch.save that writes part of its file, then fails as a full disk makes it fail."""

    def save(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise error

    return save


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 448"),
        OSError(errno.EFBIG, "File too large"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["torch writer", "file-size limit", "disk full"],
)
def test_a_failed_save_is_one_line_and_leaves_no_temp_file(tmp_path, monkeypatch, error):
    monkeypatch.setattr(torch, "save", partial_then_fail(error))
    path = tmp_path / "ck" / "cell.pt"
    with pytest.raises(CheckpointError) as info:
        fit(make_job(1), Checkpoint(path))
    message = str(info.value)
    assert message.startswith(f"{path}: cannot save ({type(error).__name__}: ")
    assert "--checkpoints DIR" in message and "\n" not in message
    assert list((tmp_path / "ck").iterdir()) == []


def test_a_checkpoint_folder_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "ck").write_text("")
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'ck' / 'cell.pt'}: cannot save"):
        train.save_atomic({"x": 1}, tmp_path / "ck" / "cell.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
