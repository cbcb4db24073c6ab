"""Whether one client validates a chain as a server sends it: the client models.

A client is a name, a trust store and a :class:`~chainwatch.policy.settings.ClientModel`.
:func:`validates` builds the path that client builds from the served chain
(its order counts, its first certificate is the server's own) and checks it
the way that client checks it, then says in one sentence why it fails or
what it took. It is the per-client view the policy's judgement is checked
against and the one the commands show; it never decides what to serve.

The three ways of building a path follow the real code they name:

* ``first-match``: OpenSSL 1.0.2e's ``X509_verify_cert``. Up through the
  served certificates first (``find_issuer``: the first served match, even
  an expired one while a valid twin is served after it: *measured* against
  1.0.2e through nassl), then the store; a chain whose top is no
  trusted root is retried lower down ("alternative chains": the top is cut
  where the store holds an issuer). A chain that reaches a trusted root is
  never retried, so a served cross-sign to an expired root the store holds
  fails with "certificate has expired".
* ``trusted-first``: OpenSSL 3's ``build_chain``. At each step the store
  first (a match within its dates, else the one that expires last), and a
  trusted root ends the search even when expired; otherwise the served
  issuer (within its dates, else the one that expires last), never another
  served one at the same depth.
* ``backtracking``: Go, pyca, NSS, Java, Apple, Windows, Android: any valid
  path through the served certificates and the store.

OpenSSL matches an issuer by name and key identifiers and verifies the
signature afterwards; here an issuer is a CA certificate of the right name
whose key verifies the signature, which agrees wherever the key identifiers
are honest (a certificate with a lying authority key identifier is the
known gap). A distrusted certificate is one the store holds but rejects.
Nothing here reads a clock, a file or the network.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Literal, NamedTuple

from chainwatch.policy.settings import ClientModel, Distrust, PathBuilding
from chainwatch.x509.certificate import Cert
from chainwatch.x509.signature import signed_by
from chainwatch.x509.trust import TrustStore

__all__ = ["Client", "ClientCheck", "first_match_chain", "validates"]

# OpenSSL's default verify depth (X509_VERIFY_PARAM: 100). Backtracking is
# bounded by the same number of steps: served chains have a handful of
# certificates, and a mesh of cross-signs must not cost unbounded work.
_MAX_DEPTH = 100
_MAX_STEPS = 10_000

_NO_DISTRUST = Distrust()


class Client(NamedTuple):
    """A kind of client that connects: its name, its trust store and how it builds paths."""

    name: str
    store: TrustStore
    model: ClientModel = ClientModel()


class ClientCheck(NamedTuple):
    """A client's verdict on a chain."""

    ok: bool
    detail: str
    """One sentence for a person; the caller prepends the client or store it concerns."""


_Failure = Literal["missing-issuer", "invalid", "none"]


class _Outcome(NamedTuple):
    check: ClientCheck
    failure: _Failure
    path: tuple[Cert, ...]


def validates(
    chain: Sequence[Cert],
    store: TrustStore,
    model: ClientModel,
    at: dt.datetime,
    *,
    fetchable: Collection[Cert] = (),
    distrust: Distrust = _NO_DISTRUST,
) -> ClientCheck:
    """Whether a client of ``store`` and ``model`` validates ``chain``, sent in this order, at ``at``.

    ``fetchable`` are CA certificates a client that fetches missing
    intermediates (``model.aia``) can get, such as the chain the served one
    was cut from; they count only when the served chain fails for want of an
    issuer, and the detail then says so.
    """
    if not chain:
        return ClientCheck(False, "nothing is served")
    outcome = _check(tuple(chain), store, model, at, distrust)
    if outcome.check.ok or outcome.failure != "missing-issuer" or not model.aia:
        return outcome.check
    extra = tuple(cert for cert in dict.fromkeys(fetchable) if cert not in chain and cert.is_ca)
    if not extra:
        return outcome.check
    fetched = _check((*chain, *extra), store, model, at, distrust)
    if not fetched.check.ok:
        return outcome.check
    names = ", ".join(cert.short_subject for cert in fetched.path if cert in extra)
    return ClientCheck(True, f"{model.path_building}: validates only by fetching an intermediate ({names})")


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _issues(issuer: Cert, cert: Cert) -> bool:
    return issuer.subject_der == cert.issuer_der and issuer.is_ca and signed_by(cert, issuer)


