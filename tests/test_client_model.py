"""The client model: how the clients of a store build paths and treat an expired anchor.

One value (:class:`~chainwatch.policy.settings.ClientModel`) that the judge's
validity, its store-first shadowing and the order read; the default is what
every store was judged as before it existed.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from chainwatch.agent.journal import Journal
from chainwatch.agent.reconcile import Processor
from chainwatch.config import Config, load_config
from chainwatch.policy.client_check import Client
from chainwatch.policy.decision import Role, WarningCode
from chainwatch.policy.judge import Judge
from chainwatch.policy.order import first_match_path, taken_paths
from chainwatch.policy.paths import Candidates
from chainwatch.policy.settings import ClientModel, Distrust, PathBuilding, Policy
from chainwatch.policy.trim import decide
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore
from tests.pki import CA, DAY, T0, YEAR, cert_of, new_key
from tests.workspace import LivePKI, Workspace

AFTER_OLD_ROOT = T0 + DAY
"""A day after the old root expired, as 2021-10-01 was for DST Root CA X3."""


class DstShaped:
    """New Root cross-signed by Old Root, which expires at T0; the file serves the cross-sign."""

    def __init__(self) -> None:
        self.old = CA.root("Old Root", not_after=T0)
        self.new = CA.root("New Root")
        self.cross = cert_of(self.old.cross_sign(self.new, not_after=T0 + 3 * YEAR))
        self.issuing = self.new.intermediate("Issuing CA")
        self.leaf = cert_of(self.issuing.leaf()[0])
        self.chain = [self.leaf, self.issuing.c, self.cross]


@pytest.fixture(scope="module")
def dst() -> DstShaped:
    return DstShaped()


def judge_for(chain: list[Cert], store: TrustStore, policy: Policy) -> Judge:
    """A judge whose one client is ``store`` with the policy's model."""
    client = Client(store.name, store, policy.client)
    return Judge(Candidates(chain, [store], None), [client], AFTER_OLD_ROOT, policy)


def judged(dst: DstShaped, store: TrustStore, model: ClientModel) -> Judge:
    return judge_for(dst.chain, store, Policy(client=model))


def test_default_model_is_a_backtracking_client_that_checks_anchor_expiry() -> None:
    assert Policy().client == ClientModel(PathBuilding.BACKTRACKING, anchor_expiry=True)


def test_expired_anchor_anchors_for_a_client_that_ignores_anchor_expiry(dst: DstShaped) -> None:
    android = TrustStore.of("android", [dst.old.c])

    checked = decide(dst.chain, [android], AFTER_OLD_ROOT)
    ignored = decide(dst.chain, [android], AFTER_OLD_ROOT, Policy(client=ClientModel(anchor_expiry=False)))

    assert checked.validating_stores == ()
    assert checked.has(WarningCode.INCOMPLETE)
    assert ignored.validating_stores == ("android",)
    assert not ignored.has(WarningCode.INCOMPLETE)
    assert ignored.role_of(dst.cross) == Role.INTERMEDIATE
    assert ignored.verdicts[2].detail == "needed by android"


def test_an_expired_anchor_still_ends_no_path_when_distrusted_whatever_the_model(dst: DstShaped) -> None:
    android = TrustStore.of("android", [dst.old.c])
    policy = Policy(distrust=Distrust([dst.old.c.sha256]), client=ClientModel(anchor_expiry=False))

    assert decide(dst.chain, [android], AFTER_OLD_ROOT, policy).validating_stores == ()


@pytest.mark.parametrize(
    ("building", "takes"),
    [
        # Measured (FIELD-NOTES, "Real implementations runnable here"): OpenSSL 1.0.2e
        # fails this served chain with "certificate has expired"; 1.1.1, 3.0 and
        # pyca's verifier accept it.
        (PathBuilding.FIRST_MATCH, False),
        (PathBuilding.TRUSTED_FIRST, True),
        (PathBuilding.BACKTRACKING, True),
    ],
)
def test_served_cross_sign_to_an_expired_trusted_root_fails_only_first_match_clients(
    dst: DstShaped, building: PathBuilding, takes: bool
) -> None:
    both_roots = TrustStore.of("old-debian", [dst.old.c, dst.new.c])
    judge = judged(dst, both_roots, ClientModel(building))

    taken = taken_paths(judge, judge.clients[0], set(dst.chain))

    assert bool(taken) == takes
    assert all(path.anchor == dst.new.c for path in taken)


class ExpiredRootCrossSigned:
    """Root A expired at T0 but is still in the store; Other Root, also trusted, cross-signs A's key."""

    def __init__(self) -> None:
        key = new_key()
        self.expired = CA.root("Root A", key=key, not_after=T0)
        self.other = CA.root("Other Root")
        self.cross = cert_of(self.other.cross_sign(self.expired, not_after=T0 + 3 * YEAR))
        self.issuing = self.expired.intermediate("Issuing CA")
        self.leaf = cert_of(self.issuing.leaf()[0])
        self.chain = [self.leaf, self.issuing.c, self.cross]
        self.store = TrustStore.of("store", [self.expired.c, self.other.c])


