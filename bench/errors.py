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
