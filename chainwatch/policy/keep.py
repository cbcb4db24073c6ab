"""What is kept: a verdict for every certificate of the file.

Owns step 4 of the algorithm (see :mod:`chainwatch.policy`): duplicates,
self-signed roots, certificates on no path, expired ones, cross-signs that
lead only to closed ways, twins another twin covers, orphans, and in minimal
mode what no configured client needs. Every rule asks :mod:`chainwatch.policy.judge`
whether a path is valid and never decides validity itself; the order in
which the kept certificates are served is :mod:`chainwatch.policy.order`'s.
It may not read a clock or a file.
"""

from __future__ import annotations

from chainwatch.policy.decision import Reason, Role, Verdict
from chainwatch.policy.judge import Judge, day, validity_detail
from chainwatch.policy.order import taken_paths
from chainwatch.policy.settings import Mode
from chainwatch.x509.certificate import Cert

__all__ = ["keep"]


def keep(judge: Judge) -> tuple[dict[Cert, Role], dict[int, Verdict]]:
    """The kept certificates with their roles, and a verdict for every position of the file."""
    found = judge.found
    users: dict[Cert, list[str]] = {}
    for client in judge.clients:
        for path in judge.valid_paths(client):
            for cert in path.via:
                names = users.setdefault(cert, [])
                if client.name not in names:
                    names.append(client.name)

    leaf, leaf_position = found.leaf, found.leaf_position
    verdicts: dict[int, Verdict] = {}
    kept: dict[Cert, Role] = {leaf: Role.LEAF}
    verdicts[leaf_position] = Verdict(leaf, leaf_position, Role.LEAF, None, "the leaf is always served")
    for position, cert in enumerate(found.certs):
        if position == leaf_position:
            continue
        first = found.first_position[cert]
        if first != position:
            verdicts[position] = _drop(cert, position, Reason.DUPLICATE, f"same certificate as number {first + 1}")
        elif cert in found.self_signed:
            verdicts[position] = _drop(
                cert, position, Reason.ANCHOR, "self-signed root: clients use their own copy or none"
            )
        elif cert not in found.reached:
            verdicts[position] = _drop(cert, position, Reason.UNRELATED, judge.unrelated_detail(cert))
        elif not cert.valid_at(judge.at):
            verdicts[position] = _drop(cert, position, Reason.EXPIRED, validity_detail(cert, judge.at))
        elif cert in users:
            role = Role.CROSS_SIGN if judge.is_cross_sign(cert) else Role.INTERMEDIATE
            kept[cert] = role
            verdicts[position] = Verdict(cert, position, role, None, f"needed by {', '.join(users[cert])}")
        elif judge.is_cross_sign(cert) or any(twin in users for twin in found.twins(cert)):
            # Clients reach this position through the root's own
            # certificate or a twin that some store validates; this one
            # only adds a dead end (first-match clients may take it).
            reason, detail = judge.issuer_problem(cert)
            verdicts[position] = _drop(cert, position, reason, detail)
        else:
            # A plain intermediate that no configured store validates is
            # still the leaf's issuer: dropping it helps no one, and a
            # client with a store we were not told about may need it.
            kept[cert] = Role.INTERMEDIATE
            verdicts[position] = Verdict(
                cert, position, Role.INTERMEDIATE, None, "kept although no configured store validates it"
            )

    _drop_covered_twins(judge, kept, verdicts)
    _drop_orphans(judge, kept, verdicts)
    if judge.policy.mode == Mode.MINIMAL:
        _drop_unneeded(judge, kept, verdicts)
    return kept, verdicts


def _drop(cert: Cert, position: int, reason: Reason, detail: str) -> Verdict:
    return Verdict(cert, position, None, reason, detail)


def _covers(judge: Judge, twin: Cert, cert: Cert, reach: frozenset[bytes], kept: set[Cert]) -> bool:
    """Whether ``twin`` takes every client of ``cert`` where ``cert`` would.

    Either its issuer made it again (the same issuers verify both), or
    it is issued by a root a configured store holds and, through a
    cross-sign of that root, also leads to every CA ``cert`` leads to.
    A twin whose way up passes only CAs no store holds is no such cover:
    GnuTLS follows the first twin served to its end and trusts only that.
    """
    found = judge.found
    if twin.issuer_der == cert.issuer_der:
        issuers = found.chain_issuers.get(twin, ()) + found.anchor_issuers.get(twin, ())
        return bool(issuers) and set(issuers) == set(
            found.chain_issuers.get(cert, ()) + found.anchor_issuers.get(cert, ())
        )
    return bool(found.anchor_issuers.get(twin)) and found.reach(twin, kept) >= reach


