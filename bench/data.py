"""Data sets of the benchmark tables behind one call: `load(name, data_dir)`.

Real data is read from `--data-dir DIR` in torchvision's layouts (fetched there only when the user
asks with `download=True`); `smoke=True` reads the small real samples committed in bench/samples/ so
that every table can be smoke-run anywhere. Every file read is checksummed into `DataInfo.sha256`
and checked against the sums known here, so a record always says exactly which bytes it saw.

In-memory data sets come back as `TensorDataset(x uint8 [N,C,H,W], y int64 [N])`: the harness
batches them by indexing, which is far faster on CPU than a DataLoader over PIL images.
"""

import dataclasses
import hashlib
import importlib.util
import io
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import datasets
from torchvision.transforms import v2

NAMES = ("mnist", "omniglot", "cifar10", "cifar100", "imagenet")

# Sums of the files this module reads, keyed by their path under DIR; a file listed here must match.
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
    "omniglot/images_background_small1.zip": (
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"
    ),
    "omniglot/images_background_small2.zip": (
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"
    ),
    "cifar10-jpeg/cifar10-jpeg.tar.gz": (
        "a88910b61d078dbb3b31236d6573b30942a7fa0ed332dc8b671c0adbbd0ac253"
    ),
}

SAMPLES_DIR = Path(__file__).parent / "samples"
# Sums of the committed smoke samples; `python -m bench.samples.make_samples` prints new ones.
SAMPLE_SHA256 = {
    "mnist": "4d874cbcd0d14bb1d5c16167a0746e503b188748f3d3d44da29d6a836aa62d15",
    "omniglot": "f12063e3309093f8524ec3dbefe8a3fe365951b9131c8b0bd01f581bf61927d2",
    "cifar10": "cf5f0a929c99ef85fb460423a178397cc5f33b48b82f6002976a6374b5887295",
    "imagenet": "04acf70bc89ef02fd9ff543d7fed03e0190534a6e6eb8bdd60d51f26da5b6a1c",
}
SAMPLE_SOURCES = {
    "mnist": "512 train + 256 test real MNIST images",
    "omniglot": "512 train + 256 test drawings of the Omniglot small1+2 zips, resized 105->28",
    "cifar10": "384 train + 192 test images of the CIFAR-10 JPEG re-encoded copy"
    " (quality ~75) - likelihoods not comparable",
    "imagenet": "8 real ImageNet images, Resize(256)+CenterCrop(224),"
    " labels = ILSVRC-2012 class index",
}

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
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
# Each Omniglot character was drawn by 20 people; the first 15 drawers train, the last 5 test.
OMNIGLOT_TRAIN_DRAWERS = 15
OMNIGLOT_FILE = re.compile(r"^\d{4}_(\d{2})\.png$")


