"""The trim policy: which certificates a server should send, and why.

A pure function of (certificates, trust stores, time, policy). It reads no
clock, file or network; a chain that validates badly is a returned decision
with warnings, never an exception. Only input that has no leaf at all, or
that would cost unbounded work, raises :class:`~chainwatch.errors.InputError`.

How it works, in the spirit of Go's ``crypto/x509`` verifier:

1. Candidate issuers of a certificate are those whose subject equals its
   issuer name *and* whose key verifies its signature (``signed_by``); key
   identifiers are never trusted to decide.
2. Every path from the leaf upwards through the chain's certificates to an
   anchor of some store is enumerated once, ignoring time; a path never passes
   the same (subject, key) twice, which ends loops of mutual cross-signs.
   One budget bounds the walk.
3. Validity is judged per store afterwards: a path is valid for a store when
   its anchor is in that store, and the anchor and every certificate above the
   leaf are within their validity at the given time and not distrusted. The
   store's client model (``Policy.client``) says whether the anchor's own
   dates count, and which valid paths its clients take from a served set:
   any (backtracking, the default), none that climbs past an issuer the
   store holds but cannot use (trusted-first), or only the one the served
   order leads to (first-match).
4. Twins (the same subject and key from different issuers) are alternatives
   for one position of the path, like a cross-sign and its self-signed root:
   those on a valid path are kept, the others dropped for their issuer.
5. The served order is for clients that take the first matching issuer at
   each depth (OpenSSL 3.0, GnuTLS): leaf first, then by depth; at one depth
   what more stores validate through goes first, then the file's order.
6. Every client then judges the served chain and the file as given by its
   own model (:func:`~chainwatch.policy.client_check.validates`); where one
   validates the file but not the chain, another order of the twins, a
   certificate put back or at last the file's own certificates are served;
   a certificate that still makes a client fail is dropped when every client
   that validates with it validates without it (a cross-sign kept in step 4
   for an anchor-expiry-ignoring client that also holds the new root); and
   clients that some other choice would serve are named at risk.

Each configured store is a client (``Policy.client`` says how its programs
build paths, and the served chain is also kept good for those of its
programs that look in their store first); ``clients`` adds clients that
stand for exactly their own model, such as a shipped client profile.

One module a concern, as Go's verifier keeps finding apart from judging:
:mod:`~chainwatch.policy.paths` finds candidate paths (steps 1-2),
:mod:`~chainwatch.policy.judge` judges them at the given time (step 3),
:mod:`~chainwatch.policy.keep` gives every certificate its verdict (step 4),
:mod:`~chainwatch.policy.order` orders what is kept and says which paths a
client takes from it (step 5), and
:mod:`~chainwatch.policy.chain_warnings` applies the rules on the whole
chain; :mod:`~chainwatch.policy.client_check` is one client's own verdict and
:mod:`~chainwatch.policy.every_client` applies it to every client (step 6);
:mod:`~chainwatch.policy.decision` holds the records they return.
None of them reads a clock, a file or the network.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from chainwatch.policy.chain_warnings import chain_warnings, warn_before
from chainwatch.policy.client_check import Client
from chainwatch.policy.decision import (
    ChainWarning,
    ClientResult,
    Decision,
    Path,
    Reason,
    Role,
    Verdict,
    WarningCode,
)
from chainwatch.policy.every_client import (
    ClientChecks,
    at_risk,
    client_results,
    drop_breaking,
    serve_every_client,
)
from chainwatch.policy.judge import Judge
from chainwatch.policy.keep import keep
from chainwatch.policy.order import order, stores_through, taken_paths
from chainwatch.policy.paths import MAX_PATH_STEPS, Candidates
from chainwatch.policy.settings import Distrust, Mode, Policy
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore

__all__ = [
    "MAX_PATH_STEPS",
    "ChainWarning",
    "Client",
    "ClientResult",
    "Decision",
    "Distrust",
    "Mode",
    "Path",
    "Policy",
    "Reason",
    "Role",
    "Verdict",
    "WarningCode",
    "decide",
]

_SECOND = dt.timedelta(seconds=1)


def decide(
    certs: Sequence[Cert],
    stores: Sequence[TrustStore],
    at: dt.datetime,
    policy: Policy | None = None,
    leaf_key: bytes | None = None,
    *,
    clients: Sequence[Client] = (),
) -> Decision:
    """Decide which of ``certs`` (a served chain, in file order) to serve.

    ``at`` must be timezone-aware. ``leaf_key`` is the DER public key of the
    server's private key; without it the leaf is the first end-entity
    certificate. Each of ``stores`` is judged as a client named after it with
    ``policy.client``'s model; each of ``clients`` by its own model. Raises
    :class:`~chainwatch.errors.InputError` when there is no leaf, and
    ``ValueError`` when two judged clients share a name.
    """
    if at.tzinfo is None:
        raise ValueError("decide() needs a timezone-aware time")
    policy = policy or Policy()
    of_stores = [Client(store.name, store, policy.client) for store in stores]
    names = [client.name for client in (*of_stores, *clients)]
    if len(set(names)) != len(names):
        raise ValueError(f"decide() judges each client once, by name: {', '.join(names)}")
    # A store several clients share is searched once.
    unique_stores = list({id(client.store): client.store for client in (*of_stores, *clients)}.values())
    found = Candidates(certs, unique_stores, leaf_key)
    judge = Judge(found, of_stores, at, policy, exact=clients)
    kept, verdicts = keep(judge)
    kept_set = set(kept)
    through = stores_through(judge, kept_set)
    check = ClientChecks(judge)
    chain = serve_every_client(check, order(judge, kept_set, through), verdicts)
    chain = drop_breaking(check, chain, verdicts)
    if set(chain) != kept_set:
        kept_set = set(chain)
        through = stores_through(judge, kept_set)
    results = client_results(check, certs, chain)
    # A client given with its own model validates by that model alone; a
    # store's client as the rules of steps 3-5 judge it.
    exact = {client.name: check(client, chain) for client in clients}
    validating = tuple(
        client.name
        for client in judge.clients
        if (exact[client.name].ok if client.name in exact else taken_paths(judge, client, kept_set))
    )
    ordered_verdicts = tuple(verdicts[position] for position in range(len(found.certs)))
    warnings = chain_warnings(judge, chain, kept_set, through, exact)
    risk = at_risk(check, chain)
    if risk:
        warnings.append(
            ChainWarning(
                WarningCode.CLIENTS_AT_RISK,
                "no choice or order of the certificates validates for every configured client; "
                f"the served chain fails for: {', '.join(risk)}",
            )
        )
    met = {*found.first_position, *(a for anchors in found.anchor_issuers.values() for a in anchors)}
    return Decision(
        leaf=found.leaf,
        chain=chain,
        verdicts=ordered_verdicts,
        warnings=tuple(warnings),
        stores=tuple(client.name for client in judge.clients),
        validating_stores=validating,
        chain_issuers=dict(found.chain_issuers),
        anchor_issuers=dict(found.anchor_issuers),
        anchor_stores={
            anchor: tuple(client.name for client in judge.clients if anchor in client.store)
            for anchors in found.anchor_issuers.values()
            for anchor in anchors
        },
        distrusted=frozenset(cert for cert in met if policy.distrust.matches(cert)),
        changes_at=min(
            (
                edge
                for cert in met
                # ... or starts expiring soon: status and the journal warn from then on.
                for edge in (cert.not_before, cert.not_after - warn_before(judge, cert), cert.not_after + _SECOND)
                if edge > at
            ),
            default=None,
        ),
        clients=results,
    )
