"""Crash-safe file writing: temp file, fsync, rename, fsync the directory.

Every write happens relative to a directory file descriptor opened without
following symlinks, with ``O_EXCL | O_NOFOLLOW`` on the temporary name, so a
symlink planted by someone else is never written through.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from chainwatch.errors import ChainwatchError
from chainwatch.printable import quoted

__all__ = [
    "UnsafePathError",
    "atomic_write",
    "create_in",
    "fsync_dir",
    "group_id",
    "install_test_hook",
    "open_dir",
    "private_dir",
    "status_group_id",
    "syncfs",
    "write_in",
]


@functools.cache
def _syncfs() -> Callable[[int], int]:
    """libc's syncfs(2), which Python's os module lacks.

    Loaded at the first flush: ctypes costs every command that only reads
    state (status, check-config, consumer-config) a few milliseconds to import.
    """
    import ctypes  # noqa: PLC0415 - see above

    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.syncfs

    def syncfs(fd: int) -> int:
        if call(fd) == 0:
            return 0
        return ctypes.get_errno()

    return syncfs


class UnsafePathError(ChainwatchError):
    """A directory we would write into is not ours alone."""


def group_id(name: str) -> int | None:
    """The numeric id of group ``name``, or None for the empty name."""
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ChainwatchError(f"group {quoted(name)} does not exist (output.key_group)") from None


STATUS_GROUP = "chainwatch"
"""The group the Debian package creates for monitoring: it may read
state.json (which holds no key material), never a published key."""


def status_group_id() -> int | None:
    """The numeric id of :data:`STATUS_GROUP`, or None where it does not exist (not installed)."""
    try:
        return grp.getgrnam(STATUS_GROUP).gr_gid
    except KeyError:
        return None


def private_dir(path: Path, gid: int | None = None) -> None:
    """Create ``path`` and missing parents root-only (0700, or 0750 for ``gid``).

    An existing directory must be a real directory owned by us and not
    writable by anyone else; otherwise :class:`UnsafePathError`.
    """
    mode = 0o750 if gid is not None else 0o700
    missing = []
    probe = path
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, mode)
        _own(directory, mode, gid)
    _check_ours(path)


def _own(path: Path, mode: int, gid: int | None) -> None:
    if gid is not None:
        os.chown(path, -1, gid, follow_symlinks=False)
    os.chmod(path, mode)  # we just made it: a directory, not a link


def _check_ours(path: Path) -> None:
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path}: is not a directory (a symlink is not accepted)")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(f"{path}: owned by uid {info.st_uid}, not by us; refusing to write there")
    if info.st_mode & 0o022:
        raise UnsafePathError(f"{path}: writable by group or others; refusing to write there")


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[int]:
    """A file descriptor for directory ``path``, refusing a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush the whole filesystem holding ``path`` (data and metadata) and wait.

    One call makes a batch of writes durable where a file-by-file fsync
    would cost one disk flush per file: publishing 10,000 sets at start-up
    needs three of these instead of ~90,000 fsyncs.
    """
    with open_dir(path) as fd:
        sys.audit("chainwatch.syncfs", fd)
        error = _syncfs()(fd)
        if error:
            raise OSError(error, os.strerror(error), str(path))


def write_in(
    dir_fd: int,
    name: str,
    data: bytes | Iterable[bytes],
    mode: int = 0o600,
    gid: int | None = None,
) -> None:
    """Write ``name`` inside an open directory atomically (no directory fsync: callers batch it)."""
    # os.urandom, not secrets: the same bytes, without importing random, hashlib and hmac
    # into every command that saves state.
    temporary = f".{name}.{os.urandom(6).hex()}.tmp"
    try:
        create_in(dir_fd, temporary, data, mode, gid)
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise


def create_in(
    dir_fd: int,
    name: str,
    data: bytes | Iterable[bytes],
    mode: int = 0o600,
    gid: int | None = None,
    *,
    durable: bool = True,
) -> None:
    """Create ``name``, which must not exist yet, inside an open directory.

    Not atomic by itself: use it directly only in a directory nobody reads
    until it is complete, flushed and renamed into place (a staging
    directory); :func:`write_in` is the atomic form.
    """
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        # Chunks let a large document be written as it is encoded,
        # without holding all of it in memory at once.
        for chunk in (data,) if isinstance(data, bytes) else data:
            view = memoryview(chunk)
            while view:
                sys.audit("chainwatch.write", fd)
                view = view[os.write(fd, view) :]
        if durable:
            sys.audit("chainwatch.fsync", fd)
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Iterable[bytes], mode: int = 0o600, gid: int | None = None) -> None:
    """Replace ``path`` with ``data``: a reader sees the old or the new file, never a mix."""
    with open_dir(path.parent) as dir_fd:
        write_in(dir_fd, path.name, data, mode, gid)
        fsync_dir(dir_fd)


def fsync_dir(dir_fd: int) -> None:
    """Flush a directory's entries (the names renamed or created in it)."""
    sys.audit("chainwatch.fsync", dir_fd)
    os.fsync(dir_fd)


