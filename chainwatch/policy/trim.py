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

One module a concern, as Go's verifier keeps finding apart from judging:
:mod:`~chainwatch.policy.paths` finds candidate paths (steps 1-2),
:mod:`~chainwatch.policy.judge` judges them at the given time (step 3),
:mod:`~chainwatch.policy.keep` gives every certificate its verdict (step 4),
:mod:`~chainwatch.policy.order` orders what is kept and says which paths a
client takes from it (step 5), and
:mod:`~chainwatch.policy.chain_warnings` applies the rules on the whole
chain; :mod:`~chainwatch.policy.decision` holds the records they return.
None of them reads a clock, a file or the network.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from chainwatch.policy.chain_warnings import chain_warnings, warn_before
from chainwatch.policy.decision import ChainWarning, Decision, Path, Reason, Role, Verdict, WarningCode
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
) -> Decision:
    """Decide which of ``certs`` (a served chain, in file order) to serve.

    ``at`` must be timezone-aware. ``leaf_key`` is the DER public key of the
    server's private key; without it the leaf is the first end-entity
    certificate. Raises :class:`~chainwatch.errors.InputError` when there is no leaf.
    """
    if at.tzinfo is None:
        raise ValueError("decide() needs a timezone-aware time")
    policy = policy or Policy()
    found = Candidates(certs, stores, leaf_key)
    judge = Judge(found, stores, at, policy)
    kept, verdicts = keep(judge)
    kept_set = set(kept)
    through = stores_through(judge, kept_set)
    chain = order(judge, kept_set, through)
    validating = tuple(store.name for store in judge.stores if taken_paths(judge, store, kept_set))
    ordered_verdicts = tuple(verdicts[position] for position in range(len(found.certs)))
    met = {*found.first_position, *(a for anchors in found.anchor_issuers.values() for a in anchors)}
    return Decision(
        leaf=found.leaf,
        chain=chain,
        verdicts=ordered_verdicts,
        warnings=tuple(chain_warnings(judge, chain, kept_set, through)),
        stores=tuple(store.name for store in judge.stores),
        validating_stores=validating,
        chain_issuers=dict(found.chain_issuers),
        anchor_issuers=dict(found.anchor_issuers),
        anchor_stores={
            anchor: tuple(store.name for store in judge.stores if anchor in store)
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
    )
