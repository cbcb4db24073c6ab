"""A lineage's life: every rule that decides what happens to it next, and nothing else.

Everything that affects a lineage's state or its transitions lives in this
module (the manner of h11's ``_state.py``); it does no I/O and reads no clock:
the caller passes what it observed and the time, and gets back a plan (what
to do) with the record's next value. The pass (:mod:`chainwatch.agent.reconcile`)
observes each lineage once, asks here, applies the plan and saves; the
consumers' step (:mod:`chainwatch.agent.consumer_step`) hands back what
reloads and probes found and asks here what follows.

Transitions, each a README rule ("What the agent publishes", "Rollback and
the last known good version"), each tested in ``tests/test_lifecycle.py``:

==========================  ====================================================  ==============================
transition                  when                                                  plan
==========================  ====================================================  ==============================
MID_UPDATE                  the source is mid-update, within the grace            Wait until the grace ends
MID_UPDATE_TOO_LONG         mid-update for the grace or longer                    Refuse (inconsistent)
SOURCE_REFUSED              the source's files cannot be used                     Refuse (rejected)
PENDING_WAITS               the input is exactly what a consumer rejected         Wait until its retry
UNCHANGED                   same input, same configuration, before changes_at     KeepServing
DAMAGED                     as UNCHANGED, but the served set differs on disk      Repair (publish again)
NEW_INPUT                   anything else                                         Decide
LEAF_EXPIRED                the decided leaf has expired                          Refuse, no recheck
LEAF_NOT_YET_VALID          the decided leaf is not valid yet                     Refuse until its notBefore
FEWER_STORES                the new chain validates for fewer stores than served  Refuse until validity changes
SAME_AS_PENDING             new input, same published content as the pending one  Wait until its retry
PUBLISH                     the decision may replace what is served               Publish (supersedes a pending)
WRITE_FAILED                the output directory could not be written             Refuse (write), retry w/ backoff
OUTPUT_UNSAFE               a directory of the output tree is not ours alone      Refuse (write), until repaired
UNLOADABLE                  OpenSSL refuses the set                               Refuse (rejected)
PUBLISHED                   a new version is served                               Served (version N)
CONTENT_UNCHANGED           the new decision's files equal the served set         Served (same version)
INTERNAL_ERROR              a bug while processing the lineage                    Refuse (internal), backoff
REMOVED                     the lineage left the live directory                   KeepServing, warning
PENDING_DUE                 a pending version's retry (or changes_at) is due      SwitchIn the pending version
PENDING_NOT_DUE             not due yet                                           Wait until its retry
NOT_ROLLED_BACK             the good version expires, is not valid, or            KeepServing the new version
                            validates for fewer stores than the new one
ROLL_BACK                   a consumer fails with the new version and works       RollBack to the good version,
                            with the good one: the set is to blame                new one pending with backoff
ROLL_FORWARD                the consumer fails with the good version too          SwitchIn the new version again
ACCEPTED                    every consumer of the lineage takes what is served    good = served, pending cleared
==========================  ====================================================  ==============================

Retry schedules live here too (:data:`ERROR_RETRY`, :data:`PENDING_RETRY`,
:func:`consumer_recheck`): one module says how long anything waits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Literal, TypeVar

from chainwatch.policy.decision import Decision, WarningCode
from chainwatch.state.records import LineageRecord, PendingRecord, note_error
from chainwatch.state.timestamps import now_iso, parse_iso

__all__ = [
    "INCONSISTENT_GRACE",
    "PENDING_RETRY",
    "Decide",
    "Holds",
    "KeepServing",
    "Look",
    "MidUpdate",
    "Plan",
    "Publish",
    "Refuse",
    "Repair",
    "RollBack",
    "Served",
    "SourceRefused",
    "Step",
    "SwitchIn",
    "Transition",
    "Wait",
    "consumer_recheck",
    "error_retry",
]

# certbot switches a lineage in milliseconds; a minute of inconsistency means
# it died half way (or someone is editing by hand).
INCONSISTENT_GRACE = dt.timedelta(seconds=60)

# A version a consumer rejected is switched in again after these (README: 30 s, 1, 2, 5, 15, then 60 min).
PENDING_RETRY = (30, 60, 120, 300, 900, 3600)
# A lineage's own error (a full disk, a bug) is looked at again 10 s after, doubling up to 10 minutes.
ERROR_RETRY_FIRST_S = 10
ERROR_RETRY_LONGEST_S = 600


def error_retry(attempts: int) -> dt.timedelta:
    """When to look again at a lineage after its ``attempts``-th error of one kind."""
    return dt.timedelta(seconds=min(ERROR_RETRY_FIRST_S * 2 ** min(attempts - 1, 10), ERROR_RETRY_LONGEST_S))


def pending_retry(attempt: int) -> dt.timedelta:
    """When a version rejected for the ``attempt``-th time is switched in again."""
    return dt.timedelta(seconds=PENDING_RETRY[min(attempt - 1, len(PENDING_RETRY) - 1)])


def consumer_recheck(recheck_s: float, attempt: int) -> dt.timedelta:
    """When to look again at a consumer in error or skipped: its ``recheck_s``, growing as :data:`PENDING_RETRY`."""
    return dt.timedelta(seconds=recheck_s * pending_retry(attempt).total_seconds() / PENDING_RETRY[0])


class Transition(StrEnum):
    """The name of the rule that decided a step (see the table above)."""

    MID_UPDATE = "mid-update"
    MID_UPDATE_TOO_LONG = "mid-update-too-long"
    SOURCE_REFUSED = "source-refused"
    PENDING_WAITS = "pending-waits"
    UNCHANGED = "unchanged"
    DAMAGED = "damaged"
    NEW_INPUT = "new-input"
    LEAF_EXPIRED = "leaf-expired"
    LEAF_NOT_YET_VALID = "leaf-not-yet-valid"
    FEWER_STORES = "fewer-stores"
    SAME_AS_PENDING = "same-as-pending"
    PUBLISH = "publish"
    WRITE_FAILED = "write-failed"
    OUTPUT_UNSAFE = "output-unsafe"
    UNLOADABLE = "unloadable"
    PUBLISHED = "published"
    CONTENT_UNCHANGED = "content-unchanged"
    INTERNAL_ERROR = "internal-error"
    REMOVED = "removed"
    PENDING_DUE = "pending-due"
    PENDING_NOT_DUE = "pending-not-due"
    NOT_ROLLED_BACK = "not-rolled-back"
    ROLL_BACK = "roll-back"
    ROLL_FORWARD = "roll-forward"
    ACCEPTED = "accepted"


# -- what the pass observed ---------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """The served set as read once by a pass: ``live/NAME`` and the files it leads to."""

    version: int | None
    """The version the link names (its last component), None without a link or a version there."""
    link: str
    """The link's path, for messages."""
    target: str | None
    """Where the link points, None when it cannot be read."""
    link_error: str | None = None
    """Why the link cannot be read (``No such file or directory``)."""
    ours: bool = False
    """The link points where the publisher puts ``version`` (``../versions/NAME/N``)."""
    files: Mapping[str, bytes] | None = None
    """The served files, None when there is no version or one could not be read."""
    digests: Mapping[str, str] | None = None
    """SHA-256 of each of ``files``."""
    read_error: str | None = None
    """The first file that could not be read, and why."""

    @property
    def serving(self) -> str:
        """What a message says about what stays served."""
        return f"serving version {self.version}" if self.version is not None else "nothing published yet"


