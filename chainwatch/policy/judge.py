"""Judging candidate paths: validity at the decision's time, anchors, expiry, distrust.

Owns step 3 of the algorithm (see :mod:`chainwatch.policy`): whether a path
found by :mod:`chainwatch.policy.paths` is valid for a store at the given
time, whether an anchor anchors for the store's client model (the one place
that reads :class:`~chainwatch.policy.settings.ClientModel`'s anchor rule),
whether a client that looks in its store first ever takes a path, and the
sentences that say why a certificate leads nowhere. Like Go's ``isValid``
it judges what it is given and proposes nothing. The time is the caller's
(``at``); it may not read a clock or a file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from chainwatch.policy.decision import Path, Reason
from chainwatch.policy.paths import Candidates
from chainwatch.policy.settings import ClientModel, Policy
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore

__all__ = ["Judge", "day", "validity_detail"]


class Judge:
    """The rules of validity for one decision: its candidates, stores, time and policy."""

    def __init__(self, found: Candidates, stores: Sequence[TrustStore], at: dt.datetime, policy: Policy) -> None:
        self.found = found
        self.stores = list(stores)
        self.at = at
        self.policy = policy

    def model(self, store: TrustStore) -> ClientModel:
        """How the clients of ``store`` build paths and treat their anchors."""
        return self.policy.client

    def usable(self, cert: Cert) -> bool:
        return cert.valid_at(self.at) and not self.policy.distrust.matches(cert)

    def anchors(self, anchor: Cert, model: ClientModel) -> bool:
        """Whether ``anchor``, held by a client of ``model``, ends a valid path."""
        if model.anchor_expiry:
            return self.usable(anchor)
        return not self.policy.distrust.matches(anchor)

    def valid(self, path: Path, store: TrustStore, kept: set[Cert] | None = None) -> bool:
        return self._valid(path, store, self.model(store), kept)

    def valid_paths(self, store: TrustStore, kept: set[Cert] | None = None) -> list[Path]:
        """Every path a client of ``store`` would accept, served as it likes: backtracking."""
        model = self.model(store)
        return [path for path in self.found.paths if self._valid(path, store, model, kept)]

    def _valid(self, path: Path, store: TrustStore, model: ClientModel, kept: set[Cert] | None) -> bool:
        return (
            path.anchor in store
            and self.anchors(path.anchor, model)
            and all(self.usable(cert) for cert in path.via)
            and (kept is None or all(cert in kept for cert in path.via))
        )

    def on_valid_paths(self, kept: set[Cert]) -> set[Cert]:
        return {cert for store in self.stores for path in self.valid_paths(store, kept) for cert in path.via}

    def shadowed(self, path: Path, store: TrustStore) -> bool:
        """Whether a client that looks for an issuer in its store first never takes ``path``.

        OpenSSL stops at a trusted issuer of the right name and key, even an
        expired one, before it looks at the untrusted certificates: a path
        that climbs past a certificate whose issuer the store holds, expired
        (where the store's model checks anchors' expiry) or distrusted, fails
        for it.
        """
        for cert in (path.leaf, *path.via[:-1]):
            trusted = [anchor for anchor in self.found.anchor_issuers.get(cert, ()) if anchor in store]
            if trusted and not any(self.anchors(anchor, self.model(store)) for anchor in trusted):
                return True
        return False

    def taken_trusted_first(self, store: TrustStore, certs: set[Cert]) -> bool:
        """Whether a client of ``store`` that looks in its store first takes a valid path through ``certs``."""
        return any(not self.shadowed(path, store) for path in self.valid_paths(store, certs))

    def is_cross_sign(self, cert: Cert) -> bool:
        if cert.names_itself:
            return False
        found = self.found
        twins = [c for store in self.stores for c in store.named(cert.subject_der)]
        twins += found.nodes_by_subject.get(cert.subject_der, [])
        twins += [c for c in found.self_signed if c.subject_der == cert.subject_der]
        return any(twin.identity == cert.identity and twin.names_itself for twin in twins)

    def unrelated_detail(self, cert: Cert) -> str:
        for child in self.found.reached:
            if child.issuer_der == cert.subject_der:
                return (
                    f"its name matches the issuer of {child.short_subject}, "
                    "but its key does not verify that certificate's signature"
                )
        return "no certificate on a path from the leaf was issued by it"

    def issuer_problem(self, cert: Cert) -> tuple[Reason, str]:
        issuers = self.found.chain_issuers.get(cert, ()) + self.found.anchor_issuers.get(cert, ())
        name = cert.short_issuer
        if not issuers:
            return Reason.ISSUER_UNTRUSTED, f"its issuer {name} is in no trust store and not in the chain"
        if all(not issuer.valid_at(self.at) for issuer in issuers):
            ends = max(issuer.not_after for issuer in issuers)
            return Reason.ISSUER_EXPIRED, f"its issuer {name} expired on {day(ends)}"
        if all(not self.usable(issuer) for issuer in issuers):
            return Reason.ISSUER_DISTRUSTED, f"its issuer {name} is distrusted"
        return Reason.ISSUER_UNTRUSTED, f"its issuer {name} leads to no anchor of any configured store"

    def incomplete_message(self, store: TrustStore) -> str:
        prefix = f"clients using {store.name} cannot validate the served chain"
        # Explain with every path, not only the served ones: the useful news
        # is why the way through a dropped cross-sign is closed.
        candidates = [path for path in self.found.paths if path.anchor in store]
        if not candidates:
            return f"{prefix}: no path from the leaf reaches one of its anchors"
        for path in candidates:
            for cert in (*path.via, path.anchor):
                if self.policy.distrust.matches(cert):
                    return f"{prefix}: {cert.short_subject} is distrusted"
                if not cert.valid_at(self.at):
                    return f"{prefix}: {cert.short_subject} {validity_detail(cert, self.at).removeprefix('it ')}"
        return prefix


def day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def validity_detail(cert: Cert, at: dt.datetime) -> str:
    if at > cert.not_after:
        return f"it expired on {day(cert.not_after)}"
    return f"it is not valid before {day(cert.not_before)}"
