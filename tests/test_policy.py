"""The trim policy's rules, one behaviour a test, on PKIs the tests generate."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from chainwatch.errors import InputError
from chainwatch.policy.decision import Decision, Reason, Role, WarningCode
from chainwatch.policy.explain import Palette, render_tree
from chainwatch.policy.paths import MAX_PATH_STEPS
from chainwatch.policy.report import decision_json
from chainwatch.policy.settings import Distrust, Mode, Policy
from chainwatch.policy.trim import decide
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.trust import TrustStore
from tests.pki import CA, DAY, T0, YEAR, cert_of, new_key, openssl_signed, shared_rsa_key
from tests.validators import PYCA_HAS_VERIFIER, gnutls_accepts, openssl_accepts, pyca_accepts

SECOND = dt.timedelta(seconds=1)


def store(name: str, *cas: CA) -> TrustStore:
    return TrustStore.of(name, [ca.c for ca in cas])


def dropped(decision: Decision) -> dict[str, Reason | None]:
    return {f"#{v.position + 1}": v.reason for v in decision.dropped}


def served(decision: Decision) -> list[str]:
    return [f"{cert.short_subject}←{cert.short_issuer}" for cert in decision.chain]


class DstLike:
    """New Root, cross-signed by Old Root which expires at T0."""

    def __init__(self) -> None:
        self.old = CA.root("Old Root", not_after=T0)
        self.new = CA.root("New Root")
        self.cross = cert_of(self.old.cross_sign(self.new, not_after=T0 + 3 * YEAR))
        self.issuing = self.new.intermediate("Issuing CA")
        leaf, self.key = self.issuing.leaf()
        self.leaf = cert_of(leaf)
        self.chain = [self.leaf, self.issuing.c, self.cross]


@pytest.fixture(scope="module")
def dst() -> DstLike:
    return DstLike()


# -- leaf ----------------------------------------------------------------------


def test_leaf_is_the_first_end_entity_certificate(dst: DstLike) -> None:
    decision = decide([dst.issuing.c, dst.leaf], [store("s", dst.new)], T0)
    assert decision.leaf == dst.leaf
    assert decision.chain == (dst.leaf, dst.issuing.c)


def test_leaf_is_the_certificate_matching_the_key_when_one_is_given(dst: DstLike) -> None:
    other, _ = dst.issuing.leaf("other.example.test")
    key_der = Cert(dst.leaf.x509).public_key_der
    decision = decide([cert_of(other), *dst.chain], [store("s", dst.new)], T0, leaf_key=key_der)
    assert decision.leaf == dst.leaf
    assert dropped(decision) == {"#1": Reason.UNRELATED, "#4": Reason.ISSUER_UNTRUSTED}


def test_key_matching_no_certificate_is_an_input_error(dst: DstLike) -> None:
    stranger = Cert(dst.old.cert).public_key_der
    with pytest.raises(InputError, match="private key matches no certificate"):
        decide(dst.chain[1:], [store("s", dst.new)], T0, leaf_key=stranger)


def test_chain_without_end_entity_is_an_input_error(dst: DstLike) -> None:
    with pytest.raises(InputError, match="no end-entity certificate"):
        decide([dst.issuing.c, dst.cross], [store("s", dst.new)], T0)


def test_expired_leaf_is_kept_and_warned_about(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("s", dst.new)], dst.leaf.not_after + SECOND)
    assert decision.chain[0] == dst.leaf
    assert WarningCode.LEAF_EXPIRED in [w.code for w in decision.warnings]


def test_leaf_valid_until_its_last_second(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("s", dst.new)], dst.leaf.not_after)
    assert not decision.has(WarningCode.LEAF_EXPIRED)


def test_leaf_not_yet_valid_is_warned_about(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("s", dst.new)], dst.leaf.not_before - SECOND)
    assert decision.has(WarningCode.LEAF_NOT_YET_VALID)


# -- anchors, duplicates, unrelated ---------------------------------------------


def test_self_signed_root_in_the_chain_is_dropped_as_anchor(dst: DstLike) -> None:
    decision = decide([*dst.chain, dst.new.c], [store("s", dst.old, dst.new)], T0 - DAY)
    assert dropped(decision) == {"#4": Reason.ANCHOR}


def test_repeated_certificate_is_dropped_as_duplicate(dst: DstLike) -> None:
    decision = decide([dst.leaf, dst.issuing.c, dst.issuing.c, dst.leaf], [store("s", dst.new)], T0)
    assert dropped(decision) == {"#3": Reason.DUPLICATE, "#4": Reason.DUPLICATE}
    assert decision.chain == (dst.leaf, dst.issuing.c)


def test_certificate_from_another_hierarchy_is_unrelated(dst: DstLike) -> None:
    stranger = CA.root("Elsewhere Root").intermediate("Elsewhere CA")
    decision = decide([dst.leaf, stranger.c, dst.issuing.c], [store("s", dst.new)], T0)
    assert dropped(decision) == {"#2": Reason.UNRELATED}


def test_impostor_with_the_issuers_name_but_another_key_is_unrelated(dst: DstLike) -> None:
    impostor = dst.new.intermediate("Issuing CA")  # same name, fresh key
    decision = decide([dst.leaf, impostor.c, dst.issuing.c], [store("s", dst.new)], T0)
    assert dropped(decision) == {"#2": Reason.UNRELATED}
    assert "key does not verify" in decision.verdicts[1].detail
    assert decision.chain == (dst.leaf, dst.issuing.c)


def test_impostor_alone_leaves_the_chain_incomplete(dst: DstLike) -> None:
    impostor = dst.new.intermediate("Issuing CA")
    decision = decide([dst.leaf, impostor.c], [store("s", dst.new)], T0)
    assert dropped(decision) == {"#2": Reason.UNRELATED}
    assert decision.has(WarningCode.INCOMPLETE)


# -- expiry ---------------------------------------------------------------------


def test_expired_intermediate_is_dropped_beside_its_renewed_twin() -> None:
    root = CA.root("Root")
    key = new_key()
    old = root.intermediate("Issuing CA", key=key, not_before=T0 - 3 * YEAR, not_after=T0 - DAY)
    renewed = root.intermediate("Issuing CA", key=key, not_before=T0 - 2 * DAY, not_after=T0 + YEAR)
    leaf, _ = renewed.leaf()
    decision = decide([cert_of(leaf), old.c, renewed.c], [store("s", root)], T0)
    assert dropped(decision) == {"#2": Reason.EXPIRED}
    assert served(decision) == ["mail.example.test←Issuing CA", "Issuing CA←Root"]
    assert decision.warnings == ()


def test_of_two_valid_certificates_one_issuer_made_for_a_ca_the_longer_lived_is_served() -> None:
    # Both verify under the same root: interchangeable on every path. With
    # both at one depth under a cross-signed root, GnuTLS 3.7 rejected the
    # chain it accepts with one (tests/test_properties.py found it).
    root = CA.root("Root")
    key = new_key()
    sooner = root.intermediate("Issuing CA", key=key, not_before=T0 - YEAR, not_after=T0 + YEAR)
    later = root.intermediate("Issuing CA", key=key, not_before=T0 - DAY, not_after=T0 + 3 * YEAR)
    leaf, _ = later.leaf()
    for order in ([sooner.c, later.c], [later.c, sooner.c]):
        decision = decide([cert_of(leaf), *order], [store("s", root)], T0)
        assert decision.chain == (cert_of(leaf), later.c)
        position = order.index(sooner.c) + 2
        assert dropped(decision) == {f"#{position}": Reason.COVERED}
        assert decision.warnings == ()


def test_a_reissued_intermediate_under_a_cross_signed_root_is_served_once_and_gnutls_validates() -> None:
    # The shape hypothesis found: GnuTLS 3.7's certtool accepted the file
    # (which also held an expired third twin) and rejected it trimmed to both
    # valid twins, the intermediate above and the cross-signed root.
    root0, root1 = CA.root("Root 0"), CA.root("Root 1")
    ca1 = root0.intermediate("CA 1")
    key = new_key()
    first = ca1.intermediate("CA 2", key=key, not_after=T0 + 3 * YEAR)
    second = ca1.intermediate("CA 2", key=key, not_after=T0 + 2 * YEAR)
    leaf, _ = first.leaf()
    chain = [cert_of(leaf), first.c, second.c, ca1.c, cert_of(root1.cross_sign(root0))]
    stores = [store("store-0", root0), store("store-1", root1)]
    decision = decide(chain, stores, T0)
    assert dropped(decision) == {"#3": Reason.COVERED}
    assert decision.validating_stores == ("store-0", "store-1")
    for trusted in (root0, root1):
        assert gnutls_accepts(decision.chain, [trusted.c], T0), trusted.c.short_subject
        assert openssl_accepts(decision.chain, [trusted.c], T0), trusted.c.short_subject


def test_a_twin_whose_way_up_another_twin_also_takes_is_dropped_and_gnutls_validates() -> None:
    # CA 1 from Root 1 leads only to Root 1; CA 1 from Root 0 leads to Root 0
    # and, through the cross-sign, to Root 1 too. GnuTLS 3.7 rejected the
    # chain with both for store-0's clients, whatever the order.
    root0, root1 = CA.root("Root 0"), CA.root("Root 1")
    key = new_key()
    main = root0.intermediate("CA 1", key=key)
    twin = root1.intermediate("CA 1", key=key)
    leaf, _ = main.leaf()
    cross = cert_of(root1.cross_sign(root0))
    stores = [store("store-0", root0), store("store-1", root1)]
    decision = decide([cert_of(leaf), main.c, twin.c, cross], stores, T0)
    assert dropped(decision) == {"#3": Reason.COVERED}
    assert decision.chain == (cert_of(leaf), main.c, cross)
    for trusted in (root0, root1):
        assert gnutls_accepts(decision.chain, [trusted.c], T0), trusted.c.short_subject
    # Without the cross-sign each twin alone reaches one root: both stay.
    assert decide([cert_of(leaf), main.c, twin.c], stores, T0).chain == (cert_of(leaf), main.c, twin.c)


def test_a_twin_reaching_a_root_only_through_a_ca_no_store_holds_covers_nothing() -> None:
    # Root 0 from Outside Root leads, through Outside Root from Root 1, to
    # Root 1 as well; dropping Root 0 from Root 1 for it made GnuTLS 3.7
    # reject the chain for store-0 (the property tests found it). It stays.
    root0, root1, outside = CA.root("Root 0"), CA.root("Root 1"), CA.root("Outside Root")
    ca1 = root0.intermediate("CA 1")
    leaf, _ = ca1.leaf()
    direct = cert_of(root1.cross_sign(root0))
    roundabout = cert_of(outside.cross_sign(root0))
    outside_from_root1 = cert_of(root1.cross_sign(outside))
    stores = [store("store-0", root0), store("store-1", root1)]
    decision = decide([cert_of(leaf), ca1.c, direct, outside_from_root1, roundabout], stores, T0)
    assert set(decision.chain) == {cert_of(leaf), ca1.c, direct, outside_from_root1, roundabout}
    assert dropped(decision) == {}


def test_intermediate_not_yet_valid_is_dropped_as_expired() -> None:
    root = CA.root("Root")
    future = root.intermediate("Future CA", not_before=T0 + DAY)
    leaf, _ = future.leaf()
    decision = decide([cert_of(leaf), future.c], [store("s", root)], T0)
    assert dropped(decision) == {"#2": Reason.EXPIRED}
    assert decision.has(WarningCode.INCOMPLETE)


# -- cross-signs: the DST Root CA X3 case -----------------------------------------


def test_cross_sign_to_a_live_old_root_is_kept_in_safe_mode(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("modern", dst.new), store("legacy", dst.old)], T0 - DAY)
    assert decision.role_of(dst.cross) == Role.CROSS_SIGN
    assert dropped(decision) == {}


def test_cross_sign_kept_at_the_old_roots_last_second(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("legacy", dst.old, dst.new)], T0)
    assert decision.role_of(dst.cross) == Role.CROSS_SIGN


def test_cross_sign_to_an_expired_old_root_is_issuer_expired(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("legacy", dst.old, dst.new)], T0 + SECOND)
    assert dropped(decision) == {"#3": Reason.ISSUER_EXPIRED}
    assert served(decision) == ["mail.example.test←Issuing CA", "Issuing CA←New Root"]


def test_cross_sign_whose_issuer_no_store_knows_is_issuer_untrusted(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("modern", dst.new)], T0 - DAY)
    assert dropped(decision) == {"#3": Reason.ISSUER_UNTRUSTED}


def test_cross_sign_to_a_distrusted_old_root_is_issuer_distrusted(dst: DstLike) -> None:
    policy = Policy(distrust=Distrust([Cert(dst.old.cert).sha256.upper()]))
    decision = decide(dst.chain, [store("legacy", dst.old, dst.new)], T0 - DAY, policy)
    assert dropped(decision) == {"#3": Reason.ISSUER_DISTRUSTED}


def test_distrust_by_subject_dn_in_openssl_order(dst: DstLike) -> None:
    policy = Policy(distrust=Distrust(["C = XX, O = chainwatch tests, CN = Old Root"]))
    decision = decide(dst.chain, [store("legacy", dst.old, dst.new)], T0 - DAY, policy)
    assert dropped(decision) == {"#3": Reason.ISSUER_DISTRUSTED}


def test_only_old_root_clients_make_the_chain_incomplete_after_expiry(dst: DstLike) -> None:
    decision = decide(dst.chain, [store("modern", dst.new), store("ancient", dst.old)], T0 + SECOND)
    assert dropped(decision) == {"#3": Reason.ISSUER_EXPIRED}
    incomplete = [w.message for w in decision.warnings if w.code == WarningCode.INCOMPLETE]
    assert incomplete == ["clients using ancient cannot validate the served chain: Old Root expired on 2030-01-01"]
    assert decision.validating_stores == ("modern",)


# -- cross-signs: Generation Y -------------------------------------------------------


class GenYLike:
    """Old root X1 in every store; new root YR only in modern ones."""

    def __init__(self) -> None:
        self.x1 = CA.root("Root X1")
        self.yr = CA.root("Root YR")
        self.cross = cert_of(self.x1.cross_sign(self.yr))
        self.yr1 = self.yr.intermediate("YR1")
        leaf, _ = self.yr1.leaf()
        self.chain = [cert_of(leaf), self.yr1.c, self.cross]


@pytest.fixture(scope="module")
def geny() -> GenYLike:
    return GenYLike()


def test_cross_sign_to_a_new_root_stays_for_stores_without_it(geny: GenYLike) -> None:
    decision = decide(geny.chain, [store("debian12", geny.x1)], T0)
    assert decision.chain == tuple(geny.chain)
    assert decision.warnings == ()


def test_cross_sign_stays_in_minimal_mode_while_one_store_needs_it(geny: GenYLike) -> None:
    stores = [store("debian12", geny.x1), store("debian14", geny.x1, geny.yr)]
    decision = decide(geny.chain, stores, T0, Policy(mode=Mode.MINIMAL))
    assert decision.chain == tuple(geny.chain)


def test_cross_sign_is_not_needed_in_minimal_mode_when_every_store_has_the_new_root(geny: GenYLike) -> None:
    decision = decide(geny.chain, [store("debian14", geny.x1, geny.yr)], T0, Policy(mode=Mode.MINIMAL))
    assert dropped(decision) == {"#3": Reason.NOT_NEEDED}
    assert decision.warnings == ()


def test_safe_mode_keeps_a_cross_sign_that_no_store_strictly_needs(geny: GenYLike) -> None:
    decision = decide(geny.chain, [store("debian14", geny.x1, geny.yr)], T0)
    assert decision.role_of(geny.cross) == Role.CROSS_SIGN


# -- loops and bounds ---------------------------------------------------------------------


def test_mutual_cross_signs_terminate_and_keep_what_leads_to_an_anchor() -> None:
    a, b = CA.root("Root A"), CA.root("Root B")
    a_by_b, b_by_a = cert_of(b.cross_sign(a)), cert_of(a.cross_sign(b))
    issuing = a.intermediate("Issuing CA")
    leaf, _ = issuing.leaf()
    decision = decide([cert_of(leaf), issuing.c, a_by_b, b_by_a], [store("knows-b", b)], T0)
    assert served(decision) == ["mail.example.test←Issuing CA", "Issuing CA←Root A", "Root A←Root B"]
    assert dropped(decision) == {"#4": Reason.ISSUER_UNTRUSTED}


def test_cross_sign_mesh_beyond_the_budget_is_refused() -> None:
    # Two CAs a layer, each signed by both above it: 2**16 paths from 62 certificates.
    layers = [[CA.root(f"L0-{i}") for i in range(2)]]
    certs: list[Cert] = []
    for depth in range(1, 16):
        layer = [CA.root(f"L{depth}-{i}") for i in range(2)]
        certs += [cert_of(upper.cross_sign(lower)) for lower in layers[-1] for upper in layer]
        layers.append(layer)
    leaf, _ = layers[0][0].leaf()
    assert MAX_PATH_STEPS < 2**16
    with pytest.raises(InputError, match="alternative paths"):
        decide([cert_of(leaf), *certs], [store("top", *layers[-1])], T0)


# -- links -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "ed25519", "rsa"])
def test_links_verify_with_each_key_type(kind: str) -> None:
    root = CA.root(f"{kind} root", key=new_key(kind))
    issuing = root.intermediate(f"{kind} CA", key=new_key(kind))
    leaf, _ = issuing.leaf(key=new_key(kind))
    decision = decide([cert_of(leaf), issuing.c], [store("s", root)], T0)
    assert decision.dropped == ()
    assert decision.warnings == ()


# -- warnings ----------------------------------------------------------------------------


def test_intermediate_expiring_within_the_horizon_is_warned_about() -> None:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA", not_after=T0 + 10 * DAY)
    leaf, _ = issuing.leaf(not_after=T0 + 9 * DAY, not_before=T0 - 80 * DAY)
    decision = decide([cert_of(leaf), issuing.c], [store("s", root)], T0)
    messages = [w.message for w in decision.warnings if w.code == WarningCode.EXPIRING_SOON]
    assert messages == [
        "mail.example.test (served) expires on 2030-01-10, in 9 days",
        "Issuing CA (served) expires on 2030-01-11, in 10 days",
    ]


def test_anchor_expiring_within_the_horizon_is_warned_about() -> None:
    root = CA.root("Old Root", not_after=T0 + 5 * DAY)
    issuing = root.intermediate("Issuing CA")
    leaf, _ = issuing.leaf()
    decision = decide([cert_of(leaf), issuing.c], [store("s", root)], T0)
    assert [w.message for w in decision.warnings] == ["Old Root (the anchor s uses) expires on 2030-01-06, in 5 days"]


def test_short_lived_leaf_is_not_warned_about_for_its_whole_life() -> None:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA")
    six_days, _ = issuing.leaf(not_before=T0 - DAY, not_after=T0 + 5 * DAY)
    decision = decide([cert_of(six_days), issuing.c], [store("s", root)], T0)
    assert decision.warnings == ()
    late = decide([cert_of(six_days), issuing.c], [store("s", root)], T0 + 4 * DAY)
    assert [w.code for w in late.warnings] == [WarningCode.EXPIRING_SOON]


def test_horizon_is_configurable() -> None:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA")
    leaf, _ = issuing.leaf(not_before=T0 - 300 * DAY, not_after=T0 + 30 * DAY)
    chain = [cert_of(leaf), issuing.c]
    assert decide(chain, [store("s", root)], T0).warnings == ()
    wide = decide(chain, [store("s", root)], T0, Policy(horizon=dt.timedelta(days=45)))
    assert [w.code for w in wide.warnings] == [WarningCode.EXPIRING_SOON]


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide([], [], dt.datetime(2030, 1, 1))


def test_sha1_accepted_only_on_links_from_self_signed_roots() -> None:
    root = CA.root("Legacy Root", key=shared_rsa_key(0))
    issuing = root.intermediate("Issuing CA", key=shared_rsa_key(1))
    sha1_intermediate = cert_of(openssl_signed(root, issuing, digest="sha1"))
    sha1_leaf = cert_of(openssl_signed(issuing, digest="sha1"))
    accepted = decide([cert_of(issuing.leaf()[0]), sha1_intermediate], [store("s", root)], T0)
    assert accepted.dropped == ()
    assert accepted.warnings == ()
    refused = decide([sha1_leaf, issuing.c], [store("s", root)], T0)
    assert dropped(refused) == {"#2": Reason.UNRELATED}


def test_rsa_pss_links_verify() -> None:
    root = CA.root("PSS Root", key=shared_rsa_key(0))
    issuing = root.intermediate("PSS CA", key=shared_rsa_key(1))
    pss_intermediate = cert_of(openssl_signed(root, issuing, pss=True))
    pss_leaf = cert_of(openssl_signed(issuing, pss=True))
    decision = decide([pss_leaf, pss_intermediate], [store("s", root)], T0)
    assert decision.dropped == ()
    assert decision.warnings == ()


# -- twins: one CA's certificate from different issuers (issue 11) ---------------------


def twin(ca: CA, issuer: CA, **window: dt.datetime) -> Cert:
    """``ca``'s subject and key certified by ``issuer``."""
    return cert_of(issuer.certify(ca.name, ca.key.public_key(), ca=True, **window))


