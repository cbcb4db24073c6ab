"""Read certificates from PEM text as servers and CAs really write it.

Tolerates CRLF, blank lines and text between blocks (``openssl x509 -text``
output); refuses, with a one-line reason, anything that would make a chain
file mean something else than a list of certificates.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from chainwatch.errors import InputError
from chainwatch.files.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.x509.certificate import Cert

__all__ = [
    "MAX_CHAIN_BYTES",
    "MAX_CHAIN_CERTS",
    "blocks",
    "decode_body",
    "encode_block",
    "parse_certificates",
    "read_bundle",
    "read_chain",
    "read_input",
]

# A served chain is a handful of certificates; these bounds keep a hostile or
# mistaken file (a whole CA bundle, a log) from costing more than a moment.
MAX_CHAIN_BYTES = 1 << 20
MAX_CHAIN_CERTS = 64
# Trust bundles are larger (Debian's has ~150 roots) but still bounded.
MAX_BUNDLE_BYTES = 16 << 20

# Markers are found in one pass and paired in order: a back-referencing
# regex that searches for each BEGIN's END rescans the rest of the file per
# BEGIN line, which made a file of BEGIN lines cost minutes.
_MARKER = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 #]{1,64})-----")
_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 #]{1,64}-----")
_PKCS7_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")


def parse_certificates(
    data: bytes, source: str, *, max_certs: int | None = MAX_CHAIN_CERTS, deferred: bool = False
) -> list[Cert]:
    """Every certificate in ``data``, in file order.

    ``source`` names the input in error messages. Raises :class:`InputError`
    (and nothing else) for anything that is not a usable PEM certificate list.
    ``deferred``: the full parse of each certificate waits until it is needed
    (:meth:`Cert.deferred`), for trust bundles.
    """
    if not data.strip():
        raise InputError(f"{source}: file is empty")
    if b"-----BEGIN" not in data:
        raise InputError(f"{source}: {_describe_binary(data, source)}")
    found = blocks(data)
    if len(found) != len(_BEGIN.findall(data)):
        raise InputError(f"{source}: a -----BEGIN line has no matching -----END line")
    certificates: list[Cert] = []
    for label, body in found:
        if "PRIVATE KEY" in label:
            raise InputError(
                f"{source}: contains a private key; a chain file must hold certificates only "
                "(the key was not read or printed)"
            )
        if label in ("PKCS7", "CMS"):
            raise InputError(
                f"{source}: is a PKCS#7 bundle; convert it with "
                f"'openssl pkcs7 -print_certs -in {source} -out chain.pem'"
            )
        if label != "CERTIFICATE":
            continue  # DH parameters, CRLs and the like are not ours to judge
        number = len(certificates) + 1
        if max_certs is not None and number > max_certs:
            raise InputError(f"{source}: more than {max_certs} certificates; this is not a served chain")
        certificates.append(_decode_block(body, source, number, deferred))
    if not certificates:
        raise InputError(f"{source}: contains no certificate (no -----BEGIN CERTIFICATE----- block)")
    return certificates


def blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Every ``-----BEGIN X-----`` … ``-----END X-----`` block as (label, body), in file order."""
    found: list[tuple[str, bytes]] = []
    opened: tuple[bytes, int] | None = None
    for marker in _MARKER.finditer(data):
        kind, label = marker.group(1), marker.group(2)
        if kind == b"BEGIN":
            opened = (label, marker.end())  # an earlier BEGIN left open stays unmatched
        elif opened is not None and opened[0] == label:
            found.append((label.decode("ascii"), data[opened[1] : marker.start()]))
            opened = None
    return found


def decode_body(body: bytes) -> bytes:
    """The bytes a block's body encodes; ``ValueError`` for PEM headers (encryption) or bad base64."""
    if b":" in body:
        raise ValueError("the block has PEM headers")
    return base64.b64decode(b"".join(body.split()), validate=True)  # binascii.Error is a ValueError


def encode_block(label: str, encoded: bytes) -> bytes:
    """``encoded`` as one PEM block, as OpenSSL writes it: 64 base64 characters a line."""
    text = base64.b64encode(encoded)
    lines = b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))
    marker = label.encode("ascii")
    return b"-----BEGIN " + marker + b"-----\n" + lines + b"-----END " + marker + b"-----\n"


def _decode_block(body: bytes, source: str, number: int, deferred: bool) -> Cert:
    if b":" in body:
        raise InputError(f"{source}: certificate {number} has PEM headers (encrypted or not a certificate)")
    try:
        der = decode_body(body)
    except ValueError:
        raise InputError(f"{source}: certificate {number} is not valid base64") from None
    try:
        return Cert.deferred(der) if deferred else Cert.from_der(der)
    except ValueError as error:
        reason = str(error).splitlines()[0] if str(error) else "unparsable"
        raise InputError(f"{source}: certificate {number} is not valid DER X.509 ({reason})") from None


def _describe_binary(data: bytes, source: str) -> str:
    if data[:1] == b"\x30":
        if _PKCS7_SIGNED_DATA_OID in data[:64]:
            return (
                "is a DER PKCS#7 bundle, not PEM; convert it with "
                f"'openssl pkcs7 -inform der -print_certs -in {source} -out chain.pem'"
            )
        return f"is DER, not PEM; convert it with 'openssl x509 -inform der -in {source} -out cert.pem'"
    return "contains no certificate (no -----BEGIN CERTIFICATE----- block)"


def read_input(path: Path, limit: int, what: str = "certificate file") -> bytes:
    """A file given to us, bounded; every failure is an :class:`InputError` naming ``path``."""
    try:
        return read_regular(path, limit)
    except NotRegularFile as error:
        raise InputError(str(error)) from None
    except TooLarge:
        raise InputError(f"{path}: larger than {limit >> 20} MiB; this is not a {what}") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def read_chain(path: Path) -> list[Cert]:
    """The certificates of a served chain file (at most 64, at most 1 MiB)."""
    return parse_certificates(read_input(path, MAX_CHAIN_BYTES), str(path))


def read_bundle(path: Path) -> list[Cert]:
    """The certificates of a trust bundle such as ``ca-certificates.crt``, each parsed when first needed."""
    return parse_certificates(read_input(path, MAX_BUNDLE_BYTES), str(path), max_certs=None, deferred=True)
