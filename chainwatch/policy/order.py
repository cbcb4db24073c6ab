"""Ordering what is kept, and which paths each client takes from what is served.

Owns step 5 of the algorithm (see :mod:`chainwatch.policy`): which clients
each kept certificate serves (counting only paths a client that looks in its
store first also takes), the order that puts the twin more clients validate
through first, which clients that order strands, and the one place in the
policy's own judgement that reads a client model's path building: the paths
a backtracking, trusted-first or first-match client takes from a served set
(a first-match client's path is the one
:func:`~chainwatch.policy.client_check.first_match_chain` builds). It decides no certificate's fate
(that is :mod:`chainwatch.policy.keep`'s) and may not read a clock or a file.
"""

from __future__ import annotations

from collections.abc import Mapping

from chainwatch.policy.client_check import Client, first_match_chain
from chainwatch.policy.decision import Path
from chainwatch.policy.judge import Judge
from chainwatch.policy.settings import PathBuilding
from chainwatch.x509.certificate import Cert

__all__ = ["conflicting_twins", "first_match_path", "order", "stores_through", "taken_paths"]


def stores_through(judge: Judge, kept: set[Cert]) -> dict[Cert, list[str]]:
    """For each kept certificate: the clients with a valid path through it
    that clients looking in their store first also take."""
    through: dict[Cert, list[str]] = {cert: [] for cert in kept}
    for client in judge.clients:
        for path in judge.valid_paths(client, kept):
            if judge.shadowed(path, client):
                continue
            for cert in path.via:
                if client.name not in through[cert]:
                    through[cert].append(client.name)
    return through


def order(judge: Judge, kept: set[Cert], through: Mapping[Cert, list[str]]) -> tuple[Cert, ...]:
    """``kept`` as served: by depth from the leaf, then as most clients need it."""
    depth = judge.found.depths(kept)
    first_position = judge.found.first_position
    # Clients that take the first matching issuer at each depth (OpenSSL
    # 3.0, GnuTLS) need the twin that validates first: the one more
    # clients validate through goes first, then the file's order, which a
    # CA that sends a working chain got right; the fingerprint breaks the
    # remaining ties. A certificate the leaf no longer reaches (minimal mode
    # trying a set without its issuer) goes last.
    unreached = len(kept)
    return tuple(
        sorted(
            kept,
            key=lambda cert: (
                depth.get(cert, unreached),
                -len(through[cert]),
                first_position[cert],
                cert.sha256,
            ),
        )
    )


def conflicting_twins(judge: Judge, chain: tuple[Cert, ...], through: Mapping[Cert, list[str]]) -> list[str]:
    """Clients that validate only through a kept twin that is not the first one served."""
    first_of: dict[tuple[bytes, bytes], Cert] = {}
    for cert in chain[1:]:
        first_of.setdefault(cert.identity, cert)
    stranded: list[str] = []
    for cert in chain[1:]:
        first = first_of[cert.identity]
        for name in through[cert]:
            if cert != first and name not in through[first] and name not in stranded:
                stranded.append(name)
    return [client.name for client in judge.clients if client.name in stranded]


def taken_paths(judge: Judge, client: Client, kept: set[Cert]) -> list[Path]:
    """The valid paths ``client`` takes when ``kept`` is served, as its model builds paths."""
    building = judge.model(client).path_building
    if building is PathBuilding.FIRST_MATCH:
        path = first_match_path(judge, client, order(judge, kept, stores_through(judge, kept)))
        return [path] if path is not None and judge.valid(path, client, kept) else []
    paths = judge.valid_paths(client, kept)
    if building is PathBuilding.TRUSTED_FIRST:
        return [path for path in paths if not judge.shadowed(path, client)]
    return paths


def first_match_path(judge: Judge, client: Client, chain: tuple[Cert, ...]) -> Path | None:
    """The one path a first-match client builds from ``chain`` as served, valid or not; None if it finds no anchor.

    As OpenSSL 1.0.2's ``X509_verify_cert`` (see
    :func:`~chainwatch.policy.client_check.first_match_chain`): up through
    the served certificates first, at each step the first issuer served (the
    first one currently valid, else the last, as later 1.0.2 releases do;
    1.0.2e takes the first whatever its dates, and a chain the policy serves
    holds no expired certificate, so both build the same path from it), then
    the store; only when the top is no trusted root does it try lower down.
    A trusted issuer it finds ends the path even when expired: the client
    fails there, it does not look for another way.
    """
    built, trusted_from = first_match_chain(chain, client.store, judge.at, prefer_valid=True)
    if not 0 < trusted_from < len(built):
        return None
    return Path(judge.found.leaf, built[1:trusted_from], built[trusted_from])
