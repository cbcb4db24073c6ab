"""A real ``openssl s_server`` on loopback, serving one issuance as certbot got it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.certbot_tree import Issued
from tests.mailservers import wait_for_port


def free_port() -> int:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port: int = taken.getsockname()[1]
    return port  # closed again: nothing listens there until a server takes it


@contextlib.contextmanager
def serving(content: Issued, folder: Path) -> Iterator[str]:
    """``tls://127.0.0.1:PORT`` where s_server sends ``content``'s leaf, then its chain, as given."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("cert", "chain", "privkey"):
        (folder / f"{part}.pem").write_bytes(getattr(content, part))
    port = free_port()
    server = subprocess.Popen(
        [
            "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-quiet",
            "-cert", folder / "cert.pem", "-key", folder / "privkey.pem", "-cert_chain", folder / "chain.pem",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield f"tls://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()
