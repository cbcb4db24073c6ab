"""Real chains, judged at the moments their problems were real."""

from __future__ import annotations

import pytest

from chainwatch.policy.decision import Reason, Role, WarningCode
from chainwatch.policy.settings import Distrust, Mode, Policy
from chainwatch.policy.trim import decide
from chainwatch.x509.trust import TrustStore
from tests.conftest import store_of, utc, vector_cert, vector_chain
from tests.validators import gnutls_accepts, openssl_accepts

LEGACY_WITH_DST = ("legacy-with-dst", "dst-root-ca-x3", "isrg-root-x1")


def reasons(decision):  # type: ignore[no-untyped-def]
    return {
        verdict.cert.short_subject + "←" + verdict.cert.short_issuer: verdict.reason for verdict in decision.dropped
    }


def test_dst_cross_sign_is_issuer_untrusted_against_debian_12s_store(debian12_store: TrustStore) -> None:
    chain = vector_chain("le-r3-dstcross-demo-cosmian-app-2022")
    decision = decide(chain, [debian12_store], utc("2022-12-01"))
    assert [c.short_subject for c in decision.chain] == ["demo.cosmian.app", "R3"]
    assert reasons(decision) == {"ISRG Root X1←DST Root CA X3": Reason.ISSUER_UNTRUSTED}
    assert decision.warnings == ()


def test_dst_cross_sign_is_issuer_expired_when_a_store_still_holds_dst(debian12_store: TrustStore) -> None:
    chain = vector_chain("le-r3-dstcross-demo-cosmian-app-2022")
    decision = decide(chain, [debian12_store, store_of(*LEGACY_WITH_DST)], utc("2022-12-01"))
    assert [c.short_subject for c in decision.chain] == ["demo.cosmian.app", "R3"]
    assert reasons(decision) == {"ISRG Root X1←DST Root CA X3": Reason.ISSUER_EXPIRED}
    assert decision.validating_stores == ("ca-certificates.crt", "legacy-with-dst")


def test_dst_cross_sign_is_kept_until_the_second_dst_root_expires() -> None:
    chain = vector_chain("le-r3-dstcross-demo-cosmian-app-2022")
    cross = vector_cert("isrg-root-x1-cross-dst")
    legacy = store_of(*LEGACY_WITH_DST)
    last_second = decide(chain, [legacy], utc("2021-09-30T14:01:15"))
    one_later = decide(chain, [legacy], utc("2021-09-30T14:01:16"))
    assert last_second.role_of(cross) == Role.CROSS_SIGN
    assert reasons(last_second) == {}
    assert reasons(one_later) == {"ISRG Root X1←DST Root CA X3": Reason.ISSUER_EXPIRED}


def test_dst_cross_sign_is_kept_with_an_incomplete_warning_for_clients_that_only_know_dst() -> None:
    # Without a self-signed ISRG Root X1 in view nothing marks the certificate
    # as a cross-sign: it is the only way up, so it stays and we warn.
    chain = vector_chain("le-r3-dstcross-dev-cosmilink-com-2023")
    decision = decide(chain, [store_of("dst-only", "dst-root-ca-x3")], utc("2024-01-01"))
    assert decision.chain == tuple(chain)
    assert decision.role_of(vector_cert("isrg-root-x1-cross-dst")) == Role.INTERMEDIATE
    assert [w.code for w in decision.warnings] == [WarningCode.INCOMPLETE]
    assert "DST Root CA X3 it expired on 2021-09-30" not in decision.warnings[0].message


def test_addtrust_cross_sign_is_dropped_as_expired_in_2021() -> None:
    chain = vector_chain("sectigo-dv-addtrustcross-openweathermap-org-2020")
    store = store_of("usertrust", "usertrust-rsa-ca", "addtrust-external-ca-root")
    decision = decide(chain, [store], utc("2021-01-01"))
    assert [c.short_subject for c in decision.chain] == [
        "*.openweathermap.org",
        "Sectigo RSA Domain Validation Secure Server CA",
    ]
    assert reasons(decision) == {"USERTrust RSA Certification Authority←AddTrust External CA Root": Reason.EXPIRED}