def _self_signed(cert: Cert) -> bool:
    return cert.names_itself and signed_by(cert, cert)


def _store_issuer(store: TrustStore, cert: Cert, at: dt.datetime, *, first: bool = False) -> Cert | None:
    """OpenSSL's ``X509_STORE_CTX_get1_issuer``: a match within its dates, else the one that expires last.

    ``first``: 1.0.2e's, which takes the first match in the store's order
    whatever its dates (measured: a store holding an expired and a renewed
    issue of one root, the expired one first, fails it).
    """
    matches = [anchor for anchor in store.named(cert.issuer_der) if _issues(anchor, cert)]
    if not matches:
        return None
    if first:
        return matches[0]
    return next((m for m in matches if m.valid_at(at)), max(matches, key=lambda m: m.not_after))


def _check(
    chain: tuple[Cert, ...], store: TrustStore, model: ClientModel, at: dt.datetime, distrust: Distrust
) -> _Outcome:
    building = model.path_building
    if building is PathBuilding.BACKTRACKING:
        return _backtrack(chain, store, model, at, distrust)
    if building is PathBuilding.FIRST_MATCH:
        path, trusted_from = first_match_chain(chain, store, at)
    else:
        path, trusted_from = _trusted_first(chain, store, at)
    if not any(_self_signed(cert) for cert in path[trusted_from:]):
        return _Outcome(ClientCheck(False, _missing(path, store)), "missing-issuer", path)
    problem = _problem(path, trusted_from, model, at, distrust, "the served path")
    if problem:
        return _Outcome(ClientCheck(False, f"{building}: {problem}"), "invalid", path)
    return _Outcome(ClientCheck(True, f"{building}: {_through(path)}"), "none", path)


def first_match_chain(
    chain: Sequence[Cert], store: TrustStore, at: dt.datetime, *, prefer_valid: bool = False
) -> tuple[tuple[Cert, ...], int]:
    """The chain OpenSSL 1.0.2 builds from ``chain`` as served, and where its store part starts.

    The store part starts at the returned index (the length when the store
    gave nothing); it ends in a trusted root when the chain is trusted.
    1.0.2e takes the first served issuer; ``prefer_valid`` takes the first
    one within its dates, else the last, as later 1.0.2 releases'
    ``find_issuer`` does.
    """
    path = [chain[0]]
    pool = list(chain[1:])
    while len(path) <= _MAX_DEPTH and not _self_signed(path[-1]):
        matches = [index for index, cert in enumerate(pool) if _issues(cert, path[-1])]
        if not matches:
            break
        chosen = matches[0]
        if prefer_valid:
            chosen = next((index for index in matches if pool[index].valid_at(at)), matches[-1])
        path.append(pool.pop(chosen))
    untrusted = len(path)
    while True:
        if len(path) > 1 and _self_signed(path[-1]):
            # A served root is set aside; the store must supply its own.
            path.pop()
            untrusted -= 1
        elif len(path) == 1 and _self_signed(path[0]):
            return tuple(path), 0 if path[0] in store else 1
        trusted_from = len(path)
        while len(path) <= _MAX_DEPTH and not _self_signed(path[-1]):
            issuer = _store_issuer(store, path[-1], at, first=not prefer_valid)
            if issuer is None:
                break
            path.append(issuer)
        if any(_self_signed(cert) for cert in path[trusted_from:]):
            return tuple(path), trusted_from
        # Alternative chains: cut the top where the store holds an issuer, lower down.
        retried = False
        while untrusted > 1 and not retried:
            untrusted -= 1
            if _store_issuer(store, path[untrusted - 1], at, first=not prefer_valid) is not None:
                del path[untrusted:]
                retried = True
        if not retried:
            return tuple(path), trusted_from


