"""MNIST (torchvision's IDX layout) and binarized MNIST with the fixed binarization of Larochelle
and Murray (2011), the standard benchmark for PixelCNN/PixelRNN and PixelVAE in nats."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
from torchvision import datasets

from .common import DataError, Splits, corrupt, sha256, tensor_splits, verified

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
KNOWN_SHA256 = {
    "mnist/MNIST/raw/train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "mnist/MNIST/raw/train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "mnist/MNIST/raw/t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "mnist/MNIST/raw/t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}
# The original .amat files (uncompressed), as tensorflow_datasets records them; a gzipped copy is
# checked after decompression, so both forms must hold exactly these bytes.
BINARIZED_SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}


def files(root: Path) -> list[Path]:
    return [root / "mnist" / "MNIST" / "raw" / f for f in FILES]


def load(root: Path, download: bool = False, **_) -> Splits:
    raw = root / "mnist" / "MNIST" / "raw"
    if download:
        datasets.MNIST(root / "mnist", train=True, download=True)
    missing = [f for f in FILES if not (raw / f).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more IDX files)" if len(missing) > 1 else ""
        raise DataError(
            f"MNIST not found: expected {raw / missing[0]}{more}; download it with `--download`"
            " on a machine with network or place the four uncompressed IDX files there"
        )
    sums = {f: verified(root, f"mnist/MNIST/raw/{f}", KNOWN_SHA256) for f in FILES}
    train = datasets.MNIST(root / "mnist", train=True)
    test = datasets.MNIST(root / "mnist", train=False)
    return tensor_splits(
        "mnist",
        train.data[:, None],
        train.targets,
        test.data[:, None],
        test.targets,
        source="torchvision MNIST IDX files",
        sha256=sums,
    )


def binarized_files(root: Path) -> list[Path]:
    folder = root / "binarized_mnist"
    out = []
    for split in BINARIZED_SHA256:
        plain = folder / f"binarized_mnist_{split}.amat"
        out.append(plain if plain.is_file() else plain.with_name(plain.name + ".gz"))
    return out


def load_binarized(root: Path, download: bool = False, **_) -> Splits:
    """Train = the 50,000 training images, test = the 10,000 test images (valid is not used; the
    record says so). Pixels are stored as 0/255 so every source has the same uint8 form."""
    if download:
        raise DataError(
            "binarized MNIST is not downloaded automatically: place binarized_mnist_{train,valid,"
            "test}.amat (or .amat.gz) from Larochelle & Murray (2011) in"
            f" {root / 'binarized_mnist'}"
        )
    arrays, sums = {}, {}
    for path, (split, expected) in zip(binarized_files(root), BINARIZED_SHA256.items()):
        if not path.is_file():
            raise DataError(
                f"binarized MNIST not found: expected {path.with_suffix('')} or {path}; place the"
                " Larochelle & Murray .amat files there (gzipped or not)"
            )
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # truncated, or not gzip at all
            raise corrupt(path, e, "not a complete gzip file") from None
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            raise DataError(
                f"checksum mismatch for {path}: its .amat bytes have sha256 {got}, expected"
                f" {expected}; the file is corrupt or not the Larochelle & Murray binarization",
                corrupt=True,
            )
        sums[path.name] = sha256(path)
        pixels = np.frombuffer(data.replace(b"\n", b" ").replace(b" ", b""), dtype=np.uint8)
        arrays[split] = ((pixels - ord("0")) * 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return tensor_splits(
        "binarized_mnist",
        arrays["train"],
        np.zeros(len(arrays["train"])),
        arrays["test"],
        np.zeros(len(arrays["test"])),
        source="binarized MNIST, fixed binarization of Larochelle & Murray (2011), .amat files",
        sha256=sums,
        notes="50,000 train / 10,000 test (the 10,000 validation images unused); pixels 0/255",
    )
