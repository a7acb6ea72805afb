"""Who may work on a cell, and which records a results folder may reuse; no torch here.

A results folder is one *campaign*: the first run in it writes `<results>/.campaign` (a random
id, git-ignored), and every record it makes carries that id. A finished cell is reused when its
record has the same reuse key (settings, seed, data sums, code hash) and the folder's campaign,
wherever and by whichever machine it was made: a folder copied to another path or host keeps its
campaign, while a fresh clone (whose committed records name the campaign they were made in) gets
a new one and trains, so the committed records stay references for `bench check`. A `.campaign`
that is not a small regular text file (a folder, a FIFO, /dev/zero, binary) is refused in one
line: it is never opened where opening could block or reading never end.

A cell being trained holds a *lease*: `.<cell>.lease` beside its record, made with an exclusive
create (atomic on local file systems and on NFS v3+, where flock is not shared between clients).
Its holder rewrites it every HEARTBEAT seconds with its progress; a lease whose file was not
touched for EXPIRY seconds, or whose process is gone from this host, belongs to a process that
died, and another worker may take the cell over (it resumes from the cell's checkpoint). A holder
writes only leases that pass the reader's checks, so a lease file that fails them (a bad pid or
time, a folder, a FIFO) was made by nothing that still holds the cell: a run replaces it at once
and says so. One that may be half-written (empty, cut short) or that this process may not read
expires like any other. `bench status` reads leases and records only.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import os
import socket
import stat
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UsageError
from .files import NotAFile, path_kind, read_small

CAMPAIGN_FILE = ".campaign"
CAMPAIGN_BYTES = 4096  # a campaign file is one line of about 60 bytes
LEASE_BYTES = 65536  # a lease is a few hundred bytes
HEARTBEAT_ENV, EXPIRY_ENV = "DGM_BENCH_LEASE_HEARTBEAT", "DGM_BENCH_LEASE_EXPIRY"
# Default, least and most seconds: a beat rewrites a file on a shared file system (not 1000 a
# second), and threading's waits overflow past about 292 years.
_SECONDS = {HEARTBEAT_ENV: (20.0, 0.1, 3600.0), EXPIRY_ENV: (120.0, 0.3, 7 * 86400.0)}
_RESTORE = (
    "move it away to start a new campaign (the next `bench run` trains every cell again), or"
    " restore it from a copy of this folder"
)


def _seconds(name: str) -> tuple[float, str | None]:
    """An environment variable's seconds (its default if unset or refused) and why it is refused."""
    default, least, most = _SECONDS[name]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default, None
    try:
        value = float(raw)
    except ValueError:
        return default, f"{name}={raw[:40]!r} is not a number of seconds"
    if not (math.isfinite(value) and least <= value <= most):
        return default, f"{name}={raw[:40]}: expected seconds from {least:g} to {most:g}"
    return value, None


HEARTBEAT = _seconds(HEARTBEAT_ENV)[0]  # a bad value is refused by check_environment, not here
EXPIRY = _seconds(EXPIRY_ENV)[0]


def check_environment() -> None:
    """Refuse bad lease timings before a command starts, in one line (UsageError): an expiry of 0
    lets two workers train one cell, NaN or inf waits forever, a heartbeat of 0 spins, and an
    expiry under three heartbeats expires a live worker's lease between two beats."""
    heartbeat, why = _seconds(HEARTBEAT_ENV)
    expiry, why_expiry = _seconds(EXPIRY_ENV)
    for reason, name in ((why, HEARTBEAT_ENV), (why_expiry, EXPIRY_ENV)):
        if reason:
            default = _SECONDS[name][0]
            raise UsageError(f"{reason}; set it to seconds or unset it (default {default:g})")
    if expiry < 3 * heartbeat:
        raise UsageError(
            f"{EXPIRY_ENV}={expiry:g} is under three heartbeats ({HEARTBEAT_ENV}={heartbeat:g}):"
            f" a live worker's lease would expire between beats; set it to at least"
            f" {3 * heartbeat:g} or lower the heartbeat"
        )