@dataclass(frozen=True)
class Holds:
    """The source holds a consistent set; ``digest`` is its :func:`~chainwatch.sources.digest.input_digest`."""

    digest: str


@dataclass(frozen=True)
class MidUpdate:
    """The source is being changed (certbot's ``previous_*.pem`` links, a key not matching yet)."""

    reason: str
    client: str
    """Who is expected to finish it (``certbot``)."""


@dataclass(frozen=True)
class SourceRefused:
    """The source's files cannot be used at all (unreadable, not confined, not regular)."""

    reason: str


SourceView = Holds | MidUpdate | SourceRefused


@dataclass(frozen=True)
class Look:
    """One lineage as a pass sees it, before any decision."""

    source: SourceView
    served: Served
    record: LineageRecord
    fingerprint: str
    """What besides the input the decision depends on (stores, policy)."""


# -- plans --------------------------------------------------------------------------------

ErrorKind = Literal["rejected", "write", "inconsistent", "internal", "consumer"]


@dataclass(frozen=True)
class KeepServing:
    """Leave what is served as it is; look again at ``recheck_at``."""

    version: int | None
    message: str
    recheck_at: dt.datetime | None = None
    warned: bool = False


@dataclass(frozen=True)
class Wait:
    """Nothing to publish before ``until``: the source is mid-update, or a rejected version waits."""

    message: str
    until: dt.datetime | None
    mid_update: bool = False
    """The source is mid-update (else: a version a consumer rejected waits)."""
    version: int | None = None


