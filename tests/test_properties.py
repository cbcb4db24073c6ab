"""Properties over generated hierarchies: order and noise never change the
answer, and the answer never validates worse for OpenSSL, GnuTLS or pyca,
nor for a client of any model.

The hierarchies are built, not filtered: every one has a path from the leaf
to a root of its first store that is valid at the judged time, and around
it twins (the same subject and key under other issuers), cross-signs of the
roots both ways and certificates whose windows end or start near that time.
Each validator test counts how many examples had a store for which the file
as served validates, and fails when that is under 80 %: a property that
holds only because nothing validated proves nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainwatch.policy.client_check import Client, validates
from chainwatch.policy.decision import Decision, WarningCode
from chainwatch.policy.settings import ClientModel, Mode, PathBuilding, Policy
from chainwatch.policy.trim import decide
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore
from tests.pki import CA, T0, YEAR, PrivateKey, cert_of, new_key, shared_rsa_key
from tests.validators import PYCA_HAS_VERIFIER, gnutls_accepts, openssl_accepts, pyca_accepts

SECOND = dt.timedelta(seconds=1)
DNS_NAME = "mail.example.test"
AT = T0
"""Every hierarchy is judged at this instant; the windows are drawn around it."""

# Validity windows relative to AT: the edges are where off-by-one bugs live.
# None ends exactly at AT: RFC 5280 counts notAfter in, OpenSSL counts it out,
# and that second is a disagreement between verifiers, not a trimming bug.
WINDOWS: dict[str, tuple[dt.datetime, dt.datetime]] = {
    "valid": (AT - YEAR, AT + YEAR),
    "outlives-the-main-path": (AT - YEAR, AT + 6 * YEAR),
    "starts-now": (AT, AT + YEAR),
    "ends-next-second": (AT - YEAR, AT + SECOND),
    "expired": (AT - 2 * YEAR, AT - SECOND),
    "not-yet-valid": (AT + SECOND, AT + 2 * YEAR),
}
ALL_KINDS = ("ec", "rsa", "ed25519")
WEB_PKI_KINDS = ("ec", "rsa")
"""pyca's verifier takes only Web PKI algorithms: no Ed25519."""


@cache
def pooled_key(kind: str, slot: int) -> PrivateKey:
    """Key generation (RSA above all) is slow: identities draw from a small pool."""
    if kind == "rsa":
        return shared_rsa_key(100 + slot)
    return new_key(kind)


@dataclass(frozen=True)
class Hierarchy:
    chain: tuple[Cert, ...]
    """As a CA would hand it out: leaf, then each level upwards."""
    stores: tuple[TrustStore, ...]
    depth: int
    """Intermediate levels between the leaf and the roots."""
    twin_levels: int
    """Levels with certificates of one subject and key from different issuers."""
    kinds: frozenset[str]

    @property
    def leaf(self) -> Cert:
        return self.chain[0]


@st.composite
def hierarchies(draw: st.DrawFn, kinds: Sequence[str] = ALL_KINDS) -> Hierarchy:
    """leaf ← CA d ← … ← CA 1 ← Root 0 valid at AT and in the first store, plus twins and cross-signs."""
    slot = iter(range(100))
    used: set[str] = set()

    def key() -> PrivateKey:
        kind = draw(st.sampled_from(kinds))
        used.add(kind)
        return pooled_key(kind, next(slot))

    def window(name: str) -> dict[str, dt.datetime]:
        not_before, not_after = WINDOWS[name]
        return {"not_before": not_before, "not_after": not_after}

    windows = st.sampled_from(list(WINDOWS))
    roots = [CA.root("Root 0", key=key())]
    roots += [
        CA.root(f"Root {index}", key=key(), **window(draw(windows))) for index in range(1, draw(st.integers(1, 3)))
    ]
    # A root no store holds: the issuer of the twin in issue 11.
    outside = [CA.root("Outside Root", key=key())] if draw(st.booleans()) else []
    depth = draw(st.integers(1, 4))
    levels: list[list[Cert]] = []
    above = roots[0]
    for level in range(1, depth + 1):
        ca = above.intermediate(f"CA {level}", key=key())
        certs = [ca.c]
        # Twins of this level: a renewal by the same issuer, or the same
        # subject and key certified by any root (one no store may hold).
        issuers = [*([above] if level > 1 else []), *roots, *outside]
        for _ in range(draw(st.integers(0, 2))):
            issuer = draw(st.sampled_from(issuers))
            certs.append(cert_of(issuer.certify(ca.name, ca.key.public_key(), ca=True, **window(draw(windows)))))
        # The CA sends the working certificate first; the served file
        # (cases) puts them in every order.
        levels.append([certs[0], *draw(st.permutations(certs[1:]))])
        above = ca
    leaf = cert_of(above.leaf(DNS_NAME, key=key())[0])
    everyone = [*roots, *outside]
    pairs = [(a, b) for a in range(len(everyone)) for b in range(len(everyone)) if a != b]
    cross_signs = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=3)) if pairs else []
    crossed = [cert_of(everyone[b].cross_sign(everyone[a], **window(draw(windows)))) for a, b in cross_signs]
    subsets = st.lists(st.sampled_from(roots), min_size=1, unique_by=id)
    stores = [TrustStore.of("store-0", [roots[0].c, *(r.c for r in draw(st.lists(st.sampled_from(roots))))])]
    stores += [TrustStore.of(f"store-{n}", [r.c for r in draw(subsets)]) for n in range(1, draw(st.integers(1, 3)))]
    chain = (leaf, *(cert for level in reversed(levels) for cert in level), *crossed)
    twin_levels = sum(len({cert.issuer_der for cert in level}) > 1 for level in levels)
    return Hierarchy(chain, tuple(stores), depth, twin_levels, frozenset(used))


