"""Data sets of the benchmark tables behind one call: `load(name, data_dir)`.

Real data is read from `--data-dir DIR` in torchvision's layouts (fetched there only when the user
asks with `download=True`); `sample=True` reads the small real samples committed in bench/samples/
so that every table can be smoke-run anywhere. Every file read is checksummed into
`DataInfo.sha256` and checked against the sums known here, so a record always says exactly which
bytes it saw. One module per family; `SOURCES` maps each data set name to its loader.

In-memory data sets come back as `TensorDataset(x uint8 [N,C,H,W], y int64 [N])`: the harness
batches them by indexing, which is far faster on CPU than a DataLoader over PIL images.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import UnidentifiedImageError

from . import cifar, imagenet, mnist, omniglot, samples
from .cifar import CIFAR10_CLASSES
from .common import DataError, DataInfo, Splits, corrupt, resize, sha256, subsample
from .imagenet import imagenet_transform
from .samples import SAMPLE_SHA256, SAMPLES_DIR

__all__ = [
    "CIFAR10_CLASSES", "DataError", "DataInfo", "SAMPLES_DIR", "SAMPLE_SHA256", "SOURCES",
    "Splits", "fingerprint", "imagenet_transform", "load",
]  # fmt: skip


@dataclass(frozen=True)
class Source:
    load: Callable[..., Splits]  # (root, download=, image_size=) -> Splits
    files: Callable[[Path], list[Path]]  # the files `load` reads, for reuse keys


SOURCES: dict[str, Source] = {
    "mnist": Source(mnist.load, mnist.files),
    "binarized_mnist": Source(mnist.load_binarized, mnist.binarized_files),
    "omniglot": Source(omniglot.load, omniglot.files),
    "cifar10": Source(partial(cifar.load, name="cifar10"), partial(cifar.files, name="cifar10")),
    "cifar100": Source(partial(cifar.load, name="cifar100"), partial(cifar.files, name="cifar100")),
    "cifar10_lossless": Source(cifar.load_lossless, cifar.lossless_files),
    "imagenet": Source(imagenet.load, imagenet.files),
}
NAMES = tuple(SOURCES)
# What decoding a damaged file raises; the loaders name the file where they know it, and this
# backstop names the data set's folder where they do not, so a run records "data corrupt".
UNDECODABLE = (EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile, tarfile.TarError,
               pickle.UnpicklingError, UnidentifiedImageError)  # fmt: skip


def _check_name(name: str) -> None:
    if name not in SOURCES:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(SOURCES)}")


def _root(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise DataError(
            f"no data directory given for {name}: pass --data-dir DIR (or set $DGM_BENCH_DATA), "
            "or run the smoke tier (--tier smoke) on the committed samples"
        )
    return Path(data_dir).expanduser()


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
    _check_name(name)
    if sample:
        splits = samples.load(name)
    else:
        root = _root(name, data_dir)
        try:
            splits = SOURCES[name].load(root, download=download, image_size=image_size)
        except UNDECODABLE as e:
            raise corrupt(root / name, e, f"a file of {name} cannot be decoded") from None
    splits = subsample(splits, n_train, n_test, seed)
    return splits if image_size is None else resize(splits, image_size)


def fingerprint(name: str, data_dir: str | Path | None, *, sample: bool = False) -> dict[str, str]:
    """sha256 of each file that `load` would read, without decoding anything: what a reuse key
    needs to tell two copies of a data set apart. Empty when the data is absent."""
    _check_name(name)
    if sample:
        paths = samples.files(name)
    elif data_dir is None:
        return {}
    else:
        paths = SOURCES[name].files(Path(data_dir).expanduser())
    return {p.name: sha256(p) for p in paths if p.is_file()}
