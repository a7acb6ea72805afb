"""One module per model family; each is plain PyTorch with the paper's equations beside the code.

`MODELS` is the registry a spec's `model = "..."` names: an explicit mapping from that name to
"module:constructor", imported only when built, so that checking a spec needs no torch and a
helper such as `models.resnet.depth` can never be mistaken for a model.
"""

from __future__ import annotations

import importlib
from typing import Any

MODELS: dict[str, str] = {
    # Classifiers (RevNet and i-RevNet tables)
    "resnet32": "models.resnet:resnet32",
    "resnet110": "models.resnet:resnet110",
    "resnet164": "models.resnet:resnet164",
    "resnet_cifar": "models.resnet:resnet_cifar",
    "revnet38": "models.revnet:revnet38",
    "revnet110": "models.revnet:revnet110",
    "revnet164": "models.revnet:revnet164",
    "revnet_cifar": "models.revnet:revnet_cifar",
    "revnet56_imagenet": "models.revnet:revnet56_imagenet",
    "revnet104_imagenet": "models.revnet:revnet104_imagenet",
    "irevnet_a": "models.irevnet:irevnet_a",
    "irevnet_b": "models.irevnet:irevnet_b",
    "irevnet_cifar": "models.irevnet:irevnet_cifar",
    "irevnet_released_imagenet": "models.irevnet:irevnet_released_imagenet",
    "resnet50": "torchvision.models:resnet50",
    # Density models (likelihood tables): constructor(shape=(C, H, W), **hyperparameters)
    "vae": "models.iwae:vae",
    "iwae": "models.iwae:iwae",
    "factorised": "models.factorised:Factorised",
    "hvae": "models.hvae:HierarchicalVAE",
    "pixelvae": "models.hvae:PixelVAE",
    "pixelvae2": "models.hvae:pixelvae2",
    "nice": "models.nice:NICE",
    "pixelcnn": "models.pixelcnn:PixelCNN",
    "gated_pixelcnn": "models.pixelcnn:GatedPixelCNN",
    "pixelcnnpp": "models.pixelcnnpp:PixelCNNpp",
    "pixelsnail": "models.pixelsnail:PixelSNAIL",
}


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def check(name: str) -> None:
    if name not in MODELS:
        raise UnknownModel(f"unknown model '{name}'; registered in models/__init__.py: "
                           + ", ".join(MODELS))  # fmt: skip


def build(name: str, **kwargs: Any):
    """Construct the registered model `name` with keyword arguments."""
    check(name)
    module, attr = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
