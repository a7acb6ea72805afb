"""Reading a file that someone else may have replaced with anything: a folder, a FIFO, a device,
a huge file. Leases, the campaign file and records are all read this way, so that `bench run`
and `bench status` never hang on a FIFO, read /dev/zero without end or open a device."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotAFile(Exception):
    """A path that is not a small regular file: what it is instead."""


def path_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_small(path: Path, limit: int, follow: bool) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file of at most `limit` bytes, and its stat. Anything else is
    NotAFile, told from its stat without opening it: opening a FIFO blocks, reading /dev/zero
    never ends, and opening some devices acts on them."""
    st = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAFile(path_kind(st.st_mode))
    if st.st_size > limit:
        raise NotAFile(f"{st.st_size} bytes, too large")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)  # what was opened, should the path have changed since
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(path_kind(st.st_mode))
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise NotAFile(f"over {limit} bytes, too large")
    return b"".join(chunks), st
