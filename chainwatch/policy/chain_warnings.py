"""Warnings about the served chain as a whole, applied after the certificates are judged.

Owns the rules on the whole chain (Go's verifier applies its own after
building): an expired or not yet valid leaf, a store left without a valid
path, what expires within the horizon, a reordered file, twins that strand a
store, and when a served certificate starts to count as expiring soon.
It keeps or drops nothing and may not read a clock or a file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from chainwatch.policy.client_check import Client, ClientCheck
from chainwatch.policy.decision import ChainWarning, WarningCode
from chainwatch.policy.judge import Judge, day, validity_detail
from chainwatch.policy.order import conflicting_twins, first_match_path, taken_paths
from chainwatch.policy.settings import PathBuilding, leaf_horizon
from chainwatch.x509.certificate import Cert

__all__ = ["chain_warnings", "warn_before"]


def chain_warnings(
    judge: Judge,
    chain: tuple[Cert, ...],
    kept: set[Cert],
    through: Mapping[Cert, list[str]],
    exact: Mapping[str, ClientCheck] | None = None,
) -> list[ChainWarning]:
    """The warnings on the served ``chain``; ``exact`` is each exact client's own check of it, by name."""
    warnings: list[ChainWarning] = []
    leaf, at = judge.found.leaf, judge.at
    if at > leaf.not_after:
        warnings.append(
            ChainWarning(WarningCode.LEAF_EXPIRED, f"the leaf {leaf.short_subject} expired on {day(leaf.not_after)}")
        )
    elif at < leaf.not_before:
        warnings.append(
            ChainWarning(
                WarningCode.LEAF_NOT_YET_VALID,
                f"the leaf {leaf.short_subject} is not valid before {day(leaf.not_before)}",
            )
        )
    for client in judge.clients:
        own = (exact or {}).get(client.name)
        if own is not None and not own.ok:
            # A client of one modelled program: its own model says why.
            message = f"clients using {client.name} cannot validate the served chain: {own.detail}"
            warnings.append(ChainWarning(WarningCode.INCOMPLETE, message))
        elif own is None and not taken_paths(judge, client, kept):
            message = _first_match_failure(judge, client, chain) or judge.incomplete_message(client)
            warnings.append(ChainWarning(WarningCode.INCOMPLETE, message))
    warnings.extend(_expiring(judge, chain, kept))
    served_in_file_order = sorted(chain, key=judge.found.first_position.__getitem__)
    if list(chain) != served_in_file_order:
        warnings.append(
            ChainWarning(
                WarningCode.REORDERED,
                "the file's certificates were out of order; served leaf first, then each issuer",
            )
        )
    stranded = conflicting_twins(judge, chain, through)
    if stranded:
        warnings.append(
            ChainWarning(
                WarningCode.CONFLICTING_TWINS,
                "stores need different twins of one CA, and clients that take the first matching issuer "
                f"may fail for: {', '.join(stranded)}",
            )
        )
    return warnings


def _first_match_failure(judge: Judge, client: Client, chain: tuple[Cert, ...]) -> str | None:
    """Why first-match ``client`` fails on the path it builds from ``chain``, if it builds one."""
    if judge.model(client).path_building != PathBuilding.FIRST_MATCH:
        return None
    path = first_match_path(judge, client, chain)
    if path is None:
        return None
    model = judge.model(client)
    for cert in (*path.via, path.anchor):
        fine = judge.anchors(cert, model) if cert is path.anchor else judge.usable(cert)
        if fine:
            continue
        problem = "distrusted" if judge.policy.distrust.matches(cert) else validity_detail(cert, judge.at)
        return (
            f"clients using {client.name} cannot validate the served chain: first-match: "
            f"the served path reaches {cert.short_subject}, {problem.removeprefix('it ')}"
        )
    return None


def warn_before(judge: Judge, cert: Cert) -> dt.timedelta:
    """How long before its expiry a served certificate is "expiring soon"."""
    if cert == judge.found.leaf:
        return leaf_horizon(judge.policy.horizon, cert.not_before, cert.not_after)
    return judge.policy.horizon


def _expiring(judge: Judge, chain: tuple[Cert, ...], kept: set[Cert]) -> list[ChainWarning]:
    horizon, at = judge.policy.horizon, judge.at
    soon: dict[Cert, str] = {}
    for cert in chain:
        if cert.valid_at(at) and cert.not_after - at <= warn_before(judge, cert):
            soon[cert] = "served"
    for client in judge.clients:
        paths = taken_paths(judge, client, kept)
        # A client that never checks its anchors' dates (Android, rustls)
        # loses nothing when one expires.
        if not paths or not judge.model(client).anchor_expiry:
            continue
        best = max(paths, key=lambda path: path.anchor.not_after)
        if best.anchor.not_after - at <= horizon:
            soon.setdefault(best.anchor, f"the anchor {client.name} uses")
    return [
        ChainWarning(
            WarningCode.EXPIRING_SOON,
            f"{cert.short_subject} ({role}) expires on {day(cert.not_after)}, in {(cert.not_after - at).days} days",
        )
        for cert, role in soon.items()
    ]
