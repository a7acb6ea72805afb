"""What every data source shares: the error, the record of what was read, checksums, subsets."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision.transforms import v2

from ..errors import DataError  # defined apart, so the CLI catches it without torch


@dataclass(frozen=True)
class DataInfo:
    """What a record must say about its data: where it came from and exactly which bytes."""

    name: str
    source: str  # human-readable origin, e.g. which copy or layout was read
    n_train: int  # sizes actually used, after any subset
    n_test: int
    sha256: dict[str, str]  # file name -> sha256 of the files read (verified where known)
    notes: str = ""  # preprocessing and subsetting applied
    lossy: bool = False  # re-encoded with loss (the CIFAR-10 JPEG copy): no likelihoods on it


@dataclass
class Splits:
    """Items are (x uint8 C x H x W, y int64); in-memory sets are TensorDatasets."""

    train: Dataset
    test: Dataset
    info: DataInfo


_SUMS: dict[tuple[str, int, int], str] = {}


def sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so reuse checks hash each file once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SUMS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SUMS[key] = digest.hexdigest()
    return _SUMS[key]


def corrupt(path: Path | str, error: BaseException, what: str = "") -> DataError:
    """A file that exists but cannot be decoded (truncated, random bytes, another format), whose
    sum is not known here: the same "data corrupt" skip as a failed checksum, naming the file."""
    why = " ".join(str(error).split())[:120]
    return DataError(
        f"data corrupt: {path}: {what or 'cannot be decoded'} ({type(error).__name__}"
        f"{': ' + why if why else ''}); replace it with an intact copy",
        corrupt=True,
    )


def verified(root: Path, rel: str, known: dict[str, str]) -> str:
    """sha256 of `root/rel`, which must equal known[rel] where that sum is known."""
    got = sha256(root / rel)
    expected = known.get(rel)
    if expected is not None and got != expected:
        raise DataError(
            f"checksum mismatch for {root / rel}: expected sha256 {expected}, got {got};"
            " the file is corrupt or a different version - download it again",
            corrupt=True,
        )
    return got


def tensor_splits(name, x_train, y_train, x_test, y_test, source, sha256, notes="", lossy=False):
    def dataset(x, y):
        x = torch.as_tensor(np.asarray(x), dtype=torch.uint8).contiguous()
        return TensorDataset(x, torch.as_tensor(np.asarray(y)).long())

    train, test = dataset(x_train, y_train), dataset(x_test, y_test)
    info = DataInfo(name, source, len(train), len(test), sha256, notes, lossy)
    return Splits(train, test, info)


def with_note(info: DataInfo, note: str, **changes) -> DataInfo:
    notes = f"{info.notes}; {note}" if info.notes else note
    return dataclasses.replace(info, notes=notes, **changes)


def resize(splits: Splits, size: int) -> Splits:
    """Antialiased resize of in-memory images to size x size (ImageNet crops at `size` itself)."""
    if not isinstance(splits.train, TensorDataset):
        return splits
    x_train, y_train = splits.train.tensors
    x_test, y_test = splits.test.tensors
    if x_train.shape[-2:] == (size, size):
        return splits
    old = "x".join(map(str, x_train.shape[-2:]))

    def resized(x):
        return v2.functional.resize(x, [size, size], antialias=True)

    train = TensorDataset(resized(x_train), y_train)
    test = TensorDataset(resized(x_test), y_test)
    info = with_note(splits.info, f"resized {old}->{size}x{size} (bilinear, antialiased)")
    return Splits(train, test, info)


def subsample(splits: Splits, n_train: int | None, n_test: int | None, seed: int) -> Splits:
    """Seeded random subsets, kept in the data set's order; sizes larger than the set are capped.

    Each split draws from its own generator, so which test images are scored depends on the seed
    and n_test alone, never on n_train: tiers with different training sets score the same images.
    """

    def subset(dataset, n, split: int):
        if n is None or n >= len(dataset):
            return dataset
        generator = torch.Generator().manual_seed(seed * 2 + split)
        index = torch.randperm(len(dataset), generator=generator)[:n].sort().values
        if isinstance(dataset, TensorDataset):
            return TensorDataset(*(t[index] for t in dataset.tensors))
        return Subset(dataset, index.tolist())

    train, test = subset(splits.train, n_train, 0), subset(splits.test, n_test, 1)
    if (len(train), len(test)) == (splits.info.n_train, splits.info.n_test):
        return splits
    note = (
        f"random subset {len(train)}/{splits.info.n_train} train, {len(test)}/{splits.info.n_test}"
        f" test (torch.Generator seeds {seed * 2} and {seed * 2 + 1})"
    )
    info = with_note(splits.info, note, n_train=len(train), n_test=len(test))
    return Splits(train, test, info)