@dataclass(frozen=True)
class Refuse:
    """Keep what is served and say why; the lineage is in error of ``kind``."""

    kind: ErrorKind
    message: str
    recheck_at: dt.datetime | None = None


@dataclass(frozen=True)
class Decide:
    """The input is new (or the configuration, or time, changed): the policy must judge it."""


@dataclass(frozen=True)
class Repair:
    """The served set was damaged on disk: publish it again, even with the same content."""

    damage: str
    version: int | None


@dataclass(frozen=True)
class Publish:
    """Publish the decided set as a new version (unless it equals the served one)."""


@dataclass(frozen=True)
class Published:
    """The publisher wrote ``version`` (None: the content equals the served set)."""

    version: int | None
    current: int | None


@dataclass(frozen=True)
class SwitchIn:
    """Point ``live/NAME`` at an already published ``version`` again (a retry, a roll forward)."""

    version: int
    attempt: int


@dataclass(frozen=True)
class RollBack:
    """Serve the last known good ``to``; ``version`` waits, pending, until ``retry_at``."""

    to: int
    version: int
    retry_at: dt.datetime
    message: str


Plan = KeepServing | Wait | Refuse | Decide | Repair | Publish | Published | SwitchIn | RollBack


P_co = TypeVar("P_co", covariant=True, bound=Plan)


@dataclass(frozen=True)
class Step(Generic[P_co]):
    """A transition's outcome: what to do, why, and the lineage's record afterwards."""

    transition: Transition
    plan: P_co
    record: LineageRecord


# -- the record's own changes ---------------------------------------------------------------


def in_error(record: LineageRecord, kind: ErrorKind, message: str, now: dt.datetime) -> LineageRecord:
    """``record`` in error: ``since`` is when its status became an error, the error's own
    ``since`` when this kind of error began (and ``attempts`` counts its repeats)."""
    after = record.copy()
    note_error(after, kind, message, now)
    if record.get("status") != "error":
        after["since"] = now_iso(now)
    after["status"], after["message"] = "error", message
    return after


def serving_status(record: LineageRecord, decision: Decision, now: dt.datetime) -> tuple[LineageRecord, bool]:
    """``record`` once its served version is judged ``decision``: ok or warning, out of error.

    Also says whether a warning begins or changes (said once, not at every pass)."""
    status: Literal["ok", "warning"] = "warning" if decision.warnings else "ok"
    message = "; ".join(w.message for w in decision.warnings) or "serving the sanitized chain"
    after = record.copy()
    changed = record.get("status") != status or record.get("message") != message
    if changed:
        after["since"] = now_iso(now)
    after["status"], after["message"], after["error"] = status, message, None
    return after, changed and status == "warning"


