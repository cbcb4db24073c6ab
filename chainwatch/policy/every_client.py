"""The served chain checked against every configured client's own model.

Owns the last step of the algorithm (see :mod:`chainwatch.policy`): the
chain that steps 1-5 chose is judged by each client as it builds paths
(:func:`~chainwatch.policy.client_check.validates`), beside the file as
given. A client that validates the file but not the chain is never left
worse off: another order of the kept twins, a dropped certificate put back,
or at last the file's own certificates in its order are served instead.
A certificate that still makes a client fail (a cross-sign leading a
first-match client to an expired root) is dropped when every client that
validates with it validates without it: kept on a valid path in step 4, it
is needed by no one.
It also names the clients at risk (those some other choice would serve)
and gives every client its result. Fetching missing intermediates (``aia``)
never counts here: it is shown in the results, never relied on.
It may not read a clock or a file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from chainwatch.policy.client_check import Client, ClientCheck, validates
from chainwatch.policy.decision import ClientResult, Reason, Role, Verdict
from chainwatch.policy.judge import Judge
from chainwatch.policy.order import taken_paths
from chainwatch.x509.certificate import Cert

__all__ = ["ClientChecks", "as_given", "at_risk", "client_results", "drop_breaking", "serve_every_client"]

# Orders of kept twins tried before anything is put back: a chain has a
# twin or two at a depth, and a file built to make us try every order of
# many gets the first few only.
_MAX_ORDERS = 24
_NOT_NEEDED = frozenset({Reason.DUPLICATE, Reason.ANCHOR, Reason.UNRELATED})


class ClientChecks:
    """Each client's verdicts on the chains one decision weighs, each judged once."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self._known: dict[tuple[object, ...], ClientCheck] = {}
        self._file = frozenset(judge.found.certs)
        self._store_unused: dict[str, bool] = {}

    def __call__(self, client: Client, chain: Sequence[Cert], *, fetch: Sequence[Cert] = ()) -> ClientCheck:
        """``client``'s verdict on ``chain``; fetching from ``fetch`` only if it fetches, and only when asked."""
        fetching = bool(fetch) and client.model.aia
        key = self._key(client, tuple(chain), fetch, fetching)
        known = self._known.get(key)
        if known is None:
            judge = self.judge
            model = client.model._replace(aia=fetching)
            known = validates(chain, client.store, model, judge.at, fetchable=fetch, distrust=judge.policy.distrust)
            self._known[key] = known
        return known

    def _key(
        self, client: Client, chain: tuple[Cert, ...], fetch: Sequence[Cert], fetching: bool
    ) -> tuple[object, ...]:
        """Which verdict ``client``'s is: one shared by every client whose store adds nothing to the file.

        A store that holds none of the file's certificates and no anchor named
        as the issuer of one adds nothing to any path built from them: such a
        client builds from the served certificates alone and fails for want of
        an issuer, in the same words whatever its store, its anchors' expiry or
        its fetching (what it could fetch is the file's too). Only how it
        builds paths tells such clients apart: the common case of a chain to a
        root most clients lack is judged once per way of building, not once
        per client.
        """
        unused = self._store_unused.get(client.name)
        if unused is None:
            store = client.store
            unused = all(not store.named(cert.issuer_der) and cert not in store for cert in self._file)
            self._store_unused[client.name] = unused
        if unused and self._file.issuperset((*chain, *fetch)):
            return (None, client.model.path_building, chain)
        return (client.name, chain, fetching)


def as_given(judge: Judge) -> tuple[Cert, ...]:
    """The file as a server holding it sends it, its leaf first: what the served chain must not do worse than."""
    found = judge.found
    return (found.leaf, *(cert for position, cert in enumerate(found.certs) if position != found.leaf_position))


