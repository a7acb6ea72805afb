"""CIFAR-10/100: torchvision's python batches, the offline JPEG copy (classification only) and the
offline lossless copy (training batch 1 + the test batch: the only source for likelihoods here)."""

from __future__ import annotations

import functools
import os
import pickle
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import datasets

from .common import DataError, Splits, sha256, tensor_splits, verified

# torchvision's label order, which is also the sorted order of the JPEG copy's folder names.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
JPEG = "cifar10-jpeg/cifar10-jpeg.tar.gz"
LOSSLESS = ("data_batch_1", "test_batch", "batches.meta")
KNOWN_SHA256 = {
    JPEG: "a88910b61d078dbb3b31236d6573b30942a7fa0ed332dc8b671c0adbbd0ac253",
    "cifar10-lossless/batches.meta": (
        "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb"
    ),
    "cifar10-lossless/data_batch_1": (
        "44c2fedcefbb5ee954a920751b1ed8626d12e69f5f78dad69345132f4fde8c82"
    ),
    "cifar10-lossless/test_batch": (
        "a9ebcdc2294999f3b1ccd0ee20731088ef299ac97bfc4156feb464f8f778e318"
    ),
}


def _classes(name: str):
    return datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100


def files(root: Path, name: str) -> list[Path]:
    cls = _classes(name)
    folder = root / name / cls.base_folder
    if folder.is_dir():
        return [folder / f for f, _ in cls.train_list + cls.test_list]
    return [root / JPEG] if name == "cifar10" else []


def load(root: Path, name: str, download: bool = False, **_) -> Splits:
    cls = _classes(name)
    folder = root / name / cls.base_folder
    jpeg = root / JPEG
    if not (download or folder.is_dir()):
        if name == "cifar10" and jpeg.is_file():
            return _load_jpeg(root)
        alternative = f" or the JPEG copy {jpeg}" if name == "cifar10" else ""
        raise DataError(
            f"{name.upper()} not found: expected {folder}{alternative}; download it with"
            " `--download` on a machine with network or place the python batches there"
        )
    try:
        train = cls(root / name, train=True, download=download)
        test = cls(root / name, train=False)
    except RuntimeError as error:
        raise DataError(
            f"{name.upper()} in {folder} failed torchvision's md5 check: {error}", corrupt=True
        ) from None
    file_names = [f for f, _ in cls.train_list + cls.test_list]
    return tensor_splits(
        name,
        train.data.transpose(0, 3, 1, 2),
        train.targets,
        test.data.transpose(0, 3, 1, 2),
        test.targets,
        source=f"torchvision {cls.__name__} python batches",
        sha256={f: sha256(folder / f) for f in file_names},
    )


# The catalog's entry points (bench/data/catalog.py) for the two torchvision data sets.
load_cifar10 = functools.partial(load, name="cifar10")
files_cifar10 = functools.partial(files, name="cifar10")
load_cifar100 = functools.partial(load, name="cifar100")
files_cifar100 = functools.partial(files, name="cifar100")


def lossless_files(root: Path) -> list[Path]:
    return [root / "cifar10-lossless" / f for f in LOSSLESS]


def load_lossless(root: Path, download: bool = False, **_) -> Splits:
    """The lossless copy, read as its own source: its batches lack `filenames`, so torchvision's
    md5 check refuses them; the sums here are the copy's own (its SHA256SUMS)."""
    folder = root / "cifar10-lossless"
    if download:
        raise DataError(
            f"the lossless CIFAR-10 copy is not downloadable; for likelihoods place it in {folder}"
            " (data_batch_1, test_batch, batches.meta)"
        )
    missing = [f for f in LOSSLESS if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"lossless CIFAR-10 not found: expected {folder / missing[0]}; place data_batch_1,"
            " test_batch and batches.meta there (likelihood tables never use the JPEG copy)"
        )
    sums = {f: verified(root, f"cifar10-lossless/{f}", KNOWN_SHA256) for f in LOSSLESS}

    def batch(file: str):
        with open(folder / file, "rb") as f:
            raw = pickle.load(f, encoding="latin1")  # noqa: S301 - its sum was checked above
        return raw["data"].reshape(-1, 3, 32, 32), np.array(raw["labels"], dtype=np.int64)

    return tensor_splits(
        "cifar10_lossless",
        *batch("data_batch_1"),
        *batch("test_batch"),
        source="lossless CIFAR-10 copy (training batch 1 + test batch, python-pickle layout)",
        sha256=sums,
        notes="10,000 of the 50,000 training images (batch 1); the full 10,000-image test set",
    )


def cache_dir(folder: Path) -> Path:
    """folder/extracted when the data folder may be written to, else ~/.cache/dgm-bench/<name>."""
    if os.access(folder, os.W_OK) and folder.stat().st_mode & 0o222:
        return folder / "extracted"
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache_home / "dgm-bench" / folder.name


def _load_jpeg(root: Path) -> Splits:
    """The JPEG copy, decoded once and cached as arrays keyed by the tarball's sha256; a cache
    that cannot be read is decoded again (with a warning), never trusted or fatal."""
    digest = verified(root, JPEG, KNOWN_SHA256)
    cache = cache_dir((root / JPEG).parent) / f"cifar10-jpeg-{digest[:16]}.npz"
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache) as z:
                arrays = {key: z[key] for key in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(
                f"{cache}: unreadable cache ({e}); decoding the JPEG copy again", stacklevel=2
            )
    if arrays is None:
        arrays = _decode_tar(root / JPEG)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(f".{os.getpid()}.partial.npz")
            np.savez(partial, **arrays)
            partial.replace(cache)
        except OSError as e:
            warnings.warn(f"cannot cache the decoded JPEG copy at {cache}: {e}", stacklevel=2)
    return tensor_splits(
        "cifar10",
        **arrays,
        source="CIFAR-10 JPEG re-encoded copy (quality ~75) - likelihoods not comparable",
        sha256={Path(JPEG).name: digest},
        notes=f"decoded arrays cached in {cache}",
        lossy=True,
    )


def _decode_tar(path: Path) -> dict[str, np.ndarray]:
    """Stream `<split>/<class>/NNNN.jpg` out of the tarball; order = (class, file name)."""
    found = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not (member.isfile() and member.name.endswith(".jpg") and len(parts) == 3):
                continue
            split, label, file = parts
            if split not in found or label not in CIFAR10_CLASSES:
                raise DataError(f"unexpected member {member.name} in {path}")
            image = np.asarray(Image.open(tar.extractfile(member)).convert("RGB"))
            if image.shape != (32, 32, 3):
                raise DataError(f"{member.name} in {path} is {image.shape}, expected 32x32 RGB")
            found[split].append((CIFAR10_CLASSES.index(label), file, image))
    arrays = {}
    for split, items in found.items():
        items.sort(key=lambda item: item[:2])
        arrays[f"x_{split}"] = np.stack([image for *_, image in items]).transpose(0, 3, 1, 2)
        arrays[f"y_{split}"] = np.array([label for label, *_ in items], dtype=np.int64)
    return arrays
