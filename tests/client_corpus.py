"""The corpus on which client models are checked against real verifiers.

Each :class:`Case` is one question a client answers during a handshake: this
chain, sent in this order, judged with this trust store at this time. The
shapes are the incidents chainwatch exists for (DST Root CA X3 in 2021,
AddTrust in 2020, Let's Encrypt's Generation Y), the mistakes servers make
(twins in the wrong order, a missing or expired intermediate, duplicates, a
reversed file) and the sanitized chains that should be served instead, each at
times either side of the expiry that matters; plus small cross-signed meshes
from a seeded generator, whose shapes nobody chose.

Certificates come from :mod:`tests.pki` with fresh keys on every run: the
structure (names, validity, who signs whom, the served order) is fixed, the
bytes are not, so a verdict never depends on a particular key.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.x509.oid import NameOID

from chainwatch.x509.certificate import Cert
from tests import limbo
from tests.pki import CA, T0, YEAR, key_pem, new_key

DNS_NAME = "mail.example.test"
"""Every leaf's name: the one a verifier that checks names is asked for."""


@dataclass(frozen=True)
class Case:
    """One chain as a server sends it, judged with one store at one time."""

    name: str
    """Unique, ``shape/chain/store/time``: how disagreements are listed."""
    shape: str
    """Which family of cases (``dst``, ``twins``, ``mesh`` ...)."""
    chain: tuple[Cert, ...]
    """As served: the server's own certificate first, then the rest in the order sent."""
    key: bytes | None
    """The first certificate's private key (PEM), for a real TLS server; None where the source gives none (limbo)."""
    store: tuple[Cert, ...]
    """The client's trust anchors."""
    at: dt.datetime
    """The client's clock (UTC)."""


