"""The records in ``state.json`` (the agent's, one lineage's, one consumer's) and in
a published version's ``decision.json``.

This module is the one place that knows their fields, and the closed sets of
values their strings take (each a ``Literal``; those that mirror an enum of
the policy or the consumers are checked equal to it by the tests). They stay
JSON objects on disk (readers ignore keys they do not know), and are typed
here so that mypy checks every read and write; :func:`document_problem` checks
a document read from disk against these same declarations, so that code
reading a record can trust its types, a value outside its closed set
included. Who changes what:

- ``agent.reconcile`` writes what a lineage serves (``version``, ``leaf``,
  ``served``...) whenever the ``live/`` link moves, the lineage's own status
  (its input and the policy's verdict) and its errors; of ``pending``, it
  updates the input digests and clears it when new input supersedes it; it
  sets ``good`` where an older state.json lacks it; it copies the agent
  record into the document at each save, with a fresh ``heartbeat``;
- ``agent.consumer_step`` writes ``good`` and ``pending`` (which version
  consumers accepted, which one waits), a lineage's ``consumer`` error and
  status, and the consumer records;
- ``agent.loop`` writes the agent record;
- ``cli.status_view``, ``cli.probe`` (itself) and ``agent.metrics`` only read.
"""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Callable, Mapping
from typing import Literal, NotRequired, TypedDict, Union, get_args, get_origin, get_type_hints, is_typeddict

from chainwatch.state.timestamps import now_iso

__all__ = [
    "AgentMode",
    "AgentRecord",
    "ClientEntry",
    "ClientFailure",
    "ClientsRecord",
    "ConsumerErrorKind",
    "ConsumerRecord",
    "ConsumerState",
    "DecisionMeta",
    "DroppedCert",
    "ErrorKind",
    "ErrorRecord",
    "ForecastRecord",
    "LeafRecord",
    "LineageErrorKind",
    "LineageRecord",
    "LineageStatus",
    "ModeValue",
    "PendingRecord",
    "ProbeRecord",
    "ProbeVerdictValue",
    "ReasonValue",
    "ReloadRecord",
    "ReloadResultValue",
    "ReloadVia",
    "RoleValue",
    "ServedCert",
    "StateDocument",
    "WarningRecord",
    "WarningValue",
    "clear_error",
    "document_problem",
    "note_error",
    "record_checker",
]


# -- closed sets ---------------------------------------------------------------------------------
# The enums these mirror live in layers that load cryptography or sit above this one
# (`status` must load neither), so the values are spelled here; the tests hold them equal.

LineageStatus = Literal["ok", "warning", "error"]
ConsumerState = Literal["ok", "skipped", "error"]
LineageErrorKind = Literal["rejected", "write", "inconsistent", "internal", "consumer"]
"""Why a lineage is in error: its input is unusable (rejected), its set could not be
written (write), its source stayed mid-update (inconsistent), a bug (internal), or a
consumer refused its new version (consumer)."""
ConsumerErrorKind = Literal["reload", "unreachable", "stale", "not-taken"]
"""Why a consumer is in error: ``consumers.checks.Check.error_kind``."""
ErrorKind = Literal[LineageErrorKind, ConsumerErrorKind]
RoleValue = Literal["leaf", "intermediate", "cross-sign"]
"""``policy.decision.Role``'s values."""
ReasonValue = Literal[
    "anchor", "duplicate", "unrelated", "expired", "issuer-expired", "issuer-distrusted",
    "issuer-untrusted", "not-needed", "covered", "breaks-client",
]  # fmt: skip
"""``policy.decision.Reason``'s values: frozen codes."""
WarningValue = Literal[
    "incomplete",
    "leaf-expired",
    "leaf-not-yet-valid",
    "expiring-soon",
    "reordered",
    "conflicting-twins",
    "clients-at-risk",
]
"""``policy.decision.WarningCode``'s values."""
ModeValue = Literal["safe", "minimal"]
"""``policy.settings.Mode``'s values."""
ReloadVia = Literal["dbus", "systemctl", "command", "haproxy-api"]
ReloadResultValue = Literal["reloaded", "skipped", "failed"]
"""``consumers.reload.Result``'s values."""
ProbeVerdictValue = Literal["serves", "other-lineage", "stale", "not-taken", "unknown", "unreachable", "unchecked"]
"""``consumers.checks.ProbeVerdict``'s values."""
AgentMode = Literal["run"]
"""Only ``chainwatch run`` writes the agent record; ``sync`` leaves it as it is."""


