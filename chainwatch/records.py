"""The records in ``state.json``: one lineage's, one consumer's.

This module is the one place that knows their fields. They stay JSON objects
on disk (readers ignore keys they do not know), and are typed here so that
mypy checks every read and write. Who changes what:

- ``reconcile`` writes what a lineage serves (``version``, ``leaf``,
  ``served``...) whenever the ``live/`` link moves, and the lineage's own
  status: its input and the policy's verdict;
- ``consumers`` writes ``good`` and ``pending`` (which version consumers
  accepted, which one waits) and the consumer records;
- ``status`` and ``metrics`` only read.
"""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

from chainwatch.state import now_iso

__all__ = [
    "ConsumerRecord",
    "DroppedCert",
    "ErrorRecord",
    "LeafRecord",
    "LineageRecord",
    "PendingRecord",
    "ProbeRecord",
    "ReloadRecord",
    "backoff",
    "clear_error",
    "note_error",
]


class ErrorRecord(TypedDict):
    kind: str
    """rejected, write, inconsistent, internal (a lineage's); reload, unreachable, stale (a consumer's)."""
    message: str
    since: str
    """When this kind of error began (it stays while the same kind repeats)."""
    attempts: int


class LeafRecord(TypedDict, total=False):
    subject: str
    short: str
    names: list[str]
    not_before: str
    not_after: str
    sha256: str
    days_left: int
    """Added by ``status`` when it judges the record, never stored."""


class ServedCert(TypedDict):
    short: str
    sha256: str
    role: str
    not_after: str


class DroppedCert(TypedDict):
    short: str
    sha256: str
    reason: str
    detail: str


class WarningRecord(TypedDict):
    code: str
    message: str


class PendingRecord(TypedDict):
    """A published version that a consumer rejected: kept on disk, not served."""

    version: int
    source: str
    """The input's digest: new input from certbot supersedes the pending version."""
    config: str
    consumer: str
    reason: str
    since: str
    retry_at: str
    """When the version is switched in again and the consumers re-checked."""
    attempts: int


class LineageRecord(TypedDict, total=False):
    status: str
    """ok, warning or error: the lineage's own state (its consumers have theirs)."""
    message: str
    since: str
    version: int | None
    """The version ``live/NAME`` points at: what is served. Every field below up
    to ``validating_stores`` describes that version."""
    published_at: str
    leaf: LeafRecord
    served: list[ServedCert]
    dropped: list[DroppedCert]
    warnings: list[WarningRecord]
    validating_stores: list[str]
    good: int | None
    """The newest version every consumer of the lineage reloaded and, where
    probed, served: where a rollback goes. Never pruned while it is."""
    pending: PendingRecord | None
    error: ErrorRecord | None
    removed: bool
    inconsistent_since: str
    key_group: int | None
    files: dict[str, str]
    """SHA-256 of each published file of ``version``, to find damage."""
    changes_at: str | None
    source: str
    """SHA-256 of the certbot input the served version was decided from."""
    config: str
    """Fingerprint of the stores and policy it was decided under."""


class ReloadRecord(TypedDict):
    at: str
    via: str
    """dbus, systemctl or command."""
    result: str
    """reloaded, skipped or failed."""
    detail: str
    seconds: float


class ProbeRecord(TypedDict):
    endpoint: str
    lineage: str
    server_name: str
    verdict: str
    """serves, other-lineage, stale, not-taken, unknown, unreachable or unchecked (``consumers.Verdict``)."""
    ok: bool
    message: str
    version: int | None
    """The published version of ``lineage`` the endpoint serves, if any."""
    checked_at: str


class ConsumerRecord(TypedDict, total=False):
    state: str
    """ok, skipped or error."""
    lineages: list[str]
    """The lineages it was last reloaded for."""
    last_reload: ReloadRecord
    probes: list[ProbeRecord]
    error: ErrorRecord | None
    next_retry: str | None
    failures: int
    """Failed reloads since the state began (a Prometheus counter)."""
    failures_in_a_row: int
    skipped_in_a_row: int
    """Checks in a row that found it not running: spaces out the next looks."""


def note_error(record: LineageRecord | ConsumerRecord, kind: str, message: str, now: dt.datetime) -> ErrorRecord:
    """Set ``record``'s error; an error of the same kind keeps its ``since`` and counts attempts."""
    previous = record.get("error")
    same = previous is not None and previous["kind"] == kind
    since = previous["since"] if same and previous is not None else now_iso(now)
    attempts = previous["attempts"] + 1 if same and previous is not None else 1
    error = ErrorRecord(kind=kind, message=message, since=since, attempts=attempts)
    record["error"] = error
    return error


def clear_error(record: LineageRecord | ConsumerRecord) -> ErrorRecord | None:
    """Take ``record`` out of error; returns the error that cleared, if there was one."""
    previous = record.get("error")
    record["error"] = None
    return previous


def backoff(error: ErrorRecord | None) -> dt.timedelta:
    """10 s after the first failure of a kind, doubling up to 10 minutes."""
    attempts = error["attempts"] if error else 1
    return dt.timedelta(seconds=min(10 * 2 ** min(attempts - 1, 10), 600))
