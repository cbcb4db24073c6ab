"""Publish a lineage's sanitized set for consumers, all files at once.

Layout under the output directory::

    live/NAME -> ../versions/NAME/7      one symlink, switched atomically
    versions/NAME/7/fullchain.pem        sanitized chain, leaf first
                   chain.pem            the same without the leaf
                   cert.pem             the leaf
                   privkey.pem          copy of the key (0600, or 0640 with key_group)
                   key+fullchain.pem    key, leaf, chain: Postfix's smtpd_tls_chain_files
                   decision.json        what was decided, for status, probes and rollback
    versions/NAME/6/...                 the previous set, kept for rollback

A version directory is written under a temporary name, loaded by OpenSSL as
a consumer would load it (:mod:`chainwatch.x509.tls_load`; a set it refuses goes no
further), fsynced, renamed into place, and only then does the ``live/NAME``
link switch to it. A crash at any instant leaves the link on a complete old
or complete new set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chainwatch.files.atomic import (
    UnsafePathError,
    create_in,
    fsync_dir,
    open_dir,
    private_dir,
    status_group_id,
    syncfs,
)
from chainwatch.files.bounded_read import read_regular
from chainwatch.policy.decision import Decision
from chainwatch.x509.tls_load import Unloadable, refusal

__all__ = [
    "CERT_FILES",
    "KEY_FILES",
    "PUBLISHED_FILES",
    "Publisher",
    "WriteFailure",
    "link_target",
    "set_for",
    "version_in",
]

CERT_FILES = ("fullchain.pem", "chain.pem", "cert.pem")
KEY_FILES = ("privkey.pem", "key+fullchain.pem")
PUBLISHED_FILES = (*CERT_FILES, *KEY_FILES)

WriteFailure = OSError | Unloadable | UnsafePathError
"""Why one lineage's set was not published: the filesystem's error, OpenSSL's refusal,
or a directory of the output tree that is not ours alone."""
_META = "decision.json"
_KEEP_VERSIONS = 3
# Published files are a chain and a key: far below this.
_MAX_FILE_BYTES = 1 << 20


def _is_version(name: str) -> bool:
    # isdigit() is true for "²", which int() refuses: ASCII digits only.
    return name.isascii() and name.isdigit()


def _clear(path: Path) -> None:
    """Remove whatever is at ``path`` in our own tree: a link, a file or a directory."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def link_target(lineage: str, version: int) -> str:
    """Where ``live/NAME`` points to serve ``version``: the layout's one spelling."""
    return f"../versions/{lineage}/{version}"


def version_in(target: str) -> int | None:
    """The version a ``live/NAME`` link's target names (its last component), if any."""
    name = target.rsplit("/", 1)[-1]
    return int(name) if _is_version(name) else None


def _versions_in(entries: Collection[str]) -> list[int]:
    """The version numbers among a lineage folder's entries, oldest first."""
    return sorted(int(name) for name in entries if _is_version(name))


def set_for(decision: Decision, privkey: bytes) -> dict[str, bytes]:
    """The files to publish for a decision and its key."""
    fullchain = decision.pem()
    key = privkey if privkey.endswith(b"\n") else privkey + b"\n"
    return {
        "fullchain.pem": fullchain,
        "chain.pem": b"".join(cert.pem() for cert in decision.chain[1:]),
        "cert.pem": decision.chain[0].pem(),
        "privkey.pem": key,
        "key+fullchain.pem": key + fullchain,
    }


