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
import time
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, TextIO

from chainwatch.printable import printable

__all__ = [
    "MESSAGE_IDS", "PRIORITIES", "ROUTINE", "SEVERITIES", "SEVERITY_PRIORITIES",
    "Event", "Journal", "Priority", "Severity", "priority_of", "under_journald",
]  # fmt: skip


class Event(StrEnum):
    """What ``CHAINWATCH_EVENT`` says happened."""

    STARTED = "started"
    STOPPING = "stopping"
    PUBLISHED = "published"
    UNCHANGED = "unchanged"
    SERVED_WITH_WARNINGS = "warning"
    REJECTED = "rejected"
    INCONSISTENT = "inconsistent"
    INCONSISTENT_TOO_LONG = "inconsistent-too-long"
    LINEAGE_ADDED = "lineage-added"
    LINEAGE_REMOVED = "lineage-removed"
    CONFIG_RELOADED = "config-reloaded"
    CONFIG_REJECTED = "config-rejected"
    RELOADED = "reloaded"
    RELOAD_SKIPPED = "reload-skipped"
    RELOAD_FAILED = "reload-failed"
    ROLLED_BACK = "rolled-back"
    ROLLED_FORWARD = "rolled-forward"
    NOT_ROLLED_BACK = "not-rolled-back"
    CONSUMER_RECOVERED = "consumer-recovered"
    PROBE_OK = "probe-ok"
    PROBE_FAILED = "probe-failed"
    PROBE_UNCHECKED = "probe-unchecked"
    RECONCILING = "reconciling"
    ERROR = "error"


MESSAGE_IDS: dict[Event, str] = {
    Event.STARTED: "735a846048f448b2a8ad183fb0082f39",
    Event.STOPPING: "3d5500743f414fa6a967ba177b6e274d",
    Event.PUBLISHED: "8d7fc54f71424686b9e17e6cf230358c",
    Event.UNCHANGED: "47a62111418a41ce9f024eea5277d7b2",
    Event.SERVED_WITH_WARNINGS: "b1e8887f5f554c8eace5e3ee69d1e9f2",
    Event.REJECTED: "ef3d48921b014650823706cdb529c38b",
    Event.INCONSISTENT: "c6f0dace861040509a9cdda960dc3fbe",
    Event.INCONSISTENT_TOO_LONG: "f83d5457c8644492b81073dc175f33f8",
    Event.LINEAGE_ADDED: "3974830575ef4ee0a53f8a1212fdea12",
    Event.LINEAGE_REMOVED: "2a425ce053bf4a488380e31d0cdc19ac",
    Event.CONFIG_RELOADED: "4c6122464adf4dca97fea2ff3e1b9554",
    Event.CONFIG_REJECTED: "f88930b8de9045588e86c093d607ce43",
    Event.RELOADED: "3f67df11cebf4f9ea8a3a674c5f6970b",
    Event.RELOAD_SKIPPED: "8a74abb775424b09bd5143b49e1a78d7",
    Event.RELOAD_FAILED: "87e2e53bd04c41c6a477682bdb51274a",
    Event.ROLLED_BACK: "1a562389a56840f98b952c93d2f5785a",
    Event.ROLLED_FORWARD: "d6464a8f442a4fe5a626417dfbe921bc",
    Event.NOT_ROLLED_BACK: "a77562de414c445297f7dd4a25a7be0a",
    Event.CONSUMER_RECOVERED: "2291bf3801394ab58266abcced2b46bd",
    Event.PROBE_OK: "fd3f63cbcb1644cca0ebca46b86cfe36",
    Event.PROBE_FAILED: "e1a04481d02d4ea29aeb0016cf09247c",
    Event.PROBE_UNCHECKED: "992ff6fd75314e4e888b92dba604d24a",
    Event.RECONCILING: "0d334eac086d40f58e1a84b114bebe6e",
    Event.ERROR: "5bf6db751a324c938e359fb4ced41590",
}


class Priority(IntEnum):
    """syslog priorities, as ``journalctl -p`` names them."""

    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6


