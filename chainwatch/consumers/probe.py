"""What does a server send right now? Ask it, the way a mail client does.

In process, with Python's ssl module: a TCP connection, the IMAP, SMTP or
POP3 STARTTLS dialogue spoken here, then a TLS handshake that verifies
nothing (the point is to see what is sent, good or bad) and keeps the chain
in the order the server sent it. A process per probe (``openssl s_client``)
cost more than a whole round's deadline for a hundred lineages on two
endpoints; a thread per probe costs a handshake.

Every probe is bounded by one deadline, whatever the server does: each read
and the handshake get only the time that is left, so a server that trickles
a byte at a time cannot stretch it, and the dialogue reads at most
``_MAX_DIALOGUE`` bytes, so an endless greeting cannot fill memory.
"""

from __future__ import annotations

import _ssl
import contextlib
import functools
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chainwatch.errors import ChainwatchError, InputError
from chainwatch.printable import quoted
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import MAX_CHAIN_CERTS

__all__ = ["Endpoint", "ProbeError", "fetch_chain", "parse_endpoint"]

_SCHEMES = {
    "imaps": (993, None),
    "imap+starttls": (143, "imap"),
    "smtps": (465, None),
    "smtp+starttls": (587, "smtp"),
    "pop3s": (995, None),
    "pop3+starttls": (110, "pop3"),
    "https": (443, None),
    "tls": (None, None),
}

# All a STARTTLS dialogue may read. Dovecot's greeting with its capabilities
# is a few hundred bytes and Postfix's EHLO answer less; a server sending
# more than this is not speaking the protocol we asked for.
_MAX_DIALOGUE = 64 * 1024
_READ_SIZE = 4096
# What the dialogue says about us: an invalid name (RFC 6761) makes no claim.
_EHLO_NAME = "chainwatch.invalid"


class ProbeError(ChainwatchError):
    """The server could not be asked (closed port, no STARTTLS, handshake failure, timeout)."""


@dataclass(frozen=True)
class Endpoint:
    """``imaps://127.0.0.1:993`` and friends."""

    text: str
    scheme: str
    host: str
    port: int
    starttls: str | None

    def __str__(self) -> str:
        return self.text


