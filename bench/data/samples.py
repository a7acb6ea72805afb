"""The small real samples committed in bench/samples/, so that every table smoke-runs offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .catalog import DATASETS
from .common import DataError, Splits, sha256, tensor_splits

SAMPLES_DIR = Path(__file__).parent.parent / "samples"


def files(name: str) -> list[Path]:
    return [SAMPLES_DIR / f"{name}.npz"]


def load(name: str) -> Splits:
    """The sample of `name`, after checking its sum against the catalog's."""
    path = SAMPLES_DIR / f"{name}.npz"
    sample = DATASETS[name].sample if name in DATASETS else None
    if sample is None or not path.is_file():
        have = [n for n, d in DATASETS.items() if d.sample is not None]
        raise DataError(
            f"no committed smoke sample for {name}: expected {path}; samples exist for"
            f" {', '.join(have)}"
        )
    got = sha256(path)
    if got != sample.sha256:
        raise DataError(
            f"checksum mismatch for smoke sample {path}: expected sha256 {sample.sha256},"
            f" got {got}; restore it from git or rebuild it with"
            " `python -m bench.samples.make_samples --data-dir DIR`",
            corrupt=True,
        )
    with np.load(path) as z:
        x_train, y_train = z["x_train"], z["y_train"]
        has_test = "x_test" in z.files
        x_test, y_test = (z["x_test"], z["y_test"]) if has_test else (x_train, y_train)
    return tensor_splits(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        source=f"committed smoke sample bench/samples/{name}.npz ({sample.source})",
        sha256={path.name: got},
        notes="" if has_test else "too few images to split: test = the train images",
        lossy=sample.lossy,
    )