def _without(record: LineageRecord, *keys: Literal["inconsistent_since", "removed"]) -> LineageRecord:
    if not any(key in record for key in keys):
        return record  # unchanged: no copy (a restart looks at every lineage)
    after = record.copy()
    for key in keys:
        after.pop(key, None)
    return after


def refuse(
    record: LineageRecord,
    kind: ErrorKind,
    reason: str,
    served: Served,
    now: dt.datetime,
    *,
    transition: Transition,
    recheck_at: dt.datetime | None = None,
    retry: bool = False,
) -> Step[Refuse]:
    """Keep what is served and say why; look again at ``recheck_at``, or with
    backoff when ``retry`` (a failure of the environment, not of the input)."""
    message = f"not published: {reason}; {served.serving}"
    after = in_error(_without(record, "inconsistent_since"), kind, message, now)
    if retry:
        error = after.get("error")
        recheck_at = now + error_retry(error["attempts"] if error else 1)
    return Step(transition, Refuse(kind, message, recheck_at), after)


def internal_error(record: LineageRecord, error: str, served: Served, now: dt.datetime) -> Step[Refuse]:
    """A bug met while processing the lineage: in error, said with its traceback by the shell, retried."""
    message = f"internal error, not published: {error}; {served.serving}"
    after = in_error(record, "internal", message, now)
    failure = after.get("error")
    recheck_at = now + error_retry(failure["attempts"] if failure else 1)
    return Step(Transition.INTERNAL_ERROR, Refuse("internal", message, recheck_at), after)


# -- a pass: before the decision --------------------------------------------------------------


def look(seen: Look, now: dt.datetime) -> Step[Wait | Refuse | Decide | Repair | KeepServing]:
    """What follows from the input and the served set, before the policy is asked."""
    record, served, source = seen.record, seen.served, seen.source
    if isinstance(source, MidUpdate):
        return _mid_update(record, source, served, now)
    if isinstance(source, SourceRefused):
        return refuse(record, "rejected", source.reason, served, now, transition=Transition.SOURCE_REFUSED)
    record = _without(record, "inconsistent_since")
    pending = record.get("pending")
    if pending is not None and pending["source"] == source.digest and pending["config"] == seen.fingerprint:
        # A consumer rejected exactly this: publishing it again as if it were
        # new would only be rejected again. It waits for its retry or for new input.
        return Step(Transition.PENDING_WAITS, _waiting(record, pending, served), record)
    if not _still_valid(record, served, source.digest, seen.fingerprint, now):
        return Step(Transition.NEW_INPUT, Decide(), record)
    version = record.get("version")
    found = damage(record, served)
    if found is not None:
        return Step(Transition.DAMAGED, Repair(found, version), record)
    # Same input, same configuration, before any certificate met changes validity: the decision would be the same.
    changes_at = parse_iso(record.get("changes_at"))
    keep = KeepServing(version, f"unchanged, serving version {version}", changes_at, record.get("status") == "warning")
    return Step(Transition.UNCHANGED, keep, record)


def _mid_update(record: LineageRecord, source: MidUpdate, served: Served, now: dt.datetime) -> Step[Wait | Refuse]:
    since = parse_iso(record.get("inconsistent_since")) or now
    after = record.copy()
    after["inconsistent_since"] = now_iso(since)
    if now - since >= INCONSISTENT_GRACE:
        message = f"inconsistent for {int((now - since).total_seconds())} s: {source.reason}; {served.serving}"
        after = in_error(after, "inconsistent", message, now)
        return Step(Transition.MID_UPDATE_TOO_LONG, Refuse("inconsistent", message), after)
    message = f"{source.reason}; waiting for {source.client} to finish"
    error = record.get("error")
    if record.get("status") == "error" and error and error["kind"] != "inconsistent":
        # The error said is about input that is no longer there: say what is.
        after = in_error(after, "inconsistent", f"not published: {message}; {served.serving}", now)
    return Step(Transition.MID_UPDATE, Wait(message, since + INCONSISTENT_GRACE, mid_update=True), after)


