"""Data sets of the benchmark tables behind one call: `load(name, data_dir)`.

Real data is read from `--data-dir DIR` in torchvision's layouts (fetched there only when the user
asks with `download=True`); `sample=True` reads the small real samples committed in bench/samples/
so that every table can be smoke-run anywhere. Every file read is checksummed into
`DataInfo.sha256` and checked against the sums known here, so a record always says exactly which
bytes it saw. `DATASETS` (catalog.py) describes each data set and names its loader; one loader
module per family.

In-memory data sets come back as `TensorDataset(x uint8 [N,C,H,W], y int64 [N])`: the harness
batches them by indexing, which is far faster on CPU than a DataLoader over PIL images.

Importing this package imports no torch (the catalog is read by commands that must stay light):
the loaders and the names below that need torch are imported on first use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from .catalog import DATASETS, DataSet, Sample

if TYPE_CHECKING:
    from .common import Splits

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DataError",
    "DataInfo",
    "DataSet",
    "SAMPLES_DIR",
    "Sample",
    "Splits",
    "fingerprint",
    "imagenet_transform",
    "load",
]
# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "CIFAR10_CLASSES": "cifar",
    "DataInfo": "common",
    "Splits": "common",
    "imagenet_transform": "imagenet",
    "SAMPLES_DIR": "samples",
}
_MODULES = ("cifar", "common", "imagenet", "mnist", "omniglot", "prep", "samples")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _undecodable() -> tuple[type[BaseException], ...]:
    """What decoding a damaged file raises; the loaders name the file where they know it, and
    this backstop names the data set's folder where they do not, so a run records "data corrupt"."""
    import gzip
    import pickle
    import tarfile
    import zipfile
    import zlib

    from PIL import UnidentifiedImageError

    return (
        EOFError,
        zlib.error,
        zipfile.BadZipFile,
        gzip.BadGzipFile,
        tarfile.TarError,
        pickle.UnpicklingError,
        UnidentifiedImageError,
    )


def _check_name(name: str) -> DataSet:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def _root(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise DataError(
            f"no data directory given for {name}: pass --data-dir DIR (or set $DGM_BENCH_DATA), "
            "or run the smoke tier (--tier smoke) on the committed samples"
        )
    return Path(data_dir).expanduser()


def load_for(
    name: str, settings: Any, data_dir: str | Path | None, seed: int, download: bool = False
) -> Splits:
    """Data set `name` as a tier's settings ask for it (committed sample or real data, how many
    images, their size): what every task and the plan load, written once."""
    return load(
        name,
        data_dir,
        sample=getattr(settings, "data", "real") == "sample",
        n_train=settings.n_train,
        n_test=settings.n_test,
        seed=seed,
        download=download,
        image_size=settings.image_size,
    )


def load(
    name: str,
    data_dir: str | Path | None,
    *,
    sample: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
) -> Splits:
    """Load data set `name` from `data_dir` (or its committed sample if `sample`).

    `n_train`/`n_test` take a seeded random subset (torch.Generator(seed)); `image_size` resizes
    in-memory images (antialiased) and sets ImageNet's crop size. The network is used only when
    `download` is true.
    """
    from . import samples
    from .common import corrupt, resize, subsample

    dataset = _check_name(name)
    if sample:
        splits = samples.load(name)
    else:
        root = _root(name, data_dir)
        try:
            splits = dataset.load(root, download=download, image_size=image_size)
        except _undecodable() as e:
            raise corrupt(root / name, e, f"a file of {name} cannot be decoded") from None
    splits = subsample(splits, n_train, n_test, seed)
    return splits if image_size is None else resize(splits, image_size)


def fingerprint(name: str, data_dir: str | Path | None, *, sample: bool = False) -> dict[str, str]:
    """sha256 of each file that `load` would read, without decoding anything: what a reuse key
    needs to tell two copies of a data set apart. Empty when the data is absent."""
    from . import samples
    from .common import sha256

    dataset = _check_name(name)
    if sample:
        paths = samples.files(name)
    elif data_dir is None:
        return {}
    else:
        paths = dataset.list_files(Path(data_dir).expanduser())
    return {p.name: sha256(p) for p in paths if p.is_file()}