@pytest.mark.parametrize(
    ("building", "takes"),
    [
        # A client that looks in its store first stops at the expired Root A
        # for the issuing CA and never climbs the cross-sign; the others do.
        (PathBuilding.FIRST_MATCH, True),
        (PathBuilding.TRUSTED_FIRST, False),
        (PathBuilding.BACKTRACKING, True),
    ],
)
def test_expired_root_in_the_store_shadows_the_cross_signed_way_only_for_trusted_first_clients(
    building: PathBuilding, takes: bool
) -> None:
    pki = ExpiredRootCrossSigned()
    judge = judge_for(pki.chain, pki.store, Policy(client=ClientModel(building)))

    taken = taken_paths(judge, judge.clients[0], set(pki.chain))

    assert bool(taken) == takes
    assert all(path.anchor == pki.other.c for path in taken)


def test_expired_root_shadows_nothing_for_a_trusted_first_client_that_ignores_anchor_expiry() -> None:
    pki = ExpiredRootCrossSigned()
    model = ClientModel(PathBuilding.TRUSTED_FIRST, anchor_expiry=False)
    judge = judge_for(pki.chain, pki.store, Policy(client=model))

    taken = taken_paths(judge, judge.clients[0], set(pki.chain))

    assert {path.anchor for path in taken} == {pki.expired.c, pki.other.c}


def test_first_match_client_climbs_the_served_cross_sign_to_the_expired_root_it_trusts(dst: DstShaped) -> None:
    both_roots = TrustStore.of("old-debian", [dst.old.c, dst.new.c])
    judge = judged(dst, both_roots, ClientModel(PathBuilding.FIRST_MATCH))

    path = first_match_path(judge, judge.clients[0], (dst.leaf, dst.issuing.c, dst.cross))
    without_cross = first_match_path(judge, judge.clients[0], (dst.leaf, dst.issuing.c))

    assert path is not None and (path.via, path.anchor) == ((dst.issuing.c, dst.cross), dst.old.c)
    assert without_cross is not None and (without_cross.via, without_cross.anchor) == ((dst.issuing.c,), dst.new.c)


def test_first_match_client_falls_back_to_its_store_below_an_issuer_it_does_not_trust(dst: DstShaped) -> None:
    new_only = TrustStore.of("new-only", [dst.new.c])
    judge = judged(dst, new_only, ClientModel(PathBuilding.FIRST_MATCH))

    path = first_match_path(judge, judge.clients[0], (dst.leaf, dst.issuing.c, dst.cross))

    # OpenSSL 1.0.2's alternative chains: the store holds no issuer of the
    # cross-sign, so it looks for one of the certificate below it.
    assert path is not None and (path.via, path.anchor) == ((dst.issuing.c,), dst.new.c)


def test_trimmed_chain_validates_for_a_first_match_client(dst: DstShaped) -> None:
    both_roots = TrustStore.of("old-debian", [dst.old.c, dst.new.c])
    policy = Policy(client=ClientModel(PathBuilding.FIRST_MATCH))

    decision = decide(dst.chain, [both_roots], AFTER_OLD_ROOT, policy)

    assert decision.chain == (dst.leaf, dst.issuing.c)
    assert decision.validating_stores == ("old-debian",)
    assert not decision.has(WarningCode.INCOMPLETE)


def fingerprint(workspace: Workspace, monkeypatch: pytest.MonkeyPatch, model: ClientModel) -> str:
    # No configuration key sets a client model yet (issue 23 adds them), so
    # the policy the configuration describes is given one here.
    def trim_policy(self: Config) -> Policy:
        return Policy(self.mode, client=model)

    monkeypatch.setattr(Config, "trim_policy", trim_policy)
    return Processor(load_config(workspace.config), Journal(io.StringIO(), native=False)).fingerprint


def test_configuration_fingerprint_changes_with_the_client_model(
    tmp_path: Path, pki: LivePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = Workspace(tmp_path, pki)

    default = fingerprint(workspace, monkeypatch, ClientModel())
    again = fingerprint(workspace, monkeypatch, ClientModel())
    first_match = fingerprint(workspace, monkeypatch, ClientModel(PathBuilding.FIRST_MATCH))
    no_expiry = fingerprint(workspace, monkeypatch, ClientModel(anchor_expiry=False))

    assert default == again
    assert len({default, first_match, no_expiry}) == 3


def test_first_match_client_without_a_valid_path_is_told_where_the_served_path_ends(dst: DstShaped) -> None:
    old_only = TrustStore.of("old-debian", [dst.old.c])
    policy = Policy(client=ClientModel(PathBuilding.FIRST_MATCH))

    decision = decide(dst.chain, [old_only], AFTER_OLD_ROOT, policy)

    assert decision.validating_stores == ()
    assert [w.message for w in decision.warnings if w.code == WarningCode.INCOMPLETE] == [
        "clients using old-debian cannot validate the served chain: first-match: "
        "the served path reaches Old Root, expired on 2030-01-01"
    ]


def test_first_match_client_prefers_the_first_served_issuer_that_is_currently_valid(dst: DstShaped) -> None:
    expired_twin = cert_of(dst.new.certify(dst.issuing.name, dst.issuing.key.public_key(), ca=True, not_after=T0))
    chain = [dst.leaf, expired_twin, dst.issuing.c]
    new_only = TrustStore.of("new-only", [dst.new.c])
    policy = Policy(client=ClientModel(PathBuilding.FIRST_MATCH))
    judge = judge_for(chain, new_only, policy)

    path = first_match_path(judge, judge.clients[0], tuple(chain))

    # OpenSSL 1.0.2's find_issuer: the first match within its dates, else the last match.
    assert path is not None and path.via == (dst.issuing.c,)
