"""One module per model family; each is plain PyTorch with the paper's equations beside the code.

`MODELS` is the registry a spec's `model = "..."` names: an explicit mapping from that name to
"module:constructor", imported only when built, so that checking a spec needs no torch and a
helper such as `models.resnet.depth` can never be mistaken for a model.
"""

from __future__ import annotations

import importlib
import inspect
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
    "resnet50": "models.resnet:resnet50",
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
    constructor = getattr(importlib.import_module(module), attr)
    check_types(name, constructor, kwargs)
    return constructor(**kwargs)


_PLAIN = {"int": int, "float": int | float, "bool": bool, "str": str, "None": type(None)}


def check_types(name: str, constructor, kwargs: dict[str, Any]) -> None:
    """A TypeError for an argument of the wrong kind where the constructor's annotation is plain
    (`k: int` given 1.5 or 5.0, a bool for a number): a model would take it and fail mid-run."""
    try:
        parameters = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        return
    for key, value in kwargs.items():
        hint = parameters[key].annotation if key in parameters else inspect.Parameter.empty
        hint = hint if isinstance(hint, str) else getattr(hint, "__name__", "")
        kinds = [k.strip() for k in hint.split("|")]
        if not hint or any(k not in _PLAIN for k in kinds):
            continue  # no annotation, or one this check does not read (a tuple, a class)
        fits = any(isinstance(value, _PLAIN[k]) and (k == "bool" or not isinstance(value, bool))
                   for k in kinds)  # fmt: skip
        if not fits:
            raise TypeError(f"model '{name}': {key} takes {hint}, got {value!r}")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
