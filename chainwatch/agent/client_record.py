"""What a lineage's record says of the configured clients: who fails on the served chain, and who will soon.

The policy judges every client (:attr:`~chainwatch.policy.decision.Decision.clients`);
this keeps the failures and, over the horizon, the forecast
(:func:`~chainwatch.policy.forecast.forecast`): ``status``, the metrics and
the alert read them from ``state.json`` without loading cryptography. The
forecast looks no further than the horizon because the agent decides again
when a certificate it met comes within it (``Decision.changes_at``): a
moment further off is forecast then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from chainwatch.policy.client_check import Client
from chainwatch.policy.decision import Decision
from chainwatch.policy.forecast import forecast
from chainwatch.policy.report import iso
from chainwatch.policy.settings import Policy
from chainwatch.state.records import ClientsRecord
from chainwatch.x509.trust import TrustStore

__all__ = ["clients_record", "judged_clients"]


def judged_clients(stores: Sequence[TrustStore], policy: Policy, clients: Sequence[Client]) -> tuple[Client, ...]:
    """Every client a decision judges, as :func:`~chainwatch.policy.trim.decide` names them: stores first."""
    return (*(Client(store.name, store, policy.client) for store in stores), *clients)


def clients_record(
    decision: Decision, stores: Sequence[TrustStore], clients: Sequence[Client], policy: Policy, now: dt.datetime
) -> ClientsRecord:
    """The record of ``decision``'s served chain at ``now``, for the ``clients`` judged beside ``stores``.

    ``not_validating`` names the configured clients, ``stores_not_validating``
    the trust stores: each has its metric and alert. The forecast covers both.
    """
    # Up to the leaf's expiry, excluded: that one is the leaf's own warning, with its own
    # horizon (a third of a short-lived leaf's life), and every client loses the chain then.
    until = min(now + policy.horizon, decision.leaf.not_after)
    edges = {
        edge
        for cert in (*decision.chain, *(a for anchors in decision.anchor_issuers.values() for a in anchors))
        for edge in (cert.not_before, cert.not_after)
    }
    # Most chains have no edge within the horizon: then nothing changes, and nothing is re-judged.
    changes = (
        forecast(decision.chain, judged_clients(stores, policy, clients), now, until, distrust=policy.distrust)
        if any(now < edge < until for edge in edges)
        else ()
    )
    configured = {client.name for client in clients}
    return {
        "not_validating": [
            {"name": result.name, "detail": result.detail}
            for result in decision.clients
            if not result.served and result.name in configured
        ],
        "stores_not_validating": [store.name for store in stores if store.name not in decision.validating_stores],
        "forecast": [
            {"at": iso(change.at), "client": change.client, "validates": change.validates, "why": change.why}
            for change in changes
        ],
    }
