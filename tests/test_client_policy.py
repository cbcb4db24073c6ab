"""The policy decides for clients: each with its own store and model, never worse off than with the file.

Also the forecast: when each client stops (or starts) validating the served chain.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from chainwatch.clients.catalogue import shipped, store_of
from chainwatch.config import DEFAULT_CLIENTS
from chainwatch.policy.client_check import Client
from chainwatch.policy.decision import ClientResult, Reason, Role, Verdict, WarningCode
from chainwatch.policy.every_client import ClientChecks, serve_every_client
from chainwatch.policy.forecast import ForecastChange, forecast
from chainwatch.policy.judge import Judge
from chainwatch.policy.paths import Candidates
from chainwatch.policy.settings import ClientModel, Mode, PathBuilding, Policy
from chainwatch.policy.trim import decide
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.trust import TrustStore
from tests.pki import CA, DAY, T0, YEAR, cert_of

SECOND = dt.timedelta(seconds=1)
VECTORS = Path(__file__).parent / "vectors" / "chains"
FIRST_MATCH = ClientModel(PathBuilding.FIRST_MATCH)
TRUSTED_FIRST = ClientModel(PathBuilding.TRUSTED_FIRST)
BACKTRACKING = ClientModel(PathBuilding.BACKTRACKING)
ANDROID = ClientModel(PathBuilding.BACKTRACKING, anchor_expiry=False)
AFTER_DST = T0 + DAY
"""A day after the old root expired, as 2021-10-01 was for DST Root CA X3."""


def store(name: str, *cas: CA) -> TrustStore:
    return TrustStore.of(name, [ca.c for ca in cas])


def served(decision_chain: tuple[Cert, ...]) -> list[str]:
    return [cert.short_subject for cert in decision_chain]


def results(clients: tuple[ClientResult, ...]) -> dict[str, tuple[bool, bool]]:
    return {result.name: (result.as_given, result.served) for result in clients}


def at_risk(messages: list[str]) -> list[str]:
    return [m.split("fails for: ", 1)[1] for m in messages]


class Dst:
    """Let's Encrypt in 2021: R3 under ISRG Root X1, which DST Root CA X3 (expiring at T0) cross-signed."""

    def __init__(self) -> None:
        self.dst = CA.root("DST Root CA X3", not_after=T0)
        self.x1 = CA.root("ISRG Root X1")
        self.cross = cert_of(self.dst.cross_sign(self.x1, not_after=T0 + 3 * YEAR))
        self.r3 = self.x1.intermediate("R3", not_after=T0 + 2 * YEAR)
        self.leaf = cert_of(self.r3.leaf(not_after=T0 + YEAR)[0])
        self.chain = [self.leaf, self.r3.c, self.cross]
        both = store("debian-2021", self.dst, self.x1)
        self.openssl_102 = Client("openssl-1.0.2", both, FIRST_MATCH)
        self.openssl_3 = Client("openssl-3", both, TRUSTED_FIRST)
        self.go = Client("go", store("go", self.x1), BACKTRACKING)
        self.android = Client("android-7.1", store("android-7.1", self.dst), ANDROID)


@pytest.fixture(scope="module")
def dst() -> Dst:
    return Dst()


def test_plain_stores_are_backtracking_clients_with_results(dst: Dst) -> None:
    decision = decide(dst.chain, [dst.go.store], AFTER_DST)

    assert decision.clients == (ClientResult("go", True, True, "backtracking: validates through ISRG Root X1"),)


def test_dst_cross_sign_an_android_client_needs_is_kept_and_the_first_match_client_named_at_risk(dst: Dst) -> None:
    clients = [dst.openssl_102, dst.openssl_3, dst.go, dst.android]

    decision = decide(dst.chain, [], AFTER_DST, clients=clients)

    assert decision.chain == tuple(dst.chain)
    assert decision.role_of(dst.cross) == Role.CROSS_SIGN
    assert decision.verdicts[2].detail == "needed by android-7.1"
    assert results(decision.clients) == {
        "openssl-1.0.2": (False, False),
        "openssl-3": (True, True),
        "go": (True, True),
        "android-7.1": (True, True),
    }
    assert decision.clients[0].detail == "first-match: the served path reaches DST Root CA X3, expired 2030-01-01"
    assert decision.validating_stores == ("openssl-3", "go", "android-7.1")
    assert [w.message for w in decision.warnings if w.code == WarningCode.INCOMPLETE] == [
        "clients using openssl-1.0.2 cannot validate the served chain: "
        "first-match: the served path reaches DST Root CA X3, expired 2030-01-01"
    ]
    assert at_risk([w.message for w in decision.warnings if w.code == WarningCode.CLIENTS_AT_RISK]) == ["openssl-1.0.2"]


