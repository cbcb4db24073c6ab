"""Private keys are read only to learn their public half, and damaged ones are refused."""

from __future__ import annotations

import base64
import subprocess
from functools import cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chainwatch.errors import InputError
from chainwatch.x509 import der
from chainwatch.x509.private_key import public_key_from_pem, read_key
from tests.pki import new_key

SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
PKCS8 = serialization.PrivateFormat.PKCS8
PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL
FIELDS = ["n", "e", "d", "p", "q", "dp", "dq", "qinv"]


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    key = new_key("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_numbers() -> dict[str, int]:
    """The test key's numbers, in RSAPrivateKey order (RFC 8017)."""
    numbers = rsa_key().private_numbers()
    public = numbers.public_numbers
    values = (public.n, public.e, numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp)
    return dict(zip(FIELDS, values, strict=True))


def private_pem(key: object, layout: serialization.PrivateFormat = PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, layout, serialization.NoEncryption())  # type: ignore[attr-defined, no-any-return]


def _integer(number: int) -> bytes:
    body = number.to_bytes(number.bit_length() // 8 + 1, "big", signed=True)
    return _element(0x02, body)


def _element(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    count = (size.bit_length() + 7) // 8
    length = bytes([0x80 | count]) + size.to_bytes(count, "big")
    return bytes([tag]) + length + body


def pkcs1_with(**changed: int) -> bytes:
    """The test key as PKCS#1 PEM with some of its numbers replaced."""
    values = {**rsa_numbers(), **changed}
    body = _element(0x30, _integer(0) + b"".join(_integer(values[f]) for f in FIELDS))
    lines = base64.encodebytes(body).replace(b"\n", b"")
    wrapped = b"\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
    return b"-----BEGIN RSA PRIVATE KEY-----\n" + wrapped + b"\n-----END RSA PRIVATE KEY-----\n"


@pytest.mark.parametrize("layout", [PKCS8, PKCS1], ids=["pkcs8", "pkcs1"])
def test_rsa_key_gives_the_public_key_cryptography_derives(layout: serialization.PrivateFormat) -> None:
    key = rsa_key()
    assert public_key_from_pem(private_pem(key, layout), "privkey.pem") == key.public_key().public_bytes(*SPKI)


def test_rebuilt_pkcs1_key_is_the_same_key() -> None:
    # The helper below is trusted only because it reproduces cryptography's encoding.
    assert pkcs1_with() == private_pem(rsa_key(), PKCS1)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
@pytest.mark.parametrize("layout", [PKCS8, PKCS1], ids=["pkcs8", "sec1"])
def test_ec_key_gives_the_public_key_cryptography_derives(
    curve: ec.EllipticCurve, layout: serialization.PrivateFormat
) -> None:
    key = ec.generate_private_key(curve)
    assert public_key_from_pem(private_pem(key, layout), "privkey.pem") == key.public_key().public_bytes(*SPKI)


def test_ec_key_whose_scalar_no_longer_matches_its_point_is_refused() -> None:
    # Debian 12's cryptography 38 loads such a key and reports the stored point,
    # so a corrupted key would pass for the certificate's.
    encoded = bytearray(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER, PKCS1, serialization.NoEncryption()
        )
    )
    encoded[7 + 5] ^= 1  # SEC1: 30 77 02 01 01 04 20, then the scalar
    body = base64.encodebytes(bytes(encoded))
    damaged = b"-----BEGIN EC PRIVATE KEY-----\n" + body + b"-----END EC PRIVATE KEY-----\n"
    with pytest.raises(InputError, match="privkey.pem: the private key is damaged"):
        public_key_from_pem(damaged, "privkey.pem")


def test_ec_key_whose_scalar_length_was_changed_is_not_read_as_another_key() -> None:
    # Found by the property below: 0x20 -> 0x22 made the scalar swallow the
    # next field's header, so the stored point went unseen and unchecked.
    encoded = bytearray(ec_key().private_bytes(serialization.Encoding.DER, PKCS8, serialization.NoEncryption()))
    assert encoded[34:36] == b"\x04\x20"  # PKCS#8 P-256: the scalar's OCTET STRING header
    encoded[35] = 0x22
    body = base64.encodebytes(bytes(encoded))
    with pytest.raises(InputError, match=r"^privkey\.pem: "):
        public_key_from_pem(b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n", "privkey.pem")


def test_ed25519_key_gives_the_public_key_cryptography_derives() -> None:
    key = new_key("ed25519")
    assert public_key_from_pem(private_pem(key), "privkey.pem") == key.public_key().public_bytes(*SPKI)


@pytest.mark.parametrize("field", FIELDS)
def test_rsa_key_with_one_damaged_number_is_refused(field: str) -> None:
    original = rsa_numbers()[field]
    with pytest.raises(InputError, match=r"^privkey\.pem: the private key is damaged \(its numbers do not agree\)$"):
        public_key_from_pem(pkcs1_with(**{field: original + 2}), "privkey.pem")


@pytest.mark.parametrize("layout", [PKCS8, PKCS1], ids=["pkcs8", "traditional"])
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_encrypted_key_is_refused_as_encrypted(kind: str, layout: serialization.PrivateFormat) -> None:
    key = rsa_key() if kind == "rsa" else new_key("ec")
    encrypted = key.private_bytes(serialization.Encoding.PEM, layout, serialization.BestAvailableEncryption(b"secret"))
    with pytest.raises(InputError, match="the private key is encrypted"):
        public_key_from_pem(encrypted, "privkey.pem")


def test_pkcs1_rsa_key_is_a_version_and_eight_integers_as_the_reader_expects() -> None:
    # Guards the layout the fast reader relies on: version 0 and eight integers.
    body = der.value(base64.b64decode(b"".join(private_pem(rsa_key(), PKCS1).splitlines()[1:-1])), 0x30)
    assert [tag for tag, _ in der.tagged(body)] == [0x02] * 9


def read_with_one_byte_changed(kind: str, position: int, flip: int) -> str | None:
    """What reading the test key with one byte changed gives, when it is wrong; None when right.

    Right is the key's own public half, or a one-line error naming the file:
    bytes that change nothing the key is made of (a length's, an unused
    field's) may still read as the same key, never as another.
    """
    key = rsa_key() if kind == "rsa" else ec_key()
    layout = PKCS1 if kind == "ec-sec1" else PKCS8
    encoded = bytearray(key.private_bytes(serialization.Encoding.DER, layout, serialization.NoEncryption()))
    encoded[position] ^= flip
    label = b"EC PRIVATE KEY" if kind == "ec-sec1" else b"PRIVATE KEY"
    text = b"-----BEGIN " + label + b"-----\n" + base64.encodebytes(bytes(encoded)) + b"-----END " + label + b"-----\n"
    try:
        spki = public_key_from_pem(text, "privkey.pem")
    except InputError as error:
        one_line = str(error).startswith("privkey.pem: ") and "\n" not in str(error)
        return None if one_line else f"{kind} byte {position} ^ {flip}: error {error!r}"
    if spki != key.public_key().public_bytes(*SPKI):
        return f"{kind} byte {position} ^ {flip}: read as another key"
    return None


@pytest.mark.parametrize("kind", ["rsa", "ec-pkcs8", "ec-sec1"])
def test_a_key_with_any_byte_changed_reads_as_itself_or_fails_in_one_line(kind: str) -> None:
    # Every byte with five flips, not a sample: a sampled run once missed the
    # one EC byte that mattered. About 2 s for the RSA key, well under 1 s for EC.
    key = rsa_key() if kind == "rsa" else ec_key()
    layout = PKCS1 if kind == "ec-sec1" else PKCS8
    size = len(key.private_bytes(serialization.Encoding.DER, layout, serialization.NoEncryption()))
    flips = (0x01, 0x02, 0x20, 0x80, 0xFF)
    wrong = [read_with_one_byte_changed(kind, position, flip) for position in range(size) for flip in flips]
    assert [w for w in wrong if w] == []


# What a TLS server reads besides the key: OpenSSL takes the first private key
# block of privkey.pem, and the first certificate of key+fullchain.pem, which
# is privkey.pem's content followed by the chain.
OTHER_BLOCKS = {
    "a DSA key": b"-----BEGIN DSA PRIVATE KEY-----\nMAMCAQA=\n-----END DSA PRIVATE KEY-----\n",
    "a second key": None,  # another real key: filled in by the test
    "a certificate": b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
    "EC parameters": b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n",
    "an unknown label": b"-----BEGIN SOMETHING ELSE-----\nMAMCAQA=\n-----END SOMETHING ELSE-----\n",
}
LABELS = {
    "a DSA key": "DSA PRIVATE KEY",
    "a second key": "PRIVATE KEY",
    "a certificate": "CERTIFICATE",
    "EC parameters": "EC PARAMETERS",
    "an unknown label": "SOMETHING ELSE",
}


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("other", list(OTHER_BLOCKS))
def test_a_key_file_with_any_other_pem_block_is_refused_naming_the_file_and_each_block(other: str, where: str) -> None:
    key = private_pem(ec_key())
    extra = OTHER_BLOCKS[other] or private_pem(new_key())
    data = extra + key if where == "before" else key + extra
    blocks = ["PRIVATE KEY", LABELS[other]] if where == "after" else [LABELS[other], "PRIVATE KEY"]
    expected = f"privkey.pem: holds 2 PEM blocks (1: {blocks[0]}, 2: {blocks[1]}); a key file must hold one private key"
    with pytest.raises(InputError) as refused:
        public_key_from_pem(data, "privkey.pem")
    assert str(refused.value).startswith(expected)
    assert "\n" not in str(refused.value)


def test_a_begin_line_chainwatch_cannot_pair_is_refused_in_a_key_file() -> None:
    # A lower-case label is no block to chainwatch's reader; another reader may
    # still take it for one: the file is refused rather than guessed at.
    hidden = b"-----BEGIN x509 certificate-----\nMAMCAQA=\n-----END x509 certificate-----\n"
    with pytest.raises(InputError, match=r"^privkey\.pem: a -----BEGIN line opens no PEM block chainwatch reads; "):
        public_key_from_pem(private_pem(ec_key()) + hidden, "privkey.pem")


def test_a_file_holding_only_a_certificate_is_refused_as_no_private_key() -> None:
    with pytest.raises(InputError, match=r"^privkey\.pem: holds a CERTIFICATE block, not a private key$"):
        public_key_from_pem(OTHER_BLOCKS["a certificate"] or b"", "privkey.pem")


@pytest.mark.parametrize("kind", ["rsa-pkcs1", "ec-pkcs8", "ed25519"])
def test_the_key_kept_for_publication_is_its_block_alone_reencoded(kind: str) -> None:
    # What is published is what was read: text around the block is dropped and
    # line endings are made plain, so no other reader can find anything else.
    key = rsa_key() if kind == "rsa-pkcs1" else ec_key() if kind == "ec-pkcs8" else new_key("ed25519")
    clean = private_pem(key, PKCS1 if kind == "rsa-pkcs1" else PKCS8)
    messy = b"Key made by hand\r\n" + clean.replace(b"\n", b"\r\n") + b"\r\nsee the runbook\r\n"
    read = read_key(messy, "privkey.pem")
    assert read.pem == clean
    assert read.spki == key.public_key().public_bytes(*SPKI)


def openssl_ecparam_genkey(curve: str) -> bytes:
    command = ["openssl", "ecparam", "-genkey", "-name", curve]
    return subprocess.run(command, capture_output=True, check=True).stdout


def test_the_curve_openssl_ecparam_writes_before_its_ec_key_is_accepted_and_not_published() -> None:
    # dehydrated makes its EC keys so: the curve, then the key naming that same curve.
    data = openssl_ecparam_genkey("prime256v1")
    assert data.startswith(b"-----BEGIN EC PARAMETERS-----\n")
    key = serialization.load_pem_private_key(data, password=None)
    read = read_key(data, "privkey.pem")
    assert read.spki == key.public_key().public_bytes(*SPKI)
    assert read.pem == data[data.index(b"-----BEGIN EC PRIVATE KEY-----") :]


def test_a_curve_before_an_ec_key_of_another_curve_is_refused() -> None:
    curve = openssl_ecparam_genkey("secp384r1")
    curve = curve[: curve.index(b"-----BEGIN EC PRIVATE KEY-----")]
    key = openssl_ecparam_genkey("prime256v1")
    key = key[key.index(b"-----BEGIN EC PRIVATE KEY-----") :]
    with pytest.raises(InputError, match=r"^privkey\.pem: holds 2 PEM blocks \(1: EC PARAMETERS, 2: EC PRIVATE KEY\)"):
        read_key(curve + key, "privkey.pem")
