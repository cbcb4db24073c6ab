"""Whether one client validates a chain as a server sends it, for each client model.

The incidents the models exist for, on generated PKIs: a served cross-sign
to an expired root the store still holds (DST Root CA X3 in 2021, AddTrust
in 2020), Let's Encrypt's Generation Y with and without the new roots,
twins of one CA in both orders, and a missing intermediate.
"""

from __future__ import annotations

import datetime as dt

import pytest

from chainwatch.policy.client_check import ClientCheck, validates
from chainwatch.policy.settings import ClientModel, Distrust, PathBuilding
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore
from tests.pki import CA, DAY, T0, YEAR, cert_of

FIRST_MATCH = ClientModel(PathBuilding.FIRST_MATCH)
TRUSTED_FIRST = ClientModel(PathBuilding.TRUSTED_FIRST)
BACKTRACKING = ClientModel(PathBuilding.BACKTRACKING)
MODELS = [FIRST_MATCH, TRUSTED_FIRST, BACKTRACKING]
AFTER_OLD_ROOT = T0 + DAY
"""A day after the old root expired, as 2021-10-01 was for DST Root CA X3."""


def store(name: str, *cas: CA) -> TrustStore:
    return TrustStore.of(name, [ca.c for ca in cas])


class CrossSignedByExpiringRoot:
    """Let's Encrypt's chain of 2021 (and Sectigo's of 2020): the new root cross-signed by an old one expiring at T0."""

    def __init__(self, old: str = "DST Root CA X3", new: str = "ISRG Root X1", issuing: str = "R3") -> None:
        self.old = CA.root(old, not_after=T0)
        self.new = CA.root(new)
        self.cross = cert_of(self.old.cross_sign(self.new, not_after=T0 + 3 * YEAR))
        self.issuing = self.new.intermediate(issuing)
        self.leaf = cert_of(self.issuing.leaf()[0])
        self.served = [self.leaf, self.issuing.c, self.cross]


@pytest.fixture(scope="module")
def dst() -> CrossSignedByExpiringRoot:
    return CrossSignedByExpiringRoot()


@pytest.fixture(scope="module")
def addtrust() -> CrossSignedByExpiringRoot:
    return CrossSignedByExpiringRoot("AddTrust External CA Root", "USERTrust RSA", "Sectigo RSA DV")


@pytest.mark.parametrize(
    ("model", "verdict"),
    [
        # Measured (FIELD-NOTES): OpenSSL 1.0.2e fails with "certificate has expired";
        # OpenSSL 3 and pyca accept the same chain.
        (FIRST_MATCH, ClientCheck(False, "first-match: the served path reaches DST Root CA X3, expired 2030-01-01")),
        (TRUSTED_FIRST, ClientCheck(True, "trusted-first: validates through ISRG Root X1")),
        (BACKTRACKING, ClientCheck(True, "backtracking: validates through ISRG Root X1")),
    ],
)
def test_served_cross_sign_to_an_expired_root_the_store_holds_fails_only_first_match(
    dst: CrossSignedByExpiringRoot, model: ClientModel, verdict: ClientCheck
) -> None:
    both = store("debian-2021", dst.old, dst.new)

    assert validates(dst.served, both, model, AFTER_OLD_ROOT) == verdict


def test_first_match_validates_the_dst_chain_while_the_old_root_lives(dst: CrossSignedByExpiringRoot) -> None:
    both = store("debian-2021", dst.old, dst.new)

    assert validates(dst.served, both, FIRST_MATCH, T0 - DAY) == ClientCheck(
        True, "first-match: validates through DST Root CA X3"
    )


@pytest.mark.parametrize("model", MODELS)
def test_without_the_cross_sign_every_model_validates_the_dst_chain(
    dst: CrossSignedByExpiringRoot, model: ClientModel
) -> None:
    both = store("debian-2021", dst.old, dst.new)

    assert validates(dst.served[:2], both, model, AFTER_OLD_ROOT).ok


@pytest.mark.parametrize("model", MODELS)
def test_first_match_falls_back_lower_when_the_store_lacks_the_old_root(
    dst: CrossSignedByExpiringRoot, model: ClientModel
) -> None:
    # OpenSSL 1.0.2's alternative chains: no trusted issuer above the cross-sign, so it cuts there.
    new_only = store("debian-2024", dst.new)

    assert validates(dst.served, new_only, model, AFTER_OLD_ROOT).ok


@pytest.mark.parametrize("model", MODELS)
def test_an_expired_anchor_still_anchors_for_a_client_that_ignores_anchor_expiry(
    dst: CrossSignedByExpiringRoot, model: ClientModel
) -> None:
    android_7 = store("android-7.1", dst.old)

    checking = validates(dst.served, android_7, model, AFTER_OLD_ROOT)
    ignoring = validates(dst.served, android_7, model._replace(anchor_expiry=False), AFTER_OLD_ROOT)

    assert not checking.ok
    assert checking.detail.endswith("reaches DST Root CA X3, expired 2030-01-01")
    assert ignoring.ok


