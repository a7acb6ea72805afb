"""Result records: one JSON file per (table, tier, cell), written atomically.

A record carries everything needed to trust its numbers: the metrics and memory, the data that
was used (with checksums), seed, device, versions, git commit, the exact command and wall time.
Tables are rendered from records alone.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from models.typecheck import as_json, why_not

from .errors import UsageError
from .files import NotAFile, read_small

RESULTS_DIR = Path("results")
TABLES_DIR = Path("tables")


@dataclass
class Record:
    table: str
    tier: str
    cell: str
    params: dict[str, Any]
    status: str  # one of STATUSES: "ok", "failed" or "skipped" (e.g. its data set is absent)
    metrics: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    seed: int = 0
    device: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    commit: str = ""
    dirty: bool = False
    command: str = ""
    started: str = ""
    wall_s: float = 0.0  # all segments of a resumed cell together
    # CPU seconds of the processes that trained it (all their threads), counted like wall_s: the
    # cost of the work at any load (None: recorded before it was kept).
    cpu_s: float | None = None
    deterministic: str = ""
    resumed: bool = False  # continued from a checkpoint written by an earlier process
    segments: int = 1  # processes that trained it
    detail: str = ""  # why a cell was skipped, as the table says it: "data absent", "data corrupt"
    plugin: dict[str, str] = field(default_factory=dict)  # a model from outside: models.provenance
    # Scored by `bench eval` from a checkpoint, not trained: its path, kind and sha256.
    evaluated_from: dict[str, Any] = field(default_factory=dict)
    # Made by `bench run --rehearse` (a few steps of the tier's exact configuration): proof that
    # the pipeline runs, never a result, a rendered measurement or a `bench check` reference.
    rehearsal: bool = False
    # The 1-, 5- and 15-minute load averages when the record was made: how busy the machine was
    # while the cell ran, which its wall time depends on (bench plan --against-records).
    load: list[float] = field(default_factory=list)


STATUSES = ("ok", "failed", "skipped")


class RecordError(Exception):
    """A record file that cannot be read; the message names the file."""


def record_path(root: Path, table: str, tier: str, cell: str) -> Path:
    return root / table / tier / f"{cell}.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide tables from other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(root: Path, record: Record) -> Path:
    path = record_path(root, record.table, record.tier, record.cell)
    atomic_write_text(path, json.dumps(asdict(record), indent=1, sort_keys=False) + "\n")
    return path


_FIELD_TYPES = {f.name: str(f.type) for f in fields(Record)}  # annotations as text
# The keys a non-empty `plugin` (models.provenance) and `evaluated_from` (bench eval) hold.
_NESTED = {
    "plugin": ("model", "constructor", "package", "version", "source_sha256"),
    "evaluated_from": ("path", "kind", "sha256"),
}


def _measurement(value: Any) -> bool:
    """What a task measures: a number, a list of numbers (active units per layer, per-image
    NLLs) or null (a standard error of one image); a string is never rendered as one."""
    items = value if isinstance(value, list) else [value]
    return value is None or all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in items
    )


def _invalid(record_dict: dict, path: Path) -> str:
    """What is wrong with a parsed record at `path`, or ""."""
    for name in (f.name for f in fields(Record) if f.name in record_dict):
        if why := why_not(record_dict[name], _FIELD_TYPES[name], as_json):
            return f"field '{name}': {why}"
    for name, keys in _NESTED.items():  # what the table prints of them must be there
        value = record_dict.get(name) or {}
        missing = next((k for k in keys if not isinstance(value.get(k), str)), None)
        if value and missing:
            return f"field '{name}': '{missing}' missing or not a string"
    if record_dict["status"] not in STATUSES:
        return f"field 'status': {record_dict['status']!r} is not one of {', '.join(STATUSES)}"
    for name, value in record_dict.get("metrics", {}).items():
        if not _measurement(value):
            return f"metric '{name}': {json.dumps(value)[:40]} is not a number or a list of numbers"
    table, tier, cell = record_dict["table"], record_dict["tier"], record_dict["cell"]
    if record_path(path.parent.parent.parent, table, tier, cell) != path:
        return f"it is the record of {table}/{tier}/{cell}, which does not belong at this path"
    return ""


RECORD_BYTES = 1 << 28  # far above any record (10,000 per-image NLLs and a history are < 1 MiB)


def read_record(path: Path) -> Record:
    """The record at `path`, checked against the Record field types and against its path. A
    path that is not a regular file (a FIFO would block the reader) is refused unopened."""
    try:
        data = json.loads(read_small(path, RECORD_BYTES, follow=True)[0])
        record = Record(**data)
    except NotAFile as e:
        raise RecordError(f"{path}: {e}, not a record; remove it and rerun its cell") from None
    except (OSError, ValueError, TypeError) as e:
        raise RecordError(
            f"{path}: unreadable record ({type(e).__name__}: {e}); rerun its cell"
        ) from None
    if why := _invalid(data, path):
        raise RecordError(f"{path}: invalid record ({why}); rerun its cell or remove the file")
    return record


def read_records(root: Path, table: str, tier: str) -> tuple[dict[str, Record], list[str]]:
    """All readable records of a tier by cell id, and one warning line per unreadable file.
    Rehearsal records are left out (with a warning): every table, claim, scoreboard and check
    reads records through here, so none of them can show a rehearsal as a measurement."""
    records, warnings = {}, []
    for path in sorted((root / table / tier).glob("*.json")):
        try:
            record = read_record(path)
        except RecordError as e:
            warnings.append(str(e))
            continue
        if record.rehearsal:
            warnings.append(
                f"{path}: a rehearsal record (`bench run --rehearse`), not a result;"
                " left out (move it to a scratch folder)"
            )
            continue
        records[record.cell] = record
    return records, warnings


def perf_folder(quick: bool) -> str:
    """Where `bench perf` writes: quick rounds are not numbers to quote, so they never replace
    the committed ones (and git ignores them)."""
    return "perf-quick" if quick else "perf"


def read_perf_records(root: Path, quick: bool = False) -> tuple[dict[str, dict], list[str]]:
    """`bench perf`'s records by benchmark, and one warning line per unreadable file.

    Here, not in bench.perf (which needs torch), so the scoreboard reads them too. A perf record
    is a JSON object with a "benchmark"; other timings kept beside them (benchmarks/
    jobs_speedup.py's `jobs*.json`) are not `bench perf`'s and are left out without a warning."""
    records, warnings = {}, []
    for path in sorted((root / perf_folder(quick)).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            warnings.append(
                f"{path}: unreadable perf record ({type(e).__name__}: {e}); rerun"
                " `bench perf` or remove the file"
            )
            continue
        if isinstance(data, dict) and "benchmark" in data:
            records[data["benchmark"]] = data
    return records, warnings


def _git(*args: str, cwd: Path = Path(__file__).parent) -> str:
    try:
        # Ask the checkout this code lives in, wherever `bench` was started from.
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


CODE_DIRS = ("bench", "models")  # where an untracked file is code that ran


def code_changed(cwd: Path = Path(__file__).parent) -> bool:
    """Whether the code differs from the commit: tracked files outside the outputs (a run that
    rewrites `results/` and `tables/` must not mark the next run's code as modified), or a new,
    not ignored file under bench/ or models/ (a new spec or model module the commit lacks)."""
    outputs = [f":(top,exclude){d}" for d in ("results", "tables")]
    code = [f":(top){d}" for d in CODE_DIRS]
    return bool(
        _git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outputs, cwd=cwd)
        or _git("ls-files", "--others", "--exclude-standard", "--", *code, cwd=cwd)
    )


def provenance() -> dict[str, Any]:
    """Commit, dirtiness and versions of what produced a record (torch is imported here, not at
    the top, so that reading and rendering records stays light)."""
    import numpy as np
    import torch
    import torchvision

    return {
        "commit": _git("rev-parse", "HEAD") or "unknown (not a git checkout)",
        "dirty": code_changed(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "cuda": torch.version.cuda or "none",
            "platform": platform.platform(),
        },
    }


def device_name(device) -> str:
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        name = f"cuda: {torch.cuda.get_device_name(device)}"
    else:
        name = f"cpu: {_cpu_model()}, {torch.get_num_threads()} threads"
    if dist.is_available() and dist.is_initialized():
        name += f", x{dist.get_world_size()} processes (DDP, {dist.get_backend()})"
    return name


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(argv: list[str] | None = None) -> str:
    """The command as it can be pasted back into a shell: `bench ARGV` where the CLI was called
    in-process with its own arguments, else this process's argv."""
    if argv is not None:
        return shlex.join(["bench", *argv])
    program = Path(sys.argv[0]).name
    return shlex.join(["bench" if program == "__main__.py" else program, *sys.argv[1:]])


def writable_folder(folder: Path, option: str) -> None:
    """Create `folder` if needed; a folder that cannot be written is a one-line UsageError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        why = "a file is in the way" if isinstance(e, FileExistsError) else e.strerror or e
        raise UsageError(
            f"{folder}: cannot write there ({why}); fix its permissions or pass {option} DIR"
        ) from None