class LeaseLost(Exception):
    """Another worker took this cell over (this one looked dead to it): stop training it."""


class _Empty(UsageError):
    """An empty campaign file: being written right now, or left by a crash."""


def _campaign_id(path: Path) -> str | None:
    """The id in a campaign file (None: there is none); a file that is not one is a UsageError."""
    try:
        data, _ = read_small(path, CAMPAIGN_BYTES, follow=True)
    except FileNotFoundError:
        if os.path.lexists(path):
            broken = f"{path}: a broken symbolic link, not a campaign file; {_RESTORE}"
            raise UsageError(broken) from None
        return None
    except NotAFile as e:
        raise UsageError(f"{path}: {e}, not a campaign file; {_RESTORE}") from None
    except OSError as e:
        raise UsageError(
            f"{path}: cannot read the campaign file ({e.strerror or e}); fix its permissions,"
            f" or {_RESTORE}"
        ) from None
    try:
        words = data.decode().split()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text, not a campaign file; {_RESTORE}") from None
    if not words:
        raise _Empty(f"{path}: empty campaign file; {_RESTORE}")
    if len(words[0]) > 64 or not words[0].isprintable():
        raise UsageError(f"{path}: its first word is not a campaign id; {_RESTORE}")
    return words[0]


def read_campaign(results: Path) -> str | None:
    """The campaign id of a results folder without making one (None: it has none yet); a
    `.campaign` that `bench run` would refuse is the same one-line UsageError here."""
    return _campaign_id(results / CAMPAIGN_FILE)


def campaign(results: Path) -> str:
    """The campaign id of a results folder, created by the first run that asks for it."""
    return _open_campaign(results, None)[0]


def _open_campaign(results: Path, keep: str | None) -> tuple[str, bool]:
    """The folder's campaign id, and whether this call wrote the file: with a new id, or with
    `keep` where the file is missing (written again: see keep_campaign)."""
    check_environment()
    path = results / CAMPAIGN_FILE
    results.mkdir(parents=True, exist_ok=True)
    for _ in range(50):  # an empty file may be another process writing it right now
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                found = _campaign_id(path)
            except _Empty:
                found = None
            if found is not None:
                return found, False
            time.sleep(0.02)
            continue
        except OSError as e:
            raise UsageError(
                f"{path}: cannot create the campaign file ({e.strerror or e}); make {results}"
                " writable or pass another --results"
            ) from None
        new, how = (keep, "written again") if keep else (uuid.uuid4().hex[:16], "created")
        made = time.strftime("%Y-%m-%dT%H:%M:%S")
        with os.fdopen(fd, "w") as f:
            f.write(f"{new} {how} {made} on {socket.gethostname()}\n")
        return new, True
    raise _Empty(f"{path}: empty campaign file; {_RESTORE}")


class CampaignChanged(UsageError):
    """The results folder's campaign is no longer the one a running command started in."""


