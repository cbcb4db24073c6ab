"""The probe itself: what real Dovecot and Postfix send, over TLS and STARTTLS, and
clear failures from servers that refuse, say nothing, trickle, or never stop talking."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chainwatch.consumers.probe import ProbeError, fetch_chain, parse_endpoint
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import parse_certificates
from tests.mailservers import Dovecot, Postfix, wait_for_port
from tests.workspace import NAME, LivePKI, Workspace

HANG_GUARD_S = 60.0
"""How long a test waits for a probe before calling it hung: far beyond any timeout given here."""


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path_factory.mktemp("probe"), pki)
    workspace.certbot.write(NAME, pki.issue())
    assert workspace.chainwatch("sync").returncode == 0
    return workspace


@pytest.fixture(scope="module")
def published(ws: Workspace) -> list[Cert]:
    fullchain = ws.published()
    assert fullchain is not None
    chain = parse_certificates(fullchain, "published fullchain.pem")
    assert len(chain) == 2  # leaf, then its issuer: an order that a reversal would break
    return chain


@pytest.fixture(scope="module")
def dovecot(ws: Workspace) -> Iterator[Dovecot]:
    live = ws.out / "live" / NAME
    server = Dovecot(ws.root / "dovecot", live / "fullchain.pem", live / "privkey.pem", pop3=True)
    yield server
    server.stop()


def probe(text: str, timeout: float = 10.0, server_name: str | None = NAME) -> list[Cert]:
    return fetch_chain(parse_endpoint(text), server_name, timeout)


def failure(text: str, timeout: float = 10.0) -> str:
    """The message of the ProbeError that probing ``text`` raises, from a thread that must finish."""
    outcome: list[BaseException | list[Cert]] = []

    def run() -> None:
        try:
            outcome.append(probe(text, timeout))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    assert not worker.is_alive(), f"the probe of {text} was still running after {HANG_GUARD_S:g} s"
    (result,) = outcome
    assert isinstance(result, ProbeError), result
    return str(result)


@pytest.mark.parametrize("kind", ["imaps", "imap+starttls", "pop3+starttls"])
def test_dovecot_sends_the_published_fullchain_in_order(dovecot: Dovecot, published: list[Cert], kind: str) -> None:
    port = {"imaps": dovecot.imaps_port, "imap+starttls": dovecot.imap_port, "pop3+starttls": dovecot.pop3_port}
    assert probe(f"{kind}://127.0.0.1:{port[kind]}") == published


def test_postfix_sends_the_published_fullchain_in_order_over_smtp_starttls(
    ws: Workspace, published: list[Cert]
) -> None:
    server = Postfix(ws.root / "postfix", ws.out / "live" / NAME / "key+fullchain.pem")
    try:
        assert probe(f"smtp+starttls://127.0.0.1:{server.port}") == published
        # Without a server name (an IP address is none): Postfix has one chain for everyone.
        assert probe(f"smtp+starttls://127.0.0.1:{server.port}", server_name=None) == published
    finally:
        server.stop()


def test_dovecot_without_tls_does_not_offer_starttls_for_imap_or_pop3(tmp_path: Path, ws: Workspace) -> None:
    server = Dovecot(tmp_path / "dovecot", ws.out / "live" / NAME / "fullchain.pem", Path("/nonexistent"),
                     pop3=True, ssl="ssl = no\ndisable_plaintext_auth = no")  # fmt: skip
    try:
        imap = f"imap+starttls://127.0.0.1:{server.imap_port}"
        # Said by the capabilities in its greeting: no STARTTLS command is sent to be refused.
        assert failure(imap) == f"{imap}: the server does not offer STARTTLS"
        pop3 = f"pop3+starttls://127.0.0.1:{server.pop3_port}"
        refused = failure(pop3)
        assert refused.startswith(f"{pop3}: the server does not offer STARTTLS (it answered "), refused
        assert "-ERR" in refused
    finally:
        server.stop()


def test_the_server_name_asked_for_is_sent_as_sni_and_none_without_one(tmp_path: Path, pki: LivePKI) -> None:
    """A real ``openssl s_server`` answering ``www.example.test`` with a second certificate."""
    second = "www.example.test"
    files = {}
    for name, content in (("first", pki.issue()), ("second", pki.issue(second))):
        for part in ("cert", "privkey"):
            files[f"{name}.{part}"] = tmp_path / f"{name}.{part}.pem"
            files[f"{name}.{part}"].write_bytes(getattr(content, part))
    port = _closed_port()
    server = subprocess.Popen(
        [
            "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-quiet", "-naccept", "10",
            "-cert", files["first.cert"], "-key", files["first.privkey"],
            "-servername", second, "-cert2", files["second.cert"], "-key2", files["second.privkey"],
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        endpoint = f"tls://127.0.0.1:{port}"
        first_leaf, second_leaf = (parse_certificates(files[f"{n}.cert"].read_bytes(), n) for n in ("first", "second"))
        assert probe(endpoint, server_name=second) == second_leaf
        assert probe(endpoint, server_name=NAME) == first_leaf
        assert probe(endpoint, server_name=None) == first_leaf
    finally:
        server.kill()
        server.wait()


def test_postfix_without_tls_does_not_offer_starttls(ws: Workspace) -> None:
    server = Postfix(ws.root / "postfix-plain", ws.out / "live" / NAME / "key+fullchain.pem")
    endpoint = f"smtp+starttls://127.0.0.1:{server.port}"
    try:
        subprocess.run(["postconf", "-c", str(server.conf), "-e", "smtpd_tls_security_level = none"], check=True)
        subprocess.run(server.reload_command, check=True, capture_output=True)
        # A reload reaches new smtpd processes a moment later: ask until one answers without TLS.
        deadline, message = time.monotonic() + HANG_GUARD_S, ""
        while "does not offer" not in message and time.monotonic() < deadline:
            try:
                probe(endpoint)
            except ProbeError as error:
                message = str(error)
            time.sleep(0.1)
        assert message == f"{endpoint}: the server does not offer STARTTLS"
    finally:
        server.stop()


def _closed_port() -> int:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port: int = taken.getsockname()[1]
    return port  # closed again: nothing listens there


def test_a_closed_port_is_connection_refused() -> None:
    endpoint = f"imaps://127.0.0.1:{_closed_port()}"
    assert failure(endpoint) == f"{endpoint}: connection refused"


def test_a_name_that_cannot_be_a_server_name_fails_the_probe_before_it_connects() -> None:
    endpoint = f"tls://127.0.0.1:{_closed_port()}"
    with pytest.raises(ProbeError) as raised:
        probe(endpoint, server_name="mail..example.test")
    assert str(raised.value).startswith(f"{endpoint}: 'mail..example.test' cannot be sent as a server name (")


@contextlib.contextmanager
def listener(talk: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A real TCP server on loopback; ``talk`` has each connection until the event says stop."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)
            threading.Thread(target=_quietly, args=(talk, connection, stop), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        for connection in held:
            connection.close()


def _quietly(talk: Callable[[socket.socket, threading.Event], None], connection: socket.socket,
             stop: threading.Event) -> None:  # fmt: skip
    with contextlib.suppress(OSError):
        talk(connection, stop)


def silent(connection: socket.socket, stop: threading.Event) -> None:
    stop.wait()


def trickling(connection: socket.socket, stop: threading.Event) -> None:
    """A greeting that never ends, a byte every 50 ms: each read gets something, none gets a line."""
    while not stop.wait(0.05):
        connection.sendall(b"2")


def endless(connection: socket.socket, stop: threading.Event) -> None:
    """An SMTP greeting that goes on and on, as fast as the client reads it."""
    line = b"220-" + b"x" * 60 + b"\r\n"
    while not stop.is_set():
        connection.sendall(line * 64)


@pytest.mark.parametrize("kind", ["imaps", "imap+starttls", "smtp+starttls", "pop3+starttls"])
def test_a_listener_that_never_speaks_fails_the_probe_at_its_timeout(kind: str) -> None:
    with listener(silent) as port:
        message = failure(f"{kind}://127.0.0.1:{port}", timeout=1)
    assert message.startswith(f"{kind}://127.0.0.1:{port}: no TLS handshake within 1 s (waiting for the ")


def test_a_greeting_trickled_a_byte_at_a_time_cannot_stretch_the_timeout() -> None:
    with listener(trickling) as port:
        message = failure(f"smtp+starttls://127.0.0.1:{port}", timeout=1)
    assert message == f"smtp+starttls://127.0.0.1:{port}: no TLS handshake within 1 s (waiting for the SMTP greeting)"


def test_a_greeting_that_never_ends_is_cut_off_after_64_kib() -> None:
    with listener(endless) as port:
        message = failure(f"smtp+starttls://127.0.0.1:{port}", timeout=30)
    assert message == f"smtp+starttls://127.0.0.1:{port}: the server sent more than 65536 bytes before STARTTLS"


def injecting(connection: socket.socket, stop: threading.Event) -> None:
    """POP3 that says go and sends bytes of its own before the client's handshake: not TLS, an injection."""
    connection.sendall(b"+OK ready\r\n")
    connection.recv(64)
    connection.sendall(b"+OK begin TLS\r\n+OK extra\r\n")
    stop.wait()