@cache
def noise() -> tuple[Cert, ...]:
    """CA certificates from a hierarchy no case uses (no end-entity: the leaf stays the leaf)."""
    other = CA.root("Unrelated Root")
    sub = other.intermediate("Unrelated CA")
    return (other.c, sub.c, cert_of(other.cross_sign(sub)))


@dataclass(frozen=True)
class Case:
    hierarchy: Hierarchy
    served: tuple[Cert, ...]
    """The file as a careless server might hold it: repeated, padded, maybe shuffled; leaf first."""
    mode: Mode


@st.composite
def cases(draw: st.DrawFn, kinds: Sequence[str] = ALL_KINDS) -> Case:
    hierarchy = draw(hierarchies(kinds))
    certs = list(hierarchy.chain[1:])
    certs += draw(st.lists(st.sampled_from(certs), max_size=2)) if certs else []
    certs += draw(st.lists(st.sampled_from(noise()), max_size=2))
    if draw(st.booleans()):
        certs = draw(st.permutations(certs))
    return Case(hierarchy, (hierarchy.leaf, *certs), draw(st.sampled_from(list(Mode))))


# -- order and noise ------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_shuffling_repeating_or_padding_never_changes_what_is_served_or_why(case: Case) -> None:
    hierarchy, policy = case.hierarchy, Policy(mode=case.mode)
    canonical = decide(hierarchy.chain, hierarchy.stores, AT, policy)
    served = decide(case.served, hierarchy.stores, AT, policy)
    assert set(served.chain) == set(canonical.chain)
    assert served.validating_stores == canonical.validating_stores
    reasons: dict[Cert, object] = {}
    for verdict in served.verdicts:
        reasons.setdefault(verdict.cert, verdict.reason)
    assert {cert: reasons[cert] for cert in hierarchy.chain} == {v.cert: v.reason for v in canonical.verdicts}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.data())
def test_appended_noise_and_repeats_never_change_the_served_bytes(case: Case, data: st.DataObject) -> None:
    hierarchy, policy = case.hierarchy, Policy(mode=case.mode)
    padded = [*case.served, *data.draw(st.lists(st.sampled_from([*case.served, *noise()]), max_size=4))]
    assert decide(padded, hierarchy.stores, AT, policy).pem() == decide(case.served, hierarchy.stores, AT, policy).pem()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_serving_the_sanitized_chain_again_changes_nothing(case: Case) -> None:
    stores, policy = case.hierarchy.stores, Policy(mode=case.mode)
    first = decide(case.served, stores, AT, policy)
    again = decide(first.chain, stores, AT, policy)
    assert again.chain == first.chain
    assert again.dropped == ()
    assert not again.has(WarningCode.REORDERED)


