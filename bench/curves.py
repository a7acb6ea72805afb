"""A cell's training curves as TensorBoard event files (`bench run --tensorboard`), to watch a
long campaign while it runs: `tensorboard --logdir results/tensorboard`.

One point per epoch, as the history records it: the loss, the learning rate, seconds per
training step and every number the task adds to an epoch (active units per layer). Written by
whichever process trains the cell (this one, a `--jobs` worker, a Slurm task) under the results
folder; never part of a record or of a reuse key, so turning it on changes no result. A resumed
cell's writer drops what an earlier process logged past the checkpoint it resumes from.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

FOLDER = "tensorboard"  # under the results folder: <results>/tensorboard/<table>/<tier>/<cell>


def check_available() -> None:
    """Refuse --tensorboard in one line, before any cell trains, where the package is absent."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
        ) from None


def folder(results: Path, table: str, tier: str, cell: str) -> Path:
    return results / FOLDER / table / tier / cell


class Curves:
    """Told each epoch's history entry and the steps of an epoch; writes its numbers."""

    def __init__(self, path: Path):
        self.path = path
        self.writer = None

    def __call__(self, entry: dict, steps: int) -> None:
        epoch = entry["epoch"]
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # Events at this epoch or later are an earlier process's, past its last checkpoint.
            self.writer = SummaryWriter(str(self.path), purge_step=epoch)
        for name, value in entry.items():
            if name == "epoch" or isinstance(value, bool):
                continue
            if isinstance(value, list):  # one curve per layer
                for layer, v in enumerate(value, 1):
                    self.writer.add_scalar(f"{name}/{layer}", v, epoch)
            elif isinstance(value, int | float):
                self.writer.add_scalar(name, value, epoch)
        if entry.get("seconds") and steps:
            self.writer.add_scalar("seconds_per_step", entry["seconds"] / steps, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
