"""What a decision is: the records :func:`chainwatch.policy.decide` returns.

Owns the public vocabulary of the policy: a kept certificate's role, a
dropped one's reason (frozen codes: once released, a code never changes
meaning), the chain's warnings, a path, and the decision itself. Plain
immutable records; no rule of the policy lives here, and nothing here reads
a clock or a file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from typing import NamedTuple

from chainwatch.x509.certificate import Cert

__all__ = ["ChainWarning", "ClientResult", "Decision", "Path", "Reason", "Role", "Verdict", "WarningCode"]


class Role(StrEnum):
    """What a kept certificate is in the served chain."""

    LEAF = "leaf"
    INTERMEDIATE = "intermediate"
    CROSS_SIGN = "cross-sign"
    """A CA certificate for a key that also has a self-signed root."""


class Reason(StrEnum):
    """Why a certificate was dropped. Codes never change meaning once released."""

    ANCHOR = "anchor"
    """Results when the certificate is self-signed: clients bring their own roots."""
    DUPLICATE = "duplicate"
    """Results when the same certificate appeared earlier in the file."""
    UNRELATED = "unrelated"
    """Results when no path from the leaf passes through it (including an
    impostor: the right issuer name, but a key that does not verify)."""
    EXPIRED = "expired"
    """Results when the certificate itself is expired or not yet valid."""
    ISSUER_EXPIRED = "issuer-expired"
    """Results when a cross-sign's every issuer is expired (DST Root CA X3, AddTrust)."""
    ISSUER_DISTRUSTED = "issuer-distrusted"
    """Results when a cross-sign's every usable issuer is on the distrust list."""
    ISSUER_UNTRUSTED = "issuer-untrusted"
    """Results when a cross-sign leads to no anchor of any configured store."""
    NOT_NEEDED = "not-needed"
    """Minimal mode: every store that validates the chain still does without it."""
    COVERED = "covered"
    """Results when a served twin (same subject and key) leads to every CA this
    one leads to, its issuer's own renewal among them: no client needs both."""
    BREAKS_CLIENT = "breaks-client"
    """Results when serving it makes a configured client fail (a first-match
    client led past it to an expired root) that validates without it, and
    every client that validates with it validates without it. When its every
    issuer is expired or distrusted, that reason is given instead."""


class WarningCode(StrEnum):
    """Problems with the chain as a whole."""

    INCOMPLETE = "incomplete"
    LEAF_EXPIRED = "leaf-expired"
    LEAF_NOT_YET_VALID = "leaf-not-yet-valid"
    EXPIRING_SOON = "expiring-soon"
    REORDERED = "reordered"
    CONFLICTING_TWINS = "conflicting-twins"
    """Kept twins are needed by different stores: clients of some that take
    the first matching issuer may fail, whatever the order."""
    CLIENTS_AT_RISK = "clients-at-risk"
    """Some configured client fails on the served chain although another
    choice or order of the file's certificates would serve it: what it
    needs, another configured client cannot have."""


# The records below are NamedTuples, not frozen dataclasses: as immutable,
# and each costs a tenth to define, which every ``chainwatch trim`` pays
# (with the dataclasses import) before it reads a certificate.
class Verdict(NamedTuple):
    """The decision on one input certificate."""

    cert: Cert
    position: int
    """Zero-based position in the input file."""
    role: Role | None
    """Set when kept."""
    reason: Reason | None
    """Set when dropped."""
    detail: str
    """One sentence for a person."""

    @property
    def kept(self) -> bool:
        return self.reason is None


class ChainWarning(NamedTuple):
    code: WarningCode
    message: str


class Path(NamedTuple):
    """Leaf, then chain certificates, ending in an anchor from a store."""

    leaf: Cert
    via: tuple[Cert, ...]
    anchor: Cert


class ClientResult(NamedTuple):
    """One configured client's verdict on the file as given and on the served chain."""

    name: str
    as_given: bool
    """Whether it validates the input file as a server would send it: in its
    order, its first certificate as the server's own."""
    served: bool
    """Whether it validates the sanitized chain."""
    detail: str
    """One sentence: why the served chain fails it, else why the file as
    given did, else what it validates through."""


class Decision(NamedTuple):
    """What to serve, and a verdict with a reason for every input certificate."""

    leaf: Cert
    chain: tuple[Cert, ...]
    """The sanitized chain: leaf first, then issuers in path order."""
    verdicts: tuple[Verdict, ...]
    """One per input certificate, in input order."""
    warnings: tuple[ChainWarning, ...]
    stores: tuple[str, ...]
    """Names of the stores judged, in the order given."""
    validating_stores: tuple[str, ...]
    """Stores that can build a valid path from the served chain."""
    chain_issuers: Mapping[Cert, tuple[Cert, ...]]
    """Candidate issuers found in the chain, for every certificate reached from the leaf."""
    anchor_issuers: Mapping[Cert, tuple[Cert, ...]]
    """Candidate issuers found in the stores, likewise."""
    anchor_stores: Mapping[Cert, tuple[str, ...]]
    """For every anchor met: the stores that hold it."""
    distrusted: frozenset[Cert]
    """Certificates met that the distrust list names."""
    changes_at: dt.datetime | None = None
    """The next instant a certificate met starts or stops being valid: the
    decision may differ from then on (an agent re-decides at that moment)."""
    clients: tuple[ClientResult, ...] = ()
    """Every client judged, in the order of ``stores``, each by its own model
    (:func:`~chainwatch.policy.client_check.validates`)."""

    @property
    def dropped(self) -> tuple[Verdict, ...]:
        return tuple(verdict for verdict in self.verdicts if not verdict.kept)

    def role_of(self, cert: Cert) -> Role | None:
        for verdict in self.verdicts:
            if verdict.cert == cert and verdict.kept:
                return verdict.role
        return None

    def has(self, code: WarningCode) -> bool:
        return any(warning.code == code for warning in self.warnings)

    def pem(self) -> bytes:
        return b"".join(cert.pem() for cert in self.chain)
