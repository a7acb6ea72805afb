"""One module per model family; each is plain PyTorch with the paper's equations beside the code.

`MODELS` is the registry a spec's `model = "..."` names: an explicit mapping from that name to
"module:constructor", imported only when built, so that checking a spec needs no torch and a
helper such as `models.resnet.depth` can never be mistaken for a model.

A model from outside this repository enters a table as a plugin: registered for a run by a spec's
`[models]` table or `bench run --add-model NAME=package.module:Constructor` (`register`), or by an
installed package under the entry-point group `dgm_bench.models`. It meets the same contract as
ours (bench/contracts.py); its records name its package, version and a hash of its source.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

from .typecheck import fits

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


PLUGIN_GROUP = "dgm_bench.models"  # entry points of installed packages: name = "module:attr"
_PLUGINS: dict[str, str] = {}  # registered for this process by a spec or --add-model
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def register(name: str, target: str) -> None:
    """Make `name` build `target` ("package.module:Constructor") in this process."""
    if name in MODELS:
        raise UnknownModel(
            f"model '{name}' is one of ours (models/__init__.py); name yours otherwise"
        )
    if not _TARGET.fullmatch(target):
        raise UnknownModel(f"model '{name}' = {target!r}: expected 'package.module:Constructor'")
    if importlib.util.find_spec(target.split(":")[0].split(".")[0]) is None:
        raise UnknownModel(
            f"model '{name}' = {target!r}: no module"
            f" '{target.split('.')[0].split(':')[0]}' on the Python path; install"
            " its package or add its folder to PYTHONPATH"
        )
    _PLUGINS[name] = target


def target(name: str) -> str:
    """The "module:constructor" that builds model `name`: ours, a registered plugin, or an
    installed package's entry point."""
    found = MODELS.get(name) or _PLUGINS.get(name) or _entry_points().get(name)
    if found is None:
        raise UnknownModel(
            f"unknown model '{name}'; registered in models/__init__.py: "
            + ", ".join(MODELS)
            + f"; plugins: {', '.join(plugins()) or 'none'}"
            " (--add-model NAME=package.module:Constructor)"
        )
    return found


def plugins() -> dict[str, str]:
    """Plugin models this process knows: installed entry points, then registered ones."""
    return {**_entry_points(), **_PLUGINS}


def registered() -> dict[str, str]:
    """The plugins registered in this process (what a child process must register too)."""
    return dict(_PLUGINS)


def check(name: str) -> None:
    target(name)


def build(name: str, **kwargs: Any):
    """Construct model `name` with keyword arguments."""
    module, attr = target(name).split(":")
    try:
        constructor = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UnknownModel(f"model '{name}' = '{module}:{attr}' cannot be loaded: {e}") from None
    except (Exception, SystemExit) as e:  # a plugin's module that raises (or exits) on import
        raise UnknownModel(
            f"model '{name}' = '{module}:{attr}' cannot be loaded: importing"
            f" {module} raised {type(e).__name__}: {e}"
        ) from None
    check_types(name, constructor, kwargs)
    return constructor(**kwargs)


def provenance(name: str) -> dict[str, str]:
    """For a plugin: its constructor, package, version and the sha256 of its package's source
    (what a record names and the reuse key hashes); empty for our own models."""
    if name in MODELS:
        return {}
    found = target(name)
    top = found.split(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)
    origin = Path(spec.origin) if spec and spec.origin else None
    files = (
        sorted(origin.parent.rglob("*.py"))
        if origin and origin.name == "__init__.py"
        else [origin]
        if origin
        else []
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(origin.parent)).encode() + path.read_bytes())
    dists = importlib.metadata.packages_distributions().get(top, [])
    version = importlib.metadata.version(dists[0]) if dists else "not installed (on the path)"
    return {
        "model": name,
        "constructor": found,
        "package": dists[0] if dists else top,
        "version": version,
        "source_sha256": digest.hexdigest(),
    }


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
        _check_kind(name, key, hint, value)


def _check_kind(name: str, key: str, hint: str, value: Any) -> None:
    if not fits(value, hint):  # no annotation, or one not read (a tuple, a class): fits
        raise TypeError(f"model '{name}': {key} takes {hint}, got {value!r}")


def check_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """`build`'s argument checks read from our models' source instead of importing it (so with
    no torch): an argument the constructor does not take, or of a kind its plain annotation
    excludes. A constructor this cannot read (a plugin's, one passing **kwargs on) is checked
    when it is built, on the meta device, by `bench validate --models` and `bench run`."""
    parameters = _parameters(target(name))
    if parameters is None:
        return
    hints, takes_more = parameters
    for key, value in kwargs.items():
        if key in hints:
            _check_kind(name, key, hints[key], value)
        elif not takes_more:
            raise TypeError(
                f"model '{name}' takes no argument '{key}'; it takes: {', '.join(hints)}"
            )


@functools.cache
def _parameters(found: str) -> tuple[dict[str, str], bool] | None:
    """A constructor's parameters -> annotation text, and whether it takes **kwargs, from the
    source of a module of this package; None where the source does not say."""
    module, attr = found.split(":")
    if not module.startswith(f"{__name__}."):
        return None
    path = Path(__file__).parent / f"{module.split('.', 1)[1]}.py"
    tree = {
        node.name: node
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    node = tree.get(attr)
    while isinstance(node, ast.ClassDef):
        init = next(
            (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None
        )
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        node = init or (tree.get(bases[0]) if len(bases) == 1 else None)
    if node is None:
        return None
    args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    hints = {a.arg: ast.unparse(a.annotation) if a.annotation else "" for a in args}
    hints.pop("self", None)
    return hints, node.args.kwarg is not None


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
