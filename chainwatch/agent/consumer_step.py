"""After a batch is published: reload each affected consumer once, prove what it
serves, and decide whom to blame when that fails.

A consumer failing with a new set is not yet a verdict on the set. The set is
blamed only when switching back to the lineage's last known good version makes
the consumer work again; it then waits, not served, for its retry or for new
input. When the consumer fails with the good version too, the consumer is
broken, not the set: the new set is switched in again and kept, and the
consumer is in error, retried with backoff. An endpoint that cannot be reached
at all (refused, timeout, failed handshake) is the consumer's error and never a
reason to roll back. Nor is an endpoint that, after a reload that said it
succeeded, still serves exactly what it served before: the reload did not take
(a server whose configuration no longer loads keeps what it had, whatever the
files hold), so the consumer is in error with a hint and the others keep the
new set.

Reloads and probes run in worker threads while the calling thread keeps the
systemd watchdog fed; probes run concurrently, bounded by one deadline a round,
and all the rounds of one step (new sets, back, forward) by 15 seconds.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar, cast

from chainwatch.agent import lifecycle
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.lifecycle import SwitchIn
from chainwatch.agent.reconcile import Outcome, Processor
from chainwatch.config import ConsumerConfig
from chainwatch.consumers.checks import (
    UNKNOWN_CHAIN_HINTS,
    Check,
    ProbeReport,
    ProbeVerdict,
    affected,
    not_taken_message,
)
from chainwatch.consumers.probe import Endpoint, ProbeError, fetch_chain
from chainwatch.consumers.reload import ReloadResult, Result, reload_consumer
from chainwatch.errors import ChainwatchError, reason_of
from chainwatch.state.records import ConsumerRecord, ReloadRecord, ReloadResultValue, clear_error, note_error
from chainwatch.state.timestamps import now_iso, parse_iso
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import parse_certificates

__all__ = ["ConsumerStep", "classify_served"]

# How long, a round, consumers may take to serve what was just switched in.
PROBE_PATIENCE_S = 5.0
# All probing of one after-batch step, whatever the names, endpoints and switches.
STEP_PROBING_S = 15.0
# No handshake is started with less time than this left: it would fail for want of time.
_SHORTEST_HANDSHAKE_S = 1.0
_PROBE_INTERVAL_S = 0.25
PROBE_WORKERS = 16
# The watchdog is fed at least this often while a reload or probes run.
_KEEPALIVE_S = 1.0
# A look at a consumer with nothing new to load: one handshake or two, not a round's patience.
_GLANCE_S = 2 * _SHORTEST_HANDSHAKE_S

Reloader = Callable[[ConsumerConfig], ReloadResult]
Keepalive = Callable[[], None]
_T = TypeVar("_T")


def _nothing() -> None:
    pass


PublishedChains = dict[str, list[tuple[int, list[Cert]]]]
"""lineage -> its kept versions' chains, newest first: read once a step, whatever the probes."""


def published_chains(processor: Processor, lineage: str, known: PublishedChains) -> list[tuple[int, list[Cert]]]:
    """The chains of ``lineage``'s kept versions (the unreadable left out), read once into ``known``."""
    chains = known.get(lineage)
    if chains is None:
        publisher = processor.publisher
        chains = []
        for version in reversed(publisher.versions_of(lineage)):
            files = publisher.files_of(lineage, version)
            if files is None:
                continue
            try:
                chains.append((version, parse_certificates(files["fullchain.pem"], "published")))
            except ChainwatchError:
                continue
        known[lineage] = chains
    return chains