# -- state.json ----------------------------------------------------------------------------------


class ErrorRecord(TypedDict):
    kind: ErrorKind
    """A lineage's take :data:`LineageErrorKind`, a consumer's :data:`ConsumerErrorKind`."""
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
    role: RoleValue
    not_after: str


class DroppedCert(TypedDict):
    short: str
    sha256: str
    reason: ReasonValue
    detail: str


class WarningRecord(TypedDict):
    code: WarningValue
    message: str


class ClientFailure(TypedDict):
    name: str
    detail: str
    """Why the client fails on the served chain, in one sentence."""


class ForecastRecord(TypedDict):
    at: str
    """The moment re-judged: a second after the certificate's edge."""
    client: str
    validates: bool
    """Whether the client validates the served chain from then on."""
    why: str
    """The edges at that moment, e.g. "ISRG Root X1 expires 2035-06-04"."""


class ClientsRecord(TypedDict):
    """The configured clients' verdicts on the served chain (``[policy] clients``, stores included)."""

    not_validating: list[ClientFailure]
    """The configured clients (not the trust stores) the served chain fails."""
    stores_not_validating: list[str]
    """The trust stores it fails (each also has its ``incomplete`` warning)."""
    forecast: list[ForecastRecord]
    """Each change of a client's verdict within the horizon (``[policy] horizon_days``)."""


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
    status: LineageStatus
    """The lineage's own state (its consumers have theirs)."""
    message: str
    since: str
    version: int | None
    """The version ``live/NAME`` points at: what is served. Every field below up
    to ``clients`` describes that version."""
    published_at: str
    leaf: LeafRecord
    served: list[ServedCert]
    dropped: list[DroppedCert]
    warnings: list[WarningRecord]
    validating_stores: list[str]
    clients: ClientsRecord
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
    via: ReloadVia
    result: ReloadResultValue
    detail: str
    seconds: float


class ProbeRecord(TypedDict):
    endpoint: str
    lineage: str
    server_name: str
    verdict: ProbeVerdictValue
    ok: bool
    message: str
    version: int | None
    """The published version of ``lineage`` the endpoint serves, if any."""
    checked_at: str


class ConsumerRecord(TypedDict, total=False):
    state: ConsumerState
    lineages: list[str]
    """The lineages it was last reloaded for."""
    last_reload: ReloadRecord | str
    """A string: the time, as the previous release wrote it (with ``via``,
    ``result`` and ``detail`` beside it); rewritten at the next reload."""
    probes: list[ProbeRecord]
    error: ErrorRecord | None
    next_retry: str | None
    failures: int
    """Failed reloads since the state began (a Prometheus counter)."""
    failures_in_a_row: int
    skipped_in_a_row: int
    """Checks in a row that found it not running: spaces out the next looks."""


class AgentRecord(TypedDict, total=False):
    """The agent that last ran (``chainwatch run``); ``sync`` leaves it as it is."""

    pid: int
    started: str
    mode: AgentMode
    version: str
    """chainwatch's own version."""
    config: str
    """The configuration file it runs with, or "built-in defaults"."""
    heartbeat: str
    """Written by ``reconcile`` at each save."""
    stopped: str
    config_error: str
    """Why the last reload of the configuration was refused."""
    watch_error: str
    """What inotify could not watch and why; absent once everything is watched."""