def test_data_sent_after_the_go_ahead_for_starttls_fails_the_probe() -> None:
    with listener(injecting) as port:
        message = failure(f"pop3+starttls://127.0.0.1:{port}", timeout=10)
    assert message == f"pop3+starttls://127.0.0.1:{port}: the server sent data after agreeing to STARTTLS"


def test_the_probe_says_goodbye_with_a_close_notify(tmp_path: Path, pki: LivePKI) -> None:
    """Servers log a connection dropped without one as a TLS error (Exim does, on every probe)."""
    content = pki.issue()
    (tmp_path / "cert.pem").write_bytes(content.fullchain)
    (tmp_path / "key.pem").write_bytes(content.privkey)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    endings: list[str] = []

    def serve(connection: socket.socket, stop: threading.Event) -> None:
        connection.settimeout(HANG_GUARD_S)
        with context.wrap_socket(connection, server_side=True, suppress_ragged_eofs=False) as tls:
            try:
                endings.append("close_notify" if tls.recv(1) == b"" else "data")
            except ssl.SSLEOFError:
                endings.append("dropped without close_notify")

    with listener(serve) as port:
        assert probe(f"tls://127.0.0.1:{port}") == parse_certificates(content.fullchain, "served")
        deadline = time.monotonic() + HANG_GUARD_S
        while not endings and time.monotonic() < deadline:
            time.sleep(0.01)
    assert endings == ["close_notify"]
