"""Real TLS clients, one process for a batch of handshakes, judging the chain each server sends.

Run under a frozen ``faketime`` by :mod:`tests.real_clients.verify`: no
client here can be told the time, but each asks libc for it, so every case of
a batch is judged at the clock the process was started with. The arguments
name the clients, each of which makes its own handshake for every case:

- ``openssl-1.0.2e``: nassl's legacy build of OpenSSL 1.0.2e (first-match);
- ``openssl-1.1.1w``: nassl's modern build, OpenSSL 1.1.1w (trusted-first);
- ``python-ssl``: Python's ``ssl``, Debian's OpenSSL 3 (trusted-first), as
  any OpenSSL 3 TLS client verifies what it receives.

Reads ``{"port": N, "cases": [{"server_name": ..., "store": PEM}]}`` on stdin
and writes, per case, each client's ``{"code": ..., "detail": ..., "received":
[PEM, ...]}`` by its name (``received`` only where the client shows it: nassl).
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Answer = dict[str, object]


def legacy_openssl(port: int, server_name: str, store: Path) -> Answer:
    from nassl._nassl_legacy import X509
    from nassl.legacy_ssl_client import LegacySslClient

    return _nassl(LegacySslClient, X509, port, server_name, store)


def modern_openssl(port: int, server_name: str, store: Path) -> Answer:
    from nassl._nassl import X509
    from nassl.ssl_client import SslClient

    return _nassl(SslClient, X509, port, server_name, store)


def _nassl(client_class: Any, x509: Any, port: int, server_name: str, store: Path) -> Answer:
    from nassl.ssl_client import OpenSslVerifyEnum

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # Verification is not enforced so that the handshake completes and the
        # verify result, OpenSSL's own verdict on the served chain, can be read.
        client = client_class(underlying_socket=sock, ssl_verify=OpenSslVerifyEnum.NONE, ssl_verify_locations=store)
        client.set_tlsext_host_name(server_name)
        try:
            client.do_handshake()
            code = client._ssl.get_verify_result()
            received = client.get_received_chain()
        finally:
            client.shutdown()
    detail = "ok" if code == 0 else f"error {code}: {x509.verify_cert_error_string(code)}"
    return {"code": code, "detail": detail, "received": received}


def python_ssl(port: int, server_name: str, store: Path) -> Answer:
    # No default paths: the store is the case's alone. No host name check:
    # the other verifiers judge the path only.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=store)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            with context.wrap_socket(sock, server_hostname=server_name):
                pass
        except ssl.SSLCertVerificationError as error:
            return {"code": error.verify_code, "detail": f"error {error.verify_code}: {error.verify_message}"}
    return {"code": 0, "detail": "ok"}


CLIENTS: dict[str, Callable[[int, str, Path], Answer]] = {
    "openssl-1.0.2e": legacy_openssl,
    "openssl-1.1.1w": modern_openssl,
    "python-ssl": python_ssl,
}


def main(argv: list[str]) -> int:
    handshakes = {name: CLIENTS[name] for name in argv}
    request = json.load(sys.stdin)
    answers = []
    with tempfile.TemporaryDirectory() as work:
        for index, case in enumerate(request["cases"]):
            store = Path(work) / f"store-{index}.pem"
            store.write_text(case["store"])
            answers.append(
                {name: handshake(request["port"], case["server_name"], store) for name, handshake in handshakes.items()}
            )
    json.dump(answers, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
