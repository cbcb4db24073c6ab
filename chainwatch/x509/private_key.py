"""Read a private key only to learn which certificate it belongs to.

A key file must hold one private key block and nothing else: a TLS server
reading ``privkey.pem`` takes the first private key it finds, and one
reading ``key+fullchain.pem`` (the key file followed by the chain) takes the
first certificate it finds, so any other block would make it serve
something else than what was judged. The block that was read is published
re-encoded, alone: what consumers load is exactly what was validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chainwatch.errors import InputError
from chainwatch.x509 import der, pem

__all__ = ["Key", "public_key_from_pem", "public_key_of", "read_key"]

_MAX_KEY_BYTES = 1 << 20
_SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
_POINT = serialization.PublicFormat.UncompressedPoint
_RSA_OID = bytes.fromhex("2a864886f70d010101")  # rsaEncryption
_EC_OID = bytes.fromhex("2a8648ce3d0201")  # id-ecPublicKey
_CURVES: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("2a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("2b81040022"): ec.SECP384R1(),
    bytes.fromhex("2b81040023"): ec.SECP521R1(),
}
# A refusal lists the blocks it found; a file of thousands needs no more than a few.
_LISTED_BLOCKS = 4


@dataclass(frozen=True)
class Key:
    """A key file's one private key."""

    pem: bytes
    """The key block alone, re-encoded: what is published as privkey.pem."""
    spki: bytes
    """Its public half, DER SubjectPublicKeyInfo: which certificate it belongs to."""


def read_key(data: bytes, source: str) -> Key:
    """The one private key of a key file's content ``data``.

    Raises :class:`InputError` naming ``source``, never quoting the key,
    for anything but exactly one readable, unencrypted, whole private key
    block: another block of any label, or a ``-----BEGIN`` line that opens
    no block this reader pairs, is refused rather than guessed at. The one
    exception is what ``openssl ecparam -genkey`` (so dehydrated) writes: an
    ``EC PARAMETERS`` block naming the curve of the EC key that follows it.
    """
    if len(data) > _MAX_KEY_BYTES or not data.strip():
        raise InputError(f"{source}: is not a PEM private key")
    found = pem.blocks(data)
    paired = len(found)
    if _curve_then_key(found):
        found = found[1:]  # the curve is the key's own: not published, nobody reads it instead
    if len(found) > 1:
        listed = ", ".join(f"{number}: {label}" for number, (label, _) in enumerate(found[:_LISTED_BLOCKS], 1))
        more = ", ..." if len(found) > _LISTED_BLOCKS else ""
        raise InputError(
            f"{source}: holds {len(found)} PEM blocks ({listed}{more}); "
            "a key file must hold one private key and nothing else"
        )
    if data.count(b"-----BEGIN") != paired:
        raise InputError(
            f"{source}: a -----BEGIN line opens no PEM block chainwatch reads; "
            "a key file must hold one private key and nothing else"
        )
    if not found:
        raise InputError(f"{source}: is not a PEM private key")
    label, body = found[0]
    if not label.endswith("PRIVATE KEY"):
        raise InputError(f"{source}: holds a {label} block, not a private key")
    try:
        encoded = pem.decode_body(body)
    except ValueError:
        # PEM headers (a legacy encrypted key) or bad base64: cryptography
        # reads the block as it is, for its message.
        marker = label.encode("ascii")
        _load(b"-----BEGIN " + marker + b"-----" + body + b"-----END " + marker + b"-----\n", source)
        raise InputError(f"{source}: the private key block has PEM headers or is not valid base64") from None
    text = pem.encode_block(label, encoded)
    try:
        spki = _public_key_without_loading(label, encoded)
    except _Damaged:
        raise InputError(f"{source}: the private key is damaged (its numbers do not agree)") from None
    return Key(pem=text, spki=spki if spki is not None else _load(text, source))


def _curve_then_key(found: list[tuple[str, bytes]]) -> bool:
    """Is ``found`` an EC key's named curve, then that EC key (SEC1, naming the same curve)?"""
    if [label for label, _ in found] != ["EC PARAMETERS", "EC PRIVATE KEY"]:
        return False
    try:
        curve = der.tagged(pem.decode_body(found[0][1]))
        fields = dict(der.tagged(der.value(pem.decode_body(found[1][1]), 0x30))[2:])
        return len(curve) == 1 and curve[0][0] == 0x06 and der.tagged(fields[0xA0]) == curve
    except (ValueError, KeyError):
        return False


def public_key_from_pem(data: bytes, source: str) -> bytes:
    """The DER SubjectPublicKeyInfo of a key file's one private key (:func:`read_key`)."""
    return read_key(data, source).spki


def public_key_of(path: Path) -> bytes:
    """The DER SubjectPublicKeyInfo of the PEM private key at ``path``."""
    return public_key_from_pem(pem.read_input(path, _MAX_KEY_BYTES, "private key file"), str(path))