def _waiting(record: LineageRecord, pending: PendingRecord, served: Served) -> Wait:
    """A rejected version waits: looked at again at its retry, or sooner when
    what is served changes validity (the consumers' step then judges whether to switch it in)."""
    moments = [parse_iso(pending["retry_at"]), parse_iso(record.get("changes_at"))]
    until = min((m for m in moments if m is not None), default=None)
    message = f"version {pending['version']} waits: {pending['reason']}; {served.serving}"
    return Wait(message, until, version=record.get("version"))


def _still_valid(record: LineageRecord, served: Served, digest: str, fingerprint: str, now: dt.datetime) -> bool:
    changes_at = parse_iso(record.get("changes_at"))
    return (
        record.get("source") == digest
        and record.get("config") == fingerprint
        and record.get("status") in ("ok", "warning")
        and record.get("version") is not None
        and record.get("version") == served.version
        and isinstance(record.get("files"), dict)
        and (changes_at is None or now < changes_at)
    )


def damage(record: LineageRecord, served: Served) -> str | None:
    """What is wrong with the served set on disk, compared with what was published."""
    if served.target is None:
        return f"{served.link}: {served.link_error}"
    if record.get("version") is None or not served.ours:
        return f"{served.link} points to {served.target}"
    if served.read_error is not None:
        return served.read_error
    digests = served.digests or {}
    for file, expected in record.get("files", {}).items():
        if digests.get(file) != expected:
            return f"{file} differs from what was published"
    return None


# -- a pass: the decision ----------------------------------------------------------------------


def judge(
    record: LineageRecord,
    decision: Decision,
    served_decision: Decision | None,
    store_count: int,
    served: Served,
    now: dt.datetime,
    *,
    digest: str,
    fingerprint: str,
    same_as_pending: bool,
) -> Step[Refuse | Wait | Publish]:
    """May ``decision`` replace what is served? ``served_decision`` is the policy's verdict,
    now, on the served chain (None: nothing served, or it cannot be read)."""
    leaf = decision.leaf
    if decision.has(WarningCode.LEAF_EXPIRED):
        reason = f"the leaf expired on {leaf.not_after:%Y-%m-%d %H:%M} UTC"
        return refuse(record, "rejected", reason, served, now, transition=Transition.LEAF_EXPIRED)
    if decision.has(WarningCode.LEAF_NOT_YET_VALID):
        # A CA's or the host's clock is off; the set becomes publishable then.
        reason = f"the leaf is not valid before {leaf.not_before:%Y-%m-%d %H:%M:%S} UTC"
        at = leaf.not_before
        return refuse(record, "rejected", reason, served, now, transition=Transition.LEAF_NOT_YET_VALID, recheck_at=at)
    fewer = _fewer_stores(decision, served_decision, store_count, served.version)
    if fewer is not None:
        reason, moment = fewer
        return refuse(record, "rejected", reason, served, now, transition=Transition.FEWER_STORES, recheck_at=moment)
    pending = record.get("pending")
    if pending is not None:
        after = record.copy()
        if same_as_pending:
            # New input, same published content (a chain difference the trim removes).
            adopted = pending.copy()
            adopted["source"], adopted["config"] = digest, fingerprint
            after["pending"] = adopted
            return Step(Transition.SAME_AS_PENDING, _waiting(after, adopted, served), after)
        after["pending"] = None  # new content supersedes what was rejected
        return Step(Transition.PUBLISH, Publish(), after)
    return Step(Transition.PUBLISH, Publish(), record)


def needs_served_decision(decision: Decision, store_count: int) -> bool:
    """Must the served chain be judged to know whether ``decision`` may replace it?"""
    return (
        not decision.has(WarningCode.LEAF_EXPIRED)
        and not decision.has(WarningCode.LEAF_NOT_YET_VALID)
        and len(decision.validating_stores) < store_count
    )


