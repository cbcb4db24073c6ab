"""Decisions as data for machines (``--json``) and as lines for people."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from chainwatch.policy.decision import Decision, Verdict
from chainwatch.policy.forecast import ForecastChange
from chainwatch.x509.certificate import Cert

__all__ = ["decision_json", "dropped_line", "forecast_json", "iso", "warning_lines"]


def iso(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, the form every JSON consumer parses."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _identity(cert: Cert) -> dict[str, str]:
    return {"subject": cert.subject, "issuer": cert.issuer, "sha256": cert.sha256}


def decision_json(decision: Decision) -> dict[str, Any]:
    """The decision as the documented ``--json`` object."""
    return {
        "chain": [
            {
                **_identity(cert),
                "not_before": iso(cert.not_before),
                "not_after": iso(cert.not_after),
                "role": str(decision.role_of(cert)),
            }
            for cert in decision.chain
        ],
        "dropped": [
            {**_identity(verdict.cert), "reason": str(verdict.reason), "detail": verdict.detail}
            for verdict in decision.dropped
        ],
        "warnings": [{"code": str(warning.code), "message": warning.message} for warning in decision.warnings],
        "clients": [
            {"name": result.name, "as_given": result.as_given, "served": result.served, "detail": result.detail}
            for result in decision.clients
        ],
    }


def forecast_json(changes: Sequence[ForecastChange]) -> list[dict[str, Any]]:
    """``explain --forecast --json``: each change of a client's verdict on the served chain."""
    return [
        {"at": iso(change.at), "client": change.client, "validates": change.validates, "why": change.why,
         "detail": change.detail}
        for change in changes
    ]  # fmt: skip


def dropped_line(verdict: Verdict) -> str:
    """One line a person reads: which certificate, why it went."""
    cert = verdict.cert
    return (
        f"dropped #{verdict.position + 1} {cert.short_subject} (issued by {cert.short_issuer}, "
        f"sha256 {cert.sha256[:16]}): {verdict.reason}: {verdict.detail}"
    )


def warning_lines(decision: Decision) -> list[str]:
    return [f"warning: {warning.code}: {warning.message}" for warning in decision.warnings]
