"""What a consumer's reload and probes showed: one verdict per endpoint, and the check of the whole consumer.

Plain records and the sentences that explain them, with each server's hints
for where to look; which set was served, and whom to blame, is the agent's
(:mod:`chainwatch.agent.consumer_step`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from chainwatch.config import ConsumerConfig
from chainwatch.consumers.reload import ReloadResult, Result
from chainwatch.state.records import ConsumerErrorKind, ProbeRecord, ProbeVerdictValue
from chainwatch.state.timestamps import now_iso

__all__ = ["UNKNOWN_CHAIN_HINTS", "Check", "ProbeReport", "ProbeVerdict", "affected", "not_taken_message"]

# Where to look when a server serves a chain chainwatch never published.
UNKNOWN_CHAIN_HINTS = {
    "dovecot": "check ssl_cert (2.4: ssl_server_cert_file) in /etc/dovecot/conf.d/10-ssl.conf; "
    "see 'chainwatch consumer-config dovecot'",
    "postfix": "check smtpd_tls_chain_files in /etc/postfix/main.cf; see 'chainwatch consumer-config postfix'",
    "exim4": "check MAIN_TLS_CERTIFICATE in /etc/exim4/exim4.conf.localmacros and run update-exim4.conf; "
    "see 'chainwatch consumer-config exim4'",
    "nginx": "check ssl_certificate in the server block; see 'chainwatch consumer-config nginx'",
    "apache2": "check SSLCertificateFile in the virtual host; see 'chainwatch consumer-config apache2'",
    "haproxy": "check the crt files on the bind line; see 'chainwatch consumer-config haproxy'",
}
# Where to look when a server ignored its reload: most often its configuration no longer loads.
_NOT_TAKEN_HINTS = {
    "dovecot": "run 'doveconf -n' and see 'journalctl -u dovecot'",
    "postfix": "run 'postfix check' and see 'journalctl -u postfix@-'",
    "exim4": "run 'exim4 -bV' and see 'journalctl -u exim4'",
    "nginx": "run 'nginx -t' and see 'journalctl -u nginx'",
    "apache2": "run 'apache2ctl configtest' and see 'journalctl -u apache2'",
    "haproxy": "run 'haproxy -c -f /etc/haproxy/haproxy.cfg' and see 'journalctl -u haproxy'",
}


def affected(consumer: ConsumerConfig, lineages: Iterable[str]) -> list[str]:
    """The lineages among ``lineages`` that ``consumer`` serves (by its globs)."""
    return [name for name in lineages if any(fnmatch.fnmatchcase(name, glob) for glob in consumer.lineages)]


class ProbeVerdict(StrEnum):
    """What one endpoint sends for one server name, compared with what was published."""

    SERVES = "serves"
    """The version of the lineage that is published now."""
    OTHER_LINEAGE = "other-lineage"
    """A chain published for another lineage: this consumer does not serve that name."""
    STALE = "stale"
    """An older (or rejected) version of the lineage."""
    UNKNOWN = "unknown"
    """A chain chainwatch never published: the consumer reads other files."""
    NOT_TAKEN = "not-taken"
    """An older version, exactly what it served before its reload: the reload did not take."""
    UNREACHABLE = "unreachable"
    """No chain at all: refused, timed out or failed handshake."""
    UNCHECKED = "unchecked"
    """Not asked: the round's deadline passed first (more names than time)."""


@dataclass(frozen=True)
class ProbeReport:
    endpoint: str
    lineage: str
    server_name: str
    verdict: ProbeVerdict
    message: str
    version: int | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in (ProbeVerdict.SERVES, ProbeVerdict.OTHER_LINEAGE)

    def record(self, at: dt.datetime) -> ProbeRecord:
        return ProbeRecord(
            endpoint=self.endpoint,
            lineage=self.lineage,
            server_name=self.server_name,
            verdict=cast("ProbeVerdictValue", str(self.verdict)),
            ok=self.ok,
            message=self.message,
            version=self.version,
            checked_at=now_iso(at),
        )


@dataclass(frozen=True)
class Check:
    """One consumer reloaded, and probed, with the sets served at that moment."""

    consumer: ConsumerConfig
    names: tuple[str, ...]
    reload: ReloadResult | None
    """None: only probed, not reloaded (a look at a consumer that has nothing new to load)."""
    reports: tuple[ProbeReport, ...] = ()

    @property
    def skipped(self) -> bool:
        return self.reload is not None and self.reload.result == Result.SKIPPED

    @property
    def reload_failed(self) -> bool:
        return self.reload is not None and not self.reload.ok

    @property
    def blames_sets(self) -> bool:
        """Failed in a way the served sets may cause: the reload, or serving the wrong chain."""
        if self.skipped:
            return False
        return self.reload_failed or any(r.verdict in (ProbeVerdict.STALE, ProbeVerdict.UNKNOWN) for r in self.reports)

    @property
    def not_taken(self) -> bool:
        """Reloaded, yet some endpoint still serves what it served before: nothing is known of the new set."""
        return not self.reload_failed and any(r.verdict == ProbeVerdict.NOT_TAKEN for r in self.reports)

    @property
    def ok(self) -> bool:
        # Unchecked names prove nothing either way; the checked ones decide.
        return (
            not self.reload_failed
            and not self.skipped
            and all(r.ok or r.verdict == ProbeVerdict.UNCHECKED for r in self.reports)
        )

    @property
    def proven(self) -> bool:
        """Ok, and every name was asked: evidence enough to blame a set."""
        return self.ok and all(r.verdict != ProbeVerdict.UNCHECKED for r in self.reports)

    @property
    def error_kind(self) -> ConsumerErrorKind:
        if self.reload_failed:
            return "reload"
        wrong = [r for r in self.reports if r.verdict in (ProbeVerdict.STALE, ProbeVerdict.UNKNOWN)]
        return "stale" if wrong else "not-taken" if self.not_taken else "unreachable"

    @property
    def summary(self) -> str:
        """The failure as a sentence that names the consumer."""
        if self.reload_failed:
            return f"{self.consumer.name} {self.failure}"
        return self.failure  # probe messages name their consumer

    @property
    def failure(self) -> str:
        """What went wrong, in a few words (empty when nothing did)."""
        if self.reload is not None and not self.reload.ok:
            return f"reload failed: {self.reload.detail}"
        bad = [r for r in self.reports if not r.ok and r.verdict != ProbeVerdict.UNCHECKED]
        if not bad:
            return ""
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return f"{bad[0].message}{more}"


def not_taken_message(consumer: ConsumerConfig, endpoint: str, lineage: str, served: int, current: int | None) -> str:
    """What to say of an endpoint still serving, after its reload, the version it served before."""
    server = consumer.name
    if server not in _NOT_TAKEN_HINTS and consumer.unit:
        server = consumer.unit.removesuffix(".service").split("@", 1)[0]
    hint = _NOT_TAKEN_HINTS.get(server, "check that its configuration still loads, and its log")
    return (
        f"{consumer.name} on {endpoint} still serves version {served} of {lineage} after its reload, "
        f"version {current} is published: the reload did not take (its configuration may no longer load; "
        f"{hint}); the certificate is not blamed"
    )
