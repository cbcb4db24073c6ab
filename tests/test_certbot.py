"""Real certbot renewing against a real pebble, and chainwatch trimming what certbot got.

pebble runs with a chain of three intermediates: leaf ← issuing CA ← #1 ← #2
(← pebble's root, not sent). The clients' store holds the issuing CA's key as
a self-signed root (``Pebble.issuing_ca_as_root``), so the issuing CA
certificate certbot receives is a cross-sign towards a hierarchy those clients
do not know: the DST Root CA X3 shape, made by a real ACME server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.private_key import public_key_from_pem
from tests.acme import Certbot, Pebble
from tests.validators import gnutls_accepts, openssl_accepts
from tests.workspace import LivePKI, Workspace

NAME = "mail.example.test"


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble(tmp_path_factory.mktemp("pebble"), chain_length=3)
    yield server
    server.stop()


def certs_of(data: bytes | None) -> list[Cert]:
    return parse_certificates(data or b"", "chain")


def dropped_of(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["sha256"], entry["reason"]) for entry in record["dropped"]]


def test_each_certbot_renewal_is_published_without_the_cross_sign_and_the_hierarchy_above_it(
    pebble: Pebble, tmp_path: Path
) -> None:
    certbot = Certbot(pebble, tmp_path / "certbot")
    certbot.certonly(NAME)
    ws = Workspace(tmp_path, LivePKI())
    ws.store.write_bytes(pebble.issuing_ca_as_root())
    ws.certbot.live = certbot.live
    ws.write_config()
    live = certbot.live / NAME
    anchors = certs_of(ws.store.read_bytes())
    with ws.agent() as agent:
        for expected_version in (1, 2, 3):
            if expected_version > 1:
                certbot.renew()
            agent.wait_for(
                lambda v=expected_version: ws.state()["lineages"].get(NAME, {}).get("version") == v,
                timeout=30,
                what=f"state of version {expected_version}",
            )
            # A minute ahead: faketime takes whole seconds, and the leaf may
            # date from this very second.
            now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
            leaf, issuing, above_1, above_2 = certs_of((live / "fullchain.pem").read_bytes())
            published = ws.published() or b""
            assert published == (live / "cert.pem").read_bytes()
            assert ws.state()["lineages"][NAME]["version"] == ws.versions()[-1] == expected_version
            assert dropped_of(ws.state()["lineages"][NAME]) == [
                (issuing.sha256, "issuer-untrusted"),
                (above_1.sha256, "unrelated"),
                (above_2.sha256, "unrelated"),
            ]
            # Why trimming matters here: GnuTLS follows the served cross-sign,
            # finds no anchor above it and gives up; the leaf alone verifies.
            assert not gnutls_accepts([leaf, issuing, above_1, above_2], anchors, now)
            assert gnutls_accepts(certs_of(published), anchors, now)
            assert openssl_accepts(certs_of(published), anchors, now)
            assert ws.published(file="privkey.pem") == (live / "privkey.pem").read_bytes()
            key = public_key_from_pem(ws.published(file="privkey.pem") or b"", "published key")
            assert certs_of(published)[0].has_public_key(key)
        assert agent.events("inconsistent") == []
        assert agent.events("rejected") == []


def test_a_cross_sign_some_configured_store_needs_is_published_as_certbot_wrote_it(
    pebble: Pebble, tmp_path: Path
) -> None:
    certbot = Certbot(pebble, tmp_path / "certbot")
    certbot.certonly(NAME)
    ws = Workspace(tmp_path, LivePKI())
    new_clients, old_clients = tmp_path / "new-clients.pem", tmp_path / "old-clients.pem"
    new_clients.write_bytes(pebble.issuing_ca_as_root())
    old_clients.write_bytes(pebble.root_pem())
    ws.certbot.live = certbot.live
    ws.write_config(stores=(new_clients, old_clients))

    result = ws.chainwatch("sync")

    assert result.returncode == 0, result.stderr
    fullchain = (certbot.live / NAME / "fullchain.pem").read_bytes()
    assert ws.published() == fullchain
    record = ws.state()["lineages"][NAME]
    assert record["dropped"] == []
    assert [entry["role"] for entry in record["served"]] == ["leaf", "cross-sign", "intermediate", "intermediate"]
    assert record["validating_stores"] == ["new-clients.pem", "old-clients.pem"]
    now = dt.datetime.now(dt.UTC)
    assert openssl_accepts(certs_of(fullchain), certs_of(old_clients.read_bytes()), now)
