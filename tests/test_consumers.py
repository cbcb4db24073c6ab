"""Consumers for real: Dovecot and Postfix serve what chainwatch publishes, proven by
openssl and gnutls-cli; reload failures roll back; probes say what is served."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chainwatch.pem import parse_certificates
from tests.mailservers import Dovecot, Postfix
from tests.workspace import NAME, LivePKI, Workspace


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.certbot.write(NAME, pki.issue())
    assert workspace.chainwatch("sync").returncode == 0  # version 1, before any server starts
    return workspace


@pytest.fixture
def dovecot(ws: Workspace) -> Iterator[Dovecot]:
    live = ws.out / "live" / NAME
    server = Dovecot(ws.root / "dovecot", live / "fullchain.pem", live / "privkey.pem")
    yield server
    server.stop()


def consumer(name: str, command: list[str], probes: list[str]) -> str:
    return (
        f'[[consumer]]\nname = "{name}"\nreload_command = {json.dumps(command)}\n'
        f"probe = {json.dumps(probes)}\nreload_timeout_s = 20\n"
    )


def openssl_chain(port: int, starttls: str | None = None) -> list[bytes]:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", "-servername", NAME]
    command += ["-starttls", starttls] if starttls else []
    output = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20).stdout
    return [c.pem() for c in parse_certificates(output, "openssl s_client")]


def gnutls_chain(port: int) -> list[bytes]:
    output = subprocess.run(
        ["gnutls-cli", "--print-cert", "--insecure", "--sni-hostname", NAME, "-p", str(port), "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20,
    ).stdout
    return [c.pem() for c in parse_certificates(output, "gnutls-cli")]


def as_pems(fullchain: bytes) -> list[bytes]:
    return [c.pem() for c in parse_certificates(fullchain, "expected")]


def test_dovecot_serves_exactly_the_sanitized_chain_after_a_renewal(ws: Workspace, dovecot: Dovecot) -> None:
    ws.write_config(
        consumers=consumer(
            "dovecot",
            dovecot.reload_command,
            [f"imaps://127.0.0.1:{dovecot.imaps_port}", f"imap+starttls://127.0.0.1:{dovecot.imap_port}"],
        )
    )
    with ws.agent() as agent:
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: bool(agent.events("probe-ok")) and len(agent.events("probe-ok")) >= 2, what="probes")
        expected = as_pems(ws.pki.trimmed(renewed))
        assert len(expected) == 2  # leaf and issuing CA: the cross-sign to the expired root is gone
        assert openssl_chain(dovecot.imaps_port) == expected
        assert openssl_chain(dovecot.imap_port, "imap") == expected
        assert gnutls_chain(dovecot.imaps_port) == expected
        assert "dovecot reloaded via command" in agent.events("reloaded")[0]
        probes = ws.state()["consumers"]["dovecot"]["probes"]
        assert [p["ok"] for p in probes] == [True, True]
        assert probes[0]["message"] == f"dovecot on imaps://127.0.0.1:{dovecot.imaps_port} serves version 2 of {NAME}"


def test_dovecot_keeps_serving_the_old_pair_when_the_new_key_does_not_match(ws: Workspace, dovecot: Dovecot) -> None:
    ws.write_config(consumers=consumer("dovecot", dovecot.reload_command, [f"imaps://127.0.0.1:{dovecot.imaps_port}"]))
    served_before = openssl_chain(dovecot.imaps_port)
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        (ws.certbot.archive / NAME / "privkey2.pem").write_bytes(ws.pki.issue().privkey)
        agent.wait_for(lambda: bool(agent.events("rejected")), what="rejection")
        assert agent.events("reloaded") == []
    assert openssl_chain(dovecot.imaps_port) == served_before
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert "the key does not match any certificate in fullchain.pem; serving version 1" in status.stdout


def test_failed_reload_rolls_back_and_retries_later(ws: Workspace, dovecot: Dovecot) -> None:
    broken = ["doveadm", "-c", str(ws.root / "no-such-dovecot.conf"), "reload"]
    ws.write_config(consumers=consumer("dovecot", broken, []))
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: bool(agent.events("rolled-back")), what="rollback")
        assert ws.versions() == [1, 2]
        assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/1")
        line = agent.events("rolled-back")[0]
        assert "dovecot reload failed: doveadm -c" in line
        assert re.search(r"rolled back to version 1, retrying version 2's content at \d\d:\d\d:\d\d UTC", line)
        status = ws.chainwatch("status")
        assert status.returncode == 2
        assert "rolled back to version 1" in status.stdout


def test_handshakes_failing_after_a_reload_roll_back(ws: Workspace, dovecot: Dovecot) -> None:
    closed = _closed_port()
    ws.write_config(consumers=consumer("dovecot", dovecot.reload_command, [f"imaps://127.0.0.1:{closed}"]))
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: bool(agent.events("rolled-back")), timeout=20, what="rollback")
        assert "handshakes fail after the reload" in agent.events("rolled-back")[0]
        assert "connection refused" in agent.events("rolled-back")[0]


def test_a_consumer_that_serves_a_stale_chain_is_an_error_with_the_reason(ws: Workspace, dovecot: Dovecot) -> None:
    ws.write_config(consumers=consumer("dovecot", ["true"], [f"imaps://127.0.0.1:{dovecot.imaps_port}"]))
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: bool(agent.events("probe-failed")), timeout=20, what="probe failure")
    expected = f"dovecot on imaps://127.0.0.1:{dovecot.imaps_port} serves version 1 of {NAME}, published is 2"
    assert expected in agent.events("probe-failed")[0]
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert expected in status.stdout


def test_postfix_serves_the_sanitized_chain_over_smtp_starttls(ws: Workspace) -> None:
    server = Postfix(ws.root / "postfix", ws.out / "live" / NAME / "key+fullchain.pem")
    try:
        ws.write_config(
            consumers=consumer("postfix", server.reload_command, [f"smtp+starttls://127.0.0.1:{server.port}"])
        )
        with ws.agent() as agent:
            renewed = ws.pki.issue()
            ws.certbot.write(NAME, renewed)
            agent.wait_for(lambda: bool(agent.events("probe-ok")), timeout=20, what="postfix probe")
            assert openssl_chain(server.port, "smtp") == as_pems(ws.pki.trimmed(renewed))
    finally:
        server.stop()


# -- chainwatch probe against servers that misbehave ---------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def loopback_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on a free loopback port; ``handle`` gets each connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            handle(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture
def hanging_server() -> Iterator[int]:
    """Accepts connections and never says a word."""
    held: list[socket.socket] = []
    with loopback_server(held.append) as port:
        yield port
    for connection in held:
        connection.close()


def _imap_without_starttls(connection: socket.socket) -> None:
    with connection:
        connection.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        connection.settimeout(2)
        with contextlib.suppress(OSError):
            tag = connection.recv(1024).split(b" ")[0] or b"a"
            connection.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            connection.recv(1024)
            connection.sendall(tag + b" BAD unknown command\r\n")


@pytest.fixture
def imap_without_starttls() -> Iterator[int]:
    """An IMAP server whose capabilities lack STARTTLS."""
    with loopback_server(_imap_without_starttls) as port:
        yield port


@pytest.fixture
def server_sending_its_root(tmp_path: Path, pki: LivePKI) -> Iterator[int]:
    """A real `openssl s_server` that also sends the self-signed root."""
    content = pki.issue()
    (tmp_path / "leaf.pem").write_bytes(content.cert)
    (tmp_path / "key.pem").write_bytes(content.privkey)
    from tests.pki import pem

    (tmp_path / "extra.pem").write_bytes(pem(pki.issuing.cert, pki.new.cert))
    port = _closed_port()
    process = subprocess.Popen(
        [
            "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(tmp_path / "leaf.pem"),
            "-key", str(tmp_path / "key.pem"), "-cert_chain", str(tmp_path / "extra.pem"), "-quiet", "-naccept", "50",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    from tests.mailservers import wait_for_port

    wait_for_port(port)
    yield port
    process.kill()
    process.wait()


def test_probe_shows_a_good_chain_as_fine(ws: Workspace, dovecot: Dovecot) -> None:
    result = ws.chainwatch("probe", f"imaps://127.0.0.1:{dovecot.imaps_port}", "--name", NAME)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sends:" in result.stdout
    assert "verdict: fine as served" in result.stdout


def test_probe_shows_that_a_root_sent_by_the_server_would_be_dropped(
    ws: Workspace, server_sending_its_root: int
) -> None:
    result = ws.chainwatch("probe", f"tls://127.0.0.1:{server_sending_its_root}", "--name", NAME, "--json")
    assert result.returncode == 1
    (entry,) = json.loads(result.stdout)["endpoints"]
    assert [d["reason"] for d in entry["dropped"]] == ["anchor"]
    assert len(entry["served"]) == 3


def test_probe_of_a_server_without_starttls_says_so(ws: Workspace, imap_without_starttls: int) -> None:
    result = ws.chainwatch("probe", f"imap+starttls://127.0.0.1:{imap_without_starttls}", "--timeout", "5")
    assert result.returncode == 2
    assert "the server does not offer STARTTLS" in result.stdout


def test_probe_of_a_closed_port_says_connection_refused(ws: Workspace) -> None:
    result = ws.chainwatch("probe", f"imaps://127.0.0.1:{_closed_port()}")
    assert result.returncode == 2
    assert "connection refused" in result.stdout


def test_probe_of_a_hanging_server_gives_up_in_time(ws: Workspace, hanging_server: int) -> None:
    result = ws.chainwatch("probe", f"imaps://127.0.0.1:{hanging_server}", "--timeout", "2")
    assert result.returncode == 2
    assert "no TLS handshake within 2 s" in result.stdout


def test_bad_endpoint_is_a_one_line_usage_error(ws: Workspace) -> None:
    result = ws.chainwatch("probe", "gopher://127.0.0.1:70")
    assert result.returncode == 2
    assert result.stderr.startswith("chainwatch: gopher://127.0.0.1:70: unknown scheme")