def _fewer_stores(
    decision: Decision, served_decision: Decision | None, store_count: int, version: int | None
) -> tuple[str, dt.datetime | None] | None:
    if len(decision.validating_stores) == store_count or served_decision is None:
        return None  # nothing can validate for more stores, or nothing to compare with
    if served_decision.has(WarningCode.LEAF_EXPIRED) or served_decision.has(WarningCode.LEAF_NOT_YET_VALID):
        return None
    lost = [store for store in served_decision.validating_stores if store not in decision.validating_stores]
    if not lost:
        return None
    served_for = ", ".join(served_decision.validating_stores)
    if not decision.validating_stores:
        reason = "no configured store can validate the new chain, "
        reason += f"while served version {version} validates for {served_for}"
    else:
        reason = (
            f"the new chain validates for {', '.join(decision.validating_stores)} only, "
            f"while served version {version} validates for {served_for}"
        )
    # Validity changes at known instants: the comparison may turn then.
    changes = [moment for moment in (decision.changes_at, served_decision.changes_at) if moment]
    return reason, min(changes, default=None)


# -- a pass: after the write ---------------------------------------------------------------------


def write_failed(record: LineageRecord, reason: str, served: Served, now: dt.datetime) -> Step[Refuse]:
    """A full disk or a read-only remount passes: look again later, with backoff."""
    return refuse(record, "write", reason, served, now, transition=Transition.WRITE_FAILED, retry=True)


def output_unsafe(record: LineageRecord, reason: str, served: Served, now: dt.datetime) -> Step[Refuse]:
    """A directory under the output tree is a link or not ours alone: written nowhere, said, not retried
    on a timer (the next event or pass looks again)."""
    return refuse(record, "write", reason, served, now, transition=Transition.OUTPUT_UNSAFE)


def unloadable(record: LineageRecord, reason: str, served: Served, now: dt.datetime) -> Step[Refuse]:
    return refuse(record, "rejected", reason, served, now, transition=Transition.UNLOADABLE)


def published(
    record: LineageRecord, written: int | None, served: Served, digest: str, fingerprint: str, now: dt.datetime
) -> Step[Published]:
    """The record's lifecycle fields once the publisher is done (what is served is described by the shell)."""
    after = record.copy()
    current = written if written is not None else served.version
    if written is not None and record.get("good") is None and record.get("version") is not None:
        # Recorded before consumers were checked (an older state.json): what was served until now is the fallback.
        after["good"] = record.get("version")
    if written is not None:
        after["published_at"] = now_iso(now)
    after["source"], after["config"] = digest, fingerprint
    transition = Transition.PUBLISHED if written is not None else Transition.CONTENT_UNCHANGED
    return Step(transition, Published(written, current), after)


def removed(record: LineageRecord, now: dt.datetime) -> Step[KeepServing] | None:
    """The lineage's directory vanished: what is published is kept, with a warning; None if said already."""
    if record.get("removed"):
        return None
    after = record.copy()
    after["removed"] = True
    after["status"] = "warning"
    after["message"] = "lineage removed from the live directory; its published copy is kept"
    after["since"] = now_iso(now)
    return Step(Transition.REMOVED, KeepServing(record.get("version"), after["message"]), after)


# -- the consumers' step ---------------------------------------------------------------------------


def pending_due(record: LineageRecord, now: dt.datetime) -> Step[Wait | SwitchIn] | None:
    """Is the version a consumer rejected due to be switched in again? None without one.

    Due at its retry, or sooner when the fallback served meanwhile changes
    validity (its leaf expiring must not leave it served)."""
    pending = record.get("pending")
    if pending is None:
        return None
    retry_at = parse_iso(pending["retry_at"])
    if not (_due(retry_at, now) or _due(parse_iso(record.get("changes_at")), now)):
        wait = Wait(f"version {pending['version']} waits", retry_at or now, version=record.get("version"))
        return Step(Transition.PENDING_NOT_DUE, wait, record)
    return Step(Transition.PENDING_DUE, SwitchIn(pending["version"], pending["attempts"] + 1), record)