class StateDocument(TypedDict):
    """``state.json`` as a whole."""

    format: int
    """Checked by ``state_file`` before the sections: a format it does not know is no document."""
    agent: AgentRecord
    lineages: dict[str, LineageRecord]
    consumers: dict[str, ConsumerRecord]


# -- decision.json ---------------------------------------------------------------------------------


class ChainEntry(TypedDict):
    """A served certificate, as ``chainwatch trim --json`` shows it."""

    subject: str
    issuer: str
    sha256: str
    not_before: str
    not_after: str
    role: RoleValue


class DroppedEntry(TypedDict):
    """A dropped certificate, as ``chainwatch trim --json`` shows it."""

    subject: str
    issuer: str
    sha256: str
    reason: ReasonValue
    detail: str


class ClientEntry(TypedDict):
    """One client's verdict in ``--json`` and decision.json (``policy.decision.ClientResult``)."""

    name: str
    as_given: bool
    served: bool
    detail: str


class DecisionMeta(TypedDict):
    """A published version's ``decision.json``: what was decided, for status, probes and rollback.

    Made by ``reconcile`` (the decision as ``--json`` shows it, and where it came
    from), written by ``publish`` beside the version's files."""

    lineage: str
    published_at: str
    source_fullchain_sha256: str
    mode: ModeValue
    stores: list[str]
    chain: list[ChainEntry]
    dropped: list[DroppedEntry]
    warnings: list[WarningRecord]
    clients: NotRequired[list[ClientEntry]]
    """Absent from versions published before clients were judged."""
    dropped_as_recorded: list[DroppedCert]
    """The record's ``dropped``, kept for a rollback to restore."""
    version: NotRequired[int]
    """Added by ``publish`` as it writes the file."""


def note_error(record: LineageRecord | ConsumerRecord, kind: ErrorKind, message: str, now: dt.datetime) -> ErrorRecord:
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


# -- reading from disk ------------------------------------------------------------------------
# state.json is the agent's own file, but anyone with root may edit it, and a
# wrong type in it must not crash every later command: it is checked once, as
# read, against the declarations above. Compiled once into closures, as the
# document of 10,000 lineages is read at each start.

_Problem = tuple[str, str, str]
"""Where (a dotted path), what was found, what belongs there."""
_Check = Callable[[object], _Problem | None]

_JSON_NAMES = {type(None): "null", bool: "a bool", int: "an int", float: "a float", str: "a string"}
_JSON_NAMES |= {list: "a list", dict: "an object"}


