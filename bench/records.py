"""Result records: one JSON file per (table, tier, cell), written atomically.

A record carries everything needed to trust its numbers: the metrics and memory, the data that
was used (with checksums), seed, device, versions, git commit, the exact command and wall time.
Tables are rendered from records alone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

RESULTS_DIR = Path("results")


@dataclass
class Record:
    table: str
    tier: str
    cell: str
    params: dict[str, Any]
    status: str  # "ok", "failed" or "skipped" (e.g. its data set is absent)
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
    wall_s: float = 0.0
    deterministic: str = ""


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


def read_record(path: Path) -> Record:
    try:
        data = json.loads(path.read_text())
        return Record(**data)
    except (OSError, ValueError, TypeError) as e:
        raise RecordError(
            f"{path}: unreadable record ({type(e).__name__}: {e}); rerun its cell"
        ) from None


def read_records(root: Path, table: str, tier: str) -> tuple[dict[str, Record], list[str]]:
    """All readable records of a tier by cell id, and one warning line per unreadable file."""
    records, warnings = {}, []
    for path in sorted((root / table / tier).glob("*.json")):
        try:
            record = read_record(path)
        except RecordError as e:
            warnings.append(str(e))
            continue
        records[record.cell] = record
    return records, warnings


def _git(*args: str, cwd: Path = Path(__file__).parent) -> str:
    try:
        # Ask the checkout this code lives in, wherever `bench` was started from.
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def code_changed(cwd: Path = Path(__file__).parent) -> bool:
    """Whether tracked files differ from the commit, outputs aside: a run that rewrites
    `results/` and `tables/` must not mark the next run's code as modified."""
    outputs = [f":(top,exclude){d}" for d in ("results", "tables")]
    return bool(
        _git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outputs, cwd=cwd)
    )


def provenance() -> dict[str, Any]:
    """Commit, dirtiness and versions of what produced a record."""
    return {
        "commit": _git("rev-parse", "HEAD") or "unknown (not a git checkout)",
        "dirty": code_changed(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda or "none",
            "platform": platform.platform(),
        },
    }


def device_name(device: torch.device) -> str:
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


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
