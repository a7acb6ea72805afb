"""Who may work on a cell, and which records a results folder may reuse; no torch here.

A results folder is one *campaign*: the first run in it writes `<results>/.campaign` (a random
id, git-ignored), and every record it makes carries that id. A finished cell is reused when its
record has the same reuse key (settings, seed, data sums, code hash) and the folder's campaign,
wherever and by whichever machine it was made: a folder copied to another path or host keeps its
campaign, while a fresh clone (whose committed records name the campaign they were made in) gets
a new one and trains, so the committed records stay references for `bench check`.

A cell being trained holds a *lease*: `.<cell>.lease` beside its record, made with an exclusive
create (atomic on local file systems and on NFS v3+, where flock is not shared between clients).
Its holder rewrites it every HEARTBEAT seconds with its progress; a lease whose file was not
touched for EXPIRY seconds, or whose process is gone from this host, belongs to a process that
died, and another worker may take the cell over (it resumes from the cell's checkpoint).
`bench status` reads leases and records only.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

CAMPAIGN_FILE = ".campaign"
HEARTBEAT = float(os.environ.get("DGM_BENCH_LEASE_HEARTBEAT", "20"))
EXPIRY = float(os.environ.get("DGM_BENCH_LEASE_EXPIRY", "120"))


class LeaseLost(Exception):
    """Another worker took this cell over (this one looked dead to it): stop training it."""


def campaign(results: Path) -> str:
    """The campaign id of a results folder, created by the first run that asks for it."""
    path = results / CAMPAIGN_FILE
    results.mkdir(parents=True, exist_ok=True)
    new = uuid.uuid4().hex[:16]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        for _ in range(50):  # another process is writing it right now
            text = path.read_text().strip()
            if text:
                return text.split()[0]
            time.sleep(0.02)
        raise OSError(f"{path}: empty campaign file; delete it to start a new campaign") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{new} created {time.strftime('%Y-%m-%dT%H:%M:%S')} on {socket.gethostname()}\n")
    return new


def lease_path(record: Path) -> Path:
    return record.with_name(f".{record.stem}.lease")


@dataclass
class LeaseInfo:
    """What a lease file says: who holds the cell, since when, and how far it got."""

    token: str
    host: str
    pid: int
    worker: str = ""
    since: float = 0.0  # when this holder took the cell (time.time())
    step: int = 0  # training steps done, of `steps`
    steps: int = 0
    step0: int = 0  # steps already done when this holder started (a resumed cell)
    epoch: int = 0
    epochs: int = 0
    phase: str = "starting"  # starting, training, evaluating
    images: int = 0  # test images scored so far, of `of_images` (evaluating)
    of_images: int = 0
    eval_since: float = 0.0  # when the test pass began (time.time())
    age: float = field(default=0.0, compare=False)  # seconds since the file was last written

    @property
    def stale(self) -> bool:
        """Its holder died: silent for EXPIRY seconds, or gone from this very host."""
        return self.age > EXPIRY or (self.host == socket.gethostname() and not _alive(self.pid))

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left for the training steps or the test pass, from this holder's own pace
        (None if unknown)."""
        if self.phase == "evaluating":
            done, left, since = self.images, self.of_images - self.images, self.eval_since
        else:
            done, left, since = self.step - self.step0, self.steps - self.step, self.since
        if self.phase not in ("training", "evaluating") or done <= 0 or not since:
            return None
        return ((now or time.time()) - since) / done * left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _old(path: Path) -> bool:
    """A file not written for EXPIRY seconds (an unreadable lease expires like a readable one)."""
    try:
        return time.time() - path.stat().st_mtime > EXPIRY
    except OSError:
        return False


def read_lease(path: Path) -> LeaseInfo | None:
    """The lease at `path`, or None when there is none (or it is being written)."""
    try:
        text, mtime = path.read_text(), path.stat().st_mtime
        data = json.loads(text)
        data.pop("age", None)
        info = LeaseInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
    info.age = max(0.0, time.time() - mtime)
    return info


class Lease:
    """The right to train one cell, kept alive by a heartbeat thread while held."""

    def __init__(self, path: Path, worker: str = ""):
        self.path = path
        self.info = LeaseInfo(
            token=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), worker=worker
        )
        self.lost = False  # another worker took the cell over (we looked stale to it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> LeaseInfo | None:
        return read_lease(self.path)

    def acquire(self) -> bool:
        """Take the cell if nobody holds it, or if its holder's lease expired (a lease file
        that cannot be read, e.g. left empty by a crash, expires like any other)."""
        if self._create():
            return True
        held = read_lease(self.path)
        if held is None and not _old(self.path):
            return False
        if held is not None and not held.stale:
            return False
        return self._take_over(held) and self._create()

    def _create(self) -> bool:
        self.info.since = time.time()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self.info)))
        self._thread = threading.Thread(target=self._beat, daemon=True, name="lease-heartbeat")
        self._thread.start()
        return True

    def _take_over(self, stale: LeaseInfo | None) -> bool:
        """Move a dead holder's lease aside. Two workers may both judge it stale: the rename lets
        one of them move it; a worker that moved a *fresh* lease (taken over a moment before)
        puts it back."""
        aside = self.path.with_name(f"{self.path.name}.{self.info.token}.expired")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = read_lease(aside)
        judged = None if stale is None else stale.token
        if (None if moved is None else moved.token) != judged:
            with contextlib.suppress(OSError):  # never over a lease that appeared meanwhile
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def progress(self, **fields) -> None:
        """Update what the next heartbeat writes (training step, epoch, phase); raises LeaseLost
        once another worker has taken the cell over, so this one stops training it."""
        if self.lost:
            raise LeaseLost(f"{self.path}: another worker took the cell over")
        for name, value in fields.items():
            setattr(self.info, name, value)

    def _beat(self) -> None:
        """Beat until released. An unexpected error in one beat (a progress field json cannot
        write, say) is named once and the beats go on: a heartbeat thread that died would let
        the lease expire while its worker still trains, and another worker would take over."""
        warned = False
        while not self._stop.wait(HEARTBEAT):
            try:
                self.beat()
            except Exception as e:
                if not warned:
                    print(f"warning: {self.path}: lease heartbeat failed ({type(e).__name__}: {e});"
                          " retrying every beat", file=sys.stderr)  # fmt: skip
                    warned = True

    def beat(self) -> None:
        """Rewrite the lease (its mtime is the heartbeat), unless another worker now holds it."""
        held = read_lease(self.path)
        if held is None and self.path.exists():
            return  # unreadable for a moment: try again at the next beat
        if held is None or held.token != self.info.token:
            self.lost = True  # taken over, or removed (a requeued Slurm task, a user): not ours
            return
        tmp = self.path.with_name(f"{self.path.name}.{self.info.token}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(self.info)))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def owned(self) -> bool:
        """Whether this lease is still ours (checked before a record is written)."""
        held = read_lease(self.path)
        return not self.lost and held is not None and held.token == self.info.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.owned():
            self.path.unlink(missing_ok=True)


def wait_for(path: Path, poll: float = 2.0, timeout: float | None = None) -> None:
    """Block while a live lease holds `path`: return once it is released or has expired."""
    start = time.monotonic()
    while True:
        held = read_lease(path)
        if held is None and not path.exists():
            return
        if (held is None and _old(path)) or (held is not None and held.stale):
            return
        if timeout is not None and time.monotonic() - start > timeout:
            return
        time.sleep(poll)
