"""The shipped client profiles: which roots each client holds, as of when, and how it builds its paths.

The catalogue (``data/profiles.json``) is read once per process and needs no
cryptography, so ``--list-clients`` and configuration checks stay cheap.
:func:`store_of` builds a profile's :class:`~chainwatch.x509.trust.TrustStore` from
``data/roots.pem``, where every root is stored once: a root that several
profiles hold is one :class:`~chainwatch.x509.certificate.Cert` in all their stores,
parsed (when first asked) once per process. ``data/SOURCES.md`` says where each
list and each certificate comes from.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from chainwatch.errors import InputError
from chainwatch.policy.settings import ClientModel, PathBuilding

if TYPE_CHECKING:
    from chainwatch.x509.certificate import Cert
    from chainwatch.x509.trust import TrustStore

__all__ = ["Family", "Profile", "Provenance", "shipped", "store_of"]

Family = Literal["android", "apple", "windows", "java", "mozilla", "openssl", "gnutls", "go", "rustls"]

# The shipped data is about 1 MB; these bounds only keep a damaged install
# (a file replaced by something huge) from costing more than a moment.
_MAX_CATALOGUE_BYTES = 4 << 20
_MAX_ROOTS_BYTES = 8 << 20
_CATALOGUE = "data/profiles.json"
_ROOTS = "data/roots.pem"
_FORMAT = 1


class Provenance(NamedTuple):
    """Where a profile's list of roots and their certificates come from."""

    source: str
    """The list of roots: which package, file or repository, and which snapshot of it."""
    url: str
    version: str
    """The package version or repository commit the list was read from."""
    licence: str
    certificates_from: tuple[tuple[str, int], ...]
    """Each shippable source the certificates' bytes were taken from, with how many."""
    not_shipped: int
    """Roots of the snapshot left out because no shippable copy of them was found."""
    note: str
    """How the snapshot stands for the client it is named after, when not exactly."""


class Profile(NamedTuple):
    """A kind of client: a dated trust store and the rules by which it validates."""

    name: str
    family: Family
    description: str
    path_building: PathBuilding
    anchor_expiry: bool
    """False where an expired anchor still anchors (Android, rustls)."""
    aia: bool
    """Fetches a missing intermediate named by a certificate's caIssuers URL (Apple, Windows)."""
    snapshot: dt.date
    """The date of the trust-store snapshot the roots were taken from."""
    modelled: bool
    """No real implementation of this client runs here: its verdicts come from the model alone."""
    provenance: Provenance
    roots: tuple[str, ...]
    """SHA-256 fingerprints (lowercase hex) of the roots the client trusts."""

    @property
    def model(self) -> ClientModel:
        """How the policy judges this client's path building, anchor expiry and fetching."""
        return ClientModel(path_building=self.path_building, anchor_expiry=self.anchor_expiry, aia=self.aia)


def _read(name: str, limit: int) -> bytes:
    resource = resources.files("chainwatch.clients").joinpath(name)
    try:
        with resource.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as error:
        raise InputError(f"chainwatch/clients/{name}: cannot read the shipped client data ({error})") from None
    if len(data) > limit:
        raise InputError(f"chainwatch/clients/{name}: larger than {limit >> 20} MiB; the install is damaged")
    return data


def _profile(entry: dict[str, Any]) -> Profile:
    provenance = entry["provenance"]
    family = entry["family"]
    if family not in get_args(Family):
        raise ValueError(f"unknown family {family!r}")
    roots = tuple(entry["roots"])
    if not all(isinstance(root, str) and len(root) == 64 for root in roots):
        raise ValueError("a root is not a SHA-256 fingerprint")
    return Profile(
        name=str(entry["name"]),
        family=family,
        description=str(entry["description"]),
        path_building=PathBuilding(entry["path_building"]),
        anchor_expiry=bool(entry["anchor_expiry"]),
        aia=bool(entry["aia"]),
        snapshot=dt.date.fromisoformat(entry["snapshot"]),
        modelled=bool(entry["modelled"]),
        provenance=Provenance(
            source=str(provenance["source"]),
            url=str(provenance["url"]),
            version=str(provenance["version"]),
            licence=str(provenance["licence"]),
            certificates_from=tuple(
                (str(origin), int(count)) for origin, count in provenance["certificates_from"].items()
            ),
            not_shipped=int(provenance["not_shipped"]),
            note=str(provenance["note"]),
        ),
        roots=roots,
    )


@functools.cache
def shipped() -> dict[str, Profile]:
    """Every shipped profile by name, in catalogue order. Read once per process; do not mutate."""
    try:
        catalogue = json.loads(_read(_CATALOGUE, _MAX_CATALOGUE_BYTES))
        if catalogue.get("format") != _FORMAT:
            raise ValueError(f"format {catalogue.get('format')!r}, expected {_FORMAT}")
        profiles: dict[str, Profile] = {}
        for number, entry in enumerate(catalogue["profiles"], 1):
            try:
                profile = _profile(entry)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise ValueError(f"profile {number}: {error!r}") from None
            profiles[profile.name] = profile
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"chainwatch/clients/{_CATALOGUE}: not a client catalogue ({error})") from None
    return profiles


@functools.cache
def _root_encodings() -> dict[str, bytes]:
    # Decoding and hashing all ~500 roots costs about a millisecond; building
    # Cert objects for them is what waits until a profile asks.
    from chainwatch.x509.pem import blocks, decode_body  # noqa: PLC0415 - pem loads cryptography

    encodings: dict[str, bytes] = {}
    for number, (label, body) in enumerate(blocks(_read(_ROOTS, _MAX_ROOTS_BYTES)), 1):
        if label != "CERTIFICATE":
            continue
        try:
            der = decode_body(body)
        except ValueError:
            raise InputError(f"chainwatch/clients/{_ROOTS}: certificate {number} is not valid base64") from None
        encodings[hashlib.sha256(der).hexdigest()] = der
    return encodings


_parsed: dict[str, Cert] = {}
"""Each shipped root's one Cert in this process, by fingerprint (at most the ~500 of roots.pem)."""


def _root(fingerprint: str, profile: str) -> Cert:
    cert = _parsed.get(fingerprint)
    if cert is None:
        from chainwatch.x509.certificate import Cert  # noqa: PLC0415 - loads cryptography

        der = _root_encodings().get(fingerprint)
        if der is None:
            raise InputError(f"chainwatch/clients/{_ROOTS}: no root with SHA-256 {fingerprint}, which {profile} lists")
        try:
            cert = Cert.deferred(der)
        except ValueError:
            raise InputError(
                f"chainwatch/clients/{_ROOTS}: the root with SHA-256 {fingerprint} is not a certificate"
            ) from None
        _parsed[fingerprint] = cert
    return cert


def store_of(profile: Profile) -> TrustStore:
    """The anchors ``profile`` trusts, as a store named after it; roots are shared between profiles."""
    from chainwatch.x509.trust import TrustStore  # noqa: PLC0415 - loads cryptography

    return TrustStore.of(profile.name, [_root(fingerprint, profile.name) for fingerprint in profile.roots])