Accepts = Callable[[Sequence[Cert], Sequence[Cert]], bool]


def verifiers() -> dict[str, Accepts]:
    out: dict[str, Accepts] = {
        "openssl": lambda chain, anchors: openssl_accepts(chain, anchors, T0),
        "openssl -no_alt_chains": lambda chain, anchors: openssl_accepts(chain, anchors, T0, alt_chains=False),
        "gnutls": lambda chain, anchors: gnutls_accepts(chain, anchors, T0),
    }
    if PYCA_HAS_VERIFIER:
        out["pyca"] = lambda chain, anchors: pyca_accepts(chain, anchors, T0, "mail.example.test")
    return out


def accepting(chain: Sequence[Cert], trust: TrustStore) -> list[str]:
    return [name for name, accepts in verifiers().items() if accepts(chain, trust.anchors)]


class Twins:
    """ICA certified by a root every store holds, and by Root 2, which none holds."""

    def __init__(self) -> None:
        self.root, self.root2 = CA.root("Root"), CA.root("Root 2")
        self.ica = self.root.intermediate("ICA")
        self.trusted = self.ica.c
        self.stray = twin(self.ica, self.root2, not_after=T0 + 5 * YEAR)  # outlives the trusted twin
        self.leaf = cert_of(self.ica.leaf()[0])
        self.store = store("s", self.root)