def on_valid_paths(decision: Decision) -> set[Cert]:
    """Served certificates on a path from the leaf to an anchor some store holds, all valid at AT.

    Walked here from the decision's issuer links, apart from the policy's own search.
    """
    served, found = set(decision.chain), set()

    def walk(cert: Cert, via: tuple[Cert, ...], identities: frozenset[tuple[bytes, bytes]]) -> None:
        if any(a.valid_at(AT) and decision.anchor_stores[a] for a in decision.anchor_issuers.get(cert, ())):
            found.update(via)
        for issuer in decision.chain_issuers.get(cert, ()):
            if issuer in served and issuer.valid_at(AT) and issuer.identity not in identities:
                walk(issuer, (*via, issuer), identities | {issuer.identity})

    walk(decision.leaf, (), frozenset({decision.leaf.identity}))
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_when_a_store_validates_every_served_certificate_is_on_a_valid_path(case: Case) -> None:
    decision = decide(case.served, case.hierarchy.stores, AT, Policy(mode=case.mode))
    assert decision.validating_stores
    assert set(decision.chain[1:]) <= on_valid_paths(decision)


# -- never validates worse -------------------------------------------------------------

Accepts = Callable[[Sequence[Cert], Sequence[Cert], dt.datetime], bool]


@dataclass
class Tally:
    """What the examples of one property exercised."""

    examples: int = 0
    validating: int = 0
    """Examples where the chain as sent or as served validates for at least one store."""
    twins: int = 0
    exempted: list[str] = field(default_factory=list)

    def check(self, name: str, started: float) -> None:
        ratio = self.validating / self.examples
        print(
            f"\n{name}: {self.examples} examples, {self.twins} with twins, "
            f"{ratio:.0%} with a validating store, {len(self.exempted)} store checks exempted "
            f"(conflicting twins), {time.monotonic() - started:.1f} s"
        )
        assert ratio >= 0.8, f"only {self.validating} of {self.examples} examples validated anywhere"


def never_worse(case: Case, accepts: Accepts, tally: Tally, *, first_match: bool) -> None:
    """For every store: if the file as served validates, or the chain as the CA
    sent it, then the chain trimmed from the file as served validates too.

    A verifier that takes the first matching issuer at each depth (OpenSSL 3.0,
    GnuTLS) cannot be served well for two stores that need different twins at
    one depth; chainwatch names those stores in a warning. A named store is
    exempt, only for such verifiers, when the verifier itself confirms that
    no single twin of some CA serves every store its twins serve: a warning
    that merely covers a bad order excuses nothing.
    """
    hierarchy = case.hierarchy
    decision = decide(case.served, hierarchy.stores, AT, Policy(mode=case.mode))
    conflicts = [
        name
        for warning in decision.warnings
        if warning.code == WarningCode.CONFLICTING_TWINS
        for name in warning.message.split("may fail for: ", 1)[1].split(", ")
    ]
    tally.examples += 1
    tally.twins += hierarchy.twin_levels > 0
    validated = False
    for store in hierarchy.stores:
        if not (accepts(hierarchy.chain, store.anchors, AT) or accepts(case.served, store.anchors, AT)):
            continue
        validated = True
        if first_match and store.name in conflicts and needs_different_twins(decision, hierarchy.stores, accepts):
            tally.exempted.append(store.name)
            continue
        assert accepts(decision.chain, store.anchors, AT), (store.name, [c.short_subject for c in decision.chain])
    tally.validating += validated


def needs_different_twins(decision: Decision, stores: Sequence[TrustStore], accepts: Accepts) -> bool:
    groups: dict[tuple[bytes, bytes], list[Cert]] = {}
    for cert in decision.chain[1:]:
        groups.setdefault(cert.identity, []).append(cert)
    for group in (g for g in groups.values() if len(g) > 1):
        serves: list[set[str]] = []
        for chosen in group:
            alone = [cert for cert in decision.chain if cert not in group or cert == chosen]
            serves.append({store.name for store in stores if accepts(alone, store.anchors, AT)})
        if not any(served >= set().union(*serves) for served in serves):
            return True
    return False


# The validator properties draw a fixed sample, the same in every run, so that
# CI's verdict never depends on the draw; CHAINWATCH_EXPLORE=1 draws afresh
# (run it in a loop to hunt). Fresh draws still find, about once in a
# thousand examples, a GnuTLS 3.7 rejection that follows from the order of
# the served chain (README, "Known limits").
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=not os.environ.get("CHAINWATCH_EXPLORE"),
)


