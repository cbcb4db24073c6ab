"""One lineage, one pass: read it, decide, publish or refuse, record, log.

The same code serves the agent (``chainwatch run``) and one-shot passes
(``chainwatch sync``, certbot deploy hooks), so both behave alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import os
import stat
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from cryptography import x509

from chainwatch.agent.client_record import clients_record
from chainwatch.agent.client_set import clients_identity
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.publish import Publisher, set_for
from chainwatch.agent.runtime_objects import build_runtime
from chainwatch.config import Config
from chainwatch.errors import ChainwatchError, InputError, OutputError, reason_of
from chainwatch.policy.decision import Decision, WarningCode
from chainwatch.policy.report import decision_json, iso
from chainwatch.policy.trim import decide
from chainwatch.sources.lineage import KINDS, Inconsistent, Lineage, Rejected, parse_lineage
from chainwatch.state.records import (
    AgentRecord,
    DroppedCert,
    LineageErrorKind,
    LineageRecord,
    PendingRecord,
    ReasonValue,
    RoleValue,
    WarningValue,
    backoff,
    note_error,
)
from chainwatch.state.state_file import StateFile
from chainwatch.state.timestamps import now_iso, parse_iso
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.tls_load import Unloadable

__all__ = ["INCONSISTENT_GRACE", "Outcome", "Processor", "record_error"]

# certbot switches a lineage in milliseconds; a minute of inconsistency means
# it died half way (or someone is editing by hand).
INCONSISTENT_GRACE = dt.timedelta(seconds=60)
_CHUNK = 256

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class _Ready:
    """A lineage decided and ready to publish."""

    name: str
    decision: Decision
    files: dict[str, bytes]
    meta: dict[str, Any]
    digest: str


@dataclass(frozen=True)
class Outcome:
    """What processing one lineage did."""

    lineage: str
    event: Event
    message: str
    version: int | None = None
    recheck_at: dt.datetime | None = None
    """When to look again even without an event (time-dependent decisions,
    the end of the grace for an inconsistent lineage)."""
    warned: bool = False
    """The served chain has warnings (incomplete for a store, expiring soon...)."""
    pending: bool = False
    """A version a consumer rejected waits for its retry."""

    @property
    def published(self) -> bool:
        return self.event == Event.PUBLISHED


# How often a waiting agent looks at the lock again, and pings the watchdog.
_LOCK_POLL_S = 0.25


class Processor:
    """Holds the configuration, stores, publisher and state for passes over lineages."""

    def __init__(self, config: Config, journal: Journal, clock: Clock = _utcnow) -> None:
        self.config = config
        self.journal = journal
        self.clock = clock
        self.waiting: Callable[[bool], None] | None = None
        """Called, with True the first time, while :meth:`exclusive` waits for the lock:
        the agent says so to systemd and feeds its watchdog."""
        self.alive: Callable[[], None] = lambda: None
        """Called before each lineage of a batch: a pass over 10,000 lineages
        outlasts systemd's watchdog and start timeout unless the agent speaks."""
        self.runtime = build_runtime(config)
        """What the configuration names, built as ``check-config`` builds it."""
        self.stores = self.runtime.stores
        self.policy = config.trim_policy()
        self.sources = self.runtime.sources
        self.publisher = Publisher(config.output_dir, self.runtime.group)
        try:
            self.publisher.prepare()
        except OSError as error:
            raise OutputError(
                f"{config.output_dir}: cannot use it as the output directory ({reason_of(error)})"
            ) from None
        self.state = StateFile(config.output_dir / "state.json")
        """Loaded under :meth:`exclusive` only: loading may move an unusable file aside."""
        self.fingerprint = hashlib.sha256(
            repr(
                (
                    [(s.name, sorted(a.sha256 for a in s.anchors)) for s in self.stores],
                    str(self.policy.mode),
                    self.policy.distrust.entries,
                    config.horizon_days,
                    (str(self.policy.client.path_building), self.policy.client.anchor_expiry),
                    clients_identity(self.runtime.clients),
                )
            ).encode()
        ).hexdigest()
        """What besides the lineage the decision depends on: a change re-decides everything."""
        self._damaged: set[str] = set()
        """Lineages whose served set must be written again even if its content is unchanged."""
        self.unsaved = False
        """The last save failed: what `status` reads is behind; the agent retries."""
        self.agent_record: AgentRecord = {}
        """Set by the agent: its own entry in state.json, re-applied on every save."""

    # -- passes ---------------------------------------------------------------------------

    def process(self, name: str) -> Outcome:
        """Bring lineage ``name``'s published set up to date, or say why not."""
        return self.process_batch([name])[0]

    def process_batch(self, names: Sequence[str]) -> list[Outcome]:
        """Process several lineages and publish what changed in one flush.

        Call inside :meth:`exclusive`, which saves the state when it ends.
        """
        now = self.clock()
        outcomes: dict[str, Outcome] = {}
        # Chunks bound the memory a mass renewal needs (decisions and file
        # contents are held until their flush) while keeping flushes few.
        for start in range(0, len(names), _CHUNK):
            ready: list[_Ready] = []
            for name in names[start : start + _CHUNK]:
                self.alive()
                try:
                    result = self._prepare(name, now)
                except Exception as error:  # noqa: BLE001 - one lineage's bug must not stop the others
                    result = self._internal_error(name, error, now)
                if isinstance(result, Outcome):
                    outcomes[name] = result
                else:
                    ready.append(result)
            for item, written in self._publish(ready):
                try:
                    outcomes[item.name] = self._finish(item, written, now)
                except Exception as error:  # noqa: BLE001 - as above
                    outcomes[item.name] = self._internal_error(item.name, error, now)
        return [outcomes[name] for name in names]

    def _publish(self, ready: list[_Ready]) -> list[tuple[_Ready, int | Exception | None]]:
        """Publish a chunk together; if that fails as a whole, each lineage alone, so
        that one lineage's damaged output directory does not hold back the others."""
        damaged, self._damaged = self._damaged, set()
        try:
            written = self.publisher.publish_many(
                [(r.name, r.files, r.meta) for r in ready], again=damaged, keep=self._kept(r.name for r in ready)
            )
            return [(item, written[item.name]) for item in ready]
        except Exception:  # noqa: BLE001 - isolated below, lineage by lineage
            pass
        results: list[tuple[_Ready, int | Exception | None]] = []
        for item in ready:
            try:
                one = self.publisher.publish_many(
                    [(item.name, item.files, item.meta)], again=damaged, keep=self._kept([item.name])
                )
                results.append((item, one[item.name]))
            except Exception as error:  # noqa: BLE001 - recorded on this lineage
                results.append((item, error))
        return results

    def _kept(self, names: Iterable[str]) -> dict[str, set[int]]:
        """Versions that pruning must leave: each lineage's fallback."""
        kept: dict[str, set[int]] = {}
        for name in names:
            good = self.state.lineage(name).get("good")
            kept[name] = {good} if good is not None else set()
        return kept

    def _internal_error(self, name: str, error: Exception, now: dt.datetime) -> Outcome:
        """A bug met while processing ``name``: said with its traceback, retried later."""
        record = self.state.lineage(name)
        message = f"internal error, not published: {type(error).__name__}: {error}; {self._serving(name)}"
        record_error(record, "internal", message, now)
        trace = "".join(traceback.format_exception(error))
        self.journal.log(Event.ERROR, message, lineage=name, traceback=trace)
        return Outcome(name, Event.REJECTED, message, recheck_at=now + backoff(record.get("error")))

    def _prepare(self, name: str, now: dt.datetime) -> Outcome | _Ready:
        # Said once per lineage: state.json remembers it across restarts and upgrades.
        known = self.state.has_lineage(name)
        record = self.state.lineage(name)
        if not known:
            self.journal.log(Event.LINEAGE_ADDED, f"new lineage, from {self.sources.where(name)}", lineage=name)
        elif record.pop("removed", None):
            self.journal.log(Event.LINEAGE_ADDED, f"back, from {self.sources.where(name)}", lineage=name)
        try:
            content = self.sources.read(name)
        except Inconsistent as problem:
            return self._inconsistent(name, record, str(problem), now)
        except Rejected as problem:
            return self._reject(name, record, str(problem), now)
        record.pop("inconsistent_since", None)
        if record.get("key_group", -1) != self.publisher.gid and self.publisher.versions_of(name):
            try:
                self.publisher.regroup(name)
            except (OSError, ChainwatchError) as error:
                reason = f"cannot apply key_group to {self.publisher.versions / name}: {reason_of(error)}"
                return self._reject(name, record, reason, now, kind="write", retry=True)
            record["key_group"] = self.publisher.gid
        digest = hashlib.sha256(b"".join(content[kind] for kind in KINDS)).hexdigest()
        pending = record.get("pending")
        if pending is not None and pending["source"] == digest and pending["config"] == self.fingerprint:
            # A consumer rejected exactly this: publishing it again as if it
            # were new would only be rejected again. It waits for its retry
            # (the consumers' step switches it in) or for new input.
            return self._waiting(name, record, pending)
        still_valid = self._still_valid(name, record, digest, now)
        damage = self._damage(name, record) if still_valid else None
        if damage:
            self._damaged.add(name)
            version = record.get("version")
            self.journal.log(
                Event.ERROR, f"served version {version} is damaged ({damage}); publishing it again", lineage=name
            )
        elif still_valid:
            # Same input, same configuration, before any certificate met
            # changes validity: the decision would be the same.
            version = record.get("version")
            changes_at = parse_iso(record.get("changes_at"))
            return Outcome(
                name, Event.UNCHANGED, f"unchanged, serving version {version}", version, changes_at,
                warned=record.get("status") == "warning",
            )  # fmt: skip
        try:
            lineage = parse_lineage(self.config.live_dir, name, content)
        except Rejected as problem:
            return self._reject(name, record, str(problem), now)
        try:
            decision = decide(
                lineage.certs, self.stores, now, self.policy, lineage.leaf_key, clients=self.runtime.clients
            )
        except InputError as problem:
            return self._reject(name, record, f"{self.sources.where(name)}: {problem}", now)
        refusal = self._refusal(name, decision, now)
        if refusal:
            reason, recheck_at = refusal
            return self._reject(name, record, reason, now, recheck_at=recheck_at)
        files = set_for(decision, lineage.privkey)
        if pending is not None:
            if files == self.publisher.files_of(name, pending["version"]):
                # New input, same published content (a chain difference the trim removes).
                pending["source"], pending["config"] = digest, self.fingerprint
                return self._waiting(name, record, pending)
            record["pending"] = None  # new content supersedes what was rejected
        return _Ready(name, decision, files, self._meta(name, lineage, decision, now), digest)

    def _waiting(self, name: str, record: LineageRecord, pending: PendingRecord) -> Outcome:
        """The outcome for a lineage whose rejected version waits for its retry.

        Looked at again at the retry, or sooner when what is served changes
        validity (the consumers' step then judges whether to switch it in).
        """
        moments = [parse_iso(pending["retry_at"]), parse_iso(record.get("changes_at"))]
        recheck_at = min((m for m in moments if m is not None), default=None)
        message = f"version {pending['version']} waits: {pending['reason']}; {self._serving(name)}"
        return Outcome(name, Event.UNCHANGED, message, record.get("version"), recheck_at, pending=True)

    def _still_valid(self, name: str, record: LineageRecord, digest: str, now: dt.datetime) -> bool:
        changes_at = parse_iso(record.get("changes_at"))
        return (
            record.get("source") == digest
            and record.get("config") == self.fingerprint
            and record.get("status") in ("ok", "warning")
            and record.get("version") is not None
            and record.get("version") == self.publisher.current_version(name)
            and isinstance(record.get("files"), dict)
            and (changes_at is None or now < changes_at)
        )

    def _damage(self, name: str, record: LineageRecord) -> str | None:
        """What is wrong with the served set on disk, compared with what was published."""
        version = record.get("version")
        link = self.publisher.live / name
        try:
            target = os.readlink(link)
        except OSError as error:
            return f"{link}: {error.strerror}"
        if version is None or target != f"../versions/{name}/{version}":
            return f"{link} points to {target}"
        recorded = record.get("files", {})
        try:
            files = self.publisher.read_version(name, version, recorded)
        except OSError as error:
            return f"{error.filename}: {error.strerror}" if error.strerror else str(error)
        for file, expected in recorded.items():
            if hashlib.sha256(files[file]).hexdigest() != expected:
                return f"{file} differs from what was published"
        return None

    def _finish(self, item: _Ready, written: int | Exception | None, now: dt.datetime) -> Outcome:
        name, decision = item.name, item.decision
        record = self.state.lineage(name)
        if isinstance(written, OSError):
            # A full disk or a read-only remount passes: look again later.
            reason = f"cannot write {self.config.output_dir}: {written.strerror}"
            return self._reject(name, record, reason, now, kind="write", retry=True)
        if isinstance(written, Unloadable):
            return self._reject(name, record, f"{self.sources.where(name)}: {written}", now)
        if isinstance(written, Exception):
            return self._reject(name, record, str(written), now, kind="write")
        served_before = record.get("version")
        current = self.publisher.current_version(name)
        self._describe(record, decision, current, now)
        if written is not None and record.get("good") is None and served_before is not None:
            # Recorded before consumers were checked (an older state.json):
            # what was served until now is the fallback.
            record["good"] = served_before
        if written is None:
            event, message = Event.UNCHANGED, f"unchanged, serving version {current}"
        else:
            record["published_at"] = now_iso(now)
            summary = ", ".join(f"{_name(v.cert)} ({v.reason})" for v in decision.dropped)
            event, message = (
                Event.PUBLISHED,
                f"published version {written}; " + (f"dropped {summary}" if summary else "nothing dropped"),
            )
            dropped = [v.cert.sha256 for v in decision.dropped]
            self.journal.log(event, message, lineage=name, dropped=dropped, version=written)
        self._settle_status(name, record, decision, now)
        record["files"] = {file: hashlib.sha256(data).hexdigest() for file, data in item.files.items()}
        # _prepare regrouped the kept versions; the new one was made for this group.
        record["key_group"] = self.publisher.gid
        record["changes_at"] = iso(decision.changes_at) if decision.changes_at else None
        record["source"] = item.digest
        record["config"] = self.fingerprint
        return Outcome(name, event, message, current, decision.changes_at, warned=bool(decision.warnings))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the output directory's lock and see the latest state.

        The agent and a `chainwatch sync` from a deploy hook may run at once;
        each pass reads, changes and writes state.json under this lock.
        """
        # Recreated if someone removed them while the agent runs.
        self.publisher.prepare()
        fd = open_lock_file(self.config.output_dir / "lock")
        try:
            self._lock(fd)
            problem = self.state.load()
            with self.journal.held():
                if problem:
                    self.journal.log(Event.RECONCILING, problem)
                try:
                    yield
                finally:
                    # Whatever a pass did before it failed (a link already
                    # switched, a consumer's failure) must not be forgotten.
                    self.save()
        finally:
            os.close(fd)

    def _lock(self, fd: int) -> None:
        """Take the lock; a `sync` may hold it through its consumers' reloads (reload_timeout_s
        each), longer than systemd's watchdog lets the agent be silent: say so meanwhile."""
        if self.waiting is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        first = True
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                self.waiting(first)
                first = False
                time.sleep(_LOCK_POLL_S)

    def checkpoint(self) -> None:
        """Inside :meth:`exclusive`: save state now, then log what led to it.

        For work that follows in the same pass and takes time (reloading
        and probing consumers): `status` shows the new state meanwhile.
        """
        self.save()
        self.journal.release()

    def judge_version(self, name: str, version: int) -> Decision | None:
        """The policy's verdict, now, on published ``version`` of ``name``; None if it is unusable."""
        files = self.publisher.files_of(name, version)
        if files is None:
            return None
        try:
            certs = parse_certificates(files["fullchain.pem"], f"version {version} of {name}")
            return decide(certs, self.stores, self.clock(), self.policy, clients=self.runtime.clients)
        except ChainwatchError:
            return None

    def may_fall_back(self, name: str, version: int, to: int, until: dt.datetime) -> str | None:
        """Why serving ``to`` instead of ``version`` until ``until`` would be worse, or None."""
        old, new = self.judge_version(name, to), self.judge_version(name, version)
        if old is None:
            return f"version {to} is no longer usable"
        leaf = old.leaf
        if old.has(WarningCode.LEAF_EXPIRED) or leaf.not_after <= until:
            return f"version {to}'s leaf expires on {leaf.not_after:%Y-%m-%d %H:%M:%S} UTC, before the next try"
        if old.has(WarningCode.LEAF_NOT_YET_VALID):
            return f"version {to}'s leaf is not valid before {leaf.not_before:%Y-%m-%d %H:%M} UTC"
        lost = [store for store in (new.validating_stores if new else ()) if store not in old.validating_stores]
        if lost:
            return f"version {to} does not validate for {', '.join(lost)}, version {version} does"
        return None

    def resettle(self, name: str) -> None:
        """The lineage's status from what it serves now (a consumer's verdict on it is over)."""
        version = self.publisher.current_version(name)
        decision = self.judge_version(name, version) if version is not None else None
        if decision is not None:
            self._settle_status(name, self.state.lineage(name), decision, self.clock())

    def serve(self, name: str, version: int) -> None:
        """Point ``live/NAME`` at an already published ``version`` (a rollback, a
        roll forward, a retry); the record then describes that version."""
        decision = self.judge_version(name, version)
        files = self.publisher.files_of(name, version)
        if decision is None or files is None:
            raise OutputError(f"version {version} of {name} is no longer usable")
        self.publisher.switch(name, version)
        record = self.state.lineage(name)
        meta = self.publisher.meta_of(name, version) or {}
        now = self.clock()
        self._describe(record, decision, version, now)
        # Judged again from the trimmed set, nothing is dropped: what was
        # dropped from certbot's chain is in the version's decision.json.
        if isinstance(meta.get("dropped_as_recorded"), list):
            record["dropped"] = meta["dropped_as_recorded"]
        record["published_at"] = str(meta.get("published_at") or now_iso(now))
        record["files"] = {file: hashlib.sha256(data).hexdigest() for file, data in files.items()}
        record["changes_at"] = iso(decision.changes_at) if decision.changes_at else None
        self._settle_status(name, record, decision, now)

    def removed(self, name: str) -> None:
        """A lineage directory vanished: say so, keep what is published."""
        record = self.state.lineage(name)
        if record.get("removed"):
            return
        record["removed"] = True
        record["status"] = "warning"
        record["message"] = "lineage removed from the live directory; its published copy is kept"
        record["since"] = now_iso(self.clock())
        self.journal.log(Event.LINEAGE_REMOVED, record["message"], lineage=name)

    def save(self) -> None:
        if self.agent_record:
            cast("dict[str, object]", self.state.agent).clear()  # a TypedDict has no clear()
            self.state.agent.update(self.agent_record)
            self.state.agent["heartbeat"] = now_iso(self.clock())
        try:
            self.state.save()
            self.unsaved = False
        except OSError as error:
            self.unsaved = True
            self.journal.log(Event.ERROR, f"cannot write {self.state.path}: {error.strerror}; retrying")

    # -- decisions about decisions -----------------------------------------------------------

    def _refusal(self, name: str, decision: Decision, now: dt.datetime) -> tuple[str, dt.datetime | None] | None:
        """Why ``decision`` must not replace what is served, and when to look again."""
        leaf = decision.leaf
        if decision.has(WarningCode.LEAF_EXPIRED):
            return f"the leaf expired on {leaf.not_after:%Y-%m-%d %H:%M} UTC", None
        if decision.has(WarningCode.LEAF_NOT_YET_VALID):
            # A CA's or the host's clock is off; the set becomes publishable then.
            return f"the leaf is not valid before {leaf.not_before:%Y-%m-%d %H:%M:%S} UTC", leaf.not_before
        if len(decision.validating_stores) == len(self.stores) + len(self.runtime.clients):
            return None  # nothing can validate for more stores: no need to judge the served set
        served = self.publisher.files_of(name)
        if served is None:
            return None
        try:
            served_certs = parse_certificates(served["fullchain.pem"], "published fullchain.pem")
            served_decision = decide(served_certs, self.stores, now, self.policy, clients=self.runtime.clients)
        except ChainwatchError:
            return None
        if served_decision.has(WarningCode.LEAF_EXPIRED) or served_decision.has(WarningCode.LEAF_NOT_YET_VALID):
            return None
        lost = [store for store in served_decision.validating_stores if store not in decision.validating_stores]
        if not lost:
            return None
        version = self.publisher.current_version(name)
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

    def _meta(self, name: str, lineage: Lineage, decision: Decision, now: dt.datetime) -> dict[str, Any]:
        return {
            "lineage": name,
            "published_at": now_iso(now),
            "source_fullchain_sha256": hashlib.sha256(lineage.fullchain).hexdigest(),
            "mode": str(self.policy.mode),
            "stores": list(decision.stores),
            **decision_json(decision),
            "dropped_as_recorded": _dropped(decision),
        }

    # -- the record in state.json ------------------------------------------------------------

    def _describe(self, record: LineageRecord, decision: Decision, version: int | None, now: dt.datetime) -> None:
        leaf = decision.leaf
        record["version"] = version
        record["leaf"] = {
            "subject": leaf.subject,
            "short": leaf.short_subject,
            "names": _dns_names(decision),
            "not_before": iso(leaf.not_before),
            "not_after": iso(leaf.not_after),
            "sha256": leaf.sha256,
        }
        record["served"] = [
            {
                "short": c.short_subject,
                "sha256": c.sha256,
                "role": cast("RoleValue", str(decision.role_of(c))),
                "not_after": iso(c.not_after),
            }
            for c in decision.chain
        ]
        record["dropped"] = _dropped(decision)
        record["warnings"] = [
            {"code": cast("WarningValue", str(w.code)), "message": w.message} for w in decision.warnings
        ]
        record["validating_stores"] = list(decision.validating_stores)
        record["clients"] = clients_record(decision, self.stores, self.runtime.clients, self.policy, now)
        record.setdefault("published_at", now_iso(now))

    def _settle_status(self, name: str, record: LineageRecord, decision: Decision, now: dt.datetime) -> None:
        status: Literal["ok", "warning"] = "warning" if decision.warnings else "ok"
        message = "; ".join(w.message for w in decision.warnings) or "serving the sanitized chain"
        if record.get("status") != status or record.get("message") != message:
            record["since"] = now_iso(now)
            if status == "warning":
                # What `status` now calls a warning, the journal says at warning
                # too: when it begins or changes, not at every pass.
                version = record.get("version")
                self.journal.log(
                    Event.SERVED_WITH_WARNINGS,
                    f"version {version} is served with warnings: {message}",
                    lineage=name,
                    version=version,
                    warnings=" ".join(str(w.code) for w in decision.warnings),
                )
        record["status"], record["message"], record["error"] = status, message, None

    def _inconsistent(self, name: str, record: LineageRecord, reason: str, now: dt.datetime) -> Outcome:
        since = parse_iso(record.get("inconsistent_since")) or now
        record["inconsistent_since"] = now_iso(since)
        overdue = now - since >= INCONSISTENT_GRACE
        serving = self._serving(name)
        if overdue:
            message = f"inconsistent for {int((now - since).total_seconds())} s: {reason}; {serving}"
            record_error(record, "inconsistent", message, now)
            self.journal.log(Event.INCONSISTENT_TOO_LONG, message, lineage=name)
            recheck = None
        else:
            message = f"{reason}; waiting for {self.sources.client(name)} to finish"
            self.journal.log(Event.INCONSISTENT, message, lineage=name)
            recheck = since + INCONSISTENT_GRACE
            error = record.get("error")
            if record.get("status") == "error" and error and error["kind"] != "inconsistent":
                # The error said is about input that is no longer there: say what is.
                record_error(record, "inconsistent", f"not published: {message}; {serving}", now)
        return Outcome(name, Event.INCONSISTENT, message, recheck_at=recheck)

    def _reject(
        self,
        name: str,
        record: LineageRecord,
        reason: str,
        now: dt.datetime,
        kind: LineageErrorKind = "rejected",
        *,
        recheck_at: dt.datetime | None = None,
        retry: bool = False,
    ) -> Outcome:
        """Keep what is served and say why; look again at ``recheck_at``, or with
        backoff when ``retry`` (a failure of the environment, not of the input)."""
        record.pop("inconsistent_since", None)
        message = f"not published: {reason}; {self._serving(name)}"
        record_error(record, kind, message, now)
        self.journal.log(Event.REJECTED, message, lineage=name)
        if retry:
            recheck_at = now + backoff(record.get("error"))
        return Outcome(name, Event.REJECTED, message, recheck_at=recheck_at)

    def _serving(self, name: str) -> str:
        version = self.publisher.current_version(name)
        return f"serving version {version}" if version is not None else "nothing published yet"


