"""What a spec's tier may set for each task, checked without torch.

Every task's `Settings` lives here rather than in the task's module, which imports torch: `bench
validate` checks every tier's settings and every cell's data set, model name and argument kinds
in a fraction of a second this way, and leaves building each model on the meta device against its
contract to `bench validate --models` (and to `bench run`, before anything trains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import models

from ..data.catalog import DATASETS
from ..data.prep import PREPS

DATA_KINDS = ("real", "sample")


def positive(name: str, value: int | float | None, allow_none: bool = False) -> None:
    """A setting that must be > 0: one message that names it."""
    if value is None and allow_none:
        return
    if not _finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def non_negative(name: str, value: int | float) -> None:
    """A setting that must be >= 0 (a momentum, a weight decay): one message that names it."""
    if not _finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def _finite_number(value) -> bool:
    """An int or a float other than nan and inf (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_data(data: str) -> None:
    if data not in DATA_KINDS:
        raise ValueError(
            f"data must be 'real' (--data-dir) or 'sample' (the committed sample), got {data!r}"
        )


# The data sets a likelihood model can train on: those held in memory as tensors.
IN_MEMORY = tuple(name for name, d in DATASETS.items() if not d.streamed)


@dataclass(frozen=True)
class LikelihoodSettings:
    data: str = "real"  # "sample": the committed sample (smoke tiers)
    prep: str = "discrete256"  # a key of bench.data.prep.PREPS
    # Constructor arguments per model name, e.g. { pixelcnn = { levels = 2, hidden = 32 } }
    model_kwargs: dict = field(default_factory=dict)
    # Stage i trains epochs_per_stage[i] epochs at lr * 10^(-i / stages_per_decade); without
    # epochs_per_stage, stage i has 3^i epochs (the IWAE paper's schedule).
    stages: int = 1
    epochs_per_stage: list | None = None
    stages_per_decade: float = 7.0
    lr: float = 1e-3
    batch_size: int = 20
    adam_beta2: float = 0.999  # torch's notation: 1 - the early Adam papers' beta2
    adam_eps: float = 1e-8
    init_batch: int = 1000  # training images a model's `init_from_batch` sees
    n_train: int | None = None  # None: the whole training set
    n_test: int | None = None
    image_size: int | None = None  # resize (antialiased): smoke tiers of 32x32 models sample fast
    nll_k: int = 5000  # importance samples of a bound (latent-variable models only)
    nll_chunk: int = 1000  # samples per chunk of the bound; memory ~ chunk x nll_batch
    nll_batch: int = 100  # test images per call of nll
    au_samples: int = 100  # samples of the top layer's posterior mean (active units)
    # The first N test images of the active units logged after every epoch (0: not logged).
    au_epoch_images: int = 500
    max_steps_per_epoch: int | None = None
    samples: int = 16  # images in the PNG grid of samples (0: none)
    time_naive_sampler: bool = False  # also time `sample(samples, naive=True)` where a model has it

    def __post_init__(self):
        check_data(self.data)
        if self.prep not in PREPS:
            raise ValueError(f"prep must be one of {', '.join(PREPS)}, got {self.prep!r}")
        for name in (
            "stages",
            "lr",
            "batch_size",
            "adam_eps",
            "nll_k",
            "nll_chunk",
            "nll_batch",
            "au_samples",
            "stages_per_decade",
            "init_batch",
        ):
            positive(name, getattr(self, name))
        if not 0 <= self.adam_beta2 < 1:
            raise ValueError(
                f"adam_beta2 must be in [0, 1) (torch's notation), got {self.adam_beta2}"
            )
        for name in ("n_train", "n_test", "max_steps_per_epoch", "image_size"):
            positive(name, getattr(self, name), allow_none=True)
        if isinstance(self.au_epoch_images, bool) or not isinstance(self.au_epoch_images, int):
            raise ValueError(
                f"au_epoch_images must be an integer >= 0, got {self.au_epoch_images!r}"
            )
        non_negative("au_epoch_images", self.au_epoch_images)
        if not all(isinstance(v, dict) for v in self.model_kwargs.values()):
            raise ValueError("model_kwargs maps a model name to a table of its arguments")
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        stage_epochs(self)  # fail when the spec is read, not after a cell has started


def stage_epochs(s: LikelihoodSettings) -> list[int]:
    epochs = s.epochs_per_stage or [3**i for i in range(s.stages)]
    if len(epochs) != s.stages:
        raise ValueError(f"epochs_per_stage has {len(epochs)} entries for {s.stages} stages")
    if any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in epochs):
        raise ValueError(f"epochs_per_stage must hold non-negative integers, got {epochs}")
    return list(epochs)


# The data sets a classifier can train on: those whose description gives an input normalisation.
CLASSIFIABLE = tuple(name for name, d in DATASETS.items() if d.normalise is not None)


