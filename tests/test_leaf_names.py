"""A certificate is named by its CN, and a leaf without one (Let's Encrypt's newer
profiles issue such leaves) by its subjectAltName names: in ``status``, ``probe``
and ``explain`` alike, never as "(empty name)"."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from chainwatch.x509.certificate import Cert
from tests.certbot_tree import Issued
from tests.openssl_server import serving
from tests.pki import CA, new_key
from tests.workspace import NAME, LivePKI, Workspace

IMAP = "imap.example.test"
NO_NAME = x509.Name([])


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    return Workspace(tmp_path, pki)


@pytest.fixture(scope="module")
def cn_less(pki: LivePKI) -> Issued:
    return pki.issue(NAME, also=(IMAP,), subject=NO_NAME)


def leaf_with(subject: x509.Name, *names: x509.GeneralName) -> Cert:
    issuer = CA.root("Test Root")
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issuer.cert.not_valid_before)
        .not_valid_after(issuer.cert.not_valid_after)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return Cert(builder.sign(issuer.key, hashes.SHA256()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("subject", "names", "shown"),
    [
        # The CN, when there is one, as before.
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]), [x509.DNSName(IMAP)], NAME),
        # No CN: the first name the certificate is for, and how many more.
        (NO_NAME, [x509.DNSName(NAME)], NAME),
        (NO_NAME, [x509.DNSName(NAME), x509.DNSName(IMAP), x509.DNSName("pop.example.test")], f"{NAME} +2"),
        (NO_NAME, [x509.IPAddress(ipaddress.ip_address("192.0.2.7"))], "192.0.2.7"),
        (
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Ltd")]),
            [x509.DNSName(NAME)],
            NAME,
        ),
        # Nothing else to go by.
        (x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Ltd")]), [], "Example Ltd"),
        (NO_NAME, [], "(empty name)"),
    ],
)
def test_a_certificate_is_named_by_its_cn_else_its_alt_names_else_its_organisation(
    subject: x509.Name, names: list[x509.GeneralName], shown: str
) -> None:
    assert leaf_with(subject, *names).short_subject == shown


def test_status_names_a_cn_less_leaf_by_its_dns_names(ws: Workspace, cn_less: Issued) -> None:
    ws.certbot.write(NAME, cn_less)
    assert ws.chainwatch("sync").returncode == 0

    text = ws.chainwatch("status").stdout
    report = json.loads(ws.chainwatch("status", "--json").stdout)

    assert "(empty name)" not in text
    assert f"    leaf      {NAME} +1 (+ {IMAP}) · expires " in text
    assert f"    serves    {NAME} +1 → Issuing CA" in text
    assert report["lineages"][0]["leaf"]["short"] == f"{NAME} +1"
    assert report["lineages"][0]["leaf"]["subject"] == ""  # exact: the certificate has none


def test_status_names_a_cn_less_leaf_recorded_as_empty_name_before_by_its_dns_names(
    ws: Workspace, cn_less: Issued
) -> None:
    ws.certbot.write(NAME, cn_less)
    assert ws.chainwatch("sync").returncode == 0
    # As a pass before CN-less leaves were named after their names recorded it.
    state = ws.state()
    record = state["lineages"][NAME]
    record["leaf"]["short"] = record["served"][0]["short"] = "(empty name)"
    (ws.out / "state.json").write_text(json.dumps(state))

    text = ws.chainwatch("status").stdout
    report = json.loads(ws.chainwatch("status", "--json").stdout)

    assert "(empty name)" not in text
    assert f"    leaf      {NAME} +1 (+ {IMAP}) · expires " in text
    assert f"    serves    {NAME} +1 → Issuing CA" in text
    assert report["lineages"][0]["leaf"]["short"] == f"{NAME} +1"
    assert report["lineages"][0]["served"][0]["short"] == f"{NAME} +1"
    # Named so without the certificate library, which `status` (a monitoring plugin run every minute) never loads.
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "chainwatch", "status", "--config", str(ws.config)],
        capture_output=True, text=True, check=False, env={**os.environ, **ws.env},
    ).stderr  # fmt: skip
    assert "chainwatch.x509.names" in imports
    assert "cryptography" not in imports


def test_probe_names_a_cn_less_leaf_by_its_dns_names(ws: Workspace, cn_less: Issued) -> None:
    with serving(cn_less, ws.root / "server") as endpoint:
        result = ws.chainwatch("probe", endpoint, "--name", NAME)

    assert "(empty name)" not in result.stdout
    assert f"  #1 {NAME} +1  (issued by Issuing CA; until " in result.stdout


def test_explain_names_a_cn_less_leaf_by_its_dns_names(ws: Workspace, cn_less: Issued) -> None:
    chain = ws.root / "fullchain.pem"
    chain.write_bytes(cn_less.fullchain)

    result = ws.chainwatch("explain", str(chain))

    assert "(empty name)" not in result.stdout
    assert result.stdout.splitlines()[3].startswith(f"{NAME} +1  kept · leaf")
    assert f"served: {NAME} +1 → Issuing CA" in result.stdout