def test_dst_cross_sign_no_client_needs_is_dropped_and_the_first_match_client_then_validates(dst: Dst) -> None:
    decision = decide(dst.chain, [], AFTER_DST, clients=[dst.openssl_102, dst.openssl_3, dst.go])

    assert decision.chain == (dst.leaf, dst.r3.c)
    assert decision.verdicts[2].reason == Reason.ISSUER_EXPIRED
    assert results(decision.clients)["openssl-1.0.2"] == (False, True)
    assert decision.clients[0].detail == (
        "as given, first-match: the served path reaches DST Root CA X3, expired 2030-01-01"
    )
    assert not decision.has(WarningCode.CLIENTS_AT_RISK)
    assert not decision.has(WarningCode.INCOMPLETE)


def test_android_ignoring_anchor_expiry_validates_through_the_expired_root_alone(dst: Dst) -> None:
    decision = decide(dst.chain, [], AFTER_DST, clients=[dst.android])

    assert decision.validating_stores == ("android-7.1",)
    assert results(decision.clients) == {"android-7.1": (True, True)}
    assert not decision.has(WarningCode.EXPIRING_SOON)


def test_a_cross_sign_no_client_needs_that_breaks_a_first_match_client_is_dropped_naming_it(dst: Dst) -> None:
    # Android 7.1.1's shape: it ignores anchor expiry, so the way through the
    # expired root is valid for it too, but it holds the new root as well.
    android = Client("android-7.1.1", store("android-7.1.1", dst.dst, dst.x1), ANDROID)

    decision = decide(dst.chain, [], AFTER_DST, clients=[dst.openssl_102, android])

    assert decision.chain == (dst.leaf, dst.r3.c)
    assert decision.verdicts[2].reason == Reason.ISSUER_EXPIRED
    assert decision.verdicts[2].detail == (
        "its issuer DST Root CA X3 expired on 2030-01-01; served, it breaks openssl-1.0.2 "
        "(first-match: the served path reaches DST Root CA X3, expired 2030-01-01), "
        "and every client that validates with it validates without it"
    )
    assert results(decision.clients) == {"openssl-1.0.2": (False, True), "android-7.1.1": (True, True)}
    assert decision.validating_stores == ("openssl-1.0.2", "android-7.1.1")
    assert not decision.has(WarningCode.CLIENTS_AT_RISK)
    assert not decision.has(WarningCode.INCOMPLETE)


def test_a_cross_sign_on_a_valid_path_is_kept_while_its_issuer_is_valid(dst: Dst) -> None:
    android = Client("android-7.1.1", store("android-7.1.1", dst.dst, dst.x1), ANDROID)

    decision = decide(dst.chain, [], T0 - DAY, clients=[dst.openssl_102, android])

    assert decision.chain == tuple(dst.chain)
    assert decision.verdicts[2].detail == "needed by openssl-1.0.2, android-7.1.1"
    assert results(decision.clients) == {"openssl-1.0.2": (True, True), "android-7.1.1": (True, True)}


def test_a_store_judged_as_ignoring_anchor_expiry_does_not_keep_a_cross_sign_it_validates_without(
    dst: Dst,
) -> None:
    # The configured store stands for its programs, judged by the rules of
    # steps 3-5: they take the new root's own path as well.
    both = store("android-roots", dst.dst, dst.x1)

    decision = decide(dst.chain, [both], AFTER_DST, Policy(client=ANDROID), clients=[dst.openssl_102])

    assert decision.chain == (dst.leaf, dst.r3.c)
    assert decision.verdicts[2].reason == Reason.ISSUER_EXPIRED
    assert "it breaks openssl-1.0.2 " in decision.verdicts[2].detail
    assert decision.validating_stores == ("android-roots", "openssl-1.0.2")
    assert not decision.has(WarningCode.CLIENTS_AT_RISK)


