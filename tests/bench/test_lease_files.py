"""Hostile lease and campaign files and lease timings (issue 33, L1-L3): no traceback, no hang, no
unbounded read; a lease that is not one is said by `bench status` and replaced by a run; bad
DGM_BENCH_LEASE_* values and unusable `.campaign` files are refused in one line."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import lease, status
from bench.cli import main
from bench.errors import UsageError
from bench.lease import CAMPAIGN_FILE, Lease, campaign, lease_path, read_lease
from bench.records import record_path
from bench.status import cell_states, render_status

from .conftest import IWAE, VAE

ROOT = Path(__file__).resolve().parents[2]


def _lease(**fields) -> str:
    good = {"token": "t0", "host": socket.gethostname(), "pid": os.getpid(), "worker": "w"}
    return json.dumps({**good, "since": time.time(), **fields})


def _write(text: str | bytes):
    def make(path: Path) -> None:
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return make


# The hostile probes of issue 33 (L1, L3): none of these is a lease a holder writes.
GARBAGE_LEASES = {
    "pid abc": _write(_lease(pid="abc")),
    "pid 2**70": _write(_lease(pid=2**70)),
    "pid -1": _write(_lease(pid=-1)),
    "since NaN": _write(_lease(since=float("nan"))),
    "since 1e30": _write(_lease(since=1e30)),
    "step abc": _write(_lease(step="abc", phase="training", steps=10)),
    "not an object": _write("[1, 2]"),
    "not JSON": _write("garbage\n"),
    "not UTF-8": _write(b"\xff\xfe\x00{"),
    "too large": _write(" " * 70000 + "{}"),
    "a folder": lambda path: path.mkdir(),
    "a FIFO": lambda path: os.mkfifo(path),
    "a link to /dev/zero": lambda path: path.symlink_to("/dev/zero"),
}
# `.campaign` files a run refuses (L3), each with words its one-line error says.
BAD_CAMPAIGNS = {
    "a folder": (lambda path: path.mkdir(), "a folder, not a campaign file"),
    "empty": (_write(""), "empty campaign file"),
    "not UTF-8": (_write(b"\xff\xfe\xfd\n"), "not UTF-8 text"),
    "a FIFO": (lambda path: os.mkfifo(path), "a FIFO, not a campaign file"),
    "a link to /dev/zero": (lambda p: p.symlink_to("/dev/zero"), "a character device, not a"),
    "a broken link": (lambda p: p.symlink_to(p.parent / "gone"), "a broken symbolic link"),
    "too large": (_write("x" * 100000), "100000 bytes, too large"),
}


def _limited():
    """A probe's process: 2 GiB of address space, so that an unbounded read fails, not the box."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _bench(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` bounded in time and memory (a FIFO hangs, /dev/zero never ends)."""
    command = [sys.executable, "-m", "bench", *map(str, args)]
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=30, cwd=ROOT, preexec_fn=_limited, env=env
    )


def _status(spec_dir, results, env=None) -> subprocess.CompletedProcess:
    return _bench(["status", "tiny", "--specs", spec_dir, "--results", results], env)


@pytest.mark.parametrize("kind", GARBAGE_LEASES)
def test_a_lease_that_is_no_lease_is_stale_replaced_and_leaves_nothing(tmp_path, kind, capsys):
    path = tmp_path / ".cell.lease"
    GARBAGE_LEASES[kind](path)
    start = time.monotonic()
    lease.wait_for(path, poll=0.05, timeout=5)  # returns at once: nobody holds the cell
    assert time.monotonic() - start < 1
    taker = Lease(path, "taker")
    assert taker.acquire()
    assert read_lease(path).worker == "taker" and taker.owned()
    assert f"{path}: replaced an unreadable lease (" in capsys.readouterr().err
    taker.release()
    assert list(tmp_path.iterdir()) == [], "a .expired or .tmp file was left behind"
    GARBAGE_LEASES[kind](path)
    held = lease.probe(path)
    assert isinstance(held, lease.Unreadable) and held.stale and read_lease(path) is None


@pytest.mark.parametrize("kind", GARBAGE_LEASES)
def test_status_says_an_unreadable_lease_and_what_to_do(tmp_path, spec_dir, tiny, kind):
    results = tmp_path / "results"
    path = lease_path(record_path(results, "tiny", "smoke", IWAE))
    path.parent.mkdir(parents=True)
    GARBAGE_LEASES[kind](path)
    done = _status(spec_dir, results)  # in a process of its own: a FIFO must not hang it
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    line = next(line for line in done.stdout.splitlines() if IWAE in line)
    assert "unreadable lease (" in line and "the next `bench run` replaces it" in line, line
    assert str(path) in line  # where it is, to delete it by hand
    state = {s.cell: s for s in cell_states(tiny, "smoke", results)}[IWAE]
    assert state.next_run == status.TAKES_OVER


