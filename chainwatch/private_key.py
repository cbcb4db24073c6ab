"""Read a private key only to learn which certificate it belongs to."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chainwatch import der
from chainwatch.errors import InputError

__all__ = ["public_key_from_pem", "public_key_of"]

_MAX_KEY_BYTES = 1 << 20
_SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
_PEM_KEY = re.compile(rb"-----BEGIN (RSA )?PRIVATE KEY-----\r?\n(.*?)-----END \1?PRIVATE KEY-----", re.DOTALL)
_RSA_ALGORITHM = bytes.fromhex("06092a864886f70d010101")  # OID rsaEncryption


def public_key_from_pem(data: bytes, source: str) -> bytes:
    """The DER SubjectPublicKeyInfo of a PEM private key.

    Errors name ``source`` and never include the key's content.
    """
    if len(data) > _MAX_KEY_BYTES or not data.strip():
        raise InputError(f"{source}: is not a PEM private key")
    spki = _rsa_public_key(data)
    if spki is not None:
        return spki
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(f"{source}: the private key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{source}: is not a readable PEM private key") from None
    return key.public_key().public_bytes(*_SPKI)


def public_key_of(path: Path) -> bytes:
    """The DER SubjectPublicKeyInfo of the PEM private key at ``path``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    return public_key_from_pem(data, str(path))


def _rsa_public_key(data: bytes) -> bytes | None:
    """The public half of a plain two-prime RSA key whose parts agree, else None.

    cryptography loads an RSA private key only after testing its primes,
    ~50 ms for 2048 bits and ~400 ms for 4096 (cryptography 38 and 50 alike,
    and 38 has no way to skip it): that would dominate every renewal. What
    matters here is that the key belongs to the certificate and is not damaged,
    which integer identities show in microseconds: n = pq, d inverts e modulo
    p-1 and q-1, and the CRT values TLS signing uses follow from d, p and q.
    Anything else (another key type, an encrypted or unusual encoding, a
    failed identity) returns None and goes through cryptography, which gives
    the error message.
    """
    blocks = _PEM_KEY.findall(data)
    if len(blocks) != 1 or b":" in blocks[0][1]:
        return None
    try:
        encoded = base64.b64decode(b"".join(blocks[0][1].split()), validate=True)
        if not blocks[0][0]:  # PKCS#8: unwrap to the RSAPrivateKey inside
            version, algorithm, key = der.tagged(der.value(encoded, 0x30))[:3]
            if version != (0x02, b"\x00") or not algorithm[1].startswith(_RSA_ALGORITHM) or key[0] != 0x04:
                return None
            encoded = key[1]
        fields = der.tagged(der.value(encoded, 0x30))
    except (binascii.Error, ValueError, IndexError):
        return None
    if len(fields) != 9 or any(tag != 0x02 for tag, _ in fields) or fields[0][1] != b"\x00":
        return None
    n, e, d, p, q, dp, dq, qinv = (int.from_bytes(v, "big", signed=True) for _, v in fields[1:])
    if min(n, e, d, p, q, dp, dq, qinv) <= 0 or e % 2 == 0 or p == 1 or q == 1:
        return None
    if p * q != n or d * e % (p - 1) != 1 or d * e % (q - 1) != 1:
        return None
    if dp != d % (p - 1) or dq != d % (q - 1) or qinv * q % p != 1:
        return None
    return rsa.RSAPublicNumbers(e, n).public_key().public_bytes(*_SPKI)