def test_sanitized_chain_never_validates_worse_with_openssl() -> None:
    tally, started = Tally(), time.monotonic()

    @settings(SETTINGS, max_examples=80)
    @given(cases())
    def prop(case: Case) -> None:
        never_worse(case, openssl_accepts, tally, first_match=True)

    prop()
    tally.check("openssl", started)


def test_sanitized_chain_never_validates_worse_with_openssl_without_alternate_chains() -> None:
    tally, started = Tally(), time.monotonic()

    @settings(SETTINGS, max_examples=80)
    @given(cases())
    def prop(case: Case) -> None:
        never_worse(case, lambda c, a, at: openssl_accepts(c, a, at, alt_chains=False), tally, first_match=True)

    prop()
    tally.check("openssl -no_alt_chains", started)


def test_sanitized_chain_never_validates_worse_with_gnutls() -> None:
    tally, started = Tally(), time.monotonic()

    @settings(SETTINGS, max_examples=50)
    @given(cases())
    def prop(case: Case) -> None:
        never_worse(case, gnutls_accepts, tally, first_match=True)

    prop()
    tally.check("gnutls", started)


@pytest.mark.skipif(not PYCA_HAS_VERIFIER, reason="cryptography < 42 has no verifier (Debian 12 ships 38.0.4)")
def test_sanitized_chain_never_validates_worse_with_pyca_on_web_pki_hierarchies() -> None:
    # Ed25519 is left out by construction: pyca rejects it by design, and
    # the next test proves that it does so for the original and the output alike.
    tally, started = Tally(), time.monotonic()

    @settings(SETTINGS, max_examples=100)
    @given(cases(WEB_PKI_KINDS))
    def prop(case: Case) -> None:
        never_worse(case, lambda c, a, at: pyca_accepts(c, a, at, DNS_NAME), tally, first_match=False)

    prop()
    tally.check("pyca (Web PKI algorithms only)", started)


@pytest.mark.skipif(not PYCA_HAS_VERIFIER, reason="cryptography < 42 has no verifier (Debian 12 ships 38.0.4)")
def test_pyca_rejects_ed25519_hierarchies_before_and_after_trimming() -> None:
    root = CA.root("Ed Root", key=pooled_key("ed25519", 0))
    issuing = root.intermediate("Ed CA", key=pooled_key("ed25519", 1))
    chain = [cert_of(issuing.leaf(DNS_NAME, key=pooled_key("ed25519", 2))[0]), issuing.c]
    anchors = [root.c]
    sanitized = decide(chain, [TrustStore.of("s", anchors)], AT).chain
    assert openssl_accepts(chain, anchors, AT)
    assert not pyca_accepts(chain, anchors, AT, DNS_NAME)
    assert not pyca_accepts(sanitized, anchors, AT, DNS_NAME)


# -- never validates worse, for every client model ------------------------------------

CLIENT_MODELS = {
    "first-match": ClientModel(PathBuilding.FIRST_MATCH),
    "trusted-first": ClientModel(PathBuilding.TRUSTED_FIRST),
    "backtracking": ClientModel(PathBuilding.BACKTRACKING),
    "no-anchor-expiry": ClientModel(PathBuilding.BACKTRACKING, anchor_expiry=False),
    "first-match-no-anchor-expiry": ClientModel(PathBuilding.FIRST_MATCH, anchor_expiry=False),
}


def test_sanitized_chain_never_validates_for_fewer_clients_of_any_model() -> None:
    """Every store with every model is one client; each that validates the file as
    sent validates the sanitized chain, by the client models' own judgement."""
    tally, started = Tally(), time.monotonic()

    @settings(SETTINGS, max_examples=150)
    @given(cases())
    def prop(case: Case) -> None:
        clients = [
            Client(f"{store.name}/{name}", store, model)
            for store in case.hierarchy.stores
            for name, model in CLIENT_MODELS.items()
        ]
        decision = decide(case.served, [], AT, Policy(mode=case.mode), clients=clients)
        tally.examples += 1
        tally.twins += case.hierarchy.twin_levels > 0
        before = {c.name for c in clients if validates(case.served, c.store, c.model, AT).ok}
        after = {c.name for c in clients if validates(decision.chain, c.store, c.model, AT).ok}
        tally.validating += bool(before or after)
        assert before <= after, sorted(before - after)
        assert {r.name for r in decision.clients if r.served} == after

    prop()
    tally.check("client models", started)