def open_lock_file(path: Path) -> int:
    """Open (creating) the lock file ``path``; whatever else is there is moved aside first."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno not in (errno.EISDIR, errno.ELOOP, errno.ENXIO):
            raise
        fd = -1
    if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    if fd >= 0:
        os.close(fd)
    # A directory, link, socket or FIFO in our own directory: damage, not a lock.
    os.rename(path, path.with_name(f"{path.name}.corrupt-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"))
    return os.open(path, flags | os.O_EXCL, 0o600)


def record_error(record: LineageRecord, kind: LineageErrorKind, message: str, now: dt.datetime) -> None:
    """Put lineage ``record`` in error: ``since`` is when its status became an error,
    the error's own ``since`` when this kind of error began."""
    note_error(record, kind, message, now)
    if record.get("status") != "error":
        record["since"] = now_iso(now)
    record["status"], record["message"] = "error", message


def _dropped(decision: Decision) -> list[DroppedCert]:
    return [
        DroppedCert(
            short=_name(v.cert), sha256=v.cert.sha256, reason=cast("ReasonValue", str(v.reason)), detail=v.detail
        )
        for v in decision.dropped
    ]


def _name(cert: Cert) -> str:
    """ "R3", or "ISRG Root X1 ← DST Root CA X3" where the issuer is not itself."""
    return cert.short_subject if cert.names_itself else f"{cert.short_subject} ← {cert.short_issuer}"


def _dns_names(decision: Decision) -> list[str]:
    try:
        names = decision.leaf.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in names.value.get_values_for_type(x509.DNSName)]
