"""bench.data: every loader on small files written in the real on-disk formats, plus the samples."""

import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch.utils.data import TensorDataset
from torchvision import datasets

from bench import data
from bench.data import CIFAR10_CLASSES, DATASETS, DataError, load
from bench.data.catalog import resolve

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def no_known_sums(monkeypatch):
    """Generated files cannot match the real files' sums: check nothing but what a test adds."""
    known = {}
    for module in (data.mnist, data.omniglot, data.cifar):
        monkeypatch.setattr(module, "KNOWN_SHA256", known)
    return known


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- MNIST -------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic (0, 0, type 0x08 = ubyte, number of dims), big-endian int32 dims, then bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train=6, n_test=4):
    raw = root / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        write_idx(raw / name, array)
    return raw, arrays


def test_mnist_reads_idx_files_and_verifies_known_sums(tmp_path, no_known_sums):
    raw, arrays = write_mnist(tmp_path)
    for name in arrays:
        no_known_sums[f"mnist/MNIST/raw/{name}"] = sha256(raw / name)
    splits = load("mnist", tmp_path)
    x, y = splits.train.tensors
    assert isinstance(splits.train, TensorDataset)
    assert x.dtype == torch.uint8 and x.shape == (6, 1, 28, 28) and y.dtype == torch.int64
    assert np.array_equal(x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(splits.test.tensors[0][:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert (splits.info.n_train, splits.info.n_test) == (6, 4)
    assert splits.info.sha256 == {name: sha256(raw / name) for name in arrays}


def test_mnist_checksum_mismatch_names_file_and_both_sums(tmp_path):
    raw, _ = write_mnist(tmp_path)
    with pytest.raises(DataError) as error:
        load("mnist", tmp_path)
    message = str(error.value)
    assert str(raw / "train-images-idx3-ubyte") in message
    assert data.mnist.KNOWN_SHA256["mnist/MNIST/raw/train-images-idx3-ubyte"] in message
    assert sha256(raw / "train-images-idx3-ubyte") in message
    assert "\n" not in message


def test_mnist_missing_names_expected_path_and_stays_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download without download=True")

    monkeypatch.setattr(datasets.MNIST, "download", no_network)
    with pytest.raises(DataError, match="and 3 more IDX files") as error:
        load("mnist", tmp_path)
    assert str(tmp_path / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(error.value)
    assert "--download" in str(error.value)


# --- Omniglot ----------------------------------------------------------------------------------


def drawing(drawer: int) -> bytes:
    """Black strokes on white like the real PNGs: a block top-left for drawers 1-15, else
    bottom-right, so the split and the inversion show in the loaded pixels."""
    image = Image.new("1", (105, 105), 1)
    box = (0, 0, 40, 40) if drawer <= 15 else (65, 65, 104, 104)
    ImageDraw.Draw(image).rectangle(box, fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_omniglot_zip(path: Path, characters: list[tuple[str, str]]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for alphabet, character in characters:
            for drawer in range(1, 21):
                name = f"{path.stem}/{alphabet}/{character}/0{len(alphabet)}07_{drawer:02d}.png"
                zf.writestr(name, drawing(drawer))


def check_omniglot_split(splits, n_characters):
    x_train, y_train = splits.train.tensors
    x_test, y_test = splits.test.tensors
    assert x_train.shape == (15 * n_characters, 1, 28, 28) and x_train.dtype == torch.uint8
    assert x_test.shape == (5 * n_characters, 1, 28, 28)
    assert torch.equal(torch.bincount(y_train), torch.full((n_characters,), 15))
    assert torch.equal(torch.bincount(y_test), torch.full((n_characters,), 5))
    # Inverted: strokes are 255 on a 0 background; train drawers top-left, test bottom-right.
    assert (x_train[:, 0, :8, :8] == 255).all() and (x_train[:, 0, -8:, -8:] == 0).all()
    assert (x_test[:, 0, -8:, -8:] == 255).all() and (x_test[:, 0, :8, :8] == 0).all()


def test_omniglot_zips_split_drawers_invert_and_deduplicate(tmp_path, no_known_sums):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    shared = [("Greek", "character01"), ("Greek", "character02")]
    write_omniglot_zip(
        folder / "images_background_small1.zip", [("Korean", "character01")] + shared
    )
    write_omniglot_zip(
        folder / "images_background_small2.zip", shared + [("Tagalog", "character01")]
    )
    splits = load("omniglot", tmp_path)
    check_omniglot_split(splits, n_characters=4)
    assert "images_background_small1.zip+images_background_small2.zip" in splits.info.source
    assert "40 duplicate drawings dropped" in splits.info.notes
    assert set(splits.info.sha256) == {
        "images_background_small1.zip",
        "images_background_small2.zip",
    }
    # Classes are the sorted (alphabet, character) pairs: Greek/01, Greek/02, Korean, Tagalog.
    assert splits.train.tensors[1][:15].tolist() == [0] * 15
    assert splits.train.tensors[1][-15:].tolist() == [3] * 15


def test_omniglot_zip_checksum_mismatch(tmp_path):
    (tmp_path / "omniglot").mkdir()
    path = tmp_path / "omniglot" / "images_background_small1.zip"
    write_omniglot_zip(path, [("Greek", "character01")])
    with pytest.raises(DataError, match="checksum mismatch") as error:
        load("omniglot", tmp_path)  # the real zip's sum is known and this one differs
    assert str(path) in str(error.value)


def test_omniglot_conflicting_copies_raise(tmp_path, no_known_sums):
    (tmp_path / "omniglot").mkdir()
    write_omniglot_zip(tmp_path / "omniglot" / "images_background_small1.zip", [("Greek", "c01")])
    with zipfile.ZipFile(tmp_path / "omniglot" / "images_zz.zip", "w") as zf:
        zf.writestr("images_zz/Greek/c01/0507_01.png", drawing(20))
    with pytest.raises(DataError, match="Greek/c01/0507_01.png differs between copies"):
        load("omniglot", tmp_path)


def test_omniglot_torchvision_folders(tmp_path, no_known_sums):
    tree = tmp_path / "omniglot" / "omniglot-py" / "images_background"
    for character in ("character01", "character02"):
        (tree / "Latin" / character).mkdir(parents=True)
        for drawer in range(1, 21):
            (tree / "Latin" / character / f"0500_{drawer:02d}.png").write_bytes(drawing(drawer))
    splits = load("omniglot", tmp_path)
    check_omniglot_split(splits, n_characters=2)
    assert splits.info.source.startswith("torchvision Omniglot folders images_background")


def test_omniglot_chardata_mat_is_read_column_major(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    upright = np.zeros((28, 28))
    upright[:5, :] = 1.0  # a bar along the top edge
    columns = np.stack([upright.flatten(order="F")] * 3, axis=1)  # MATLAB: 784 x N
    target = np.eye(50)[:, [0, 1, 1]]
    (tmp_path / "omniglot").mkdir()
    scipy_io.savemat(
        tmp_path / "omniglot" / "chardata.mat",
        {
            "data": columns,
            "testdata": columns[:, :1],
            "target": target,
            "testtarget": target[:, :1],
        },
    )
    splits = load("omniglot", tmp_path)
    assert np.array_equal(splits.train.tensors[0][0, 0].numpy(), (upright * 255).astype(np.uint8))
    assert splits.train.tensors[1].tolist() == [0, 1, 1]
    assert "chardata.mat" in splits.info.source


def test_omniglot_missing_names_all_layouts(tmp_path):
    with pytest.raises(DataError) as error:
        load("omniglot", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "omniglot" / "chardata.mat") in message
    assert "omniglot-py/images_background" in message and "images_background*.zip" in message


# --- CIFAR -------------------------------------------------------------------------------------

COLOURS = {label: (25 * i, 255 - 25 * i, 120) for i, label in enumerate(CIFAR10_CLASSES)}


def write_cifar10_jpeg(root: Path) -> Path:
    """Solid-colour 32x32 JPEGs in the copy's layout, added to the tarball in shuffled order."""
    folder = root / "cifar10-jpeg"
    folder.mkdir(parents=True)
    path = folder / "cifar10-jpeg.tar.gz"
    members = [
        (split, label, index)
        for split, n in (("train", 2), ("test", 1))
        for label in CIFAR10_CLASSES
        for index in range(n)
    ]
    with tarfile.open(path, "w:gz") as tar:
        for split, label, index in reversed(members):
            buffer = io.BytesIO()
            Image.new("RGB", (32, 32), COLOURS[label]).save(buffer, format="JPEG", quality=75)
            member = tarfile.TarInfo(f"{split}/{label}/{index:04d}.jpg")
            member.size = len(buffer.getvalue())
            tar.addfile(member, io.BytesIO(buffer.getvalue()))
    return path


def check_cifar10_jpeg(splits):
    x_train, y_train = splits.train.tensors
    assert x_train.shape == (20, 3, 32, 32) and x_train.dtype == torch.uint8
    assert y_train.tolist() == [i for i in range(10) for _ in range(2)]
    assert splits.test.tensors[1].tolist() == list(range(10))
    expected = torch.tensor([COLOURS[CIFAR10_CLASSES[int(i)]] for i in y_train])
    assert (x_train.float().mean((2, 3)) - expected).abs().max() < 3  # JPEG of a flat colour
    assert "JPEG re-encoded copy" in splits.info.source


def test_cifar10_jpeg_decodes_once_then_reads_cache(tmp_path, no_known_sums, monkeypatch):
    path = write_cifar10_jpeg(tmp_path)
    no_known_sums["cifar10-jpeg/cifar10-jpeg.tar.gz"] = sha256(path)
    first = load("cifar10", tmp_path)
    check_cifar10_jpeg(first)
    assert list((path.parent / "extracted").glob("cifar10-jpeg-*.npz"))

    def no_decoding(path):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data.cifar, "_decode_tar", no_decoding)
    second = load("cifar10", tmp_path)
    assert torch.equal(first.train.tensors[0], second.train.tensors[0])
    assert first.info.sha256 == {"cifar10-jpeg.tar.gz": sha256(path)}


def test_a_corrupt_jpeg_cache_is_decoded_again_with_a_warning(tmp_path, no_known_sums):
    path = write_cifar10_jpeg(tmp_path)
    no_known_sums["cifar10-jpeg/cifar10-jpeg.tar.gz"] = sha256(path)
    first = load("cifar10", tmp_path)
    (cache,) = (path.parent / "extracted").glob("cifar10-jpeg-*.npz")
    cache.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load("cifar10", tmp_path)
    assert torch.equal(first.train.tensors[0], again.train.tensors[0])
    assert load("cifar10", tmp_path).info.n_train == first.info.n_train  # rebuilt: no warning


def test_cifar10_jpeg_read_only_folder_caches_in_home(tmp_path, no_known_sums, monkeypatch):
    path = write_cifar10_jpeg(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    os.chmod(path.parent, 0o555)
    try:
        check_cifar10_jpeg(load("cifar10", tmp_path / "data"))
        assert sorted(p.name for p in path.parent.iterdir()) == ["cifar10-jpeg.tar.gz"]
    finally:
        os.chmod(path.parent, 0o755)
    assert list((tmp_path / "cache" / "dgm-bench" / "cifar10-jpeg").glob("*.npz"))


def test_cifar10_jpeg_checksum_mismatch(tmp_path):
    path = write_cifar10_jpeg(tmp_path)
    with pytest.raises(DataError, match="checksum mismatch") as error:
        load("cifar10", tmp_path)
    assert str(path) in str(error.value) and data.cifar.KNOWN_SHA256[
        "cifar10-jpeg/cifar10-jpeg.tar.gz"
    ] in str(error.value)


def write_cifar10_batches(root: Path) -> dict[str, np.ndarray]:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 5, 9]}
        (folder / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    meta = {"label_names": list(CIFAR10_CLASSES)}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return batches


def test_cifar10_python_batches_via_torchvision(tmp_path, monkeypatch):
    batches = write_cifar10_batches(tmp_path)
    with pytest.raises(DataError, match="md5"):
        load("cifar10", tmp_path)  # generated batches fail torchvision's own md5 check
    # torchvision checks the real batches' md5 sums (data and meta files); accept these ones.
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda path, md5=None: True)
    splits = load("cifar10", tmp_path)
    x_train, y_train = splits.train.tensors
    assert x_train.shape == (15, 3, 32, 32) and x_train.dtype == torch.uint8
    expected = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    assert np.array_equal(x_train.numpy(), expected.reshape(15, 3, 32, 32))
    assert y_train.tolist() == [0, 5, 9] * 5 and len(splits.test) == 3
    assert splits.info.source == "torchvision CIFAR10 python batches"
    assert len(splits.info.sha256) == 6


def test_cifar_missing(tmp_path):
    with pytest.raises(DataError) as error:
        load("cifar100", tmp_path)
    assert str(tmp_path / "cifar100" / "cifar-100-python") in str(error.value)
    with pytest.raises(DataError, match="cifar10-jpeg.tar.gz"):
        load("cifar10", tmp_path)


# --- ImageNet ----------------------------------------------------------------------------------


def test_imagenet_image_folder_gives_uint8_crops(tmp_path):
    for split, wnids in (
        ("train", ("n01440764", "n01443537")),
        ("val", ("n01440764", "n01443537")),
    ):
        for wnid in wnids:
            (tmp_path / "imagenet" / split / wnid).mkdir(parents=True)
            Image.new("RGB", (400, 300), (200, 10, 10)).save(
                tmp_path / "imagenet" / split / wnid / f"{wnid}_1.JPEG"
            )
    splits = load("imagenet", tmp_path, seed=0)
    x, y = splits.test[1]
    assert x.shape == (3, 224, 224) and x.dtype == torch.uint8 and type(x) is torch.Tensor
    assert y == 1 and (splits.info.n_train, splits.info.n_test) == (2, 2)
    assert splits.train[0][0].shape == (3, 224, 224)
    assert load("imagenet", tmp_path, image_size=64).test[0][0].shape == (3, 64, 64)
    assert len(load("imagenet", tmp_path, n_train=1).train) == 1


def test_imagenet_missing_and_no_download(tmp_path):
    with pytest.raises(DataError, match="ImageFolder") as error:
        load("imagenet", tmp_path)
    assert f"{tmp_path / 'imagenet'}/train/<wnid>/*.JPEG" in str(error.value)
    with pytest.raises(DataError, match="cannot be downloaded"):
        load("imagenet", tmp_path, download=True)


# --- the catalog: one complete description per data set ----------------------------------------


def test_importing_the_catalog_imports_no_torch_numpy_or_pil():
    heavy = ("torch", "torchvision", "numpy", "PIL")
    code = (
        "import sys; from bench.data.catalog import DATASETS; import bench.data;"
        f" print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", DATASETS)
def test_every_data_set_is_described_completely(name):
    """Its loader and file lister resolve, its shape and classes are sane, its normalisation
    has a mean and std per channel, and its sample (where it has one) is the committed file."""
    d = DATASETS[name]
    assert callable(resolve(d.loader)) and callable(resolve(d.files))
    assert len(d.shape) == 3 and all(isinstance(n, int) and n > 0 for n in d.shape)
    assert d.classes is None or d.classes > 1
    if d.normalise is not None:
        assert d.classes is not None
        assert [len(v) for v in d.normalise] == [d.shape[0]] * 2
        assert all(0 < std < 1 for std in d.normalise[1])
    if d.sample is not None:
        path = data.SAMPLES_DIR / f"{name}.npz"
        assert sha256(path) == d.sample.sha256
        assert d.sample.sha256 in (data.SAMPLES_DIR / "README.md").read_text()
        assert d.sample.train > 0 and d.sample.test >= 0
        sizes = f"{d.sample.train} train + {d.sample.test} test" if d.sample.test else ""
        assert d.sample.source.startswith(sizes or f"{d.sample.train} ")  # the record says them


def test_every_committed_sample_is_described():
    described = {f"{n}.npz" for n, d in DATASETS.items() if d.sample is not None}
    assert {p.name for p in data.SAMPLES_DIR.glob("*.npz")} == described


@pytest.mark.parametrize("name", [n for n, d in DATASETS.items() if d.sample is not None])
def test_smoke_sample_loads_as_described(name):
    d = DATASETS[name]
    splits = load(name, "/nonexistent", sample=True)
    (x_train, y_train), (x_test, y_test) = splits.train.tensors, splits.test.tensors
    assert x_train.shape == (d.sample.train, *d.shape)
    assert x_test.shape == (d.sample.test or d.sample.train, *d.shape)
    assert x_train.dtype == torch.uint8 and y_train.dtype == torch.int64
    assert y_train.min() >= 0 and y_test.min() >= 0
    if d.classes is not None:
        assert y_train.max() < d.classes and y_test.max() < d.classes
    assert x_train.float().std() > 20  # real images, not blanks
    assert splits.info.sha256 == {f"{name}.npz": d.sample.sha256}
    source = f"committed smoke sample bench/samples/{name}.npz ({d.sample.source})"
    assert splits.info.source == source
    assert splits.info.lossy == d.sample.lossy


# --- smoke samples, subsets, errors ------------------------------------------------------------


def test_samples_total_size_under_4_mb():
    assert sum(p.stat().st_size for p in data.SAMPLES_DIR.glob("*.npz")) < 4_000_000


def test_corrupt_sample_raises_naming_file(tmp_path, monkeypatch):
    shutil.copy(data.SAMPLES_DIR / "mnist.npz", tmp_path / "mnist.npz")
    with open(tmp_path / "mnist.npz", "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(data.samples, "SAMPLES_DIR", tmp_path)
    with pytest.raises(DataError, match="checksum mismatch") as error:
        load("mnist", None, sample=True)
    assert str(tmp_path / "mnist.npz") in str(error.value)
    with pytest.raises(DataError, match="no committed smoke sample for cifar100"):
        load("cifar100", None, sample=True)


def test_subsets_are_seeded_and_sized():
    full = load("mnist", None, sample=True)
    a = load("mnist", None, sample=True, n_train=100, n_test=50, seed=3)
    b = load("mnist", None, sample=True, n_train=100, n_test=50, seed=3)
    c = load("mnist", None, sample=True, n_train=100, n_test=50, seed=4)
    assert (len(a.train), len(a.test), a.info.n_train, a.info.n_test) == (100, 50, 100, 50)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    assert "seeds 6 and 7" in a.info.notes
    # The test subset depends on the seed and n_test only, not on the training subset.
    d = load("mnist", None, sample=True, n_train=None, n_test=50, seed=3)
    assert torch.equal(a.test.tensors[0], d.test.tensors[0])
    # Every picked image is one of the full set's, in the set's order.
    position = {x.numpy().tobytes(): i for i, x in enumerate(full.train.tensors[0])}
    rows = [position[x.numpy().tobytes()] for x in a.train.tensors[0]]
    assert rows == sorted(rows) and len(set(rows)) == 100
    capped = load("mnist", None, sample=True, n_train=10_000)
    assert capped.info.n_train == 512 and capped.info.notes == ""


def test_image_size_resizes_in_memory_sets():
    splits = load("mnist", None, sample=True, n_train=4, n_test=2, image_size=32)
    assert splits.train.tensors[0].shape == (4, 1, 32, 32)
    assert splits.train.tensors[0].dtype == torch.uint8 and "28x28->32x32" in splits.info.notes


def test_errors_are_one_line():
    with pytest.raises(DataError, match="unknown data set 'svhn'"):
        load("svhn", None)
    with pytest.raises(DataError, match="--data-dir"):
        load("mnist", None)
    assert "\n" not in str(DataError("first line\nsecond line"))


# --- the real data, where this checkout has it -------------------------------------------------


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"no real data at {REAL_DATA}")
def test_real_mnist_and_omniglot_zips():
    mnist = load("mnist", REAL_DATA)
    assert (mnist.info.n_train, mnist.info.n_test) == (60_000, 10_000)
    assert mnist.train.tensors[0].shape == (60_000, 1, 28, 28)
    omniglot = load("omniglot", REAL_DATA)
    # The full set (1,623 characters x 20 drawers) plus the two small zips, whose 5,840
    # drawings are byte-identical copies of drawings in the full zips and are dropped.
    assert (omniglot.info.n_train, omniglot.info.n_test) == (24_345, 8_115)
    assert int(omniglot.train.tensors[1].max()) + 1 == 1623
    assert "5840 duplicate drawings dropped" in omniglot.info.notes
    assert 0.05 < omniglot.train.tensors[0].float().mean() / 255 < 0.15  # sparse bright strokes


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"no real data at {REAL_DATA}")
def test_real_binarized_mnist_and_lossless_cifar10():
    binary = load("binarized_mnist", REAL_DATA)
    assert (binary.info.n_train, binary.info.n_test) == (50_000, 10_000)
    assert set(binary.train.tensors[0].unique().tolist()) == {0, 255}
    cifar = load("cifar10_lossless", REAL_DATA)
    assert (cifar.info.n_train, cifar.info.n_test) == (10_000, 10_000)
    assert not cifar.info.lossy and "lossless" in cifar.info.source
    assert 0.47 < cifar.train.tensors[0].float().mean() / 255 < 0.49  # CIFAR-10's mean


# --- binarized MNIST and the lossless CIFAR-10 copy, on generated files -------------------------


def write_amat(root: Path, gz: bool, monkeypatch, n: int = 3) -> dict[str, np.ndarray]:
    """Random .amat files; the loader is told their sums (the real ones cannot match)."""
    import gzip

    folder = root / "binarized_mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    arrays, sums = {}, {}
    for split in ("train", "valid", "test"):
        bits = rng.integers(0, 2, (n, 784))
        text = "".join(" ".join(map(str, row)) + "\n" for row in bits).encode()
        name = f"binarized_mnist_{split}.amat"
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(text) if gz else text)
        arrays[split] = bits
        sums[split] = hashlib.sha256(text).hexdigest()
    monkeypatch.setattr(data.mnist, "BINARIZED_SHA256", sums)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_binarized_mnist_reads_amat_files_gzipped_or_not(tmp_path, monkeypatch, gz):
    arrays = write_amat(tmp_path, gz, monkeypatch)
    splits = load("binarized_mnist", tmp_path)
    x_train = splits.train.tensors[0]
    assert x_train.shape == (3, 1, 28, 28) and x_train.dtype == torch.uint8
    assert np.array_equal(x_train.reshape(3, 784).numpy(), arrays["train"] * 255)
    assert np.array_equal(splits.test.tensors[0].reshape(3, 784).numpy(), arrays["test"] * 255)
    assert "Larochelle" in splits.info.source and "validation images unused" in splits.info.notes


def test_binarized_mnist_checks_the_original_sums(tmp_path, monkeypatch):
    write_amat(tmp_path, gz=True, monkeypatch=monkeypatch)
    data.mnist.BINARIZED_SHA256["train"] = "ad693b29" + "0" * 56  # not these files' bytes
    with pytest.raises(DataError, match="checksum mismatch") as error:
        load("binarized_mnist", tmp_path)
    assert error.value.corrupt and "binarized_mnist_train.amat.gz" in str(error.value)


def write_lossless(root: Path) -> dict[str, dict]:
    folder = root / "cifar10-lossless"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    batches = {}
    for name in ("data_batch_1", "test_batch"):
        batch = {
            "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
            "labels": [1, 2, 3, 9],
            "batch_label": name,
        }
        (folder / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))
    return batches


def test_lossless_cifar10_is_its_own_source_with_its_own_sums(tmp_path, no_known_sums):
    batches = write_lossless(tmp_path)
    splits = load("cifar10_lossless", tmp_path)
    x = splits.train.tensors[0]
    assert x.shape == (4, 3, 32, 32)
    assert np.array_equal(x.reshape(4, 3072).numpy(), batches["data_batch_1"]["data"])
    assert splits.test.tensors[1].tolist() == [1, 2, 3, 9]
    assert set(splits.info.sha256) == {"data_batch_1", "test_batch", "batches.meta"}
    assert not splits.info.lossy
    no_known_sums["cifar10-lossless/test_batch"] = "0" * 64
    with pytest.raises(DataError, match="checksum mismatch"):
        load("cifar10_lossless", tmp_path)


def test_lossless_cifar10_missing_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="lossless CIFAR-10 not found") as error:
        load("cifar10_lossless", tmp_path)
    assert str(tmp_path / "cifar10-lossless") in str(error.value)


def test_fingerprint_hashes_the_files_a_load_reads(tmp_path, no_known_sums):
    write_lossless(tmp_path)
    before = data.fingerprint("cifar10_lossless", tmp_path)
    assert set(before) == {"data_batch_1", "test_batch", "batches.meta"}
    with open(tmp_path / "cifar10-lossless" / "test_batch", "ab") as f:
        f.write(b"x")
    after = data.fingerprint("cifar10_lossless", tmp_path)
    assert after["test_batch"] != before["test_batch"]
    assert after["data_batch_1"] == before["data_batch_1"]
    assert data.fingerprint("mnist", tmp_path) == {}  # absent: the cell reports it when it runs
    sample = data.fingerprint("mnist", None, sample=True)
    assert sample == {"mnist.npz": DATASETS["mnist"].sample.sha256}


# --- Files that cannot be decoded and whose sums are not known: "data corrupt", naming them -----


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_a_binarized_mnist_gz_that_does_not_decompress_is_corrupt(tmp_path, monkeypatch, damage):
    write_amat(tmp_path, gz=True, monkeypatch=monkeypatch)
    path = tmp_path / "binarized_mnist" / "binarized_mnist_train.amat.gz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else os.urandom(500))
    with pytest.raises(DataError) as error:
        load("binarized_mnist", tmp_path)
    assert error.value.corrupt and str(error.value).startswith(f"data corrupt: {path}: ")


def test_a_junk_extra_omniglot_zip_is_corrupt(tmp_path, no_known_sums):
    (tmp_path / "omniglot").mkdir()
    write_omniglot_zip(tmp_path / "omniglot" / "images_background_small1.zip", [("Greek", "c01")])
    junk = tmp_path / "omniglot" / "images_extra.zip"
    junk.write_bytes(b"PK\x03\x04" + os.urandom(300))
    with pytest.raises(DataError) as error:
        load("omniglot", tmp_path)
    assert error.value.corrupt
    assert str(error.value).startswith(f"data corrupt: {junk}: not a readable zip file (")


@pytest.mark.parametrize("junk", [b"not a png", drawing(1)[:60]], ids=["junk", "truncated"])
def test_a_junk_png_in_an_omniglot_folder_is_corrupt(tmp_path, no_known_sums, junk):
    folder = tmp_path / "omniglot" / "omniglot-py" / "images_background" / "Latin" / "c01"
    folder.mkdir(parents=True)
    for drawer in range(1, 21):
        (folder / f"0500_{drawer:02d}.png").write_bytes(drawing(drawer))
    (folder / "0500_07.png").write_bytes(junk)
    with pytest.raises(DataError) as error:
        load("omniglot", tmp_path)
    assert error.value.corrupt
    assert str(error.value).startswith(f"data corrupt: {folder / '0500_07.png'}: not a readable")


def test_any_other_undecodable_file_is_corrupt_naming_the_data_set_folder(tmp_path, monkeypatch):
    def truncated(root, **kwargs):
        raise EOFError("Ran out of input")

    monkeypatch.setattr(data.mnist, "load", truncated)  # the catalog resolves it on use
    with pytest.raises(DataError) as error:
        load("mnist", tmp_path)
    assert error.value.corrupt
    assert str(error.value) == (
        f"data corrupt: {tmp_path / 'mnist'}: a file of mnist cannot be decoded (EOFError: Ran out"
        " of input); replace it with an intact copy"
    )