def test_addtrust_cross_sign_is_kept_while_addtrust_lived() -> None:
    chain = vector_chain("sectigo-dv-addtrustcross-openweathermap-org-2020")
    old_client = store_of("addtrust-only", "addtrust-external-ca-root")
    decision = decide(chain, [old_client], utc("2020-05-01"))
    assert decision.role_of(vector_cert("usertrust-rsa-cross-addtrust")) == Role.INTERMEDIATE
    assert decision.chain == tuple(chain)


def test_root_sent_by_the_server_is_dropped_as_anchor() -> None:
    chain = vector_chain("sectigo-ov-with-usertrust-root-deltaww-com-2020")
    decision = decide(chain, [store_of("usertrust", "usertrust-rsa-ca")], utc("2021-01-01"))
    assert reasons(decision) == {
        "USERTrust RSA Certification Authority←USERTrust RSA Certification Authority": Reason.ANCHOR
    }
    assert len(decision.chain) == 2


def test_reversed_cloudflare_chain_comes_out_leaf_first() -> None:
    chain = vector_chain("cloudflare-ecc-reversed-order-ipapi-2019")
    decision = decide(chain, [store_of("baltimore", "baltimore-cybertrust-root")], utc("2020-01-01"))
    assert [c.short_subject for c in decision.chain] == ["sni.cloudflaressl.com", "CloudFlare Inc ECC CA-2"]
    assert [w.code for w in decision.warnings] == [WarningCode.REORDERED]
    assert reasons(decision) == {"Baltimore CyberTrust Root←Baltimore CyberTrust Root": Reason.ANCHOR}


def test_modern_e5_chain_is_unchanged(debian12_store: TrustStore) -> None:
    chain = vector_chain("le-e5-replicated-app-2025")
    decision = decide(chain, [debian12_store], utc("2025-03-01"))
    assert list(decision.chain) == chain
    assert decision.dropped == ()
    assert decision.warnings == ()


def test_aaa_cross_sign_kept_in_safe_mode_where_a_store_trusts_aaa() -> None:
    chain = vector_chain("sectigo-dv-aaacross-nodejs-org-2025")
    stores = [store_of("aaa-only", "comodo-aaa-certificate-services"), store_of("usertrust", "usertrust-rsa-ca")]
    decision = decide(chain, stores, utc("2025-06-01"))
    assert decision.role_of(vector_cert("usertrust-rsa-cross-aaa")) == Role.CROSS_SIGN
    assert decision.dropped == ()


def test_aaa_cross_sign_dropped_when_aaa_is_distrusted() -> None:
    chain = vector_chain("sectigo-dv-aaacross-nodejs-org-2025")
    stores = [store_of("mozilla", "comodo-aaa-certificate-services", "usertrust-rsa-ca")]
    distrust = Distrust(["C=GB, ST=Greater Manchester, L=Salford, O=Comodo CA Limited, CN=AAA Certificate Services"])
    decision = decide(chain, stores, utc("2025-06-01"), Policy(distrust=distrust))
    assert reasons(decision) == {
        "USERTrust RSA Certification Authority←AAA Certificate Services": Reason.ISSUER_DISTRUSTED
    }


def test_aaa_cross_sign_not_needed_in_minimal_mode_when_usertrust_is_trusted() -> None:
    chain = vector_chain("sectigo-dv-aaacross-nodejs-org-2025")
    stores = [store_of("mozilla", "comodo-aaa-certificate-services", "usertrust-rsa-ca")]
    decision = decide(chain, stores, utc("2025-06-01"), Policy(mode=Mode.MINIMAL))
    assert reasons(decision) == {"USERTrust RSA Certification Authority←AAA Certificate Services": Reason.NOT_NEEDED}