class DataError(Exception):
    """One-line, user-facing: what is missing or corrupt, where to place what, which sum failed."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.splitlines()))


@dataclass(frozen=True)
class DataInfo:
    """What a record must say about its data: where it came from and exactly which bytes."""

    name: str  # one of NAMES
    source: str  # human-readable origin, e.g. which copy or layout was read
    n_train: int  # sizes actually used, after any subset
    n_test: int
    sha256: dict[str, str]  # file name -> sha256 of the files read (verified where known)
    notes: str = ""  # preprocessing and subsetting applied


@dataclass
class Splits:
    """Items are (x uint8 C x H x W, y int64); in-memory sets are TensorDatasets."""

    train: Dataset
    test: Dataset
    info: DataInfo


def load(
    name: str,
    data_dir: str | Path | None,
    *,
    smoke: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
) -> Splits:
    """Load data set `name` from `data_dir` (or the committed sample if `smoke`).

    `n_train`/`n_test` take a seeded random subset (torch.Generator(seed)); `image_size` resizes
    in-memory images (antialiased) and sets ImageNet's crop size. The network is used only when
    `download` is true.
    """
    if name not in NAMES:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    if smoke:
        splits = _load_sample(name)
    elif data_dir is None:
        raise DataError(
            f"no data directory given for {name}: pass --data-dir DIR (or set $DGM_BENCH_DATA), "
            "or run the smoke tier (--tier smoke) on the committed samples"
        )
    else:
        root = Path(data_dir).expanduser()
        if name == "mnist":
            splits = _load_mnist(root, download)
        elif name == "omniglot":
            splits = _load_omniglot(root, download, image_size or 28)
        elif name == "imagenet":
            splits = _load_imagenet(root, download, image_size or 224)
        else:
            splits = _load_cifar(root, name, download)
    splits = _subsample(splits, n_train, n_test, seed)
    return splits if image_size is None else _resize(splits, image_size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(root: Path, rel: str) -> str:
    """sha256 of `root/rel`, which must equal KNOWN_SHA256[rel] where that sum is known."""
    got = _sha256(root / rel)
    expected = KNOWN_SHA256.get(rel)
    if expected is not None and got != expected:
        raise DataError(
            f"checksum mismatch for {root / rel}: expected sha256 {expected}, got {got};"
            " the file is corrupt or a different version - download it again"
        )
    return got


def _tensor_splits(name, x_train, y_train, x_test, y_test, source, sha256, notes="") -> Splits:
    def dataset(x, y):
        x = torch.as_tensor(x, dtype=torch.uint8).contiguous()
        return TensorDataset(x, torch.as_tensor(y).long())

    train, test = dataset(x_train, y_train), dataset(x_test, y_test)
    info = DataInfo(name, source, len(train), len(test), sha256, notes)
    return Splits(train, test, info)


def _with_note(info: DataInfo, note: str, **changes) -> DataInfo:
    notes = f"{info.notes}; {note}" if info.notes else note
    return dataclasses.replace(info, notes=notes, **changes)


def _resize(splits: Splits, size: int) -> Splits:
    """Antialiased resize of in-memory images to size x size (ImageNet crops at `size` itself)."""
    if not isinstance(splits.train, TensorDataset):
        return splits
    x_train, y_train = splits.train.tensors
    x_test, y_test = splits.test.tensors
    if x_train.shape[-2:] == (size, size):
        return splits
    old = "x".join(map(str, x_train.shape[-2:]))

    def resize(x):
        return v2.functional.resize(x, [size, size], antialias=True)

    train, test = TensorDataset(resize(x_train), y_train), TensorDataset(resize(x_test), y_test)
    info = _with_note(splits.info, f"resized {old}->{size}x{size} (bilinear, antialiased)")
    return Splits(train, test, info)


def _subsample(splits: Splits, n_train: int | None, n_test: int | None, seed: int) -> Splits:
    """Seeded random subsets, kept in the data set's order; sizes larger than the set are capped."""
    generator = torch.Generator().manual_seed(seed)

    def subset(dataset, n):
        if n is None or n >= len(dataset):
            return dataset
        index = torch.randperm(len(dataset), generator=generator)[:n].sort().values
        if isinstance(dataset, TensorDataset):
            return TensorDataset(*(t[index] for t in dataset.tensors))
        return Subset(dataset, index.tolist())

    train, test = subset(splits.train, n_train), subset(splits.test, n_test)
    if (len(train), len(test)) == (splits.info.n_train, splits.info.n_test):
        return splits
    note = (
        f"random subset {len(train)}/{splits.info.n_train} train, {len(test)}/{splits.info.n_test}"
        f" test (torch.Generator seed {seed})"
    )
    info = _with_note(splits.info, note, n_train=len(train), n_test=len(test))
    return Splits(train, test, info)


def _load_sample(name: str) -> Splits:
    path = SAMPLES_DIR / f"{name}.npz"
    if name not in SAMPLE_SHA256 or not path.is_file():
        raise DataError(
            f"no committed smoke sample for {name}: expected {path}; samples exist for"
            f" {', '.join(SAMPLE_SHA256)}"
        )
    got = _sha256(path)
    if got != SAMPLE_SHA256[name]:
        raise DataError(
            f"checksum mismatch for smoke sample {path}: expected sha256 {SAMPLE_SHA256[name]},"
            f" got {got}; restore it from git or rebuild it with"
            " `python -m bench.samples.make_samples --data-dir DIR`"
        )
    with np.load(path) as z:
        x_train, y_train = z["x_train"], z["y_train"]
        has_test = "x_test" in z.files
        x_test, y_test = (z["x_test"], z["y_test"]) if has_test else (x_train, y_train)
    return _tensor_splits(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        source=f"committed smoke sample bench/samples/{name}.npz ({SAMPLE_SOURCES[name]})",
        sha256={path.name: got},
        notes="" if has_test else "too few images to split: test = the train images",
    )


