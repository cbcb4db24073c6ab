"""A real ACME server (Debian's pebble) on loopback, and real certbot talking to it.

pebble keeps accounts in memory, so one server serves a whole test module;
certbot's `renew` sleeps up to 8 minutes when not on a terminal unless told
`--no-random-sleep-on-renew` (FIELD-NOTES).

pebble hands out leaf ← issuing CA ← (chain_length - 1 more intermediates),
and its management interface serves the issuing CA's private key. With that
key a test can make the shape chainwatch exists for: the issuing CA's key also
stands as a self-signed root that clients trust (like ISRG Root X1), while
certbot's chain carries it cross-signed by a hierarchy those clients do not
know (like ISRG Root X1 ← DST Root CA X3).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "pebble-cert.pem", folder / "pebble-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class Pebble:
    """A running pebble; ``root_pem()`` is the CA its certificates chain to."""

    def __init__(self, folder: Path, chain_length: int = 1) -> None:
        if not shutil.which("pebble") or not shutil.which("certbot"):
            raise RuntimeError("pebble and certbot are Debian packages that .ci/setup installs")
        self.folder = folder
        self.tls_cert, tls_key = _self_signed(folder)
        self.acme_port, self.management_port, self.http_port = free_port(), free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(self.tls_cert),
                "privateKey": str(tls_key),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (folder / "pebble.json").write_text(json.dumps(config))
        self.log = (folder / "pebble.log").open("w")
        self.process = subprocess.Popen(
            ["pebble", "-config", str(folder / "pebble.json")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # pebble rejects 5 % of nonces by default to exercise clients' retry;
            # certbot retries once, so a run of ~50 requests failed now and then
            # (seen in CI: badNonce on `renew`). That is pebble testing certbot,
            # not something chainwatch's tests are about.
            env={
                **os.environ,
                "PEBBLE_VA_ALWAYS_VALID": "1",
                "PEBBLE_VA_NOSLEEP": "1",
                "PEBBLE_WFE_NONCEREJECT": "0",
                "PEBBLE_CHAIN_LENGTH": str(chain_length),
            },
        )
        deadline = time.monotonic() + 15
        while "Listening on" not in (folder / "pebble.log").read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("pebble did not start:\n" + (folder / "pebble.log").read_text())
            time.sleep(0.05)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def _management(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.tls_cert))
        url = f"https://127.0.0.1:{self.management_port}/{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            data: bytes = response.read()
            return data

    def root_pem(self) -> bytes:
        """The self-signed root at the top of the chain certbot receives (pebble does not send it)."""
        return self._management("roots/0")

    def issuing_ca_as_root(self) -> bytes:
        """A self-signed root with the issuing CA's name, key and key identifier.

        A client that trusts it validates pebble's leaves without any
        intermediate; the issuing CA certificate certbot receives is then a
        cross-sign towards a root that client does not have. The key
        identifier is copied because OpenSSL matches it against the leaf's
        authority key identifier when it looks for the issuer.
        """
        issuing = x509.load_pem_x509_certificate(self._management("intermediates/0"))
        key = serialization.load_pem_private_key(self._management("intermediate-keys/0"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise RuntimeError(f"pebble's issuing key is a {type(key).__name__}; expected EC or RSA")
        now = dt.datetime.now(dt.UTC)
        signs_certificates = x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        )  # fmt: skip
        root = (
            x509.CertificateBuilder()
            .subject_name(issuing.subject)
            .issuer_name(issuing.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(signs_certificates, critical=True)
            .add_extension(issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value, critical=False)
            .sign(key, hashes.SHA256())
        )
        return root.public_bytes(serialization.Encoding.PEM)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class Certbot:
    """certbot with its own config, work and logs directories."""

    def __init__(self, pebble: Pebble, folder: Path) -> None:
        self.pebble = pebble
        self.config_dir = folder / "config"
        self.live = self.config_dir / "live"
        self.deploy_hooks = self.config_dir / "renewal-hooks" / "deploy"
        self.common = [
            "--server", pebble.directory,
            "--config-dir", str(self.config_dir),
            "--work-dir", str(folder / "work"), "--logs-dir", str(folder / "logs"),
            "--non-interactive",
        ]  # fmt: skip

    def _run(self, *args: str, wrapper: Sequence[str] = (), check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*wrapper, "certbot", *args, *self.common],
            capture_output=True,
            text=True,
            env={**os.environ, "REQUESTS_CA_BUNDLE": str(self.pebble.tls_cert)},
            timeout=120,
        )
        if check and done.returncode:
            # certbot's own words, so a CI failure says why and not just "exit 1".
            raise RuntimeError(f"certbot {args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return done

    def certonly(self, name: str) -> None:
        self._run(
            "certonly", "--agree-tos", "-m", "a@example.test", "--standalone",
            "--http-01-port", str(self.pebble.http_port), "--http-01-address", "127.0.0.1", "-d", name,
        )  # fmt: skip

    def renew(
        self, name: str | None = None, wrapper: Sequence[str] = (), check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Renew every lineage, or only ``name``; ``wrapper`` is a command prefix certbot runs under."""
        only = ("--cert-name", name) if name else ()
        return self._run("renew", "--force-renewal", "--no-random-sleep-on-renew", *only, wrapper=wrapper, check=check)