def test_a_folder_with_files_where_a_lease_belongs_is_refused_not_removed(tmp_path, tiny):
    path = tmp_path / "here" / ".cell.lease"
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="a folder with files in it where the cell's lease"):
        Lease(path, "taker").acquire()
    assert (path / "notes.txt").read_text() == "mine"
    assert [p.name for p in path.parent.iterdir()] == [".cell.lease"]
    results = tmp_path / "results"
    held = lease_path(record_path(results, "tiny", "smoke", VAE))
    held.parent.mkdir(parents=True)
    path.rename(held)
    state = {s.cell: s for s in cell_states(tiny, "smoke", results)}[VAE]
    assert state.state == "unreadable lease" and state.next_run == status.REFUSES
    assert "moved away" in state.detail


def test_a_half_written_or_unreadable_lease_still_waits_for_the_expiry(tmp_path, monkeypatch):
    """Empty or cut short, a lease may be one being created right now; one this process may not
    read (another user's umask) may be live: those expire by their file's age, as before."""
    monkeypatch.setattr(lease, "EXPIRY", 5.0)
    path = tmp_path / ".cell.lease"
    for text in ("", _lease()[:30]):
        path.write_text(text)
        held = lease.probe(path)
        assert isinstance(held, lease.Unreadable) and held.maybe_live and not held.stale
        assert not Lease(path, "taker").acquire()
    if os.geteuid() != 0:  # root reads anything
        path.write_text(_lease())
        path.chmod(0)
        held = lease.probe(path)
        assert isinstance(held, lease.Unreadable) and "cannot read it" in held.reason
        assert not held.stale
        path.chmod(0o644)


def test_a_holder_never_writes_a_lease_the_reader_refuses(tmp_path):
    path = tmp_path / ".cell.lease"
    held = Lease(path, "odd\nworker")  # a name the reader refuses is written as its repr
    assert held.acquire() and read_lease(path).worker == "'odd\\nworker'"
    held._stop.set()
    held.progress(step=3.0, epoch=True)  # a whole float is a count; a bool is not
    past = time.time() - 100
    os.utime(path, (past, past))
    with pytest.raises(TypeError, match="epoch True is not a count"):
        held.beat()
    on_disk = read_lease(path)  # the last good lease stays, kept alive
    assert on_disk.token == held.info.token and on_disk.step == 0 and on_disk.age < 50
    held.progress(step=2**70, epoch=1)
    with pytest.raises(TypeError, match="step"):
        held.beat()
    held.progress(step=3)
    held.beat()
    assert read_lease(path).step == 3
    held.release()
    assert not path.exists()


def test_a_lease_overwritten_with_garbage_is_lost_to_its_holder(tmp_path):
    path = tmp_path / ".cell.lease"
    held = Lease(path, "w")
    assert held.acquire()
    held._stop.set()
    path.write_text(_lease(pid="abc"))  # any worker now replaces it at once
    held.beat()
    assert held.lost
    with pytest.raises(lease.LeaseLost):
        held.progress(step=1)


# --- L2: the lease timings from the environment ------------------------------------------------

BAD_TIMINGS = [
    ({"DGM_BENCH_LEASE_EXPIRY": "abc"}, "DGM_BENCH_LEASE_EXPIRY='abc' is not a number"),
    ({"DGM_BENCH_LEASE_EXPIRY": "nan"}, "DGM_BENCH_LEASE_EXPIRY=nan: expected seconds"),
    ({"DGM_BENCH_LEASE_EXPIRY": "inf"}, "DGM_BENCH_LEASE_EXPIRY=inf: expected seconds"),
    ({"DGM_BENCH_LEASE_EXPIRY": "0"}, "DGM_BENCH_LEASE_EXPIRY=0: expected seconds"),
    ({"DGM_BENCH_LEASE_EXPIRY": "-5"}, "DGM_BENCH_LEASE_EXPIRY=-5: expected seconds"),
    ({"DGM_BENCH_LEASE_HEARTBEAT": "0"}, "DGM_BENCH_LEASE_HEARTBEAT=0: expected seconds"),
    ({"DGM_BENCH_LEASE_HEARTBEAT": "-1"}, "DGM_BENCH_LEASE_HEARTBEAT=-1: expected seconds"),
    ({"DGM_BENCH_LEASE_HEARTBEAT": "NaN"}, "DGM_BENCH_LEASE_HEARTBEAT=NaN: expected seconds"),
    ({"DGM_BENCH_LEASE_EXPIRY": "30"}, "DGM_BENCH_LEASE_EXPIRY=30 is under three heartbeats"),
    (
        {"DGM_BENCH_LEASE_EXPIRY": "60", "DGM_BENCH_LEASE_HEARTBEAT": "30"},
        "DGM_BENCH_LEASE_EXPIRY=60 is under three heartbeats (DGM_BENCH_LEASE_HEARTBEAT=30)",
    ),
]


