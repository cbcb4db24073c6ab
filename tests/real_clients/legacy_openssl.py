"""A real OpenSSL 1.0.2e TLS client (nassl's legacy build), one process for a batch of handshakes.

Run under a frozen ``faketime`` by :func:`tests.real_clients.verify.openssl_102`:
OpenSSL 1.0.2 has no way to be told the time, but asks libc for it, so every
case of a batch is judged at the clock the process was started with. Reads
``{"port": N, "cases": [{"server_name": ..., "store": PEM}]}`` on stdin and
writes one ``{"code": ..., "detail": ..., "received": [PEM, ...]}`` per case.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

from nassl._nassl_legacy import X509
from nassl.legacy_ssl_client import LegacySslClient
from nassl.ssl_client import OpenSslVerifyEnum


def handshake(port: int, server_name: str, store: Path) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # Verification is not enforced so that the handshake completes and the
        # verify result, OpenSSL's own verdict on the served chain, can be read.
        client = LegacySslClient(underlying_socket=sock, ssl_verify=OpenSslVerifyEnum.NONE, ssl_verify_locations=store)
        client.set_tlsext_host_name(server_name)
        try:
            client.do_handshake()
            code = client._ssl.get_verify_result()
            received = client.get_received_chain()
        finally:
            client.shutdown()
    detail = "ok" if code == 0 else f"error {code}: {X509.verify_cert_error_string(code)}"
    return {"code": code, "detail": detail, "received": received}


def main() -> int:
    request = json.load(sys.stdin)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for index, case in enumerate(request["cases"]):
            store = Path(work) / f"store-{index}.pem"
            store.write_text(case["store"])
            results.append(handshake(request["port"], case["server_name"], store))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
