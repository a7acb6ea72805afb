"""What a model must provide to enter a table: declared here, checked before anything trains.

Each task names its contract (bench/tasks/__init__.py). A model meets it by having the
contract's required members and by listing, in a class attribute `capabilities`, which of the
contract's optional members it has. A task calls an optional member only when it is declared,
never by probing with `hasattr` or signatures, so what a row of a table can show is stated by
the model; `bench validate --models` and `bench run` refuse a model whose members and declaration
disagree, in one line, before a cell starts. Importing this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import Generator, Tensor

INPUT_KINDS = ("binary", "discrete256", "continuous")  # what a likelihood model takes as x


class DensityModel(Protocol):
    """A likelihood table's model, built as `Model(shape=(C, H, W), **cell and model_kwargs)`."""

    input_kind: str  # one of INPUT_KINDS: the spec's `prep` must make this kind of input
    capabilities: frozenset[str]  # which of DENSITY.optional it has

    def forward(self, x: Tensor) -> Tensor:
        """The per-image training loss in nats, [B] (a bound for latent-variable models)."""

    def nll(self, x: Tensor) -> Tensor:
        """The test NLL in nats, [B]: exact, or with `bound`, nll(x, k, chunk) with k samples."""

    def sample(self, n: int, generator: Generator | None = None) -> Tensor:
        """Optional (`sample`): n images in the model's input kind."""


class Classifier(Protocol):
    """A classification or memory table's model, built as `Model(num_classes=N, **cell)`."""

    capabilities: frozenset[str]  # which of CLASSIFIER.optional it has

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, N] (or a tuple whose first item is the logits)."""


@dataclass(frozen=True)
class Contract:
    name: str
    protocol: type
    required: tuple[str, ...]  # members every model of the contract has
    optional: dict[str, str]  # capability -> the member it requires and what a table gains
    # A capability whose member is not named like it: `bound` is a richer `nll`.
    members: dict[str, str] = field(default_factory=dict)

    def member(self, capability: str) -> str:
        return self.members.get(capability, capability)


DENSITY = Contract(
    "density model",
    DensityModel,
    required=("input_kind", "forward", "nll"),
    optional={
        "sample": "sample(n, generator): the s/sample column and the figure of samples",
        "naive_sampler": "sample(n, generator, naive=True): the uncached sampler, timed beside it",
        "bound": "nll(x, k, chunk): an importance-sampled bound with the tier's nll_k samples",
        "init_from_data": "init_from_data(x_uint8): a start computed from the training images",
        "init_from_batch": "init_from_batch(x): a start from init_batch prepared images",
        "param_groups": "param_groups(): optimizer groups, each with an optional lr_scale",
        "active_units": "active_units(x, n_samples): active units per stochastic layer",
        "elbo_terms": "elbo_terms(x) -> {term: [B]}: the bound's terms (per-level KL)",
    },
    members={"naive_sampler": "sample", "bound": "nll"},
)
CLASSIFIER = Contract(
    "classifier",
    Classifier,
    required=("forward",),
    optional={
        "inverse": "inverse(z) -> x: the reconstruction error of an invertible network",
        "memory_saving": "memory_saving (a switch): gradients and drift of the recomputing"
        " backward against plain autograd",
        "reversible_floor": "without_reversible_blocks(): the memory its other parts store",
    },
    members={"reversible_floor": "without_reversible_blocks"},
)
CONTRACTS = {"density": DENSITY, "classifier": CLASSIFIER}


def problems(model: object, contract: Contract) -> list[str]:
    """What `model` lacks to meet `contract`, one phrase each (empty when it meets it)."""
    found = []
    caps = getattr(model, "capabilities", None)
    if not isinstance(caps, frozenset | set):
        found.append(
            "no `capabilities` class attribute (a frozenset naming which of "
            f"{', '.join(contract.optional)} it has; frozenset() for none)"
        )
        caps = frozenset()
    found += [f"no `{name}`" for name in contract.required if not hasattr(model, name)]
    for cap in sorted(caps):
        if cap not in contract.optional:
            found.append(
                f"capability '{cap}' is not one a {contract.name} can declare"
                f" ({', '.join(contract.optional)})"
            )
        elif not hasattr(model, contract.member(cap)):
            found.append(f"declares '{cap}' but has no `{contract.member(cap)}`")
    for cap in contract.optional:
        member = contract.member(cap)
        if cap not in caps and member == cap and hasattr(model, member):
            found.append(
                f"has `{member}` but does not declare '{cap}' in `capabilities`"
                " (undeclared, the table would never use it)"
            )
    kind = getattr(model, "input_kind", None)
    if "input_kind" in contract.required and kind is not None and kind not in INPUT_KINDS:
        found.append(f"input_kind {kind!r} is not one of {', '.join(INPUT_KINDS)}")
    return found


def has(model: object, capability: str) -> bool:
    """Whether `model` declares `capability`: the only way a task decides to call an option."""
    return capability in getattr(model, "capabilities", ())