def _found(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _scalar_types(hint: object) -> frozenset[type] | None:
    """The exact types a scalar ``hint`` admits (bool is no int here; an int is a float), or None."""
    if hint is None or hint is type(None):
        return frozenset({type(None)})
    if hint in (str, int, bool):
        return frozenset({hint}) if isinstance(hint, type) else None
    if hint is float:
        return frozenset({float, int})
    if get_origin(hint) in (Union, types.UnionType):
        parts = [_scalar_types(arg) for arg in get_args(hint)]
        return frozenset().union(*parts) if all(p is not None for p in parts) else None  # type: ignore[arg-type]
    return None


def _describe(hint: object) -> str:
    if isinstance(hint, type) and hint is not type(None):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("chainwatch.state.records.", "")


def _compile(hint: object) -> _Check:
    scalar = _scalar_types(hint)
    if scalar is not None:
        expected = _describe(hint)
        return lambda value: None if type(value) in scalar else ("", _found(value), expected)
    origin, args = get_origin(hint), get_args(hint)
    if is_typeddict(hint):
        return _compile_record(hint)
    if origin is Literal:
        allowed = frozenset(args)
        expected = " or ".join(repr(a) for a in args)
        return lambda value: None if type(value) is str and value in allowed else ("", repr(value), expected)
    if origin is list:
        return _compile_list(_compile(args[0]), _describe(hint))
    if origin is dict:
        return _compile_mapping(_compile(args[1]), _describe(hint))
    if origin in (Union, types.UnionType):
        options = [_compile(arg) for arg in args if arg is not type(None)]
        nullable = len(options) < len(args)
        if nullable and len(options) == 1:
            # X | None: say what is wrong inside X, not only that it is no X.
            (inner,) = options
            return lambda value: None if value is None else inner(value)
        expected = _describe(hint)

        def either(value: object) -> _Problem | None:
            if nullable and value is None:
                return None
            problems = [option(value) for option in options]
            if None in problems:
                return None
            # The option of the value's own kind says what is wrong inside it.
            deepest = max(problems, key=lambda problem: len(problem[0]) if problem else 0)
            return deepest if deepest and deepest[0] else ("", _found(value), expected)

        return either
    raise TypeError(f"no check for {hint!r}")  # a new field's type: teach _compile


def _compile_list(item: _Check, expected: str) -> _Check:
    def check(value: object) -> _Problem | None:
        if type(value) is not list:
            return ("", _found(value), expected)
        for index, element in enumerate(value):
            problem = item(element)
            if problem is not None:
                return (f"[{index}]{problem[0]}", problem[1], problem[2])
        return None

    return check


def _compile_mapping(item: _Check, expected: str) -> _Check:
    def check(value: object) -> _Problem | None:
        if type(value) is not dict:
            return ("", _found(value), expected)
        for key, element in value.items():
            problem = item(element)
            if problem is not None:
                return (f"[{key!r}]{problem[0]}", problem[1], problem[2])
        return None

    return check


def _compile_record(record: object) -> _Check:
    hints: Mapping[str, object] = get_type_hints(record)
    required = frozenset(getattr(record, "__required_keys__", ()))
    # Fields of scalar types are checked inline: one set lookup each.
    scalars = {key: types for key, hint in hints.items() if (types := _scalar_types(hint)) is not None}
    expected = {key: _describe(hint) for key, hint in hints.items()}
    nested = {key: _compile(hint) for key, hint in hints.items() if key not in scalars}
    name = getattr(record, "__name__", "record")

    def check(value: object) -> _Problem | None:
        if type(value) is not dict:
            return ("", _found(value), f"an object ({name})")
        if not required <= value.keys():
            return (f".{min(required - value.keys())}", "missing", "")
        for key, element in value.items():
            allowed = scalars.get(key)
            if allowed is not None:
                if type(element) not in allowed:
                    return (f".{key}", _found(element), expected[key])
                continue
            inner = nested.get(key)
            if inner is not None:
                problem = inner(element)
                if problem is not None:
                    return (f".{key}{problem[0]}", problem[1], problem[2])
        return None  # keys it does not know are a newer release's: ignored

    return check


_SECTIONS: dict[str, _Check] = {
    section: _compile(hint) for section, hint in get_type_hints(StateDocument).items() if section != "format"
}


def record_checker(record: object) -> Callable[[object], str | None]:
    """A check of a value against the TypedDict ``record``, compiled once: the first field
    not of its declared type, said in a few words, or None. For other files than state.json
    (the agent's live record under /run) that describe their fields the same way."""
    check = _compile(record)

    def problem(value: object) -> str | None:
        found = check(value)
        if found is None:
            return None
        where, kind, expected = found
        return f"{where or 'the record'} is {kind}" + (f", not {expected}" if expected else "")

    return problem


def document_problem(document: Mapping[str, object]) -> str | None:
    """The first value of ``document`` that is not of its field's declared type, said in a few words."""
    for section, check in _SECTIONS.items():
        if section in document:
            problem = check(document[section])
            if problem is not None:
                where, found, expected = problem
                return f"{section}{where} is {found}" + (f", not {expected}" if expected else "")
    return None
