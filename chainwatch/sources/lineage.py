"""Read a certbot lineage (``live/NAME/*.pem`` → ``archive/NAME/*N.pem``) only when it is whole.

certbot switches a lineage's four links one at a time, after creating
``previous_*.pem`` links, and removes those when done (FIELD-NOTES). While
any ``previous_*`` link is left, or a link does not resolve, the lineage is
*inconsistent*: certbot is at work (or died at work) and nothing is read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chainwatch.errors import ChainwatchError, InputError
from chainwatch.files.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.sources.digest import INPUT_KINDS
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import MAX_CHAIN_BYTES, parse_certificates
from chainwatch.x509.private_key import read_key

__all__ = [
    "Inconsistent",
    "Lineage",
    "Rejected",
    "archive_dirs",
    "list_lineages",
    "read_confined",
    "read_lineage",
    "refused_names",
    "valid_name",
]

_NAME = re.compile(r"[A-Za-z0-9*][A-Za-z0-9._*-]{0,250}")


class Inconsistent(ChainwatchError):
    """The lineage is mid-update (or was left so); try again after the next event."""


class Rejected(ChainwatchError):
    """The lineage is whole but unusable; the message says why, in one line."""


@dataclass(frozen=True)
class Lineage:
    """A consistent lineage's content, read once."""

    name: str
    fullchain: bytes
    privkey: bytes
    """privkey.pem's one key block, re-encoded alone: what is published (:func:`read_key`)."""
    certs: tuple[Cert, ...]
    """The certificates of fullchain.pem, in file order."""
    leaf_key: bytes
    """The DER public key of privkey.pem."""


def valid_name(name: str) -> bool:
    """Is ``name`` a lineage directory name (and safe as a path component)?"""
    # fullmatch: "$" would also accept a trailing newline ("mail\n").
    return bool(_NAME.fullmatch(name)) and name not in (".", "..")


def list_lineages(live_dir: Path) -> list[str]:
    """Names of the lineage directories under ``live_dir`` (certbot's README is not one)."""
    # scandir's entry types come with the listing: no stat and lstat per entry,
    # and names sort faster than Paths (10,000 lineages at every start).
    try:
        with os.scandir(live_dir) as listing:
            names = [entry.name for entry in listing if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return sorted(name for name in names if valid_name(name))


def refused_names(live_dir: Path) -> list[str]:
    """Directories under ``live_dir`` whose names are not lineage names (never processed)."""
    try:
        entries = sorted(os.scandir(live_dir), key=lambda entry: entry.name)
    except OSError:
        return []
    return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False) and not valid_name(entry.name)]


def archive_dirs(live_dir: Path, name: str) -> tuple[Path, ...]:
    """The directories the lineage's links point into (watched, so edits in place are seen).

    The four links normally share one directory: it is resolved once rather
    than resolving each link, which cost ~0.7 ms a lineage at start-up.
    Files kept in the lineage directory itself are not links and not listed.
    """
    directory = os.path.join(live_dir, name)
    parents: dict[str, None] = {}
    for kind in INPUT_KINDS:
        try:
            target = os.readlink(os.path.join(directory, f"{kind}.pem"))
        except OSError:  # a plain file, or gone: nothing beyond the lineage directory
            continue
        parents[os.path.dirname(os.path.join(directory, target))] = None
    found: dict[Path, None] = {}
    for parent in parents:
        try:
            found[_resolved_dir(parent)] = None
        except OSError:
            continue
    return tuple(found)


def _resolved_dir(path: str) -> Path:
    """The directory ``path`` leads to, as the kernel resolves it.

    Open it and ask /proc for the name: three system calls, where
    ``Path.resolve`` takes an lstat and Python's string work per component
    (most of the agent's start-up over 10,000 lineages, after publishing).
    """
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


def read_files(live_dir: Path, name: str) -> dict[str, bytes]:
    """The four files of lineage ``name``, read only if the lineage is whole.

    Raises :class:`Inconsistent` while certbot is (or was left) mid-update and
    :class:`Rejected` for a file that cannot be read.
    """
    # Strings, not Paths, from here on: each pathlib join and str() cost
    # as much as the system call it names, five times a lineage.
    directory = os.path.join(live_dir, name)
    try:
        # Listed and resolved through one descriptor: the directory checked
        # below is the one listed, and the kernel resolves its path in one
        # call where os.path.realpath takes an lstat per component.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise Inconsistent(f"{directory} is gone") from None
    try:
        entries = os.listdir(fd)
        resolved = _fd_path(fd)
    finally:
        os.close(fd)
    leftovers = sorted(e for e in entries if e.startswith("previous_") and e.endswith(".pem"))
    if leftovers:
        raise Inconsistent(f"certbot is updating it ({', '.join(leftovers)} present)")
    parent = os.fspath(live_dir.parent)
    archive = _realpath(os.path.join(parent, "archive", name))
    checked: set[str] = set()
    top = _realpath(parent)
    try:
        _check_directories(top, [_realpath(os.fspath(live_dir)), resolved], checked, canonical=True)
    except _Unsafe as error:
        raise Rejected(str(error)) from None
    content: dict[str, bytes] = {}
    for kind in INPUT_KINDS:
        path = os.path.join(directory, f"{kind}.pem")

        def confined(fd: int, info: os.stat_result, path: str = path) -> None:
            check_confined(path, fd, info, archive, top, checked, tree_name="certbot's archive")

        content[kind] = read_confined(path, confined, missing=f"{kind}.pem does not resolve to a file")
    return content


