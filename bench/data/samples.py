"""The small real samples committed in bench/samples/, so that every table smoke-runs offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import DataError, Splits, sha256, tensor_splits

SAMPLES_DIR = Path(__file__).parent.parent / "samples"
# Sums of the committed samples; `python -m bench.samples.make_samples` prints new ones.
SAMPLE_SHA256 = {
    "mnist": "4d874cbcd0d14bb1d5c16167a0746e503b188748f3d3d44da29d6a836aa62d15",
    "omniglot": "f12063e3309093f8524ec3dbefe8a3fe365951b9131c8b0bd01f581bf61927d2",
    "cifar10": "cf5f0a929c99ef85fb460423a178397cc5f33b48b82f6002976a6374b5887295",
    "imagenet": "04acf70bc89ef02fd9ff543d7fed03e0190534a6e6eb8bdd60d51f26da5b6a1c",
    "binarized_mnist": "1947c0f07e49b4603da9cdc75773890d7d82e2040f79bbf076bdbdeabad8743b",
    "cifar10_lossless": "4f0bff295f01be5efc0be280d74b5cc154a246585f5549dc8b64405fa05d5238",
}
SOURCES = {
    "mnist": "512 train + 256 test real MNIST images",
    "omniglot": "512 train + 256 test drawings of the Omniglot small1+2 zips, resized 105->28",
    "cifar10": "384 train + 192 test images of the CIFAR-10 JPEG re-encoded copy"
    " (quality ~75) - likelihoods not comparable",
    "imagenet": "8 real ImageNet images, Resize(256)+CenterCrop(224),"
    " labels = ILSVRC-2012 class index",
    "binarized_mnist": "512 train + 256 test images of the Larochelle & Murray binarized MNIST",
    "cifar10_lossless": "192 train + 96 test images of the lossless CIFAR-10 copy",
}
LOSSY = {"cifar10"}


def files(name: str) -> list[Path]:
    return [SAMPLES_DIR / f"{name}.npz"]


def load(name: str) -> Splits:
    path = SAMPLES_DIR / f"{name}.npz"
    if name not in SAMPLE_SHA256 or not path.is_file():
        raise DataError(
            f"no committed smoke sample for {name}: expected {path}; samples exist for"
            f" {', '.join(SAMPLE_SHA256)}"
        )
    got = sha256(path)
    if got != SAMPLE_SHA256[name]:
        raise DataError(
            f"checksum mismatch for smoke sample {path}: expected sha256 {SAMPLE_SHA256[name]},"
            f" got {got}; restore it from git or rebuild it with"
            " `python -m bench.samples.make_samples --data-dir DIR`",
            corrupt=True,
        )
    with np.load(path) as z:
        x_train, y_train = z["x_train"], z["y_train"]
        has_test = "x_test" in z.files
        x_test, y_test = (z["x_test"], z["y_test"]) if has_test else (x_train, y_train)
    return tensor_splits(
        name, x_train, y_train, x_test, y_test,
        source=f"committed smoke sample bench/samples/{name}.npz ({SOURCES[name]})",
        sha256={path.name: got},
        notes="" if has_test else "too few images to split: test = the train images",
        lossy=name in LOSSY,
    )  # fmt: skip
