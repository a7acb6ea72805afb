"""Errors a user can fix; the CLI prints their one-line message and exits with status 2."""


class UsageError(Exception):
    """A request that cannot run as given (unknown tier, cells or model, no GPU)."""
