"""What a cell's result depends on, as short hashes: the reuse key of a record.

A record is reused only when its cell, seed, resolved settings (every field, defaults included),
the bytes of the data it reads and the source of the code that computes it are all unchanged,
and it belongs to the results folder's campaign (bench/lease.py: a fresh clone retrains, so its
first run shows the pipeline working rather than the committed records). Neither the host nor
the path enters the key: a cell made on one machine is reused by another sharing the folder.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import models

from .tasks import Task

ROOT = Path(__file__).resolve().parent.parent
# Not hashed whole: the registries (a cell depends on its own entry, hashed by name, not on the
# others in the file) and bench/__init__.py (the package's docstring and version only).
REGISTRIES = ("models/__init__.py", "bench/__init__.py", "bench/tasks/__init__.py")


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    """The file of a project module, found without importing it (None for a name in a module)."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _local_imports(path: Path, package: str) -> set[str]:
    """Modules of this project that `path` imports (absolute or relative), by AST."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] in ("models", "bench")}


def source_files(modules: list[str]) -> list[Path]:
    """The files of `modules` and of every project module they import, transitively."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None or str(path.relative_to(ROOT)) in REGISTRIES:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_local_imports(path, package))
    return sorted(set(seen.values()))


def code(task: Task, model_names: list[str]) -> str:
    """Hash of the source that computes a cell: its task module and the modules of its models,
    with what they import from the project, and the inputs the task declares (the CLI,
    rendering and plotting are not among them)."""
    modules = [task.module] + [
        models.MODELS[m].split(":")[0] for m in model_names if m in models.MODELS
    ]
    files = set(source_files(modules))
    for rel in task.inputs:
        path = ROOT / rel
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    sources = {str(p.relative_to(ROOT)): p.read_bytes().decode() for p in sorted(files)}
    for m in model_names:  # a model from outside the repository: its package's source
        if m not in models.MODELS:
            sources[f"plugin {m}"] = models.provenance(m).get("source_sha256", "")
    return _digest(sources)


def run_key(settings: dict, seed: int, params: dict, data: dict, code_hash: str) -> str:
    """Identifies what a record or checkpoint was made from; a change means start the cell over."""
    return _digest([settings, seed, params, data, code_hash])[:12]