def _trusted_first(chain: tuple[Cert, ...], store: TrustStore, at: dt.datetime) -> tuple[tuple[Cert, ...], int]:
    """The chain OpenSSL 3 builds, and where its store part starts."""
    path = [chain[0]]
    pool = list(chain[1:])
    trusted_from: int | None = None
    while len(path) <= _MAX_DEPTH:
        top = path[-1]
        issuer = _store_issuer(store, top, at)
        if issuer is not None and _self_signed(top) and trusted_from is None:
            # A served root counts only as the very certificate the store holds.
            if issuer == top:
                return tuple(path), len(path) - 1
        elif issuer is not None:
            if trusted_from is None:
                trusted_from = len(path)
            path.append(issuer)
            if _self_signed(issuer):
                return tuple(path), trusted_from
            continue
        if trusted_from is not None or _self_signed(top):
            break
        matches = [cert for cert in pool if _issues(cert, top) and cert not in path]
        if not matches:
            break
        chosen = next((c for c in matches if c.valid_at(at)), max(matches, key=lambda c: c.not_after))
        pool.remove(chosen)
        path.append(chosen)
    return tuple(path), len(path) if trusted_from is None else trusted_from


def _backtrack(
    chain: tuple[Cert, ...], store: TrustStore, model: ClientModel, at: dt.datetime, distrust: Distrust
) -> _Outcome:
    """Any valid path: the first found is taken; failing all, the reason of the first complete one."""
    leaf = chain[0]
    served = [cert for cert in dict.fromkeys(chain[1:]) if cert != leaf]
    complete: list[tuple[Cert, ...]] = []
    dead_ends: list[tuple[Cert, ...]] = []
    steps = 0

    def walk(path: tuple[Cert, ...], identities: frozenset[tuple[bytes, bytes]]) -> tuple[Cert, ...] | None:
        nonlocal steps
        steps += 1
        if steps > _MAX_STEPS or len(path) > _MAX_DEPTH:
            return None
        top = path[-1]
        if top in store and (len(path) > 1 or _self_signed(top)):
            complete.append(path)
            trusted_from = len(path) - 1
            return path if not _problem(path, trusted_from, model, at, distrust, "") else None
        extended = False
        anchors = [a for a in store.named(top.issuer_der) if _issues(a, top) and a.identity not in identities]
        for cert in (*anchors, *(c for c in served if c.identity not in identities and _issues(c, top))):
            extended = True
            found = walk((*path, cert), identities | {cert.identity})
            if found:
                return found
        if not extended:
            dead_ends.append(path)
        return None

    found = walk((leaf,), frozenset({leaf.identity}))
    building = model.path_building
    if found:
        return _Outcome(ClientCheck(True, f"{building}: {_through(found)}"), "none", found)
    if complete:
        path = complete[0]
        problem = _problem(path, len(path) - 1, model, at, distrust, "every path fails; one")
        return _Outcome(ClientCheck(False, f"{building}: {problem}"), "invalid", path)
    path = dead_ends[0] if dead_ends else (leaf,)
    return _Outcome(ClientCheck(False, _missing(path, store)), "missing-issuer", path)


def _problem(
    path: tuple[Cert, ...], trusted_from: int, model: ClientModel, at: dt.datetime, distrust: Distrust, subject: str
) -> str | None:
    """What fails on a built path, checked from the anchor down as OpenSSL's ``internal_verify`` does."""
    anchor_at = len(path) - 1
    for index in range(anchor_at, -1, -1):
        cert = path[index]
        anchor = index >= trusted_from and index == anchor_at
        if distrust.matches(cert):
            return f"{_where(subject, index, anchor)} {cert.short_subject}, distrusted"
        if anchor and not model.anchor_expiry:
            continue
        if at > cert.not_after:
            return f"{_where(subject, index, anchor)} {cert.short_subject}, expired {_day(cert.not_after)}"
        if at < cert.not_before:
            return f"{_where(subject, index, anchor)} {cert.short_subject}, not valid before {_day(cert.not_before)}"
    return None


def _where(subject: str, index: int, anchor: bool) -> str:
    if index == 0:
        return "the leaf"
    if not subject:
        return "reaches" if anchor else "passes"
    return f"{subject} {'reaches' if anchor else 'passes'}"


def _missing(path: Sequence[Cert], store: TrustStore) -> str:
    top = path[-1]
    if len(path) == 1 and not top.is_ca:
        return f"the leaf's issuer {top.short_issuer} is neither served nor in the store"
    if _self_signed(top):
        return f"store lacks {top.short_subject}"
    return f"store lacks {top.short_issuer}"


def _through(path: Sequence[Cert]) -> str:
    return f"validates through {path[-1].short_subject}"