def serve_every_client(check: ClientChecks, chain: tuple[Cert, ...], verdicts: dict[int, Verdict]) -> tuple[Cert, ...]:
    """``chain``, or an alternative with which no client validates less than with the file.

    Of the orders of the kept twins, the one that most clients validate
    (the first such, ``chain`` itself first); failing every order, the
    first chain with a certificate put back, or at last the file's own
    certificates. Updates ``verdicts`` for a certificate put back.
    """
    judge = check.judge
    given = as_given(judge)
    # Clients by name (unique in a decision): hashing a client hashes its whole store.
    needs = {client.name for client in judge.clients if check(client, given).ok}

    def validating(candidate: tuple[Cert, ...]) -> set[str]:
        return {client.name for client in judge.clients if check(client, candidate).ok}

    best, best_ok = chain, validating(chain)
    if len(best_ok) == len(judge.clients):
        return chain
    for candidate in itertools.islice(_orders(chain), 1, _MAX_ORDERS):
        ok = validating(candidate)
        if (needs <= ok, len(ok)) > (needs <= best_ok, len(best_ok)):
            best, best_ok = candidate, ok
    if needs <= best_ok:
        return best
    failing = [client for client in judge.clients if client.name in needs and client.name not in best_ok]
    for candidate in _put_back_candidates(judge, chain, verdicts, given):
        if needs <= validating(candidate):
            _put_back(judge, candidate, chain, verdicts, failing)
            return candidate
    return chain  # unreachable: the file as given serves every client it serves


def drop_breaking(check: ClientChecks, chain: tuple[Cert, ...], verdicts: dict[int, Verdict]) -> tuple[Cert, ...]:
    """``chain`` without the certificates that make a client fail and that no client needs.

    One is dropped when some client that fails on the chain validates
    without it while every client that validates with it still does: each
    by its own model, and a configured store's client also by the rules
    steps 3-5 judge it by (its programs that look in their store first
    among them). Cross-signs are tried first, nearest the leaf first, so
    that a dead branch goes at once; what the leaf then no longer reaches
    goes with it. Updates ``verdicts``.
    """
    judge = check.judge
    while True:
        failing = [client for client in judge.clients if not check(client, chain).ok]
        if not failing:
            return chain
        depth = judge.found.depths(set(chain))
        candidates = sorted(
            chain[1:],
            key=lambda cert: (not judge.is_cross_sign(cert), depth.get(cert, 0), cert.not_after, cert.sha256),
        )
        for cert in candidates:
            trial = tuple(other for other in chain if other != cert)
            broken = [client for client in failing if check(client, trial).ok]
            if broken and not _loses_a_client(check, chain, trial):
                _drop_breaking(check, cert, chain, broken, verdicts)
                reached = judge.found.depths(set(trial))
                chain = tuple(other for other in trial if other in reached)
                _drop_unreached(judge, trial, chain, verdicts)
                break
        else:
            return chain


def _loses_a_client(check: ClientChecks, chain: tuple[Cert, ...], trial: tuple[Cert, ...]) -> bool:
    judge = check.judge
    current, without = set(chain), set(trial)
    for client in judge.clients:
        if check(client, chain).ok and not check(client, trial).ok:
            return True
        if judge.broad(client):
            if taken_paths(judge, client, current) and not taken_paths(judge, client, without):
                return True
            if judge.taken_trusted_first(client, current) and not judge.taken_trusted_first(client, without):
                return True
    return False


def _drop_breaking(
    check: ClientChecks, cert: Cert, chain: tuple[Cert, ...], broken: list[Client], verdicts: dict[int, Verdict]
) -> None:
    judge = check.judge
    position = judge.found.first_position[cert]
    names = ", ".join(client.name for client in broken)
    why = check(broken[0], chain).detail
    harm = f"served, it breaks {names} ({why}), and every client that validates with it validates without it"
    reason, issuer = judge.issuer_problem(cert)
    if reason in (Reason.ISSUER_EXPIRED, Reason.ISSUER_DISTRUSTED):
        verdicts[position] = Verdict(cert, position, None, reason, f"{issuer}; {harm}")
    else:
        verdicts[position] = Verdict(cert, position, None, Reason.BREAKS_CLIENT, harm)