def _drop_covered_twins(judge: Judge, kept: dict[Cert, Role], verdicts: dict[int, Verdict]) -> None:
    """Drop a twin when another kept twin leads to every CA it leads to.

    No client needs it, whatever its store (see :func:`_covers`). Every
    configured store must still validate as before. Serving both made
    GnuTLS 3.7 reject chains it accepts with one (found by the property
    tests: two renewals of one CA, or twins from two roots with a
    cross-sign between those roots).
    """
    found = judge.found
    current = set(kept)
    constraining = [client for client in judge.clients if taken_paths(judge, client, current)]
    trusted_first = [c for c in constraining if judge.broad(c) and judge.taken_trusted_first(c, current)]
    groups: dict[tuple[bytes, bytes], list[Cert]] = {}
    for cert in kept:
        if cert != found.leaf:
            groups.setdefault(cert.identity, []).append(cert)
    for group in (group for group in groups.values() if len(group) > 1):
        # The twin that leads to fewest CAs and ends first is tried first.
        weakest_first = sorted(group, key=lambda c: (len(found.reach(c, current)), c.not_after, c.sha256))
        for cert in weakest_first:
            reach = found.reach(cert, current)
            trial = current - {cert}
            cover = next((t for t in group if t in trial and _covers(judge, t, cert, reach, trial)), None)
            if cover is None:
                continue
            if not all(taken_paths(judge, client, trial) for client in constraining):
                continue
            if not all(judge.taken_trusted_first(client, trial) for client in trusted_first):
                continue
            if judge.on_valid_paths(trial) != judge.on_valid_paths(current) - {cert}:
                continue  # a certificate served for its sake would be left on no valid path
            current = trial
            del kept[cert]
            position, served_at = found.first_position[cert], found.first_position[cover] + 1
            if cover.issuer_der == cert.issuer_der:
                detail = f"its issuer certified it again, until {day(cover.not_after)}: number {served_at} is served"
            else:
                detail = f"number {served_at}, the same CA from {cover.short_issuer}, leads to every CA it leads to"
            verdicts[position] = _drop(cert, position, Reason.COVERED, detail)


def _drop_orphans(judge: Judge, kept: dict[Cert, Role], verdicts: dict[int, Verdict]) -> None:
    found = judge.found
    reachable = set(found.depths(set(kept)))
    for cert in [cert for cert in kept if cert not in reachable]:
        del kept[cert]
        position = found.first_position[cert]
        verdicts[position] = _drop(
            cert, position, Reason.UNRELATED, "reachable from the leaf only through dropped certificates"
        )


def _drop_unneeded(judge: Judge, kept: dict[Cert, Role], verdicts: dict[int, Verdict]) -> None:
    found = judge.found
    current = set(kept)
    constraining = [client for client in judge.clients if taken_paths(judge, client, current)]
    # A store some path serves even to clients that look in their store
    # first must keep such a path: shedding the others can leave only one
    # those clients never take (it climbs past the store's expired root).
    trusted_first = [c for c in constraining if judge.broad(c) and judge.taken_trusted_first(c, current)]
    depth = found.depths(current)
    # Try the certificates farthest from the leaf first: those are the
    # cross-signs towards old roots that minimal mode exists to shed.
    # Among equals the shorter-lived goes first, and nothing depends on
    # the file's order.
    candidates = sorted(
        (cert for cert in kept if cert != found.leaf),
        key=lambda cert: (kept[cert] != Role.CROSS_SIGN, -depth.get(cert, 0), cert.not_after, cert.sha256),
    )
    for cert in candidates:
        trial = current - {cert}
        if all(taken_paths(judge, client, trial) for client in constraining) and all(
            judge.taken_trusted_first(client, trial) for client in trusted_first
        ):
            current = trial
            del kept[cert]
            position = found.first_position[cert]
            verdicts[position] = _drop(
                cert, position, Reason.NOT_NEEDED, "every store that validates the chain still does without it"
            )