class Publisher:
    """Owns ``<output>/live`` and ``<output>/versions``."""

    def __init__(self, output_dir: Path, gid: int | None = None) -> None:
        self.root = output_dir
        self.gid = gid
        self.status_gid = status_group_id()
        """The monitoring group (state.json's), None where it does not exist: see :meth:`prepare`."""
        self.live = output_dir / "live"
        self.versions = output_dir / "versions"

    def prepare(self) -> None:
        """Create the directories root-only.

        Nothing half done is cleared here: this runs before the lock is taken,
        and another process's version being written looks exactly like what a
        crash left. The next publication of a lineage clears its leftovers,
        under the lock (:meth:`_stage`, :meth:`_point`).

        Where the monitoring group exists the output directory is 0711 root:
        its members reach state.json (0640 root:chainwatch), key_group reaches
        live/, nobody else may list it, and live/ and versions/ are as before.
        """
        if self.status_gid is None:
            self._private_dir(self.root)
        else:
            private_dir(self.root)
            self._set_mode(self.root, 0, 0o711)
        for directory in (self.live, self.versions):
            self._private_dir(directory)

    def _private_dir(self, directory: Path) -> None:
        """``private_dir``, and with key_group the group's way in even where the directory existed.

        key_group may be set (or removed) after the directories were made, and
        systemd applies the unit's StateDirectoryMode to the default output
        directory at each start.
        """
        private_dir(directory, self.gid)
        self._apply_group(directory, is_key=False)

    def _apply_group(self, path: Path, *, is_key: bool) -> None:
        """key_group's access, or root's alone without it, whatever was there before.

        Only a real file (``is_key``) or directory is changed: chmod follows
        links, and anything else here is damage that repair replaces.
        """
        group = self.gid if self.gid is not None else 0
        mode = (0o640 if is_key else 0o750) if self.gid is not None else (0o600 if is_key else 0o700)
        self._set_mode(path, group, mode, is_key=is_key)

    @staticmethod
    def _set_mode(path: Path, group: int, mode: int, *, is_key: bool = False) -> None:
        info = os.lstat(path)
        if not (stat.S_ISREG(info.st_mode) if is_key else stat.S_ISDIR(info.st_mode)):
            return
        if info.st_gid != group:
            os.chown(path, -1, group, follow_symlinks=False)
        if stat.S_IMODE(info.st_mode) != mode:
            os.chmod(path, mode)

    def regroup(self, lineage: str) -> None:
        """Apply the current key_group to every kept version of ``lineage`` (a rollback target too)."""
        self._private_dir(self.versions / lineage)
        for version in self.versions_of(lineage):
            folder = self.versions / lineage / str(version)
            if not folder.is_dir() or folder.is_symlink():
                continue  # damage: repair publishes a new version
            self._apply_group(folder, is_key=False)
            for name in KEY_FILES:
                with contextlib.suppress(FileNotFoundError):  # a damaged set: repaired elsewhere
                    self._apply_group(folder / name, is_key=True)

    def current_version(self, lineage: str) -> int | None:
        try:
            target = self.link_of(lineage)
        except OSError:
            return None
        return version_in(target)

    def link_of(self, lineage: str) -> str:
        """Where ``live/NAME`` points; raises the ``OSError`` of ``readlink``."""
        # Joined as strings: asked for every lineage at every pass.
        return os.readlink(os.path.join(self.live, lineage))

    def versions_of(self, lineage: str) -> list[int]:
        folder = self.versions / lineage
        if not folder.is_dir():
            return []
        return _versions_in(os.listdir(folder))

    def files_of(self, lineage: str, version: int | None = None) -> dict[str, bytes] | None:
        """The published files of a version (default: the served one)."""
        version = self.current_version(lineage) if version is None else version
        if version is None:
            return None
        try:
            return self.read_version(lineage, version, PUBLISHED_FILES)
        except OSError:
            return None  # unreadable counts as different: a new version replaces it

    def read_version(self, lineage: str, version: int, names: Iterable[str]) -> dict[str, bytes]:
        """The files ``names`` of a version, read relative to its folder, opened once.

        Bounded and regular files only: a FIFO planted here must not hang us.
        A restart reads every served set (50,000 files at 10,000 lineages).
        Raises the ``OSError`` of the first that cannot be read; a system
        call's names the file (``filename``), the others say it in their text.
        """
        folder = os.open(self.versions / lineage / str(version), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return {name: read_regular(name, _MAX_FILE_BYTES, follow_links=False, dir_fd=folder) for name in names}
        finally:
            os.close(folder)

    def meta_of(self, lineage: str, version: int | None = None) -> dict[str, Any] | None:
        version = self.current_version(lineage) if version is None else version
        if version is None:
            return None
        try:
            meta = json.loads(
                read_regular(self.versions / lineage / str(version) / _META, _MAX_FILE_BYTES, follow_links=False)
            )
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def publish(self, lineage: str, files: Mapping[str, bytes], meta: Mapping[str, Any]) -> int | None:
        """Publish ``files`` as a new version; None when they equal the served set."""
        result = self.publish_many([(lineage, files, meta)])[lineage]
        if isinstance(result, WriteFailure):
            raise result
        return result

    def publish_many(
        self,
        sets: Sequence[tuple[str, Mapping[str, bytes], Mapping[str, Any]]],
        again: Collection[str] = (),
        keep: Mapping[str, Collection[int]] | None = None,
        served: Mapping[str, Mapping[str, bytes] | None] | None = None,
    ) -> dict[str, int | WriteFailure | None]:
        """Publish several lineages' sets with three filesystem flushes in all.

        Call with the output directory's lock held (``Processor.exclusive``).

        Order is what keeps every published set whole across a crash: all new
        content is flushed before any version directory gets its final name,
        and those names are flushed before any ``live/`` link points at them.
        A lineage that fails (a full disk, a set OpenSSL will not load) keeps
        its served set and gets its failure as a value; the others go on.
        An ``OSError`` is never raised: that of a flush shared by all is each's.
        Lineages in ``again`` get a new version even when their content equals
        the served set's (which was found damaged). Versions in ``keep`` (a
        lineage's fallback) survive pruning however old they are. ``served``
        holds what the caller read of the served sets this pass (read here
        for a lineage it lacks).
        """
        results: dict[str, int | WriteFailure | None] = {}
        staged: list[tuple[str, int, Path, list[int]]] = []
        for lineage, files, meta in sets:
            try:
                now_served = served[lineage] if served is not None and lineage in served else self.files_of(lineage)
                if lineage not in again and now_served == dict(files):
                    results[lineage] = None
                    continue
                staged.append(self._stage(lineage, files, meta))
            except (OSError, Unloadable, UnsafePathError) as error:
                results[lineage] = error
        if not staged:
            return results
        try:
            syncfs(self.root)
        except OSError as error:
            for lineage, _, staging, _ in staged:
                shutil.rmtree(staging, ignore_errors=True)
                results[lineage] = error
            return results
        renamed = []
        for lineage, version, staging, older in staged:
            try:
                os.rename(staging, self.versions / lineage / str(version))
                renamed.append((lineage, version, older))
            except OSError as error:
                shutil.rmtree(staging, ignore_errors=True)
                results[lineage] = error
        try:
            syncfs(self.root)
        except OSError as error:
            for lineage, _, _ in renamed:
                results[lineage] = error  # named but not served: pruned with a later version
            return results
        pointed = []
        for lineage, version, older in renamed:
            try:
                self._point(lineage, version)
            except OSError as error:
                results[lineage] = error
                continue
            pointed.append((lineage, version, older))
            results[lineage] = version
        try:
            syncfs(self.root)
        except OSError:
            # The links switched and are served, whatever the flush: the
            # record must say so. Pruning waits for a flush that succeeds.
            return results
        for lineage, version, older in pointed:
            self._prune(lineage, [*older, version], keep={version, *(keep or {}).get(lineage, ())})
        return results

    def _stage(
        self, lineage: str, files: Mapping[str, bytes], meta: Mapping[str, Any]
    ) -> tuple[str, int, Path, list[int]]:
        """Write a version under its staging name; returns it with the versions already kept.

        Raises :class:`Unloadable`, leaving nothing staged, when OpenSSL refuses the set.

        The folder is listed once, for its versions and for leftovers, and
        pruning uses that list (the lock is held: nobody else adds versions).
        """
        folder = self.versions / lineage
        self._private_dir(folder)
        entries = os.listdir(folder)
        older = _versions_in(entries)
        version = max([0, *older]) + 1
        # Callers hold the lock: anything staged here is a crashed pass's
        # (a directory, or a file someone left: either would block the mkdir).
        for leftover in entries:
            if leftover.startswith(".new-"):
                _clear(folder / leftover)
        staging = folder / f".new-{version}"
        os.mkdir(staging, 0o700)
        try:
            if self.gid is not None:
                os.chown(staging, -1, self.gid)
            os.chmod(staging, 0o750 if self.gid is not None else 0o700)  # not left to the umask (0077 in the unit)
            with open_dir(staging) as dir_fd:
                for name, data in files.items():
                    secret = name in KEY_FILES
                    mode = (0o640 if self.gid is not None else 0o600) if secret else 0o644
                    # The staging directory is complete before it gets its
                    # visible name, so its files need no temporary names.
                    create_in(dir_fd, name, data, mode, self.gid if secret else None, durable=False)
                # One line: with an indent, json encodes in Python instead
                # of C, a twentieth of a 10,000-lineage first publication.
                document = json.dumps({**meta, "version": version}).encode() + b"\n"
                create_in(dir_fd, _META, document, 0o644, durable=False)
            refused = refusal(staging)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # a full disk must not keep it full
            raise
        if refused is not None:
            shutil.rmtree(staging, ignore_errors=True)
            raise Unloadable(refused)
        return lineage, version, staging, older

    def _point(self, lineage: str, version: int) -> None:
        temporary = self.live / f".{lineage}.new"
        _clear(temporary)
        os.symlink(link_target(lineage, version), temporary)
        target = self.live / lineage
        # rename() replaces a link or a file, not a directory someone put there.
        if os.path.isdir(target) and not os.path.islink(target):
            _clear(target)
        os.rename(temporary, target)

    def switch(self, lineage: str, version: int) -> None:
        """Point ``live/NAME`` at ``version`` in one rename (a rollback), durably.

        Raises :class:`Unloadable` when OpenSSL refuses that version (one an
        older chainwatch published, or changed on disk since): it stays unserved.
        """
        refused = refusal(self.versions / lineage / str(version))
        if refused is not None:
            raise Unloadable(f"version {version}: {refused}")
        self._point(lineage, version)
        with open_dir(self.live) as dir_fd:
            fsync_dir(dir_fd)

    def _prune(self, lineage: str, versions: Sequence[int], keep: Collection[int]) -> None:
        """Remove all but the newest few of ``versions`` (oldest first) and those in ``keep``."""
        for version in versions[:-_KEEP_VERSIONS]:
            if version not in keep:
                with contextlib.suppress(OSError):
                    shutil.rmtree(self.versions / lineage / str(version))
