"""`bench invert`: push real images through an invertible network and back, and show it.

The figure has three rows: the originals, inverse(forward(x)), and |difference| scaled up so
that float32 round-off becomes visible; the title gives the maximum absolute error.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import models  # noqa: E402

from . import data as datasets  # noqa: E402
from .data.catalog import DATASETS  # noqa: E402
from .errors import UsageError  # noqa: E402
from .plot import save_figure  # noqa: E402
from .tasks.classify import normalise  # noqa: E402
from .train import why  # noqa: E402

# The classifiers whose forward returns (logits, z) and whose inverse(z) gives x back: i-RevNets.
INVERTIBLE = tuple(n for n, target in models.MODELS.items() if target.startswith("models.irevnet:"))


def check_invertible(model_name: str) -> None:
    """Refuse, before building it, a model that is unknown or not an i-RevNet (a VAE takes no
    num_classes; a RevNet has no inverse of the whole network)."""
    try:
        models.check(model_name)
    except models.UnknownModel as e:
        raise UsageError(str(e)) from None
    if model_name not in INVERTIBLE:
        raise UsageError(
            f"model '{model_name}' has no inverse(); pick an invertible model:"
            f" {', '.join(INVERTIBLE)}"
        )


def load_images(folder: Path | None, dataset: str, n: int, size: int) -> torch.Tensor:
    """uint8 [n, 3, size, size]: files from `folder`, else the committed sample of `dataset`."""
    if folder is None:
        x = datasets.load(dataset, None, sample=True).test.tensors[0][:n]
    else:
        if not folder.is_dir():
            raise UsageError(f"--images {folder}: no such folder; pass a folder of images")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        if not files:
            raise datasets.DataError(
                f"{folder}: no .jpg/.jpeg/.png images; pass a folder of images"
            )
        x = torch.stack([_square(_open(p), size) for p in files[:n]])
    if x.shape[-1] != size:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).byte()
    return x


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, ValueError) as e:
        raise datasets.DataError(
            f"{path}: not a readable image ({type(e).__name__}); remove it from --images"
        ) from None


def _square(image: Image.Image, size: int) -> torch.Tensor:
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


@torch.no_grad()
def invert(
    model_name: str,
    dataset: str,
    out: Path,
    images: Path | None = None,
    weights: Path | None = None,
    n: int = 4,
    size: int | None = None,
    seed: int = 0,
) -> tuple[Path, float]:
    torch.manual_seed(seed)
    check_invertible(model_name)
    model = models.build(model_name, num_classes=DATASETS[dataset].classes)
    if weights is not None:
        _load_weights(model, model_name, weights)
    model.eval()
    size = size or DATASETS[dataset].shape[-1]
    x_uint8 = load_images(images, dataset, n, size)
    x = normalise(x_uint8, dataset)
    _, z = model(x)
    x_hat = model.inverse(z)
    error = (x_hat - x).abs().max().item()

    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in DATASETS[dataset].normalise)
    shown = [x * std + mean, x_hat * std + mean]
    diff = (x_hat - x).abs().amax(1, keepdim=True).expand_as(x)
    scale = 1 / max(diff.max().item(), 1e-12)
    fig, axes = plt.subplots(3, len(x), figsize=(2.2 * len(x), 6.8), squeeze=False)
    labels = ["original x", "inverse(forward(x))", f"|difference| x {scale:.1e}"]
    for j in range(len(x)):
        for i, img in enumerate([*shown, diff * scale]):
            axes[i][j].imshow(img[j].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
            if j == 0:
                axes[i][j].set_ylabel(labels[i], fontsize=8)
    state = "trained weights " + weights.name if weights else f"random weights (seed {seed})"
    fig.suptitle(f"{model_name}, {state}: max |x - inverse(forward(x))| = {error:.2e}", fontsize=9)
    return save_figure(fig, out, dpi=110), error


def _load_weights(model: torch.nn.Module, model_name: str, weights: Path) -> None:
    if not weights.is_file():
        raise UsageError(
            f"--weights {weights}: no such file; pass a state_dict saved by torch.save"
        )
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as e:  # a torch.load or load_state_dict failure: name the file, not the trace
        # A refused pickle names the global it asked for, never torch's unsafe-loading advice.
        gist = why(e) if isinstance(e, pickle.UnpicklingError) else " ".join(str(e).split())[:160]
        raise UsageError(
            f"--weights {weights}: not a state_dict of {model_name} ({type(e).__name__}: {gist})"
        ) from None
