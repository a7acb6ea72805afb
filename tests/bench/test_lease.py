"""bench.lease: one holder per cell, expired leases are taken over once, campaigns persist."""

from __future__ import annotations

import os
import time

import pytest

from bench import lease
from bench.lease import Lease, campaign, read_lease


def _age(path, seconds):
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_a_lease_has_one_holder_and_release_removes_it(tmp_path):
    path = tmp_path / ".cell.lease"
    first, second = Lease(path, worker="a"), Lease(path, worker="b")
    assert first.acquire()
    assert not second.acquire()
    assert read_lease(path).worker == "a" and first.owned()
    first.release()
    assert not path.exists()
    assert second.acquire()
    second.release()


def test_an_expired_lease_is_taken_over_and_its_old_holder_knows(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "EXPIRY", 5.0)
    path = tmp_path / ".cell.lease"
    dead, taker, late = Lease(path, "dead"), Lease(path, "taker"), Lease(path, "late")
    assert dead.acquire()
    dead._stop.set()  # its process stopped: no more heartbeats
    assert not taker.acquire()  # still fresh
    _age(path, 10)
    assert read_lease(path).stale
    assert taker.acquire()
    assert not late.acquire()  # a fresh lease again: no second take-over
    assert not dead.owned()
    dead.release()  # must not remove the taker's lease
    assert read_lease(path).worker == "taker"
    dead.beat()
    assert dead.lost and read_lease(path).worker == "taker"
    taker.release()
    assert list(tmp_path.iterdir()) == []


def test_a_take_over_that_moved_a_fresh_lease_puts_it_back(tmp_path, monkeypatch):
    """Two workers judged the same lease stale; the first took it over; the second moves the
    first's fresh lease aside by mistake and must restore it."""
    monkeypatch.setattr(lease, "EXPIRY", 5.0)
    path = tmp_path / ".cell.lease"
    dead, first, second = Lease(path, "dead"), Lease(path, "first"), Lease(path, "second")
    assert dead.acquire()
    dead._stop.set()
    _age(path, 10)
    judged = read_lease(path)
    assert first.acquire()
    assert not second._take_over(judged)
    assert read_lease(path).worker == "first" and first.owned()
    first.release()
    assert list(tmp_path.iterdir()) == []


def test_heartbeats_keep_a_lease_fresh_and_carry_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT", 0.05)
    path = tmp_path / ".cell.lease"
    held = Lease(path, "w")
    assert held.acquire()
    held.progress(phase="training", step=5, steps=10, epoch=0, epochs=2)
    _age(path, 1000)
    time.sleep(0.3)
    info = read_lease(path)
    assert info.age < 1 and (info.step, info.steps, info.phase) == (5, 10, "training")
    held.release()


def test_a_failing_beat_is_named_once_and_the_heartbeat_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lease, "HEARTBEAT", 0.05)
    path = tmp_path / ".cell.lease"
    held = Lease(path, "w")
    assert held.acquire()
    held.progress(phase=object())  # not JSON: every beat raises TypeError
    time.sleep(0.3)
    assert held._thread.is_alive()
    held.progress(phase="training")
    _age(path, 1000)
    time.sleep(0.3)
    assert read_lease(path).age < 1 and read_lease(path).phase == "training"
    held.release()
    err = capsys.readouterr().err
    assert err.count("lease heartbeat failed (TypeError") == 1


def test_the_campaign_is_made_once_and_kept(tmp_path):
    results = tmp_path / "results"
    first = campaign(results)
    assert campaign(results) == first and len(first) == 16
    assert campaign(tmp_path / "other") != first


def test_an_unreadable_lease_expires_like_any_other(tmp_path, monkeypatch):
    """A crash between creating a lease and writing it leaves an empty file: once it is older
    than the expiry it is taken over, and waiting for it does not spin."""
    monkeypatch.setattr(lease, "EXPIRY", 5.0)
    path = tmp_path / ".cell.lease"
    path.write_text("")
    taker = Lease(path, "taker")
    assert not taker.acquire()
    start = time.monotonic()
    lease.wait_for(path, poll=0.05, timeout=0.2)  # young: waits (until the timeout here)
    assert time.monotonic() - start >= 0.2
    _age(path, 10)
    lease.wait_for(path, poll=0.05)  # old: returns
    assert taker.acquire() and read_lease(path).worker == "taker"
    taker.release()


def test_a_removed_lease_is_not_written_back_and_training_stops(tmp_path):
    path = tmp_path / ".cell.lease"
    held = Lease(path, "w")
    assert held.acquire()
    held._stop.set()
    path.unlink()  # a requeued Slurm task's hook, or a user
    held.beat()
    assert held.lost and not path.exists()
    with pytest.raises(lease.LeaseLost, match="another worker took the cell over"):
        held.progress(step=1)