def switch_in_failed(record: LineageRecord) -> LineageRecord:
    """The pending version is gone from disk: new input will be published afresh."""
    after = record.copy()
    after["pending"] = None
    return after


def attempt(record: LineageRecord, version: int) -> int:
    """The how-manieth failure of ``version`` a consumer's failure now would be."""
    previous = record.get("pending")
    return previous["attempts"] + 1 if previous is not None and previous["version"] == version else 1


def why_not_roll_back(
    good: Decision | None, new: Decision | None, version: int, to: int, until: dt.datetime
) -> str | None:
    """Why serving ``to`` (judged ``good``) instead of ``version`` (judged ``new``) until ``until`` would be worse.

    Never back to a leaf that has expired or will before the next try, is not
    yet valid, or to a chain that validates for fewer configured stores."""
    if good is None:
        return f"version {to} is no longer usable"
    leaf = good.leaf
    if good.has(WarningCode.LEAF_EXPIRED) or leaf.not_after <= until:
        return f"version {to}'s leaf expires on {leaf.not_after:%Y-%m-%d %H:%M:%S} UTC, before the next try"
    if good.has(WarningCode.LEAF_NOT_YET_VALID):
        return f"version {to}'s leaf is not valid before {leaf.not_before:%Y-%m-%d %H:%M} UTC"
    lost = [store for store in (new.validating_stores if new else ()) if store not in good.validating_stores]
    if lost:
        return f"version {to} does not validate for {', '.join(lost)}, version {version} does"
    return None


def roll_back(
    record: LineageRecord,
    version: int,
    good: int,
    consumer: str,
    summary: str,
    failure: str,
    now: dt.datetime,
    stagger: int = 0,
) -> Step[RollBack]:
    """A consumer fails with ``version`` and works with ``good``: the set is to blame.

    ``good`` stays served; ``version`` waits, pending, for its retry (the
    schedule of :data:`PENDING_RETRY`, ``stagger`` seconds apart so that the
    set that broke the consumer is told apart from those blamed with it)."""
    previous = record.get("pending")
    attempts = attempt(record, version)
    retry_at = now + pending_retry(attempts) + dt.timedelta(seconds=stagger)
    after = record.copy()
    after["pending"] = PendingRecord(
        version=version,
        source=record.get("source", ""),
        config=record.get("config", ""),
        consumer=consumer,
        reason=summary,
        since=previous["since"] if previous is not None and previous["version"] == version else now_iso(now),
        retry_at=now_iso(retry_at),
        attempts=attempts,
    )
    message = (
        f"{consumer} failed with version {version} ({failure}) and works with version {good}: "
        f"rolled back to version {good}, the last known good; retrying version {version} at {retry_at:%H:%M:%S} UTC"
    )
    after = in_error(after, "consumer", message, now)
    return Step(Transition.ROLL_BACK, RollBack(good, version, retry_at, message), after)


def roll_forward(record: LineageRecord, version: int) -> Step[SwitchIn]:
    """The consumer fails with the good version too: it is broken, not the set, which is served again."""
    return Step(Transition.ROLL_FORWARD, SwitchIn(version, attempt(record, version)), record)


def accepted(record: LineageRecord, current: int | None, everyone: bool) -> Step[KeepServing]:
    """The consumers' verdict on what is served, when none blamed it.

    A pending version that is served and kept (accepted, or a consumer is at
    fault) waits no more; what every consumer of the lineage accepts is its
    new last known good."""
    after = record.copy()
    pending = record.get("pending")
    message = ""
    if pending is not None and pending["version"] == current:
        after["pending"] = None
        message = f"version {current} is served again after attempt {pending['attempts'] + 1}"
    if everyone:
        after["good"] = current
    return Step(Transition.ACCEPTED, KeepServing(current, message), after)


def _due(moment: dt.datetime | None, now: dt.datetime) -> bool:
    return moment is not None and moment <= now
