"""Omniglot: the IWAE paper's chardata.mat split, torchvision's folders, or the official zips.

Each character was drawn by 20 people; drawers 1-15 train and 16-20 test, which on the full set
(1,623 characters) gives 24,345 / 8,115 drawings, the size of the paper's split.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import datasets

from .common import DataError, Splits, corrupt, sha256, tensor_splits, verified

TRAIN_DRAWERS = 15
FILE = re.compile(r"^\d{4}_(\d{2})\.png$")
KNOWN_SHA256 = {
    "omniglot/images_background.zip": (
        "626475ade5d382e68f8efca0d8b637e96b24a87c09311914317e237b63709074"
    ),
    "omniglot/images_evaluation.zip": (
        "7b407c34b9a8c28d6f32db9238ba05d27d9f390727886d9a9a2a082cae7d1b4d"
    ),
    "omniglot/images_background_small1.zip": (
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"
    ),
    "omniglot/images_background_small2.zip": (
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"
    ),
}


def files(root: Path) -> list[Path]:
    folder = root / "omniglot"
    mat = folder / "chardata.mat"
    if mat.is_file() and importlib.util.find_spec("scipy") is not None:
        return [mat]
    trees = [folder / "omniglot-py" / s for s in ("images_background", "images_evaluation")]
    trees = [t for t in trees if t.is_dir()]
    if trees:
        return sorted(p for t in trees for p in t.glob("*/*/*.png"))
    return sorted(folder.glob("images_*.zip"))


def load(root: Path, download: bool = False, image_size: int | None = None, **_) -> Splits:
    """Omniglot from (1) chardata.mat, else (2) torchvision's folders, else (3) the zips."""
    size = image_size or 28
    folder = root / "omniglot"
    mat = folder / "chardata.mat"
    if mat.is_file() and importlib.util.find_spec("scipy") is not None:
        import scipy.io

        return _from_mat(mat, scipy.io.loadmat(mat))
    if download:
        for background in (True, False):
            datasets.Omniglot(folder, background=background, download=True)
    trees = [folder / "omniglot-py" / s for s in ("images_background", "images_evaluation")]
    trees = [t for t in trees if t.is_dir()]
    zips = sorted(folder.glob("images_*.zip"))
    if trees:
        drawings, sums = _trees(trees)
        origin = "torchvision Omniglot folders " + "+".join(t.name for t in trees)
    elif zips:
        drawings, sums = _zips(root, zips)
        origin = "Omniglot official repo zips " + "+".join(z.name for z in zips)
    else:
        hint = " (install scipy to read it)" if mat.is_file() else ""
        raise DataError(
            f"Omniglot not found: expected {mat}{hint},"
            f" {folder}/omniglot-py/images_background/<alphabet>/<character>/*.png or"
            f" {folder}/images_background*.zip; download it with `--download` on a machine with"
            " network or place one of these there"
        )
    x_train, y_train, x_test, y_test, n_classes = _arrays(drawings, size)
    return tensor_splits(
        "omniglot",
        x_train,
        y_train,
        x_test,
        y_test,
        source=(
            f"{origin}, inverted, resized 105->{size} (PIL BOX), drawers"
            f" 1-{TRAIN_DRAWERS} train / {TRAIN_DRAWERS + 1}-20 test"
        ),
        sha256=sums,
        notes=f"{n_classes} character classes; {drawings.duplicates} duplicate drawings dropped",
    )


def _from_mat(mat: Path, raw: dict) -> Splits:
    # IWAE: data.T.reshape((-1, 28, 28)).reshape((-1, 784), order='fortran'), i.e. each MATLAB
    # column is a column-major 28x28 image: C-order reshape then transpose gives it upright.
    def images(key):
        x = raw[key].T.reshape(-1, 28, 28).transpose(0, 2, 1)
        return np.rint(x * 255).astype(np.uint8)[:, None]

    return tensor_splits(
        "omniglot",
        images("data"),
        raw["target"].argmax(0),
        images("testdata"),
        raw["testtarget"].argmax(0),
        source="Omniglot chardata.mat (the 28x28 split of the IWAE paper)",
        sha256={mat.name: sha256(mat)},
        notes="y = alphabet index (the file's one-hot 'target'), not the character",
    )


class _Drawings(dict):
    """(alphabet, character, file name) -> PNG bytes, counting identical copies dropped, and
    where each came from (a file, or a zip and its member) for an error to name."""

    duplicates = 0

    def __init__(self):
        super().__init__()
        self.where: dict[tuple[str, str, str], str] = {}

    def add(self, key: tuple[str, str, str], png: bytes, where: str) -> None:
        if key in self:
            if self[key] != png:
                raise DataError(f"Omniglot drawing {'/'.join(key)} differs between copies: {where}")
            self.duplicates += 1
        else:
            self[key], self.where[key] = png, where


def _trees(trees: list[Path]) -> tuple[_Drawings, dict[str, str]]:
    drawings, sums = _Drawings(), {}
    for tree in trees:
        digest = hashlib.sha256()
        for path in sorted(tree.glob("*/*/*.png")):
            png = path.read_bytes()
            digest.update(str(path.relative_to(tree)).encode() + png)
            drawings.add((path.parts[-3], path.parts[-2], path.name), png, str(path))
        sums[f"{tree.name}/*/*/*.png (paths+bytes, sorted)"] = digest.hexdigest()
    return drawings, sums


def _zips(root: Path, zips: list[Path]) -> tuple[_Drawings, dict[str, str]]:
    drawings, sums = _Drawings(), {}
    for path in zips:
        sums[path.name] = verified(root, f"omniglot/{path.name}", KNOWN_SHA256)
        try:
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    parts = member.split("/")
                    if member.endswith(".png") and len(parts) >= 3:
                        drawings.add(tuple(parts[-3:]), zf.read(member), f"{path}:{member}")
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:  # a zip whose sum is not known
            raise corrupt(path, e, "not a readable zip file") from None
    return drawings, sums


def _arrays(drawings: _Drawings, size: int):
    """Strokes become 255 on 0 (the PNGs draw black on white); 105x105 is box-filtered to size."""
    classes = {c: i for i, c in enumerate(sorted({key[:2] for key in drawings}))}
    splits = {True: ([], []), False: ([], [])}
    for key in sorted(drawings):
        match = FILE.match(key[2])
        if match is None:
            raise DataError(f"unexpected Omniglot file name {'/'.join(key)}; expected NNNN_DD.png")
        try:
            image = ImageOps.invert(Image.open(io.BytesIO(drawings[key])).convert("L"))
        except (UnidentifiedImageError, OSError, ValueError) as e:  # junk, or a truncated PNG
            raise corrupt(drawings.where[key], e, "not a readable PNG image") from None
        image = image.resize((size, size), Image.Resampling.BOX)
        xs, ys = splits[int(match[1]) <= TRAIN_DRAWERS]
        xs.append(np.asarray(image))
        ys.append(classes[key[:2]])

    def stack(xs, ys):
        x = np.stack(xs)[:, None] if xs else np.zeros((0, 1, size, size), np.uint8)
        return x, np.array(ys, dtype=np.int64)

    return *stack(*splits[True]), *stack(*splits[False]), len(classes)