def test_bad_lease_timings_are_no_error_at_import():
    env = {**os.environ, "DGM_BENCH_LEASE_EXPIRY": "abc", "DGM_BENCH_LEASE_HEARTBEAT": "0"}
    code = "from bench import lease; print(lease.HEARTBEAT, lease.EXPIRY)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["20.0", "120.0"]  # never used: the command refuses them


@pytest.mark.parametrize(("env", "said"), BAD_TIMINGS)
def test_bad_lease_timings_are_refused_in_one_line(tmp_path, tiny, monkeypatch, capsys, env, said):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["--specs", str(tmp_path / "specs"), "--results", str(tmp_path / "results")]
    assert main(["status", "tiny", *args]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1 and err.startswith("error: "), err
    with pytest.raises(UsageError, match="DGM_BENCH_LEASE_"):
        campaign(tmp_path / "results")
    with pytest.raises(UsageError, match="DGM_BENCH_LEASE_"):
        Lease(tmp_path / ".cell.lease").acquire()
    assert not (tmp_path / ".cell.lease").exists()


def test_a_run_with_a_bad_expiry_trains_nothing(tmp_path, spec_dir, tiny, monkeypatch, capsys):
    monkeypatch.setenv("DGM_BENCH_LEASE_EXPIRY", "0")
    results = tmp_path / "results"
    folders = ["--results", results, "--tables", tmp_path / "t", "--checkpoints", tmp_path / "c"]
    assert main([str(a) for a in ["run", "tiny", "--specs", spec_dir, *folders]]) == 2
    assert "DGM_BENCH_LEASE_EXPIRY=0" in capsys.readouterr().err
    assert not list(results.rglob("*.json")) and not list(results.rglob("*.lease"))


def test_good_lease_timings_pass(monkeypatch):
    monkeypatch.setenv("DGM_BENCH_LEASE_EXPIRY", "60")
    monkeypatch.setenv("DGM_BENCH_LEASE_HEARTBEAT", "20")
    lease.check_environment()
    monkeypatch.setenv("DGM_BENCH_LEASE_EXPIRY", "")  # empty: unset, the default
    lease.check_environment()


# --- L3: the campaign file ---------------------------------------------------------------------

CAMPAIGN_PROBE = """
import sys
from pathlib import Path
from bench.errors import UsageError
from bench.lease import campaign
try:
    print(campaign(Path(sys.argv[1])))
except UsageError as e:
    print(e)
    sys.exit(2)
"""


@pytest.mark.parametrize("kind", BAD_CAMPAIGNS)
def test_an_unusable_campaign_file_is_refused_in_one_line(tmp_path, spec_dir, tiny, kind):
    make, said = BAD_CAMPAIGNS[kind]
    results = tmp_path / "results"
    results.mkdir()
    make(results / CAMPAIGN_FILE)
    start = time.monotonic()
    probe_it = [sys.executable, "-c", CAMPAIGN_PROBE, str(results)]
    done = subprocess.run(probe_it, capture_output=True, text=True, timeout=30, preexec_fn=_limited)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout.count("\n") == 1 and said in done.stdout, done.stdout
    assert str(results / CAMPAIGN_FILE) in done.stdout and "restore it" in done.stdout
    assert time.monotonic() - start < 30
    shown = _status(spec_dir, results)  # status says the same, and the cells stay visible
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert f"warning: {done.stdout.strip()} (`bench run` refuses" in shown.stdout
    assert {s.next_run for s in cell_states(tiny, "smoke", results)} == {status.REFUSES}


def test_a_campaign_file_reached_by_a_link_to_a_file_is_read(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (tmp_path / "id").write_text("abc123 created by hand\n")
    (results / CAMPAIGN_FILE).symlink_to(tmp_path / "id")
    assert campaign(results) == "abc123"


def test_render_status_names_the_campaign_problem_once(tmp_path, tiny):
    (tmp_path / CAMPAIGN_FILE).mkdir()
    text = render_status(tiny, "smoke", cell_states(tiny, "smoke", tmp_path))
    assert text.count("warning: ") == 1 and "a folder, not a campaign file" in text