def test_an_expired_served_cross_sign_fails_even_a_client_that_ignores_anchor_expiry() -> None:
    old = CA.root("DST Root CA X3", not_after=T0)
    new = CA.root("ISRG Root X1")
    cross = cert_of(old.cross_sign(new, not_after=T0))
    issuing = new.intermediate("R3")
    served = [cert_of(issuing.leaf()[0]), issuing.c, cross]
    android = ClientModel(anchor_expiry=False)

    check = validates(served, store("android-7.1", old), android, AFTER_OLD_ROOT)

    assert check == ClientCheck(False, "backtracking: every path fails; one passes ISRG Root X1, expired 2030-01-01")


@pytest.mark.parametrize(
    ("model", "ok"),
    [(FIRST_MATCH, False), (TRUSTED_FIRST, True), (BACKTRACKING, True)],
)
def test_addtrust_chain_of_2020_fails_only_first_match_clients(
    addtrust: CrossSignedByExpiringRoot, model: ClientModel, ok: bool
) -> None:
    both = store("debian-2020", addtrust.old, addtrust.new)

    check = validates(addtrust.served, both, model, AFTER_OLD_ROOT)

    assert check.ok == ok
    assert ok or check.detail == "first-match: the served path reaches AddTrust External CA Root, expired 2030-01-01"


class GenerationY:
    """leaf ← YR1 ← Root YR (cross-signed by ISRG Root X1), and the ECDSA side through ISRG Root X2."""

    def __init__(self) -> None:
        self.x1 = CA.root("ISRG Root X1")
        self.x2 = CA.root("ISRG Root X2")
        self.yr = CA.root("Root YR")
        self.ye = CA.root("Root YE")
        self.yr_by_x1 = cert_of(self.x1.cross_sign(self.yr))
        self.x2_by_x1 = cert_of(self.x1.cross_sign(self.x2))
        self.ye_by_x2 = cert_of(self.x2.cross_sign(self.ye))
        self.yr1 = self.yr.intermediate("YR1")
        self.ye1 = self.ye.intermediate("YE1")
        self.rsa = [cert_of(self.yr1.leaf()[0]), self.yr1.c, self.yr_by_x1]
        self.ecdsa = [cert_of(self.ye1.leaf()[0]), self.ye1.c, self.ye_by_x2, self.x2_by_x1]


@pytest.fixture(scope="module")
def geny() -> GenerationY:
    return GenerationY()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("roots", [("x1",), ("yr",), ("x1", "yr")])
def test_generation_y_rsa_chain_validates_with_either_root(
    geny: GenerationY, model: ClientModel, roots: tuple[str, ...]
) -> None:
    held = store("s", *(getattr(geny, root) for root in roots))

    assert validates(geny.rsa, held, model, T0).ok


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("roots", [("x1",), ("x2",), ("ye",)])
def test_generation_y_ecdsa_chain_validates_with_any_of_its_three_roots(
    geny: GenerationY, model: ClientModel, roots: tuple[str, ...]
) -> None:
    held = store("s", *(getattr(geny, root) for root in roots))

    assert validates(geny.ecdsa, held, model, T0).ok


@pytest.mark.parametrize("model", MODELS)
def test_generation_y_without_its_cross_sign_fails_a_store_without_root_yr(
    geny: GenerationY, model: ClientModel
) -> None:
    debian_12 = store("debian-12", geny.x1)

    assert validates(geny.rsa[:2], debian_12, model, T0) == ClientCheck(False, "store lacks Root YR")


class Twins:
    """Issuing CA certified by a trusted root and, with the same key, by a root no store holds."""

    def __init__(self) -> None:
        self.trusted = CA.root("Trusted Root")
        self.unknown = CA.root("Unknown Root")
        self.issuing = self.trusted.intermediate("Issuing CA")
        self.other_twin = cert_of(self.unknown.certify(self.issuing.name, self.issuing.key.public_key(), ca=True))
        self.leaf = cert_of(self.issuing.leaf()[0])


@pytest.fixture(scope="module")
def twins() -> Twins:
    return Twins()


@pytest.mark.parametrize(
    ("model", "ok"),
    # Measured (FIELD-NOTES, "Path building in real verifiers"): OpenSSL 3 takes the
    # first matching twin and does not backtrack; GnuTLS fails the same order.
    [(FIRST_MATCH, False), (TRUSTED_FIRST, False), (BACKTRACKING, True)],
)
def test_twin_under_an_unknown_root_served_first_fails_clients_that_take_the_first_match(
    twins: Twins, model: ClientModel, ok: bool
) -> None:
    served = [twins.leaf, twins.other_twin, twins.issuing.c]

    check = validates(served, store("s", twins.trusted), model, T0)

    assert check.ok == ok
    assert ok or check.detail == "store lacks Unknown Root"


