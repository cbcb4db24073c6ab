"""The agent's live condition, kept under ``/run`` where a full ``/var/lib`` cannot stop it.

``state.json`` lives in the output directory: when that disk is full, the
error that says so cannot be saved there, and ``status`` would read the last
good record and say ok. So the agent also keeps a small file in systemd's
``RuntimeDirectory=`` (a tmpfs): who it is, its heartbeat and how often it
beats, whether ``state.json`` holds what it knows, and, when not, each
lineage's condition as the agent holds it in memory. ``status`` merges it.

The same file says when the agent refused to start on its configuration
(exit 78): the unit keeps the directory (``RuntimeDirectoryPreserve=yes``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypedDict

from chainwatch.files.atomic import atomic_write, status_group_id
from chainwatch.files.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.state.records import ErrorRecord, LineageStatus, record_checker

__all__ = [
    "HEARTBEATS_MISSED",
    "LineageCondition",
    "LiveRecord",
    "live_path",
    "read_live",
    "runtime_dir",
    "write_live",
]

FORMAT = 1
FILE_NAME = "agent.json"
HEARTBEATS_MISSED = 3
"""An agent whose heartbeat is older than this many intervals is hung: the
Prometheus rule's 30 minutes for the 10-minute heartbeat."""
_MAX_BYTES = 64 << 20
_DEFAULT_DIR = Path("/run/chainwatch")


class LineageCondition(TypedDict):
    """A lineage's own state as the agent holds it, when ``state.json`` could not take it."""

    status: LineageStatus | Literal[""]
    """Empty for a lineage not judged yet."""
    message: str
    since: str
    error: ErrorRecord | None


class LiveRecord(TypedDict, total=False):
    format: int
    output_dir: str
    """The output directory this agent publishes to: a file of another agent is not ours."""
    pid: int
    started: str
    heartbeat: str
    heartbeat_interval_s: float
    """How often the agent refreshes ``heartbeat``, idle or not."""
    stopped: str
    failed: str
    """Why the agent refused to start (exit 78): nothing is published until someone acts."""
    saved: bool
    """``state.json`` holds what the agent knows; when false, ``lineages`` does."""
    output_error: str
    """The output directory as a whole could not be used at the last pass."""
    lineages: dict[str, LineageCondition]


def runtime_dir() -> Path:
    """systemd's ``RuntimeDirectory=`` (it sets ``RUNTIME_DIRECTORY``), else /run/chainwatch.

    ``status`` run by a monitoring system has no such variable: it finds the
    unit's directory at its fixed place.
    """
    given = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(given) if given else _DEFAULT_DIR


def live_path(directory: Path | None = None) -> Path:
    return (directory or runtime_dir()) / FILE_NAME


def write_live(record: LiveRecord, directory: Path | None = None) -> str | None:
    """Replace the live file; the reason when it cannot be written (never raises)."""
    folder = directory or runtime_dir()
    gid = status_group_id()
    try:
        # Outside systemd nobody made it; under systemd this is a no-op.
        folder.mkdir(mode=0o755, exist_ok=True)
        payload = json.dumps({**record, "format": FORMAT}, sort_keys=True, separators=(",", ":")).encode()
        atomic_write(folder / FILE_NAME, payload, 0o644 if gid is None else 0o640, gid)
    except OSError as error:
        return f"cannot write {folder / FILE_NAME}: {error.strerror or error}"
    return None


def read_live(output_dir: Path, directory: Path | None = None) -> LiveRecord | None:
    """The live record of the agent publishing to ``output_dir``; None when there is none
    usable (absent, unreadable, malformed, or another output directory's)."""
    try:
        data: Any = json.loads(read_regular(live_path(directory), _MAX_BYTES, follow_links=False))
    except (OSError, ValueError, NotRegularFile, TooLarge):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("output_dir") != str(output_dir):
        return None
    return _checked(data)


def _checked(data: dict[str, Any]) -> LiveRecord | None:
    """``data`` when every field has its type; a file of another shape is ignored whole."""
    if _live_problem(data) is not None:
        return None
    record: LiveRecord = data  # type: ignore[assignment]
    return record


# Checked by the same compiled checks as state.json's records, from the declarations above.
_live_problem = record_checker(LiveRecord)
