"""Does one certificate's key verify another's signature?

Written against cryptography's public-key primitives rather than
``Certificate.verify_directly_issued_by`` (40+) or the verifier (42+), so the
same code runs on Debian 12's python3-cryptography 38.0.4.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from chainwatch.certificate import Cert

__all__ = ["signed_by"]

# MD5 and SHA-1 collisions are practical; SHA-1 is still found on links from
# legacy roots that clients accept, MD5 nowhere that matters.
_BROKEN_HASHES = (hashes.MD5,)


def signed_by(child: Cert, issuer: Cert) -> bool:
    """True when ``issuer``'s public key verifies ``child``'s signature.

    SHA-1 is accepted only when the issuer is a self-named root (the legacy
    roots that still sign that way); anything malformed or unsupported is
    simply "no link".
    """
    certificate = child.x509
    try:
        hash_algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return False
    if isinstance(hash_algorithm, _BROKEN_HASHES):
        return False
    if isinstance(hash_algorithm, hashes.SHA1) and not issuer.names_itself:
        return False
    key = issuer.x509.public_key()
    signature = certificate.signature
    data = certificate.tbs_certificate_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if hash_algorithm is None:
                return False
            key.verify(signature, data, _rsa_padding(certificate, hash_algorithm), hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if hash_algorithm is None:
                return False
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        elif isinstance(key, dsa.DSAPublicKey):
            if hash_algorithm is None:
                return False
            key.verify(signature, data, hash_algorithm)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _rsa_padding(certificate: x509.Certificate, hash_algorithm: hashes.HashAlgorithm) -> padding.AsymmetricPadding:
    if certificate.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
        # 38.0.4 cannot show the PSS parameters; MGF1 with the signature's own
        # hash is what every CA issues, and AUTO recovers the salt length.
        return padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.AUTO)
    return padding.PKCS1v15()
