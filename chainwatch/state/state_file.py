"""``state.json``: what is published, why, and how the agent is doing.

Written atomically after every change, read by ``chainwatch status``. The
format is versioned; readers ignore keys they do not know.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from chainwatch.files.atomic import atomic_write, status_group_id
from chainwatch.files.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.state.records import AgentRecord, ConsumerRecord, LineageRecord, StateDocument, document_problem

__all__ = ["FORMAT", "MAX_STATE_BYTES", "StateFile", "encode", "read_document"]

FORMAT = 1
# ~1 KiB a lineage: room for far more lineages than certbot is used with.
MAX_STATE_BYTES = 256 << 20


def encode(data: Mapping[str, Any]) -> Iterator[bytes]:
    """``data`` as compact JSON with sorted keys, one lineage at a time.

    The same bytes as one ``json.dumps(data, sort_keys=True,
    separators=(",", ":"))``, without holding the ~10 MB text of 10,000
    lineages in memory, and through json's C encoder: its streaming
    ``iterencode`` is pure Python and took ~1.5 s per save for 3,000 lineages.
    """
    yield b"{"
    for position, key in enumerate(sorted(data)):
        value = data[key]
        head = (b"," if position else b"") + _dump(key) + b":"
        if key != "lineages":
            yield head + _dump(value)
            continue
        yield head + b"{"
        for index, name in enumerate(sorted(value)):
            yield (b"," if index else b"") + _dump(name) + b":" + _dump(value[name])
        yield b"}"
    yield b"}\n"


def _dump(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _batched(chunks: Iterator[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    """Join small pieces into writes of about ``size`` bytes."""
    buffer: list[bytes] = []
    length = 0
    for chunk in chunks:
        buffer.append(chunk)
        length += len(chunk)
        if length >= size:
            yield b"".join(buffer)
            buffer, length = [], 0
    if buffer:
        yield b"".join(buffer)


def read_document(path: Path) -> StateDocument:
    """The document at ``path``; ValueError when it is not one this version can use."""
    try:
        data = json.loads(read_regular(path, MAX_STATE_BYTES, follow_links=False))
    except TooLarge:
        raise ValueError(f"larger than {MAX_STATE_BYTES >> 20} MiB") from None
    except NotRegularFile:
        raise ValueError("not a regular file") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError("a symbolic link") from None
        raise
    if not isinstance(data, dict) or type(data.get("format")) is not int or data["format"] != FORMAT:
        raise ValueError(f"not a state document of format {FORMAT}")
    # Every field, not only the sections: code reading a record trusts its types.
    problem = document_problem(data)
    if problem is not None:
        raise ValueError(problem)
    data.setdefault("agent", {})
    data.setdefault("lineages", {})
    data.setdefault("consumers", {})
    return cast("StateDocument", data)  # as checked field by field above


class StateFile:
    """The state document, kept in memory and saved whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gid = status_group_id()
        """Group chainwatch, where the package made it: monitoring reads state.json without root."""
        self.data: StateDocument = {"format": FORMAT, "agent": {}, "lineages": {}, "consumers": {}}
        self._seen: tuple[int, int, int] | None = None

    @staticmethod
    def read(path: Path) -> StateDocument | None:
        """The saved document, or None when there is none (or it is unusable)."""
        try:
            return read_document(path)
        except (OSError, ValueError):
            return None

    def load(self) -> str | None:
        """Read the file again, unless it is the one this object last wrote or read.

        With thousands of lineages the document is megabytes; a renewal in a
        quiet agent must not parse it again when nobody else wrote it. An
        unusable file is moved aside (the next pass rebuilds the records from
        what is published); the returned message says so, for the journal.
        """
        if self._signature() == self._seen and self._seen is not None:
            return None
        problem = None
        try:
            self.data = read_document(self.path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            problem = self._set_aside(str(error) if isinstance(error, ValueError) else error.strerror)
        self._seen = self._signature()
        return problem

    def _set_aside(self, reason: str | None) -> str:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
        try:
            os.rename(self.path, aside)
        except OSError as error:
            return f"{self.path} is unusable ({reason}) and cannot be moved aside ({error.strerror}); rebuilding it"
        return f"{self.path} was unusable ({reason}); kept as {aside.name}, rebuilt from what is published"

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    @property
    def agent(self) -> AgentRecord:
        return self.data["agent"]

    def lineage(self, name: str) -> LineageRecord:
        return self.data["lineages"].setdefault(name, {})

    def has_lineage(self, name: str) -> bool:
        return name in self.data["lineages"]

    def consumer(self, name: str) -> ConsumerRecord:
        return self.data.setdefault("consumers", {}).setdefault(name, {})

    def names(self) -> list[str]:
        return sorted(self.data["lineages"])

    def consumer_names(self) -> list[str]:
        """The consumers with a record (configured or not)."""
        return list(self.data.get("consumers") or {})

    def forget_consumer(self, name: str) -> None:
        """Drop a consumer no longer configured: nothing to report about it."""
        (self.data.get("consumers") or {}).pop(name, None)

    def save(self) -> None:
        atomic_write(self.path, _batched(encode(self.data)), 0o644 if self.gid is None else 0o640, self.gid)
        self._seen = self._signature()
