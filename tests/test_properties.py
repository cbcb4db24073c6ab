"""Properties over generated hierarchies: order and noise never change the
answer, and the answer never validates worse for OpenSSL, GnuTLS or pyca."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainwatch.certificate import Cert
from chainwatch.policy import Mode, Policy, decide
from chainwatch.trust import TrustStore
from tests.pki import CA, DAY, T0, YEAR, cert_of, new_key, shared_rsa_key
from tests.validators import PYCA_HAS_VERIFIER, gnutls_accepts, openssl_accepts, pyca_accepts

SECOND = dt.timedelta(seconds=1)
DNS_NAME = "mail.example.test"


@dataclass(frozen=True)
class Scenario:
    name: str
    chain: tuple[Cert, ...]
    """As a CA would hand it out: leaf first."""
    stores: tuple[TrustStore, ...]
    times: tuple[dt.datetime, ...]
    web_pki: bool = True
    """pyca's verifier only takes Web PKI algorithms (not Ed25519)."""


def _scenario(name: str, chain: list[Cert], stores: list[TrustStore], web_pki: bool = True) -> Scenario:
    moments = {T0 - 10 * DAY}
    for cert in [*chain, *(a for s in stores for a in s.anchors)]:
        for edge in (cert.not_before, cert.not_after):
            moments |= {edge - SECOND, edge, edge + SECOND}
    return Scenario(name, tuple(chain), tuple(stores), tuple(sorted(moments)), web_pki)


def _store(name: str, *cas: CA) -> TrustStore:
    return TrustStore.of(name, [ca.c for ca in cas])


@cache
def scenarios() -> tuple[Scenario, ...]:
    out = []
    # DST Root CA X3: the old root expires at T0, its cross-sign lives on.
    old, new = CA.root("Old Root", not_after=T0), CA.root("New Root")
    cross = cert_of(old.cross_sign(new, not_after=T0 + 3 * YEAR))
    issuing = new.intermediate("Issuing CA")
    out.append(
        _scenario(
            "dst",
            [cert_of(issuing.leaf()[0]), issuing.c, cross],
            [_store("modern", new), _store("legacy", old, new), _store("ancient", old)],
        )
    )
    # Generation Y: the new root is absent from older stores.
    x1, yr = CA.root("Root X1"), CA.root("Root YR", not_before=T0 - YEAR)
    yr1 = yr.intermediate("YR1")
    out.append(
        _scenario(
            "generation-y",
            [cert_of(yr1.leaf()[0]), yr1.c, cert_of(x1.cross_sign(yr))],
            [_store("debian12", x1), _store("modern", x1, yr)],
        )
    )
    # Two steps of cross-signs: YE <- X2 <- X1.
    x2, ye = CA.root("Root X2"), CA.root("Root YE")
    ye1 = ye.intermediate("YE1")
    out.append(
        _scenario(
            "two-step",
            [cert_of(ye1.leaf()[0]), ye1.c, cert_of(x2.cross_sign(ye)), cert_of(x1.cross_sign(x2, not_after=T0))],
            [_store("x1", x1), _store("x2", x2), _store("ye", ye)],
        )
    )
    # An expired intermediate beside its renewed twin.
    root, key = CA.root("Root"), new_key()
    old_int = root.intermediate("Twin CA", key=key, not_before=T0 - 3 * YEAR, not_after=T0)
    new_int = root.intermediate("Twin CA", key=key, not_before=T0 - 30 * DAY, not_after=T0 + 3 * YEAR)
    out.append(_scenario("twin", [cert_of(new_int.leaf()[0]), old_int.c, new_int.c], [_store("s", root)]))
    # Mutual cross-signs.
    a, b = CA.root("Root A"), CA.root("Root B")
    a_int = a.intermediate("A CA")
    out.append(
        _scenario(
            "cycle",
            [cert_of(a_int.leaf()[0]), a_int.c, cert_of(b.cross_sign(a)), cert_of(a.cross_sign(b))],
            [_store("a", a), _store("b", b)],
        )
    )
    # RSA throughout, with a cross-sign from an older RSA root.
    rsa_old = CA.root("RSA Old", key=shared_rsa_key(0), not_after=T0 + 100 * DAY)
    rsa_new = CA.root("RSA New", key=shared_rsa_key(1))
    rsa_int = rsa_new.intermediate("RSA CA", key=shared_rsa_key(2))
    out.append(
        _scenario(
            "rsa",
            [cert_of(rsa_int.leaf(key=shared_rsa_key(3))[0]), rsa_int.c, cert_of(rsa_old.cross_sign(rsa_new))],
            [_store("new", rsa_new), _store("old", rsa_old)],
        )
    )
    # Ed25519 throughout.
    ed_root = CA.root("Ed Root", key=new_key("ed25519"))
    ed_int = ed_root.intermediate("Ed CA", key=new_key("ed25519"))
    out.append(
        _scenario("ed25519", [cert_of(ed_int.leaf(key=new_key("ed25519"))[0]), ed_int.c], [_store("s", ed_root)], False)
    )
    return tuple(out)


