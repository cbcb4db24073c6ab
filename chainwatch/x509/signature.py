"""Does one certificate's key verify another's signature?

Written against cryptography's public-key primitives rather than
``Certificate.verify_directly_issued_by`` (40+) or the verifier (42+), so the
same code runs on Debian 12's python3-cryptography 38.0.4.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from chainwatch.x509 import der
from chainwatch.x509.certificate import Cert, load_public_key

__all__ = ["signed_by", "verifies"]

# MD5 and SHA-1 collisions are practical; SHA-1 is still found on links from
# legacy roots that clients accept, MD5 nowhere that matters.
_BROKEN_HASHES = (hashes.MD5,)


def signed_by(child: Cert, issuer: Cert) -> bool:
    """True when ``issuer``'s public key verifies ``child``'s signature.

    SHA-1 is accepted only when the issuer is a self-named root (the legacy
    roots that still sign that way); anything malformed or unsupported is
    simply "no link".
    """
    verified, sha1 = verifies(child, issuer.public_key_der)
    return verified and (not sha1 or issuer.names_itself)


@lru_cache(maxsize=1024)
def verifies(child: Cert, spki: bytes) -> tuple[bool, bool]:
    """Does the key (a DER SubjectPublicKeyInfo) verify ``child``'s signature, and is it a SHA-1 one?

    Asked of the issuer's key rather than its certificate, and remembered:
    every lineage below the same intermediate asks the same questions about
    the intermediate and its cross-signs, and a cross-sign and the root it
    stands for carry one key (R3 below ISRG Root X1 is checked once, not
    once for each of its two certificates, one self-named and one not).
    """
    certificate = child.x509
    key = load_public_key(spki)
    hash_algorithm: hashes.HashAlgorithm | None
    try:
        if certificate.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
            hash_algorithm, rsa_padding = _pss(child.der)
        else:
            hash_algorithm, rsa_padding = certificate.signature_hash_algorithm, padding.PKCS1v15()
    except (UnsupportedAlgorithm, ValueError):
        return False, False
    if isinstance(hash_algorithm, _BROKEN_HASHES):
        return False, False
    sha1 = isinstance(hash_algorithm, hashes.SHA1)
    signature = certificate.signature
    data = certificate.tbs_certificate_bytes
    try:
        if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        elif hash_algorithm is None:
            return False, False
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, rsa_padding, hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, data, hash_algorithm)
        else:
            return False, False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False, False
    return True, sha1


_HASH_OIDS: dict[bytes, type[hashes.HashAlgorithm]] = {
    bytes.fromhex("2b0e03021a"): hashes.SHA1,
    bytes.fromhex("608648016503040204"): hashes.SHA224,
    bytes.fromhex("608648016503040201"): hashes.SHA256,
    bytes.fromhex("608648016503040202"): hashes.SHA384,
    bytes.fromhex("608648016503040203"): hashes.SHA512,
}


def _pss(encoded: bytes) -> tuple[hashes.HashAlgorithm, padding.AsymmetricPadding]:
    """Hash and padding from a certificate's RSASSA-PSS parameters (RFC 4055).

    cryptography 38 cannot report them (``signature_hash_algorithm`` raises
    for PSS), so read them from the outer signatureAlgorithm ourselves; the
    salt length is recovered by ``PSS.AUTO`` during verification.
    """
    _, signature_algorithm, _ = der.children(der.value(encoded, 0x30))
    parameters = der.children(der.value(signature_algorithm, 0x30))
    fields = {tag: body for tag, body in der.tagged(der.value(parameters[1], 0x30))} if len(parameters) > 1 else {}
    message_hash: type[hashes.HashAlgorithm] = hashes.SHA1  # the RFC 4055 defaults
    mask_hash: type[hashes.HashAlgorithm] = hashes.SHA1
    if 0xA0 in fields:
        message_hash = _hash_of(fields[0xA0])
    if 0xA1 in fields:
        _, mgf_parameters = der.children(der.value(fields[0xA1], 0x30))
        mask_hash = _hash_of(mgf_parameters)
    return message_hash(), padding.PSS(mgf=padding.MGF1(mask_hash()), salt_length=padding.PSS.AUTO)


def _hash_of(algorithm_identifier: bytes) -> type[hashes.HashAlgorithm]:
    oid = der.value(der.children(der.value(algorithm_identifier, 0x30))[0], 0x06)
    if oid not in _HASH_OIDS:
        raise UnsupportedAlgorithm("unknown PSS hash")
    return _HASH_OIDS[oid]