@pytest.fixture(scope="module")
def twins() -> Twins:
    return Twins()


def test_twin_whose_issuer_no_store_knows_is_dropped_and_the_working_order_kept(twins: Twins) -> None:
    original = [twins.leaf, twins.trusted, twins.stray]
    decision = decide(original, [twins.store], T0)
    assert dropped(decision) == {"#3": Reason.ISSUER_UNTRUSTED}
    assert "Root 2 is in no trust store and not in the chain" in decision.verdicts[2].detail
    assert decision.chain == (twins.leaf, twins.trusted)
    assert decision.warnings == ()
    assert accepting(original, twins.store) == list(verifiers())
    assert accepting(decision.chain, twins.store) == list(verifiers())


def test_trusted_twin_last_in_the_file_is_served_and_first_match_clients_then_validate(twins: Twins) -> None:
    original = [twins.leaf, twins.stray, twins.trusted]
    decision = decide(original, [twins.store], T0)
    assert dropped(decision) == {"#2": Reason.ISSUER_UNTRUSTED}
    assert decision.chain == (twins.leaf, twins.trusted)
    assert not decision.has(WarningCode.REORDERED)
    assert "openssl -no_alt_chains" not in accepting(original, twins.store)
    assert accepting(decision.chain, twins.store) == list(verifiers())


