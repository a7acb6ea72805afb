"""bench.fingerprint: a cell's reuse key moves with its settings, data and code, and only those."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from bench import fingerprint
from bench.cell import cell_key
from bench.spec import get_spec, settings_for
from bench.tasks import TASKS, get_task

from .conftest import options


@pytest.fixture
def copy_of_the_code(tmp_path, monkeypatch):
    """The project's bench/ and models/ copied to tmp_path, with fingerprint reading there."""
    for folder in ("bench", "models"):
        shutil.copytree(
            fingerprint.ROOT / folder,
            tmp_path / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.npz"),
        )
    monkeypatch.setattr(fingerprint, "ROOT", tmp_path)
    return tmp_path


def edit(path, text="\n# an edit\n"):
    with open(path, "a") as f:
        f.write(text)


def test_the_code_hash_moves_with_the_models_and_tasks_code_only(copy_of_the_code):
    root = copy_of_the_code
    before = fingerprint.code(TASKS["likelihood"], ["vae"])
    edit(root / "bench" / "render.py")  # renders tables: no number depends on it
    edit(root / "models" / "revnet.py")  # another model family
    edit(root / "models" / "__init__.py")  # another registry entry
    assert fingerprint.code(TASKS["likelihood"], ["vae"]) == before
    for changed in (
        "models/iwae.py",
        "bench/tasks/likelihood.py",
        "bench/train.py",
        "bench/data/prep.py",
    ):
        edit(root / changed)
        after = fingerprint.code(TASKS["likelihood"], ["vae"])
        assert after != before, changed
        before = after


def test_imports_of_a_model_module_are_followed():
    files = {p.name for p in fingerprint.source_files(["models.iwae"])}
    assert files == {"iwae.py", "kernels.py"}  # its fused kernels compute its numbers too
    files = {
        str(p.relative_to(fingerprint.ROOT))
        for p in fingerprint.source_files(["bench.tasks.memory"])
    }
    assert {"bench/tasks/memory.py", "models/resnet.py", "bench/probe.py"} <= files


def test_the_key_moves_with_a_default_a_data_file_and_the_seed(tmp_path, monkeypatch):
    spec = get_spec("iwae-table")
    task = get_task(spec.task)
    cell = spec.cells("smoke")[0]
    settings = settings_for(task.Settings, spec, "smoke")
    key, made_from = cell_key(spec, cell, settings, options(tmp_path))
    assert made_from["_data"] == {"mnist.npz": made_from["_data"]["mnist.npz"]}
    assert made_from["nll_batch"] == 100  # a default the spec does not set is part of the key
    changed = dataclasses.replace(settings, nll_batch=50)
    assert cell_key(spec, cell, changed, options(tmp_path))[0] != key
    assert cell_key(spec, cell, settings, options(tmp_path, seed=1))[0] != key
    monkeypatch.setattr(fingerprint, "run_key", lambda *a: repr(a[3]))
    sums = {"mnist.npz": "0" * 64}
    monkeypatch.setattr("bench.data.fingerprint", lambda *a, **k: sums)
    assert cell_key(spec, cell, settings, options(tmp_path))[0] == repr(sums)