def test_generation_y_cross_sign_stays_for_stores_without_root_yr(debian12_store: TrustStore) -> None:
    # No Generation Y leaf is in the vectors; the decision is made above the
    # leaf, so YR1 stands in for it (chosen as the leaf by its public key).
    yr1, cross = vector_cert("yr1"), vector_cert("isrg-root-yr-cross-x1")
    at = utc("2026-06-01")
    decision = decide([yr1, cross], [debian12_store], at, leaf_key=yr1.public_key_der)
    assert decision.chain == (yr1, cross)
    assert decision.warnings == ()
    # OpenSSL agrees that Debian 12's store needs the cross-sign.
    assert openssl_accepts([yr1, cross], list(debian12_store.anchors), at)
    assert not openssl_accepts([yr1], list(debian12_store.anchors), at)


def test_generation_y_cross_sign_not_needed_in_minimal_mode_when_root_yr_is_trusted() -> None:
    yr1, cross = vector_cert("yr1"), vector_cert("isrg-root-yr-cross-x1")
    modern = store_of("with-root-yr", "isrg-root-yr", "isrg-root-x1")
    at = utc("2026-06-01")
    safe = decide([yr1, cross], [modern], at, leaf_key=yr1.public_key_der)
    minimal = decide([yr1, cross], [modern], at, Policy(mode=Mode.MINIMAL), leaf_key=yr1.public_key_der)
    assert safe.role_of(cross) == Role.CROSS_SIGN
    assert minimal.chain == (yr1,)
    assert reasons(minimal) == {"Root YR←ISRG Root X1": Reason.NOT_NEEDED}


def test_generation_y_two_step_cross_sign_path_is_kept_for_x1_only_clients() -> None:
    ye1 = vector_cert("ye1")
    ye_by_x2, x2_by_x1 = vector_cert("isrg-root-ye-cross-x2"), vector_cert("isrg-root-x2-cross-x1-2026")
    x1_only = store_of("x1-only", "isrg-root-x1")
    decision = decide([ye1, x2_by_x1, ye_by_x2], [x1_only], utc("2026-06-01"), leaf_key=ye1.public_key_der)
    assert decision.chain == (ye1, ye_by_x2, x2_by_x1)
    assert [w.code for w in decision.warnings] == [WarningCode.REORDERED]


@pytest.mark.parametrize(
    ("chain_name", "at"),
    [
        ("le-r3-dstcross-demo-cosmian-app-2022", "2022-12-01"),
        ("le-r3-dstcross-dev-cosmilink-com-2023", "2024-01-01"),
        ("sectigo-dv-addtrustcross-openweathermap-org-2020", "2021-01-01"),
        ("sectigo-ov-with-usertrust-root-deltaww-com-2020", "2021-01-01"),
        ("le-r10-minio-kastenevents-com-2024", "2024-08-01"),
        ("le-e5-replicated-app-2025", "2025-03-01"),
        ("sectigo-dv-aaacross-nodejs-org-2025", "2025-06-01"),
    ],
)
def test_real_chains_never_validate_worse_with_openssl_and_gnutls(
    chain_name: str, at: str, debian12_store: TrustStore
) -> None:
    chain = vector_chain(chain_name)
    moment = utc(at)
    stores = [debian12_store, store_of(*LEGACY_WITH_DST), store_of("aaa", "comodo-aaa-certificate-services")]
    decision = decide(chain, stores, moment)
    checked: list[str] = []
    for store in stores:
        anchors = list(store.anchors)
        if openssl_accepts(chain, anchors, moment):
            assert openssl_accepts(decision.chain, anchors, moment), store.name
            checked.append(f"openssl {store.name}")
        if gnutls_accepts(chain, anchors, moment):
            assert gnutls_accepts(decision.chain, anchors, moment), store.name
            checked.append(f"gnutls {store.name}")
    # Not vacuous: both accept every one of these chains, as served, with Debian 12's store.
    assert {"openssl ca-certificates.crt", "gnutls ca-certificates.crt"} <= set(checked)