def test_twin_under_an_expired_root_is_issuer_expired_beside_two_others(twins: Twins) -> None:
    old = CA.root("Old Root", not_after=T0 - DAY)
    expired_twin = twin(twins.ica, old, not_after=T0 + 5 * YEAR)
    trust = store("s", twins.root, old)
    decision = decide([twins.leaf, expired_twin, twins.stray, twins.trusted], [trust], T0)
    assert dropped(decision) == {"#2": Reason.ISSUER_EXPIRED, "#3": Reason.ISSUER_UNTRUSTED}
    assert decision.chain == (twins.leaf, twins.trusted)
    assert accepting(decision.chain, trust) == list(verifiers())


def test_twins_at_depth_two_keep_the_one_on_a_valid_path() -> None:
    root, root2 = CA.root("Root"), CA.root("Root 2")
    upper = root.intermediate("Upper CA")
    stray = twin(upper, root2, not_after=T0 + 5 * YEAR)
    lower = upper.intermediate("Lower CA")
    leaf = cert_of(lower.leaf()[0])
    trust = store("s", root)
    decision = decide([leaf, lower.c, stray, upper.c], [trust], T0)
    assert dropped(decision) == {"#3": Reason.ISSUER_UNTRUSTED}
    assert decision.chain == (leaf, lower.c, upper.c)
    assert accepting(decision.chain, trust) == list(verifiers())