def _load(text: bytes, source: str) -> bytes:
    """The public half of the one key block ``text``, through cryptography."""
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:
        raise InputError(f"{source}: the private key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{source}: is not a readable PEM private key") from None
    return key.public_key().public_bytes(*_SPKI)


class _Damaged(Exception):
    """A well-formed key whose numbers contradict each other.

    A plain Exception: it never leaves this module (it becomes an :class:`InputError`
    naming the file), so one that escapes is a bug and must show its traceback."""


def _public_key_without_loading(label: str, encoded: bytes) -> bytes | None:
    """The public half of an unencrypted RSA or NIST-curve key, read directly; else None.

    Loading a private key through cryptography costs far more than using it:
    it tests RSA primes (~50 ms for 2048 bits, ~400 ms for 4096, on
    cryptography 38 and 50 alike, and 38 cannot skip it) and, on Debian 12's
    OpenSSL 3.0, its decoder takes ~1.2 ms for any key. That dominated every
    renewal and a first publication of many lineages. What matters here is
    whose key it is and that it is whole, which the key's own numbers show
    in well under a millisecond (and unlike Debian 12's cryptography, which
    loads an EC key whose scalar no longer matches its stored point, this
    notices the damage: :class:`_Damaged`). Anything unusual (another key
    type, an encrypted or odd encoding) returns None and goes through
    cryptography, which also gives the error message.
    """
    try:
        if label == "RSA PRIVATE KEY":
            return _rsa(der.tagged(der.value(encoded, 0x30)))
        if label == "EC PRIVATE KEY":
            return _ec(der.tagged(der.value(encoded, 0x30)), None)
        if label != "PRIVATE KEY":
            return None
        # PKCS#8: the algorithm says what the wrapped key is.
        version, algorithm, key = der.tagged(der.value(encoded, 0x30))[:3]
        if version != (0x02, b"\x00") or key[0] != 0x04:
            return None
        identifier = der.tagged(algorithm[1])
        if identifier[0] == (0x06, _RSA_OID):
            return _rsa(der.tagged(der.value(key[1], 0x30)))
        if identifier[0] == (0x06, _EC_OID) and len(identifier) == 2 and identifier[1][0] == 0x06:
            return _ec(der.tagged(der.value(key[1], 0x30)), identifier[1][1])
    except (ValueError, IndexError):
        return None
    return None


def _rsa(fields: list[tuple[int, bytes]]) -> bytes | None:
    # RSAPrivateKey (RFC 8017): version 0, n, e, d, p, q, d mod p-1, d mod q-1, q^-1 mod p.
    if len(fields) != 9 or any(tag != 0x02 for tag, _ in fields) or fields[0][1] != b"\x00":
        return None
    n, e, d, p, q, dp, dq, qinv = (int.from_bytes(v, "big", signed=True) for _, v in fields[1:])
    if min(n, e, d, p, q, dp, dq, qinv) <= 0 or e % 2 == 0 or p == 1 or q == 1:
        return None
    # The key is whole when its numbers agree; TLS signing uses the CRT values.
    if p * q != n or d * e % (p - 1) != 1 or d * e % (q - 1) != 1:
        raise _Damaged
    if dp != d % (p - 1) or dq != d % (q - 1) or qinv * q % p != 1:
        raise _Damaged
    return rsa.RSAPublicNumbers(e, n).public_key().public_bytes(*_SPKI)


def _ec(fields: list[tuple[int, bytes]], curve_oid: bytes | None) -> bytes | None:
    # ECPrivateKey (RFC 5915): version 1, the scalar, [0] curve, [1] public point.
    if len(fields) < 2 or fields[0] != (0x02, b"\x01") or fields[1][0] != 0x04:
        return None
    extras = dict(fields[2:])
    if len(extras) != len(fields) - 2 or not set(extras) <= {0xA0, 0xA1}:
        return None  # not the layout RFC 5915 allows: cryptography judges it
    if 0xA0 in extras:
        tag, oid = der.tagged(extras[0xA0])[0]
        if tag != 0x06 or (curve_oid is not None and oid != curve_oid):
            return None
        curve_oid = oid
    curve = _CURVES.get(curve_oid or b"")
    if curve is None or len(fields[1][1]) != (curve.key_size + 7) // 8:
        return None  # the scalar is stored at exactly the curve's size
    # Deriving the point from the scalar is the check: a damaged scalar gives
    # another point than the one stored beside it (and than the certificate's).
    public = ec.derive_private_key(int.from_bytes(fields[1][1], "big"), curve).public_key()
    if 0xA1 in extras:
        tag, bits = der.tagged(extras[0xA1])[0]
        stored = bits[1:]
        form = serialization.PublicFormat.CompressedPoint if stored[:1] in (b"\x02", b"\x03") else _POINT
        if tag != 0x03:
            return None
        if stored != public.public_bytes(serialization.Encoding.X962, form):
            raise _Damaged
    return public.public_bytes(*_SPKI)
