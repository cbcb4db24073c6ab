"""One pass over lineages: observe each once, ask the lifecycle, apply its plan, save.

The rules (what is published, refused, waited out, repaired) are
:mod:`chainwatch.agent.lifecycle`'s; this module reads what they need
(:mod:`chainwatch.agent.observe`), runs the policy, hands the sets to the
publisher, writes the records the lifecycle returns and says what happened.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography import x509

from chainwatch.agent import lifecycle
from chainwatch.agent.client_record import clients_record
from chainwatch.agent.client_set import clients_identity
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.lifecycle import (
    INCONSISTENT_GRACE,
    Decide,
    Holds,
    KeepServing,
    Look,
    Plan,
    Refuse,
    Repair,
    Served,
    Step,
    Transition,
    Wait,
)
from chainwatch.agent.observe import observe_served, observe_source
from chainwatch.agent.publish import Publisher, WriteFailure, set_for
from chainwatch.agent.runtime_objects import build_runtime
from chainwatch.config import Config
from chainwatch.errors import ChainwatchError, InputError, OutputError, reason_of
from chainwatch.files.atomic import UnsafePathError
from chainwatch.policy.decision import Decision
from chainwatch.policy.report import decision_json, iso
from chainwatch.policy.trim import decide
from chainwatch.sources.lineage import Lineage, Rejected, parse_lineage
from chainwatch.state.records import (
    AgentRecord,
    DroppedCert,
    LineageRecord,
    ReasonValue,
    RoleValue,
    WarningValue,
)
from chainwatch.state.state_file import StateFile
from chainwatch.state.timestamps import now_iso
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import parse_certificates

__all__ = ["INCONSISTENT_GRACE", "Outcome", "Processor"]
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
    served: Served


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
    held_back: bool = False
    """A version a consumer rejected is held back until its retry (the lineage's ``pending`` record)."""

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
        self.judged_count = len(self.stores) + len(self.runtime.clients)
        """How many stores and clients each decision judges: a chain validating for all needs no comparison."""
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
            for item, written in self._publish(ready, now):
                try:
                    if isinstance(written, Exception) and not isinstance(written, WriteFailure):
                        raise written
                    outcomes[item.name] = self._finish(item, written, now)
                except Exception as error:  # noqa: BLE001 - as above
                    outcomes[item.name] = self._internal_error(item.name, error, now)
        return [outcomes[name] for name in names]

    def _publish(
        self, ready: list[_Ready], now: dt.datetime
    ) -> list[tuple[_Ready, int | WriteFailure | Exception | None]]:
        """Publish a chunk together. The publisher gives each lineage's failure as a value;
        a bug it raises is journaled as one, and each lineage is then published alone, so
        that one lineage's bug does not hold back the others (and is its own error)."""
        damaged, self._damaged = self._damaged, set()
        try:
            written = self._publish_some(ready, damaged)
            return [(item, written[item.name]) for item in ready]
        except Exception as error:  # noqa: BLE001 - isolated below, lineage by lineage
            trace = "".join(traceback.format_exception(error))
            message = f"internal error publishing {len(ready)} lineages together: {type(error).__name__}: {error}"
            self.journal.log(Event.ERROR, f"{message}; publishing each alone", traceback=trace)
        results: list[tuple[_Ready, int | WriteFailure | Exception | None]] = []
        for item in ready:
            try:
                results.append((item, self._publish_some([item], damaged)[item.name]))
            except Exception as error:  # noqa: BLE001 - this lineage's internal error
                results.append((item, error))
        return results

    def _publish_some(self, ready: list[_Ready], damaged: set[str]) -> dict[str, int | WriteFailure | None]:
        return self.publisher.publish_many(
            [(r.name, r.files, r.meta) for r in ready],
            again=damaged,
            keep={r.name: self._kept(r.name) for r in ready},
            served={r.name: r.served.files for r in ready},
        )

    def _kept(self, name: str) -> set[int]:
        """Versions that pruning must leave: the lineage's fallback."""
        good = self.state.lineage(name).get("good")
        return {good} if good is not None else set()

    def _internal_error(self, name: str, error: Exception, now: dt.datetime) -> Outcome:
        """A bug met while processing ``name``: said with its traceback, retried later."""
        served = Served(self.publisher.current_version(name), name, None)
        step = lifecycle.internal_error(self.state.lineage(name), f"{type(error).__name__}: {error}", served, now)
        self.keep(name, step.record)
        trace = "".join(traceback.format_exception(error))
        self.journal.log(Event.ERROR, step.plan.message, lineage=name, traceback=trace)
        return Outcome(name, Event.REJECTED, step.plan.message, recheck_at=step.plan.recheck_at)

    def keep(self, name: str, record: LineageRecord) -> None:
        """Write the lifecycle's next ``record`` for ``name``, in place: whoever holds the lineage's record sees it."""
        live = self.state.lineage(name)
        if live is not record:
            fields = cast(dict[str, Any], live)
            fields.clear()
            fields.update(record)

    def _prepare(self, name: str, now: dt.datetime) -> Outcome | _Ready:
        """Observe, ask the lifecycle, and run the policy when it says to decide."""
        self._greet(name)
        served = observe_served(self.publisher, name)
        source, content = observe_source(self.sources, name)
        if isinstance(source, Holds):
            refused = self._regroup(name, served, now)
            if refused is not None:
                return self._apply(name, refused)
        step = lifecycle.look(Look(source, served, self.state.lineage(name), self.fingerprint), now)
        plan = step.plan
        if isinstance(plan, Repair):
            self._damaged.add(name)
            self.journal.log(
                Event.ERROR,
                f"served version {plan.version} is damaged ({plan.damage}); publishing it again",
                lineage=name,
            )
        elif not isinstance(plan, Decide):
            return self._apply(name, step)
        self.keep(name, step.record)
        assert isinstance(source, Holds) and content is not None
        return self._decide(name, content, source.digest, served, now)

    def _greet(self, name: str) -> None:
        """Said once per lineage: state.json remembers it across restarts and upgrades."""
        known = self.state.has_lineage(name)
        record = self.state.lineage(name)
        if not known:
            self.journal.log(Event.LINEAGE_ADDED, f"new lineage, from {self.sources.where(name)}", lineage=name)
        elif record.pop("removed", None):
            self.journal.log(Event.LINEAGE_ADDED, f"back, from {self.sources.where(name)}", lineage=name)

    def _regroup(self, name: str, served: Served, now: dt.datetime) -> Step[Refuse] | None:
        """Apply key_group to the kept versions when it changed; a refusal when that fails."""
        record = self.state.lineage(name)
        if record.get("key_group", -1) == self.publisher.gid or not self.publisher.versions_of(name):
            return None
        try:
            self.publisher.regroup(name)
        except (OSError, ChainwatchError) as error:
            reason = f"cannot apply key_group to {self.publisher.versions / name}: {reason_of(error)}"
            return lifecycle.refuse(
                record, "write", reason, served, now, transition=Transition.WRITE_FAILED, retry=True
            )
        record["key_group"] = self.publisher.gid
        return None

    def _decide(
        self, name: str, content: dict[str, bytes], digest: str, served: Served, now: dt.datetime
    ) -> Outcome | _Ready:
        record = self.state.lineage(name)
        try:
            lineage = parse_lineage(self.config.live_dir, name, content)
        except Rejected as problem:
            return self._apply(name, self._refused(record, str(problem), served, now))
        try:
            decision = decide(
                lineage.certs, self.stores, now, self.policy, lineage.leaf_key, clients=self.runtime.clients
            )
        except InputError as problem:
            return self._apply(name, self._refused(record, f"{self.sources.where(name)}: {problem}", served, now))
        served_decision = None
        if served.files is not None and lifecycle.needs_served_decision(decision, self.judged_count):
            served_decision = self._judge_files(served.files, "published fullchain.pem", now)
        files = set_for(decision, lineage.privkey)
        pending = record.get("pending")
        same_as_pending = pending is not None and files == self.publisher.files_of(name, pending["version"])
        step = lifecycle.judge(
            record, decision, served_decision, self.judged_count, served, now,
            digest=digest, fingerprint=self.fingerprint, same_as_pending=same_as_pending,
        )  # fmt: skip
        if not isinstance(step.plan, lifecycle.Publish):
            return self._apply(name, step)
        self.keep(name, step.record)
        return _Ready(name, decision, files, self._meta(name, lineage, decision, now), digest, served)

    @staticmethod
    def _refused(record: LineageRecord, reason: str, served: Served, now: dt.datetime) -> Step[Refuse]:
        return lifecycle.refuse(record, "rejected", reason, served, now, transition=Transition.SOURCE_REFUSED)

    def _apply(self, name: str, step: Step[Plan]) -> Outcome:
        """Write the step's record and say what it means; for the plans that publish nothing."""
        self.keep(name, step.record)
        plan = step.plan
        if isinstance(plan, Wait) and plan.mid_update:
            self.journal.log(Event.INCONSISTENT, plan.message, lineage=name)
            return Outcome(name, Event.INCONSISTENT, plan.message, recheck_at=plan.until)
        if isinstance(plan, Wait):
            return Outcome(name, Event.UNCHANGED, plan.message, plan.version, plan.until, held_back=True)
        if isinstance(plan, KeepServing):
            return Outcome(name, Event.UNCHANGED, plan.message, plan.version, plan.recheck_at, warned=plan.warned)
        assert isinstance(plan, Refuse), plan
        if step.transition == Transition.MID_UPDATE_TOO_LONG:
            self.journal.log(Event.INCONSISTENT_TOO_LONG, plan.message, lineage=name)
            return Outcome(name, Event.INCONSISTENT, plan.message)
        self.journal.log(Event.REJECTED, plan.message, lineage=name)
        return Outcome(name, Event.REJECTED, plan.message, recheck_at=plan.recheck_at)

    def _finish(self, item: _Ready, written: int | WriteFailure | None, now: dt.datetime) -> Outcome:
        name, decision, record = item.name, item.decision, self.state.lineage(item.name)
        if isinstance(written, OSError):
            reason = f"cannot write {self.config.output_dir}: {written.strerror}"
            return self._apply(name, lifecycle.write_failed(record, reason, item.served, now))
        if isinstance(written, UnsafePathError):
            return self._apply(name, lifecycle.output_unsafe(record, str(written), item.served, now))
        if isinstance(written, Exception):
            reason = f"{self.sources.where(name)}: {written}"
            return self._apply(name, lifecycle.unloadable(record, reason, item.served, now))
        step = lifecycle.published(record, written, item.served, item.digest, self.fingerprint, now)
        current = step.plan.current
        record = step.record
        self._describe(record, decision, current, now)
        if written is None:
            event, message = Event.UNCHANGED, f"unchanged, serving version {current}"
        else:
            summary = ", ".join(f"{_name(v.cert)} ({v.reason})" for v in decision.dropped)
            event, message = (
                Event.PUBLISHED,
                f"published version {written}; " + (f"dropped {summary}" if summary else "nothing dropped"),
            )
            dropped = [v.cert.sha256 for v in decision.dropped]
            self.journal.log(event, message, lineage=name, dropped=dropped, version=written)
        record = self._status_judged(name, record, decision, now)
        record["files"] = {file: hashlib.sha256(data).hexdigest() for file, data in item.files.items()}
        # _prepare regrouped the kept versions; the new one was made for this group.
        record["key_group"] = self.publisher.gid
        record["changes_at"] = iso(decision.changes_at) if decision.changes_at else None
        self.keep(name, record)
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
        return None if files is None else self._judge_files(files, f"version {version} of {name}", self.clock())

    def _judge_files(self, files: Mapping[str, bytes], what: str, now: dt.datetime) -> Decision | None:
        try:
            certs = parse_certificates(files["fullchain.pem"], what)
            return decide(certs, self.stores, now, self.policy, clients=self.runtime.clients)
        except ChainwatchError:
            return None

    def rejudge(self, name: str) -> None:
        """The lineage's status from what it serves now (a consumer's verdict on it is over)."""
        version = self.publisher.current_version(name)
        decision = self.judge_version(name, version) if version is not None else None
        if decision is not None:
            self.keep(name, self._status_judged(name, self.state.lineage(name), decision, self.clock()))

    def serve(self, name: str, version: int, *, rejudge: bool = True) -> None:
        """Point ``live/NAME`` at an already published ``version`` (a rollback, a
        roll forward, a retry); the record then describes that version.

        Without ``rejudge`` its status stays as it is (in error until the
        consumers accept a version they rejected before)."""
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
        if rejudge:
            self.keep(name, self._status_judged(name, record, decision, now))

    def removed(self, name: str) -> None:
        """A lineage directory vanished: say so, keep what is published."""
        step = lifecycle.removed(self.state.lineage(name), self.clock())
        if step is None:
            return
        self.keep(name, step.record)
        self.journal.log(Event.LINEAGE_REMOVED, step.plan.message, lineage=name)

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

    def _status_judged(self, name: str, record: LineageRecord, decision: Decision, now: dt.datetime) -> LineageRecord:
        """``record`` ok or warning as ``decision`` says; a warning that begins or changes is said
        at warning in the journal too (as `status` calls it), not at every pass."""
        after, warns = lifecycle.serving_status(record, decision, now)
        if warns:
            version = after.get("version")
            self.journal.log(
                Event.SERVED_WITH_WARNINGS,
                f"version {version} is served with warnings: {after['message']}",
                lineage=name,
                version=version,
                warnings=" ".join(str(w.code) for w in decision.warnings),
            )
        return after


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