def test_twin_more_stores_validate_through_is_served_first_without_warning(twins: Twins) -> None:
    # Root 2 is in both stores, Root only in "old": the Root 2 twin serves both.
    stores = [store("old", twins.root, twins.root2), store("new", twins.root2)]
    decision = decide([twins.leaf, twins.trusted, twins.stray], stores, T0)
    assert decision.chain == (twins.leaf, twins.stray, twins.trusted)
    assert decision.has(WarningCode.REORDERED)
    assert not decision.has(WarningCode.CONFLICTING_TWINS)
    for trust in stores:
        assert accepting(decision.chain, trust) == list(verifiers()), trust.name


def test_twins_one_store_validates_through_both_stay_in_the_files_order(twins: Twins) -> None:
    # The longer-lived twin comes second in the file: a CA's working order is kept.
    trust = store("s", twins.root, twins.root2)
    decision = decide([twins.leaf, twins.trusted, twins.stray], [trust], T0)
    assert decision.chain == (twins.leaf, twins.trusted, twins.stray)
    assert decision.warnings == ()
    assert accepting(decision.chain, trust) == list(verifiers())


def test_twin_that_climbs_past_a_stores_expired_root_is_served_after_the_one_that_does_not() -> None:
    # OpenSSL takes the store's own Root 1, expired, over the cross-sign of
    # Root 1 that the file carries: for "holds-expired-root-1" only the
    # Root 0 twin works, though both make a path that is valid on paper.
    root0, root1 = CA.root("Root 0"), CA.root("Root 1", not_after=T0 - DAY)
    root1_by_root0 = cert_of(root0.cross_sign(root1))
    ica = root0.intermediate("ICA")
    by_root1 = twin(ica, root1)
    leaf = cert_of(ica.leaf()[0])
    stores = [store("root-0", root0), store("holds-expired-root-1", root1, root0)]
    decision = decide([leaf, by_root1, ica.c, root1_by_root0], stores, T0)
    assert decision.chain == (leaf, ica.c, by_root1, root1_by_root0)
    assert not decision.has(WarningCode.CONFLICTING_TWINS)
    for trust in stores:
        assert accepting(decision.chain, trust) == list(verifiers()), trust.name


