"""bench.status: every cell's state from records and leases alone, without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import lease
from bench.lease import Lease, lease_path
from bench.records import Record, record_path, write_record
from bench.status import cell_states, render_status

from .conftest import IWAE, VAE


def _record(cell, status, **fields):
    return Record(table="tiny", tier="smoke", cell=cell, params={}, status=status, wall_s=90.0,
                  commit="abcdef123456", started="2026-12-03T06:00:00+00:00", **fields)  # fmt: skip


def test_running_ok_failed_stale_and_pending_cells(tmp_path, tiny, monkeypatch):
    results = tmp_path / "results"
    write_record(results, _record(VAE, "ok", settings={"_campaign": "other"}))
    (results / lease.CAMPAIGN_FILE).write_text("mine\n")
    states = {s.cell: s for s in cell_states(tiny, "smoke", results)}
    assert states[VAE].state == "ok" and "another campaign" in states[VAE].detail
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


def test_an_empty_campaign_file_is_no_campaign(tmp_path, tiny):
    (tmp_path / lease.CAMPAIGN_FILE).write_text("")
    assert {s.state for s in cell_states(tiny, "smoke", tmp_path)} == {"pending"}
