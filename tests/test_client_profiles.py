"""The shipped client profiles: every client issue 23 names, its real roots, and the facts that decide its verdicts.

Facts come from FIELD-NOTES ("Clients", "Let's Encrypt 2024-2028"): which
client holds which Let's Encrypt root, and who builds paths how.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from chainwatch.clients import catalogue
from chainwatch.clients.catalogue import Profile, shipped, store_of
from chainwatch.errors import InputError
from chainwatch.policy.settings import ClientModel, PathBuilding
from chainwatch.x509.certificate import Cert

DATA = Path(catalogue.__file__).parent / "data"

ISRG_ROOT_X1 = "96bcec06264976f37460779acf28c5a7cfe8a3c0aae11a8ffcee05c0bddf08c6"
ISRG_ROOT_X2 = "69729b8e15a86efc177a57afb7171dfc64add28c2fca8cf1507e34453ccb1470"
DST_ROOT_CA_X3 = "0687260331a72403d909f105e69bcf0d32e1bd2493ffc6d9206d11bcd6770739"

REQUIRED = (
    "android-7.0",
    "android-7.1.1",
    "android-14",
    "apple-ios12",
    "apple-ios16",
    "windows",
    "java-8u141",
    "java-8u401",
    "mozilla-2021-10",
    "mozilla-2026-10",
    "openssl-1.0.2-debian-9",
    "openssl-3-debian-12",
    "openssl-3-debian-13",
    "gnutls-debian-12",
    "go-debian-12",
    "rustls",
)
"""Issue 23 item 2, one name per client family and store generation it lists."""


def profile(name: str) -> Profile:
    return shipped()[name]


def roots(name: str) -> set[str]:
    return set(profile(name).roots)


def test_every_client_the_issue_names_has_a_shipped_profile() -> None:
    assert set(REQUIRED) <= set(shipped())


def test_each_family_is_one_the_issue_names() -> None:
    families = {p.family for p in shipped().values()}
    assert families == {"android", "apple", "windows", "java", "mozilla", "openssl", "gnutls", "go", "rustls"}


def test_every_profile_names_its_snapshot_date_source_and_licence() -> None:
    for p in shipped().values():
        assert dt.date(2016, 1, 1) <= p.snapshot <= dt.date(2026, 12, 31), p.name
        assert p.provenance.licence and p.provenance.source and p.provenance.version, p.name
        assert any(known in p.provenance.licence for known in ("MPL-2.0", "MIT")), p.name
        assert p.description, p.name


def test_every_profile_ships_every_root_of_its_snapshot() -> None:
    # All of them could be had from a shippable source; a future snapshot that
    # lists one that cannot says so in its provenance instead.
    left_out = {p.name: p.provenance.not_shipped for p in shipped().values() if p.provenance.not_shipped}
    assert left_out == {}


def test_the_le_roots_are_the_certificates_their_names_say() -> None:
    store = store_of(profile("android-7.1.1"))
    by_fingerprint = {anchor.sha256: anchor for anchor in store.anchors}
    names = {
        fingerprint: by_fingerprint[fingerprint].x509.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        for fingerprint in (ISRG_ROOT_X1, DST_ROOT_CA_X3)
    }
    assert names == {ISRG_ROOT_X1: "ISRG Root X1", DST_ROOT_CA_X3: "DST Root CA X3"}
    x2 = next(a for a in store_of(profile("android-14")).anchors if a.sha256 == ISRG_ROOT_X2)
    assert x2.x509.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ISRG Root X2"


def test_android_7_0_lacks_isrg_root_x1() -> None:
    assert ISRG_ROOT_X1 not in roots("android-7.0")


def test_android_7_1_1_has_x1_but_not_x2_and_still_holds_dst() -> None:
    assert ISRG_ROOT_X1 in roots("android-7.1.1")
    assert ISRG_ROOT_X2 not in roots("android-7.1.1")
    assert DST_ROOT_CA_X3 in roots("android-7.1.1")


def test_android_14_has_x2_and_ignores_anchor_expiry() -> None:
    assert {ISRG_ROOT_X1, ISRG_ROOT_X2} <= roots("android-14")
    assert all(not profile(name).anchor_expiry for name in ("android-7.0", "android-7.1.1", "android-14"))


def test_apple_has_x1_before_ios16_and_x2_from_ios16_and_fetches_intermediates() -> None:
    assert ISRG_ROOT_X1 in roots("apple-ios12")
    assert ISRG_ROOT_X2 not in roots("apple-ios12")
    assert {ISRG_ROOT_X1, ISRG_ROOT_X2} <= roots("apple-ios16")
    assert profile("apple-ios12").aia and profile("apple-ios16").aia and profile("windows").aia


def test_java_8u141_has_x1_not_x2_and_8u401_has_both() -> None:
    assert ISRG_ROOT_X1 in roots("java-8u141")
    assert ISRG_ROOT_X2 not in roots("java-8u141")
    assert {ISRG_ROOT_X1, ISRG_ROOT_X2} <= roots("java-8u401")


def test_mozilla_before_x2_and_now() -> None:
    assert {ISRG_ROOT_X1, DST_ROOT_CA_X3} <= roots("mozilla-2021-10")
    assert ISRG_ROOT_X2 not in roots("mozilla-2021-10")
    assert {ISRG_ROOT_X1, ISRG_ROOT_X2} <= roots("mozilla-2026-10")
    assert DST_ROOT_CA_X3 not in roots("mozilla-2026-10")


def test_openssl_1_0_2_on_an_old_debian_store_trusts_the_expired_dst_root_and_x1_and_takes_the_first_match() -> None:
    old = profile("openssl-1.0.2-debian-9")
    assert {ISRG_ROOT_X1, DST_ROOT_CA_X3} <= set(old.roots)
    assert old.path_building is PathBuilding.FIRST_MATCH
    assert old.anchor_expiry
    dst = next(a for a in store_of(old).anchors if a.sha256 == DST_ROOT_CA_X3)
    assert dst.x509.not_valid_after == dt.datetime(2021, 9, 30, 14, 1, 15)


def test_openssl_3_and_gnutls_on_debian_look_in_their_store_first() -> None:
    for name in ("openssl-3-debian-12", "openssl-3-debian-13", "gnutls-debian-12"):
        assert profile(name).path_building is PathBuilding.TRUSTED_FIRST, name
        assert {ISRG_ROOT_X1, ISRG_ROOT_X2} <= roots(name), name


def test_go_backtracks_and_never_fetches_intermediates() -> None:
    go = profile("go-debian-12")
    assert (go.path_building, go.anchor_expiry, go.aia) == (PathBuilding.BACKTRACKING, True, False)


def test_rustls_trusts_mozillas_roots_and_ignores_anchor_expiry() -> None:
    rustls = profile("rustls")
    assert not rustls.anchor_expiry
    assert set(rustls.roots) == roots("mozilla-2026-10")
    assert rustls.model == ClientModel(PathBuilding.BACKTRACKING, anchor_expiry=False)


def test_only_clients_that_cannot_run_here_are_marked_modelled() -> None:
    modelled = {p.name for p in shipped().values() if p.modelled}
    assert modelled == {p.name for p in shipped().values() if p.family in ("android", "apple", "windows", "rustls")}


def test_no_store_holds_root_yr_or_ye_yet() -> None:
    store_names = {anchor.x509.subject.rfc4514_string() for p in shipped().values() for anchor in store_of(p).anchors}
    assert not [name for name in store_names if "Root YR" in name or "Root YE" in name]


def test_each_profiles_roots_parse_and_their_fingerprints_are_their_certificates() -> None:
    for p in shipped().values():
        store = store_of(p)
        assert len(store.anchors) == len(p.roots), p.name
        for fingerprint, anchor in zip(p.roots, store.anchors, strict=True):
            assert hashlib.sha256(anchor.der).hexdigest() == fingerprint, p.name
            parsed = x509.load_der_x509_certificate(anchor.der)
            assert parsed.subject == parsed.issuer, (p.name, fingerprint)


def test_the_roots_file_holds_each_root_once_and_only_roots_some_profile_lists() -> None:
    from chainwatch.x509.pem import parse_certificates

    in_file = [
        cert.sha256 for cert in parse_certificates((DATA / "roots.pem").read_bytes(), "roots.pem", max_certs=None)
    ]
    listed = {fingerprint for p in shipped().values() for fingerprint in p.roots}
    assert len(in_file) == len(set(in_file))
    assert set(in_file) == listed


def test_a_root_several_profiles_hold_is_one_cert_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue, "_parsed", {})
    made: list[bytes] = []
    original = Cert.deferred.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Cert], der: bytes) -> Cert:
        made.append(der)
        return original(cls, der)  # type: ignore[no-any-return]

    monkeypatch.setattr(Cert, "deferred", classmethod(counting))
    first = [store_of(p) for p in shipped().values()]
    again = [store_of(p) for p in shipped().values()]

    unique = {fingerprint for p in shipped().values() for fingerprint in p.roots}
    assert len(made) == len(unique)
    objects: dict[str, set[int]] = {}
    for store in first + again:
        for anchor in store.anchors:
            objects.setdefault(anchor.sha256, set()).add(id(anchor))
    assert all(len(ids) == 1 for ids in objects.values())
    assert len(objects[ISRG_ROOT_X1]) == 1


def test_reading_the_catalogue_loads_no_cryptography() -> None:
    program = (
        "import sys\n"
        "from chainwatch.clients.catalogue import shipped\n"
        "assert len(shipped()) >= 16\n"
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


def test_all_shipped_data_is_at_most_2_mb() -> None:
    total = sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file())
    assert total <= 2_000_000


def test_sources_record_names_every_profile_with_its_licence() -> None:
    text = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    for p in shipped().values():
        section = text.split(f"## {p.name}\n", 1)[1].split("\n## ", 1)[0]
        assert f"- snapshot: {p.snapshot.isoformat()}" in section
        assert f"- licence: {p.provenance.licence}" in section


def test_a_damaged_catalogue_is_a_one_line_error_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue, "_read", lambda name, limit: b'{"format": 1, "profiles": [{"name": "x"}]}')
    with pytest.raises(InputError, match=r"^chainwatch/clients/data/profiles.json: not a client catalogue \(profile 1"):
        shipped.__wrapped__()
