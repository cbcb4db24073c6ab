"""A throw-away PKI for tests, in trustme's shape but able to cross-sign.

``CA.root("Old Root")`` makes a self-signed root; ``root.intermediate(...)``,
``root.cross_sign(other)`` and ``ca.leaf(...)`` issue below it. Everything is
generated in memory; keys never touch the repository.

Certificates follow the Web PKI profile (key usage, key identifiers, SAN,
serverAuth) so that strict verifiers such as pyca's accept the good ones.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chainwatch.x509.certificate import Cert

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# A fixed "now" keeps tests independent of the day they run.
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
YEAR = dt.timedelta(days=365)


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh key: ``ec`` (P-256, fast), ``rsa`` (2048) or ``ed25519``."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


@cache
def shared_rsa_key(slot: int) -> rsa.RSAPrivateKey:
    """RSA keys are slow to make; tests that need several share a few."""
    key = new_key("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chainwatch tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


_serial = iter(range(1000, 10**9))


@dataclass
class CA:
    """A certificate authority: its name, key and own certificate."""

    name: x509.Name
    key: PrivateKey
    cert: x509.Certificate
    children: list[x509.Certificate] = field(default_factory=list)

    @property
    def common_name(self) -> str:
        value = self.name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(value, str)
        return value

    @property
    def c(self) -> Cert:
        return Cert(self.cert)

    @classmethod
    def root(
        cls,
        common_name: str,
        *,
        key: PrivateKey | None = None,
        not_before: dt.datetime = T0 - 10 * YEAR,
        not_after: dt.datetime = T0 + 10 * YEAR,
    ) -> CA:
        """A self-signed root."""
        key = key or new_key()
        name = _name(common_name)
        cert = _ca_builder(name, name, key.public_key(), key.public_key(), not_before, not_after).sign(
            key, _hash_for(key)
        )
        return cls(name, key, cert)

    def certify(
        self,
        subject: x509.Name,
        public_key: object,
        *,
        ca: bool,
        not_before: dt.datetime = T0 - YEAR,
        not_after: dt.datetime = T0 + YEAR,
        dns_names: tuple[str, ...] = (),
    ) -> x509.Certificate:
        """Sign any subject and key with this CA."""
        if ca:
            builder = _ca_builder(subject, self.name, public_key, self.key.public_key(), not_before, not_after)
        else:
            builder = _leaf_builder(
                subject, self.name, public_key, self.key.public_key(), not_before, not_after, dns_names
            )
        cert = builder.sign(self.key, _hash_for(self.key))
        self.children.append(cert)
        return cert

    def intermediate(
        self,
        common_name: str,
        *,
        key: PrivateKey | None = None,
        not_before: dt.datetime = T0 - YEAR,
        not_after: dt.datetime = T0 + 3 * YEAR,
    ) -> CA:
        """A CA below this one."""
        key = key or new_key()
        name = _name(common_name)
        cert = self.certify(name, key.public_key(), ca=True, not_before=not_before, not_after=not_after)
        return CA(name, key, cert)

    def cross_sign(
        self,
        other: CA,
        *,
        not_before: dt.datetime = T0 - YEAR,
        not_after: dt.datetime = T0 + 5 * YEAR,
    ) -> x509.Certificate:
        """``other``'s name and key, certified by this CA (a cross-sign)."""
        return self.certify(other.name, other.key.public_key(), ca=True, not_before=not_before, not_after=not_after)

    def leaf(
        self,
        dns_name: str = "mail.example.test",
        *,
        key: PrivateKey | None = None,
        not_before: dt.datetime = T0 - 30 * DAY,
        not_after: dt.datetime = T0 + 60 * DAY,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """An end-entity certificate for ``dns_name`` and its key."""
        key = key or new_key()
        cert = self.certify(
            _name(dns_name),
            key.public_key(),
            ca=False,
            not_before=not_before,
            not_after=not_after,
            dns_names=(dns_name,),
        )
        return cert, key


def _ski(public_key: object) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)  # type: ignore[arg-type]


def _base(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: object,
    issuer_key: object,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(next(_serial))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_ski(public_key), critical=False)
    )
    if subject != issuer or public_key != issuer_key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer_key)), critical=False
        )
    return builder


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: object,
    issuer_key: object,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        _base(subject, issuer, public_key, issuer_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
    )


def _leaf_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: object,
    issuer_key: object,
    not_before: dt.datetime,
    not_after: dt.datetime,
    dns_names: tuple[str, ...],
) -> x509.CertificateBuilder:
    return (
        _base(subject, issuer, public_key, issuer_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def pem(*certs: x509.Certificate) -> bytes:
    """Certificates as one PEM file, in the order given."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_of(certificate: x509.Certificate) -> Cert:
    return Cert(certificate)


def openssl_signed(
    issuer: CA,
    subject: CA | None = None,
    *,
    pss: bool = False,
    digest: str = "sha256",
    dns_name: str = "legacy.example.test",
) -> x509.Certificate:
    """A certificate signed by ``issuer`` with the real ``openssl``.

    For what cryptography cannot (or no longer will) sign: RSASSA-PSS before
    41 (Debian 12 has 38) and SHA-1 from 44 on. A CA certificate for
    ``subject`` when given, else a leaf for ``dns_name``; valid from T0 - 10
    years to T0 + 10 years like the roots, whatever day the tests run.
    """
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "ca.pem").write_bytes(pem(issuer.cert))
        (folder / "ca.key").write_bytes(key_pem(issuer.key))
        key = subject.key if subject else new_key()
        name = subject.common_name if subject else dns_name
        (folder / "req.key").write_bytes(key_pem(key))
        ext = (
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            if subject
            else "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{dns_name}\n"
        )
        (folder / "ext.cnf").write_text(ext + "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        subject_dn = f"/C=XX/O=chainwatch tests/CN={name}"
        subprocess.run(
            ["openssl", "req", "-new", "-key", "req.key", "-subj", subject_dn, "-out", "req.csr"],
            cwd=folder, check=True, capture_output=True,
        )  # fmt: skip
        options = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"] if pss else []
        # OpenSSL 3.0's x509 takes no start date, only -days from its clock:
        # a frozen clock makes the window the same whatever today's date is.
        start = T0 - 10 * YEAR
        subprocess.run(
            [
                "faketime", "-f", start.strftime("%Y-%m-%d %H:%M:%S"),
                "openssl", "x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", str(next(_serial)), "-days", str(((T0 + 10 * YEAR) - start).days),
                f"-{digest}", "-extfile", "ext.cnf", *options, "-out", "out.pem",
            ],
            cwd=folder, check=True, capture_output=True, env={**os.environ, "TZ": "UTC"},
        )  # fmt: skip
        return x509.load_pem_x509_certificate((folder / "out.pem").read_bytes())
