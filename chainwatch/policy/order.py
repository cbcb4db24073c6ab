"""Ordering what is kept: the served chain, leaf first, for clients that take the first match.

Owns step 5 of the algorithm (see :mod:`chainwatch.policy`): which stores
each kept certificate serves (counting only paths a client that looks in its
store first also takes), the order that puts the twin more stores validate
through first, and which stores that order strands. It decides no
certificate's fate (that is :mod:`chainwatch.policy.keep`'s) and may not read
a clock or a file.
"""

from __future__ import annotations

from collections.abc import Mapping

from chainwatch.certificate import Cert
from chainwatch.policy.judge import Judge

__all__ = ["conflicting_twins", "order", "stores_through"]


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
    # CA that sends a working chain got right; the fingerprint settles
    # the rest.
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
