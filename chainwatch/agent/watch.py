"""Turn inotify events under certbot's live directory into "lineage N changed".

Watched: the live directory (lineages come and go), every lineage directory
(certbot's link switches), and every archive directory a lineage's links
point into (an edit in place of ``archive/NAME/fullchainN.pem``). When the
live directory does not exist yet, its nearest existing ancestor is watched
for it to appear.

The other sources (:mod:`chainwatch.sources.acme`) name their own directories and
say which lineage an entry there belongs to; any write there, including a
``MODIFY`` of a file rewritten in place, restarts that lineage's settle time.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

try:
    from inotify_simple import INotify, flags
except ImportError:  # the .deb bundles it: no Debian release packages inotify-simple
    from chainwatch._vendor.inotify_simple import INotify, flags  # type: ignore[import-not-found]

from chainwatch.sources.lineage import list_lineages, valid_name

if TYPE_CHECKING:
    from chainwatch.sources.acme import Mapper, Source

__all__ = ["Changes", "LineageWatcher", "Unwatched", "unwatched_message"]

_LIVE = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF
_LINEAGE = (
    flags.CREATE
    | flags.DELETE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.CLOSE_WRITE
    | flags.ATTRIB
    | flags.DELETE_SELF
)
_ARCHIVE = flags.CREATE | flags.DELETE | flags.MOVED_TO | flags.CLOSE_WRITE | flags.ATTRIB
_ANCESTOR = flags.CREATE | flags.MOVED_TO
_SOURCE = _LINEAGE | flags.MODIFY | flags.MOVE_SELF
_ENTRIES = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF


@dataclass
class Changes:
    """What one read of the inotify queue amounts to."""

    lineages: set[str] = field(default_factory=set)
    """Lineages with an event; their settle time restarts."""
    rescan: bool = False
    """Lineages may have appeared or vanished: list them again."""
    overflow: bool = False
    """The kernel dropped events: everything must be reconciled."""


@dataclass(frozen=True)
class Unwatched:
    """A directory inotify refused to watch: changes there are seen only by a rescan."""

    path: Path
    role: str
    lineage: str | None
    """The lineage it belongs to; None for the live, a source's or an ancestor directory (all of them)."""
    reason: str


