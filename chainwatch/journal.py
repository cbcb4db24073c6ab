"""Log events to the journal with structured fields, or as plain lines elsewhere.

Every event has a fixed ``MESSAGE_ID`` explained in ``chainwatch.catalog``
(installed into /usr/lib/systemd/catalog), so ``journalctl -x -u chainwatch``
tells a person what happened and what to do. Codes never change meaning.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import Any, TextIO

__all__ = ["MESSAGE_IDS", "Event", "Journal", "under_journald"]


class Event(StrEnum):
    """What ``CHAINWATCH_EVENT`` says happened."""

    STARTED = "started"
    STOPPING = "stopping"
    PUBLISHED = "published"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"
    INCONSISTENT = "inconsistent"
    LINEAGE_ADDED = "lineage-added"
    LINEAGE_REMOVED = "lineage-removed"
    CONFIG_RELOADED = "config-reloaded"
    CONFIG_REJECTED = "config-rejected"
    RELOADED = "reloaded"
    RELOAD_SKIPPED = "reload-skipped"
    RELOAD_FAILED = "reload-failed"
    ROLLED_BACK = "rolled-back"
    ROLLED_FORWARD = "rolled-forward"
    CONSUMER_RECOVERED = "consumer-recovered"
    PROBE_OK = "probe-ok"
    PROBE_FAILED = "probe-failed"
    ERROR = "error"


MESSAGE_IDS: dict[Event, str] = {
    Event.STARTED: "735a846048f448b2a8ad183fb0082f39",
    Event.STOPPING: "3d5500743f414fa6a967ba177b6e274d",
    Event.PUBLISHED: "8d7fc54f71424686b9e17e6cf230358c",
    Event.UNCHANGED: "47a62111418a41ce9f024eea5277d7b2",
    Event.REJECTED: "ef3d48921b014650823706cdb529c38b",
    Event.INCONSISTENT: "c6f0dace861040509a9cdda960dc3fbe",
    Event.LINEAGE_ADDED: "3974830575ef4ee0a53f8a1212fdea12",
    Event.LINEAGE_REMOVED: "2a425ce053bf4a488380e31d0cdc19ac",
    Event.CONFIG_RELOADED: "4c6122464adf4dca97fea2ff3e1b9554",
    Event.CONFIG_REJECTED: "f88930b8de9045588e86c093d607ce43",
    Event.RELOADED: "3f67df11cebf4f9ea8a3a674c5f6970b",
    Event.RELOAD_SKIPPED: "8a74abb775424b09bd5143b49e1a78d7",
    Event.RELOAD_FAILED: "87e2e53bd04c41c6a477682bdb51274a",
    Event.ROLLED_BACK: "1a562389a56840f98b952c93d2f5785a",
    Event.ROLLED_FORWARD: "d6464a8f442a4fe5a626417dfbe921bc",
    Event.CONSUMER_RECOVERED: "2291bf3801394ab58266abcced2b46bd",
    Event.PROBE_OK: "fd3f63cbcb1644cca0ebca46b86cfe36",
    Event.PROBE_FAILED: "e1a04481d02d4ea29aeb0016cf09247c",
    Event.ERROR: "5bf6db751a324c938e359fb4ced41590",
}

# syslog priorities: 3 err, 4 warning, 5 notice, 6 info
_PRIORITY: dict[Event, int] = {
    Event.REJECTED: 3,
    Event.RELOAD_FAILED: 3,
    Event.PROBE_FAILED: 3,
    Event.ERROR: 3,
    Event.CONFIG_REJECTED: 3,
    Event.INCONSISTENT: 4,
    Event.ROLLED_BACK: 4,
    Event.ROLLED_FORWARD: 4,
    Event.RELOAD_SKIPPED: 4,
    Event.CONSUMER_RECOVERED: 5,
    Event.LINEAGE_REMOVED: 4,
    Event.PUBLISHED: 5,
    Event.RELOADED: 5,
    Event.CONFIG_RELOADED: 5,
    Event.LINEAGE_ADDED: 5,
}


def under_journald(stream: TextIO = sys.stderr) -> bool:
    """Is ``stream`` connected to the journal (systemd sets JOURNAL_STREAM to its dev:inode)?"""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


class Journal:
    """Where events go: the journal's native protocol, or lines on a stream."""

    def __init__(self, stream: TextIO | None = None, *, native: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self._send: Callable[..., None] | None = None
        if native is None:
            native = under_journald(self.stream)
        if native:
            try:
                # python3-systemd: present on every systemd host, optional elsewhere.
                self._send = importlib.import_module("systemd.journal").send
            except ImportError:
                self._send = None
        self._holding = 0
        self._held: list[tuple[str, dict[str, Any], str]] = []

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep events back until the block ends (nested blocks: the outermost).

        A pass logs as it goes but saves state.json at its end; holding its
        events until then means that whoever reads a journal line and runs
        `chainwatch status` sees the state that line describes.
        """
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if self._holding == 0:
                self.release()

    def release(self) -> None:
        """Write the events held so far, in order (after state is saved)."""
        held, self._held = self._held, []
        for message, fields, moment in held:
            self._write(message, fields, moment)

    @property
    def native(self) -> bool:
        return self._send is not None

    def log(
        self,
        event: Event,
        message: str,
        *,
        lineage: str | None = None,
        dropped: Iterable[str] = (),
        version: int | None = None,
        priority: int | None = None,
        **extra: Any,
    ) -> None:
        """Record one event; ``extra`` become ``CHAINWATCH_<NAME>`` fields."""
        level = priority if priority is not None else _PRIORITY.get(event, 6)
        fields: dict[str, Any] = {
            "MESSAGE_ID": MESSAGE_IDS[event],
            "PRIORITY": str(level),
            "SYSLOG_IDENTIFIER": "chainwatch",
            "CHAINWATCH_EVENT": str(event),
        }
        if lineage is not None:
            fields["CHAINWATCH_LINEAGE"] = lineage
        dropped = list(dropped)
        if dropped:
            fields["CHAINWATCH_DROPPED"] = " ".join(dropped)
        if version is not None:
            fields["CHAINWATCH_VERSION"] = str(version)
        for key, value in extra.items():
            fields[f"CHAINWATCH_{key.upper()}"] = str(value)
        moment = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        if self._holding:
            self._held.append((message, fields, moment))
        else:
            self._write(message, fields, moment)

    def _write(self, message: str, fields: dict[str, Any], moment: str) -> None:
        if self._send is not None:
            self._send(message, **fields)
            return
        lineage = fields.get("CHAINWATCH_LINEAGE")
        where = f" {lineage}:" if lineage else ":"
        self.stream.write(f"{moment} chainwatch {fields['CHAINWATCH_EVENT']}{where} {message}\n")
        self.stream.flush()