def test_minimal_mode_keeps_the_twin_a_store_first_client_takes_when_the_other_climbs_past_its_expired_root() -> None:
    # Found by the generated hierarchies: "all" holds Root 0, Root 1 and an
    # expired Root 2; "root-1-only" holds Root 1. The Root 2 twin with the
    # cross-sign of Root 2 by Root 1 validates for both on paper, so minimal
    # mode shed the Root 0 twin; but OpenSSL without alternate chains takes
    # the store's expired Root 2 for "all" and fails. The Root 0 twin stays.
    root0, root1 = CA.root("Root 0"), CA.root("Root 1")
    root2 = CA.root("Root 2", not_after=T0 - DAY)
    root2_by_root1 = cert_of(root1.cross_sign(root2))
    ica = root0.intermediate("ICA")
    by_root2 = twin(ica, root2)
    leaf = cert_of(ica.leaf()[0])
    stores = [store("all", root0, root1, root2), store("root-1-only", root1)]
    decision = decide([leaf, ica.c, by_root2, root2_by_root1], stores, T0, Policy(mode=Mode.MINIMAL))
    assert decision.chain == (leaf, ica.c, by_root2, root2_by_root1)
    assert decision.validating_stores == ("all", "root-1-only")
    assert accepting(decision.chain, stores[0]) == list(verifiers())
    # The two stores need different twins: no one order serves first-match clients of both.
    assert decision.has(WarningCode.CONFLICTING_TWINS)
    assert "root-1-only" in next(w.message for w in decision.warnings if w.code == WarningCode.CONFLICTING_TWINS)


