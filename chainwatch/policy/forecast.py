"""When each client stops (or starts) validating a served chain: the warning the 2021 admins never got.

A client's verdict on a fixed chain changes only when a certificate it
looks at starts or stops being valid: one of the chain's own, or an anchor
of its store that issues one of them. Each such moment between now and the
end is re-judged one second after it, by the client's own model
(:func:`~chainwatch.policy.client_check.validates`), and every change of
verdict is one record. Pure: the time and the end are the caller's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import NamedTuple

from chainwatch.policy.client_check import Client, validates
from chainwatch.policy.settings import Distrust
from chainwatch.x509.certificate import Cert
from chainwatch.x509.signature import signed_by

__all__ = ["ForecastChange", "forecast"]

_SECOND = dt.timedelta(seconds=1)


class ForecastChange(NamedTuple):
    """A moment a client's verdict on the served chain changes."""

    at: dt.datetime
    """The moment re-judged: one second after the edge that causes the change."""
    client: str
    validates: bool
    """Whether the client validates the chain from then on."""
    why: str
    """The edges at that moment, e.g. "YR1 expires 2028-09-02"."""
    detail: str
    """The client's verdict from then on, as :func:`~chainwatch.policy.client_check.validates` says it."""


def forecast(
    chain: Sequence[Cert],
    clients: Sequence[Client],
    at: dt.datetime,
    until: dt.datetime,
    *,
    distrust: Distrust | None = None,
    fetchable: Collection[Cert] = (),
) -> tuple[ForecastChange, ...]:
    """Every change of a client's verdict on ``chain`` (as served, leaf first) after ``at`` and up to ``until``."""
    if at.tzinfo is None or until.tzinfo is None:
        raise ValueError("forecast() needs timezone-aware times")
    distrust = distrust or Distrust()
    edges: dict[dt.datetime, list[str]] = {}

    def add(cert: Cert) -> None:
        for edge, what in ((cert.not_before, "becomes valid"), (cert.not_after, "expires")):
            moment = edge + _SECOND
            if at < moment <= until:
                named = f"{cert.short_subject} {what} {edge:%Y-%m-%d}"
                if named not in edges.setdefault(moment, []):
                    edges[moment].append(named)

    served = tuple(dict.fromkeys(chain))
    for cert in served:
        add(cert)
    for store in {id(client.store): client.store for client in clients}.values():
        for cert in served:
            for anchor in store.named(cert.issuer_der):
                if signed_by(cert, anchor):
                    add(anchor)

    def judged(client: Client, moment: dt.datetime) -> tuple[bool, str]:
        check = validates(chain, client.store, client.model, moment, fetchable=fetchable, distrust=distrust)
        return check.ok, check.detail

    verdicts = {client.name: judged(client, at)[0] for client in clients}
    changes: list[ForecastChange] = []
    for moment in sorted(edges):
        for client in clients:
            ok, detail = judged(client, moment)
            if ok != verdicts[client.name]:
                verdicts[client.name] = ok
                changes.append(ForecastChange(moment, client.name, ok, "; ".join(edges[moment]), detail))
    return tuple(changes)