def keep_campaign(results: Path, started: str) -> bool:
    """Hold a running command to the campaign it started in, before each cell and each record.
    A `.campaign` removed under it is written again with that id (True: it was); one that now
    names another campaign is CampaignChanged, so that the command stops instead of training
    cells twice or leaving records of a campaign the folder no longer has."""
    found, written = _open_campaign(results, started)
    if found != started:
        raise CampaignChanged(
            f"{results / CAMPAIGN_FILE}: the campaign changed during this run (from {started}"
            f" to {found}): stopped; the cells' checkpoints are kept, and a rerun continues"
            " them in the folder's campaign"
        )
    return written


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
    at: float = 0.0  # when `step` (or `images`) last advanced; the heartbeat may be later
    folder: str = ""  # the records folder the lease was made in, and its "device:inode"
    folder_id: str = ""
    age: float = field(default=0.0, compare=False)  # seconds since the file was last written
    copied: bool = field(default=False, compare=False)  # made in another folder on this host

    @property
    def stale(self) -> bool:
        """Its holder died: silent for EXPIRY seconds, or gone from this very host."""
        return self.age > EXPIRY or (self.host == socket.gethostname() and not _alive(self.pid))

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left for the training steps or the test pass, from this holder's own pace
        (None if unknown). The pace is measured up to the last step, and the time since that
        step is taken off: heartbeats carry the step of their moment, so an estimate from the
        heartbeat's time alone would grow until the next one."""
        now = time.time() if now is None else now
        if self.phase == "evaluating":
            done, left, since = self.images, self.of_images - self.images, self.eval_since
        else:
            done, left, since = self.step - self.step0, self.steps - self.step, self.since
        if self.phase not in ("training", "evaluating") or done <= 0 or left < 0 or not since:
            return None
        at = self.at or now - self.age  # a lease without `at`: its heartbeat's time
        if at <= since:
            return None
        return max(0.0, (at - since) / done * left - max(0.0, now - at))


@dataclass(frozen=True)
class Unreadable:
    """A lease file that cannot be read, and why. One that may be half-written or that this
    process may not read may still be a live holder's: it expires like a lease (EXPIRY seconds
    without a write); any other was made by no holder and is stale at once."""

    path: Path
    reason: str
    age: float
    maybe_live: bool
    ident: tuple[int, int, int]  # device, inode and (for a file) mtime: what a take-over moves
    has_files: bool = False  # a folder with something in it: never removed, the user moves it

    @property
    def stale(self) -> bool:
        return not self.maybe_live or self.age > EXPIRY


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


_TEXTS = {"token": 64, "host": 255, "worker": 255, "phase": 64, "folder": 4096, "folder_id": 64}
_COUNTS = ("step", "steps", "step0", "epoch", "epochs", "images", "of_images")
_TIMES = ("since", "eval_since", "at")
_KEYS = {"token", "host", "pid", *_TEXTS, *_COUNTS, *_TIMES}


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _invalid(data) -> str | None:
    """Why `data` is not a lease that a holder could have written (None: it is one)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for name in ("token", "host", "pid"):
        if name not in data:
            return f"no {name}"
    for name, most in _TEXTS.items():
        value = data.get(name, "")
        if not (isinstance(value, str) and len(value) <= most and value.isprintable()):
            return f"{name} {_show(value)} is not a name"
    if not (data["token"] and data["host"]):
        return "an empty token or host"
    pid = data["pid"]
    if type(pid) is not int or not 0 < pid < 2**31:
        return f"pid {_show(pid)} is not a process id"
    for name in _COUNTS:
        value = data.get(name, 0)
        if type(value) is not int or not 0 <= value < 2**53:
            return f"{name} {_show(value)} is not a count"
    for name in _TIMES:
        value = data.get(name, 0.0)
        if type(value) not in (int, float) or not (math.isfinite(value) and 0 <= value <= 1e10):
            return f"{name} {_show(value)} is not a time"
    return None


def _plain(name: str, value):
    """A progress value as the lease stores it: a count that is a numpy integer or a whole float
    is an int, a time a float, so that a caller's type never stops the heartbeat."""
    if isinstance(value, bool):
        return value
    try:
        if name in _COUNTS:
            whole = isinstance(value, float) and value.is_integer()
            return int(value) if whole else operator.index(value)
        if name in _TIMES:
            return float(value)
    except (TypeError, ValueError, OverflowError):
        pass
    return value


def _encode(info: LeaseInfo) -> str:
    """The lease as its holder writes it; a field the reader would refuse is a TypeError here, so
    that no holder ever writes a lease that another worker would replace as garbage."""
    data = {k: v for k, v in asdict(info).items() if k in _KEYS}
    why = _invalid(data)
    if why:
        raise TypeError(f"lease field {why}")
    return json.dumps(data, allow_nan=False)


