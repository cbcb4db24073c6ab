"""Finding candidate paths: every way up from the leaf to an anchor, ignoring time.

Owns steps 1 and 2 of the algorithm (see :mod:`chainwatch.policy`): which
certificate is the leaf, which certificates may issue which (subject name
and a verifying signature, never key identifiers), the one budget that
bounds the search, and how far each certificate sits from the leaf. Like
Go's ``findPotentialParents`` it only proposes: whether a path is valid, at
which time and for which client, is :mod:`chainwatch.policy.judge`'s to say.
It may not read a clock, a file or the distrust list.
"""

from __future__ import annotations

from collections.abc import Sequence

from chainwatch.errors import InputError
from chainwatch.policy.decision import Path
from chainwatch.x509.certificate import Cert
from chainwatch.x509.signature import signed_by
from chainwatch.x509.trust import TrustStore

__all__ = ["MAX_PATH_STEPS", "Candidates", "find_leaf"]

# Chains have a handful of certificates; a walk longer than this is a file
# built to make us work (cross-sign meshes), and we refuse it rather than
# guess. Go's verifier bounds its signature checks the same way.
MAX_PATH_STEPS = 10_000


class Candidates:
    """The chain's certificates, who may issue whom, and every path found from the leaf.

    Built once per decision and read-only afterwards.
    """

    def __init__(self, certs: Sequence[Cert], stores: Sequence[TrustStore], leaf_key: bytes | None) -> None:
        self.certs = list(certs)
        self.stores = list(stores)
        self.leaf_position = find_leaf(self.certs, leaf_key)
        self.leaf = self.certs[self.leaf_position]
        self.first_position: dict[Cert, int] = {}
        """Where each distinct certificate first appears in the file."""
        for position, cert in enumerate(self.certs):
            self.first_position.setdefault(cert, position)
        # Self-signed certificates are never sent: a client that trusts the
        # root has it already, and one that does not will not start to.
        self.self_signed = {
            cert for cert in self.first_position if cert != self.leaf and cert.names_itself and signed_by(cert, cert)
        }
        self.nodes_by_subject: dict[bytes, list[Cert]] = {}
        """The chain's certificates that may sit above the leaf, by subject."""
        for cert in self.first_position:
            if cert != self.leaf and cert not in self.self_signed:
                self.nodes_by_subject.setdefault(cert.subject_der, []).append(cert)
        self.chain_issuers: dict[Cert, tuple[Cert, ...]] = {}
        self.anchor_issuers: dict[Cert, tuple[Cert, ...]] = {}
        self.paths: list[Path] = []
        self.reached: set[Cert] = {self.leaf}
        self._steps = 0
        self._walk(self.leaf, (), frozenset({self.leaf.identity}))

    def _issuers(self, cert: Cert) -> None:
        if cert in self.chain_issuers:
            return
        self.chain_issuers[cert] = tuple(
            candidate
            for candidate in self.nodes_by_subject.get(cert.issuer_der, ())
            if candidate != cert and candidate.is_ca and signed_by(cert, candidate)
        )
        anchors: dict[Cert, None] = {}
        for store in self.stores:
            for candidate in store.named(cert.issuer_der):
                if candidate not in anchors and candidate.is_ca and signed_by(cert, candidate):
                    anchors[candidate] = None
        self.anchor_issuers[cert] = tuple(anchors)

    def _walk(self, cert: Cert, via: tuple[Cert, ...], identities: frozenset[tuple[bytes, bytes]]) -> None:
        self._steps += 1
        if self._steps > MAX_PATH_STEPS:
            raise InputError(f"the chain has more than {MAX_PATH_STEPS} alternative paths; refusing to search them all")
        self._issuers(cert)
        for anchor in self.anchor_issuers[cert]:
            self.paths.append(Path(self.leaf, via, anchor))
        for issuer in self.chain_issuers[cert]:
            if issuer.identity in identities:
                continue
            self.reached.add(issuer)
            self._walk(issuer, (*via, issuer), identities | {issuer.identity})

    def twins(self, cert: Cert) -> list[Cert]:
        """Other certificates of the chain for the same CA (subject and key) from another issuer."""
        return [
            twin
            for twin in self.nodes_by_subject.get(cert.subject_der, [])
            if twin != cert and twin.identity == cert.identity and twin.issuer_der != cert.issuer_der
        ]

    def depths(self, kept: set[Cert]) -> dict[Cert, int]:
        """How many steps up from the leaf each certificate of ``kept`` is reached, through ``kept`` only."""
        depth = {self.leaf: 0}
        frontier = [self.leaf]
        while frontier:
            following = []
            for cert in frontier:
                for issuer in self.chain_issuers.get(cert, ()):
                    if issuer in kept and issuer not in depth:
                        depth[issuer] = depth[cert] + 1
                        following.append(issuer)
            frontier = sorted(following, key=self.first_position.__getitem__)
        return depth

    def reach(self, cert: Cert, kept: set[Cert]) -> frozenset[bytes]:
        """The issuer names on every way up from ``cert`` through ``kept``: whoever
        trusts one of those CAs can take ``cert``."""
        names: set[bytes] = set()
        seen: set[Cert] = set()
        frontier = [cert]
        while frontier:
            current = frontier.pop()
            if current not in seen:
                seen.add(current)
                names.add(current.issuer_der)
                frontier += [issuer for issuer in self.chain_issuers.get(current, ()) if issuer in kept]
        return frozenset(names)


def find_leaf(certs: Sequence[Cert], leaf_key: bytes | None) -> int:
    """The leaf's position: the certificate of ``leaf_key``, else the first end-entity certificate."""
    if not certs:
        raise InputError("the chain has no certificate")
    if leaf_key is not None:
        for position, cert in enumerate(certs):
            if cert.has_public_key(leaf_key):
                return position
        raise InputError("the private key matches no certificate in the chain")
    for position, cert in enumerate(certs):
        if not cert.is_ca:
            return position
    raise InputError("the chain has no end-entity certificate (only CA certificates): there is no leaf to serve")
