"""Errors a user can fix; the CLI prints their one-line message and exits with status 2.

They live here, apart from the torch-heavy modules that raise them, so that the CLI can catch
them without importing torch (`bench --help`, `list`, `status` stay light)."""


class UsageError(Exception):
    """A request that cannot run as given (unknown tier, cells or model, no GPU)."""


class DataError(Exception):
    """One-line, user-facing: what is missing or corrupt, where to place what, which sum failed."""

    def __init__(self, message: str, corrupt: bool = False):
        super().__init__(" ".join(message.splitlines()))
        self.corrupt = corrupt  # a checksum failed: the data is there but not the expected bytes


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded or saved; the message names the file."""


class Stopped(BaseException):
    """A run told to stop after N epochs (`--stop-after-epochs`, the rehearsal's kill): the
    checkpoint of epoch N is on disk; like Ctrl-C, not a failure of the cell."""

    def __init__(self, epoch: int, path):
        self.epoch, self.path = epoch, path
        super().__init__(
            f"stopped after epoch {epoch} as asked (--stop-after-epochs); its"
            f" checkpoint {path} is kept: rerun without it to resume"
        )