def _load_mnist(root: Path, download: bool) -> Splits:
    raw = root / "mnist" / "MNIST" / "raw"
    if download:
        datasets.MNIST(root / "mnist", train=True, download=True)
    missing = [f for f in MNIST_FILES if not (raw / f).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more IDX files)" if len(missing) > 1 else ""
        raise DataError(
            f"MNIST not found: expected {raw / missing[0]}{more}; download it with `--download`"
            " on a machine with network or place the four uncompressed IDX files there"
        )
    sha256 = {f: _verified(root, f"mnist/MNIST/raw/{f}") for f in MNIST_FILES}
    train = datasets.MNIST(root / "mnist", train=True)
    test = datasets.MNIST(root / "mnist", train=False)
    return _tensor_splits(
        "mnist",
        train.data[:, None],
        train.targets,
        test.data[:, None],
        test.targets,
        source="torchvision MNIST IDX files",
        sha256=sha256,
    )


def _load_omniglot(root: Path, download: bool, size: int) -> Splits:
    """Omniglot from (1) chardata.mat, else (2) torchvision's folders, else (3) the repo's zips."""
    folder = root / "omniglot"
    mat = folder / "chardata.mat"
    if mat.is_file() and importlib.util.find_spec("scipy") is not None:
        import scipy.io

        return _omniglot_from_mat(mat, scipy.io.loadmat(mat))
    if download:
        for background in (True, False):
            datasets.Omniglot(folder, background=background, download=True)
    trees = [folder / "omniglot-py" / s for s in ("images_background", "images_evaluation")]
    trees = [t for t in trees if t.is_dir()]
    zips = sorted(folder.glob("images_*.zip"))
    if trees:
        drawings, sha256 = _omniglot_trees(trees)
        origin = "torchvision Omniglot folders " + "+".join(t.name for t in trees)
    elif zips:
        drawings, sha256 = _omniglot_zips(root, zips)
        origin = "Omniglot official repo zips " + "+".join(z.name for z in zips)
    else:
        hint = " (install scipy to read it)" if mat.is_file() else ""
        raise DataError(
            f"Omniglot not found: expected {mat}{hint},"
            f" {folder}/omniglot-py/images_background/<alphabet>/<character>/*.png or"
            f" {folder}/images_background*.zip; download it with `--download` on a machine with"
            " network or place one of these there"
        )
    x_train, y_train, x_test, y_test, n_classes = _omniglot_arrays(drawings, size)
    return _tensor_splits(
        "omniglot",
        x_train,
        y_train,
        x_test,
        y_test,
        source=(
            f"{origin}, inverted, resized 105->{size} (PIL BOX), drawers"
            f" 1-{OMNIGLOT_TRAIN_DRAWERS} train / {OMNIGLOT_TRAIN_DRAWERS + 1}-20 test"
        ),
        sha256=sha256,
        notes=f"{n_classes} character classes; {drawings.duplicates} duplicate drawings dropped",
    )


def _omniglot_from_mat(mat: Path, raw: dict) -> Splits:
    # IWAE: data.T.reshape((-1, 28, 28)).reshape((-1, 784), order='fortran'), i.e. each MATLAB
    # column is a column-major 28x28 image: C-order reshape then transpose gives it upright.
    def images(key):
        x = raw[key].T.reshape(-1, 28, 28).transpose(0, 2, 1)
        return np.rint(x * 255).astype(np.uint8)[:, None]

    return _tensor_splits(
        "omniglot",
        images("data"),
        raw["target"].argmax(0),
        images("testdata"),
        raw["testtarget"].argmax(0),
        source="Omniglot chardata.mat (the 28x28 split of the IWAE paper)",
        sha256={mat.name: _sha256(mat)},
        notes="y = alphabet index (the file's one-hot 'target'), not the character",
    )


class _Drawings(dict):
    """(alphabet, character, file name) -> PNG bytes, counting identical copies dropped."""

    duplicates = 0

    def add(self, key: tuple[str, str, str], png: bytes, where: str) -> None:
        if key in self:
            if self[key] != png:
                raise DataError(f"Omniglot drawing {'/'.join(key)} differs between copies: {where}")
            self.duplicates += 1
        else:
            self[key] = png


def _omniglot_trees(trees: list[Path]) -> tuple[_Drawings, dict[str, str]]:
    drawings, sha256 = _Drawings(), {}
    for tree in trees:
        digest = hashlib.sha256()
        for path in sorted(tree.glob("*/*/*.png")):
            png = path.read_bytes()
            digest.update(str(path.relative_to(tree)).encode() + png)
            drawings.add((path.parts[-3], path.parts[-2], path.name), png, str(path))
        sha256[f"{tree.name}/*/*/*.png (paths+bytes, sorted)"] = digest.hexdigest()
    return drawings, sha256


