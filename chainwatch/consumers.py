"""After a batch is published: reload each affected consumer once, prove what it
serves, and roll back what made it fail.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chainwatch.certificate import Cert
from chainwatch.config import ConsumerConfig
from chainwatch.errors import ChainwatchError
from chainwatch.journal import Event
from chainwatch.pem import parse_certificates
from chainwatch.probe import Endpoint, ProbeError, fetch_chain, parse_endpoint
from chainwatch.reconcile import Outcome, Processor, record_error
from chainwatch.reload import ReloadResult, reload_consumer
from chainwatch.state import now_iso

__all__ = ["ConsumerHook", "ProbeReport", "affected", "compare_served"]

# How long a consumer may take to start serving what was published.
PROBE_PATIENCE_S = 5.0
_PROBE_INTERVAL_S = 0.25
_BACKOFF_S = (30, 60, 120, 300, 900, 3600)

_HINTS = {
    "dovecot": "check ssl_cert (2.4: ssl_server_cert_file) in /etc/dovecot/conf.d/10-ssl.conf; "
    "see 'chainwatch consumer-config dovecot'",
    "postfix": "check smtpd_tls_chain_files in /etc/postfix/main.cf; see 'chainwatch consumer-config postfix'",
}

Reloader = Callable[[ConsumerConfig], ReloadResult]


def affected(consumer: ConsumerConfig, lineages: Sequence[str]) -> list[str]:
    """The lineages among ``lineages`` that ``consumer`` serves (by its globs)."""
    return [name for name in lineages if any(fnmatch.fnmatchcase(name, glob) for glob in consumer.lineages)]


@dataclass(frozen=True)
class ProbeReport:
    endpoint: str
    lineage: str
    server_name: str
    ok: bool
    handshake: bool
    """False when no chain could be fetched at all."""
    message: str
    version: int | None = None


def compare_served(
    processor: Processor, lineage: str, served: list[Cert], consumer: str, endpoint: str
) -> tuple[bool, str, int | None]:
    """Which published version of ``lineage`` is ``served``? (match, message, version)."""
    publisher = processor.publisher
    current = publisher.current_version(lineage)
    for version in reversed(publisher.versions_of(lineage)):
        files = publisher.files_of(lineage, version)
        if files is None:
            continue
        try:
            published = parse_certificates(files["fullchain.pem"], "published")
        except ChainwatchError:
            continue
        if published == served:
            if version == current:
                return True, f"{consumer} on {endpoint} serves version {version} of {lineage}", version
            return (
                False,
                f"{consumer} on {endpoint} serves version {version} of {lineage}, published is {current}",
                version,
            )
    hint = _HINTS.get(consumer, "check which files it is configured to serve")
    return False, f"{consumer} on {endpoint} serves a chain chainwatch never published for {lineage}: {hint}", None


class ConsumerHook:
    """The agent's and ``sync``'s after-batch step."""

    def __init__(self, reloader: Reloader = reload_consumer, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.reloader = reloader
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def __call__(self, processor: Processor, outcomes: list[Outcome]) -> dict[str, dt.datetime]:
        """Reload, probe, roll back; returns lineage -> when to retry a failed one."""
        published = [o.lineage for o in outcomes if o.published]
        retries: dict[str, dt.datetime] = {}
        if not published:
            return retries
        for consumer in processor.config.consumers:
            names = affected(consumer, published)
            if names:
                retries.update(self._serve(processor, consumer, names))
        return retries

    def _serve(self, processor: Processor, consumer: ConsumerConfig, names: list[str]) -> dict[str, dt.datetime]:
        journal = processor.journal
        record = processor.state.consumer(consumer.name)
        result = self.reloader(consumer)
        record.update(
            last_reload=now_iso(self.clock()), result=str(result.result), detail=result.detail, via=result.via
        )
        if result.result == "skipped":
            journal.log(Event.RELOAD_SKIPPED, result.detail, consumer=consumer.name, via=result.via)
            return {}
        failure = None if result.ok else f"reload failed: {result.detail}"
        if result.ok:
            journal.log(
                Event.RELOADED,
                f"{consumer.name} reloaded via {result.via} in {result.seconds * 1000:.0f} ms for {', '.join(names)}",
                consumer=consumer.name,
                via=result.via,
            )
            reports = self._probe(processor, consumer, names)
            record["probes"] = [report.__dict__ for report in reports]
            broken = [r for r in reports if not r.handshake]
            if broken:
                failure = f"handshakes fail after the reload: {broken[0].message}"
            for report in reports:
                event = Event.PROBE_OK if report.ok else Event.PROBE_FAILED
                journal.log(event, report.message, consumer=consumer.name, endpoint=report.endpoint)
        if failure is None:
            record["failures_in_a_row"] = 0
            for name in names:
                lineage = processor.state.lineage(name)
                lineage.pop("retries", None)
                wrong = [p["message"] for p in record.get("probes", []) if p["lineage"] == name and not p["ok"]]
                if wrong:
                    record_error(lineage, "consumer", "; ".join(dict.fromkeys(wrong)), self.clock())
            return {}
        record["failures"] = record.get("failures", 0) + 1
        record["failures_in_a_row"] = record.get("failures_in_a_row", 0) + 1
        journal.log(Event.RELOAD_FAILED, f"{consumer.name}: {failure}", consumer=consumer.name, via=result.via)
        return self._roll_back(processor, consumer, names, failure)

    def _probe(self, processor: Processor, consumer: ConsumerConfig, names: list[str]) -> list[ProbeReport]:
        reports = []
        for text in consumer.probe:
            endpoint = parse_endpoint(text)
            for name in names:
                lineage = processor.state.lineage(name)
                server_names = (lineage.get("leaf") or {}).get("names") or [None]
                for server_name in server_names:
                    reports.append(self._probe_one(processor, consumer, endpoint, name, server_name))
        return reports

    def _probe_one(
        self, processor: Processor, consumer: ConsumerConfig, endpoint: Endpoint, lineage: str, server_name: str | None
    ) -> ProbeReport:
        deadline = time.monotonic() + PROBE_PATIENCE_S
        while True:
            try:
                served = fetch_chain(endpoint, server_name, timeout=PROBE_PATIENCE_S)
                ok, message, version = compare_served(processor, lineage, served, consumer.name, str(endpoint))
                report = ProbeReport(str(endpoint), lineage, server_name or "", ok, True, message, version)
            except ProbeError as error:
                report = ProbeReport(str(endpoint), lineage, server_name or "", False, False, str(error))
            if report.ok or time.monotonic() >= deadline:
                return report
            time.sleep(_PROBE_INTERVAL_S)

    def _roll_back(
        self, processor: Processor, consumer: ConsumerConfig, names: list[str], failure: str
    ) -> dict[str, dt.datetime]:
        publisher, journal = processor.publisher, processor.journal
        retries = {}
        rolled = []
        for name in names:
            current, previous = publisher.current_version(name), publisher.previous_version(name)
            lineage = processor.state.lineage(name)
            attempt = lineage.get("retries", 0)
            retry_at = self.clock() + dt.timedelta(seconds=_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
            lineage["retries"] = attempt + 1
            retries[name] = retry_at
            if previous is None:
                message = f"{consumer.name} {failure}; nothing to roll back to (version {current} is the first)"
            else:
                publisher.switch(name, previous)
                rolled.append(name)
                message = (
                    f"{consumer.name} {failure}; rolled back to version {previous}, "
                    f"retrying version {current}'s content at {retry_at:%H:%M:%S} UTC"
                )
                journal.log(Event.ROLLED_BACK, message, lineage=name, version=previous, consumer=consumer.name)
            lineage["version"] = publisher.current_version(name)
            record_error(lineage, "consumer", message, self.clock())
        if rolled:
            again = self.reloader(consumer)
            if not again.ok:
                journal.log(
                    Event.RELOAD_FAILED,
                    f"{consumer.name}: reload after rollback failed too: {again.detail}",
                    consumer=consumer.name,
                )
        return retries
