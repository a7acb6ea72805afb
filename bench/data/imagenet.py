"""ImageNet (ILSVRC-2012) as torchvision ImageFolders: too large to hold in memory or checksum."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets
from torchvision.transforms import v2

from .common import DataError, DataInfo, Splits


def imagenet_transform(size: int, train: bool) -> v2.Compose:
    """Standard ImageNet crops as uint8 tensors: RandomResizedCrop+flip, or Resize+CenterCrop."""
    if train:
        crop = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        crop = [v2.Resize(size * 256 // 224, antialias=True), v2.CenterCrop(size)]
    return v2.Compose([v2.ToImage(), *crop, v2.ToDtype(torch.uint8), v2.ToPureTensor()])


def files(root: Path) -> list[Path]:
    return []  # not checksummed: a record names the folders instead


def load(root: Path, download: bool = False, image_size: int | None = None, **_) -> Splits:
    size = image_size or 224
    folder = root / "imagenet"
    layout = f"{folder}/train/<wnid>/*.JPEG and {folder}/val/<wnid>/*.JPEG"
    if download:
        raise DataError(
            f"ImageNet cannot be downloaded automatically: get ILSVRC-2012 from image-net.org and"
            f" place it as {layout}"
        )
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise DataError(f"ImageNet not found: expected {layout} (torchvision ImageFolder)")
    train = datasets.ImageFolder(folder / "train", transform=imagenet_transform(size, True))
    test = datasets.ImageFolder(folder / "val", transform=imagenet_transform(size, False))
    if train.classes != test.classes:
        raise DataError(f"ImageNet train and val class folders differ in {folder}")
    info = DataInfo(
        "imagenet",
        f"torchvision ImageFolder {folder}/train, val ({len(train.classes)} classes)",
        len(train),
        len(test),
        sha256={},
        notes=f"images not checksummed; train RandomResizedCrop({size})+flip,"
        f" test Resize({size * 256 // 224})+CenterCrop({size})",
    )
    return Splits(train, test, info)
