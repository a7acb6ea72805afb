"""Rebuild the committed smoke samples bench/samples/<name>.npz from the real data in DIR.

    python -m bench.samples.make_samples --data-dir ../shared/data

DIR has the layout `bench.data.load` reads, plus `imagenet-sample/<wnid>_<name>.JPEG`. The .npz
files are written byte-reproducibly (fixed zip timestamps), so a rebuild from the same data and
library versions gives the same sums; paste the printed sums into the data sets' `Sample` in
bench/data/catalog.py and into README.md. Each sample's sizes are its catalog entry's.
"""

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data import DATASETS, SAMPLES_DIR, imagenet_transform, load

# The data sets with a committed sample; ImageNet's is 8 picked images of a folder of its own.
SAMPLED = [name for name, d in DATASETS.items() if d.sample is not None]
SEED = 0

# ILSVRC-2012 class index (position of the wnid in the sorted 1000-wnid list), checked against
# the Keras imagenet_class_index.json.
IMAGENET_PICKS = {
    "n01440764": 0,  # tench
    "n02007558": 130,  # flamingo
    "n02110185": 250,  # Siberian husky
    "n02391049": 340,  # zebra
    "n02787622": 420,  # banjo
    "n03642806": 620,  # laptop
    "n04310018": 820,  # steam locomotive
    "n09472597": 980,  # volcano
}


def write_npz(path: Path, **arrays: np.ndarray) -> str:
    """np.savez_compressed with a fixed timestamp per member, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(member, buffer.getvalue(), zipfile.ZIP_DEFLATED, compresslevel=9)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pick(splits, n_train: int, n_test: int):
    """The committed samples' images: one generator seeded with SEED draws the training subset,
    then the test subset (as `bench.data.load` did when they were made), kept in order."""
    generator = torch.Generator().manual_seed(SEED)
    out = []
    for dataset, n in ((splits.train, n_train), (splits.test, n_test)):
        index = torch.randperm(len(dataset), generator=generator)[:n].sort().values
        out.append(tuple(t[index] for t in dataset.tensors))
    return out


def imagenet_sample(folder: Path) -> dict[str, np.ndarray]:
    """The picked images, as the ImageNet test transform gives them: 3x224x224 uint8."""
    transform = imagenet_transform(224, train=False)
    xs, ys = [], []
    for wnid, label in IMAGENET_PICKS.items():
        (path,) = folder.glob(f"{wnid}_*.JPEG")
        xs.append(transform(Image.open(path).convert("RGB")).numpy())
        ys.append(label)
    return {"x_train": np.stack(xs), "y_train": np.array(ys, dtype=np.int64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR)
    parser.add_argument("--only", nargs="+", choices=SAMPLED, help="rebuild these")
    args = parser.parse_args()
    wanted = set(args.only or SAMPLED)
    samples = {}
    for name in SAMPLED:
        if name not in wanted or name == "imagenet":
            continue
        splits = load(name, args.data_dir)
        sample = DATASETS[name].sample
        (x_train, y_train), (x_test, y_test) = pick(splits, sample.train, sample.test)
        samples[name] = {
            "x_train": x_train.numpy(),
            "y_train": y_train.numpy(),
            "x_test": x_test.numpy(),
            "y_test": y_test.numpy(),
        }
    if "imagenet" in wanted:
        samples["imagenet"] = imagenet_sample(args.data_dir / "imagenet-sample")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, arrays in samples.items():
        path = args.out / f"{name}.npz"
        digest = write_npz(path, **arrays)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
        print(f"{name}: sha256 {digest} ({path.stat().st_size} bytes; {shapes})")


if __name__ == "__main__":
    main()
