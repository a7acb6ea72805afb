"""bench.status: every cell's state from records and leases alone, without importing torch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import lease
from bench.errors import UsageError
from bench.lease import CAMPAIGN_FILE, Lease, LeaseInfo, lease_path
from bench.records import Record, record_path, write_record
from bench.runner import run_table
from bench.spec import load_spec
from bench.status import cell_states, render_status

from .conftest import IWAE, VAE, options, write_spec

# What the next `bench run` does with a cell (CellState.next_run).
REUSES, TRAINS, WAITS, TAKES_OVER, REFUSES = "reuses", "trains", "waits", "takes over", "refuses"


def _record(cell, status, **fields):
    return Record(
        table="tiny",
        tier="smoke",
        cell=cell,
        params={},
        status=status,
        wall_s=90.0,
        commit="abcdef123456",
        started="2026-12-03T06:00:00+00:00",
        **fields,
    )


def test_running_ok_failed_stale_and_pending_cells(tmp_path, tiny, monkeypatch):
    results = tmp_path / "results"
    write_record(results, _record(VAE, "ok", settings={"_campaign": "other"}))
    (results / lease.CAMPAIGN_FILE).write_text("mine\n")
    states = {s.cell: s for s in cell_states(tiny, "smoke", results)}
    assert states[VAE].state == "reference" and "made in campaign other" in states[VAE].detail
    assert "the next `bench run` trains it" in states[VAE].detail
    assert states[IWAE].state == "pending"

    write_record(results, _record(VAE, "failed", reason="loss became NaN/inf at epoch 2"))
    held = Lease(lease_path(record_path(results, "tiny", "smoke", IWAE)), worker="host:12")
    assert held.acquire()
    held.info.since = time.time() - 60
    held.progress(phase="training", step=30, step0=0, steps=90, epoch=1, epochs=3)
    held.beat()
    states = {s.cell: s for s in cell_states(tiny, "smoke", results)}
    assert states[VAE].state == "failed" and states[VAE].detail.startswith("loss became NaN")
    running = states[IWAE]
    assert running.state == "running" and "host:12 on " in running.detail
    assert "epoch 2/3 (step 30/90), about 2.0 min left" in running.detail
    held.progress(phase="evaluating", images=500, of_images=2000, eval_since=time.time() - 60)
    held.beat()
    running = {s.cell: s for s in cell_states(tiny, "smoke", results)}[IWAE]
    assert "evaluating (test image 500/2000), about 3.0 min left" in running.detail

    monkeypatch.setattr(lease, "EXPIRY", 1.0)
    held._stop.set()
    past = time.time() - 5
    os.utime(held.path, (past, past))
    states = {s.cell: s for s in cell_states(tiny, "smoke", results)}
    assert states[IWAE].state == "stale lease" and "takes the cell over" in states[IWAE].detail
    text = render_status(tiny, "smoke", list(states.values()))
    assert text.splitlines()[0] == "tiny --tier smoke: 1 failed, 1 stale lease"


def test_status_imports_no_torch(tmp_path, spec_dir, tiny):
    code = (
        "import sys; from bench.cli import main; "
        f"assert main(['status', 'tiny', '--specs', {str(spec_dir)!r},"
        f" '--results', {str(tmp_path)!r}]) == 0; "
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'heavy import'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "tiny --tier smoke: 2 pending"


def test_an_empty_campaign_file_is_said_as_the_run_refuses_it(tmp_path, tiny):
    (tmp_path / lease.CAMPAIGN_FILE).write_text("")
    states = cell_states(tiny, "smoke", tmp_path)
    assert {s.state for s in states} == {"pending"} and {s.next_run for s in states} == {REFUSES}
    assert "empty campaign file" in render_status(tiny, "smoke", states).splitlines()[1]


# --- L7: the time left, between heartbeats -------------------------------------------------------


def test_the_time_left_counts_down_between_heartbeats():
    """A heartbeat carries the step of its moment; until the next one the cell trains on, so the
    time left is the pace up to that step times the steps left, less the time since the step."""
    step_at = 1_000_000.0
    info = LeaseInfo(
        token="t",
        host="h",
        pid=1,
        since=step_at - 60,
        phase="training",
        step=30,
        steps=90,
        at=step_at,
    )
    left = [info.eta(step_at + dt) for dt in (0, 5, 10, 20)]
    assert left == [120.0, 115.0, 110.0, 100.0]
    assert info.eta(step_at + 500) == 0.0  # overdue: no negative time
    evaluating = replace(
        info, phase="evaluating", images=500, of_images=2000, eval_since=step_at - 60
    )
    assert evaluating.eta(step_at + 30) == pytest.approx(180.0 - 30)


def test_status_shows_the_time_left_since_the_last_step(tmp_path, tiny):
    results = tmp_path / "results"
    path = lease_path(record_path(results, "tiny", "smoke", IWAE))
    path.parent.mkdir(parents=True)
    now = time.time()
    fields = {
        "token": "t",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker": "w",
        "since": now - 80,
        "phase": "training",
        "step": 30,
        "steps": 90,
        "epochs": 3,
        "at": now - 20,
    }
    path.write_text(json.dumps(fields))  # the heartbeat is now; the step was 20 s before
    running = {s.cell: s for s in cell_states(tiny, "smoke", results)}[IWAE]
    assert running.state == "running" and "about 1.7 min left" in running.detail  # 120 - 20 s
    del fields["at"]  # a lease of an older holder: its heartbeat's time stands for the step's
    path.write_text(json.dumps(fields))
    past = now - 20
    os.utime(path, (past, past))
    running = {s.cell: s for s in cell_states(tiny, "smoke", results)}[IWAE]
    assert "about 1.7 min left" in running.detail


def test_progress_stamps_the_time_of_the_step(tmp_path):
    held = Lease(tmp_path / ".cell.lease", "w")
    before = time.time()
    held.progress(phase="training", step=3, steps=10)
    assert before <= held.info.at <= time.time()
    stamped = held.info.at
    held.progress(epoch=1)  # no step: the step's time stays
    assert held.info.at == stamped


# --- L5: status says what the next run does, for every cell -------------------------------------

# What a reader of `bench status` is told the next run does with a cell, by its state.
TOLD = {
    "ok": REUSES,
    "running": WAITS,
    "copied lease": WAITS,
    "stale lease": TAKES_OVER,
    "unreadable lease": TAKES_OVER,
    "pending": TRAINS,
    "failed": TRAINS,
    "skipped": TRAINS,
    "unreadable": TRAINS,
    "reference": TRAINS,
    "evaluated": TRAINS,
    "rehearsal": TRAINS,
}


def _told(spec, states) -> dict[str, str]:
    if "`bench run` refuses" in render_status(spec, "smoke", states):
        return {s.cell: REFUSES for s in states}
    return {s.cell: TOLD[s.state] for s in states}


def _record_file(results: Path, cell: str) -> Path:
    return record_path(results, "tiny", "smoke", cell)


def _edit(cell: str, **changes):
    def edit(results: Path, origin: Path) -> None:
        path = _record_file(results, cell)
        data = json.loads(path.read_text())
        for name, value in changes.items():
            if name == "_campaign":
                data["settings"]["_campaign"] = value
            else:
                data[name] = value
        path.write_text(json.dumps(data))

    return edit


def _campaign_file(make):
    def replace_it(results: Path, origin: Path) -> None:
        (results / CAMPAIGN_FILE).unlink()
        make(results / CAMPAIGN_FILE)

    return replace_it


def _leased(make, keep_record: bool = False):
    """IWAE's lease made by `make`; its record removed, so that the run must train it."""

    def lease_it(results: Path, origin: Path) -> None:
        record = _record_file(results, IWAE)
        if not keep_record:
            record.unlink()
        make(lease_path(record), origin)

    return lease_it


