"""A bug met by the publisher in a batch is said as a bug, and isolated lineage by lineage.

A bug cannot be summoned in real code on purpose: the publisher raises for
one lineage's batch only, as a bug in it would (the only mock here).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.publish import Publisher
from chainwatch.agent.reconcile import Processor
from chainwatch.config import load_config
from tests.workspace import NAME, LivePKI, Workspace

OTHER = "other.example.test"


def test_a_bug_in_a_batch_publication_is_journaled_as_a_bug_and_retried_while_the_others_publish(
    tmp_path: Path, pki: LivePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(tmp_path, pki)
    ws.certbot.write(NAME, pki.issue())
    ws.certbot.write(OTHER, pki.issue(OTHER))
    real = Publisher.publish_many

    def publish_many(
        self: Publisher, sets: Sequence[tuple[str, Mapping[str, bytes], Mapping[str, Any]]], *args: Any, **kwargs: Any
    ) -> Any:
        if any(name == NAME for name, _, _ in sets):
            raise KeyError("a bug")
        return real(self, sets, *args, **kwargs)

    monkeypatch.setattr(Publisher, "publish_many", publish_many)
    log = io.StringIO()
    processor = Processor(load_config(ws.config), Journal(log, native=False))
    with processor.exclusive():
        outcomes = {o.lineage: o for o in processor.process_batch([NAME, OTHER])}
    assert outcomes[OTHER].event == Event.PUBLISHED
    assert outcomes[NAME].event == Event.REJECTED
    assert outcomes[NAME].recheck_at is not None
    error = ws.state()["lineages"][NAME]["error"]
    assert error["kind"] == "internal"  # a bug, not a "write" refusal
    assert "internal error publishing 2 lineages together: KeyError: 'a bug'; publishing each alone" in log.getvalue()
    assert "internal error, not published: KeyError: 'a bug'; nothing published yet" in log.getvalue()
