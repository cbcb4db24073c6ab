"""A parsed certificate with the facts the policy asks about, computed once."""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from chainwatch.x509 import der
from chainwatch.x509.names import EMPTY_NAME, after_alt_names

if TYPE_CHECKING:  # the name is newer than Debian 12's cryptography 38
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

__all__ = ["Cert", "load_public_key", "short_name"]

_T = TypeVar("_T")


class cached_property(Generic[_T]):
    """functools.cached_property without its lock.

    Python 3.11's takes an RLock on every first access (3.12 dropped it):
    reading a trust bundle asks four of these for each of ~150 anchors, and
    the locking was a third of the load. A Cert is built and read by one
    thread; the worst a race could do is compute the same value twice.
    """

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self.compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> _T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


_UTC = dt.UTC
_BASIC_CONSTRAINTS = bytes.fromhex("0603551d13")  # 2.5.29.19
_KEY_USAGE = bytes.fromhex("0603551d0f")  # 2.5.29.15


def _utc(naive_or_aware: dt.datetime) -> dt.datetime:
    if naive_or_aware.tzinfo is None:
        return naive_or_aware.replace(tzinfo=_UTC)
    return naive_or_aware.astimezone(_UTC)


@lru_cache(maxsize=4096)
def load_public_key(spki: bytes) -> CertificatePublicKeyTypes:
    """The key object for a DER SubjectPublicKeyInfo, shared by every certificate carrying it.

    Loading a key costs more than verifying with it (about 0.3 ms for RSA on
    cryptography 38), and a host's lineages all hang below the same few
    intermediates; the cache is bounded and keyed by the key's own bytes.
    """
    key = serialization.load_der_public_key(spki)
    return key  # type: ignore[return-value]


def short_name(name: x509.Name, alt_names: Callable[[], Sequence[str]] = tuple) -> str:
    """The name a person recognises, for every place a certificate is named.

    The CN; else the certificate's own names (``alt_names``, its
    subjectAltName: the first, and "+N" for N more), since a leaf of Let's
    Encrypt's newer profiles has no CN and is known by those; else the O; else
    the whole DN. ``alt_names`` is asked only when there is no CN: reading
    extensions costs more than the rest of a name.
    """
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        return _text(common[0].value)
    named = after_alt_names(alt_names())
    if named is not None:
        return named
    organisation = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if organisation:
        return _text(organisation[0].value)
    return name.rfc4514_string() or EMPTY_NAME


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