def _subject(common_name: str) -> x509.Name:
    """A name in tests.pki's shape, for a CA whose first certificate is not made by tests.pki's ``intermediate``."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chainwatch tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _cases(
    shape: str,
    key: bytes,
    chains: Mapping[str, Sequence[x509.Certificate]],
    stores: Mapping[str, Sequence[x509.Certificate]],
    times: Sequence[dt.datetime],
) -> Iterator[Case]:
    for chain_name, chain in chains.items():
        for store_name, store in stores.items():
            for at in times:
                yield Case(
                    f"{shape}/{chain_name}/{store_name}/{at:%Y-%m-%dT%H:%M:%S}",
                    shape,
                    tuple(Cert(c) for c in chain),
                    key,
                    tuple(Cert(c) for c in store),
                    at,
                )


def dst_shaped() -> Iterator[Case]:
    """2021: leaf ← R3 ← ISRG Root X1 cross-signed by DST Root CA X3, which expired 2021-09-30 14:01:15."""
    dst = CA.root("DST Root CA X3", not_before=utc("2000-09-30 21:12:19"), not_after=utc("2021-09-30 14:01:15"))
    x1 = CA.root("ISRG Root X1", not_before=utc("2015-06-04 11:04:38"), not_after=utc("2035-06-04 11:04:38"))
    x1_by_dst = dst.cross_sign(x1, not_before=utc("2021-01-20 19:14:03"), not_after=utc("2024-09-30 18:14:03"))
    r3 = x1.intermediate("R3", not_before=utc("2020-09-04"), not_after=utc("2025-09-15 16:00:00"))
    leaf, key = r3.leaf(DNS_NAME, not_before=utc("2021-09-01"), not_after=utc("2021-11-30"))
    yield from _cases(
        "dst",
        key_pem(key),
        {
            "served": [leaf, r3.cert, x1_by_dst],
            "sanitized": [leaf, r3.cert],
            "reversed": [leaf, x1_by_dst, r3.cert],
            "missing-intermediate": [leaf, x1_by_dst],
            "duplicates": [leaf, r3.cert, r3.cert, x1_by_dst],
        },
        {"dst+x1": [dst.cert, x1.cert], "dst": [dst.cert], "x1": [x1.cert]},
        [utc("2021-09-29"), utc("2021-09-30 14:01:14"), utc("2021-09-30 14:01:16"), utc("2021-10-01")],
    )


def addtrust_like() -> Iterator[Case]:
    """2020: leaf ← Sectigo ← USERTrust cross-signed by AddTrust, root and cross-sign both ending 2020-05-30."""
    end = utc("2020-05-30 10:48:38")
    addtrust = CA.root("AddTrust External CA Root", not_before=utc("2000-05-30 10:48:38"), not_after=end)
    usertrust = CA.root(
        "USERTrust RSA Certification Authority", not_before=utc("2010-02-01"), not_after=utc("2038-01-18")
    )
    usertrust_by_addtrust = addtrust.cross_sign(usertrust, not_before=utc("2000-05-30 10:48:38"), not_after=end)
    sectigo = usertrust.intermediate(
        "Sectigo RSA Domain Validation Secure Server CA", not_before=utc("2018-11-02"), not_after=utc("2030-12-31")
    )
    leaf, key = sectigo.leaf(DNS_NAME, not_before=utc("2020-01-01"), not_after=utc("2021-01-01"))
    yield from _cases(
        "addtrust",
        key_pem(key),
        {
            "served": [leaf, sectigo.cert, usertrust_by_addtrust],
            "sanitized": [leaf, sectigo.cert],
            "reversed": [leaf, usertrust_by_addtrust, sectigo.cert],
        },
        {"addtrust+usertrust": [addtrust.cert, usertrust.cert], "addtrust": [addtrust.cert]},
        [utc("2020-05-29"), utc("2020-06-01")],
    )


def generation_y() -> Iterator[Case]:
    """Let's Encrypt from 2025: leaf ← YR1 ← Root YR by X1, and leaf ← YE1 ← Root YE by X2 ← X2 by X1.

    The leaves outlive YR1 and YE1 (2028-09-02) so that the later time is an
    expired intermediate and nothing else.
    """
    x1 = CA.root("ISRG Root X1", not_before=utc("2015-06-04 11:04:38"), not_after=utc("2035-06-04 11:04:38"))
    x2 = CA.root("ISRG Root X2", not_before=utc("2020-09-04"), not_after=utc("2040-09-17 16:00:00"))
    yr = CA.root("Root YR", not_before=utc("2025-09-03"), not_after=utc("2045-09-02"))
    ye = CA.root("Root YE", not_before=utc("2025-09-03"), not_after=utc("2045-09-02"))
    cross_end = utc("2032-09-02")
    yr_by_x1 = x1.cross_sign(yr, not_before=utc("2025-09-03"), not_after=cross_end)
    ye_by_x2 = x2.cross_sign(ye, not_before=utc("2025-09-03"), not_after=cross_end)
    x2_by_x1 = x1.cross_sign(x2, not_before=utc("2025-09-03"), not_after=cross_end)
    yr1 = yr.intermediate("YR1", not_before=utc("2025-09-03"), not_after=utc("2028-09-02"))
    ye1 = ye.intermediate("YE1", not_before=utc("2025-09-03"), not_after=utc("2028-09-02"))
    rsa_leaf, rsa_key = yr1.leaf(DNS_NAME, not_before=utc("2026-11-01"), not_after=utc("2028-12-01"))
    ec_leaf, ec_key = ye1.leaf(DNS_NAME, not_before=utc("2026-11-01"), not_after=utc("2028-12-01"))
    stores = {
        "x1": [x1.cert],
        "x1+x2": [x1.cert, x2.cert],
        "x1+x2+yr+ye": [x1.cert, x2.cert, yr.cert, ye.cert],
        "yr+ye": [yr.cert, ye.cert],
    }
    times = [utc("2026-12-01"), utc("2028-09-03")]
    yield from _cases(
        "gen-y-rsa",
        key_pem(rsa_key),
        {"served": [rsa_leaf, yr1.cert, yr_by_x1], "short": [rsa_leaf, yr1.cert]},
        stores,
        times,
    )
    yield from _cases(
        "gen-y-ecdsa",
        key_pem(ec_key),
        {
            "served": [ec_leaf, ye1.cert, ye_by_x2, x2_by_x1],
            "to-x2": [ec_leaf, ye1.cert, ye_by_x2],
            "short": [ec_leaf, ye1.cert],
            "reversed": [ec_leaf, x2_by_x1, ye_by_x2, ye1.cert],
        },
        stores,
        times,
    )


def twins() -> Iterator[Case]:
    """Two intermediates with one subject and key: under a trusted root, under an unknown one, and an expired one."""
    trusted = CA.root("Twin Trusted Root", not_before=utc("2020-01-01"), not_after=utc("2040-01-01"))
    unknown = CA.root("Twin Unknown Root", not_before=utc("2020-01-01"), not_after=utc("2040-01-01"))
    twin = trusted.intermediate("Twin CA", not_before=utc("2024-01-01"), not_after=utc("2029-01-01"))
    under_unknown = unknown.certify(
        twin.name, twin.key.public_key(), ca=True, not_before=utc("2024-01-01"), not_after=utc("2029-01-01")
    )
    expired = trusted.certify(
        twin.name, twin.key.public_key(), ca=True, not_before=utc("2021-01-01"), not_after=utc("2026-03-01")
    )
    leaf, key = twin.leaf(DNS_NAME, not_before=utc("2025-12-01"), not_after=utc("2026-12-01"))
    yield from _cases(
        "twins",
        key_pem(key),
        {
            "unknown-first": [leaf, under_unknown, twin.cert],
            "trusted-first": [leaf, twin.cert, under_unknown],
            "unknown-only": [leaf, under_unknown],
            "sanitized": [leaf, twin.cert],
            "expired-first": [leaf, expired, twin.cert],
            "expired-second": [leaf, twin.cert, expired],
            "expired-only": [leaf, expired],
        },
        {"trusted": [trusted.cert], "both-roots": [trusted.cert, unknown.cert]},
        [utc("2026-01-01"), utc("2026-06-01")],
    )


def served_mistakes() -> Iterator[Case]:
    """One root, two intermediates: what servers get wrong with a plain chain, and the intermediate expiring."""
    root = CA.root("Plain Root", not_before=utc("2020-01-01"), not_after=utc("2040-01-01"))
    other = CA.root("Unrelated Root", not_before=utc("2020-01-01"), not_after=utc("2040-01-01"))
    upper = root.intermediate("Plain Upper CA", not_before=utc("2024-01-01"), not_after=utc("2030-01-01"))
    lower = upper.intermediate("Plain Lower CA", not_before=utc("2024-01-01"), not_after=utc("2027-01-01"))
    leaf, key = lower.leaf(DNS_NAME, not_before=utc("2026-01-01"), not_after=utc("2027-06-01"))
    yield from _cases(
        "plain",
        key_pem(key),
        {
            "complete": [leaf, lower.cert, upper.cert],
            "leaf-only": [leaf],
            "missing-lower": [leaf, upper.cert],
            "missing-upper": [leaf, lower.cert],
            "with-root": [leaf, lower.cert, upper.cert, root.cert],
            "reversed": [leaf, upper.cert, lower.cert],
            "reversed-with-root": [leaf, root.cert, upper.cert, lower.cert],
            "duplicates": [leaf, lower.cert, lower.cert, upper.cert, upper.cert],
            "leaf-twice": [leaf, leaf, lower.cert, upper.cert],
            "unrelated-extra": [leaf, other.cert, lower.cert, upper.cert],
        },
        {"root": [root.cert], "root+unrelated": [root.cert, other.cert]},
        [utc("2026-06-01"), utc("2027-02-01")],
    )


def cycle() -> Iterator[Case]:
    """Two CAs that certify each other (a loop a path builder must cut), with and without A's certificate by the root.

    In the spirit of x509-limbo's ``pathological::intermediate-cycle-*`` cases,
    made here with keys so that a real TLS server can serve them.
    """
    root = CA.root("Cycle Root", not_before=utc("2020-01-01"), not_after=utc("2040-01-01"))
    a = root.intermediate("Cycle CA A", not_before=utc("2024-01-01"), not_after=utc("2030-01-01"))
    b_key = new_key()
    b_by_a = a.certify(
        _subject("Cycle CA B"), b_key.public_key(), ca=True, not_before=utc("2024-01-01"), not_after=utc("2030-01-01")
    )
    b = CA(b_by_a.subject, b_key, b_by_a)
    a_by_b = b.certify(a.name, a.key.public_key(), ca=True, not_before=utc("2024-01-01"), not_after=utc("2030-01-01"))
    leaf, key = b.leaf(DNS_NAME, not_before=utc("2026-01-01"), not_after=utc("2027-01-01"))
    yield from _cases(
        "cycle",
        key_pem(key),
        {
            "loop-only": [leaf, b_by_a, a_by_b],
            "loop-then-root-path": [leaf, b_by_a, a_by_b, a.cert],
            "root-path-then-loop": [leaf, b_by_a, a.cert, a_by_b],
            "sanitized": [leaf, b_by_a, a.cert],
        },
        {"root": [root.cert]},
        [utc("2026-06-01"), utc("2031-01-01")],
    )


def reissued_root() -> Iterator[Case]:
    """A root re-issued with its own key and a later end (as CAs extend a root), the store holding one or both."""
    key = new_key()
    old = CA.root("Reissued Root", key=key, not_before=utc("2006-01-01"), not_after=utc("2026-03-01"))
    new = CA.root("Reissued Root", key=key, not_before=utc("2016-01-01"), not_after=utc("2036-01-01"))
    issuing = old.intermediate("Reissued Issuing CA", not_before=utc("2024-01-01"), not_after=utc("2030-01-01"))
    leaf, leaf_key = issuing.leaf(DNS_NAME, not_before=utc("2025-12-01"), not_after=utc("2026-12-01"))
    yield from _cases(
        "reissued-root",
        key_pem(leaf_key),
        {"served": [leaf, issuing.cert], "with-old-root": [leaf, issuing.cert, old.cert]},
        {"old+new": [old.cert, new.cert], "new+old": [new.cert, old.cert], "old": [old.cert]},
        [utc("2026-01-01"), utc("2026-06-01")],
    )


def limbo_cases() -> Iterator[Case]:
    """x509-limbo's path-building cases (:mod:`tests.limbo`), with no key: TLS clients cannot judge them.

    Served as limbo lists them: the peer certificate, then the untrusted
    intermediates in limbo's order; the store is its trusted certificates; the
    time is its validation time, or :data:`tests.limbo.DEFAULT_TIME` where it
    gives none. Limbo's expected host name and key usages are not asked.
    """
    for case in limbo.load():
        at = dt.datetime.fromisoformat(case["validation_time"]) if case["validation_time"] else limbo.DEFAULT_TIME
        yield Case(
            f"limbo/{case['id']}",
            "limbo",
            tuple(Cert.from_der(limbo.der(text)) for text in (case["peer"], *case["untrusted"])),
            None,
            tuple(Cert.from_der(limbo.der(text)) for text in case["trusted"]),
            at.astimezone(dt.UTC),
        )


MESH_TIMES = (T0, T0 + 2 * YEAR)
"""Generated meshes are judged at two times: before and after the short-lived certificates expire."""


def mesh(seed: int) -> Iterator[Case]:
    """A small random hierarchy, its structure a function of ``seed`` alone.

    Two or three roots (some trusted, some expiring between the two times),
    half the time one of them cross-signed by another; two or three CA
    identities (a name and a key), each certified by one to three issuers
    among the roots and the identities made before it (so cross-signs, twins
    and expired twins all occur); a leaf under one of them;
    and a served chain of some of those certificates in a random order.
    """
    rng = random.Random(seed)
    short, long = (T0 - 5 * YEAR, T0 + YEAR), (T0 - 5 * YEAR, T0 + 5 * YEAR)
    roots = [
        CA.root(f"Mesh {seed} Root {i}", not_before=T0 - 10 * YEAR, not_after=rng.choice([short, long])[1])
        for i in range(rng.randint(2, 3))
    ]
    trusted = [root for root in roots if rng.random() < 0.6] or [roots[0]]
    issuers: list[CA] = list(roots)
    served_pool: list[x509.Certificate] = []
    if rng.random() < 0.5:
        # One root cross-signed by another, as ISRG Root X1 by DST Root CA X3.
        subject, issuer = rng.sample(roots, 2)
        not_before, not_after = rng.choice([short, long])
        served_pool.append(issuer.cross_sign(subject, not_before=not_before, not_after=not_after))
    identities: list[CA] = []
    for i in range(rng.randint(2, 3)):
        key = new_key()
        first: CA | None = None
        for issuer in rng.sample(issuers, k=min(len(issuers), rng.randint(1, 3))):
            not_before, not_after = rng.choice([short, long])
            if first is None:
                first = issuer.intermediate(f"Mesh {seed} CA {i}", key=key, not_before=not_before, not_after=not_after)
                served_pool.append(first.cert)
            else:
                served_pool.append(
                    issuer.certify(first.name, key.public_key(), ca=True, not_before=not_before, not_after=not_after)
                )
        assert first is not None
        identities.append(first)
        issuers.append(first)
    leaf, leaf_key = rng.choice(identities).leaf(DNS_NAME, not_before=T0 - YEAR, not_after=T0 + 3 * YEAR)
    rest = rng.sample(served_pool, k=rng.randint(1, len(served_pool)))
    if rng.random() < 0.2:
        rest.append(rng.choice(roots).cert)
    if rng.random() < 0.1:
        rest.append(rng.choice(rest))
    yield from _cases(
        "mesh",
        key_pem(leaf_key),
        {f"seed-{seed}": [leaf, *rest]},
        {"+".join(str(roots.index(r)) for r in trusted): [r.cert for r in trusted]},
        [rng.choice(MESH_TIMES)],
    )


MESHES = 50
"""Generated meshes in the corpus the tests judge; ``python -m tests.client_agreement --meshes N`` explores more."""


@cache
def corpus(meshes: int = MESHES) -> tuple[Case, ...]:
    """Every case, in a fixed order (certificates made once per process), with meshes of seeds 0 to ``meshes`` - 1."""
    cases = [
        *dst_shaped(),
        *addtrust_like(),
        *generation_y(),
        *twins(),
        *served_mistakes(),
        *cycle(),
        *reissued_root(),
        *limbo_cases(),
        *(case for seed in range(meshes) for case in mesh(seed)),
    ]
    assert len({case.name for case in cases}) == len(cases), "case names must be unique"
    return tuple(cases)


def by_name() -> dict[str, Case]:
    return {case.name: case for case in corpus()}


__all__ = ["DNS_NAME", "MESHES", "Case", "by_name", "corpus", "utc"]