def test_a_cross_sign_leading_through_a_valid_intermediate_to_an_expired_root_is_dropped_as_breaking_a_client() -> None:
    # Nothing about the cross-sign's own issuer is wrong: the expired root is a step further.
    old = CA.root("Old Root", not_after=T0)
    old_ca = old.intermediate("Old CA", not_after=T0 + 5 * YEAR)
    new = CA.root("New Root")
    cross = cert_of(old_ca.cross_sign(new))
    issuing = new.intermediate("Issuing CA")
    leaf = cert_of(issuing.leaf()[0])
    both = store("both", old, new)
    first_match = Client("old-openssl", both, FIRST_MATCH)
    android = Client("android", both, ANDROID)

    decision = decide([leaf, issuing.c, cross, old_ca.c], [], AFTER_DST, clients=[first_match, android])

    assert decision.chain == (leaf, issuing.c)
    assert decision.verdicts[2].reason == Reason.BREAKS_CLIENT
    assert decision.verdicts[2].detail == (
        "served, it breaks old-openssl (first-match: the served path reaches Old Root, expired 2030-01-01), "
        "and every client that validates with it validates without it"
    )
    assert decision.verdicts[3].reason == Reason.UNRELATED
    assert results(decision.clients) == {"old-openssl": (False, True), "android": (True, True)}
    assert not decision.has(WarningCode.CLIENTS_AT_RISK)


def test_a_store_and_a_client_may_not_share_a_name(dst: Dst) -> None:
    with pytest.raises(ValueError, match="each client once"):
        decide(dst.chain, [dst.go.store], AFTER_DST, clients=[dst.go])


class Twins:
    """Issuing CA under Trusted Root and, with the same key, under Other Root."""

    def __init__(self) -> None:
        self.trusted = CA.root("Trusted Root")
        self.other = CA.root("Other Root")
        self.issuing = self.trusted.intermediate("Issuing CA")
        self.other_twin = cert_of(self.other.certify(self.issuing.name, self.issuing.key.public_key(), ca=True))
        self.leaf = cert_of(self.issuing.leaf()[0])


@pytest.fixture(scope="module")
def twins() -> Twins:
    return Twins()


@pytest.mark.parametrize("model", [FIRST_MATCH, TRUSTED_FIRST])
@pytest.mark.parametrize("other_first", [True, False])
def test_twin_a_first_match_client_needs_is_served_first_whatever_the_files_order(
    twins: Twins, model: ClientModel, other_first: bool
) -> None:
    rest = [twins.other_twin, twins.issuing.c] if other_first else [twins.issuing.c, twins.other_twin]
    clients = [
        Client("old-openssl", store("old", twins.trusted), model),
        Client("other-only", store("other", twins.other), BACKTRACKING),
    ]

    decision = decide([twins.leaf, *rest], [], T0, clients=clients)

    assert decision.chain == (twins.leaf, twins.issuing.c, twins.other_twin)
    assert results(decision.clients) == {"old-openssl": (not other_first, True), "other-only": (True, True)}
    assert not decision.has(WarningCode.CLIENTS_AT_RISK)


@pytest.mark.parametrize("model", [FIRST_MATCH, TRUSTED_FIRST])
def test_twins_two_first_match_clients_need_in_opposite_orders_name_the_one_at_risk(
    twins: Twins, model: ClientModel
) -> None:
    clients = [
        Client("trusted-old", store("trusted", twins.trusted), model),
        Client("other-old", store("other", twins.other), model),
    ]

    decision = decide([twins.leaf, twins.other_twin, twins.issuing.c], [], T0, clients=clients)

    assert set(decision.chain) == {twins.leaf, twins.issuing.c, twins.other_twin}
    failing = [result.name for result in decision.clients if not result.served]
    assert len(failing) == 1
    assert at_risk([w.message for w in decision.warnings if w.code == WarningCode.CLIENTS_AT_RISK]) == failing
    assert decision.validating_stores == tuple(r.name for r in decision.clients if r.served)
    assert [w.message for w in decision.warnings if w.code == WarningCode.INCOMPLETE] == [
        f"clients using {failing[0]} cannot validate the served chain: store lacks "
        f"{'Other Root' if failing[0] == 'trusted-old' else 'Trusted Root'}"
    ]


