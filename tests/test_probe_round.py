"""A probe round is bounded by one deadline, however many names and endpoints it has."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from chainwatch.agent.consumer_step import PROBE_WORKERS
from tests.certbot_tree import issued
from tests.pki import new_key
from tests.workspace import NAME, LivePKI, Workspace


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """Accepts TLS clients and never answers them: every handshake waits for its timeout."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for connection in accepted:
        connection.close()


def test_names_beyond_what_one_round_can_ask_are_left_unchecked_not_waited_for(
    tmp_path: Path, pki: LivePKI, silent_server: tuple[int, list[socket.socket]]
) -> None:
    port, accepted = silent_server
    names = tuple(f"host{i}.example.test" for i in range(40))
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    leaf = pki.issuing.certify(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]),
        key.public_key(),
        ca=False,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=89),
        dns_names=names,
    )
    ws = Workspace(tmp_path, pki)
    ws.certbot.write(NAME, issued(leaf, key, pki.issuing.cert, pki.cross))
    ws.write_config(
        consumers=f'[[consumer]]\nname = "dovecot"\nreload_command = ["true"]\nprobe = ["imaps://127.0.0.1:{port}"]\n'
    )

    ws.chainwatch("sync")

    probes = ws.state()["consumers"]["dovecot"]["probes"]
    verdicts = Counter(probe["verdict"] for probe in probes)
    # Every worker's first handshake runs until the deadline, so no worker
    # starts a second name within the round: the rest are not asked at all.
    assert verdicts == {"unreachable": PROBE_WORKERS, "unchecked": len(names) - PROBE_WORKERS}
    assert len(accepted) == PROBE_WORKERS
    # Unreachable is the consumer's error; the renewal stays published.
    assert ws.state()["consumers"]["dovecot"]["state"] == "error"
    assert ws.state()["lineages"][NAME]["version"] == 1