class Cert:
    """An X.509 certificate and its derived facts.

    Equality and hashing follow the DER encoding, so the same certificate read
    from a chain and from a trust store is one value.
    """

    def __init__(self, certificate: x509.Certificate | None, der: bytes | None = None) -> None:
        if der is None:
            if certificate is None:
                raise TypeError("Cert needs a certificate or its DER encoding")
            der = certificate.public_bytes(serialization.Encoding.DER)
        self._x509 = certificate
        self.der = der

    @property
    def x509(self) -> x509.Certificate:
        """cryptography's certificate, parsed when first asked for (see :meth:`deferred`)."""
        if self._x509 is None:
            self._x509 = _load(self.der)
        return self._x509

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cert) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        return f"<Cert {self.short_subject!r} sha256={self.sha256[:16]}>"

    @classmethod
    def from_der(cls, der: bytes) -> Cert:
        """Parse DER; raises ``ValueError`` when it is not a certificate.

        The same bytes give the same object: a host's lineages share a few
        intermediates and cross-signs, and a shared object keeps what was
        derived from them (names, key, signature links) instead of redoing it
        for every lineage. Cert is never changed after parsing, so sharing is safe.
        """
        return _parse(der)

    @classmethod
    def deferred(cls, der: bytes) -> Cert:
        """A certificate whose full parse waits until something beyond its DER fields is asked.

        For trust stores: a chain meets two or three of a bundle's ~150
        anchors, found by subject and fingerprint, which need no parse. The
        shape is checked now (subject, issuer and key sliced out), so a block
        that is not a certificate at all is still refused when the bundle is read;
        :meth:`TrustStore.named` reports one cryptography refuses later.
        """
        cert = cls(None, der)
        cert.identity  # noqa: B018 - slices the fields; raises ValueError if they are not there
        return cert

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @cached_property
    def _tbs_fields(self) -> list[bytes]:
        # issuer, validity, subject, subjectPublicKeyInfo, as encoded and signed.
        # Walked by offsets and stopped after the key: a trust store slices
        # ~150 certificates at load, and copies of each level cost more than the walk.
        encoded = self.der
        _, start, _ = der.tlv(encoded, 0)
        tag, offset, end = der.tlv(encoded, start)
        if tag != 0x30:
            raise ValueError("unexpected DER tag")
        bounds: list[tuple[int, int]] = []
        while offset < end and len(bounds) < 7:
            _, _, next_offset = der.tlv(encoded, offset)
            if next_offset > end:
                raise ValueError("truncated DER")
            bounds.append((offset, next_offset))
            offset = next_offset
        chosen = bounds[3:7] if bounds and encoded[bounds[0][0]] == 0xA0 else bounds[2:6]
        if len(chosen) != 4:
            raise ValueError("not a certificate: too few fields")
        return [encoded[first:last] for first, last in chosen]

    @cached_property
    def subject_der(self) -> bytes:
        return self._tbs_fields[2]

    @cached_property
    def issuer_der(self) -> bytes:
        return self._tbs_fields[0]

    @cached_property
    def public_key_der(self) -> bytes:
        """The SubjectPublicKeyInfo exactly as in the certificate."""
        return self._tbs_fields[3]

    @property
    def public_key(self) -> CertificatePublicKeyTypes:
        return load_public_key(self.public_key_der)

    def has_public_key(self, spki: bytes) -> bool:
        """Does this certificate carry the key whose SubjectPublicKeyInfo is ``spki``?"""
        if spki == self.public_key_der:
            return True
        # The same key can be encoded differently (explicit EC parameters,
        # a missing NULL); compare cryptography's canonical encoding too.
        return spki == self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @cached_property
    def identity(self) -> tuple[bytes, bytes]:
        """Subject and key: two certificates with the same identity are the same CA.

        Paths never pass the same identity twice; that is what ends loops of
        mutual cross-signs.
        """
        return (self.subject_der, self.public_key_der)

    @cached_property
    def subject(self) -> str:
        return self.x509.subject.rfc4514_string()

    @cached_property
    def issuer(self) -> str:
        return self.x509.issuer.rfc4514_string()

    @cached_property
    def alt_names(self) -> tuple[str, ...]:
        """The DNS names and IP addresses of subjectAltName, in the certificate's order."""
        try:
            extension = self.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return ()
        except (ValueError, x509.DuplicateExtension):
            return ()  # naming must not fail where the policy reports the certificate
        return tuple(
            str(general.value) for general in extension.value if isinstance(general, (x509.DNSName, x509.IPAddress))
        )

    @cached_property
    def short_subject(self) -> str:
        return short_name(self.x509.subject, lambda: self.alt_names)

    @cached_property
    def short_issuer(self) -> str:
        return short_name(self.x509.issuer)

    @cached_property
    def not_before(self) -> dt.datetime:
        value = getattr(self.x509, "not_valid_before_utc", None)
        return _utc(value if value is not None else self.x509.not_valid_before)

    @cached_property
    def not_after(self) -> dt.datetime:
        value = getattr(self.x509, "not_valid_after_utc", None)
        return _utc(value if value is not None else self.x509.not_valid_after)

    def valid_at(self, at: dt.datetime) -> bool:
        """RFC 5280: both bounds are inclusive."""
        return self.not_before <= at <= self.not_after

    @cached_property
    def names_itself(self) -> bool:
        return self.subject_der == self.issuer_der

    @cached_property
    def is_ca(self) -> bool:
        """May this certificate issue others (basic constraints and key usage)?

        A version 1 certificate has no extensions; old roots are like that,
        so a self-named v1 certificate counts as a CA.
        """
        try:
            return self._is_ca_from_der()
        except ValueError:
            return self._is_ca_by_library()  # anything unusual: cryptography decides, or raises, as before

    def _is_ca_from_der(self) -> bool:
        # cryptography builds a Python object for every extension when one is
        # asked for (0.05-0.2 ms a certificate, most of a trim); the two
        # answers needed here are a few bytes of DER.
        encoded = self.der
        _, start, _ = der.tlv(encoded, 0)
        _, offset, end = der.tlv(encoded, start)
        version, extensions = 0, b""
        while offset < end:
            tag, first, last = der.tlv(encoded, offset)
            if tag == 0xA0:
                version = int.from_bytes(der.value(encoded[first:last], 0x02), "big")
            elif tag == 0xA3:
                extensions = encoded[first:last]
            offset = last
        if version == 0:
            return self.names_itself
        if version != 2:
            raise ValueError("not version 3")
        found: dict[bytes, bytes] = {}
        for extension in der.children(der.value(extensions, 0x30)) if extensions else []:
            parts = der.children(der.value(extension, 0x30))
            if parts[0] in found:
                raise ValueError("duplicate extension")  # cryptography refuses the certificate
            found[parts[0]] = der.value(parts[-1], 0x04)
        constraints = found.get(_BASIC_CONSTRAINTS)
        if constraints is None:
            return False
        fields = der.children(der.value(constraints, 0x30))
        if not fields or fields[0][0] != 0x01:
            return False  # cA absent: DEFAULT FALSE
        flag = der.value(fields[0], 0x01)
        if flag not in (b"\x00", b"\xff"):
            raise ValueError("not a DER boolean")
        if flag == b"\x00":
            return False
        usage = found.get(_KEY_USAGE)
        if usage is None:
            return True
        bits = der.value(usage, 0x03)
        return len(bits) > 1 and bool(bits[1] & 0x04)  # keyCertSign is bit 5

    def _is_ca_by_library(self) -> bool:
        if self.x509.version == x509.Version.v1:
            return self.names_itself
        try:
            constraints = self.x509.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            return False
        if not constraints.value.ca:
            return False
        try:
            usage = self.x509.extensions.get_extension_for_class(x509.KeyUsage)
        except x509.ExtensionNotFound:
            return True
        return usage.value.key_cert_sign

    @cached_property
    def key_description(self) -> str:
        key = self.public_key
        if isinstance(key, rsa.RSAPublicKey):
            return f"RSA {key.key_size}"
        if isinstance(key, ec.EllipticCurvePublicKey):
            return {"secp256r1": "EC P-256", "secp384r1": "EC P-384", "secp521r1": "EC P-521"}.get(
                key.curve.name, f"EC {key.curve.name}"
            )
        if isinstance(key, ed25519.Ed25519PublicKey):
            return "Ed25519"
        if isinstance(key, ed448.Ed448PublicKey):
            return "Ed448"
        if isinstance(key, dsa.DSAPublicKey):
            return f"DSA {key.key_size}"
        return type(key).__name__

    def pem(self) -> bytes:
        return self._pem

    @cached_property
    def _pem(self) -> bytes:
        # Every set published asks for each certificate's PEM twice
        # (fullchain.pem and chain.pem), and intermediates are shared.
        return self.x509.public_bytes(serialization.Encoding.PEM)


@lru_cache(maxsize=1024)
def _parse(der: bytes) -> Cert:
    return Cert(_load(der), der)


def _load(der: bytes) -> x509.Certificate:
    with warnings.catch_warnings():
        # Real trust bundles hold a few old roots that newer cryptography
        # frowns upon (negative serials); they still verify fine.
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(der)