def test_twins_needed_by_different_stores_are_both_kept_in_file_order_and_warned_about(twins: Twins) -> None:
    stores = [store("knows-root", twins.root), store("knows-root-2", twins.root2)]
    decision = decide([twins.leaf, twins.stray, twins.trusted], stores, T0)
    assert decision.chain == (twins.leaf, twins.stray, twins.trusted)
    assert decision.validating_stores == ("knows-root", "knows-root-2")
    assert [w.message for w in decision.warnings] == [
        "stores need different twins of one CA, and clients that take the first matching issuer "
        "may fail for: knows-root"
    ]
    assert accepting(decision.chain, stores[1]) == list(verifiers())
    # What the warning is about: OpenSSL without alternate chains takes the first twin.
    assert "openssl -no_alt_chains" not in accepting(decision.chain, stores[0])


def test_twins_that_no_store_validates_are_all_kept_as_the_leafs_only_issuers() -> None:
    root2, root3 = CA.root("Root 2"), CA.root("Root 3")
    ica = root2.intermediate("ICA")
    leaf = cert_of(ica.leaf()[0])
    other = twin(ica, root3)
    decision = decide([leaf, ica.c, other], [store("s", CA.root("Elsewhere"))], T0)
    assert decision.dropped == ()
    assert decision.chain == (leaf, ica.c, other)
    assert decision.has(WarningCode.INCOMPLETE)


