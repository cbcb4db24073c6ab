"""Judging candidate paths: validity at the decision's time, anchors, expiry, distrust.

Owns step 3 of the algorithm (see :mod:`chainwatch.policy`): whether a path
found by :mod:`chainwatch.policy.paths` is valid for a client at the given
time, whether an anchor anchors for the client's model (the one place
that reads :class:`~chainwatch.policy.settings.ClientModel`'s anchor rule),
whether a client that looks in its store first ever takes a path, and the
sentences that say why a certificate leads nowhere. Like Go's ``isValid``
it judges what it is given and proposes nothing. The time is the caller's
(``at``); it may not read a clock or a file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from chainwatch.policy.client_check import Client
from chainwatch.policy.decision import Path, Reason
from chainwatch.policy.paths import Candidates
from chainwatch.policy.settings import ClientModel, Policy
from chainwatch.x509.certificate import Cert

__all__ = ["Judge", "day", "validity_detail"]


class Judge:
    """The rules of validity for one decision: its candidates, clients, time and policy.

    ``exact`` are the clients given with their own model, which stand for
    that model alone; the others each stand for a configured store, that is
    for every program using it (see :meth:`broad`).
    """

    def __init__(
        self,
        found: Candidates,
        clients: Sequence[Client],
        at: dt.datetime,
        policy: Policy,
        exact: Sequence[Client] = (),
    ) -> None:
        self.found = found
        self.clients = [*clients, *exact]
        # By name (unique in a decision): hashing a client hashes its whole store.
        self._exact = {client.name for client in exact}
        # Every rule asks again for the same client's paths through the same
        # set; remembered for this decision only.
        self._valid_paths: dict[tuple[str, frozenset[Cert] | None], list[Path]] = {}
        self.at = at
        self.policy = policy

    def model(self, client: Client) -> ClientModel:
        """How ``client`` builds paths and treats its anchors."""
        return client.model

    def broad(self, client: Client) -> bool:
        """Whether ``client`` stands for a configured store rather than one modelled client.

        The served chain is then also kept good for its programs that look
        in their store first, whatever its model says.
        """
        return client.name not in self._exact

    def usable(self, cert: Cert) -> bool:
        return cert.valid_at(self.at) and not self.policy.distrust.matches(cert)

    def anchors(self, anchor: Cert, model: ClientModel) -> bool:
        """Whether ``anchor``, held by a client of ``model``, ends a valid path."""
        if model.anchor_expiry:
            return self.usable(anchor)
        return not self.policy.distrust.matches(anchor)

    def valid(self, path: Path, client: Client, kept: set[Cert] | None = None) -> bool:
        return self._valid(path, client, kept)

    def valid_paths(self, client: Client, kept: set[Cert] | None = None) -> list[Path]:
        """Every path ``client`` would accept, served as it likes: backtracking."""
        key = (client.name, None if kept is None else frozenset(kept))
        paths = self._valid_paths.get(key)
        if paths is None:
            paths = self._valid_paths[key] = [path for path in self.found.paths if self._valid(path, client, kept)]
        return list(paths)

    def _valid(self, path: Path, client: Client, kept: set[Cert] | None) -> bool:
        model = client.model
        return (
            path.anchor in client.store
            and self.anchors(path.anchor, model)
            and all(self.usable(cert) for cert in path.via)
            and (kept is None or all(cert in kept for cert in path.via))
        )

    def on_valid_paths(self, kept: set[Cert]) -> set[Cert]:
        return {cert for client in self.clients for path in self.valid_paths(client, kept) for cert in path.via}

    def shadowed(self, path: Path, client: Client) -> bool:
        """Whether a client that looks for an issuer in its store first never takes ``path``.

        OpenSSL stops at a trusted issuer of the right name and key, even an
        expired one, before it looks at the untrusted certificates: a path
        that climbs past a certificate whose issuer the store holds, expired
        (where the store's model checks anchors' expiry) or distrusted, fails
        for it.
        """
        for cert in (path.leaf, *path.via[:-1]):
            trusted = [anchor for anchor in self.found.anchor_issuers.get(cert, ()) if anchor in client.store]
            if trusted and not any(self.anchors(anchor, client.model) for anchor in trusted):
                return True
        return False

    def taken_trusted_first(self, client: Client, certs: set[Cert]) -> bool:
        """Whether ``client``, looking in its store first, takes a valid path through ``certs``."""
        return any(not self.shadowed(path, client) for path in self.valid_paths(client, certs))

    def is_cross_sign(self, cert: Cert) -> bool:
        if cert.names_itself:
            return False
        found = self.found
        twins = [c for store in found.stores for c in store.named(cert.subject_der)]
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

    def incomplete_message(self, client: Client) -> str:
        prefix = f"clients using {client.name} cannot validate the served chain"
        # Explain with every path, not only the served ones: the useful news
        # is why the way through a dropped cross-sign is closed.
        candidates = [path for path in self.found.paths if path.anchor in client.store]
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
