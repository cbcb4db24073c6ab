"""Ordering what is kept, and which paths each client takes from what is served.

Owns step 5 of the algorithm (see :mod:`chainwatch.policy`): which stores
each kept certificate serves (counting only paths a client that looks in its
store first also takes), the order that puts the twin more stores validate
through first, which stores that order strands, and the one place that reads
a client model's path building: the paths a backtracking, trusted-first or
first-match client takes from a served set. It decides no certificate's fate
(that is :mod:`chainwatch.policy.keep`'s) and may not read a clock or a file.
"""

from __future__ import annotations

from collections.abc import Mapping

from chainwatch.policy.decision import Path
from chainwatch.policy.judge import Judge
from chainwatch.policy.settings import PathBuilding
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore

__all__ = ["conflicting_twins", "first_match_path", "order", "stores_through", "taken_paths"]


def stores_through(judge: Judge, kept: set[Cert]) -> dict[Cert, list[str]]:
    """For each kept certificate: the stores with a valid path through it
    that clients looking in their store first also take."""
    through: dict[Cert, list[str]] = {cert: [] for cert in kept}
    for store in judge.stores:
        for path in judge.valid_paths(store, kept):
            if judge.shadowed(path, store):
                continue
            for cert in path.via:
                if store.name not in through[cert]:
                    through[cert].append(store.name)
    return through


def order(judge: Judge, kept: set[Cert], through: Mapping[Cert, list[str]]) -> tuple[Cert, ...]:
    """``kept`` as served: by depth from the leaf, then as the clients of most stores need it."""
    depth = judge.found.depths(kept)
    first_position = judge.found.first_position
    # Clients that take the first matching issuer at each depth (OpenSSL
    # 3.0, GnuTLS) need the twin that validates first: the one more
    # stores validate through goes first, then the file's order, which a
    # CA that sends a working chain got right; the fingerprint breaks
    # the remaining ties.
    return tuple(
        sorted(
            kept,
            key=lambda cert: (
                depth[cert],
                -len(through[cert]),
                first_position[cert],
                cert.sha256,
            ),
        )
    )


def conflicting_twins(judge: Judge, chain: tuple[Cert, ...], through: Mapping[Cert, list[str]]) -> list[str]:
    """Stores that validate only through a kept twin that is not the first one served."""
    first_of: dict[tuple[bytes, bytes], Cert] = {}
    for cert in chain[1:]:
        first_of.setdefault(cert.identity, cert)
    stranded: list[str] = []
    for cert in chain[1:]:
        first = first_of[cert.identity]
        for name in through[cert]:
            if cert != first and name not in through[first] and name not in stranded:
                stranded.append(name)
    return [store.name for store in judge.stores if store.name in stranded]


def taken_paths(judge: Judge, store: TrustStore, kept: set[Cert]) -> list[Path]:
    """The valid paths a client of ``store`` takes when ``kept`` is served, as its model builds paths."""
    building = judge.model(store).path_building
    if building is PathBuilding.FIRST_MATCH:
        path = first_match_path(judge, store, order(judge, kept, stores_through(judge, kept)))
        return [path] if path is not None and judge.valid(path, store, kept) else []
    paths = judge.valid_paths(store, kept)
    if building is PathBuilding.TRUSTED_FIRST:
        return [path for path in paths if not judge.shadowed(path, store)]
    return paths


def first_match_path(judge: Judge, store: TrustStore, chain: tuple[Cert, ...]) -> Path | None:
    """The one path a first-match client builds from ``chain`` as served, valid or not; None if it finds no anchor.

    As OpenSSL 1.0.2's ``X509_verify_cert``: up through the served
    certificates first, at each step the first issuer served (the first one
    currently valid, else the last), then the store; only when the store
    holds no issuer of the top does it try lower down. A trusted issuer it
    finds ends the path even when expired: the client fails there, it does
    not look for another way. Unlike OpenSSL it never passes one CA twice.
    """
    found, at = judge.found, judge.at
    via: list[Cert] = []
    identities = {found.leaf.identity}
    cert = found.leaf
    while True:
        issuers = [c for c in chain[1:] if c in found.chain_issuers.get(cert, ()) and c.identity not in identities]
        if not issuers:
            break
        cert = next((c for c in issuers if c.valid_at(at)), issuers[-1])
        via.append(cert)
        identities.add(cert.identity)
    for depth in range(len(via), -1, -1):
        below = via[depth - 1] if depth else found.leaf
        trusted = [anchor for anchor in found.anchor_issuers.get(below, ()) if anchor in store]
        if trusted:
            anchor = next((a for a in trusted if a.valid_at(at)), trusted[-1])
            return Path(found.leaf, tuple(via[:depth]), anchor)
    return None