def test_trim_json_and_explain_list_the_served_certificates_in_one_order(twins: Twins) -> None:
    stores = [store("old", twins.root, twins.root2), store("new", twins.root2)]
    decision = decide([twins.leaf, twins.trusted, twins.stray], stores, T0)
    fingerprints = [cert.sha256 for cert in decision.chain]
    assert fingerprints == [twins.leaf.sha256, twins.stray.sha256, twins.trusted.sha256]
    assert [cert.sha256 for cert in parse_certificates(decision.pem(), "trim's output")] == fingerprints
    assert [entry["sha256"] for entry in decision_json(decision)["chain"]] == fingerprints
    tree = render_tree(decision, T0, "chain.pem", Palette(enabled=False))
    issuers_in_tree = re.findall(r"ICA ← (Root 2|Root)  kept", tree)
    assert issuers_in_tree == ["Root 2", "Root"]


@pytest.mark.parametrize(
    ("ca", "usage", "issues"),
    [
        (True, {"key_cert_sign": True, "crl_sign": True}, True),
        (True, {"digital_signature": True, "crl_sign": True}, False),  # signs CRLs, not certificates
        (True, None, True),  # no key usage: basic constraints decide
        (False, {"key_cert_sign": True}, False),
        (None, {"key_cert_sign": True}, False),  # no basic constraints: not a CA
    ],
)
def test_only_a_ca_whose_key_may_sign_certificates_issues(
    ca: bool | None, usage: dict[str, bool] | None, issues: bool
) -> None:
    key = new_key()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Constrained CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(T0 - YEAR)
        .not_valid_after(T0 + YEAR)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if usage is not None:
        flags = dict.fromkeys(
            ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"],
            False,
        )  # fmt: skip
        builder = builder.add_extension(x509.KeyUsage(**{**flags, **usage}), critical=True)
    assert cert_of(builder.sign(key, hashes.SHA256())).is_ca is issues