def test_twins_in_the_file_order_a_first_match_client_needs_are_never_reordered_against_it(twins: Twins) -> None:
    # Both clients validate the file as given; whichever order is served must keep the one that did.
    clients = [
        Client("trusted-old", store("trusted", twins.trusted), FIRST_MATCH),
        Client("everyone", store("both", twins.trusted, twins.other), BACKTRACKING),
    ]

    decision = decide([twins.leaf, twins.issuing.c, twins.other_twin], [], T0, clients=clients)

    assert decision.chain[1] == twins.issuing.c
    assert all(result.served for result in decision.clients)


class GenerationY:
    """leaf ← YR1 ← Root YR, cross-signed by ISRG Root X1 until T0 + 10 days; YR1 ends at T0 + 30 days."""

    def __init__(self) -> None:
        self.x1 = CA.root("ISRG Root X1")
        self.yr = CA.root("Root YR")
        self.cross = cert_of(self.x1.cross_sign(self.yr, not_after=T0 + 10 * DAY))
        self.yr1 = self.yr.intermediate("YR1", not_after=T0 + 30 * DAY)
        self.leaf = cert_of(self.yr1.leaf(not_after=T0 + 60 * DAY)[0])
        self.chain = [self.leaf, self.yr1.c, self.cross]
        self.debian_12 = Client("debian-12", store("debian-12", self.x1), TRUSTED_FIRST)
        self.android_16 = Client("android-16", store("android-16", self.x1, self.yr), BACKTRACKING)
        self.future = Client("future-openssl", store("future", self.yr), FIRST_MATCH)


@pytest.fixture(scope="module")
def geny() -> GenerationY:
    return GenerationY()


def test_minimal_mode_keeps_a_cross_sign_only_one_client_needs(geny: GenerationY) -> None:
    clients = [geny.android_16, geny.future, geny.debian_12]

    decision = decide(geny.chain, [], T0, Policy(mode=Mode.MINIMAL), clients=clients)

    assert decision.chain == tuple(geny.chain)
    assert decision.verdicts[2].detail == "needed by android-16, debian-12"
    assert all(result.served for result in decision.clients)


def test_minimal_mode_drops_a_cross_sign_no_configured_client_needs(geny: GenerationY) -> None:
    decision = decide(geny.chain, [], T0, Policy(mode=Mode.MINIMAL), clients=[geny.android_16, geny.future])

    assert decision.chain == (geny.leaf, geny.yr1.c)
    assert decision.verdicts[2].reason == Reason.NOT_NEEDED
    assert all(result.as_given and result.served for result in decision.clients)


def test_minimal_mode_keeps_an_intermediate_a_fetching_client_could_fetch(geny: GenerationY) -> None:
    apple = Client("apple", store("apple", geny.yr), ClientModel(aia=True))

    decision = decide(geny.chain, [], T0, Policy(mode=Mode.MINIMAL), clients=[apple])

    assert decision.chain == (geny.leaf, geny.yr1.c)
    assert decision.clients == (ClientResult("apple", True, True, "backtracking: validates through Root YR"),)


@pytest.mark.parametrize(("as_clients", "kept"), [(False, True), (True, False)])
def test_minimal_mode_keeps_a_twin_for_a_stores_store_first_programs_but_not_for_a_backtracking_client(
    as_clients: bool, kept: bool
) -> None:
    # The store "all" holds an expired Root 2: its programs that look in their store
    # first take it over the served cross-sign and need the Root 0 twin. A client
    # given as backtracking stands for that model alone, and it does not.
    root0, root1 = CA.root("Root 0"), CA.root("Root 1")
    root2 = CA.root("Root 2", not_after=T0 - DAY)
    root2_by_root1 = cert_of(root1.cross_sign(root2))
    ica = root0.intermediate("ICA")
    by_root2 = cert_of(root2.certify(ica.name, ica.key.public_key(), ca=True))
    leaf = cert_of(ica.leaf()[0])
    stores = [store("all", root0, root1, root2), store("root-1-only", root1)]
    clients = [Client(trust.name, trust, BACKTRACKING) for trust in stores] if as_clients else []

    decision = decide(
        [leaf, ica.c, by_root2, root2_by_root1],
        [] if as_clients else stores,
        T0,
        Policy(mode=Mode.MINIMAL),
        clients=clients,
    )

    assert (ica.c in decision.chain) == kept
    assert all(result.served for result in decision.clients)


