"""HAProxy's runtime API: new certificates into a running HAProxy, without a reload.

A reload starts new worker processes and lets the old ones drain; through
the stats socket (``level admin``) ``set ssl cert`` + ``commit ssl cert``
swap a certificate inside the running workers instead, and every open
connection carries on. What is swapped is what a reload would have picked
up: each certificate HAProxy loaded from a file whose leaf on disk is no
longer the one it serves.

The socket speaks one command per connection (HAProxy's non-interactive
mode): the command goes out, the answer comes back, HAProxy closes.
Every exchange is bounded by one deadline for the whole update.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from chainwatch.errors import ChainwatchError
from chainwatch.files.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.x509.pem import blocks, decode_body

__all__ = ["Refused", "Unreachable", "Updated", "update_certificates"]

# A certificate file is a key and a chain: far below this. So is an answer.
_MAX_BYTES = 1 << 20
_FINGERPRINT = re.compile(r"^SHA1 FingerPrint: ([0-9A-Fa-f]+)\s*$", re.M)


class Unreachable(ChainwatchError):
    """Nothing answers on the socket: HAProxy is not running (or listens elsewhere)."""


class Refused(ChainwatchError):
    """HAProxy answered, and said no."""


@dataclass(frozen=True)
class Updated:
    replaced: tuple[str, ...]
    """The certificate files swapped in, as HAProxy names them."""
    unchanged: int
    """Certificates whose file holds what HAProxy serves already."""


def update_certificates(socket_path: Path, timeout: float) -> Updated:
    """Swap in every certificate whose file changed since HAProxy loaded it.

    Raises :class:`Unreachable`, :class:`Refused` (with HAProxy's words),
    ``TimeoutError`` when the whole update outlasts ``timeout``, or another
    ``OSError`` (a socket we may not open).
    """
    deadline = time.monotonic() + timeout
    replaced: list[str] = []
    unchanged = 0
    for name in _loaded(socket_path, deadline):
        pem = _file_pem(name)
        leaf = _leaf_sha1(pem) if pem is not None else None
        if pem is None or leaf is None:
            continue
        served = _FINGERPRINT.search(_ask(socket_path, f"show ssl cert {name}\n".encode(), deadline))
        if served and served.group(1).upper() == leaf:
            unchanged += 1
            continue
        _replace(socket_path, name, pem, deadline)
        replaced.append(name)
    return Updated(tuple(replaced), unchanged)


def _loaded(socket_path: Path, deadline: float) -> list[str]:
    """The certificate files HAProxy serves, as ``show ssl cert`` lists them."""
    reply = _ask(socket_path, b"show ssl cert\n", deadline)
    if not reply.startswith("#"):
        # "Permission denied" and the like: the socket lacks "level admin".
        raise Refused(f"show ssl cert: {_first(reply)}")
    names: list[str] = []
    for line in reply.splitlines():
        # "*NAME" is a transaction someone left open on NAME: NAME is listed too.
        name = line.strip().lstrip("*")
        if name and not line.startswith("#") and name not in names:
            names.append(name)
    return names


def _file_pem(name: str) -> bytes | None:
    """What a reload would read for ``name``; None for what it names that we cannot judge.

    A relative name is relative to HAProxy's own directory, unknown here; a
    name with blanks cannot be given back to the command line unquoted.
    """
    if not name.startswith("/") or any(c.isspace() for c in name):
        return None
    try:
        return read_regular(name, _MAX_BYTES)
    except (OSError, NotRegularFile, TooLarge):
        return None


def _leaf_sha1(pem: bytes) -> str | None:
    """The SHA-1 fingerprint HAProxy shows, of the file's first certificate (the key may come first)."""
    for label, body in blocks(pem):
        if label == "CERTIFICATE":
            try:
                return hashlib.sha1(decode_body(body), usedforsecurity=False).hexdigest().upper()
            except ValueError:
                return None
    return None


def _replace(socket_path: Path, name: str, pem: bytes, deadline: float) -> None:
    # The payload ends at the first empty line, so it must hold none.
    payload = b"".join(line + b"\n" for line in pem.splitlines() if line.strip())
    answer = _ask(socket_path, f"set ssl cert {name} <<\n".encode() + payload + b"\n", deadline)
    if "Transaction created" not in answer and "Transaction updated" not in answer:
        raise Refused(f"set ssl cert {name}: {_first(answer)}")
    answer = _ask(socket_path, f"commit ssl cert {name}\n".encode(), deadline)
    if "Success!" not in answer:
        # Leave no transaction open: the next attempt must start from what is served.
        _ask(socket_path, f"abort ssl cert {name}\n".encode(), deadline)
        raise Refused(f"commit ssl cert {name}: {_first(answer)}")


def _ask(socket_path: Path, command: bytes, deadline: float) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(_remaining(deadline))
        try:
            connection.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise Unreachable(f"{socket_path}: {error.strerror}") from None
        connection.sendall(command)
        answer = bytearray()
        while True:
            connection.settimeout(_remaining(deadline))
            chunk = connection.recv(65536)
            if not chunk:
                return answer.decode(errors="replace")
            answer += chunk
            if len(answer) > _MAX_BYTES:
                raise Refused(f"{command.split(b' <<')[0].decode(errors='replace').strip()}: answer too large")


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _first(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no answer"
