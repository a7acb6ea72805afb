"""One description per data set: every fact the harness needs about it before reading a byte.

`DATASETS` is the registry a spec's `dataset = "..."` names. Loaders are "module:function"
strings resolved on use (like `models.MODELS`), so this module imports neither torch nor numpy
nor PIL: `bench validate`, `bench list` and `bench --help` read names, shapes and class counts
from it without them. A new data set is an entry here, its loader module and its committed
sample bench/samples/<name>.npz (with its row in bench/samples/README.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """The small real slice committed as bench/samples/<name>.npz, so smoke tiers run offline."""

    sha256: str  # of the committed file; `python -m bench.samples.make_samples` prints it
    source: str  # records say "committed smoke sample bench/samples/<name>.npz (<source>)"
    train: int  # images make_samples draws from the real training split
    test: int  # ... and from the test split; 0: none, `load` scores the training images
    lossy: bool = False  # re-encoded with loss (the CIFAR-10 JPEG copy): no likelihoods on it


@dataclass(frozen=True)
class DataSet:
    """What is known about a data set without loading it. Whether real data is lossy depends
    on the copy found, so the loader says it (`DataInfo.lossy`); a sample's is fixed here."""

    shape: tuple[int, int, int]  # C, H, W of an image as loaded, before a tier's image_size
    loader: str  # "module:function", (root, download=, image_size=) -> Splits
    files: str  # "module:function", root -> the files `loader` reads (for reuse keys)
    classes: int | None = None  # labels 0..classes-1; None: no fixed class set
    # Per-channel mean and std of the training images, a classifier's input normalisation;
    # None: not a classification data set here.
    normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # Read from disk item by item (an ImageFolder) with the loader's own random crops and flips:
    # never held in memory as a likelihood model's tensors, never padded-and-cropped again.
    streamed: bool = False
    sample: Sample | None = None

    def load(self, root, **kwargs) -> Any:
        return resolve(self.loader)(root, **kwargs)

    def list_files(self, root) -> list:
        return resolve(self.files)(root)


def resolve(target: str) -> Callable:
    """The function a "module:function" string names, imported now."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


DATASETS: dict[str, DataSet] = {
    "mnist": DataSet(
        shape=(1, 28, 28),
        loader="bench.data.mnist:load",
        files="bench.data.mnist:files",
        classes=10,
        sample=Sample(
            "4d874cbcd0d14bb1d5c16167a0746e503b188748f3d3d44da29d6a836aa62d15",
            "512 train + 256 test real MNIST images",
            train=512,
            test=256,
        ),
    ),
    "binarized_mnist": DataSet(
        shape=(1, 28, 28),
        loader="bench.data.mnist:load_binarized",
        files="bench.data.mnist:binarized_files",
        # The .amat files have no labels: every image is labelled 0.
        sample=Sample(
            "1947c0f07e49b4603da9cdc75773890d7d82e2040f79bbf076bdbdeabad8743b",
            "512 train + 256 test images of the Larochelle & Murray binarized MNIST",
            train=512,
            test=256,
        ),
    ),
    "omniglot": DataSet(
        shape=(1, 28, 28),
        loader="bench.data.omniglot:load",
        files="bench.data.omniglot:files",
        # Labels are the characters of the copy found (1,623 in the full set, 242 in the
        # sample), or chardata.mat's 50 alphabets: no fixed class set.
        sample=Sample(
            "f12063e3309093f8524ec3dbefe8a3fe365951b9131c8b0bd01f581bf61927d2",
            "512 train + 256 test drawings of the Omniglot small1+2 zips, resized 105->28",
            train=512,
            test=256,
        ),
    ),
    "cifar10": DataSet(
        shape=(3, 32, 32),
        loader="bench.data.cifar:load_cifar10",
        files="bench.data.cifar:files_cifar10",
        classes=10,
        normalise=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        sample=Sample(
            "cf5f0a929c99ef85fb460423a178397cc5f33b48b82f6002976a6374b5887295",
            "384 train + 192 test images of the CIFAR-10 JPEG re-encoded copy"
            " (quality ~75) - likelihoods not comparable",
            train=384,
            test=192,
            lossy=True,
        ),
    ),
    "cifar10_lossless": DataSet(
        shape=(3, 32, 32),
        loader="bench.data.cifar:load_lossless",
        files="bench.data.cifar:lossless_files",
        classes=10,
        sample=Sample(
            "4f0bff295f01be5efc0be280d74b5cc154a246585f5549dc8b64405fa05d5238",
            "192 train + 96 test images of the lossless CIFAR-10 copy",
            train=192,
            test=96,
        ),
    ),
    "cifar100": DataSet(
        shape=(3, 32, 32),
        loader="bench.data.cifar:load_cifar100",
        files="bench.data.cifar:files_cifar100",
        classes=100,
        normalise=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ),
    "imagenet": DataSet(
        shape=(3, 224, 224),
        loader="bench.data.imagenet:load",
        files="bench.data.imagenet:files",
        classes=1000,
        normalise=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        streamed=True,
        sample=Sample(
            "04acf70bc89ef02fd9ff543d7fed03e0190534a6e6eb8bdd60d51f26da5b6a1c",
            "8 real ImageNet images, Resize(256)+CenterCrop(224), labels = ILSVRC-2012 class index",
            train=8,
            test=0,
        ),
    ),
}