def classify_served(
    processor: Processor,
    lineage: str,
    served: list[Cert],
    consumer: str,
    endpoint: str,
    known: PublishedChains | None = None,
) -> tuple[ProbeVerdict, str, int | None]:
    """Which published set is ``served``? (verdict, message, version of ``lineage``)"""
    current = processor.publisher.current_version(lineage)
    for version, published in published_chains(processor, lineage, {} if known is None else known):
        if published == served:
            if version == current:
                return ProbeVerdict.SERVES, f"{consumer} on {endpoint} serves version {version} of {lineage}", version
            message = f"{consumer} on {endpoint} serves version {version} of {lineage}, version {current} is published"
            return ProbeVerdict.STALE, message, version
    if served:
        leaf = served[0].sha256
        for other in processor.state.names():
            if other != lineage and (processor.state.lineage(other).get("leaf") or {}).get("sha256") == leaf:
                message = (
                    f"{consumer} on {endpoint} answers with the chain of {other}: "
                    f"it does not serve {lineage}'s names there"
                )
                return ProbeVerdict.OTHER_LINEAGE, message, None
    hint = UNKNOWN_CHAIN_HINTS.get(consumer, "check which files it is configured to serve")
    message = f"{consumer} on {endpoint} serves a chain chainwatch never published for {lineage}: {hint}"
    return ProbeVerdict.UNKNOWN, message, None


def _probes_moved(endpoints: tuple[Endpoint, ...], record: ConsumerRecord) -> bool:
    """Was the consumer last probed on other endpoints than ``endpoints``, its own now (a configuration change)?"""
    if "last_reload" not in record:
        return False  # never checked: its first renewal will
    configured = {str(endpoint) for endpoint in endpoints}
    return {probe["endpoint"] for probe in record.get("probes", [])} != configured


class ConsumerStep:
    """The agent's and ``sync``'s after-batch step."""

    def __init__(
        self,
        reloader: Reloader = reload_consumer,
        clock: Callable[[], dt.datetime] | None = None,
        fetch: Callable[[Endpoint, str | None, float], list[Cert]] = fetch_chain,
    ) -> None:
        self.reloader = reloader
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.fetch = fetch
        self._processor: Processor | None = None

    def first_look(self, processor: Processor) -> bool:
        """Is this the first step under ``processor``?

        The agent makes a new one when it starts and at each reload of its
        configuration, and ``sync`` one a run: the moments when every consumer
        in error or skipped, or probed on endpoints no longer configured, is
        looked at again at once rather than at its next retry.
        """
        first = processor is not self._processor
        self._processor = processor
        return first

    def __call__(
        self, processor: Processor, outcomes: list[Outcome], keepalive: Keepalive = _nothing
    ) -> dict[str, dt.datetime]:
        """Reload, probe, blame; returns lineage -> when to look at it again."""
        return _StepRun(self, processor, keepalive).run(outcomes)

    def look(self, processor: Processor, keepalive: Keepalive = _nothing) -> list[str]:
        """Outside a pass (``chainwatch probe``), under :meth:`Processor.exclusive`: each consumer
        skipped or in error is probed, never reloaded; one found serving what is published is
        recorded so, as the agent's own look would. Returns the names of those cleared."""
        return _StepRun(self, processor, keepalive).look()