class Severity(StrEnum):
    """How bad what an event leaves is, in the words ``chainwatch status`` uses for it."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_PRIORITIES: dict[Severity, Priority] = {
    Severity.CRITICAL: Priority.ERR,
    Severity.WARNING: Priority.WARNING,
    Severity.OK: Priority.NOTICE,
}
"""The one mapping from severity to journal priority (the man page states it):
``journalctl -p err`` shows everything ``status`` calls critical."""


def priority_of(severity: Severity | str, *, routine: bool = False) -> Priority:
    """The journal priority of ``severity`` (as ``status`` words it); routine ok events are info."""
    priority = SEVERITY_PRIORITIES[Severity(severity)]
    return Priority.INFO if routine and priority == Priority.NOTICE else priority


SEVERITIES: dict[Event, Severity] = {
    # What `status` then says of the lineage, the consumer or the agent the event is about.
    Event.REJECTED: Severity.CRITICAL,
    Event.INCONSISTENT_TOO_LONG: Severity.CRITICAL,
    Event.CONFIG_REJECTED: Severity.CRITICAL,
    Event.RELOAD_FAILED: Severity.CRITICAL,
    Event.ROLLED_BACK: Severity.CRITICAL,
    Event.ROLLED_FORWARD: Severity.CRITICAL,  # the consumer stays in error
    Event.NOT_ROLLED_BACK: Severity.CRITICAL,  # the consumer stays in error
    Event.PROBE_FAILED: Severity.CRITICAL,  # the consumer is in error until it serves the set
    Event.ERROR: Severity.CRITICAL,
    Event.SERVED_WITH_WARNINGS: Severity.WARNING,
    Event.LINEAGE_REMOVED: Severity.WARNING,
    Event.RELOAD_SKIPPED: Severity.WARNING,
    Event.RECONCILING: Severity.WARNING,
    Event.PUBLISHED: Severity.OK,
    Event.LINEAGE_ADDED: Severity.OK,
    Event.CONFIG_RELOADED: Severity.OK,
    Event.RELOADED: Severity.OK,
    Event.CONSUMER_RECOVERED: Severity.OK,
    Event.PROBE_UNCHECKED: Severity.OK,  # proves nothing either way: the consumer stays as it was
    Event.STARTED: Severity.OK,
    Event.STOPPING: Severity.OK,
    Event.UNCHANGED: Severity.OK,
    Event.INCONSISTENT: Severity.OK,  # certbot mid-write: the previous set stays served
    Event.PROBE_OK: Severity.OK,
}

ROUTINE = frozenset({Event.STARTED, Event.STOPPING, Event.UNCHANGED, Event.INCONSISTENT, Event.PROBE_OK})
"""Ok and nothing changed: info rather than notice."""

PRIORITIES: dict[Event, Priority] = {event: priority_of(SEVERITIES[event], routine=event in ROUTINE) for event in Event}
"""One priority per event, stated in the event's catalog entry too: an event
that could be routine or trouble is two events."""

UNIT = "chainwatch.service"
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
LOG_ENV = "CHAINWATCH_LOG"
"""``CHAINWATCH_LOG=stderr``: a command writes its events on stderr only, even with journald running."""


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
    """Where events go: the journal's native protocol, lines on a stream, or both.

    ``echo``: with the journal, events at this priority or worse are also
    written on the stream (None: none are).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        native: bool | None = None,
        echo: Priority | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
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
        self.echo = echo
        self.fields = dict(fields or {})
        """Added to every entry sent to the journal."""
        self._holding = 0
        self._held: list[tuple[str, dict[str, Any], str]] = []

    @classmethod
    def for_command(cls, stream: TextIO | None = None) -> Journal:
        """For a command run outside the unit (``sync``, certbot's deploy hook).

        With journald running, events go to the journal as the agent's own
        would, with ``OBJECT_SYSTEMD_UNIT=chainwatch.service``: ``journalctl -u``
        shows entries carrying it when root sent them ("messages from authorized
        daemons about this service"). On a terminal every event is also printed
        there; on a pipe (certbot captures a hook's stderr and calls any of it
        "error output") only warnings and worse are. Without journald, or with
        ``CHAINWATCH_LOG=stderr``, every event goes to the stream as before.
        """
        stream = stream or sys.stderr
        if os.environ.get(LOG_ENV) == "stderr" or not JOURNAL_SOCKET.exists():
            return cls(stream, native=False)
        try:
            terminal = stream.isatty()
        except (OSError, ValueError):
            terminal = False
        echo = Priority.INFO if terminal else Priority.WARNING
        return cls(stream, native=True, echo=echo, fields={"OBJECT_SYSTEMD_UNIT": UNIT})

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
        **extra: Any,
    ) -> None:
        """Record one event at its priority; ``extra`` become ``CHAINWATCH_<NAME>`` fields.

        A lineage's events name it in MESSAGE: with several lineages, plain
        ``journalctl -u chainwatch`` must say which one each line is about.
        """
        fields: dict[str, Any] = {
            "MESSAGE_ID": MESSAGE_IDS[event],
            "PRIORITY": str(int(PRIORITIES[event])),
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
        # A pass writes its entries after saving state, all at one instant:
        # these say when each event happened (the monotonic one for durations).
        now = dt.datetime.now(dt.UTC)
        fields["CHAINWATCH_EVENT_TIME"] = now.isoformat(timespec="microseconds")
        fields["CHAINWATCH_EVENT_MONOTONIC_USEC"] = str(time.monotonic_ns() // 1000)
        moment = now.strftime("%Y-%m-%d %H:%M:%S")
        if self._holding:
            self._held.append((message, fields, moment))
        else:
            self._write(message, fields, moment)

    def _write(self, message: str, fields: dict[str, Any], moment: str) -> None:
        # MESSAGE is what people read (journalctl, the stream): names from
        # certificates and files in it are escaped; the fields keep them exact.
        message = printable(message)
        lineage = fields.get("CHAINWATCH_LINEAGE")
        lineage = printable(lineage) if lineage is not None else None
        if self._send is not None:
            try:
                self._send(f"{lineage}: {message}" if lineage else message, **fields, **self.fields)
            except OSError:
                pass  # journald went away: the line goes to the stream below, not nowhere
            else:
                if self.echo is None or int(fields["PRIORITY"]) > self.echo:
                    return
        where = f" {lineage}:" if lineage else ":"
        self.stream.write(f"{moment} chainwatch {fields['CHAINWATCH_EVENT']}{where} {message}\n")
        self.stream.flush()
