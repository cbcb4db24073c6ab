"""A restart with the default client set and nothing changed decides nothing again.

The lifecycle's UNCHANGED rule (same input, same configuration fingerprint,
before ``changes_at``) must hold with clients judged: their stores are built
anew by every process, and the fingerprint must not depend on that.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import chainwatch.agent.reconcile
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.reconcile import Processor
from chainwatch.config import DEFAULT_CLIENTS, load_config
from chainwatch.policy.decision import Decision
from chainwatch.policy.trim import decide
from tests.workspace import NAME, LivePKI, Workspace


def test_a_restart_with_the_default_client_set_and_nothing_changed_decides_nothing(
    tmp_path: Path, pki: LivePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = ", ".join(f'"{name}"' for name in DEFAULT_CLIENTS)
    ws = Workspace(tmp_path, pki, extra=f"clients = [{listed}]\n")
    ws.certbot.write(NAME, ws.pki.issue())
    first = Processor(load_config(ws.config), Journal(io.StringIO(), native=False))
    with first.exclusive():
        published = first.process(NAME)
    # The real decide, counted: an identical decision would republish nothing,
    # so not deciding again leaves no other trace to observe.
    decided: list[Decision] = []

    def counted(*args: object, **kwargs: object) -> Decision:
        decided.append(decide(*args, **kwargs))  # type: ignore[arg-type]
        return decided[-1]

    monkeypatch.setattr(chainwatch.agent.reconcile, "decide", counted)

    restarted = Processor(load_config(ws.config), Journal(io.StringIO(), native=False))
    with restarted.exclusive():
        again = restarted.process(NAME)

    assert published.warned, "no shipped profile holds the test PKI's root: every client fails it"
    assert (again.event, again.version, ws.versions()) == (Event.UNCHANGED, 1, [1])
    assert decided == []
    assert restarted.fingerprint == first.fingerprint
