"""The trim policy: which certificates a server should send, and why.

A pure function of (certificates, trust stores, time, policy). It reads no
clock, file or network; a chain that validates badly is a returned decision
with warnings, never an exception. Only input that has no leaf at all, or
that would cost unbounded work, raises :class:`~chainwatch.errors.InputError`.

How it works, in the spirit of Go's ``crypto/x509`` verifier:

1. Candidate issuers of a certificate are those whose subject equals its
   issuer name *and* whose key verifies its signature (``signed_by``); key
   identifiers are never trusted to decide.
2. Every path from the leaf upwards through the chain's certificates to an
   anchor of some store is enumerated once, ignoring time; a path never passes
   the same (subject, key) twice, which ends loops of mutual cross-signs.
   One budget bounds the walk.
3. Validity is judged per store afterwards: a path is valid for a store when
   its anchor is in that store, and the anchor and every certificate above the
   leaf are within their validity at the given time and not distrusted.
4. Twins (the same subject and key from different issuers) are alternatives
   for one position of the path, like a cross-sign and its self-signed root:
   those on a valid path are kept, the others dropped for their issuer.
5. The served order is for clients that take the first matching issuer at
   each depth (OpenSSL 3.0, GnuTLS): leaf first, then by depth; at one depth
   what more stores validate through goes first, then the file's order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple

from chainwatch.certificate import Cert
from chainwatch.errors import InputError
from chainwatch.policy_settings import Distrust, Mode, Policy, leaf_horizon
from chainwatch.signature import signed_by
from chainwatch.trust import TrustStore

__all__ = [
    "ChainWarning",
    "Decision",
    "Distrust",
    "Mode",
    "Path",
    "Policy",
    "Reason",
    "Role",
    "Verdict",
    "WarningCode",
    "decide",
]

# Chains have a handful of certificates; a walk longer than this is a file
# built to make us work (cross-sign meshes), and we refuse it rather than
# guess. Go's verifier bounds its signature checks the same way.
MAX_PATH_STEPS = 10_000
_SECOND = dt.timedelta(seconds=1)


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


def decide(
    certs: Sequence[Cert],
    stores: Sequence[TrustStore],
    at: dt.datetime,
    policy: Policy | None = None,
    leaf_key: bytes | None = None,
) -> Decision:
    """Decide which of ``certs`` (a served chain, in file order) to serve.

    ``at`` must be timezone-aware. ``leaf_key`` is the DER public key of the
    server's private key; without it the leaf is the first end-entity
    certificate. Raises :class:`InputError` when there is no leaf.
    """
    if at.tzinfo is None:
        raise ValueError("decide() needs a timezone-aware time")
    return _Judge(certs, stores, at, policy or Policy(), leaf_key).decide()


class _Judge:
    """One decision's working state; discarded when it returns."""

    def __init__(
        self,
        certs: Sequence[Cert],
        stores: Sequence[TrustStore],
        at: dt.datetime,
        policy: Policy,
        leaf_key: bytes | None,
    ) -> None:
        self.certs = list(certs)
        self.stores = list(stores)
        self.at = at
        self.policy = policy
        self.leaf_position = _find_leaf(self.certs, leaf_key)
        self.leaf = self.certs[self.leaf_position]
        self.first_position: dict[Cert, int] = {}
        for position, cert in enumerate(self.certs):
            self.first_position.setdefault(cert, position)
        # Self-signed certificates are never sent: a client that trusts the
        # root has it already, and one that does not will not start to.
        self.self_signed = {
            cert for cert in self.first_position if cert != self.leaf and cert.names_itself and signed_by(cert, cert)
        }
        self.nodes_by_subject: dict[bytes, list[Cert]] = {}
        for cert in self.first_position:
            if cert != self.leaf and cert not in self.self_signed:
                self.nodes_by_subject.setdefault(cert.subject_der, []).append(cert)
        self.chain_issuers: dict[Cert, tuple[Cert, ...]] = {}
        self.anchor_issuers: dict[Cert, tuple[Cert, ...]] = {}
        self.paths: list[Path] = []
        self.reached: set[Cert] = set()
        self._steps = 0

    # -- the search ---------------------------------------------------------

    def _issuers(self, cert: Cert) -> None:
        if cert in self.chain_issuers:
            return
        self.chain_issuers[cert] = tuple(
            candidate
            for candidate in self.nodes_by_subject.get(cert.issuer_der, ())
            if candidate != cert and candidate.is_ca and signed_by(cert, candidate)
        )
        anchors: dict[Cert, None] = {}
        for store in self.stores:
            for candidate in store.named(cert.issuer_der):
                if candidate not in anchors and candidate.is_ca and signed_by(cert, candidate):
                    anchors[candidate] = None
        self.anchor_issuers[cert] = tuple(anchors)

    def _walk(self, cert: Cert, via: tuple[Cert, ...], identities: frozenset[tuple[bytes, bytes]]) -> None:
        self._steps += 1
        if self._steps > MAX_PATH_STEPS:
            raise InputError(f"the chain has more than {MAX_PATH_STEPS} alternative paths; refusing to search them all")
        self._issuers(cert)
        for anchor in self.anchor_issuers[cert]:
            self.paths.append(Path(self.leaf, via, anchor))
        for issuer in self.chain_issuers[cert]:
            if issuer.identity in identities:
                continue
            self.reached.add(issuer)
            self._walk(issuer, (*via, issuer), identities | {issuer.identity})

    # -- judging --------------------------------------------------------------

    def _usable(self, cert: Cert) -> bool:
        return cert.valid_at(self.at) and not self.policy.distrust.matches(cert)

    def _valid(self, path: Path, store: TrustStore, kept: set[Cert] | None = None) -> bool:
        return (
            path.anchor in store
            and self._usable(path.anchor)
            and all(self._usable(cert) for cert in path.via)
            and (kept is None or all(cert in kept for cert in path.via))
        )

    def _valid_paths(self, store: TrustStore, kept: set[Cert] | None = None) -> list[Path]:
        return [path for path in self.paths if self._valid(path, store, kept)]

    def _is_cross_sign(self, cert: Cert) -> bool:
        if cert.names_itself:
            return False
        twins = [c for store in self.stores for c in store.named(cert.subject_der)]
        twins += self.nodes_by_subject.get(cert.subject_der, [])
        twins += [c for c in self.self_signed if c.subject_der == cert.subject_der]
        return any(twin.identity == cert.identity and twin.names_itself for twin in twins)

    def _twins(self, cert: Cert) -> list[Cert]:
        """Other certificates of the chain for the same CA (subject and key) from another issuer."""
        return [
            twin
            for twin in self.nodes_by_subject.get(cert.subject_der, [])
            if twin != cert and twin.identity == cert.identity and twin.issuer_der != cert.issuer_der
        ]

    def decide(self) -> Decision:
        self.reached.add(self.leaf)
        self._walk(self.leaf, (), frozenset({self.leaf.identity}))

        users: dict[Cert, list[str]] = {}
        for store in self.stores:
            for path in self._valid_paths(store):
                for cert in path.via:
                    names = users.setdefault(cert, [])
                    if store.name not in names:
                        names.append(store.name)

        verdicts: dict[int, Verdict] = {}
        kept: dict[Cert, Role] = {self.leaf: Role.LEAF}
        verdicts[self.leaf_position] = Verdict(
            self.leaf, self.leaf_position, Role.LEAF, None, "the leaf is always served"
        )
        for position, cert in enumerate(self.certs):
            if position == self.leaf_position:
                continue
            first = self.first_position[cert]
            if first != position:
                verdicts[position] = self._drop(
                    cert, position, Reason.DUPLICATE, f"same certificate as number {first + 1}"
                )
            elif cert in self.self_signed:
                verdicts[position] = self._drop(
                    cert, position, Reason.ANCHOR, "self-signed root: clients use their own copy or none"
                )
            elif cert not in self.reached:
                verdicts[position] = self._drop(cert, position, Reason.UNRELATED, self._unrelated_detail(cert))
            elif not cert.valid_at(self.at):
                verdicts[position] = self._drop(cert, position, Reason.EXPIRED, _validity_detail(cert, self.at))
            elif cert in users:
                role = Role.CROSS_SIGN if self._is_cross_sign(cert) else Role.INTERMEDIATE
                kept[cert] = role
                verdicts[position] = Verdict(cert, position, role, None, f"needed by {', '.join(users[cert])}")
            elif self._is_cross_sign(cert) or any(twin in users for twin in self._twins(cert)):
                # Clients reach this position through the root's own
                # certificate or a twin that some store validates; this one
                # only adds a dead end (first-match clients may take it).
                reason, detail = self._issuer_problem(cert)
                verdicts[position] = self._drop(cert, position, reason, detail)
            else:
                # A plain intermediate that no configured store validates is
                # still the leaf's issuer: dropping it helps no one, and a
                # client with a store we were not told about may need it.
                kept[cert] = Role.INTERMEDIATE
                verdicts[position] = Verdict(
                    cert, position, Role.INTERMEDIATE, None, "kept although no configured store validates it"
                )

        self._drop_covered_twins(kept, verdicts)
        self._drop_orphans(kept, verdicts)
        if self.policy.mode == Mode.MINIMAL:
            self._drop_unneeded(kept, verdicts)

        kept_set = set(kept)
        stores_through = self._stores_through(kept_set)
        chain = self._order(kept_set, stores_through)
        validating = tuple(store.name for store in self.stores if self._valid_paths(store, kept_set))
        ordered_verdicts = tuple(verdicts[position] for position in range(len(self.certs)))
        met = {*self.first_position, *(a for anchors in self.anchor_issuers.values() for a in anchors)}
        return Decision(
            leaf=self.leaf,
            chain=chain,
            verdicts=ordered_verdicts,
            warnings=tuple(self._warnings(chain, kept_set, stores_through)),
            stores=tuple(store.name for store in self.stores),
            validating_stores=validating,
            chain_issuers=dict(self.chain_issuers),
            anchor_issuers=dict(self.anchor_issuers),
            anchor_stores={
                anchor: tuple(store.name for store in self.stores if anchor in store)
                for anchors in self.anchor_issuers.values()
                for anchor in anchors
            },
            distrusted=frozenset(cert for cert in met if self.policy.distrust.matches(cert)),
            changes_at=min(
                (
                    edge
                    for cert in met
                    # ... or starts expiring soon: status and the journal warn from then on.
                    for edge in (cert.not_before, cert.not_after - self._warn_before(cert), cert.not_after + _SECOND)
                    if edge > self.at
                ),
                default=None,
            ),
        )

    @staticmethod
    def _drop(cert: Cert, position: int, reason: Reason, detail: str) -> Verdict:
        return Verdict(cert, position, None, reason, detail)

    def _unrelated_detail(self, cert: Cert) -> str:
        for child in self.reached:
            if child.issuer_der == cert.subject_der:
                return (
                    f"its name matches the issuer of {child.short_subject}, "
                    "but its key does not verify that certificate's signature"
                )
        return "no certificate on a path from the leaf was issued by it"

    def _issuer_problem(self, cert: Cert) -> tuple[Reason, str]:
        issuers = self.chain_issuers.get(cert, ()) + self.anchor_issuers.get(cert, ())
        name = cert.short_issuer
        if not issuers:
            return Reason.ISSUER_UNTRUSTED, f"its issuer {name} is in no trust store and not in the chain"
        if all(not issuer.valid_at(self.at) for issuer in issuers):
            ends = max(issuer.not_after for issuer in issuers)
            return Reason.ISSUER_EXPIRED, f"its issuer {name} expired on {_day(ends)}"
        if all(not self._usable(issuer) for issuer in issuers):
            return Reason.ISSUER_DISTRUSTED, f"its issuer {name} is distrusted"
        return Reason.ISSUER_UNTRUSTED, f"its issuer {name} leads to no anchor of any configured store"

    def _reach(self, cert: Cert, kept: set[Cert]) -> frozenset[bytes]:
        """The issuer names on every way up from ``cert`` through ``kept``: whoever
        trusts one of those CAs can take ``cert``."""
        names: set[bytes] = set()
        seen: set[Cert] = set()
        frontier = [cert]
        while frontier:
            current = frontier.pop()
            if current not in seen:
                seen.add(current)
                names.add(current.issuer_der)
                frontier += [issuer for issuer in self.chain_issuers.get(current, ()) if issuer in kept]
        return frozenset(names)

    def _on_valid_paths(self, kept: set[Cert]) -> set[Cert]:
        return {cert for store in self.stores for path in self._valid_paths(store, kept) for cert in path.via}

    def _covers(self, twin: Cert, cert: Cert, reach: frozenset[bytes], kept: set[Cert]) -> bool:
        """Whether ``twin`` takes every client of ``cert`` where ``cert`` would.

        Either its issuer made it again (the same issuers verify both), or
        it is issued by a root a configured store holds and, through a
        cross-sign of that root, also leads to every CA ``cert`` leads to.
        A twin whose way up passes only CAs no store holds is no such cover:
        GnuTLS follows the first twin served to its end and trusts only that.
        """
        if twin.issuer_der == cert.issuer_der:
            issuers = self.chain_issuers.get(twin, ()) + self.anchor_issuers.get(twin, ())
            return bool(issuers) and set(issuers) == set(
                self.chain_issuers.get(cert, ()) + self.anchor_issuers.get(cert, ())
            )
        return bool(self.anchor_issuers.get(twin)) and self._reach(twin, kept) >= reach

    def _drop_covered_twins(self, kept: dict[Cert, Role], verdicts: dict[int, Verdict]) -> None:
        """Drop a twin when another kept twin leads to every CA it leads to.

        No client needs it, whatever its store (see :meth:`_covers`). Every
        configured store must still validate as before. Serving both made
        GnuTLS 3.7 reject chains it accepts with one (found by the property
        tests: two renewals of one CA, or twins from two roots with a
        cross-sign between those roots).
        """
        current = set(kept)
        constraining = [store for store in self.stores if self._valid_paths(store, current)]
        first_match = [store for store in constraining if self._taken_by_first_match(store, current)]
        groups: dict[tuple[bytes, bytes], list[Cert]] = {}
        for cert in kept:
            if cert != self.leaf:
                groups.setdefault(cert.identity, []).append(cert)
        for group in (group for group in groups.values() if len(group) > 1):
            # The twin that leads to fewest CAs and ends first is tried first.
            weakest_first = sorted(group, key=lambda c: (len(self._reach(c, current)), c.not_after, c.sha256))
            for cert in weakest_first:
                reach = self._reach(cert, current)
                trial = current - {cert}
                cover = next((t for t in group if t in trial and self._covers(t, cert, reach, trial)), None)
                if cover is None:
                    continue
                if not all(self._valid_paths(store, trial) for store in constraining):
                    continue
                if not all(self._taken_by_first_match(store, trial) for store in first_match):
                    continue
                if self._on_valid_paths(trial) != self._on_valid_paths(current) - {cert}:
                    continue  # a certificate served for its sake would be left on no valid path
                current = trial
                del kept[cert]
                position, served_at = self.first_position[cert], self.first_position[cover] + 1
                if cover.issuer_der == cert.issuer_der:
                    detail = (
                        f"its issuer certified it again, until {_day(cover.not_after)}: number {served_at} is served"
                    )
                else:
                    detail = f"number {served_at}, the same CA from {cover.short_issuer}, leads to every CA it leads to"
                verdicts[position] = self._drop(cert, position, Reason.COVERED, detail)

    def _drop_orphans(self, kept: dict[Cert, Role], verdicts: dict[int, Verdict]) -> None:
        reachable = self._reachable(set(kept))
        for cert in [cert for cert in kept if cert not in reachable]:
            del kept[cert]
            position = self.first_position[cert]
            verdicts[position] = self._drop(
                cert, position, Reason.UNRELATED, "reachable from the leaf only through dropped certificates"
            )

    def _drop_unneeded(self, kept: dict[Cert, Role], verdicts: dict[int, Verdict]) -> None:
        current = set(kept)
        constraining = [store for store in self.stores if self._valid_paths(store, current)]
        # A store some path serves even to clients that look in their store
        # first must keep such a path: shedding the others can leave only one
        # those clients never take (it climbs past the store's expired root).
        first_match = [store for store in constraining if self._taken_by_first_match(store, current)]
        depth = self._depths(current)
        # Try the certificates farthest from the leaf first: those are the
        # cross-signs towards old roots that minimal mode exists to shed.
        # Among equals the shorter-lived goes first, and nothing depends on
        # the file's order.
        candidates = sorted(
            (cert for cert in kept if cert != self.leaf),
            key=lambda cert: (kept[cert] != Role.CROSS_SIGN, -depth.get(cert, 0), cert.not_after, cert.sha256),
        )
        for cert in candidates:
            trial = current - {cert}
            if all(self._valid_paths(store, trial) for store in constraining) and all(
                self._taken_by_first_match(store, trial) for store in first_match
            ):
                current = trial
                del kept[cert]
                position = self.first_position[cert]
                verdicts[position] = self._drop(
                    cert, position, Reason.NOT_NEEDED, "every store that validates the chain still does without it"
                )

    def _reachable(self, kept: set[Cert]) -> set[Cert]:
        return set(self._depths(kept))

    def _depths(self, kept: set[Cert]) -> dict[Cert, int]:
        depth = {self.leaf: 0}
        frontier = [self.leaf]
        while frontier:
            following = []
            for cert in frontier:
                for issuer in self.chain_issuers.get(cert, ()):
                    if issuer in kept and issuer not in depth:
                        depth[issuer] = depth[cert] + 1
                        following.append(issuer)
            frontier = sorted(following, key=self.first_position.__getitem__)
        return depth

    def _shadowed(self, path: Path, store: TrustStore) -> bool:
        """Whether a client that looks for an issuer in its store first never takes ``path``.

        OpenSSL stops at a trusted issuer of the right name and key, even an
        expired one, before it looks at the untrusted certificates: a path
        that climbs past a certificate whose issuer the store holds, expired
        or distrusted, fails for it.
        """
        for cert in (path.leaf, *path.via[:-1]):
            trusted = [anchor for anchor in self.anchor_issuers.get(cert, ()) if anchor in store]
            if trusted and not any(self._usable(anchor) for anchor in trusted):
                return True
        return False

    def _taken_by_first_match(self, store: TrustStore, certs: set[Cert]) -> bool:
        return any(not self._shadowed(path, store) for path in self._valid_paths(store, certs))

    def _stores_through(self, kept: set[Cert]) -> dict[Cert, list[str]]:
        """For each kept certificate: the stores with a valid path through it
        that clients looking in their store first also take."""
        through: dict[Cert, list[str]] = {cert: [] for cert in kept}
        for store in self.stores:
            for path in self._valid_paths(store, kept):
                if self._shadowed(path, store):
                    continue
                for cert in path.via:
                    if store.name not in through[cert]:
                        through[cert].append(store.name)
        return through

    def _order(self, kept: set[Cert], stores_through: Mapping[Cert, list[str]]) -> tuple[Cert, ...]:
        depth = self._depths(kept)
        # Clients that take the first matching issuer at each depth (OpenSSL
        # 3.0, GnuTLS) need the twin that validates first: the one more
        # stores validate through goes first, then the file's order, which a
        # CA that sends a working chain got right; the fingerprint settles
        # the rest.
        return tuple(
            sorted(
                kept,
                key=lambda cert: (
                    depth[cert],
                    -len(stores_through[cert]),
                    self.first_position[cert],
                    cert.sha256,
                ),
            )
        )

    def _conflicting_twins(self, chain: tuple[Cert, ...], stores_through: Mapping[Cert, list[str]]) -> list[str]:
        """Stores that validate only through a kept twin that is not the first one served."""
        first_of: dict[tuple[bytes, bytes], Cert] = {}
        for cert in chain[1:]:
            first_of.setdefault(cert.identity, cert)
        stranded: list[str] = []
        for cert in chain[1:]:
            first = first_of[cert.identity]
            for name in stores_through[cert]:
                if cert != first and name not in stores_through[first] and name not in stranded:
                    stranded.append(name)
        return [store.name for store in self.stores if store.name in stranded]

    def _warnings(
        self, chain: tuple[Cert, ...], kept: set[Cert], stores_through: Mapping[Cert, list[str]]
    ) -> list[ChainWarning]:
        warnings: list[ChainWarning] = []
        leaf = self.leaf
        if self.at > leaf.not_after:
            warnings.append(
                ChainWarning(
                    WarningCode.LEAF_EXPIRED, f"the leaf {leaf.short_subject} expired on {_day(leaf.not_after)}"
                )
            )
        elif self.at < leaf.not_before:
            warnings.append(
                ChainWarning(
                    WarningCode.LEAF_NOT_YET_VALID,
                    f"the leaf {leaf.short_subject} is not valid before {_day(leaf.not_before)}",
                )
            )
        for store in self.stores:
            if not self._valid_paths(store, kept):
                warnings.append(ChainWarning(WarningCode.INCOMPLETE, self._incomplete_message(store)))
        warnings.extend(self._expiring(chain, kept))
        served_in_file_order = sorted(chain, key=self.first_position.__getitem__)
        if list(chain) != served_in_file_order:
            warnings.append(
                ChainWarning(
                    WarningCode.REORDERED,
                    "the file's certificates were out of order; served leaf first, then each issuer",
                )
            )
        stranded = self._conflicting_twins(chain, stores_through)
        if stranded:
            warnings.append(
                ChainWarning(
                    WarningCode.CONFLICTING_TWINS,
                    "stores need different twins of one CA, and clients that take the first matching issuer "
                    f"may fail for: {', '.join(stranded)}",
                )
            )
        return warnings

    def _incomplete_message(self, store: TrustStore) -> str:
        prefix = f"clients using {store.name} cannot validate the served chain"
        # Explain with every path, not only the served ones: the useful news
        # is why the way through a dropped cross-sign is closed.
        candidates = [path for path in self.paths if path.anchor in store]
        if not candidates:
            return f"{prefix}: no path from the leaf reaches one of its anchors"
        for path in candidates:
            for cert in (*path.via, path.anchor):
                if self.policy.distrust.matches(cert):
                    return f"{prefix}: {cert.short_subject} is distrusted"
                if not cert.valid_at(self.at):
                    return f"{prefix}: {cert.short_subject} {_validity_detail(cert, self.at).removeprefix('it ')}"
        return prefix

    def _warn_before(self, cert: Cert) -> dt.timedelta:
        """How long before its expiry a served certificate is "expiring soon"."""
        if cert == self.leaf:
            return leaf_horizon(self.policy.horizon, cert.not_before, cert.not_after)
        return self.policy.horizon

    def _expiring(self, chain: tuple[Cert, ...], kept: set[Cert]) -> list[ChainWarning]:
        horizon = self.policy.horizon
        soon: dict[Cert, str] = {}
        for cert in chain:
            if cert.valid_at(self.at) and cert.not_after - self.at <= self._warn_before(cert):
                soon[cert] = "served"
        for store in self.stores:
            paths = self._valid_paths(store, kept)
            if not paths:
                continue
            best = max(paths, key=lambda path: path.anchor.not_after)
            if best.anchor.not_after - self.at <= horizon:
                soon.setdefault(best.anchor, f"the anchor {store.name} uses")
        return [
            ChainWarning(
                WarningCode.EXPIRING_SOON,
                f"{cert.short_subject} ({role}) expires on {_day(cert.not_after)}, in {_days_left(cert, self.at)} days",
            )
            for cert, role in soon.items()
        ]


def _find_leaf(certs: Sequence[Cert], leaf_key: bytes | None) -> int:
    if not certs:
        raise InputError("the chain has no certificate")
    if leaf_key is not None:
        for position, cert in enumerate(certs):
            if cert.has_public_key(leaf_key):
                return position
        raise InputError("the private key matches no certificate in the chain")
    for position, cert in enumerate(certs):
        if not cert.is_ca:
            return position
    raise InputError("the chain has no end-entity certificate (only CA certificates): there is no leaf to serve")


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _days_left(cert: Cert, at: dt.datetime) -> int:
    return (cert.not_after - at).days


def _validity_detail(cert: Cert, at: dt.datetime) -> str:
    if at > cert.not_after:
        return f"it expired on {_day(cert.not_after)}"
    return f"it is not valid before {_day(cert.not_before)}"