@dataclass(frozen=True)
class ClassifySettings:
    data: str = "real"  # "sample": the committed sample (smoke tiers)
    epochs: int = 1
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    lr_milestones: list = field(default_factory=list)  # epochs where lr is divided by 10
    augment: bool = True  # CIFAR: random crop with 4-pixel padding + horizontal flip
    train: bool = True  # False: count, invert and measure an untrained model only
    n_train: int | None = None
    n_test: int | None = None
    image_size: int | None = None  # resize the images (smoke tiers: cheap steps on real images)
    eval_batch: int = 200
    memory_batch: int = 32  # batch of the memory and step-time probes
    timing_steps: int = 3
    max_steps_per_epoch: int | None = None

    def __post_init__(self):
        check_data(self.data)
        for name in ("batch_size", "eval_batch", "memory_batch", "timing_steps"):
            positive(name, getattr(self, name))
        for name in ("n_train", "n_test", "image_size", "max_steps_per_epoch"):
            positive(name, getattr(self, name), allow_none=True)
        positive("lr", self.lr)
        non_negative("momentum", self.momentum)
        non_negative("weight_decay", self.weight_decay)
        if self.epochs < 0 or any(not isinstance(m, int) or m < 0 for m in self.lr_milestones):
            raise ValueError("epochs and lr_milestones must be non-negative integers")


@dataclass(frozen=True)
class MemorySettings:
    batch_size: int = 32
    image_size: int = 32
    num_classes: int = 10
    timing_steps: int = 3
    grad_check_batch: int = 8  # batch of the float32/float64 gradient comparison
    # A cell-like table ({model = ..., its keyword arguments}) that takes turns with every cell's
    # timed steps, so ratios of step times cancel the machine's drift between cells.
    timing_reference: dict | None = None

    def __post_init__(self):
        for name in ("batch_size", "image_size", "num_classes", "timing_steps", "grad_check_batch"):
            positive(name, getattr(self, name))
        if self.timing_reference is not None:
            if "model" not in self.timing_reference:
                raise ValueError("timing_reference needs a `model` (a name in models.MODELS)")
            models.check(self.timing_reference["model"])


REHEARSAL_STEPS = 2  # training steps per epoch of a rehearsal
REHEARSAL_TEST_IMAGES = 4
REHEARSAL_SAMPLE_S = (
    60.0  # the longest a rehearsal draws its one sample (a paper-sized sampler: hours)
)


def rehearsal(s, sample: bool = False):
    """A tier's settings cut to a rehearsal's bounded work, every model and evaluation setting
    as the tier has it: two steps an epoch, one epoch per learning-rate stage (at least two, so a
    checkpoint is written and resumed), the milestones crossed at the same rates, a few test
    images, one sample (by the sampler a run draws with; not the naive sampler's timing, an
    hour of one image at a paper's size on a CPU), one timed probe step. `sample`: the committed
    sample for data absent here."""
    data = {"data": "sample"} if sample and hasattr(s, "data") else {}
    if isinstance(s, LikelihoodSettings):
        epochs = [1] * s.stages if s.stages > 1 else [2]
        n_test = min(s.n_test or REHEARSAL_TEST_IMAGES, REHEARSAL_TEST_IMAGES)
        return replace(
            s,
            epochs_per_stage=epochs,
            max_steps_per_epoch=REHEARSAL_STEPS,
            n_test=n_test,
            samples=min(s.samples, 1),
            time_naive_sampler=False,  # a baseline's timing, not the pipeline: bench plan prices it
            **data,
        )
    if isinstance(s, ClassifySettings):
        milestones = list(range(1, len(s.lr_milestones) + 1))
        return replace(
            s,
            epochs=max(2, len(milestones) + 1),
            lr_milestones=milestones,
            max_steps_per_epoch=REHEARSAL_STEPS,
            timing_steps=1,
            n_test=min(s.n_test or 2 * REHEARSAL_TEST_IMAGES, 2 * REHEARSAL_TEST_IMAGES),
            **data,
        )
    return replace(s, timing_steps=1)


def model_arguments(cell: dict) -> dict:
    """What a cell (or a timing reference) passes to its model's constructor: every field but
    the data set and the model's name (a spec's `model_arguments`)."""
    return {k: v for k, v in cell.items() if k not in ("dataset", "model")}


def image_shape(dataset: str, s: LikelihoodSettings) -> tuple[int, int, int]:
    """(C, H, W) of a likelihood cell's images: the data set's, resized where the tier says."""
    shape = DATASETS[dataset].shape
    return (shape[0], s.image_size, s.image_size) if s.image_size else shape


def check_cell(task: str, cell: dict, s) -> None:
    """The checks of a cell that need no model built: its data set suits the task, its model is
    known and takes the cell's arguments, of the right kinds (as far as the constructor's
    annotations say)."""
    if task == "memory":
        kwargs = model_arguments(cell)
        models.check_arguments(cell["model"], {"num_classes": s.num_classes, **kwargs})
        if s.timing_reference is not None:
            reference = model_arguments(s.timing_reference)
            models.check_arguments(s.timing_reference["model"], reference)
        return
    allowed = IN_MEMORY if task == "likelihood" else CLASSIFIABLE
    if cell.get("dataset") not in allowed:
        raise ValueError(
            f"dataset must be one of {', '.join(allowed)}, got {cell.get('dataset')!r}"
        )
    if task == "likelihood":
        kwargs = model_arguments(cell)
        kwargs = {
            "shape": image_shape(cell["dataset"], s),
            **s.model_kwargs.get(cell["model"], {}),
            **kwargs,
        }
    else:
        kwargs = model_arguments(cell)
        kwargs["num_classes"] = DATASETS[cell["dataset"]].classes
    models.check_arguments(cell["model"], kwargs)