def test_a_missing_intermediate_fails_every_client_as_given_and_only_a_fetching_one_says_so() -> None:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA")
    leaf = cert_of(issuing.leaf()[0])
    apple = Client("apple", store("apple", root), ClientModel(aia=True))
    go = Client("go", store("go", root))

    decision = decide([leaf], [], T0, clients=[apple, go])

    assert results(decision.clients) == {"apple": (False, False), "go": (False, False)}
    assert decision.clients[1].detail == "the leaf's issuer Issuing CA is neither served nor in the store"


def test_a_file_that_does_not_start_with_its_leaf_fails_every_client_as_given(geny: GenerationY) -> None:
    decision = decide([geny.yr1.c, geny.leaf], [], T0, clients=[geny.android_16])

    assert decision.clients == (
        ClientResult(
            "android-16", False, True, "as given, the file starts with YR1, not the leaf, and a server sends it first"
        ),
    )


def test_a_certificate_a_client_needs_is_put_back_when_no_order_of_the_chosen_chain_serves_it() -> None:
    # The last resort of step 6, on a chain the rules above would never choose: without
    # it the client that validates the file would fail the served chain.
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA")
    leaf = cert_of(issuing.leaf()[0])
    client = Client("old-openssl", store("s", root), FIRST_MATCH)
    judge = Judge(Candidates([leaf, issuing.c], [client.store], None), [], T0, Policy(), exact=[client])
    verdicts = {
        0: Verdict(leaf, 0, Role.LEAF, None, "the leaf is always served"),
        1: Verdict(issuing.c, 1, None, Reason.NOT_NEEDED, "pretended"),
    }

    chain = serve_every_client(ClientChecks(judge), (leaf,), verdicts)

    assert chain == (leaf, issuing.c)
    assert verdicts[1] == Verdict(
        issuing.c, 1, Role.INTERMEDIATE, None, "kept for old-openssl: they validate the file only with it"
    )


def test_a_shipped_profiles_model_says_whether_it_fetches_intermediates() -> None:
    models = {profile.name: profile.model for profile in shipped().values()}

    assert models["apple-ios16"] == ClientModel(PathBuilding.BACKTRACKING, anchor_expiry=True, aia=True)
    assert models["openssl-1.0.2-debian-9"] == ClientModel(PathBuilding.FIRST_MATCH, anchor_expiry=True, aia=False)


def test_shipped_profiles_keep_the_dst_cross_sign_for_android_7_and_name_openssl_1_0_2_at_risk() -> None:
    # The 2021 incident with the shipped profiles and a chain a server really sent in 2022.
    name = "le-r3-dstcross-demo-cosmian-app-2022.pem"
    certs = parse_certificates((VECTORS / name).read_bytes(), name)
    clients = [Client(profile.name, store_of(profile), profile.model) for profile in shipped().values()]

    decision = decide(certs, [], dt.datetime(2022, 12, 1, tzinfo=dt.UTC), clients=clients)

    assert decision.chain == tuple(certs)
    assert decision.verdicts[2].detail.startswith("needed by android-7.0")
    failing = {r.name: r.detail for r in decision.clients if not r.served}
    assert failing == {
        "openssl-1.0.2-debian-9": "first-match: the served path reaches DST Root CA X3, expired 2021-09-30"
    }
    assert at_risk([w.message for w in decision.warnings if w.code == WarningCode.CLIENTS_AT_RISK]) == [
        "openssl-1.0.2-debian-9"
    ]
    assert not decision.has(WarningCode.EXPIRING_SOON)


def default_clients() -> list[Client]:
    profiles = shipped()
    return [Client(name, store_of(profiles[name]), profiles[name].model) for name in DEFAULT_CLIENTS]


def test_default_clients_drop_the_dst_cross_sign_of_2022_and_every_one_validates_the_served_chain() -> None:
    # Android 7.1.1 validates through ISRG Root X1 without it; OpenSSL 1.0.2 fails with it.
    name = "le-r3-dstcross-demo-cosmian-app-2022.pem"
    certs = parse_certificates((VECTORS / name).read_bytes(), name)

    decision = decide(certs, [], dt.datetime(2022, 12, 1, tzinfo=dt.UTC), clients=default_clients())

    assert decision.chain == tuple(certs[:2])
    assert decision.verdicts[2].reason == Reason.ISSUER_EXPIRED
    assert decision.verdicts[2].detail.startswith(
        "its issuer DST Root CA X3 expired on 2021-09-30; served, it breaks openssl-1.0.2-debian-9 "
    )
    assert [r.name for r in decision.clients if not r.served] == []
    assert decision.validating_stores == DEFAULT_CLIENTS
    assert not decision.has(WarningCode.CLIENTS_AT_RISK)
    assert not decision.has(WarningCode.INCOMPLETE)