@pytest.mark.parametrize("model", MODELS)
def test_twin_under_the_trusted_root_served_first_validates_for_every_model(twins: Twins, model: ClientModel) -> None:
    served = [twins.leaf, twins.issuing.c, twins.other_twin]

    assert validates(served, store("s", twins.trusted), model, T0).ok


@pytest.mark.parametrize(
    ("model", "ok"),
    # Measured against OpenSSL 1.0.2e (nassl): "certificate has expired". OpenSSL 3
    # takes the first match within its dates.
    [(FIRST_MATCH, False), (TRUSTED_FIRST, True), (BACKTRACKING, True)],
)
def test_an_expired_twin_served_before_its_renewal_fails_only_first_match_clients(model: ClientModel, ok: bool) -> None:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA")
    expired = cert_of(root.certify(issuing.name, issuing.key.public_key(), ca=True, not_after=T0 - DAY))
    leaf = cert_of(issuing.leaf()[0])

    first = validates([leaf, expired, issuing.c], store("s", root), model, T0)
    last = validates([leaf, issuing.c, expired], store("s", root), model, T0)

    assert first.ok == ok
    assert ok or first.detail == "first-match: the served path passes Issuing CA, expired 2029-12-31"
    assert last.ok


@pytest.fixture(scope="module")
def missing() -> tuple[Cert, Cert, TrustStore]:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA")
    return cert_of(issuing.leaf()[0]), issuing.c, store("s", root)


@pytest.mark.parametrize("model", MODELS)
def test_a_missing_intermediate_fails_a_client_that_does_not_fetch(
    missing: tuple[Cert, Cert, TrustStore], model: ClientModel
) -> None:
    leaf, issuing, held = missing

    check = validates([leaf], held, model, T0, fetchable=[leaf, issuing])

    assert check == ClientCheck(False, "the leaf's issuer Issuing CA is neither served nor in the store")


@pytest.mark.parametrize("model", MODELS)
def test_a_client_that_fetches_validates_a_missing_intermediate_it_can_fetch_and_says_so(
    missing: tuple[Cert, Cert, TrustStore], model: ClientModel
) -> None:
    leaf, issuing, held = missing
    fetching = model._replace(aia=True)

    fetched = validates([leaf], held, fetching, T0, fetchable=[leaf, issuing])
    nothing_to_fetch = validates([leaf], held, fetching, T0)

    assert fetched == ClientCheck(
        True, f"{model.path_building}: validates only by fetching an intermediate (Issuing CA)"
    )
    assert not nothing_to_fetch.ok


@pytest.mark.parametrize("model", MODELS)
def test_fetching_never_repairs_a_path_that_fails_for_an_expired_intermediate(model: ClientModel) -> None:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA")
    expired = cert_of(root.certify(issuing.name, issuing.key.public_key(), ca=True, not_after=T0 - DAY))
    leaf = cert_of(issuing.leaf()[0])

    check = validates([leaf, expired], store("s", root), model._replace(aia=True), T0, fetchable=[issuing.c])

    which = {BACKTRACKING: "every path fails; one"}.get(model, "the served path")
    assert check == ClientCheck(False, f"{model.path_building}: {which} passes Issuing CA, expired 2029-12-31")


@pytest.mark.parametrize("model", MODELS)
def test_an_expired_leaf_fails_every_model(missing: tuple[Cert, Cert, TrustStore], model: ClientModel) -> None:
    leaf, issuing, held = missing
    after = leaf.not_after + dt.timedelta(seconds=1)

    check = validates([leaf, issuing], held, model, after)

    assert check == ClientCheck(False, f"{model.path_building}: the leaf mail.example.test, expired {after:%Y-%m-%d}")


@pytest.mark.parametrize("model", MODELS)
def test_a_distrusted_anchor_fails_every_model(missing: tuple[Cert, Cert, TrustStore], model: ClientModel) -> None:
    leaf, issuing, held = missing

    check = validates([leaf, issuing], held, model, T0, distrust=Distrust([held.anchors[0].sha256]))

    assert not check.ok
    assert check.detail.endswith("reaches Root, distrusted")


@pytest.mark.parametrize("model", MODELS)
def test_a_served_root_the_store_holds_counts_as_its_own_copy(
    missing: tuple[Cert, Cert, TrustStore], model: ClientModel
) -> None:
    leaf, issuing, held = missing

    assert validates([leaf, issuing, held.anchors[0]], held, model, T0).ok
    assert not validates([leaf, issuing, held.anchors[0]], store("empty"), model, T0).ok
