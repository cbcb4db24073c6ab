"""Clients whose store adds nothing to a file share their verdicts, and the verdicts stay each client's own.

A decision for the default client set judges fifteen clients; when a chain
leads to a root none of them holds (a private CA, the bench's PKI), each is
judged once per way of building paths instead of once per client. These
tests hold that the sharing never changes what any client is told.
"""

from __future__ import annotations

from chainwatch.policy.client_check import Client, validates
from chainwatch.policy.every_client import ClientChecks
from chainwatch.policy.judge import Judge
from chainwatch.policy.paths import Candidates
from chainwatch.policy.settings import ClientModel, PathBuilding, Policy
from chainwatch.policy.trim import decide
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore
from tests.pki import CA, DAY, T0, YEAR, cert_of

FIRST_MATCH = ClientModel(PathBuilding.FIRST_MATCH)
TRUSTED_FIRST = ClientModel(PathBuilding.TRUSTED_FIRST)
BACKTRACKING = ClientModel(PathBuilding.BACKTRACKING)
FETCHING = ClientModel(PathBuilding.BACKTRACKING, aia=True)
ANDROID = ClientModel(PathBuilding.BACKTRACKING, anchor_expiry=False)


class TwoIssuers:
    """An intermediate under root A, served after an expired twin of it that root B signed.

    Clients that take the first served issuer climb to B, those that prefer
    a valid one to A: a client holding neither says "store lacks" a
    different root depending on how it builds paths.
    """

    def __init__(self) -> None:
        self.a = CA.root("Root A")
        self.b = CA.root("Root B")
        self.other = CA.root("Unrelated Root")
        self.issuing = self.a.intermediate("Issuing CA", not_after=T0 + 2 * YEAR)
        self.expired_twin = cert_of(self.b.cross_sign(self.issuing, not_before=T0 - YEAR, not_after=T0 - DAY))
        self.leaf = cert_of(self.issuing.leaf(not_after=T0 + YEAR)[0])
        self.file = [self.leaf, self.expired_twin, self.issuing.c]
        self.unrelated = TrustStore.of("unrelated", [self.other.c])


def test_clients_whose_store_holds_nothing_of_the_file_are_told_what_each_alone_is_told() -> None:
    pki = TwoIssuers()
    helpless = [
        Client("first-match", pki.unrelated, FIRST_MATCH),
        Client("trusted-first", pki.unrelated, TRUSTED_FIRST),
        Client("backtracking", pki.unrelated, BACKTRACKING),
        Client("fetching", pki.unrelated, FETCHING),
        Client("android", pki.unrelated, ANDROID),
    ]
    holding_a = Client("holds-a", TrustStore.of("a", [pki.a.c]), TRUSTED_FIRST)
    clients = [*helpless, holding_a]

    together = decide(pki.file, [], T0, clients=clients)
    check = ClientChecks(Judge(Candidates(pki.file, [pki.unrelated], None), [], T0, Policy(), exact=clients))
    as_given = [check(client, pki.file) for client in clients]

    alone = [decide(pki.file, [], T0, clients=[client]).clients[0] for client in clients]
    assert together.clients == tuple(alone)
    assert [result.name for result in together.clients if result.served] == ["holds-a"]
    assert as_given == [validates(pki.file, client.store, client.model, T0) for client in clients]
    assert as_given[0].detail == "store lacks Root B", "first-match climbs the expired twin first"
    assert as_given[1].detail == "store lacks Root A", "trusted-first prefers the valid twin"


def test_a_verdict_is_shared_only_for_a_chain_of_the_files_own_certificates() -> None:
    pki = TwoIssuers()
    # The file is the leaf alone: a store holding root A adds nothing to it, but does to a
    # chain that brings the issuing CA, which is no part of the file.
    helpless = Client("helpless", pki.unrelated, TRUSTED_FIRST)
    holding_a = Client("holds-a", TrustStore.of("a", [pki.a.c]), TRUSTED_FIRST)
    judge = Judge(Candidates([pki.leaf], [], None), [], T0, Policy(), exact=[helpless, holding_a])
    check = ClientChecks(judge)
    with_issuer: tuple[Cert, ...] = (pki.leaf, pki.issuing.c)

    verdicts = [check(helpless, with_issuer), check(holding_a, with_issuer)]

    assert verdicts == [
        validates(with_issuer, pki.unrelated, TRUSTED_FIRST, T0),
        validates(with_issuer, holding_a.store, TRUSTED_FIRST, T0),
    ]
    assert [verdict.ok for verdict in verdicts] == [False, True]