def _why_unwatched(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "inotify's watch limit is reached (raise the sysctl fs.inotify.max_user_watches)"
    return error.strerror or str(error)


def unwatched_message(unwatched: Sequence[Unwatched], every_s: float) -> str | None:
    """One line for the journal and `status` about what inotify does not watch, or None."""
    if not unwatched:
        return None
    paths = sorted(str(item.path) for item in unwatched)
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    reasons = "; ".join(sorted({item.reason for item in unwatched}))
    count = f"{len(paths)} director{'y' if len(paths) == 1 else 'ies'}"
    return (
        f"{count} not watched ({shown}): {reasons}; what changes there is published by a rescan "
        f"every {every_s:g} s until a watch can be added"
    )


class LineageWatcher:
    """Owns one inotify instance; ``fileno()`` goes into the agent's selector."""

    def __init__(self, live_dir: Path | None, others: Sequence[Source] = ()) -> None:
        """Watch certbot's ``live_dir`` (``None``: certbot is not a source) and the ``others``."""
        self.live_dir = live_dir
        self.others = tuple(others)
        self._mappers: dict[Path, list[tuple[str, Mapper]]] = {}
        """A watched source directory -> (prefix, which lineage an entry belongs to) per source."""
        self._paths: dict[int, Path] = {}
        self._inotify = INotify()
        self._roles: dict[int, tuple[str, str | None]] = {}
        """wd -> (role, lineage) with role in live, lineage, archive, ancestor."""
        self._by_path: dict[Path, int] = {}
        self._archives: dict[str, set[Path]] = {}
        self.unwatched: dict[Path, Unwatched] = {}
        """Directories that should be watched and are not; tried again at each rescan."""

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    def close(self) -> None:
        self._inotify.close()

    def _add(self, path: Path, mask: int, role: str, lineage: str | None) -> bool:
        """Watch ``path``; False when it is not watched (gone, or refused: then in :attr:`unwatched`)."""
        try:
            wd = self._inotify.add_watch(str(path), mask)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                self.unwatched.pop(path, None)
                return False  # gone already; the next rescan finds it gone
            self.unwatched[path] = Unwatched(path, role, lineage, _why_unwatched(error))
            return False
        self.unwatched.pop(path, None)
        self._roles[wd] = (role, lineage)
        self._by_path[path] = wd
        self._paths[wd] = path
        return True

    def _remove(self, path: Path) -> None:
        self.unwatched.pop(path, None)
        wd = self._by_path.pop(path, None)
        if wd is None:
            return
        self._roles.pop(wd, None)
        self._paths.pop(wd, None)
        with contextlib.suppress(OSError):  # the kernel removed it with the directory
            self._inotify.rm_watch(wd)

    def rescan(self) -> list[str]:
        """Watch what exists now; returns the lineage names."""
        for path in [p for p, wd in self._by_path.items() if self._roles.get(wd, ("",))[0] == "ancestor"]:
            self._remove(path)
        for path in [p for p, item in self.unwatched.items() if item.role == "ancestor"]:
            del self.unwatched[path]
        names = self._rescan_certbot() if self.live_dir is not None else []
        return names + self._rescan_others()

    def _watch_ancestor(self, missing: Path) -> None:
        ancestor = missing.parent
        while not ancestor.is_dir():
            ancestor = ancestor.parent
        if ancestor not in self._by_path:
            self._add(ancestor, _ANCESTOR, "ancestor", None)

    def _rescan_others(self) -> list[str]:
        wanted: dict[Path, list[tuple[str, Mapper]]] = {}
        for source in self.others:
            for path, mapper in source.watches().items():
                wanted.setdefault(path, []).append((source.prefix, mapper))
        for path in [p for p in self._mappers if p not in wanted]:
            self._remove(path)
        for path in [p for p, item in self.unwatched.items() if item.role == "source" and p not in wanted]:
            del self.unwatched[path]
        self._mappers = wanted
        for path in wanted:
            if path in self._by_path:
                continue
            if path.is_dir():
                self._add(path, _SOURCE | flags.ONLYDIR, "source", None)
            else:
                self._watch_ancestor(path)
        # Listed after the watches are in place: a file created in between is
        # either listed or seen.
        return [f"{source.prefix}:{name}" for source in self.others for name in source.names()]

    def _rescan_certbot(self) -> list[str]:
        assert self.live_dir is not None
        if not self.live_dir.is_dir():
            self.unwatched.pop(self.live_dir, None)
            self._watch_ancestor(self.live_dir)
            return []
        if self.live_dir not in self._by_path:
            self._add(self.live_dir, _LIVE | flags.ONLYDIR, "live", None)
        names = list_lineages(self.live_dir)
        for name in names:
            path = self.live_dir / name
            if path not in self._by_path:
                self._add(path, _LINEAGE | flags.ONLYDIR, "lineage", name)
        # A set: "in" on the list made a start with 10,000 lineages cost 10^8 comparisons.
        current = set(names)
        for path in [p for p, wd in self._by_path.items() if self._roles[wd][0] == "lineage"]:
            if path.name not in current:
                self._remove(path)
                for archive in self._archives.pop(path.name, set()):
                    self._remove(archive)
        for path in [p for p, item in self.unwatched.items() if item.role in ("lineage", "archive")]:
            if self.unwatched[path].lineage not in current:
                del self.unwatched[path]
        return names

    def follow_archives(self, lineage: str, directories: tuple[Path, ...]) -> None:
        """Also watch the archive directories ``lineage``'s links point into."""
        # Files kept in the lineage directory itself are covered by its own watch.
        wanted = set(directories) - ({self.live_dir / lineage} if self.live_dir else set())
        watched = self._archives.get(lineage, set())
        for stale in watched - wanted:
            self._remove(stale)
        for path, item in list(self.unwatched.items()):
            if item.role == "archive" and item.lineage == lineage and path not in wanted:
                del self.unwatched[path]
        # Only what was added counts as followed: a refused one is tried again next time.
        added = {d for d in wanted - watched if self._add(d, _ARCHIVE | flags.ONLYDIR, "archive", lineage)}
        self._archives[lineage] = (watched & wanted) | added

    def read(self) -> Changes:
        """Drain the queue without blocking."""
        changes = Changes()
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                changes.overflow = True
                continue
            role, lineage = self._roles.get(event.wd, ("", None))
            if role == "live" and self.live_dir is not None:
                if event.mask & (flags.DELETE_SELF | flags.MOVE_SELF):
                    self._remove(self.live_dir)
                    changes.rescan = True
                elif valid_name(event.name):
                    changes.rescan = True
                    changes.lineages.add(event.name)
            elif role == "ancestor":
                changes.rescan = True
            elif role == "source":
                path = self._paths.get(event.wd)
                for prefix, mapper in self._mappers.get(path, []) if path is not None else []:
                    name = mapper(event.name)
                    if name is not None:
                        changes.lineages.add(f"{prefix}:{name}")
                if event.mask & _ENTRIES:
                    changes.rescan = True
                if event.mask & (flags.DELETE_SELF | flags.MOVE_SELF) and path is not None:
                    self._remove(path)  # watched again by the rescan, if it comes back
            elif lineage is not None:
                changes.lineages.add(lineage)
        if changes.overflow:
            changes.rescan = True
        return changes