def test_default_clients_keep_the_dst_cross_sign_while_dst_root_ca_x3_is_valid() -> None:
    name = "le-r3-dstcross-demo-cosmian-app-2022.pem"
    certs = parse_certificates((VECTORS / name).read_bytes(), name)

    decision = decide(certs, [], dt.datetime(2021, 9, 1, tzinfo=dt.UTC), clients=default_clients())

    assert decision.chain == tuple(certs)
    assert decision.verdicts[2].detail == (
        "needed by android-7.1.1, apple-ios12, java-8u141, mozilla-2021-10, openssl-1.0.2-debian-9"
    )
    assert not decision.has(WarningCode.CLIENTS_AT_RISK)


def test_default_clients_with_android_7_0_keep_the_dst_cross_sign_and_name_openssl_1_0_2_at_risk() -> None:
    name = "le-r3-dstcross-demo-cosmian-app-2022.pem"
    certs = parse_certificates((VECTORS / name).read_bytes(), name)
    profiles = shipped()
    android_7_0 = Client("android-7.0", store_of(profiles["android-7.0"]), profiles["android-7.0"].model)

    decision = decide(certs, [], dt.datetime(2022, 12, 1, tzinfo=dt.UTC), clients=[*default_clients(), android_7_0])

    assert decision.chain == tuple(certs)
    assert decision.verdicts[2].detail == "needed by android-7.1.1, android-7.0"
    assert [r.name for r in decision.clients if not r.served] == ["openssl-1.0.2-debian-9"]
    assert at_risk([w.message for w in decision.warnings if w.code == WarningCode.CLIENTS_AT_RISK]) == [
        "openssl-1.0.2-debian-9"
    ]


# -- forecast ------------------------------------------------------------------------


def test_forecast_names_when_the_cross_sign_and_then_yr1_expire_for_each_client(geny: GenerationY) -> None:
    changes = forecast(geny.chain, [geny.debian_12, geny.android_16, geny.future], T0, T0 + YEAR)

    cross_ends = geny.cross.not_after + SECOND
    yr1_ends = geny.yr1.c.not_after + SECOND
    assert [(c.at, c.client, c.validates, c.why) for c in changes] == [
        (cross_ends, "debian-12", False, "Root YR expires 2030-01-11"),
        (yr1_ends, "android-16", False, "YR1 expires 2030-01-31"),
        (yr1_ends, "future-openssl", False, "YR1 expires 2030-01-31"),
    ]
    assert changes[0].detail == "trusted-first: the served path passes Root YR, expired 2030-01-11"


def test_forecast_of_the_dst_chain_has_the_first_match_client_stop_when_the_old_root_expires(dst: Dst) -> None:
    clients = [dst.openssl_102, dst.openssl_3, dst.go, dst.android]

    changes = forecast(dst.chain, clients, T0 - 30 * DAY, T0 + 30 * DAY)

    assert changes == (
        ForecastChange(
            T0 + SECOND,
            "openssl-1.0.2",
            False,
            "DST Root CA X3 expires 2030-01-01",
            "first-match: the served path reaches DST Root CA X3, expired 2030-01-01",
        ),
    )


def test_forecast_starts_a_client_when_a_not_yet_valid_intermediate_becomes_valid() -> None:
    root = CA.root("Root")
    issuing = root.intermediate("Issuing CA", not_before=T0 + DAY)
    leaf = cert_of(issuing.leaf()[0])

    changes = forecast([leaf, issuing.c], [Client("go", store("go", root))], T0, T0 + YEAR)

    assert [(c.at, c.validates, c.why) for c in changes] == [
        (T0 + DAY + SECOND, True, "Issuing CA becomes valid 2030-01-02"),
        (leaf.not_after + SECOND, False, f"mail.example.test expires {leaf.not_after:%Y-%m-%d}"),
    ]


def test_forecast_refuses_a_naive_time(dst: Dst) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        forecast(dst.chain, [dst.go], dt.datetime(2030, 1, 1), T0)
