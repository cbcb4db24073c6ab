"""Turn inotify events under certbot's live directory into "lineage N changed".

Watched: the live directory (lineages come and go), every lineage directory
(certbot's link switches), and every archive directory a lineage's links
point into (an edit in place of ``archive/NAME/fullchainN.pem``). When the
live directory does not exist yet, its nearest existing ancestor is watched
for it to appear.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

try:
    from inotify_simple import INotify, flags
except ImportError:  # the .deb bundles it: no Debian release packages inotify-simple
    from chainwatch._vendor.inotify_simple import INotify, flags  # type: ignore[import-not-found]

from chainwatch.lineage import list_lineages, valid_name

__all__ = ["Changes", "LineageWatcher"]

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


@dataclass
class Changes:
    """What one read of the inotify queue amounts to."""

    lineages: set[str] = field(default_factory=set)
    """Lineages with an event; their settle time restarts."""
    rescan: bool = False
    """Lineages may have appeared or vanished: list them again."""
    overflow: bool = False
    """The kernel dropped events: everything must be reconciled."""


class LineageWatcher:
    """Owns one inotify instance; ``fileno()`` goes into the agent's selector."""

    def __init__(self, live_dir: Path) -> None:
        self.live_dir = live_dir
        self._inotify = INotify()
        self._roles: dict[int, tuple[str, str | None]] = {}
        """wd -> (role, lineage) with role in live, lineage, archive, ancestor."""
        self._by_path: dict[Path, int] = {}
        self._archives: dict[str, set[Path]] = {}

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    def close(self) -> None:
        self._inotify.close()

    def _add(self, path: Path, mask: int, role: str, lineage: str | None) -> None:
        try:
            wd = self._inotify.add_watch(str(path), mask)
        except OSError:
            return  # gone already; the next rescan settles it
        self._roles[wd] = (role, lineage)
        self._by_path[path] = wd

    def _remove(self, path: Path) -> None:
        wd = self._by_path.pop(path, None)
        if wd is None:
            return
        self._roles.pop(wd, None)
        with contextlib.suppress(OSError):  # the kernel removed it with the directory
            self._inotify.rm_watch(wd)

    def rescan(self) -> list[str]:
        """Watch what exists now; returns the lineage names."""
        for path in [p for p, wd in self._by_path.items() if self._roles.get(wd, ("",))[0] == "ancestor"]:
            self._remove(path)
        if not self.live_dir.is_dir():
            ancestor = self.live_dir.parent
            while not ancestor.is_dir():
                ancestor = ancestor.parent
            self._add(ancestor, _ANCESTOR, "ancestor", None)
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
        return names

    def follow_archives(self, lineage: str, directories: tuple[Path, ...]) -> None:
        """Also watch the archive directories ``lineage``'s links point into."""
        # Files kept in the lineage directory itself are covered by its own watch.
        wanted = set(directories) - {self.live_dir / lineage}
        for stale in self._archives.get(lineage, set()) - wanted:
            self._remove(stale)
        for directory in wanted - self._archives.get(lineage, set()):
            self._add(directory, _ARCHIVE | flags.ONLYDIR, "archive", lineage)
        self._archives[lineage] = wanted

    def read(self) -> Changes:
        """Drain the queue without blocking."""
        changes = Changes()
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                changes.overflow = True
                continue
            role, lineage = self._roles.get(event.wd, ("", None))
            if role == "live":
                if event.mask & (flags.DELETE_SELF | flags.MOVE_SELF):
                    self._remove(self.live_dir)
                    changes.rescan = True
                elif valid_name(event.name):
                    changes.rescan = True
                    changes.lineages.add(event.name)
            elif role == "ancestor":
                changes.rescan = True
            elif lineage is not None:
                changes.lineages.add(lineage)
        if changes.overflow:
            changes.rescan = True
        return changes
