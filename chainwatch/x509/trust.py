"""Client trust stores: each PEM bundle stands for one kind of client."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from chainwatch.errors import InputError
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import read_bundle

__all__ = ["TrustStore", "load_store", "load_stores"]


class TrustStore:
    """The anchors one client profile trusts, indexed by subject.

    A plain class, not a dataclass: ``chainwatch trim`` builds one per run,
    and the dataclasses machinery costs more to import and set up than the
    few lines below.
    """

    __slots__ = ("_by_subject", "anchors", "name")

    def __init__(self, name: str, anchors: tuple[Cert, ...], by_subject: dict[bytes, tuple[Cert, ...]]) -> None:
        self.name = name
        self.anchors = anchors
        self._by_subject = by_subject

    @classmethod
    def of(cls, name: str, anchors: Iterable[Cert]) -> TrustStore:
        """A store named ``name`` holding ``anchors`` (duplicates folded)."""
        unique = tuple(dict.fromkeys(anchors))
        by_subject: dict[bytes, list[Cert]] = {}
        for anchor in unique:
            by_subject.setdefault(anchor.subject_der, []).append(anchor)
        return cls(name, unique, {subject: tuple(certs) for subject, certs in by_subject.items()})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustStore) and (self.name, self.anchors) == (other.name, other.anchors)

    def __hash__(self) -> int:
        return hash((self.name, self.anchors))

    def __repr__(self) -> str:
        return f"TrustStore(name={self.name!r}, anchors=<{len(self.anchors)} certificates>)"

    def named(self, subject_der: bytes) -> Sequence[Cert]:
        """Anchors whose subject is exactly this DER name."""
        found = self._by_subject.get(subject_der, ())
        for anchor in found:
            # Anchors are parsed when first met (Cert.deferred); one that
            # cryptography refuses is bad input, as it would have been at load.
            try:
                anchor.x509  # noqa: B018
            except ValueError as error:
                reason = str(error).splitlines()[0] if str(error) else "unparsable"
                raise InputError(
                    f"{self.name}: the anchor with SHA-256 {anchor.sha256} is not valid DER X.509 ({reason})"
                ) from None
        return found

    def __contains__(self, cert: object) -> bool:
        # Among the anchors of the same subject (one or two), by encoding:
        # fingerprinting all ~150 anchors at load cost more than every lookup.
        return isinstance(cert, Cert) and cert in self._by_subject.get(cert.subject_der, ())


def load_store(path: Path) -> TrustStore:
    """Read a PEM bundle; the store is named after the file."""
    return TrustStore.of(path.name, read_bundle(path))


def load_stores(paths: Sequence[Path]) -> list[TrustStore]:
    """Read several bundles; each is named by its file, or by its path when two file names clash."""
    stores = [load_store(path) for path in paths]
    if len({store.name for store in stores}) != len(stores):
        stores = [TrustStore.of(str(path), store.anchors) for path, store in zip(paths, stores, strict=True)]
    return stores