@cache
def noise() -> tuple[Cert, ...]:
    """CA certificates from a hierarchy no scenario uses (no end-entity: the leaf stays the leaf)."""
    other = CA.root("Unrelated Root")
    sub = other.intermediate("Unrelated CA")
    return (other.c, sub.c, cert_of(other.cross_sign(sub)))


@st.composite
def served_files(draw: st.DrawFn) -> tuple[Scenario, list[Cert], dt.datetime, Mode]:
    """A scenario's chain as a careless server might hold it: shuffled, repeated, padded."""
    scenario = draw(st.sampled_from(scenarios()))
    certs = list(scenario.chain)
    certs += draw(st.lists(st.sampled_from(certs), max_size=3))
    certs += draw(st.lists(st.sampled_from(noise()), max_size=3))
    certs = draw(st.permutations(certs))
    return scenario, certs, draw(st.sampled_from(scenario.times)), draw(st.sampled_from(list(Mode)))


def _leaf_first(scenario: Scenario, certs: list[Cert]) -> list[Cert]:
    leaf = scenario.chain[0]
    return [leaf, *(cert for cert in certs if cert != leaf)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(served_files())
def test_shuffling_repeating_or_padding_never_changes_the_sanitized_chain(
    case: tuple[Scenario, list[Cert], dt.datetime, Mode],
) -> None:
    scenario, certs, at, mode = case
    policy = Policy(mode=mode)
    expected = decide(list(scenario.chain), scenario.stores, at, policy).chain
    assert decide(certs, scenario.stores, at, policy).chain == expected


Accepts = Callable[[Sequence[Cert], Sequence[Cert], dt.datetime], bool]


def assert_never_worse(case: tuple[Scenario, list[Cert], dt.datetime, Mode], accepts: Accepts) -> None:
    """For every store: if the file as served validates, the sanitized chain does too."""
    scenario, certs, at, mode = case
    original = _leaf_first(scenario, certs)
    sanitized = decide(certs, scenario.stores, at, Policy(mode=mode)).chain
    for store in scenario.stores:
        if accepts(original, store.anchors, at):
            assert accepts(sanitized, store.anchors, at), (scenario.name, store.name, at)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(served_files())
def test_sanitized_chain_never_validates_worse_with_openssl(
    case: tuple[Scenario, list[Cert], dt.datetime, Mode],
) -> None:
    assert_never_worse(case, openssl_accepts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(served_files())
def test_sanitized_chain_never_validates_worse_with_gnutls(
    case: tuple[Scenario, list[Cert], dt.datetime, Mode],
) -> None:
    assert_never_worse(case, gnutls_accepts)


@pytest.mark.skipif(not PYCA_HAS_VERIFIER, reason="cryptography < 42 has no verifier (Debian 12 ships 38.0.4)")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(served_files())
def test_sanitized_chain_never_validates_worse_with_pyca(case: tuple[Scenario, list[Cert], dt.datetime, Mode]) -> None:
    if case[0].web_pki:
        assert_never_worse(case, lambda chain, anchors, at: pyca_accepts(chain, anchors, at, DNS_NAME))


def test_every_scenario_validates_somewhere_with_every_validator() -> None:
    # Guards the properties above against passing vacuously.
    for scenario in scenarios():
        at = T0 - 10 * DAY
        chain = list(scenario.chain)
        assert any(openssl_accepts(chain, s.anchors, at) for s in scenario.stores), scenario.name
        assert any(gnutls_accepts(chain, s.anchors, at) for s in scenario.stores), scenario.name
        if PYCA_HAS_VERIFIER and scenario.web_pki:
            assert any(pyca_accepts(chain, s.anchors, at, DNS_NAME) for s in scenario.stores), scenario.name
