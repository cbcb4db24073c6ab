"""Read a file that another program controls, without letting it hang or flood us.

chainwatch runs as root and reads trees that certbot, admins and (through a
mistake) anyone able to write there shape. ``open()`` on a FIFO blocks until
a writer comes; a device or ``/proc`` file can be endless. So: open without
blocking, insist on a regular file, and read at most one byte past the limit.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["NotRegularFile", "TooLarge", "read_regular"]


class NotRegularFile(OSError):
    """A FIFO, socket, device or directory where a file was expected."""


class TooLarge(OSError):
    """More bytes than the caller's limit."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_regular(
    path: Path | str,
    limit: int,
    *,
    follow_links: bool = True,
    check: Callable[[int, os.stat_result], None] | None = None,
    dir_fd: int | None = None,
) -> bytes:
    """The whole content of regular file ``path``, at most ``limit`` bytes.

    ``check(fd, stat)`` may refuse the opened file (by raising) before it is
    read: judging the open descriptor, not the path, leaves no window for a
    link to be switched between the check and the read.
    Raises :class:`NotRegularFile`, :class:`TooLarge`, or the ``OSError`` of
    the failed call (``ELOOP`` for a link when ``follow_links`` is false).
    ``dir_fd``: ``path`` is relative to that open directory, as in ``os.open``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno != errno.ENXIO:
            raise
        # open() of a socket fails with ENXIO; say what it is instead.
        kind = _kind(os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_links).st_mode)
        raise NotRegularFile(f"{path}: is {kind}, not a file") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{path}: is {_kind(info.st_mode)}, not a file")
        if check is not None:
            check(fd, info)
        if info.st_size > limit:
            raise TooLarge(f"{path}: larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        # The first read asks for the size fstat saw, plus one byte to see the
        # end: asking for limit + 1 made Python allocate (mmap, then shrink)
        # a megabyte per 2 KB certificate, 40,000 times a pass. A file may
        # grow between fstat and read: the loop still stops one byte past the limit.
        wanted = info.st_size + 1  # at most limit + 1: larger was refused above
        while size <= limit:
            chunk = os.read(fd, wanted)
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < wanted:
                break  # end of file: a regular file reads short only there
            wanted = limit + 1 - size
        if size > limit:
            raise TooLarge(f"{path}: larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
