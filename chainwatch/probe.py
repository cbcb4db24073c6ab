"""What does a server send right now? Ask it, the way a mail client does.

The handshake is made by the real ``openssl s_client`` (Python's ssl module
before 3.13 cannot show the peer's chain), with IMAP and SMTP STARTTLS
spoken properly by it; every attempt is bounded by a timeout.
"""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from dataclasses import dataclass

from chainwatch.certificate import Cert
from chainwatch.errors import ChainwatchError, InputError
from chainwatch.pem import parse_certificates

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
    """The certificates ``endpoint`` sends for SNI ``server_name``, in the order sent."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    command = ["openssl", "s_client", "-connect", f"{host}:{endpoint.port}", "-showcerts"]
    command += ["-servername", server_name] if server_name else ["-noservername"]
    if endpoint.starttls:
        command += ["-starttls", endpoint.starttls]
        if endpoint.starttls == "smtp":
            command += ["-name", "chainwatch.invalid"]
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{endpoint}: no TLS handshake within {timeout:g} s") from None
    output = result.stdout
    if b"-----BEGIN CERTIFICATE-----" not in output:
        raise ProbeError(f"{endpoint}: {_why(result.stderr.decode(errors='replace'), endpoint)}")
    try:
        return parse_certificates(output, str(endpoint))
    except InputError as error:
        raise ProbeError(str(error)) from None


def _why(stderr: str, endpoint: Endpoint) -> str:
    if "Connection refused" in stderr or "errno=111" in stderr:
        return "connection refused"
    if "STARTTLS" in stderr or "didn't find starttls" in stderr.lower():
        return "the server does not offer STARTTLS"
    for line in stderr.splitlines():
        match = re.search(r"error:[0-9A-F]+:[^:]*:[^:]*:(.*)", line)
        if match:
            return f"TLS handshake failed ({match.group(1).strip()})"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"no certificate received ({lines[-1] if lines else 'the connection closed'})"