class _StepRun:
    """One after-batch step: the lineages it switched, the checks it made."""

    def __init__(self, hook: ConsumerStep, processor: Processor, keepalive: Keepalive) -> None:
        self.hook = hook
        self.processor = processor
        self.journal: Journal = processor.journal
        self.keepalive = keepalive
        self.now = hook.clock()
        self.retries: dict[str, dt.datetime] = {}
        self.probing_left = STEP_PROBING_S
        """Probing time this step may still spend (reloads have their own timeout)."""
        self.served_before: dict[str, dict[tuple[str, str, str], int]] = {}
        self.good_before = {
            name: good
            for name in processor.state.names()
            if (good := processor.state.lineage(name).get("good")) is not None
        }
        """Each lineage's last known good version as the step began."""
        self.chains: PublishedChains = {}
        """The published chains probes are compared with, read once a step (versions are
        only switched between during a step, never written)."""

    # -- the step --------------------------------------------------------------------------

    def run(self, outcomes: list[Outcome]) -> dict[str, dt.datetime]:
        state = self.processor.state
        configured = {consumer.name for consumer in self.processor.config.consumers}
        for gone in [name for name in state.consumer_names() if name not in configured]:
            state.forget_consumer(gone)  # removed from the configuration: nothing to report
        batch = [o.lineage for o in outcomes]
        changed = [o.lineage for o in outcomes if o.published] + self._switch_in_due_pending(outcomes)
        first = self.hook.first_look(self.processor)
        asked: list[tuple[ConsumerConfig, list[str], bool]] = []
        for consumer in self.processor.config.consumers:
            record = state.consumer(consumer.name)
            names = affected(consumer, changed)
            mine = bool(affected(consumer, batch))
            again = first and (
                record.get("state") in ("error", "skipped")
                or _probes_moved(self.processor.runtime.endpoints[consumer.name], record)
            )
            due = mine and (self._due(record.get("next_retry")) or again)
            if due or (names and record.get("state") == "error"):
                # A consumer in error is judged again on everything it failed
                # with, never cleared by a check of some other lineage alone.
                extra = [*(batch if due else []), *record.get("lineages", [])]
                names = [n for n in affected(consumer, dict.fromkeys([*names, *extra])) if state.has_lineage(n)]
            if names:
                # Nothing new for it to load: whether it serves what is published is a look away.
                asked.append((consumer, names, not affected(consumer, changed)))
        if asked:
            # Reloads and probes take seconds: meanwhile `status` shows what
            # the pass published, and the journal says it. With nothing to
            # ask, the pass's own save at its end is enough (at 10,000
            # lineages a save of state.json is a twentieth of a restart).
            self.processor.checkpoint()
        checks = {consumer.name: self._check(consumer, names, look_first) for consumer, names, look_first in asked}
        self._assign_blame(checks, changed)
        for consumer in self.processor.config.consumers:
            retry = parse_iso(state.consumer(consumer.name).get("next_retry"))
            for name in affected(consumer, batch)[:1]:
                if retry is not None:
                    self._retry(name, max(retry, self.now))
        return self.retries

    def look(self) -> list[str]:
        state = self.processor.state
        known = state.consumer_names()
        checks: dict[str, Check] = {}
        for consumer in self.processor.config.consumers:
            if consumer.name not in known:
                continue
            record = state.consumer(consumer.name)
            if record.get("state") not in ("error", "skipped"):
                continue
            names = [n for n in affected(consumer, record.get("lineages", [])) if state.has_lineage(n)]
            glance = self._glance(consumer, names) if names else None
            if glance is not None:
                checks[consumer.name] = glance
        if checks:
            self._assign_blame(checks, [])
        return list(checks)

    def _switch_in_due_pending(self, outcomes: list[Outcome]) -> list[str]:
        """Rejected versions whose retry is due are served again, to be checked like new ones."""
        switched = []
        for outcome in outcomes:
            if not outcome.held_back:
                continue
            record = self.processor.state.lineage(outcome.lineage)
            step = lifecycle.pending_due(record, self.now)
            if step is None:
                continue
            if not isinstance(step.plan, SwitchIn):
                self._retry(outcome.lineage, step.plan.until or self.now)
                continue
            version = step.plan.version
            try:
                # A lineage in error stays so until the consumers accept the version.
                self.processor.serve(outcome.lineage, version, rejudge=record.get("error") is None)
            except (OSError, ChainwatchError) as problem:
                self.processor.keep(outcome.lineage, lifecycle.switch_in_failed(record))
                self.journal.log(
                    Event.ERROR, f"cannot retry version {version}: {reason_of(problem)}", lineage=outcome.lineage
                )
                continue
            self.journal.log(
                Event.PUBLISHED,
                f"version {version} switched in again to retry it (attempt {step.plan.attempt})",
                lineage=outcome.lineage,
                version=version,
            )
            switched.append(outcome.lineage)
        if switched:
            self.processor.save()  # status describes what is served while consumers are checked
        return switched

    def _assign_blame(self, checks: dict[str, Check], changed: list[str]) -> None:
        """Blame, switch back or forward, and write down what each consumer does."""
        state, processor = self.processor.state, self.processor
        failed = {name: check for name, check in checks.items() if check.blames_sets}
        fallback = self._fallbacks(sorted({n for c in failed.values() for n in c.names if n in changed}))
        fallback = {n: v for n, v in fallback.items() if n in self._serve_all({n: v[1] for n, v in fallback.items()})}
        final = dict(checks)
        blamed: dict[str, Check] = {}
        if fallback:
            again = self._recheck(list(fallback), checks)
            final.update(again)
            spoiled = [c.consumer.name for name, c in again.items() if c.blames_sets and name not in failed]
            if not spoiled:
                # Going back must not break a consumer that was fine with the
                # new sets: then the evidence blames no set.
                for check in failed.values():
                    after = again.get(check.consumer.name)
                    if after is not None and after.proven:
                        for name in check.names:
                            if name in fallback:
                                blamed.setdefault(name, check)
            forward = [name for name in fallback if name not in blamed]
            if forward:
                again_in = {name: lifecycle.roll_forward(state.lineage(name), fallback[name][0]) for name in forward}
                self._serve_all({name: step.plan.version for name, step in again_in.items()})
                final.update(self._recheck(forward, checks))
                for name in forward:
                    new, good = fallback[name]
                    culprits = ", ".join(c.consumer.name for c in failed.values() if name in c.names)
                    why = (
                        f"version {good} breaks {', '.join(spoiled)}, which version {new} does not"
                        if spoiled
                        else f"{culprits} failed with version {good} too: the consumer is at fault, not the set"
                    )
                    self.journal.log(
                        Event.ROLLED_FORWARD,
                        f"{why}; serving version {new} again, {culprits} stays in error",
                        lineage=name,
                        version=new,
                    )
        # Retried one at a time (a second apart), so that the set that broke
        # the consumer is told apart from the ones blamed with it.
        for stagger, (name, check) in enumerate(sorted(blamed.items())):
            self._roll_back(name, fallback[name], checks[check.consumer.name], stagger)
        for check in final.values():
            self._record(check)
        checked = dict.fromkeys([*changed, *(n for check in final.values() for n in check.names)])
        for name in checked:
            if name in blamed or not state.has_lineage(name):
                continue
            current = processor.publisher.current_version(name)
            users = [c.name for c in self.processor.config.consumers if affected(c, [name])]
            everyone = all(self._accepts(user, checks, final) for user in users)
            step = lifecycle.accepted(state.lineage(name), current, everyone)
            processor.keep(name, step.record)
            if step.plan.message:  # a version a consumer rejected is served and kept: it waits no more
                processor.rejudge(name)
                self.journal.log(Event.PUBLISHED, step.plan.message, lineage=name, version=current)

    def _serve_all(self, targets: dict[str, int]) -> list[str]:
        """Switch each lineage to its version; the ones that could not be switched are said and left."""
        switched = []
        for name, version in targets.items():
            try:
                self.processor.serve(name, version)
            except (OSError, ChainwatchError) as error:
                self.journal.log(
                    Event.ERROR,
                    f"cannot switch to version {version}: {reason_of(error)}; "
                    f"version {self.processor.publisher.current_version(name)} stays served",
                    lineage=name,
                )
                continue
            switched.append(name)
        if targets:
            self.processor.save()
        return switched

    def _accepts(self, consumer: str, first: dict[str, Check], final: dict[str, Check]) -> bool:
        """Does ``consumer`` take what is published now, as far as anyone knows?

        Only a failure the set may cause vetoes: an endpoint the consumer does
        not answer on says nothing about the set, and a consumer skipped now
        vetoes only if it failed with the set earlier in this step.
        """
        if consumer in final:
            check = final[consumer]
            if check.skipped:
                return not (consumer in first and first[consumer].blames_sets)
            # A reload that did not take says nothing for the set either: it is no one's fallback yet.
            return not check.blames_sets and not check.not_taken
        record = self.processor.state.consumer(consumer)
        error = record.get("error")
        return record.get("state") != "error" or (error is not None and error["kind"] == "unreachable")

    def _fallbacks(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """For each lineage to test: (new version, last known good) when falling back is allowed."""
        fallback = {}
        for name in names:
            record = self.processor.state.lineage(name)
            current, good = self.processor.publisher.current_version(name), record.get("good")
            if current is None or good is None or good == current:
                continue
            until = self.now + lifecycle.pending_retry(lifecycle.attempt(record, current))
            judged = self.processor.judge_version
            why_not = lifecycle.why_not_roll_back(judged(name, good), judged(name, current), current, good, until)
            if why_not:
                self.journal.log(
                    Event.NOT_ROLLED_BACK,
                    f"not rolled back to version {good}: {why_not}; keeping version {current}",
                    lineage=name,
                )
                continue
            fallback[name] = (current, good)
        return fallback

    def _recheck(self, names: list[str], before: dict[str, Check]) -> dict[str, Check]:
        """After a switch: every consumer that uses a switched lineage is reloaded,
        and judged on the same lineages as before the switch (like with like)."""
        checks = {}
        for consumer in self.processor.config.consumers:
            users = affected(consumer, names)
            if users:
                earlier = before[consumer.name].names if consumer.name in before else ()
                checks[consumer.name] = self._check(consumer, list(dict.fromkeys([*earlier, *users])))
        return checks

    def _roll_back(self, name: str, versions: tuple[int, int], check: Check, stagger: int) -> None:
        new, good = versions
        step = lifecycle.roll_back(
            self.processor.state.lineage(name), new, good, check.consumer.name, check.summary, check.failure,
            self.now, stagger,
        )  # fmt: skip
        self.processor.keep(name, step.record)
        consumer = check.consumer.name
        self.journal.log(Event.ROLLED_BACK, step.plan.message, lineage=name, version=good, consumer=consumer)
        self._retry(name, step.plan.retry_at)

    # -- one consumer ------------------------------------------------------------------------

    def _check(self, consumer: ConsumerConfig, names: list[str], look_first: bool = False) -> Check:
        if look_first:
            glance = self._glance(consumer, names)
            if glance is not None:
                return glance
        result = self._alive(lambda: self.hook.reloader(consumer))
        if result.result == Result.SKIPPED:
            self.journal.log(Event.RELOAD_SKIPPED, f"{consumer.name}: {result.detail}", consumer=consumer.name)
            return Check(consumer, tuple(names), result)
        if not result.ok:
            self.journal.log(
                Event.RELOAD_FAILED, f"{consumer.name}: reload failed: {result.detail}", consumer=consumer.name
            )
            return Check(consumer, tuple(names), result)
        self.journal.log(
            Event.RELOADED,
            f"{consumer.name} reloaded via {result.via} in {result.seconds * 1000:.0f} ms for {', '.join(names)}",
            consumer=consumer.name,
            via=result.via,
        )
        reports = self._probe(consumer, names) if consumer.probe else []
        self._log_reports(consumer, reports)
        return Check(consumer, tuple(names), result, tuple(reports))

    def _glance(self, consumer: ConsumerConfig, names: list[str]) -> Check | None:
        """Probed only, the consumer seen serving what is published; None when it is not seen so.

        A consumer skipped while stopped reads the published files when it
        starts, and one whose error was fixed by hand may serve them already:
        neither needs a reload to be seen doing so.
        """
        if not consumer.probe:
            return None
        glance = Check(consumer, tuple(names), None, tuple(self._probe(consumer, names, _GLANCE_S)))
        if not glance.proven:
            return None
        self._log_reports(consumer, glance.reports)
        return glance

    def _log_reports(self, consumer: ConsumerConfig, reports: Iterable[ProbeReport]) -> None:
        for report in reports:
            # Another lineage's chain is fine: that name is not this consumer's.
            event = Event.PROBE_OK if report.ok else Event.PROBE_FAILED
            if report.verdict == ProbeVerdict.UNCHECKED:
                event = Event.PROBE_UNCHECKED
            self.journal.log(
                event, report.message, lineage=report.lineage, consumer=consumer.name, endpoint=report.endpoint
            )

    def _probe(
        self, consumer: ConsumerConfig, names: list[str], patience: float = PROBE_PATIENCE_S
    ) -> list[ProbeReport]:
        """Every endpoint and server name at once, within one deadline."""
        started = time.monotonic()
        deadline = started + min(patience, self.probing_left)
        tasks = []
        # Parsed when the configuration was loaded (build_runtime): a probe that is no endpoint never gets here.
        for endpoint in self.processor.runtime.endpoints[consumer.name]:
            for name in names:
                server_names: list[str | None] = [
                    *(self.processor.state.lineage(name).get("leaf") or {}).get("names", [])
                ] or [None]
                tasks += [(endpoint, name, server_name) for server_name in server_names]
        with concurrent.futures.ThreadPoolExecutor(min(PROBE_WORKERS, len(tasks))) as pool:
            futures = [pool.submit(self._probe_one, consumer, *task, deadline) for task in tasks]
            self.keepalive()  # the reload before may have just missed its ping: a second more would make two
            while True:
                _, waiting = concurrent.futures.wait(futures, timeout=_KEEPALIVE_S)
                self.keepalive()
                if not waiting:
                    break
        self.probing_left = max(0.0, self.probing_left - (time.monotonic() - started))
        return [future.result() for future in futures]

    def _before(self, consumer: ConsumerConfig, endpoint: str, server_name: str | None, lineage: str) -> int | None:
        """The version ``endpoint`` served for ``server_name`` before this step, as far as anyone knows."""
        known = self._served_before(consumer).get((endpoint, server_name or "", lineage))
        return known if known is not None else self.good_before.get(lineage)

    def _served_before(self, consumer: ConsumerConfig) -> dict[tuple[str, str, str], int]:
        """(endpoint, server name, lineage) -> the version each endpoint served at the consumer's last check.

        Taken from the record as it was when this step began (the step writes
        it at its end); without one, the lineage's last known good version,
        which every consumer served then.
        """
        known = self.served_before.get(consumer.name)
        if known is None:
            record = self.processor.state.consumer(consumer.name)
            known = {}
            for probe in record.get("probes", []):
                version = probe.get("version")
                if version is not None and probe.get("verdict") in (
                    ProbeVerdict.SERVES,
                    ProbeVerdict.STALE,
                    ProbeVerdict.NOT_TAKEN,
                ):
                    known[(probe["endpoint"], probe["server_name"], probe["lineage"])] = version
            self.served_before[consumer.name] = known
        return known

    def _probe_one(
        self, consumer: ConsumerConfig, endpoint: Endpoint, lineage: str, server_name: str | None, deadline: float
    ) -> ProbeReport:
        # A consumer may take a moment to serve what was switched in: ask
        # again until it does or the round's deadline passes.
        if time.monotonic() + _SHORTEST_HANDSHAKE_S > deadline:
            message = f"{consumer.name} on {endpoint}: {server_name or lineage} not probed within the round's deadline"
            return ProbeReport(str(endpoint), lineage, server_name or "", ProbeVerdict.UNCHECKED, message)
        while True:
            timeout = max(_SHORTEST_HANDSHAKE_S, deadline - time.monotonic())
            try:
                served = self.hook.fetch(endpoint, server_name, timeout)
                verdict, message, version = classify_served(
                    self.processor, lineage, served, consumer.name, str(endpoint), self.chains
                )
                before = self._before(consumer, str(endpoint), server_name, lineage)
                if verdict == ProbeVerdict.STALE and version is not None and version == before:
                    verdict = ProbeVerdict.NOT_TAKEN
                    current = self.processor.publisher.current_version(lineage)
                    message = not_taken_message(consumer, str(endpoint), lineage, version, current)
                report = ProbeReport(str(endpoint), lineage, server_name or "", verdict, message, version)
            except ProbeError as error:
                message = f"{consumer.name} on {error}" if str(error).startswith(str(endpoint)) else str(error)
                report = ProbeReport(str(endpoint), lineage, server_name or "", ProbeVerdict.UNREACHABLE, message)
            if report.ok or time.monotonic() + _PROBE_INTERVAL_S + _SHORTEST_HANDSHAKE_S > deadline:
                return report
            time.sleep(_PROBE_INTERVAL_S)

    def _alive(self, work: Callable[[], _T]) -> _T:
        """``work()`` in a thread, feeding the watchdog while it runs."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(work)
            self.keepalive()  # as in _probe: what ran before may have just missed its ping
            while True:
                try:
                    return future.result(timeout=_KEEPALIVE_S)
                except concurrent.futures.TimeoutError:
                    self.keepalive()

    # -- records -------------------------------------------------------------------------------

    def _record(self, check: Check) -> None:
        """Write down the consumer's last check; its error lasts until a check succeeds."""
        record: ConsumerRecord = self.processor.state.consumer(check.consumer.name)
        for legacy in ("via", "result", "detail"):  # the previous release's layout
            record.pop(legacy, None)  # type: ignore[misc]
        result = check.reload
        if result is not None:
            record["last_reload"] = ReloadRecord(
                at=now_iso(self.now),
                via=result.via,
                result=cast("ReloadResultValue", str(result.result)),
                detail=result.detail,
                seconds=result.seconds,
            )
            if not result.ok:
                record["failures"] = record.get("failures", 0) + 1
        record["lineages"] = list(check.names)
        record["probes"] = [report.record(self.hook.clock()) for report in check.reports]
        if check.skipped:
            record["state"] = "skipped"
            # Looked at again on the consumer's schedule: started meanwhile,
            # it serves the published files without being told. An error it
            # had stays until a check succeeds.
            skips = record["skipped_in_a_row"] = record.get("skipped_in_a_row", 0) + 1
            error = record.get("error")
            retry = self.now + lifecycle.consumer_recheck(
                check.consumer.recheck_s, error["attempts"] if error else skips
            )
            record["next_retry"] = now_iso(retry)
            return
        record["skipped_in_a_row"] = 0
        if check.ok:
            cleared = clear_error(record)
            record["state"] = "ok"
            record["next_retry"] = None
            record["failures_in_a_row"] = 0
            if cleared is not None:
                self.journal.log(
                    Event.CONSUMER_RECOVERED,
                    f"{check.consumer.name} works again (failing since {cleared['since']}: {cleared['message']})",
                    consumer=check.consumer.name,
                )
            return
        record["failures_in_a_row"] = record.get("failures_in_a_row", 0) + 1
        error = note_error(record, check.error_kind, check.summary, self.now)
        retry_at = self.now + lifecycle.consumer_recheck(check.consumer.recheck_s, error["attempts"])
        record["state"] = "error"
        record["next_retry"] = now_iso(retry_at)
        error["message"] = f"{check.summary}; retrying at {retry_at:%H:%M:%S} UTC"

    # -- time --------------------------------------------------------------------------------

    def _due(self, when: str | None) -> bool:
        moment = parse_iso(when)
        return moment is not None and moment <= self.now

    def _retry(self, name: str, at: dt.datetime) -> None:
        self.retries[name] = min(self.retries.get(name, at), at)