def _drop_unreached(
    judge: Judge, trial: tuple[Cert, ...], chain: tuple[Cert, ...], verdicts: dict[int, Verdict]
) -> None:
    for cert in trial:
        if cert not in chain:
            position = judge.found.first_position[cert]
            detail = "reachable from the leaf only through dropped certificates"
            verdicts[position] = Verdict(cert, position, None, Reason.UNRELATED, detail)


def _put_back_candidates(
    judge: Judge, chain: tuple[Cert, ...], verdicts: dict[int, Verdict], given: tuple[Cert, ...]
) -> Iterator[tuple[Cert, ...]]:
    dropped = [
        verdict.cert
        for verdict in verdicts.values()
        if not verdict.kept and verdict.reason not in _NOT_NEEDED and verdict.cert in judge.found.reached
    ]
    for cert in dropped:
        for position in range(1, len(chain) + 1):
            yield (*chain[:position], cert, *chain[position:])
    distinct = tuple(dict.fromkeys(given))
    yield tuple(cert for cert in distinct if cert == judge.found.leaf or cert not in judge.found.self_signed)
    yield distinct
    yield given


def _orders(chain: tuple[Cert, ...]) -> Iterator[tuple[Cert, ...]]:
    """``chain`` with its twins (one subject and key) in every order, each twin keeping the group's places."""
    groups: dict[tuple[bytes, bytes], list[int]] = {}
    for position, cert in enumerate(chain[1:], start=1):
        groups.setdefault(cert.identity, []).append(position)
    places = [positions for positions in groups.values() if len(positions) > 1]
    for choice in itertools.product(*(itertools.permutations(positions) for positions in places)):
        order = list(chain)
        for positions, permuted in zip(places, choice, strict=True):
            for place, source in zip(positions, permuted, strict=True):
                order[place] = chain[source]
        yield tuple(order)


def _put_back(
    judge: Judge,
    candidate: tuple[Cert, ...],
    chain: tuple[Cert, ...],
    verdicts: dict[int, Verdict],
    failing: list[Client],
) -> None:
    names = ", ".join(client.name for client in failing)
    for cert in dict.fromkeys(candidate):
        if cert in chain:
            continue
        position = judge.found.first_position[cert]
        role = Role.CROSS_SIGN if judge.is_cross_sign(cert) else Role.INTERMEDIATE
        detail = f"kept for {names}: they validate the file only with it"
        verdicts[position] = Verdict(cert, position, role, None, detail)


def at_risk(check: ClientChecks, chain: tuple[Cert, ...]) -> list[str]:
    """Clients that fail on ``chain`` although another order or choice of the file's certificates serves them."""
    judge = check.judge
    failing = [client for client in judge.clients if not check(client, chain).ok]
    if not failing:
        return []
    given = as_given(judge)
    others = [
        *itertools.islice(_orders(chain), 1, _MAX_ORDERS),
        *((*chain[:position], *chain[position + 1 :]) for position in range(1, len(chain))),
        given,
    ]
    return [client.name for client in failing if any(check(client, other).ok for other in others if other != chain)]


def client_results(check: ClientChecks, certs: Sequence[Cert], chain: tuple[Cert, ...]) -> tuple[ClientResult, ...]:
    """Every client's result on the file ``certs`` as given and on the served ``chain``."""
    judge = check.judge
    results: list[ClientResult] = []
    fetch = tuple(certs)
    leaf_first = bool(certs) and certs[0] == judge.found.leaf
    for client in judge.clients:
        served = check(client, chain)
        if client.model.aia and not served.ok:
            served = check(client, chain, fetch=fetch)
        if leaf_first:
            given = check(client, certs)
            if client.model.aia and not given.ok:
                given = check(client, certs, fetch=fetch)
        else:
            first = certs[0].short_subject
            given = ClientCheck(False, f"the file starts with {first}, not the leaf, and a server sends it first")
        detail = served.detail if not served.ok or given.ok else f"as given, {given.detail}"
        results.append(ClientResult(client.name, given.ok, served.ok, detail))
    return tuple(results)
