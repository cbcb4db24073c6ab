"""Independent validators: OpenSSL, GnuTLS and, where installed, pyca's verifier.

Each answers one question: does a client with this trust store accept this
served chain (leaf first) at this time?
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cryptography
from cryptography import x509

from chainwatch.x509.certificate import Cert


def _pem(certs: Sequence[Cert]) -> bytes:
    return b"".join(cert.pem() for cert in certs)


def openssl_accepts(
    chain: Sequence[Cert], anchors: Sequence[Cert], at: dt.datetime, *, alt_chains: bool = True
) -> bool:
    """``openssl verify -attime``, with only ``anchors`` trusted.

    ``-no-CApath -no-CAstore`` matter: with ``-CAfile`` alone OpenSSL still
    loads the system's hashed directory and would trust far more. Without
    ``alt_chains`` (``-no_alt_chains``) OpenSSL does not retry a failed path
    with trusted certificates, as older clients did not.
    """
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "store.pem").write_bytes(_pem(anchors))
        (folder / "leaf.pem").write_bytes(chain[0].pem())
        command = [
            "openssl", "verify", "-attime", str(int(at.timestamp())),
            "-no-CApath", "-no-CAstore", "-CAfile", str(folder / "store.pem"),
        ]  # fmt: skip
        if not alt_chains:
            command.append("-no_alt_chains")
        if len(chain) > 1:
            (folder / "untrusted.pem").write_bytes(_pem(chain[1:]))
            command += ["-untrusted", str(folder / "untrusted.pem")]
        result = subprocess.run([*command, str(folder / "leaf.pem")], capture_output=True, check=False)
        return result.returncode == 0


def gnutls_accepts(chain: Sequence[Cert], anchors: Sequence[Cert], at: dt.datetime) -> bool:
    """``certtool --verify`` under a frozen ``faketime`` clock: GnuTLS has no -attime."""
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "store.pem").write_bytes(_pem(anchors))
        (folder / "chain.pem").write_bytes(_pem(chain))
        result = subprocess.run(
            [
                # -f with an absolute time freezes the clock; without it the
                # clock starts there and ticks, and a slow start-up on a busy
                # machine crossed a validity boundary (hypothesis caught it).
                "faketime", "-f", at.strftime("%Y-%m-%d %H:%M:%S"),
                "certtool", "--verify", "--load-ca-certificate", str(folder / "store.pem"),
                "--infile", str(folder / "chain.pem"),
            ],
            capture_output=True, check=False, env={**os.environ, "TZ": "UTC"},
        )  # fmt: skip
        return result.returncode == 0 and b"Chain verification output: Verified" in result.stdout


PYCA_HAS_VERIFIER = tuple(int(part) for part in cryptography.__version__.split(".")[:2]) >= (42, 0)


def pyca_accepts(chain: Sequence[Cert], anchors: Sequence[Cert], at: dt.datetime, dns_name: str) -> bool:
    """pyca/cryptography's Web PKI verifier (42+), as a server certificate for ``dns_name``."""
    from cryptography.x509 import verification

    builder = (
        verification.PolicyBuilder().store(verification.Store([a.x509 for a in anchors])).time(at.replace(tzinfo=None))
    )
    verifier = builder.build_server_verifier(x509.DNSName(dns_name))
    try:
        verifier.verify(chain[0].x509, [cert.x509 for cert in chain[1:]])
    except verification.VerificationError:
        return False
    return True