def _lease_text(**fields):
    base = {"token": "t0", "host": socket.gethostname(), "pid": os.getpid(), "worker": "w"}
    return lambda path, origin: path.write_text(
        json.dumps({**base, "since": time.time(), **fields})
    )


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def _copied(path: Path, origin: Path) -> None:
    """A live lease (this process, this host, just written) made in the folder this one was
    copied from: nobody holds the cell here."""
    folder = record_path(origin, "tiny", "smoke", IWAE).parent
    st = os.stat(folder)
    _lease_text(folder=str(folder.resolve()), folder_id=f"{st.st_dev}:{st.st_ino}")(path, origin)


CASES = {
    "as trained": lambda results, origin: None,
    "no campaign file (a fresh clone)": lambda results, origin: (results / CAMPAIGN_FILE).unlink(),
    "a record of another campaign": _edit(VAE, _campaign="elsewhere"),
    "a record scored by bench eval": _edit(
        VAE, evaluated_from={"path": "w.pt", "kind": "weights", "sha256": "0" * 64}
    ),
    "campaign file: a folder": _campaign_file(lambda p: p.mkdir()),
    "campaign file: empty": _campaign_file(lambda p: p.write_text("")),
    "campaign file: not UTF-8": _campaign_file(lambda p: p.write_bytes(b"\xff\xfe")),
    "campaign file: a FIFO": _campaign_file(os.mkfifo),
    "campaign file: /dev/zero": _campaign_file(lambda p: p.symlink_to("/dev/zero")),
    "lease: pid abc": _leased(_lease_text(pid="abc")),
    "lease: pid 2**70": _leased(_lease_text(pid=2**70)),
    "lease: since NaN": _leased(_lease_text(since=float("nan"))),
    "lease: since 1e30": _leased(_lease_text(since=1e30)),
    "lease: step abc": _leased(_lease_text(step="abc", phase="training", steps=4)),
    "lease: a folder": _leased(lambda path, origin: path.mkdir()),
    "lease: a FIFO": _leased(lambda path, origin: os.mkfifo(path)),
    "lease: a link to /dev/zero": _leased(lambda path, origin: path.symlink_to("/dev/zero")),
    "lease: garbage beside a finished record": _leased(_lease_text(pid="abc"), keep_record=True),
    "lease: a dead worker's": _leased(
        lambda path, origin: _lease_text(pid=_dead_pid())(path, origin)
    ),
    "a copied folder with a live lease": _leased(_copied),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both cells of a one-epoch tiny table trained once, in one campaign; each case copies it."""
    root = tmp_path_factory.mktemp("trained")
    spec = load_spec(write_spec(root / "specs", epochs_per_stage=[1]))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    run_table(spec, options(root, threads_per_cell=1), log=lambda line: None)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    return spec, root / "results"


def _did(cells, lines: list[str], err: str, ran: set[str]) -> dict[str, str]:
    """What the run did with each cell, from its log."""
    did = {}
    for cell in cells:
        said = [line for line in lines if f"] {cell}:" in line]
        if any("done already" in line for line in said):
            did[cell] = REUSES
        elif any("waiting" in line for line in said):
            did[cell] = WAITS
        elif f".{cell}.lease: " in err and cell in ran:
            did[cell] = TAKES_OVER
        else:
            did[cell] = TRAINS if cell in ran else "nothing"
    return did


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_status_says_what_the_next_run_does_with_every_cell(
    trained, tmp_path, case, monkeypatch, capsys
):
    spec, origin = trained
    results = tmp_path / "results"
    shutil.copytree(origin, results, symlinks=True)
    CASES[case](results, origin)
    monkeypatch.setattr(lease, "EXPIRY", 8.0)  # a copied lease expires within the test
    states = cell_states(spec, "smoke", results)
    told = _told(spec, states)
    lines, ran = [], set()
    opts = replace(options(tmp_path, threads_per_cell=1), results=results)
    try:
        ran = {r.cell for r in run_table(spec, opts, log=lines.append)}
    except UsageError as e:
        assert told == dict.fromkeys(told, REFUSES), e
        assert any(str(e) in note for note in states.notes), (str(e), states.notes)
    else:
        err = capsys.readouterr().err
        assert told == _did(told, lines, err, ran), (lines, err)
        left = sorted(p.name for p in results.rglob(".*") if p.name != CAMPAIGN_FILE)
        assert left == ([f".{IWAE}.lease"] if "beside a finished record" in case else []), left
    assert told == {s.cell: s.next_run for s in states}, "the state word and next_run disagree"


def test_a_reference_without_a_campaign_file_is_said_so(tmp_path, tiny):
    write_record(tmp_path, _record(VAE, "ok", settings={"_campaign": "then"}))
    states = cell_states(tiny, "smoke", tmp_path)
    vae = {s.cell: s for s in states}[VAE]
    assert vae.state == "reference" and "this folder has none yet" in vae.detail
    assert any("no campaign file yet" in note for note in states.notes)


def test_a_record_that_is_a_fifo_is_not_opened(tmp_path, tiny):
    path = record_path(tmp_path, "tiny", "smoke", VAE)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    vae = {s.cell: s for s in cell_states(tiny, "smoke", tmp_path)}[VAE]
    assert vae.state == "unreadable" and "a FIFO, not a record" in vae.detail