def parse_endpoint(text: str) -> Endpoint:
    """Read an endpoint URL; raises :class:`InputError` naming what is wrong."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in _SCHEMES:
        raise InputError(f"{text}: unknown scheme (use one of {', '.join(_SCHEMES)})")
    default_port, starttls = _SCHEMES[parsed.scheme]
    try:
        port = parsed.port or default_port
    except ValueError:
        raise InputError(f"{text}: bad port") from None
    if not parsed.hostname or port is None:
        raise InputError(f"{text}: needs a host and a port")
    return Endpoint(text, parsed.scheme, parsed.hostname, port, starttls)


def fetch_chain(endpoint: Endpoint, server_name: str | None, timeout: float = 10.0) -> list[Cert]:
    """The certificates ``endpoint`` sends for SNI ``server_name``, in the order sent.

    No SNI is sent without ``server_name``, nor for an IP address (RFC 6066;
    Python's ssl module leaves it out).
    """
    if server_name is not None:
        try:
            # As the ssl module will encode it: a certificate's name may not survive that.
            server_name.encode("idna")
        except UnicodeError as error:
            reason = str(error).rsplit(": ", 1)[-1].rstrip(")")  # the codec's words, not its wrapping
            raise ProbeError(f"{endpoint}: {quoted(server_name)} cannot be sent as a server name ({reason})") from None
    clock = _Deadline(endpoint, timeout)
    connection = _connect(endpoint, clock)
    try:
        if endpoint.starttls:
            _STARTTLS[endpoint.starttls](_Dialogue(connection, endpoint, clock))
        clock.bound(connection, "the server's side of the TLS handshake")
        try:
            tls = _context().wrap_socket(connection, server_hostname=server_name)
        except TimeoutError:
            raise clock.expired("the server's side of the TLS handshake") from None
        except ssl.SSLError as error:
            raise ProbeError(f"{endpoint}: TLS handshake failed ({_reason(error)})") from None
        except OSError as error:
            raise ProbeError(f"{endpoint}: TLS handshake failed ({_strerror(error)})") from None
        with tls:
            sent = _chain_as_sent(tls)
            _close_notify(tls)
    finally:
        connection.close()
    if not sent:
        raise ProbeError(f"{endpoint}: no certificate received (the server sent none)")
    if len(sent) > MAX_CHAIN_CERTS:
        raise ProbeError(f"{endpoint}: more than {MAX_CHAIN_CERTS} certificates; this is not a served chain")
    chain = []
    for number, der in enumerate(sent, 1):
        try:
            chain.append(Cert.from_der(der))
        except ValueError as error:
            reason = str(error).splitlines()[0] if str(error) else "unparsable"
            raise ProbeError(f"{endpoint}: certificate {number} is not valid DER X.509 ({reason})") from None
    return chain


class _Deadline:
    """One probe's deadline: every wait gets what is left of it, never more."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    def left(self, waiting_for: str) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired(waiting_for)
        return left

    def bound(self, connection: socket.socket, waiting_for: str) -> None:
        connection.settimeout(self.left(waiting_for))

    def expired(self, waiting_for: str) -> ProbeError:
        return ProbeError(f"{self.endpoint}: no TLS handshake within {self.timeout:g} s (waiting for {waiting_for})")


def _connect(endpoint: Endpoint, clock: _Deadline) -> socket.socket:
    """A TCP connection to the first address that takes one; the errors say which way it failed."""
    try:
        # Name resolution cannot be given a timeout; endpoints are addresses or local names.
        addresses = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ProbeError(f"{endpoint}: cannot resolve {endpoint.host} ({_strerror(error)})") from None
    failure: OSError | None = None
    for family, kind, protocol, _, address in addresses:
        connection = socket.socket(family, kind, protocol)
        try:
            connection.settimeout(clock.left("the connection"))
            connection.connect(address)
        except TimeoutError:
            connection.close()
            raise clock.expired("the connection") from None
        except ProbeError:
            connection.close()
            raise
        except OSError as error:
            connection.close()
            failure = failure or error
            continue
        return connection
    if isinstance(failure, ConnectionRefusedError):
        raise ProbeError(f"{endpoint}: connection refused")
    reason = _strerror(failure) if failure else "no address"
    raise ProbeError(f"{endpoint}: cannot connect ({reason})")


class _Dialogue:
    """The plain-text exchange before STARTTLS: lines, bounded in size and by the deadline."""

    def __init__(self, connection: socket.socket, endpoint: Endpoint, clock: _Deadline) -> None:
        self.connection = connection
        self.endpoint = endpoint
        self.clock = clock
        self.buffer = b""
        self.read = 0

    def send(self, line: str) -> None:
        self.clock.bound(self.connection, f"the server to take {quoted(line)}")
        try:
            self.connection.sendall(line.encode("ascii") + b"\r\n")
        except TimeoutError:
            raise self.clock.expired(f"the server to take {quoted(line)}") from None
        except OSError as error:
            raise self.fail(f"the connection failed while sending {quoted(line)} ({_strerror(error)})") from None

    def line(self, waiting_for: str) -> str:
        """The next line, without its end; a server that closes or says too much fails the probe."""
        while b"\n" not in self.buffer:
            if self.read >= _MAX_DIALOGUE:
                raise self.fail(f"the server sent more than {_MAX_DIALOGUE} bytes before STARTTLS")
            self.clock.bound(self.connection, waiting_for)
            try:
                chunk = self.connection.recv(min(_READ_SIZE, _MAX_DIALOGUE - self.read))
            except TimeoutError:
                raise self.clock.expired(waiting_for) from None
            except OSError as error:
                raise self.fail(f"the connection failed waiting for {waiting_for} ({_strerror(error)})") from None
            if not chunk:
                raise self.fail(f"the server closed the connection instead of sending {waiting_for}")
            self.read += len(chunk)
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r").decode("ascii", errors="replace")

    def ready(self) -> None:
        """The server said go: the next bytes on the wire must be the handshake's."""
        if self.buffer:
            # Sent before it saw our handshake: injected, or not the protocol.
            raise self.fail("the server sent data after agreeing to STARTTLS")

    def refuses(self, answer: str) -> ProbeError:
        return self.fail(f"the server does not offer STARTTLS (it answered {_quote(answer)})")

    def fail(self, reason: str) -> ProbeError:
        return ProbeError(f"{self.endpoint}: {reason}")


def _imap(talk: _Dialogue) -> None:
    """RFC 3501: greeting, capabilities (from the greeting when it has them), STARTTLS."""
    greeting = talk.line("the IMAP greeting")
    if not greeting.upper().startswith("* OK"):
        raise talk.fail(f"the server did not greet as IMAP does (it said {_quote(greeting)})")
    words = greeting.upper().split()
    if len(words) > 2 and words[2].startswith("[CAPABILITY"):
        capabilities = set(greeting.upper().split("]", 1)[0].split()[3:])
    else:
        talk.send("a CAPABILITY")
        capabilities = set()
        for answer in _imap_answer(talk, "a"):
            if answer.upper().startswith("* CAPABILITY "):
                capabilities.update(answer.upper().split()[2:])
    if "STARTTLS" not in capabilities:
        raise talk.fail("the server does not offer STARTTLS")
    talk.send("b STARTTLS")
    last = _imap_answer(talk, "b")[-1]
    if not last.upper().startswith("B OK"):
        raise talk.refuses(last)
    talk.ready()


def _imap_answer(talk: _Dialogue, tag: str) -> list[str]:
    """The untagged lines and the tagged one that ends the answer to command ``tag``."""
    lines = []
    while True:
        lines.append(talk.line(f"the answer to IMAP command {tag}"))
        if lines[-1].upper().startswith(f"{tag.upper()} "):
            return lines


def _smtp(talk: _Dialogue) -> None:
    """RFC 3207: 220 greeting, EHLO, STARTTLS among the extensions, 220 to go."""
    greeting = _smtp_reply(talk, "the SMTP greeting")
    if not greeting[0].startswith("220"):
        raise talk.fail(f"the server did not accept the session (it said {_quote(greeting[0])})")
    talk.send(f"EHLO {_EHLO_NAME}")
    extensions = _smtp_reply(talk, "the answer to EHLO")
    if not extensions[0].startswith("250"):
        raise talk.fail(f"the server refused EHLO (it answered {_quote(extensions[0])})")
    if not any(line[4:].split()[:1] == ["STARTTLS"] for line in (line.upper() for line in extensions)):
        raise talk.fail("the server does not offer STARTTLS")
    talk.send("STARTTLS")
    answer = _smtp_reply(talk, "the answer to STARTTLS")
    if not answer[-1].startswith("220"):
        raise talk.refuses(answer[-1])
    talk.ready()


def _smtp_reply(talk: _Dialogue, waiting_for: str) -> list[str]:
    """The lines of one reply: ``250-…`` continues it, ``250 …`` ends it."""
    lines = [talk.line(waiting_for)]
    while len(lines[-1]) > 3 and lines[-1][3] == "-":
        lines.append(talk.line(waiting_for))
    return lines


def _pop3(talk: _Dialogue) -> None:
    """RFC 2595: +OK greeting, STLS, +OK."""
    greeting = talk.line("the POP3 greeting")
    if not greeting.startswith("+OK"):
        raise talk.fail(f"the server did not greet as POP3 does (it said {_quote(greeting)})")
    talk.send("STLS")
    answer = talk.line("the answer to STLS")
    if not answer.startswith("+OK"):
        raise talk.refuses(answer)
    talk.ready()


_STARTTLS: dict[str, Callable[[_Dialogue], None]] = {"imap": _imap, "smtp": _smtp, "pop3": _pop3}


@functools.cache
def _context() -> ssl.SSLContext:
    """One client context for every probe (safe to share between threads), made on first use."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # What is sent is the question, so nothing is verified: an expired,
    # self-signed or misordered chain must be seen, not refused.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _RawConnection(Protocol):
    """What ``SSLSocket._sslobj`` (an ``_ssl._SSLSocket``) offers before 3.13, as typeshed describes it."""

    def get_unverified_chain(self) -> list[_ssl.Certificate] | None: ...


def _chain_as_sent(tls: ssl.SSLSocket) -> list[bytes]:
    """The DER certificates the peer sent, in its order (leaf first), without verification.

    Python 3.13 made ``get_unverified_chain`` public; 3.10 to 3.12 have the
    same method, undocumented, on the ``_sslobj`` inside every SSLSocket,
    answering ``_ssl.Certificate`` objects (or None before a handshake).
    ``getpeercert`` gives the leaf only, not the chain.
    """
    if sys.version_info >= (3, 13):
        return tls.get_unverified_chain()
    raw: _RawConnection = tls._sslobj  # type: ignore[attr-defined]
    return [cert.public_bytes(_ssl.ENCODING_DER) for cert in raw.get_unverified_chain() or []]


def _close_notify(tls: ssl.SSLSocket) -> None:
    """Say goodbye as TLS asks, without waiting for the server's goodbye.

    A connection dropped without a close_notify is logged by servers as an
    error (Exim: "TLS connection was non-properly terminated"), which a
    probe every renewal must not add to an administrator's logs. Without a
    timeout, the second half of unwrap (reading the server's close_notify)
    stops at once instead of holding a worker.
    """
    with contextlib.suppress(OSError, ValueError):
        tls.settimeout(0.0)
        tls.unwrap()


def _reason(error: ssl.SSLError) -> str:
    """OpenSSL's words for why, without Python's decoration: "[SSL: X] words (_ssl.c:N)"."""
    text = error.strerror or str(error)
    text = text.split("] ", 1)[-1] if text.startswith("[") else text
    return text.split(" (_ssl.c:", 1)[0].strip() or "unknown reason"


def _strerror(error: OSError) -> str:
    return (error.strerror or str(error) or type(error).__name__).lower()


def _quote(answer: str) -> str:
    """A server's line, short enough for a log and an error record."""
    return quoted(answer if len(answer) <= 80 else answer[:77] + "...")