def _omniglot_zips(root: Path, zips: list[Path]) -> tuple[_Drawings, dict[str, str]]:
    drawings, sha256 = _Drawings(), {}
    for path in zips:
        sha256[path.name] = _verified(root, f"omniglot/{path.name}")
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                parts = member.split("/")
                if member.endswith(".png") and len(parts) >= 3:
                    drawings.add(tuple(parts[-3:]), zf.read(member), f"{path}:{member}")
    return drawings, sha256


def _omniglot_arrays(drawings: _Drawings, size: int):
    """Strokes become 255 on 0 (the PNGs draw black on white); 105x105 is box-filtered to size."""
    classes = {c: i for i, c in enumerate(sorted({key[:2] for key in drawings}))}
    splits = {True: ([], []), False: ([], [])}
    for key in sorted(drawings):
        match = OMNIGLOT_FILE.match(key[2])
        if match is None:
            raise DataError(f"unexpected Omniglot file name {'/'.join(key)}; expected NNNN_DD.png")
        image = ImageOps.invert(Image.open(io.BytesIO(drawings[key])).convert("L"))
        image = image.resize((size, size), Image.Resampling.BOX)
        xs, ys = splits[int(match[1]) <= OMNIGLOT_TRAIN_DRAWERS]
        xs.append(np.asarray(image))
        ys.append(classes[key[:2]])

    def stack(xs, ys):
        x = np.stack(xs)[:, None] if xs else np.zeros((0, 1, size, size), np.uint8)
        return x, np.array(ys, dtype=np.int64)

    return *stack(*splits[True]), *stack(*splits[False]), len(classes)


def _load_cifar(root: Path, name: str, download: bool) -> Splits:
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = root / name / cls.base_folder
    jpeg = root / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
    if not (download or folder.is_dir()):
        if name == "cifar10" and jpeg.is_file():
            return _load_cifar10_jpeg(root)
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
            f"{name.upper()} in {folder} failed torchvision's md5 check: {error}"
        ) from None
    files = [f for f, _ in cls.train_list + cls.test_list]
    return _tensor_splits(
        name,
        train.data.transpose(0, 3, 1, 2),
        train.targets,
        test.data.transpose(0, 3, 1, 2),
        test.targets,
        source=f"torchvision {cls.__name__} python batches",
        sha256={f: _sha256(folder / f) for f in files},
    )


def _cache_dir(folder: Path) -> Path:
    """folder/extracted when the data folder may be written to, else ~/.cache/dgm-bench/<name>."""
    if os.access(folder, os.W_OK) and folder.stat().st_mode & 0o222:
        return folder / "extracted"
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache_home / "dgm-bench" / folder.name


def _load_cifar10_jpeg(root: Path) -> Splits:
    """The JPEG copy, decoded once and cached as arrays keyed by the tarball's sha256."""
    rel = "cifar10-jpeg/cifar10-jpeg.tar.gz"
    digest = _verified(root, rel)
    cache = _cache_dir((root / rel).parent) / f"cifar10-jpeg-{digest[:16]}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            arrays = {key: z[key] for key in z.files}
    else:
        arrays = _decode_cifar10_tar(root / rel)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.partial.npz")
        np.savez(partial, **arrays)
        partial.replace(cache)
    return _tensor_splits(
        "cifar10",
        **arrays,
        source="CIFAR-10 JPEG re-encoded copy (quality ~75) - likelihoods not comparable",
        sha256={Path(rel).name: digest},
        notes=f"decoded arrays cached in {cache}",
    )


def _decode_cifar10_tar(path: Path) -> dict[str, np.ndarray]:
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


def imagenet_transform(size: int, train: bool) -> v2.Compose:
    """Standard ImageNet crops as uint8 tensors: RandomResizedCrop+flip, or Resize+CenterCrop."""
    if train:
        crop = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        crop = [v2.Resize(size * 256 // 224, antialias=True), v2.CenterCrop(size)]
    return v2.Compose([v2.ToImage(), *crop, v2.ToDtype(torch.uint8), v2.ToPureTensor()])


def _load_imagenet(root: Path, download: bool, size: int) -> Splits:
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