# -- the crash tests' fault-injection hook -----------------------------------------------------
#
# A test hook, never set in production: with CHAINWATCH_TEST_FAULT="kill N" (or
# "stop N"), the process sends itself SIGKILL (SIGSTOP) just before its Nth
# filesystem change; "kill N TEXT" counts only the changes whose description
# contains TEXT. CHAINWATCH_TEST_TRACE=FILE appends each change's description to
# FILE, one a line. The changes are seen through Python's audit events (every
# os.open for writing, rename, mkdir, symlink, unlink, rmdir, rmtree, chmod,
# chown...) plus this module's own for write, fsync and syncfs, so nothing
# that changes the disk can slip past a count. Without either variable no hook
# is installed and the sys.audit calls above cost one check of an empty list.

_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _where(path: object, dir_fd: object = None) -> str:
    if isinstance(path, int):
        return os.readlink(f"/proc/self/fd/{path}")
    name = os.fsdecode(path)  # type: ignore[arg-type]
    if os.path.isabs(name):
        return name
    if isinstance(dir_fd, int) and dir_fd >= 0:
        return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)
    return os.path.abspath(name)


def _describe_change(event: str, args: tuple[object, ...]) -> str | None:
    """``"rename /out/versions/a/.new-2 /out/versions/a/2"`` for an audit event
    that changes the filesystem, None for any other event."""
    match event, args:
        case "open", (path, _, int(flags)) if flags & _WRITING:
            # os.open's event does not carry its dir_fd: a relative name stays relative.
            return f"open {path if isinstance(path, int) else os.fsdecode(path)}"  # type: ignore[arg-type]
        case "os.rename" | "os.link", (source, target, source_fd, target_fd):
            return f"{event[3:]} {_where(source, source_fd)} {_where(target, target_fd)}"
        case "os.symlink", (content, path, dir_fd):
            return f"symlink {_where(path, dir_fd)} {os.fsdecode(content)}"  # type: ignore[arg-type]
        case "os.mkdir" | "os.chmod" | "os.utime", (path, _, *rest):
            return f"{event[3:]} {_where(path, rest[-1] if rest else None)}"
        case "os.chown", (path, _, _, dir_fd):
            return f"chown {_where(path, dir_fd)}"
        case "os.remove" | "os.rmdir" | "shutil.rmtree", (path, dir_fd):
            return f"{event.split('.')[1]} {_where(path, dir_fd)}"
        case "os.truncate", (path, _):
            return f"truncate {_where(path)}"
        case "chainwatch.write" | "chainwatch.fsync" | "chainwatch.syncfs", (int(fd),):
            return f"{event[11:]} {_where(fd)}"
    return None


def install_test_hook(fault: str, trace: str) -> None:
    """What the two variables above turn on at import (``fault``, ``trace``: their values).

    Public for tests that fork a child instead of starting an interpreter.
    """
    # Only tests get here; signal builds its enums at import, which every
    # reader of the state (status runs every minute) would pay for.
    import signal  # noqa: PLC0415

    words = fault.split(maxsplit=2)
    action = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}.get(words[0]) if words else None
    at = int(words[1]) if len(words) > 1 else 0
    only = words[2] if len(words) > 2 else ""
    trace_fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600) if trace else -1
    seen = 0
    inside = False

    def hook(event: str, args: tuple[object, ...]) -> None:
        nonlocal seen, inside
        if inside:
            return  # our own readlink and write
        inside = True
        try:
            change = _describe_change(event, args)
            if change is None:
                return
            if action is not None and only in change:
                seen += 1
                if seen == at:
                    os.kill(os.getpid(), action)
            if trace_fd >= 0:
                os.write(trace_fd, change.encode(errors="surrogateescape") + b"\n")
        finally:
            inside = False

    sys.addaudithook(hook)


if os.environ.get("CHAINWATCH_TEST_FAULT") or os.environ.get("CHAINWATCH_TEST_TRACE"):
    install_test_hook(os.environ.get("CHAINWATCH_TEST_FAULT", ""), os.environ.get("CHAINWATCH_TEST_TRACE", ""))
