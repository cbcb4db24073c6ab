"""The seed's incident, end to end: a real Dovecot, a real OpenSSL 1.0.2 client, the real agent.

certbot's chain carries a cross-sign to a root that expired yesterday
(``LivePKI``, shaped as DST Root CA X3 was on 2021-09-30) while the client's
store still holds that root beside the new one. OpenSSL 1.0.2 follows the
served chain into the expired root and fails; chainwatch drops the
cross-sign, although a configured client that ignores anchor expiry
(Android 7.1.1's shape, of the default client set) has a valid path through
it: it validates without it. The same OpenSSL client, connecting to Dovecot
serving what the agent published, verifies. ``status`` names no client at risk.

The client is PyPI's ``nassl`` 5.4.0 (OpenSSL 1.0.2e; AGPL, a test tool
installed in the PyPI leg only, never a dependency of the package): the
Debian leg skips this module; in the PyPI leg a missing nassl is an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mailservers import Dovecot
from tests.workspace import NAME, LivePKI, Workspace

if importlib.util.find_spec("cryptography.x509.verification") is None:
    # Debian's python3-cryptography: the Debian leg, where nassl is not installed.
    pytest.skip("nassl (OpenSSL 1.0.2e) is installed in the PyPI leg only (.ci/setup)", allow_module_level=True)
# The PyPI leg: here the client must be there, or this test would silently never run.
nassl_legacy = importlib.import_module("nassl.legacy_ssl_client")
nassl_ssl_client = importlib.import_module("nassl.ssl_client")
nassl_x509 = importlib.import_module("nassl._nassl_legacy")

# OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED: the served path reaches the expired root.
CERT_HAS_EXPIRED = 10


def openssl_102_verdict(port: int, store: Path) -> tuple[int, str]:
    """What OpenSSL 1.0.2e concludes of the chain Dovecot sends on IMAPS, trusting ``store``: (code, reason)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # Not enforced, so that the handshake completes and the verdict can be read.
        client = nassl_legacy.LegacySslClient(
            underlying_socket=sock,
            ssl_verify=nassl_ssl_client.OpenSslVerifyEnum.NONE,
            ssl_verify_locations=store,
        )
        client.set_tlsext_host_name(NAME)
        try:
            client.do_handshake()
            code: int = client._ssl.get_verify_result()
        finally:
            client.shutdown()
    return code, nassl_x509.X509.verify_cert_error_string(code)


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    # The shipped profiles know none of the test PKI's roots, so the default
    # set's two shapes that made 2021's incident are configured as [[client]]
    # tables, both trusting the expired old root and the new one: a
    # first-match client (as Debian 9's OpenSSL 1.0.2 held DST Root CA X3 and
    # ISRG Root X1), and one that ignores anchor expiry (Android 7.1.1), for
    # which the path through the cross-sign is valid too, though not needed.
    store = tmp_path / "store.pem"
    client = (
        f'[[client]]\nname = "old-openssl"\nstore = "{store}"\npath_building = "first-match"\n'
        f'[[client]]\nname = "old-android"\nstore = "{store}"\npath_building = "backtracking"\n'
        "anchor_expiry = false\n"
    )
    workspace = Workspace(tmp_path, LivePKI(), extra=client)
    workspace.certbot.write(NAME, workspace.pki.issue())
    yield workspace


def serving(ws: Workspace, folder: str, fullchain: Path, key: Path) -> Dovecot:
    return Dovecot(ws.root / folder, fullchain, key)


def test_openssl_102_fails_on_certbots_chain_and_validates_what_the_agent_publishes(ws: Workspace) -> None:
    # Before: Dovecot serves certbot's fullchain.pem as it is.
    live = ws.certbot.live / NAME
    before = serving(ws, "dovecot-before", live / "fullchain.pem", live / "privkey.pem")
    try:
        code, reason = openssl_102_verdict(before.imaps_port, ws.store)
        # chainwatch's model of the client says the same of what the server sends now.
        probed = ws.chainwatch("probe", f"imaps://127.0.0.1:{before.imaps_port}", "--name", NAME, "--json")
    finally:
        before.stop()
    assert (code, reason) == (CERT_HAS_EXPIRED, "certificate has expired")
    assert probed.stdout, probed.stderr
    (endpoint,) = json.loads(probed.stdout)["endpoints"]
    old_openssl = next(client for client in endpoint["clients"] if client["name"] == "old-openssl")
    assert not old_openssl["validates"]
    assert old_openssl["detail"].startswith("first-match: the served path reaches Old Root, expired ")

    # The agent publishes the sanitized chain.
    with ws.agent():
        published = ws.out / "live" / NAME
        # After: the same Dovecot configuration on the published files; the same client verifies.
        after = serving(ws, "dovecot-after", published / "fullchain.pem", published / "privkey.pem")
        try:
            assert openssl_102_verdict(after.imaps_port, ws.store) == (0, "ok")
        finally:
            after.stop()
        # status names no client at risk: all is ok, every configured client validates.
        status = ws.chainwatch("status", "--json")
        text = ws.chainwatch("status").stdout
    assert status.returncode == 0, status.stdout + status.stderr
    (lineage,) = json.loads(status.stdout)["lineages"]
    assert lineage["state"] == "ok"
    assert lineage["clients_not_validating"] == []
    # The cross-sign went for the client it broke, though old-android had a valid path through it.
    (cross,) = lineage["dropped"]
    assert cross["reason"] == "issuer-expired"
    assert "it breaks old-openssl (first-match: the served path reaches Old Root, expired " in cross["detail"]
    assert "fails" not in text
