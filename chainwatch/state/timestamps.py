"""How the records write a moment: ISO 8601, UTC, to the second (``2026-12-07T17:31:03Z``).

One module both :mod:`~chainwatch.state.records` and
:mod:`~chainwatch.state.state_file` import, so neither imports the other.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["now_iso", "parse_iso"]


def now_iso(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
