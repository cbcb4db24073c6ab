"""The trim policy's settings: what a configuration file or a command line sets.

Kept apart from the policy itself so that reading a configuration (``status``,
``check-config``) never loads cryptography.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from chainwatch.x509.certificate import Cert

__all__ = ["DEFAULT_STORE", "ClientModel", "Distrust", "Mode", "PathBuilding", "Policy", "leaf_horizon"]

DEFAULT_STORE = Path("/etc/ssl/certs/ca-certificates.crt")
"""Debian's ca-certificates bundle: the store of a client that trusts what Debian trusts."""


class Mode(StrEnum):
    """How much to trim."""

    SAFE = "safe"
    """Drop only what can hurt or cannot help; keep every cross-sign some store may need."""
    MINIMAL = "minimal"
    """Also drop what no configured store needs."""


class Distrust:
    """Anchors to treat as distrusted, by SHA-256 fingerprint or subject DN.

    A DN matches whatever the order of its attributes (OpenSSL prints them
    forwards, RFC 4514 backwards) and ignores case and spacing.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(entries)
        self._fingerprints: set[str] = set()
        self._names: set[frozenset[str]] = set()
        for entry in self.entries:
            compact = entry.replace(":", "").strip().lower()
            if re.fullmatch(r"[0-9a-f]{64}", compact):
                self._fingerprints.add(compact)
            else:
                self._names.add(_dn_key(entry))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def matches(self, cert: Cert) -> bool:
        return cert.sha256 in self._fingerprints or (bool(self._names) and _dn_key(cert.subject) in self._names)


def _dn_key(dn: str) -> frozenset[str]:
    parts = re.split(r"(?<!\\)[,/]", dn)
    pairs = set()
    for part in parts:
        if "=" in part:
            attribute, value = part.split("=", 1)
            pairs.add(f"{attribute.strip().lower()}={value.strip().lower()}")
    return frozenset(pairs)


class PathBuilding(StrEnum):
    """How a client builds its path from the served chain to one of its anchors."""

    FIRST_MATCH = "first-match"
    """Follows the served chain untrusted-first, taking at each step the first
    served issuer (a currently valid one if any), and looks in its store only
    where the served certificates end; it tries another way only when no
    trusted issuer is found at all, so a served cross-sign to an expired root
    it trusts fails it: OpenSSL <= 1.0.2, LibreSSL <= 3.1.2."""
    TRUSTED_FIRST = "trusted-first"
    """Looks in its store first at every step and stops at a trusted issuer,
    even an expired or distrusted one: OpenSSL >= 1.1.0."""
    BACKTRACKING = "backtracking"
    """Tries every way up until one is valid: Go, pyca, NSS, Java, Apple, Windows, Android."""


class ClientModel(NamedTuple):
    """How the clients of a store judge a chain, besides which anchors they hold."""

    path_building: PathBuilding = PathBuilding.BACKTRACKING
    anchor_expiry: bool = True
    """False where an anchor's own validity dates are never checked, so an
    expired anchor still anchors (Android, rustls/webpki)."""
    aia: bool = False
    """True where the client fetches a missing intermediate named by the
    certificate's caIssuers URL (Apple, Windows, Chrome). It counts only when
    judging a chain as a server sends it, never as a reason to drop one."""


class Policy(NamedTuple):
    """The knobs of the trim policy."""

    mode: Mode = Mode.SAFE
    distrust: Distrust = Distrust()
    horizon: dt.timedelta = dt.timedelta(days=21)
    """Warn when a served certificate or a used anchor expires this soon."""
    client: ClientModel = ClientModel()
    """How the clients behind every configured store are judged to validate.
    Whatever it says, the served chain is also kept good for clients of those
    stores that look in their store first and that take the first twin
    served (see :mod:`chainwatch.policy`): a store stands for every program
    that uses it, not only the one modelled."""


def leaf_horizon(horizon: dt.timedelta, not_before: dt.datetime, not_after: dt.datetime) -> dt.timedelta:
    """How long before its expiry a leaf is "expiring soon": the policy, status and alerts agree.

    Short-lived certificates (6 days) are renewed at a third of their life;
    warning for their whole life would teach people to ignore the warning.
    """
    return min(horizon, (not_after - not_before) / 3)