def _folder_id(folder: Path) -> str:
    try:
        st = os.stat(folder)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def _printable(text: str, most: int) -> str:
    """`text` if a lease may carry it as a name, else its repr (cut): a holder's own lease must
    pass the reader's checks."""
    return text if len(text) <= most and text.isprintable() else repr(text)[:most]


def probe(path: Path) -> LeaseInfo | Unreadable | None:
    """What is at a lease's path: nothing (None), a lease, or why it is not one. Never opens a
    FIFO or a device, and reads at most LEASE_BYTES."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return Unreadable(path, f"cannot look at it ({e.strerror or e})", 0.0, True, (0, 0, 0))

    def unreadable(reason: str, maybe_live: bool = False, has_files: bool = False):
        mtime = st.st_mtime_ns if stat.S_ISREG(st.st_mode) else 0
        age = max(0.0, time.time() - st.st_mtime)
        return Unreadable(path, reason, age, maybe_live, (st.st_dev, st.st_ino, mtime), has_files)

    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path) as entries:
                has_files = next(entries, None) is not None
        except OSError:
            has_files = True
        what = "a folder with files in it" if has_files else "a folder"
        return unreadable(what, has_files=has_files)
    if not stat.S_ISREG(st.st_mode):
        return unreadable(f"{path_kind(st.st_mode)}, not a lease file")
    try:
        data, st = read_small(path, LEASE_BYTES, follow=False)
    except FileNotFoundError:
        return None  # released meanwhile
    except NotAFile as e:
        return unreadable(f"{e}, not a lease file")
    except OSError as e:  # permissions (another user's umask), NFS: may be a live one
        return unreadable(f"cannot read it ({e.strerror or e})", maybe_live=True)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return unreadable("not UTF-8 text")
    if not text.strip():
        return unreadable("empty", maybe_live=True)  # created, not yet written (or a crash)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        cut = text.lstrip().startswith("{") and not text.rstrip().endswith("}")
        return unreadable("cut short" if cut else "not JSON", maybe_live=cut)
    why = _invalid(obj)
    if why:
        return unreadable(why)
    info = LeaseInfo(**{k: v for k, v in obj.items() if k in _KEYS})
    info.age = max(0.0, time.time() - st.st_mtime)
    info.copied = (
        bool(info.folder_id)
        and info.host == socket.gethostname()
        and info.folder_id != _folder_id(path.parent)
    )
    return info


def read_lease(path: Path) -> LeaseInfo | None:
    """The lease at `path`, or None when there is none or it cannot be read (see probe)."""
    held = probe(path)
    return held if isinstance(held, LeaseInfo) else None


def _same(judged: LeaseInfo | Unreadable, moved: LeaseInfo | Unreadable | None) -> bool:
    """Whether what a take-over moved aside is the lease it judged stale, not a newer one."""
    if isinstance(judged, LeaseInfo):
        return isinstance(moved, LeaseInfo) and moved.token == judged.token
    return isinstance(moved, Unreadable) and moved.ident == judged.ident


def _remove(path: Path) -> None:
    """Remove a moved-aside lease; a folder only when empty (never a user's files)."""
    if stat.S_ISDIR(os.lstat(path).st_mode):
        os.rmdir(path)
    else:
        path.unlink(missing_ok=True)


def _put_back(aside: Path, path: Path) -> None:
    """Return a lease moved aside by mistake, never over a lease that appeared meanwhile."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(aside).st_mode):
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            aside.unlink()
        elif not os.path.lexists(path):
            os.rename(aside, path)


class Lease:
    """The right to train one cell, kept alive by a heartbeat thread while held."""

    def __init__(self, path: Path, worker: str = ""):
        self.path = path
        self.info = LeaseInfo(
            token=uuid.uuid4().hex,
            host=_printable(socket.gethostname(), 255) or "unknown",
            pid=os.getpid(),
            worker=_printable(worker, 255),
        )
        self.lost = False  # another worker took the cell over (we looked stale to it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> LeaseInfo | None:
        return read_lease(self.path)

    def acquire(self) -> bool:
        """Take the cell if nobody holds it, or if its lease is stale: its holder died, or the
        file is not a lease at all (replaced at once, and said on stderr)."""
        check_environment()
        if self._create():
            return True
        held = probe(self.path)
        if held is None:
            return self._create()
        if not held.stale:
            return False
        if isinstance(held, Unreadable) and held.has_files:
            raise UsageError(
                f"{self.path}: a folder with files in it where the cell's lease belongs; move"
                " it away, then rerun"
            )
        if not (self._take_over(held) and self._create()):
            return False
        if isinstance(held, Unreadable):
            said = f"replaced an unreadable lease ({held.reason})"
        else:
            said = f"took the cell over from {held.worker or held.pid} on {held.host}, last seen"
            said += f" {held.age:.0f} s ago"
        print(f"{self.path}: {said}", file=sys.stderr)
        return True

    def _create(self) -> bool:
        self.info.since = time.time()
        folder = os.path.realpath(self.path.parent)
        self.info.folder = folder if _printable(folder, 4096) == folder else ""
        self.info.folder_id = _folder_id(self.path.parent)
        text = _encode(self.info)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self._thread = threading.Thread(target=self._beat, daemon=True, name="lease-heartbeat")
        self._thread.start()
        return True

    def _take_over(self, stale: LeaseInfo | Unreadable) -> bool:
        """Move a dead holder's lease (or a file that is none) aside and remove it. Two workers
        may both judge it stale: the rename lets one of them move it; a worker that moved a
        *fresh* lease (taken over a moment before) puts it back."""
        aside = self.path.with_name(f"{self.path.name}.{self.info.token}.expired")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise UsageError(
                f"{self.path}: cannot move the stale lease aside ({e.strerror or e}); remove it,"
                " then rerun"
            ) from None
        if not _same(stale, probe(aside)):
            _put_back(aside, self.path)
            return False
        try:
            _remove(aside)
        except OSError as e:  # a folder that got files meanwhile: put it back, said
            _put_back(aside, self.path)
            raise UsageError(
                f"{self.path}: cannot remove the stale lease ({e.strerror or e}); move it away,"
                " then rerun"
            ) from None
        return True

    def progress(self, **fields) -> None:
        """Update what the next heartbeat writes (training step, epoch, phase); raises LeaseLost
        once another worker has taken the cell over, so this one stops training it."""
        if self.lost:
            raise LeaseLost(f"{self.path}: another worker took the cell over")
        for name, value in fields.items():
            setattr(self.info, name, _plain(name, value))
        if "step" in fields or "images" in fields:
            self.info.at = time.time()

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
                    message = f"lease heartbeat failed ({type(e).__name__}: {e})"
                    print(f"warning: {self.path}: {message}; retrying every beat", file=sys.stderr)
                    warned = True

    def beat(self) -> None:
        """Rewrite the lease (its mtime is the heartbeat), unless another worker now holds it."""
        held = probe(self.path)
        if isinstance(held, Unreadable) and held.maybe_live:
            return  # unreadable for a moment: try again at the next beat
        if not isinstance(held, LeaseInfo) or held.token != self.info.token:
            # Taken over, removed (a requeued Slurm task, a user) or overwritten with something
            # that is no lease (which any worker replaces at once): not ours any more.
            self.lost = True
            return
        try:
            text = _encode(self.info)
        except TypeError:  # keep the lease alive with its last good progress, and say why
            with contextlib.suppress(OSError):
                os.utime(self.path)
            raise
        tmp = self.path.with_name(f"{self.path.name}.{self.info.token}.tmp")
        try:
            tmp.write_text(text)
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
    """Block while a live lease holds `path`: return once it is released or stale."""
    start = time.monotonic()
    while True:
        held = probe(path)
        if held is None or held.stale:
            return
        if timeout is not None and time.monotonic() - start > timeout:
            return
        time.sleep(poll)