def read_confined(path: Path | str, check: Callable[[int, os.stat_result], None], *, missing: str) -> bytes:
    """``path``'s bytes, read through ``check`` (:func:`check_confined`), bounded.

    What goes wrong decides the lineage's fate: a file someone else could
    have chosen, not a regular file or too large is :class:`Rejected`; a
    dangling or looping link is :class:`Inconsistent` (``missing``): its
    client between two steps, or interrupted there, not a broken file.
    """
    try:
        return read_regular(path, MAX_CHAIN_BYTES, check=check)
    except (_Unsafe, NotRegularFile) as error:
        raise Rejected(str(error)) from None
    except TooLarge:
        raise Rejected(f"{path}: larger than 1 MiB") from None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ELOOP):
            raise Inconsistent(missing) from None
        raise Rejected(f"{path}: cannot read ({error.strerror})") from None


class _Unsafe(Exception):
    """A lineage file or directory that someone besides root could have chosen or changed.

    A plain Exception: it never leaves this module (it becomes :class:`Rejected`),
    so one that escapes is a bug and must show its traceback."""


def _fd_path(fd: int) -> str:
    """The canonical path of open descriptor ``fd``, as the kernel names it."""
    return os.readlink(f"/proc/self/fd/{fd}")


def _realpath(path: str) -> str:
    """``os.path.realpath(path)``, asked of the kernel where ``path`` exists.

    Three system calls, where ``realpath`` takes an lstat and Python's string
    work per component: four of them a lineage were a fifth of a
    10,000-lineage restart. What does not exist is resolved as before.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        return _fd_path(fd)
    finally:
        os.close(fd)


def _trusted_owner(uid: int) -> bool:
    # root, or whoever runs chainwatch (a test, a demo): nobody else.
    return uid in (0, os.geteuid())


def _check_directories(stop: str, directories: list[str], checked: set[str], *, canonical: bool = False) -> None:
    """Each of ``directories`` and their parents up to ``stop`` (resolved) is writable by root only.

    ``canonical``: the directories are resolved already (they come from the
    kernel), so resolving them again, an lstat per component, is skipped:
    that was a third of a 10,000-lineage restart.
    """
    for start in directories:
        directory = start if canonical else os.path.realpath(start)
        while directory not in checked:
            checked.add(directory)
            try:
                info = os.stat(directory)
            except OSError:
                break  # gone: the read that follows says so
            sticky_root = bool(info.st_mode & stat.S_ISVTX) and info.st_uid == 0
            if not _trusted_owner(info.st_uid) or (info.st_mode & 0o022 and not sticky_root):
                raise _Unsafe(
                    f"{directory}: writable by others than root (owner uid {info.st_uid}, "
                    f"mode {stat.S_IMODE(info.st_mode):04o}); refusing its certificates and keys"
                )
            if directory == stop or directory == os.path.dirname(directory) or not directory.startswith(stop):
                break
            directory = os.path.dirname(directory)


def check_confined(
    path: Path | str, fd: int, info: os.stat_result, tree: str, top: str, checked: set[str], *, tree_name: str
) -> None:
    """``path`` (opened as ``fd``) is a root-only file inside ``tree`` (canonical), in
    directories writable by root only up to ``top``; raises ``_Unsafe``."""
    real = os.readlink(f"/proc/self/fd/{fd}")
    if not real.startswith(tree + os.sep):
        raise _Unsafe(f"{path}: resolves to {real}, outside {tree_name} {tree}; refused")
    if not _trusted_owner(info.st_uid) or info.st_mode & 0o022:
        raise _Unsafe(
            f"{path}: {real} is writable by others than root (owner uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):04o}); refused"
        )
    _check_directories(top, [os.path.dirname(real)], checked, canonical=True)


def parse_lineage(live_dir: Path, name: str, content: dict[str, bytes]) -> Lineage:
    """Parse what :func:`read_files` returned; raises :class:`Rejected`."""
    directory = live_dir / name
    try:
        certs = tuple(parse_certificates(content["fullchain"], str(directory / "fullchain.pem")))
        cert = parse_certificates(content["cert"], str(directory / "cert.pem"))
        key = read_key(content["privkey"], str(directory / "privkey.pem"))
    except InputError as error:
        raise Rejected(str(error)) from None
    if not any(c.has_public_key(key.spki) for c in certs):
        raise Rejected(f"{directory / 'privkey.pem'}: the key does not match any certificate in fullchain.pem")
    if cert[0] not in certs:
        raise Rejected(f"{directory / 'cert.pem'}: its certificate is not in fullchain.pem")
    return Lineage(name=name, fullchain=content["fullchain"], privkey=key.pem, certs=certs, leaf_key=key.spki)


def read_lineage(live_dir: Path, name: str) -> Lineage:
    """Read and parse lineage ``name``; raises :class:`Inconsistent` or :class:`Rejected`."""
    return parse_lineage(live_dir, name, read_files(live_dir, name))
